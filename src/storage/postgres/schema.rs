//! The tables in the server's schema, their version, the checks at open, and the server lock.
//!
//! Everything lives in one PostgreSQL schema (`--postgres-schema`), so several deployments can
//! share a database. The layout is made for what comes next as much as for today:
//! - `queues.owner_epoch`: the fencing token of the queue's owner once several replicas share
//!   the schema; every write transaction of an owner will check it.
//! - `messages` is keyed by the message id (ids are unique across queues, and the hot path finds
//!   rows by id) and indexed by `(queue_id, id)`, which reads one queue's messages in delivery
//!   order: what a takeover of one queue, and an actor that keeps only a window of a large
//!   backlog, read.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use crate::attributes::{DeadLetterPolicy, QueueAttributes};
use crate::receipt::KEY_LEN;
use crate::storage::{
    DeduplicationRecord, FilterType, LiveTotals, QueueRecord, Recovered, StorageError,
    StoredMessage, StoredState, SubscriptionRecord, SubscriptionTotals, TopicRecord, TopicTotals,
    decode_filter,
};

/// The layout below. A database with a higher number was written by a newer Spool and is
/// refused; a lower one would be migrated at open, step by step, each in its transaction.
pub const SCHEMA_VERSION: i32 = 5;
/// `schema_version.application`: tells Spool's tables from someone else's of the same names.
const APPLICATION: &str = "spool";
/// The names Spool creates; any of them in the schema without Spool's version row is foreign.
const TABLES: [&str; 8] = [
    "schema_version",
    "queues",
    "messages",
    "secrets",
    "counters",
    "deduplication",
    "topics",
    "subscriptions",
];
/// The tables version 1 had (all but `deduplication` and version 3's).
const VERSION_1_TABLES: usize = 5;
/// The tables version 2 had (all but `topics` and `subscriptions`).
const VERSION_2_TABLES: usize = 6;
/// First half of the advisory lock key that keeps a second server out of the schema ("SPOL");
/// the second half is a hash of the schema's name.
const LOCK_CLASS: i32 = 0x5350_4f4c;
/// The receipt key's row in `secrets`.
const RECEIPT_SECRET: &str = "receipt_key";
/// Longest PostgreSQL identifier (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The tables, `{s}` standing for the quoted schema. Autovacuum is tuned on `messages` because
/// every row there is inserted, updated a few times and deleted within the retention: with the
/// default thresholds (20% of the table dead before a vacuum), a steady run carries a fifth of
/// a table of dead rows; at 1% the dead space is reused long before the table grows. The
/// fillfactor leaves room on each page so the receive bookkeeping (no indexed column changes)
/// is written as HOT updates, without new index entries.
const CREATE: &str = "
CREATE TABLE {s}.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    application text NOT NULL,
    version integer NOT NULL
);
CREATE TABLE {s}.queues (
    id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    visibility_timeout_seconds bigint NOT NULL,
    polling_wait_seconds bigint NOT NULL,
    max_message_size bigint NOT NULL,
    message_retention_seconds bigint NOT NULL,
    rewind_seconds bigint NOT NULL,
    max_backlog bigint NOT NULL,
    create_time_ms bigint NOT NULL,
    update_time_ms bigint NOT NULL,
    -- The fencing token of the replica that owns the queue (replicas: one owner per queue).
    owner_epoch bigint NOT NULL DEFAULT 0
);
CREATE TABLE {s}.messages (
    id bigint PRIMARY KEY,
    queue_id bigint NOT NULL,
    enqueue_ms bigint NOT NULL,
    visible_at_ms bigint NOT NULL,
    dequeue_count integer NOT NULL DEFAULT 0,
    first_dequeue_ms bigint NOT NULL DEFAULT 0,
    receipt_nonce bigint NOT NULL DEFAULT 0,
    -- 0: live; 1: deleted, kept for rewind; 2: tombstone kept until visible_at_ms, its body
    -- emptied (see StoredState).
    state smallint NOT NULL DEFAULT 0,
    body bytea NOT NULL
) WITH (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    toast.autovacuum_vacuum_scale_factor = 0.01,
    toast.autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX messages_by_queue ON {s}.messages (queue_id, id);
CREATE TABLE {s}.secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
-- High-water marks of ids, so an id is never handed out twice, even after its row is gone.
CREATE TABLE {s}.counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO {s}.counters (name, value) VALUES ('next_queue_id', 1), ('next_message_id', 1);
";

/// Version 2: message attributes (`meta`, a `payload::MessageMeta`; NULL for none) and where a
/// dead-lettered message came from (`dead_letter_source` NULL for others); the deduplication
/// ids of recent sends; the queues' deduplication window (300 s for existing queues) and
/// dead-letter policy (`dead_letter_queue` NULL: none). New columns with constant defaults, so
/// adding them rewrites no table.
const VERSION_2: &str = "
ALTER TABLE {s}.messages ADD COLUMN meta bytea,
    ADD COLUMN dead_letter_source text,
    ADD COLUMN dead_letter_receive_count integer NOT NULL DEFAULT 0;
ALTER TABLE {s}.queues ADD COLUMN deduplication_window_seconds bigint NOT NULL DEFAULT 300,
    ADD COLUMN dead_letter_queue text,
    ADD COLUMN max_receive_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN max_time_to_live_seconds bigint NOT NULL DEFAULT 0;
-- A send's deduplication id, written in the transaction of its message; removed once the
-- queue's window has passed (or with the queue).
CREATE TABLE {s}.deduplication (
    queue_id bigint NOT NULL,
    deduplication_id text NOT NULL,
    message_id bigint NOT NULL,
    accepted_ms bigint NOT NULL,
    PRIMARY KEY (queue_id, deduplication_id)
);
";

/// Version 3: topics and their subscriptions. A subscription names its queue by id (the
/// incarnation; deleting the queue deletes its subscriptions in the same transaction) and by
/// name (for display); `filter` is a JSON array of filter tags or binding keys.
const VERSION_3: &str = "
CREATE TABLE {s}.topics (
    id bigint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    max_message_size bigint NOT NULL,
    filter_type bigint NOT NULL,
    create_time_ms bigint NOT NULL,
    update_time_ms bigint NOT NULL
);
CREATE TABLE {s}.subscriptions (
    topic_id bigint NOT NULL,
    name text NOT NULL,
    queue_id bigint NOT NULL,
    queue_name text NOT NULL,
    filter text NOT NULL,
    create_time_ms bigint NOT NULL,
    PRIMARY KEY (topic_id, name)
);
";

/// Version 4: per-queue byte quotas (`max_bytes`, 0 for none: existing queues keep no quota),
/// and the topics' and subscriptions' totals, raised in each publish's transaction (0 for
/// existing ones: they were not kept before). Constant defaults, so adding them rewrites no
/// table. (The bytes a queue holds are not stored: recovery sums the sizes of its messages'
/// bodies and attributes.)
const VERSION_4: &str = "
ALTER TABLE {s}.queues ADD COLUMN max_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.topics ADD COLUMN published_messages bigint NOT NULL DEFAULT 0,
    ADD COLUMN unrouted_messages bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.subscriptions ADD COLUMN delivered_messages bigint NOT NULL DEFAULT 0,
    ADD COLUMN filtered_out_messages bigint NOT NULL DEFAULT 0;
";

/// Version 5, for backlogs larger than memory (see `queue::window`): each message's size (body
/// and attributes, what counts toward `max_bytes`) as a stored generated column (so no write
/// names it, and a tombstone's emptied body makes it 0), the index by queue ordered by state
/// and id and carrying the size, so that a queue's live messages are read in slices and
/// counted from the index (an index-only scan once vacuum has marked the pages), and a partial
/// index of the rows that were ever delayed or received, by the time they become visible, so
/// recovery finds the in-flight and delayed ones without reading the rest. Adding the column
/// rewrites the table once.
const VERSION_5: &str = "
ALTER TABLE {s}.messages ADD COLUMN size integer
    GENERATED ALWAYS AS (octet_length(body) + coalesce(octet_length(meta), 0)) STORED;
DROP INDEX {s}.messages_by_queue;
CREATE INDEX messages_by_queue ON {s}.messages (queue_id, state, id) INCLUDE (size);
CREATE INDEX messages_hidden ON {s}.messages (queue_id, visible_at_ms)
    WHERE state = 0 AND visible_at_ms > enqueue_ms;
";

/// A schema name Spool accepts: lower-case letters, digits and underscores, starting with a
/// letter or underscore, so that it never needs quoting rules beyond double quotes and reads
/// the same in `psql`.
pub fn validate_schema_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !valid_start
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || name.len() > MAX_IDENTIFIER_BYTES
        || name.starts_with("pg_")
    {
        return Err(format!(
            "postgres_schema {name:?} is not a valid schema name: use 1 to \
             {MAX_IDENTIFIER_BYTES} lower-case letters, digits and underscores, starting with a \
             letter or underscore (and not with pg_)"
        ));
    }
    Ok(())
}

/// The schema's name as an SQL identifier.
pub fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Takes the session advisory lock on `schema`; false when another session holds it in a
/// conflicting mode. A single server takes it exclusively, which makes it the only Spool server
/// on the schema; cluster replicas take it shared, so they share the schema with each other
/// (their queues fenced by owner epochs) but never with a single server.
pub async fn try_lock(
    client: &Client,
    schema: &str,
    shared: bool,
) -> Result<bool, tokio_postgres::Error> {
    let function = if shared {
        "pg_try_advisory_lock_shared"
    } else {
        "pg_try_advisory_lock"
    };
    let row = client
        .query_one(
            &format!("SELECT {function}($1, hashtext($2))"),
            &[&LOCK_CLASS, &schema],
        )
        .await?;
    row.try_get(0)
}

/// Creates the tables on first use, or checks that those there are Spool's, of a version this
/// server knows. One transaction: a crash leaves either nothing or the whole layout.
pub async fn prepare(client: &mut Client, schema: &str) -> Result<(), StorageError> {
    let io = |e: tokio_postgres::Error| describe(schema, "cannot prepare the schema", &e);
    let transaction = client.transaction().await.map_err(io)?;
    let existing: Vec<String> = transaction
        .query(
            "SELECT c.relname FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = ANY($2)",
            &[&schema, &&TABLES[..]],
        )
        .await
        .map_err(io)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    if existing.is_empty() {
        let q = quoted(schema);
        transaction
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {q}"))
            .await
            .map_err(io)?;
        transaction
            .batch_execute(&CREATE.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .batch_execute(&VERSION_2.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .batch_execute(&VERSION_3.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .batch_execute(&VERSION_4.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .batch_execute(&VERSION_5.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .execute(
                &format!("INSERT INTO {q}.schema_version (application, version) VALUES ($1, $2)"),
                &[&APPLICATION, &SCHEMA_VERSION],
            )
            .await
            .map_err(io)?;
        let secret = crate::receipt::ReceiptKey::generate_secret();
        transaction
            .execute(
                &format!("INSERT INTO {q}.secrets (name, value) VALUES ($1, $2)"),
                &[&RECEIPT_SECRET, &&secret[..]],
            )
            .await
            .map_err(io)?;
        transaction.commit().await.map_err(io)?;
        tracing::info!(schema, version = SCHEMA_VERSION, "created Spool's tables");
        return Ok(());
    }
    let foreign = |why: String| {
        StorageError::Refused(format!(
            "schema {schema:?} holds tables that are not Spool's ({}): {why}; use another \
             --postgres-schema",
            existing.join(", ")
        ))
    };
    if !existing.iter().any(|name| name == "schema_version") {
        return Err(foreign("it has no schema_version table".into()));
    }
    let version = transaction
        .query_opt(
            &format!(
                "SELECT application, version FROM {}.schema_version",
                quoted(schema)
            ),
            &[],
        )
        .await;
    let (application, version): (String, i32) = match version {
        Ok(Some(row)) => (
            row.try_get(0).map_err(|e| foreign(e.to_string()))?,
            row.try_get(1).map_err(|e| foreign(e.to_string()))?,
        ),
        Ok(None) => return Err(foreign("its schema_version table is empty".into())),
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_COLUMN) => {
            return Err(foreign(format!(
                "its schema_version table is not Spool's: {error}"
            )));
        }
        Err(error) => return Err(io(error)),
    };
    if application != APPLICATION {
        return Err(foreign(format!(
            "its schema_version names the application {application:?}"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StorageError::Refused(format!(
            "schema {schema:?} was written by a newer Spool (schema version {version}; this one \
             knows {SCHEMA_VERSION}); run that version, or restore the database from before \
             the upgrade"
        )));
    }
    let expected_tables = match version {
        ..2 => VERSION_1_TABLES,
        2 => VERSION_2_TABLES,
        _ => TABLES.len(),
    };
    if existing.len() < expected_tables {
        return Err(foreign(format!(
            "Spool's version row is there but tables are missing (found only {})",
            existing.join(", ")
        )));
    }
    if version < 2 {
        // Migrated in this transaction: a crash leaves version 1 or version 2, each whole.
        let q = quoted(schema);
        transaction
            .batch_execute(&VERSION_2.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .execute(&format!("UPDATE {q}.schema_version SET version = 2"), &[])
            .await
            .map_err(io)?;
        tracing::info!(
            schema,
            "migrated Spool's tables from version 1 to 2 (message attributes, deduplication, \
             dead-letter policies)"
        );
    }
    if version < 3 {
        // In the same transaction as any step before: a crash leaves the version it found.
        let q = quoted(schema);
        transaction
            .batch_execute(&VERSION_3.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .execute(&format!("UPDATE {q}.schema_version SET version = 3"), &[])
            .await
            .map_err(io)?;
        tracing::info!(
            schema,
            "migrated Spool's tables from version 2 to 3 (topics and subscriptions)"
        );
    }
    if version < 4 {
        let q = quoted(schema);
        transaction
            .batch_execute(&VERSION_4.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .execute(&format!("UPDATE {q}.schema_version SET version = 4"), &[])
            .await
            .map_err(io)?;
        tracing::info!(
            schema,
            "migrated Spool's tables from version 3 to 4 (per-queue byte quotas, topic totals \
             kept)"
        );
    }
    if version < 5 {
        let q = quoted(schema);
        transaction
            .batch_execute(&VERSION_5.replace("{s}", &q))
            .await
            .map_err(io)?;
        transaction
            .execute(&format!("UPDATE {q}.schema_version SET version = 5"), &[])
            .await
            .map_err(io)?;
        tracing::info!(
            schema,
            "migrated Spool's tables from version 4 to 5 (message sizes, indexes by queue for \
             backlogs larger than memory)"
        );
    }
    transaction.commit().await.map_err(io)?;
    Ok(())
}

/// A PostgreSQL error as the operator should read it.
pub fn describe(schema: &str, what: &str, error: &tokio_postgres::Error) -> StorageError {
    let text = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    };
    match error.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => StorageError::Refused(format!(
            "{what} in schema {schema:?}: permission denied ({text}); the PostgreSQL user needs \
             CREATE on the database (first start) and USAGE on the schema"
        )),
        _ => StorageError::Io(format!("{what} (schema {schema:?}): {text}")),
    }
}

fn u32_column(row: &tokio_postgres::Row, index: usize) -> Result<u32, String> {
    let value: i64 = row.try_get(index).map_err(|e| e.to_string())?;
    u32::try_from(value).map_err(|_| format!("column {index} holds {value}, out of range"))
}

/// The columns of `queues` that [`queue_record`] reads, in its order.
pub const QUEUE_COLUMNS: &str = "id, name, visibility_timeout_seconds, polling_wait_seconds,
    max_message_size, message_retention_seconds, rewind_seconds, max_backlog, create_time_ms,
    update_time_ms, deduplication_window_seconds, dead_letter_queue, max_receive_count,
    max_time_to_live_seconds, max_bytes";

/// A queue from a row that starts with [`QUEUE_COLUMNS`].
pub fn queue_record(row: &tokio_postgres::Row) -> Result<QueueRecord, String> {
    queue_record_at(row, 0)
}

/// A queue from a row with [`QUEUE_COLUMNS`] from column `first` on.
pub fn queue_record_at(row: &tokio_postgres::Row, first: usize) -> Result<QueueRecord, String> {
    let get_i64 = |index: usize| {
        row.try_get::<_, i64>(first + index)
            .map_err(|e| e.to_string())
    };
    Ok(QueueRecord {
        id: get_i64(0)? as u64,
        name: row.try_get(first + 1).map_err(|e| e.to_string())?,
        attributes: QueueAttributes {
            visibility_timeout_seconds: u32_column(row, first + 2)?,
            polling_wait_seconds: u32_column(row, first + 3)?,
            max_message_size: u32_column(row, first + 4)?,
            message_retention_seconds: u32_column(row, first + 5)?,
            rewind_seconds: u32_column(row, first + 6)?,
            max_backlog: get_i64(7)? as u64,
            deduplication_window_seconds: u32_column(row, first + 10)?,
            dead_letter_policy: match row
                .try_get::<_, Option<String>>(first + 11)
                .map_err(|e| e.to_string())?
            {
                Some(dead_letter_queue) => Some(DeadLetterPolicy {
                    dead_letter_queue,
                    max_receive_count: u32_column(row, first + 12)?,
                    max_time_to_live_seconds: u32_column(row, first + 13)?,
                }),
                None => None,
            },
            max_bytes: get_i64(14)? as u64,
        },
        create_time_ms: get_i64(8)?,
        update_time_ms: get_i64(9)?,
    })
}

/// Reads every queue, the receipt key and the id counters.
pub async fn recover(client: &impl GenericClient, schema: &str) -> Result<Recovered, String> {
    let q = quoted(schema);
    let counter = |rows: &[tokio_postgres::Row], name: &str| -> Result<u64, String> {
        for row in rows {
            let row_name: String = row.try_get(0).map_err(|e| e.to_string())?;
            if row_name == name {
                let value: i64 = row.try_get(1).map_err(|e| e.to_string())?;
                return Ok(value as u64);
            }
        }
        Err(format!("the counter {name} is missing"))
    };
    let counters = client
        .query(&format!("SELECT name, value FROM {q}.counters"), &[])
        .await
        .map_err(|e| e.to_string())?;
    let secret: Vec<u8> = client
        .query_one(
            &format!("SELECT value FROM {q}.secrets WHERE name = $1"),
            &[&RECEIPT_SECRET],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| format!("the receipt key: {e}"))?;
    let receipt_secret: [u8; KEY_LEN] = secret
        .try_into()
        .map_err(|value: Vec<u8>| format!("the receipt key has {} bytes, not 32", value.len()))?;
    let rows = client
        .query(
            &format!("SELECT {QUEUE_COLUMNS} FROM {q}.queues ORDER BY id"),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let queues = rows
        .iter()
        .map(queue_record)
        .collect::<Result<Vec<_>, _>>()?;
    let deduplication_ids = client
        .query(
            &format!(
                "SELECT queue_id, deduplication_id, message_id, accepted_ms
                   FROM {q}.deduplication"
            ),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|row| {
            Ok(DeduplicationRecord {
                queue_id: row.try_get::<_, i64>(0).map_err(|e| e.to_string())? as u64,
                deduplication_id: row.try_get(1).map_err(|e| e.to_string())?,
                message_id: row.try_get::<_, i64>(2).map_err(|e| e.to_string())? as u64,
                accepted_ms: row.try_get(3).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (topics, subscriptions, topic_totals, subscription_totals) =
        read_topics(client, schema, None).await?;
    Ok(Recovered {
        queues,
        deduplication_ids,
        topics,
        subscriptions,
        topic_totals,
        subscription_totals,
        receipt_secret,
        next_queue_id: counter(&counters, "next_queue_id")?,
        next_message_id: counter(&counters, "next_message_id")?,
    })
}

/// Topics, subscriptions and their totals as [`read_topics`] reads them.
pub type TopicRows = (
    Vec<TopicRecord>,
    Vec<SubscriptionRecord>,
    HashMap<u64, TopicTotals>,
    HashMap<(u64, String), SubscriptionTotals>,
);

/// Every topic and subscription (with their totals) as PostgreSQL has them now, or only the topic `name` and its
/// subscriptions (recovery; cluster mode reads them again for each topic call, as any replica
/// may have changed them).
pub async fn read_topics(
    client: &impl GenericClient,
    schema: &str,
    name: Option<&str>,
) -> Result<TopicRows, String> {
    let q = quoted(schema);
    let text = |e: tokio_postgres::Error| e.to_string();
    let mut topics = Vec::new();
    let mut topic_totals = HashMap::new();
    for row in client
        .query(
            &format!(
                "SELECT id, name, max_message_size, filter_type, create_time_ms, update_time_ms,
                        published_messages, unrouted_messages
                   FROM {q}.topics WHERE $1::text IS NULL OR name = $1 ORDER BY id"
            ),
            &[&name],
        )
        .await
        .map_err(text)?
    {
        let code: i64 = row.try_get(3).map_err(text)?;
        topic_totals.insert(
            row.try_get::<_, i64>(0).map_err(text)? as u64,
            TopicTotals {
                published: row.try_get::<_, i64>(6).map_err(text)? as u64,
                unrouted: row.try_get::<_, i64>(7).map_err(text)? as u64,
            },
        );
        topics.push(TopicRecord {
            id: row.try_get::<_, i64>(0).map_err(text)? as u64,
            name: row.try_get(1).map_err(text)?,
            max_message_size: u32_column(&row, 2)?,
            filter_type: FilterType::from_code(code)
                .ok_or_else(|| format!("a topic's filter_type is {code}, unknown"))?,
            create_time_ms: row.try_get(4).map_err(text)?,
            update_time_ms: row.try_get(5).map_err(text)?,
        });
    }
    let mut subscriptions = Vec::new();
    let mut subscription_totals = HashMap::new();
    for row in client
        .query(
            &format!(
                "SELECT topic_id, name, queue_id, queue_name, filter, create_time_ms,
                        delivered_messages, filtered_out_messages
                   FROM {q}.subscriptions
                  WHERE $1::text IS NULL
                     OR topic_id IN (SELECT id FROM {q}.topics WHERE name = $1)
                  ORDER BY topic_id, name"
            ),
            &[&name],
        )
        .await
        .map_err(text)?
    {
        let filter: String = row.try_get(4).map_err(text)?;
        subscription_totals.insert(
            (
                row.try_get::<_, i64>(0).map_err(text)? as u64,
                row.try_get::<_, String>(1).map_err(text)?,
            ),
            SubscriptionTotals {
                delivered: row.try_get::<_, i64>(6).map_err(text)? as u64,
                filtered_out: row.try_get::<_, i64>(7).map_err(text)? as u64,
            },
        );
        subscriptions.push(SubscriptionRecord {
            topic_id: row.try_get::<_, i64>(0).map_err(text)? as u64,
            name: row.try_get(1).map_err(text)?,
            queue_id: row.try_get::<_, i64>(2).map_err(text)? as u64,
            queue_name: row.try_get(3).map_err(text)?,
            filter: decode_filter(&filter)
                .ok_or_else(|| format!("a subscription's filter is not a JSON array: {filter}"))?,
            create_time_ms: row.try_get(5).map_err(text)?,
        });
    }
    Ok((topics, subscriptions, topic_totals, subscription_totals))
}

/// Rows fetched per round trip of the recovery scan: a large backlog is read in pieces, never
/// held whole by the driver.
const RECOVERY_FETCH_ROWS: i32 = 10_000;

/// The metadata columns [`stored_message`] reads, in its order.
const MESSAGE_COLUMNS: &str =
    "id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms, receipt_nonce, state, size";

fn stored_message(row: &tokio_postgres::Row) -> Result<StoredMessage, String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let state: i16 = row.try_get(6).map_err(text)?;
    let dequeue_count: i32 = row.try_get(3).map_err(text)?;
    Ok(StoredMessage {
        id: row.try_get::<_, i64>(0).map_err(text)? as u64,
        enqueue_ms: row.try_get(1).map_err(text)?,
        visible_at_ms: row.try_get(2).map_err(text)?,
        dequeue_count: dequeue_count.max(0) as u32,
        first_dequeue_ms: row.try_get(4).map_err(text)?,
        receipt_nonce: row.try_get::<_, i64>(5).map_err(text)? as u64,
        state: StoredState::from_code(i64::from(state))
            .ok_or_else(|| format!("a message has the unknown state {state}"))?,
        size: row.try_get::<_, i32>(7).map_err(text)?.max(0) as u32,
    })
}

/// See `Storage::read_messages`: through `messages_by_queue`.
pub async fn read_messages(
    client: &impl GenericClient,
    schema: &str,
    queue_id: u64,
    after_id: u64,
    limit: usize,
) -> Result<Vec<StoredMessage>, String> {
    let rows = client
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM {}.messages
                  WHERE queue_id = $1 AND state = 0 AND id > $2 ORDER BY id LIMIT $3",
                quoted(schema)
            ),
            &[
                &(queue_id as i64),
                &(after_id.min(i64::MAX as u64) as i64),
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    rows.iter().map(stored_message).collect()
}

/// See `Storage::read_held`: the in-flight and delayed messages through `messages_hidden`, the
/// kept ones and tombstones through `messages_by_queue`, in one snapshot.
pub async fn read_held(
    client: &mut Client,
    schema: &str,
    queue_id: u64,
    now: i64,
) -> Result<Vec<StoredMessage>, String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let q = quoted(schema);
    let transaction = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(text)?;
    let mut rows = transaction
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM {q}.messages
                  WHERE queue_id = $1 AND state = 0 AND visible_at_ms > enqueue_ms
                    AND visible_at_ms > $2"
            ),
            &[&(queue_id as i64), &now],
        )
        .await
        .map_err(text)?;
    rows.extend(
        transaction
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM {q}.messages WHERE queue_id = $1 AND state > 0"
                ),
                &[&(queue_id as i64)],
            )
            .await
            .map_err(text)?,
    );
    transaction.commit().await.map_err(text)?;
    rows.iter().map(stored_message).collect()
}

/// See `Storage::count_live`.
pub async fn count_live(
    client: &impl GenericClient,
    schema: &str,
    queue_id: u64,
) -> Result<LiveTotals, String> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(size), 0)::int8 FROM {}.messages
                  WHERE queue_id = $1 AND state = 0",
                quoted(schema)
            ),
            &[&(queue_id as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(LiveTotals {
        count: row.try_get::<_, i64>(0).map_err(|e| e.to_string())?.max(0) as u64,
        bytes: row.try_get::<_, i64>(1).map_err(|e| e.to_string())?.max(0) as u64,
    })
}

/// See `Storage::queues_with_messages`: one seek of `messages_by_queue` per queue.
pub async fn queues_with_messages(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<u64>, String> {
    let statement = client
        .prepare(&format!(
            "SELECT queue_id FROM {}.messages WHERE queue_id > $1 ORDER BY queue_id LIMIT 1",
            quoted(schema)
        ))
        .await
        .map_err(|e| e.to_string())?;
    let mut queues = Vec::new();
    let mut after = 0i64;
    while let Some(row) = client
        .query_opt(&statement, &[&after])
        .await
        .map_err(|e| e.to_string())?
    {
        after = row.try_get(0).map_err(|e| e.to_string())?;
        queues.push(after as u64);
    }
    Ok(queues)
}

/// See `Storage::message_ids`.
pub async fn message_ids(
    client: &impl GenericClient,
    schema: &str,
    queue_id: u64,
    limit: usize,
) -> Result<Vec<u64>, String> {
    let rows = client
        .query(
            &format!(
                "SELECT id FROM {}.messages WHERE queue_id = $1 LIMIT $2",
                quoted(schema)
            ),
            &[&(queue_id as i64), &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    rows.iter()
        .map(|row| {
            row.try_get::<_, i64>(0)
                .map(|id| id as u64)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Visits the metadata (never the body) of every stored message, or of one queue's (by its
/// index, for a cluster's takeover), with its queue id, in id order, through a cursor in one
/// read-only snapshot.
pub async fn recover_messages_where(
    client: &mut Client,
    schema: &str,
    queue_id: Option<u64>,
    visit: &mut impl FnMut(u64, StoredMessage),
) -> Result<(), String> {
    let text = |e: tokio_postgres::Error| e.to_string();
    let transaction = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(text)?;
    let statement = transaction
        .prepare(&format!(
            "SELECT queue_id, id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms,
                    receipt_nonce, state,
                    octet_length(body) + coalesce(octet_length(meta), 0)
               FROM {}.messages {} ORDER BY id",
            quoted(schema),
            match queue_id {
                Some(_) => "WHERE queue_id = $1",
                None => "",
            }
        ))
        .await
        .map_err(text)?;
    let queue_param = queue_id.map(|id| id as i64);
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &queue_param {
        Some(id) => vec![id],
        None => vec![],
    };
    let portal = transaction.bind(&statement, &params).await.map_err(text)?;
    loop {
        let rows = transaction
            .query_portal(&portal, RECOVERY_FETCH_ROWS)
            .await
            .map_err(text)?;
        for row in &rows {
            let state: i16 = row.try_get(7).map_err(text)?;
            let state = StoredState::from_code(i64::from(state))
                .ok_or_else(|| format!("a message has the unknown state {state}"))?;
            let dequeue_count: i32 = row.try_get(4).map_err(text)?;
            visit(
                row.try_get::<_, i64>(0).map_err(text)? as u64,
                StoredMessage {
                    id: row.try_get::<_, i64>(1).map_err(text)? as u64,
                    enqueue_ms: row.try_get(2).map_err(text)?,
                    visible_at_ms: row.try_get(3).map_err(text)?,
                    dequeue_count: dequeue_count.max(0) as u32,
                    first_dequeue_ms: row.try_get(5).map_err(text)?,
                    receipt_nonce: row.try_get::<_, i64>(6).map_err(text)? as u64,
                    state,
                    size: row.try_get::<_, i32>(8).map_err(text)?.max(0) as u32,
                },
            );
        }
        if rows.len() < RECOVERY_FETCH_ROWS as usize {
            break;
        }
    }
    transaction.commit().await.map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["spool", "_x", "spool_test_1", &"a".repeat(63)] {
            assert!(validate_schema_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Spool",
            "1abc",
            "a-b",
            "a\"b",
            "pg_spool",
            &"a".repeat(64),
        ] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }
}
