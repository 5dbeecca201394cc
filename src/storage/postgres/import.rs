//! Bulk import into an empty schema, for `spool migrate`: queues, messages with every piece of
//! their state, the receipt key and the id counters, in one transaction that also checks what
//! it wrote before it commits.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Transaction};

use super::connect::ConnectOptions;
use super::schema::{self, quoted};
use super::{describe_target, writer};
use crate::storage::{ExportedPayload, QueueRecord, Recovered, StorageError, StoredMessage};

/// A message as exported: its queue, its metadata, its body and the columns stored with it.
pub type ExportedMessage = (u64, StoredMessage, ExportedPayload);

/// A connection holding the target schema's lock (so no server starts on it meanwhile), with
/// the schema created and found empty.
pub struct Target {
    client: Client,
    schema: String,
    described: String,
}

/// Messages per `state` per queue, as written (or read back).
pub type Tally = BTreeMap<(u64, i16), i64>;

impl Target {
    pub async fn open(options: &ConnectOptions, schema: &str) -> Result<Self, StorageError> {
        schema::validate_schema_name(schema).map_err(StorageError::Refused)?;
        // The same session a server would open: connect, lock, create or check the tables.
        let session = writer::open_session(options, schema, None).await?;
        let client = session.client;
        let described = describe_target(options, schema);
        let q = quoted(schema);
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {q}.queues), (SELECT count(*) FROM {q}.messages)"
                ),
                &[],
            )
            .await
            .map_err(|e| schema::describe(schema, "cannot count the target's rows", &e))?;
        let (queues, messages): (i64, i64) = (row.get(0), row.get(1));
        if queues > 0 || messages > 0 {
            return Err(StorageError::Refused(format!(
                "the target {described} is not empty ({queues} queues, {messages} messages); \
                 migrate into a new schema (--to-postgres-schema) or an empty one"
            )));
        }
        Ok(Self {
            client,
            schema: schema.to_string(),
            described,
        })
    }

    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Starts the import's transaction.
    pub async fn begin(&mut self) -> Result<Import<'_>, StorageError> {
        let schema = self.schema.clone();
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(|e| schema::describe(&schema, "cannot begin the import", &e))?;
        Ok(Import {
            transaction,
            schema,
        })
    }
}

pub struct Import<'a> {
    transaction: Transaction<'a>,
    schema: String,
}

impl Import<'_> {
    fn error(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> StorageError + use<'_> {
        let what = what.to_string();
        move |e| schema::describe(&self.schema, &what, &e)
    }

    /// The queues, the receipt key (so handles issued before the move stay valid) and the id
    /// counters (so no id is handed out twice).
    pub async fn write_queues(&self, recovered: &Recovered) -> Result<(), StorageError> {
        let q = quoted(&self.schema);
        for QueueRecord {
            id,
            name,
            attributes: a,
            create_time_ms,
            update_time_ms,
        } in &recovered.queues
        {
            self.transaction
                .execute(
                    &format!(
                        "INSERT INTO {q}.queues (id, name, visibility_timeout_seconds,
                            polling_wait_seconds, max_message_size, message_retention_seconds,
                            rewind_seconds, max_backlog, create_time_ms, update_time_ms,
                            deduplication_window_seconds, dead_letter_queue, max_receive_count,
                            max_time_to_live_seconds, max_bytes)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                 $15)"
                    ),
                    &[
                        &(*id as i64),
                        name,
                        &i64::from(a.visibility_timeout_seconds),
                        &i64::from(a.polling_wait_seconds),
                        &i64::from(a.max_message_size),
                        &i64::from(a.message_retention_seconds),
                        &i64::from(a.rewind_seconds),
                        &(a.max_backlog as i64),
                        create_time_ms,
                        update_time_ms,
                        &i64::from(a.deduplication_window_seconds),
                        &a.dead_letter_policy
                            .as_ref()
                            .map(|p| p.dead_letter_queue.as_str()),
                        &i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_receive_count),
                        ),
                        &i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_time_to_live_seconds),
                        ),
                        &(a.max_bytes as i64),
                    ],
                )
                .await
                .map_err(self.error("cannot write a queue"))?;
        }
        // The deduplication ids of the queues that exist, so that a send retried across the
        // move is still known.
        let queues: std::collections::HashSet<u64> =
            recovered.queues.iter().map(|queue| queue.id).collect();
        for record in &recovered.deduplication_ids {
            if !queues.contains(&record.queue_id) {
                continue;
            }
            self.transaction
                .execute(
                    &format!(
                        // SQLite keeps a row per acceptance (an id accepted again after
                        // its window has two until the older goes); one row per id here,
                        // the newer.
                        "INSERT INTO {q}.deduplication (queue_id, deduplication_id, message_id,
                            accepted_ms) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (queue_id, deduplication_id) DO UPDATE
                            SET message_id = excluded.message_id,
                                accepted_ms = excluded.accepted_ms
                          WHERE {q}.deduplication.accepted_ms <= excluded.accepted_ms"
                    ),
                    &[
                        &(record.queue_id as i64),
                        &record.deduplication_id,
                        &(record.message_id as i64),
                        &record.accepted_ms,
                    ],
                )
                .await
                .map_err(self.error("cannot write a deduplication id"))?;
        }
        // Topics, and the subscriptions into queues that exist (a queue deleted before the
        // stop took its subscriptions with it; a row left would be dropped at start anyway).
        for topic in &recovered.topics {
            let totals = recovered
                .topic_totals
                .get(&topic.id)
                .copied()
                .unwrap_or_default();
            self.transaction
                .execute(
                    &format!(
                        "INSERT INTO {q}.topics (id, name, max_message_size, filter_type,
                            create_time_ms, update_time_ms, published_messages,
                            unrouted_messages) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ),
                    &[
                        &(topic.id as i64),
                        &topic.name,
                        &i64::from(topic.max_message_size),
                        &topic.filter_type.code(),
                        &topic.create_time_ms,
                        &topic.update_time_ms,
                        &(totals.published as i64),
                        &(totals.unrouted as i64),
                    ],
                )
                .await
                .map_err(self.error("cannot write a topic"))?;
        }
        for subscription in &recovered.subscriptions {
            if !queues.contains(&subscription.queue_id) {
                continue;
            }
            let totals = recovered
                .subscription_totals
                .get(&(subscription.topic_id, subscription.name.clone()))
                .copied()
                .unwrap_or_default();
            self.transaction
                .execute(
                    &format!(
                        "INSERT INTO {q}.subscriptions (topic_id, name, queue_id, queue_name,
                            filter, create_time_ms, delivered_messages, filtered_out_messages)
                            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ),
                    &[
                        &(subscription.topic_id as i64),
                        &subscription.name,
                        &(subscription.queue_id as i64),
                        &subscription.queue_name,
                        &crate::storage::encode_filter(&subscription.filter),
                        &subscription.create_time_ms,
                        &(totals.delivered as i64),
                        &(totals.filtered_out as i64),
                    ],
                )
                .await
                .map_err(self.error("cannot write a subscription"))?;
        }
        self.transaction
            .execute(
                &format!("UPDATE {q}.secrets SET value = $1 WHERE name = 'receipt_key'"),
                &[&&recovered.receipt_secret[..]],
            )
            .await
            .map_err(self.error("cannot write the receipt key"))?;
        for (name, value) in [
            ("next_queue_id", recovered.next_queue_id),
            ("next_message_id", recovered.next_message_id),
        ] {
            self.transaction
                .execute(
                    &format!("UPDATE {q}.counters SET value = greatest(value, $2) WHERE name = $1"),
                    &[&name, &(value as i64)],
                )
                .await
                .map_err(self.error("cannot write the id counters"))?;
        }
        Ok(())
    }

    /// Writes one batch of messages (one statement).
    pub async fn write_messages(&self, batch: &[ExportedMessage]) -> Result<(), StorageError> {
        let q = quoted(&self.schema);
        let column = |f: &dyn Fn(&ExportedMessage) -> i64| batch.iter().map(f).collect::<Vec<_>>();
        let queue_ids = column(&|(queue, _, _)| *queue as i64);
        let ids = column(&|(_, m, _)| m.id as i64);
        let enqueue = column(&|(_, m, _)| m.enqueue_ms);
        let visible = column(&|(_, m, _)| m.visible_at_ms);
        let dequeue_counts: Vec<i32> = batch
            .iter()
            .map(|(_, m, _)| i32::try_from(m.dequeue_count).unwrap_or(i32::MAX))
            .collect();
        let first_dequeue = column(&|(_, m, _)| m.first_dequeue_ms);
        let nonces = column(&|(_, m, _)| m.receipt_nonce as i64);
        let states: Vec<i16> = batch
            .iter()
            .map(|(_, m, _)| m.state.code() as i16)
            .collect();
        let bodies: Vec<&[u8]> = batch.iter().map(|(_, _, p)| &p.body[..]).collect();
        let metas: Vec<Option<&[u8]>> = batch.iter().map(|(_, _, p)| p.meta.as_deref()).collect();
        let sources: Vec<Option<&str>> = batch
            .iter()
            .map(|(_, _, p)| p.dead_letter_source.as_deref())
            .collect();
        let source_counts: Vec<i32> = batch
            .iter()
            .map(|(_, _, p)| i32::try_from(p.dead_letter_receive_count).unwrap_or(i32::MAX))
            .collect();
        let max_id = ids.iter().copied().max().unwrap_or(0);
        self.transaction
            .execute(
                &format!(
                    "INSERT INTO {q}.messages (queue_id, id, enqueue_ms, visible_at_ms,
                        dequeue_count, first_dequeue_ms, receipt_nonce, state, body, meta,
                        dead_letter_source, dead_letter_receive_count)
                     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[],
                        $5::int4[], $6::int8[], $7::int8[], $8::int2[], $9::bytea[],
                        $10::bytea[], $11::text[], $12::int4[])"
                ),
                &[
                    &queue_ids,
                    &ids,
                    &enqueue,
                    &visible,
                    &dequeue_counts,
                    &first_dequeue,
                    &nonces,
                    &states,
                    &bodies,
                    &metas,
                    &sources,
                    &source_counts,
                ],
            )
            .await
            .map_err(self.error("cannot write messages"))?;
        // Whatever the source's counter said, no id at or below one written may be reused.
        self.transaction
            .execute(
                &format!(
                    "UPDATE {q}.counters SET value = greatest(value, $1) WHERE name = 'next_message_id'"
                ),
                &[&(max_id + 1)],
            )
            .await
            .map_err(self.error("cannot write the id counters"))?;
        Ok(())
    }

    /// What the transaction holds: messages per queue and state, and the number of queues.
    pub async fn tally(&self) -> Result<(Tally, i64), StorageError> {
        let q = quoted(&self.schema);
        let rows = self
            .transaction
            .query(
                &format!("SELECT queue_id, state, count(*) FROM {q}.messages GROUP BY 1, 2"),
                &[],
            )
            .await
            .map_err(self.error("cannot count what was written"))?;
        let mut tally = Tally::new();
        for row in rows {
            let queue: i64 = row.get(0);
            tally.insert((queue as u64, row.get(1)), row.get(2));
        }
        let queues: i64 = self
            .transaction
            .query_one(&format!("SELECT count(*) FROM {q}.queues"), &[])
            .await
            .map_err(self.error("cannot count what was written"))?
            .get(0);
        Ok((tally, queues))
    }

    pub async fn commit(self) -> Result<(), StorageError> {
        let schema = self.schema.clone();
        self.transaction
            .commit()
            .await
            .map_err(|e| schema::describe(&schema, "cannot commit the import", &e))
    }
}
