//! The writer task, its session and its group commit.
//!
//! Durability costs one WAL flush per commit, whatever the commit holds, plus one round trip.
//! So the writer takes everything that is waiting (from every queue) and sends it as one
//! pipelined transaction: BEGIN, one statement per run of operations (a run of sends is one
//! INSERT of arrays), the counters, COMMIT, all written before the first answer is read. It
//! answers the whole group once COMMIT has returned; `synchronous_commit` is never lowered, so
//! that is after PostgreSQL has flushed the commit.
//!
//! The writer's session is also the one that holds the schema's advisory lock: every commit
//! goes through the session that keeps other servers out, so no commit can slip in between a
//! lost lock and its discovery. A broken session fails what it was committing (the outcome of
//! a COMMIT cut off is unknown, so it is never acknowledged), and the next group opens a new
//! one, lock first, with backoff while PostgreSQL cannot be reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::MaybeDone;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::connect::ConnectOptions;
use super::fence::{Fence, Stamp, Verdict};
use super::schema::{self, quoted};
use super::{Lost, describe_target};
use crate::storage::{CommitObserver, CommitReply, PublishCounts, StorageError, WriteOp};

/// Most requests applied in one transaction; bounds how long a commit holds its callers.
const MAX_GROUP: usize = 4_096;
/// Most messages written in one transaction (see the SQLite writer: a large queue's deletion
/// slices must not be gathered back into one long commit).
const MAX_GROUP_MESSAGES: usize = 8_192;
/// Message ids are reserved in the counters table this many at a time, so that most commits
/// do not write the counter row (see the SQLite writer).
const MESSAGE_ID_BLOCK: u64 = 1 << 16;
/// Longest a group's transaction may take before its session is given up: a commit that hangs
/// (PostgreSQL stalled, the network cut without a reset) must fail its callers, not hold them.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new session waits for the advisory lock before the schema is taken to be in use
/// by another server. After a crash or `pg_terminate_backend`, the old session's lock goes with
/// its backend, which PostgreSQL reaps within moments; a live server never lets go of it.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
/// Pause between tries of the advisory lock within [`LOCK_WAIT`].
const LOCK_RETRY: Duration = Duration::from_millis(100);
/// Cluster mode: how long the writer's session may sit inside a transaction without sending
/// anything before PostgreSQL ends it (see `open_session`). A live writer sends the rest of a
/// transaction within one round trip of the epoch check.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);
/// First and longest pause between attempts to reach PostgreSQL after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The statements of the write path, prepared once per session.
struct Statements {
    insert: Statement,
    remove: Statement,
    delete_queue_messages: Statement,
    delete_queue: Statement,
    keep: Statement,
    tombstone: Statement,
    restore: Statement,
    receives: Statement,
    create_queue: Statement,
    update_queue: Statement,
    raise_counter: Statement,
    remember_deduplication: Statement,
    forget_deduplication: Statement,
    delete_queue_deduplication: Statement,
    move_messages: Statement,
    /// Cluster mode: the `pending_adoptions` entries of a publish's copies into queues other
    /// replicas own (see `cluster::adoption`).
    pending_adoptions: Option<Statement>,
    /// Cluster mode: the epochs of a group's queues, read under a share lock (see `fence`).
    epochs: Statement,
    /// Cluster mode: this member, the owner of the queues it creates.
    owner: Option<String>,
    /// Cluster mode: fails (division by zero) unless every (queue id, epoch) pair given is
    /// current, the rows share-locked until the transaction ends. The division is by a CASE on
    /// the rows found, which the planner cannot fold into a constant error.
    assert_epochs: Statement,
    delete_queue_subscriptions: Statement,
    create_topic: Statement,
    update_topic: Statement,
    delete_topic: Statement,
    delete_topic_subscriptions: Statement,
    subscribe: Statement,
    unsubscribe: Statement,
    count_topic: Statement,
    count_subscriptions: Statement,
}

impl Statements {
    async fn prepare(
        client: &Client,
        schema: &str,
        member: Option<&str>,
    ) -> Result<Self, tokio_postgres::Error> {
        let cluster = member.is_some();
        let s = quoted(schema);
        let prepare = |sql: String| async move { client.prepare(&sql).await };
        Ok(Self {
            insert: prepare(format!(
                "INSERT INTO {s}.messages (queue_id, id, enqueue_ms, visible_at_ms, body, meta)
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::bytea[],
                                      $6::bytea[])"
            ))
            .await?,
            remove: prepare(format!(
                "DELETE FROM {s}.messages WHERE id = ANY($1::int8[])"
            ))
            .await?,
            delete_queue_messages: prepare(format!(
                "DELETE FROM {s}.messages WHERE queue_id = $1 AND id = ANY($2::int8[])"
            ))
            .await?,
            delete_queue: prepare(format!("DELETE FROM {s}.queues WHERE id = $1")).await?,
            keep: prepare(format!(
                "UPDATE {s}.messages m SET state = 1, dequeue_count = u.dequeue_count,
                        first_dequeue_ms = u.first_dequeue_ms, receipt_nonce = u.receipt_nonce
                   FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::int8[])
                        AS u(id, dequeue_count, first_dequeue_ms, receipt_nonce)
                  WHERE m.id = u.id"
            ))
            .await?,
            tombstone: prepare(format!(
                "UPDATE {s}.messages m SET state = 2, visible_at_ms = $4,
                        dequeue_count = u.dequeue_count, receipt_nonce = u.receipt_nonce,
                        body = ''::bytea, meta = NULL, dead_letter_source = NULL
                   FROM unnest($1::int8[], $2::int4[], $3::int8[])
                        AS u(id, dequeue_count, receipt_nonce)
                  WHERE m.id = u.id"
            ))
            .await?,
            restore: prepare(format!(
                "UPDATE {s}.messages SET state = 0, visible_at_ms = $2, receipt_nonce = 0
                  WHERE id = ANY($1::int8[])"
            ))
            .await?,
            receives: prepare(format!(
                "UPDATE {s}.messages m SET visible_at_ms = u.visible_at_ms,
                        dequeue_count = u.dequeue_count, first_dequeue_ms = u.first_dequeue_ms,
                        receipt_nonce = u.receipt_nonce
                   FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::int8[], $5::int8[])
                        AS u(id, visible_at_ms, dequeue_count, first_dequeue_ms, receipt_nonce)
                  WHERE m.id = u.id AND m.state = 0"
            ))
            .await?,
            // In cluster mode the creator is the queue's first owner, at the first epoch.
            create_queue: prepare(if cluster {
                format!(
                    "INSERT INTO {s}.queues (id, name, visibility_timeout_seconds,
                            polling_wait_seconds, max_message_size, message_retention_seconds,
                            rewind_seconds, max_backlog, create_time_ms, update_time_ms,
                            deduplication_window_seconds, dead_letter_queue, max_receive_count,
                            max_time_to_live_seconds, max_bytes, owner, owner_epoch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, {})",
                    super::fence::FIRST_EPOCH
                )
            } else {
                format!(
                    "INSERT INTO {s}.queues (id, name, visibility_timeout_seconds,
                            polling_wait_seconds, max_message_size, message_retention_seconds,
                            rewind_seconds, max_backlog, create_time_ms, update_time_ms,
                            deduplication_window_seconds, dead_letter_queue, max_receive_count,
                            max_time_to_live_seconds, max_bytes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                )
            })
            .await?,
            update_queue: prepare(format!(
                "UPDATE {s}.queues SET visibility_timeout_seconds = $2, polling_wait_seconds = $3,
                        max_message_size = $4, message_retention_seconds = $5,
                        rewind_seconds = $6, max_backlog = $7, update_time_ms = $8,
                        deduplication_window_seconds = $9, dead_letter_queue = $10,
                        max_receive_count = $11, max_time_to_live_seconds = $12,
                        max_bytes = $13
                  WHERE id = $1"
            ))
            .await?,
            raise_counter: prepare(format!(
                "UPDATE {s}.counters SET value = greatest(value, $2) WHERE name = $1"
            ))
            .await?,
            // An id whose window passed may still have its row (removed lazily): replaced.
            remember_deduplication: prepare(format!(
                "INSERT INTO {s}.deduplication (queue_id, deduplication_id, message_id, accepted_ms)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[])
                 ON CONFLICT (queue_id, deduplication_id) DO UPDATE
                    SET message_id = excluded.message_id, accepted_ms = excluded.accepted_ms"
            ))
            .await?,
            forget_deduplication: prepare(format!(
                "DELETE FROM {s}.deduplication
                  WHERE queue_id = $1 AND deduplication_id = ANY($2::text[])"
            ))
            .await?,
            delete_queue_deduplication: prepare(format!(
                "DELETE FROM {s}.deduplication WHERE queue_id = $1"
            ))
            .await?,
            move_messages: prepare(if cluster {
                // Cluster mode: the target queues' actors may be on other replicas, which learn
                // of the moved rows from `pending_adoptions`, written in the same statement
                // (see `cluster::adoption`). A row is never moved into a queue that is gone.
                format!(
                    "WITH moved AS (
                       UPDATE {s}.messages m SET queue_id = u.to_queue_id,
                              visible_at_ms = u.visible_at_ms, dequeue_count = 0,
                              first_dequeue_ms = 0, receipt_nonce = 0,
                              dead_letter_source = u.source,
                              dead_letter_receive_count = u.receive_count
                         FROM unnest($2::int8[], $3::int8[], $4::int8[], $5::text[], $6::int4[])
                              AS u(id, to_queue_id, visible_at_ms, source, receive_count)
                        WHERE m.id = u.id AND m.queue_id = $1 AND m.state = 0
                          AND EXISTS (SELECT 1 FROM {s}.queues q WHERE q.id = u.to_queue_id)
                    RETURNING m.queue_id, m.id)
                     INSERT INTO {s}.pending_adoptions (queue_id, message_id)
                     SELECT queue_id, id FROM moved ON CONFLICT DO NOTHING"
                )
            } else {
                format!(
                    "UPDATE {s}.messages m SET queue_id = u.to_queue_id, visible_at_ms = u.visible_at_ms,
                        dequeue_count = 0, first_dequeue_ms = 0, receipt_nonce = 0,
                        dead_letter_source = u.source, dead_letter_receive_count = u.receive_count
                   FROM unnest($2::int8[], $3::int8[], $4::int8[], $5::text[], $6::int4[])
                        AS u(id, to_queue_id, visible_at_ms, source, receive_count)
                  WHERE m.id = u.id AND m.queue_id = $1 AND m.state = 0"
                )
            })
            .await?,
            pending_adoptions: if cluster {
                Some(
                    prepare(format!(
                        "INSERT INTO {s}.pending_adoptions (queue_id, message_id)
                         SELECT * FROM unnest($1::int8[], $2::int8[]) ON CONFLICT DO NOTHING"
                    ))
                    .await?,
                )
            } else {
                None
            },
            epochs: prepare(format!(
                "SELECT id, owner_epoch FROM {s}.queues WHERE id = ANY($1::int8[]) FOR SHARE"
            ))
            .await?,
            owner: member.map(str::to_string),
            assert_epochs: prepare(format!(
                "SELECT 1 / (CASE WHEN count(*) = $3 THEN 1 ELSE 0 END)
                   FROM (SELECT 1 FROM {s}.queues q
                           JOIN unnest($1::int8[], $2::int8[]) AS u(id, epoch)
                             ON q.id = u.id AND q.owner_epoch = u.epoch
                            FOR SHARE OF q) AS current"
            ))
            .await?,
            delete_queue_subscriptions: prepare(format!(
                "DELETE FROM {s}.subscriptions WHERE queue_id = $1"
            ))
            .await?,
            create_topic: prepare(format!(
                "INSERT INTO {s}.topics (id, name, max_message_size, filter_type, create_time_ms,
                        update_time_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await?,
            update_topic: prepare(format!(
                "UPDATE {s}.topics SET max_message_size = $2, update_time_ms = $3 WHERE id = $1"
            ))
            .await?,
            delete_topic: prepare(format!("DELETE FROM {s}.topics WHERE id = $1")).await?,
            delete_topic_subscriptions: prepare(format!(
                "DELETE FROM {s}.subscriptions WHERE topic_id = $1"
            ))
            .await?,
            subscribe: prepare(format!(
                "INSERT INTO {s}.subscriptions (topic_id, name, queue_id, queue_name, filter,
                        create_time_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await?,
            unsubscribe: prepare(format!(
                "DELETE FROM {s}.subscriptions WHERE topic_id = $1 AND name = $2"
            ))
            .await?,
            // A publish's counts, in its transaction (rows deleted meanwhile match nothing).
            count_topic: prepare(format!(
                "UPDATE {s}.topics SET published_messages = published_messages + $2,
                        unrouted_messages = unrouted_messages + $3
                  WHERE id = $1"
            ))
            .await?,
            count_subscriptions: prepare(format!(
                "UPDATE {s}.subscriptions s
                    SET delivered_messages = s.delivered_messages + u.delivered,
                        filtered_out_messages = s.filtered_out_messages + u.filtered_out
                   FROM unnest($2::text[], $3::int8[], $4::int8[])
                        AS u(name, delivered, filtered_out)
                  WHERE s.topic_id = $1 AND s.name = u.name"
            ))
            .await?,
        })
    }
}

/// A connection that holds the schema's lock, with the write statements prepared on it.
pub struct Session {
    pub client: Client,
    statements: Statements,
    /// The message-id reservation in `counters`: raised by a block, in the same transaction,
    /// when a commit uses an id beyond it.
    reserved: u64,
}

/// Opens a session: connects, takes the schema's advisory lock, creates or checks the tables,
/// prepares the write statements. `Refused` when retrying cannot help (the schema is another
/// server's, or not Spool's); `Io` when PostgreSQL cannot be reached or fails.
///
/// `member`: cluster mode, as this member: take the schema's lock shared (cluster replicas
/// share the schema) and write the member as the owner of the queues it creates; see `fence`.
pub async fn open_session(
    options: &ConnectOptions,
    schema: &str,
    member: Option<&str>,
) -> Result<Session, StorageError> {
    let cluster = member.is_some();
    let target = describe_target(options, schema);
    let mut client = options
        .connect()
        .await
        .map_err(|e| StorageError::Io(format!("cannot connect to PostgreSQL at {target}: {e}")))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let locked = schema::try_lock(&client, schema, cluster)
            .await
            .map_err(|e| schema::describe(schema, "cannot take the server lock", &e))?;
        if locked {
            break;
        }
        if Instant::now() >= deadline {
            return Err(StorageError::Refused(if cluster {
                format!(
                    "PostgreSQL schema {target} is in use by a Spool server that is not in \
                     cluster mode (it holds the schema's advisory lock alone); stop it, or \
                     start it with --advertise-address as a replica of the cluster"
                )
            } else {
                format!(
                    "PostgreSQL schema {target} is in use by another Spool server (it holds the \
                     schema's advisory lock); one server per schema: stop the other one, give \
                     this one another --postgres-schema, or run them all in cluster mode \
                     (--advertise-address)"
                )
            }));
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
    schema::prepare(&mut client, schema).await?;
    if cluster {
        super::cluster_tables::prepare(&client, schema).await?;
        // A replica paused inside a transaction (between its epoch check and its commit)
        // holds share locks a takeover waits for: PostgreSQL ends such a session after this.
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ))
            .await
            .map_err(|e| schema::describe(schema, "cannot set up the session", &e))?;
    }
    let statements = Statements::prepare(&client, schema, member)
        .await
        .map_err(|e| schema::describe(schema, "cannot prepare the write statements", &e))?;
    let reserved = client
        .query_one(
            &format!(
                "SELECT value FROM {}.counters WHERE name = 'next_message_id'",
                quoted(schema)
            ),
            &[],
        )
        .await
        .and_then(|row| row.try_get::<_, i64>(0))
        .map_err(|e| schema::describe(schema, "cannot read the id counters", &e))?;
    Ok(Session {
        client,
        statements,
        reserved: reserved as u64,
    })
}

/// Starts the writer task on the current runtime with an open session.
pub fn spawn(
    session: Session,
    options: ConnectOptions,
    schema: String,
    metrics: Arc<dyn CommitObserver>,
    lost: Arc<Lost>,
    changes: Arc<AtomicU64>,
    fence: Option<Arc<Fence>>,
) -> mpsc::UnboundedSender<Request> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let writer = Writer {
        fence,
        session: Some(session),
        options,
        schema,
        metrics,
        lost,
        changes,
        refused: None,
        backoff: FIRST_BACKOFF,
        retry_at: Instant::now(),
        last_failure: String::new(),
    };
    tokio::spawn(writer.run(receiver));
    sender
}

struct Writer {
    /// Cluster mode: the owner epochs every transaction checks (see `fence`).
    fence: Option<Arc<Fence>>,
    /// None while PostgreSQL is unreachable (or after the session broke).
    session: Option<Session>,
    options: ConnectOptions,
    schema: String,
    metrics: Arc<dyn CommitObserver>,
    /// Told when the lock cannot be taken back: the server must stop serving.
    lost: Arc<Lost>,
    /// Message rows deleted or updated by committed groups, for the vacuum task.
    changes: Arc<AtomicU64>,
    /// Set once a new session was refused (the lock is another server's): writes fail for good.
    refused: Option<String>,
    /// Pause before the next attempt to open a session, doubled after each failure.
    backoff: Duration,
    /// No attempt before this; groups that come earlier fail at once.
    retry_at: Instant,
    /// Why the last attempt failed, for the groups failed meanwhile.
    last_failure: String,
}

/// How a group's transaction failed.
enum Failure {
    /// A statement failed and PostgreSQL rolled the transaction back; the session is fine.
    Statement(tokio_postgres::Error),
    /// The session broke or hung: the transaction's outcome may be unknown.
    Lost(String),
}

/// A write handed to the writer: the operation, the epochs its queues were held at then (cluster
/// mode; see `fence`), and whom to tell once it is durable (None for lazy writes).
pub struct Queued {
    pub op: WriteOp,
    pub stamp: Stamp,
    pub done: Option<CommitReply>,
}

/// What the storage hands the writer.
pub enum Request {
    Write(Queued),
    /// Commit everything before this request, answer, and stop.
    Close(oneshot::Sender<()>),
}

impl Request {
    /// Answers the request with `error` (the writer is gone).
    pub fn fail(self, error: StorageError) {
        match self {
            Self::Write(Queued {
                done: Some(done), ..
            }) => {
                let _ = done.send(Err(error));
            }
            Self::Write(_) => {}
            Self::Close(done) => {
                let _ = done.send(());
            }
        }
    }
}

type Group = Vec<Queued>;

impl Writer {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut group: Group = Vec::new();
        while let Some(first) = requests.recv().await {
            let mut close = None;
            let mut next = Some(first);
            let mut group_messages = 0;
            while let Some(request) = next.take() {
                match request {
                    Request::Write(queued) => {
                        group_messages += queued.op.message_count();
                        group.push(queued);
                    }
                    Request::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if group.len() < MAX_GROUP && group_messages < MAX_GROUP_MESSAGES {
                    next = requests.try_recv().ok();
                }
            }
            if !group.is_empty() {
                let started = std::time::Instant::now();
                let messages = group.iter().map(|queued| queued.op.message_count()).sum();
                let succeeded = self.commit_group(&mut group).await;
                self.metrics
                    .observe_commit(started.elapsed(), messages, succeeded);
            }
            if let Some(done) = close {
                // Later requests are refused: their senders hear that storage is closed. The
                // session (and with it the lock) ends before the close is answered, so a server
                // started again at once finds the schema free.
                requests.close();
                drop(self.session.take());
                let _ = done.send(());
                return;
            }
        }
    }

    /// The open session, opening one if there is none and the backoff allows.
    async fn session(&mut self) -> Result<&mut Session, StorageError> {
        if self
            .session
            .as_ref()
            .is_some_and(|session| session.client.is_closed())
        {
            tracing::warn!("the PostgreSQL session broke; reconnecting");
            self.session = None;
        }
        if self.session.is_none() {
            if let Some(refused) = &self.refused {
                return Err(StorageError::Refused(refused.clone()));
            }
            if Instant::now() < self.retry_at {
                return Err(StorageError::Io(format!(
                    "PostgreSQL is unavailable: {}",
                    self.last_failure
                )));
            }
            let member = self.fence.as_ref().map(|fence| fence.member().to_string());
            match open_session(&self.options, &self.schema, member.as_deref()).await {
                Ok(session) => {
                    tracing::info!(target = %describe_target(&self.options, &self.schema), "reconnected to PostgreSQL; the schema's lock is held again");
                    self.backoff = FIRST_BACKOFF;
                    self.session = Some(session);
                }
                Err(StorageError::Refused(why)) => {
                    tracing::error!(error = %why, "cannot take the schema's lock back; stopping");
                    self.refused = Some(why.clone());
                    self.lost.signal(StorageError::Refused(why.clone()));
                    return Err(StorageError::Refused(why));
                }
                Err(error) => {
                    // Once per backoff step, with the reason.
                    tracing::warn!(%error, retry_in = ?self.backoff, "PostgreSQL is unreachable");
                    self.last_failure = error.to_string();
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(error);
                }
            }
        }
        match self.session.as_mut() {
            Some(session) => Ok(session),
            // Set just above when it was None.
            None => Err(StorageError::Closed),
        }
    }

    /// Commits the group in one transaction; if a statement fails, retries each operation on
    /// its own so that one bad write does not fail the others. Returns whether the group
    /// commit succeeded.
    async fn commit_group(&mut self, group: &mut Group) -> bool {
        let fence = self.fence.clone();
        let session = match self.session().await {
            Ok(session) => session,
            Err(error) => {
                fail_all(group, &error);
                return false;
            }
        };
        let ops: Vec<&WriteOp> = group.iter().map(|queued| &queued.op).collect();
        let stamps: Vec<&Stamp> = group.iter().map(|queued| &queued.stamp).collect();
        let outcome = transaction(session, &ops, &stamps, fence.as_deref()).await;
        drop((ops, stamps));
        match outcome {
            Ok(verdicts) => {
                let changed: usize = group
                    .iter()
                    .filter(|queued| queued.op.inserted_messages().is_none())
                    .map(|queued| queued.op.message_count())
                    .sum();
                self.changes.fetch_add(changed as u64, Ordering::Relaxed);
                answer(fence.as_deref(), group.drain(..), &verdicts);
                true
            }
            Err(Failure::Lost(why)) => {
                self.session_lost(group, &why);
                false
            }
            Err(Failure::Statement(error)) if group.len() == 1 => {
                let error = statement_error(&error);
                tracing::error!(%error, "storage commit failed");
                fail_all(group, &error);
                false
            }
            Err(Failure::Statement(error)) => {
                tracing::warn!(error = %statement_error(&error), ops = group.len(), "group commit failed; retrying one by one");
                let mut rest = std::mem::take(group).into_iter();
                while let Some(queued) = rest.next() {
                    let Some(session) = self.session.as_mut() else {
                        group.push(queued);
                        break;
                    };
                    match transaction(session, &[&queued.op], &[&queued.stamp], fence.as_deref())
                        .await
                    {
                        Ok(verdicts) => answer(fence.as_deref(), [queued], &verdicts),
                        Err(Failure::Statement(error)) => {
                            let error = statement_error(&error);
                            tracing::error!(%error, "storage commit failed");
                            if let Some(done) = queued.done {
                                let _ = done.send(Err(error));
                            }
                        }
                        Err(Failure::Lost(why)) => {
                            group.push(queued);
                            group.extend(rest.by_ref());
                            self.session_lost(group, &why);
                            break;
                        }
                    }
                }
                // Whatever is left here lost its session before it could be tried.
                fail_all(
                    group,
                    &StorageError::Io("the PostgreSQL session was lost".into()),
                );
                false
            }
        }
    }

    /// The session broke during a commit: nothing of the group is acknowledged (its COMMIT may
    /// or may not have happened), and the next group opens a new session.
    fn session_lost(&mut self, group: &mut Group, why: &str) {
        tracing::error!(error = %why, ops = group.len(), "PostgreSQL session lost during a commit; its outcome is unknown, so nothing of it is acknowledged");
        self.session = None;
        fail_all(
            group,
            &StorageError::Io(format!(
                "the PostgreSQL session was lost during the commit ({why}); it may or may not \
                 have been applied"
            )),
        );
    }
}

/// Answers the operations of a committed transaction by the fence's verdicts (all applied
/// outside cluster mode), and tells the fence what changed.
fn answer(fence: Option<&Fence>, ops: impl IntoIterator<Item = Queued>, verdicts: &[Verdict]) {
    let mut lost = std::collections::HashSet::new();
    for (Queued { op, stamp, done }, verdict) in ops.into_iter().zip(verdicts) {
        let result = match verdict {
            Verdict::Apply => {
                if let Some(fence) = fence {
                    fence.committed(&op);
                }
                Ok(())
            }
            Verdict::Fenced if matches!(op, WriteOp::Publish { .. }) => {
                // Its queues' actors learn of a loss by their own writes.
                Err(StorageError::Io(
                    "a queue of the publish is owned by another replica now, or was deleted; \
                     nothing was written: retry the call"
                        .into(),
                ))
            }
            Verdict::Fenced => {
                lost.insert((op.queue_id(), stamp.epoch(op.queue_id())));
                Err(StorageError::Io(format!(
                    "queue {} is owned by another replica now (its owner epoch changed); \
                     nothing was written: retry the call",
                    op.queue_id()
                )))
            }
            Verdict::OutOfIds => Err(StorageError::Io(
                "this replica used every id of the block it reserved at startup; restart it \
                 to reserve a new block"
                    .into(),
            )),
        };
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }
    if let Some(fence) = fence
        && !lost.is_empty()
    {
        fence.report_lost(lost);
    }
}

fn fail_all(group: &mut Group, error: &StorageError) {
    for Queued { done, .. } in group.drain(..) {
        if let Some(done) = done {
            let _ = done.send(Err(error.clone()));
        }
    }
}

fn statement_error(error: &tokio_postgres::Error) -> StorageError {
    match error.as_db_error() {
        Some(db) => StorageError::Io(format!(
            "commit failed: {}: {}",
            db.code().code(),
            db.message()
        )),
        None => StorageError::Io(format!("commit failed: {error}")),
    }
}

type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

/// One statement of a group's transaction with its parameters.
struct Step<'a> {
    statement: &'a Statement,
    params: Vec<Param<'a>>,
}

/// The deduplication ids of a run of inserts, as the arrays of one INSERT.
#[derive(Default)]
struct DeduplicationRows<'a> {
    queue_ids: Vec<i64>,
    ids: Vec<&'a str>,
    message_ids: Vec<i64>,
    accepted_ms: Vec<i64>,
}

/// The statements that add a publish's counts to its topic's and subscriptions' totals.
fn count_publish<'a>(statements: &'a Statements, counts: &'a PublishCounts) -> [Step<'a>; 2] {
    let topic_id = counts.topic_id as i64;
    let (names, delivered, filtered_out): (Vec<&str>, Vec<i64>, Vec<i64>) = counts
        .subscriptions
        .iter()
        .map(|(name, totals)| {
            (
                name.as_str(),
                totals.delivered as i64,
                totals.filtered_out as i64,
            )
        })
        .collect();
    [
        Step {
            statement: &statements.count_topic,
            params: vec![
                Box::new(topic_id),
                Box::new(counts.topic.published as i64),
                Box::new(counts.topic.unrouted as i64),
            ],
        },
        Step {
            statement: &statements.count_subscriptions,
            params: vec![
                Box::new(topic_id),
                Box::new(names),
                Box::new(delivered),
                Box::new(filtered_out),
            ],
        },
    ]
}

fn ids(ids: impl IntoIterator<Item = u64>) -> Vec<i64> {
    ids.into_iter().map(|id| id as i64).collect()
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The statements for `ops`, in their order; consecutive inserts and removals (the bulk of a
/// busy group, from many queues) are merged into one statement each.
fn steps<'a>(
    statements: &'a Statements,
    ops: &[&'a WriteOp],
    next_queue_id: &mut u64,
    next_message_id: &mut u64,
) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let mut index = 0;
    while index < ops.len() {
        match ops[index] {
            WriteOp::InsertMessages { .. } | WriteOp::Publish { .. } => {
                let (mut queue_ids, mut message_ids, mut enqueue, mut visible, mut bodies) = (
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    Vec::<&[u8]>::new(),
                );
                let mut metas: Vec<Option<Vec<u8>>> = Vec::new();
                let mut deduplication = DeduplicationRows::default();
                let mut counts = Vec::new();
                let (mut pending_queue_ids, mut pending_ids) = (Vec::new(), Vec::new());
                // Sends and publishes alike: a publish's copies are rows of this one statement,
                // so they are in the transaction whole.
                while let Some(rows) = ops
                    .get(index)
                    .and_then(|op: &&'a WriteOp| (*op).inserted_messages())
                {
                    for (queue_id, message) in rows {
                        let queue_id = &queue_id;
                        queue_ids.push(*queue_id as i64);
                        message_ids.push(message.id as i64);
                        enqueue.push(message.enqueue_ms);
                        visible.push(message.visible_at_ms);
                        bodies.push(&message.payload.body[..]);
                        metas.push(message.payload.encoded_meta());
                        if let Some(id) = &message.deduplication_id {
                            deduplication.queue_ids.push(*queue_id as i64);
                            deduplication.ids.push(id.as_str());
                            deduplication.message_ids.push(message.id as i64);
                            deduplication.accepted_ms.push(message.enqueue_ms);
                        }
                        *next_message_id = (*next_message_id).max(message.id + 1);
                    }
                    if let Some(id) = ops[index].last_publish_id() {
                        *next_message_id = (*next_message_id).max(id + 1);
                    }
                    counts.extend(ops[index].publish_counts());
                    if let WriteOp::Publish {
                        copies,
                        remote_queue_ids,
                        ..
                    } = ops[index]
                    {
                        for (queue_id, messages) in copies {
                            if remote_queue_ids.contains(queue_id) {
                                for message in messages {
                                    pending_queue_ids.push(*queue_id as i64);
                                    pending_ids.push(message.id as i64);
                                }
                            }
                        }
                    }
                    index += 1;
                }
                steps.push(Step {
                    statement: &statements.insert,
                    params: vec![
                        Box::new(queue_ids),
                        Box::new(message_ids),
                        Box::new(enqueue),
                        Box::new(visible),
                        Box::new(bodies),
                        Box::new(metas),
                    ],
                });
                if !deduplication.ids.is_empty() {
                    steps.push(Step {
                        statement: &statements.remember_deduplication,
                        params: vec![
                            Box::new(deduplication.queue_ids),
                            Box::new(deduplication.ids),
                            Box::new(deduplication.message_ids),
                            Box::new(deduplication.accepted_ms),
                        ],
                    });
                }
                for counts in counts {
                    steps.extend(count_publish(statements, counts));
                }
                if let Some(statement) = &statements.pending_adoptions
                    && !pending_ids.is_empty()
                {
                    steps.push(Step {
                        statement,
                        params: vec![Box::new(pending_queue_ids), Box::new(pending_ids)],
                    });
                }
                continue;
            }
            WriteOp::RemoveMessages { .. } => {
                let mut removed = Vec::new();
                while let Some(WriteOp::RemoveMessages { ids: more, .. }) = ops.get(index) {
                    removed.extend(more.iter().map(|id| *id as i64));
                    index += 1;
                }
                steps.push(Step {
                    statement: &statements.remove,
                    params: vec![Box::new(removed)],
                });
                continue;
            }
            WriteOp::CreateQueue(queue) => {
                let a = &queue.attributes;
                steps.push(Step {
                    statement: &statements.create_queue,
                    params: vec![
                        Box::new(queue.id as i64),
                        Box::new(queue.name.as_str()),
                        Box::new(i64::from(a.visibility_timeout_seconds)),
                        Box::new(i64::from(a.polling_wait_seconds)),
                        Box::new(i64::from(a.max_message_size)),
                        Box::new(i64::from(a.message_retention_seconds)),
                        Box::new(i64::from(a.rewind_seconds)),
                        Box::new(a.max_backlog as i64),
                        Box::new(queue.create_time_ms),
                        Box::new(queue.update_time_ms),
                        Box::new(i64::from(a.deduplication_window_seconds)),
                        Box::new(
                            a.dead_letter_policy
                                .as_ref()
                                .map(|p| p.dead_letter_queue.clone()),
                        ),
                        Box::new(i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_receive_count),
                        )),
                        Box::new(i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_time_to_live_seconds),
                        )),
                        Box::new(a.max_bytes as i64),
                    ],
                });
                if let Some(owner) = &statements.owner
                    && let Some(step) = steps.last_mut()
                {
                    step.params.push(Box::new(owner.as_str()));
                }
                *next_queue_id = (*next_queue_id).max(queue.id + 1);
            }
            WriteOp::UpdateQueue(queue) => {
                let a = &queue.attributes;
                steps.push(Step {
                    statement: &statements.update_queue,
                    params: vec![
                        Box::new(queue.id as i64),
                        Box::new(i64::from(a.visibility_timeout_seconds)),
                        Box::new(i64::from(a.polling_wait_seconds)),
                        Box::new(i64::from(a.max_message_size)),
                        Box::new(i64::from(a.message_retention_seconds)),
                        Box::new(i64::from(a.rewind_seconds)),
                        Box::new(a.max_backlog as i64),
                        Box::new(queue.update_time_ms),
                        Box::new(i64::from(a.deduplication_window_seconds)),
                        Box::new(
                            a.dead_letter_policy
                                .as_ref()
                                .map(|p| p.dead_letter_queue.clone()),
                        ),
                        Box::new(i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_receive_count),
                        )),
                        Box::new(i64::from(
                            a.dead_letter_policy
                                .as_ref()
                                .map_or(0, |p| p.max_time_to_live_seconds),
                        )),
                        Box::new(a.max_bytes as i64),
                    ],
                });
            }
            WriteOp::DeleteQueue {
                queue_id,
                message_ids,
            } => {
                steps.push(Step {
                    statement: &statements.delete_queue_messages,
                    params: vec![
                        Box::new(*queue_id as i64),
                        Box::new(ids(message_ids.iter().copied())),
                    ],
                });
                steps.push(Step {
                    statement: &statements.delete_queue,
                    params: vec![Box::new(*queue_id as i64)],
                });
                steps.push(Step {
                    statement: &statements.delete_queue_deduplication,
                    params: vec![Box::new(*queue_id as i64)],
                });
                // A queue's subscriptions go with it (see `topic`).
                steps.push(Step {
                    statement: &statements.delete_queue_subscriptions,
                    params: vec![Box::new(*queue_id as i64)],
                });
            }
            WriteOp::DeleteMessages(deleted) => {
                if !deleted.removed.is_empty() {
                    steps.push(Step {
                        statement: &statements.remove,
                        params: vec![Box::new(ids(deleted.removed.iter().copied()))],
                    });
                }
                if !deleted.kept.is_empty() {
                    let kept = &deleted.kept;
                    steps.push(Step {
                        statement: &statements.keep,
                        params: vec![
                            Box::new(ids(kept.iter().map(|k| k.id))),
                            Box::new(
                                kept.iter()
                                    .map(|k| count(k.dequeue_count))
                                    .collect::<Vec<_>>(),
                            ),
                            Box::new(kept.iter().map(|k| k.first_dequeue_ms).collect::<Vec<_>>()),
                            Box::new(ids(kept.iter().map(|k| k.receipt_nonce))),
                        ],
                    });
                }
                if !deleted.tombstones.is_empty() {
                    let tombstones = &deleted.tombstones;
                    steps.push(Step {
                        statement: &statements.tombstone,
                        params: vec![
                            Box::new(ids(tombstones.iter().map(|k| k.id))),
                            Box::new(
                                tombstones
                                    .iter()
                                    .map(|k| count(k.dequeue_count))
                                    .collect::<Vec<_>>(),
                            ),
                            Box::new(ids(tombstones.iter().map(|k| k.receipt_nonce))),
                            Box::new(deleted.tombstone_until_ms),
                        ],
                    });
                }
            }
            WriteOp::Restore {
                ids: restored,
                visible_at_ms,
                ..
            } => {
                steps.push(Step {
                    statement: &statements.restore,
                    params: vec![
                        Box::new(ids(restored.iter().copied())),
                        Box::new(*visible_at_ms),
                    ],
                });
            }
            WriteOp::RecordReceives { receives, .. } => {
                // One UPDATE ... FROM unnest applies at most one entry per row; should a message
                // appear twice, its last receive is the one that counts.
                let mut latest = std::collections::HashMap::with_capacity(receives.len());
                for (position, receive) in receives.iter().enumerate() {
                    latest.insert(receive.id, position);
                }
                let kept: Vec<_> = receives
                    .iter()
                    .enumerate()
                    .filter(|(position, receive)| latest.get(&receive.id) == Some(position))
                    .map(|(_, receive)| receive)
                    .collect();
                steps.push(Step {
                    statement: &statements.receives,
                    params: vec![
                        Box::new(ids(kept.iter().map(|r| r.id))),
                        Box::new(kept.iter().map(|r| r.visible_at_ms).collect::<Vec<_>>()),
                        Box::new(
                            kept.iter()
                                .map(|r| count(r.dequeue_count))
                                .collect::<Vec<_>>(),
                        ),
                        Box::new(kept.iter().map(|r| r.first_dequeue_ms).collect::<Vec<_>>()),
                        Box::new(ids(kept.iter().map(|r| r.receipt_nonce))),
                    ],
                });
            }
            WriteOp::MoveMessages {
                from_queue_id,
                moves,
            } => {
                steps.push(Step {
                    statement: &statements.move_messages,
                    params: vec![
                        Box::new(*from_queue_id as i64),
                        Box::new(ids(moves.iter().map(|m| m.id))),
                        Box::new(ids(moves.iter().map(|m| m.to_queue_id))),
                        Box::new(moves.iter().map(|m| m.visible_at_ms).collect::<Vec<_>>()),
                        Box::new(
                            moves
                                .iter()
                                .map(|m| m.dead_letter.as_ref().map(|d| d.source_queue.to_string()))
                                .collect::<Vec<_>>(),
                        ),
                        Box::new(
                            moves
                                .iter()
                                .map(|m| {
                                    m.dead_letter.as_ref().map_or(0, |d| count(d.receive_count))
                                })
                                .collect::<Vec<_>>(),
                        ),
                    ],
                });
            }
            WriteOp::CreateTopic(topic) => steps.push(Step {
                statement: &statements.create_topic,
                params: vec![
                    Box::new(topic.id as i64),
                    Box::new(topic.name.as_str()),
                    Box::new(i64::from(topic.max_message_size)),
                    Box::new(topic.filter_type.code()),
                    Box::new(topic.create_time_ms),
                    Box::new(topic.update_time_ms),
                ],
            }),
            WriteOp::UpdateTopic(topic) => steps.push(Step {
                statement: &statements.update_topic,
                params: vec![
                    Box::new(topic.id as i64),
                    Box::new(i64::from(topic.max_message_size)),
                    Box::new(topic.update_time_ms),
                ],
            }),
            WriteOp::DeleteTopic { topic_id } => {
                steps.push(Step {
                    statement: &statements.delete_topic_subscriptions,
                    params: vec![Box::new(*topic_id as i64)],
                });
                steps.push(Step {
                    statement: &statements.delete_topic,
                    params: vec![Box::new(*topic_id as i64)],
                });
            }
            WriteOp::Subscribe(subscription) => steps.push(Step {
                statement: &statements.subscribe,
                params: vec![
                    Box::new(subscription.topic_id as i64),
                    Box::new(subscription.name.as_str()),
                    Box::new(subscription.queue_id as i64),
                    Box::new(subscription.queue_name.as_str()),
                    Box::new(crate::storage::encode_filter(&subscription.filter)),
                    Box::new(subscription.create_time_ms),
                ],
            }),
            WriteOp::Unsubscribe { topic_id, name } => steps.push(Step {
                statement: &statements.unsubscribe,
                params: vec![Box::new(*topic_id as i64), Box::new(name.as_str())],
            }),
            WriteOp::ForgetDeduplicationIds { queue_id, ids, .. } => {
                steps.push(Step {
                    statement: &statements.forget_deduplication,
                    params: vec![Box::new(*queue_id as i64), Box::new(ids.clone())],
                });
            }
        }
        index += 1;
    }
    steps
}

type Reply<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Applies `ops` in one pipelined transaction. `session.reserved` is raised only once the
/// transaction has committed.
///
/// In cluster mode (`fence`), the transaction checks its queues' epochs under a share lock a
/// takeover must wait for: asserted within the same pipelined round trip when every queue is
/// held here, else (or when the assertion fails) read first, one more round trip, and only the
/// operations the fence lets through are applied; the verdicts say which, one per operation.
async fn transaction(
    session: &mut Session,
    ops: &[&WriteOp],
    stamps: &[&Stamp],
    fence: Option<&Fence>,
) -> Result<Vec<Verdict>, Failure> {
    let Some(fence) = fence else {
        apply(session, ops, None).await?;
        return Ok(vec![Verdict::Apply; ops.len()]);
    };
    // The common case, in one round trip: every queue written is held here, and the epochs are
    // asserted in the pipelined transaction itself. Only if the assertion fails (a queue was
    // lost) does the transaction run again, epochs read first, to apply what is still ours.
    if let Some(expected) = expected_epochs(ops, stamps)
        && apply(session, ops, Some(Begin::Asserting(expected))).await?
    {
        return Ok(vec![Verdict::Apply; ops.len()]);
    }
    let verdicts = fenced(session, ops, stamps, fence).await?;
    let applied: Vec<&WriteOp> = ops
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| **verdict == Verdict::Apply)
        .map(|(op, _)| *op)
        .collect();
    apply(session, &applied, Some(Begin::Begun)).await?;
    Ok(verdicts)
}

/// How a transaction of [`apply`] starts in cluster mode.
enum Begin {
    /// `BEGIN` was sent already (with the epochs read, see [`fenced`]).
    Begun,
    /// `BEGIN`, then these (queue id, epoch) pairs asserted under a share lock.
    Asserting((Vec<i64>, Vec<i64>)),
}

/// The epochs to assert for `ops`, if every queue they write was held here when it was handed
/// over, and at one epoch within the group (creating a queue, cleaning up after a deleted one,
/// or a write of a former epoch takes the slower path of [`fenced`]).
fn expected_epochs(ops: &[&WriteOp], stamps: &[&Stamp]) -> Option<(Vec<i64>, Vec<i64>)> {
    let mut held = std::collections::BTreeMap::new();
    for (op, stamp) in ops.iter().zip(stamps) {
        if matches!(op, WriteOp::CreateQueue(_)) {
            return None;
        }
        let queue_id = op.queue_id();
        let epoch = stamp.epoch(queue_id)?;
        if *held.entry(queue_id as i64).or_insert(epoch) != epoch {
            return None;
        }
    }
    Some(held.into_iter().unzip())
}

/// Applies `ops` in one pipelined transaction; false if the epochs asserted (cluster mode)
/// were not all current, in which case nothing was applied.
async fn apply(
    session: &mut Session,
    ops: &[&WriteOp],
    begin: Option<Begin>,
) -> Result<bool, Failure> {
    let begun = matches!(begin, Some(Begin::Begun));
    let asserted = match begin {
        Some(Begin::Asserting(expected)) => Some(expected),
        _ => None,
    };
    let mut next_queue_id = 0u64;
    let mut next_message_id = 0u64;
    let mut steps = steps(
        &session.statements,
        ops,
        &mut next_queue_id,
        &mut next_message_id,
    );
    if next_queue_id > 0 {
        steps.push(Step {
            statement: &session.statements.raise_counter,
            params: vec![Box::new("next_queue_id"), Box::new(next_queue_id as i64)],
        });
    }
    let reservation =
        (next_message_id > session.reserved).then(|| next_message_id + MESSAGE_ID_BLOCK);
    if let Some(reservation) = reservation {
        steps.push(Step {
            statement: &session.statements.raise_counter,
            params: vec![Box::new("next_message_id"), Box::new(reservation as i64)],
        });
    }
    let client = &session.client;
    let mut replies: Vec<Pin<Box<MaybeDone<Reply<'_>>>>> = Vec::with_capacity(steps.len() + 2);
    if !begun {
        replies.push(Box::pin(MaybeDone::Future(Box::pin(async move {
            client.batch_execute("BEGIN").await.map(|()| 0)
        }))));
    }
    // The assertion's reply, by its place among the replies.
    let assertion = asserted.as_ref().map(|_| replies.len());
    if let Some((ids, epochs)) = &asserted {
        let statement = &session.statements.assert_epochs;
        let count = ids.len() as i64;
        replies.push(Box::pin(MaybeDone::Future(Box::pin(async move {
            client.execute(statement, &[ids, epochs, &count]).await
        }))));
    }
    for step in &steps {
        replies.push(Box::pin(MaybeDone::Future(Box::pin(async move {
            let params: Vec<&(dyn ToSql + Sync)> = step
                .params
                .iter()
                .map(|param| param.as_ref() as &(dyn ToSql + Sync))
                .collect();
            client.execute(step.statement, &params).await
        }))));
    }
    // If a statement failed, PostgreSQL answers this COMMIT with a ROLLBACK (not an error);
    // the statement's own error tells.
    replies.push(Box::pin(MaybeDone::Future(Box::pin(async move {
        client.batch_execute("COMMIT").await.map(|()| 0)
    }))));
    let exchange = async {
        // The first poll of each reply sends its request, so polling them all once, in order,
        // writes the whole transaction before waiting for any answer: one round trip.
        std::future::poll_fn(|cx| {
            for reply in replies.iter_mut() {
                let _ = reply.as_mut().poll(cx);
            }
            std::task::Poll::Ready(())
        })
        .await;
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies.iter_mut() {
            reply.as_mut().await;
            results.push(reply.as_mut().take_output());
        }
        results
    };
    let results = match tokio::time::timeout(COMMIT_TIMEOUT, exchange).await {
        Ok(results) => results,
        Err(_) => {
            return Err(Failure::Lost(format!(
                "no answer from PostgreSQL within {COMMIT_TIMEOUT:?}"
            )));
        }
    };
    let mut statement_failure = None;
    for (index, result) in results.into_iter().enumerate() {
        if Some(index) == assertion
            && let Some(Err(error)) = &result
            && error.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
        {
            // PostgreSQL rolled the transaction back (its COMMIT answered ROLLBACK).
            return Ok(false);
        }
        match result {
            Some(Ok(_)) => {}
            Some(Err(error)) if ends_session(&error) || session.client.is_closed() => {
                return Err(Failure::Lost(error.to_string()));
            }
            Some(Err(error)) => {
                // The first one is the cause; the later ones say the transaction is aborted.
                statement_failure.get_or_insert(error);
            }
            // Every reply was awaited above.
            None => return Err(Failure::Lost("a reply went missing".into())),
        }
    }
    if let Some(error) = statement_failure {
        return Err(Failure::Statement(error));
    }
    if let Some(reservation) = reservation {
        session.reserved = reservation;
    }
    Ok(true)
}

/// Cluster mode: opens the transaction and reads the epochs of the queues `ops` write, under a
/// share lock held until it ends; the fence's verdict on each operation.
async fn fenced(
    session: &Session,
    ops: &[&WriteOp],
    stamps: &[&Stamp],
    fence: &Fence,
) -> Result<Vec<Verdict>, Failure> {
    let mut queue_ids: Vec<i64> = ops
        .iter()
        .flat_map(|op| op.fenced_queue_ids())
        .map(|id| id as i64)
        .collect();
    queue_ids.sort_unstable();
    queue_ids.dedup();
    let client = &session.client;
    let read = async {
        let (begun, rows) = futures_util::future::join(
            client.batch_execute("BEGIN"),
            client.query(&session.statements.epochs, &[&queue_ids]),
        )
        .await;
        begun.and(rows)
    };
    let rows = match tokio::time::timeout(COMMIT_TIMEOUT, read).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) if ends_session(&error) || client.is_closed() => {
            return Err(Failure::Lost(error.to_string()));
        }
        Ok(Err(error)) => {
            // The transaction is aborted; end it so the session can go on.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Failure::Statement(error));
        }
        Err(_) => {
            return Err(Failure::Lost(format!(
                "no answer from PostgreSQL within {COMMIT_TIMEOUT:?}"
            )));
        }
    };
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let (Ok(id), Ok(epoch)) = (row.try_get::<_, i64>(0), row.try_get::<_, i64>(1)) else {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Failure::Lost("the queues' epochs could not be read".into()));
        };
        stored.insert(id as u64, epoch);
    }
    Ok(ops
        .iter()
        .zip(stamps)
        .map(|(op, stamp)| fence.judge(op, stamp, &stored))
        .collect())
}

/// Whether `error` ends the session rather than one statement: the connection broke, or the
/// server ended the session (a FATAL error such as `pg_terminate_backend`'s 57P01, or a
/// shutdown). Either way a COMMIT in flight may or may not have been applied.
fn ends_session(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(db) => {
            let class = &db.code().code()[..2];
            matches!(db.severity(), "FATAL" | "PANIC") || class == "57" || class == "08"
        }
    }
}
