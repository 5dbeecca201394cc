//! Where queues and messages live. The queue actors own scheduling; storage owns bytes on disk.
//!
//! The [`Storage`] trait is what an actor needs from a backend: durable commits it can wait for,
//! lazy writes it does not wait for, body reads, and recovery at startup. Replies travel through
//! oneshot channels so the trait stays object-safe and no backend call blocks an async task.

#[cfg(any(test, feature = "fuzzing"))]
// The fuzz targets use only part of what the tests do.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod memory;
pub mod postgres;
pub mod sqlite;

use tokio::sync::oneshot;

use crate::attributes::QueueAttributes;
use crate::clock::Millis;
use crate::payload::{DeadLetterOrigin, Payload};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The data directory cannot be used; startup stops before touching it.
    #[error("{0}")]
    BadDataDir(String),
    /// The database cannot be used and trying again will not help (a foreign or newer schema,
    /// another server holding it): startup stops, or a running server stops serving.
    #[error("{0}")]
    Refused(String),
    /// A read or a commit failed (I/O error, disk full, ...).
    #[error("{0}")]
    Io(String),
    /// The storage has been closed for shutdown.
    #[error("storage is closed")]
    Closed,
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecord {
    /// Never reused, so a queue created again under an old name starts empty.
    pub id: u64,
    pub name: String,
    pub attributes: QueueAttributes,
    pub create_time_ms: Millis,
    pub update_time_ms: Millis,
}

/// What recovery needs of a stored message: everything but its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub enqueue_ms: Millis,
    /// When a delayed or received message becomes visible.
    pub visible_at_ms: Millis,
    pub dequeue_count: u32,
    /// 0 when never received.
    pub first_dequeue_ms: Millis,
    /// Nonce of the newest receive, so receipt handles survive a restart; 0 when never received.
    /// For a deleted message, the nonce of the receive whose handle deleted it.
    pub receipt_nonce: u64,
    pub state: StoredState,
    /// Bytes of its body and attributes as stored (what counts toward `max_bytes`).
    pub size: u32,
}

/// Where a stored message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Not deleted.
    Live,
    /// Deleted, but kept for rewind.
    Kept,
    /// Deleted without rewind after more than one receive: only its row's metadata is kept, until
    /// `visible_at_ms`, so that the handles of its older receives keep failing (see
    /// `queue::tombstones`).
    Tombstone,
}

impl StoredState {
    /// The value of the `deleted` column.
    pub fn code(self) -> i64 {
        match self {
            Self::Live => 0,
            Self::Kept => 1,
            Self::Tombstone => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Live),
            1 => Some(Self::Kept),
            2 => Some(Self::Tombstone),
            _ => None,
        }
    }
}

/// A message to insert.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: u64,
    pub payload: Payload,
    pub enqueue_ms: Millis,
    pub visible_at_ms: Millis,
    /// The send's deduplication id, remembered (with `enqueue_ms` as the time it was accepted)
    /// in the same transaction as the message, so that an acknowledged id survives a crash.
    pub deduplication_id: Option<String>,
}

/// The receive bookkeeping of one message.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveRecord {
    pub id: u64,
    pub visible_at_ms: Millis,
    pub dequeue_count: u32,
    pub first_dequeue_ms: Millis,
    pub receipt_nonce: u64,
}

/// A deleted message kept (for rewind, or as a tombstone), and what it keeps of its receives.
#[derive(Debug, Clone, Copy)]
pub struct KeptRecord {
    pub id: u64,
    pub dequeue_count: u32,
    pub first_dequeue_ms: Millis,
    /// The nonce of the receive whose handle deleted it.
    pub receipt_nonce: u64,
}

/// The deletes of one request, by what each message leaves behind.
#[derive(Debug, Clone, Default)]
pub struct DeletedMessages {
    /// The queue of every message here (what cluster mode fences the write by).
    pub queue_id: u64,
    /// Rows removed.
    pub removed: Vec<u64>,
    /// Rows marked deleted but kept for rewind, with their receive counts (which may not have
    /// been recorded yet: receive bookkeeping is written lazily).
    pub kept: Vec<KeptRecord>,
    /// Rows kept as tombstones until `tombstone_until_ms`, their bodies dropped; removed with
    /// `RemoveMessages` after that.
    pub tombstones: Vec<KeptRecord>,
    pub tombstone_until_ms: Millis,
}

impl DeletedMessages {
    pub fn len(&self) -> usize {
        self.removed.len() + self.kept.len() + self.tombstones.len()
    }
}

/// A live message moved to another queue (see [`WriteOp::MoveMessages`]).
#[derive(Debug, Clone)]
pub struct MovedMessage {
    pub id: u64,
    pub to_queue_id: u64,
    /// When it becomes visible in its new queue (now: a moved message is visible at once).
    pub visible_at_ms: Millis,
    /// Where it was dead-lettered from (a dead-letter move); None clears it (a redrive).
    pub dead_letter: Option<DeadLetterOrigin>,
}

/// A send's deduplication id as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeduplicationRecord {
    pub queue_id: u64,
    pub deduplication_id: String,
    /// The message the first send with this id enqueued.
    pub message_id: u64,
    pub accepted_ms: Millis,
}

/// How a topic chooses the subscriptions a message goes to (CMQ's filterType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterType {
    /// A message's tags against each subscription's filter tags.
    Tags,
    /// A message's routing key against each subscription's binding keys.
    RoutingKeys,
}

impl FilterType {
    /// The value of the `filter_type` column.
    pub fn code(self) -> i64 {
        match self {
            Self::Tags => 1,
            Self::RoutingKeys => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Tags),
            2 => Some(Self::RoutingKeys),
            _ => None,
        }
    }
}

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// Its subscriptions' rows name it by this id; a topic created again under an old name
    /// starts without subscriptions.
    pub id: u64,
    pub name: String,
    /// Largest body (with its attributes) a publish may carry.
    pub max_message_size: u32,
    pub filter_type: FilterType,
    pub create_time_ms: Millis,
    pub update_time_ms: Millis,
}

/// A subscription as stored: a topic delivering into a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub topic_id: u64,
    /// Unique within its topic.
    pub name: String,
    /// The queue incarnation it delivers into: deleting the queue deletes its subscriptions in
    /// the same transaction (see [`WriteOp::DeleteQueue`]).
    pub queue_id: u64,
    pub queue_name: String,
    /// Filter tags or binding keys, by the topic's filter type; empty: every message.
    pub filter: Vec<String>,
    pub create_time_ms: Millis,
}

/// What happened on a topic: kept across restarts, raised in the transaction of each publish
/// (see [`PublishCounts`]), so they count what is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicTotals {
    /// Publishes acknowledged.
    pub published: u64,
    /// Acknowledged publishes that no subscription's filter let through (no copy made).
    pub unrouted: u64,
}

/// What happened on a subscription, kept as [`TopicTotals`] are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionTotals {
    /// Copies put in its queue by acknowledged publishes (a copy its queue deduplicated is not
    /// counted again).
    pub delivered: u64,
    /// Acknowledged publishes its filter kept out.
    pub filtered_out: u64,
}

/// What one publish adds to its topic's and subscriptions' totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishCounts {
    pub topic_id: u64,
    pub topic: TopicTotals,
    /// By subscription name: every subscription of the topic when the publish was routed.
    pub subscriptions: Vec<(String, SubscriptionTotals)>,
}

/// A subscription's filter as its column holds it: a JSON array of strings.
pub fn encode_filter(filter: &[String]) -> String {
    serde_json::to_string(filter).unwrap_or_else(|_| "[]".into())
}

/// The filter column's value back; `None` when it is not a JSON array of strings.
pub fn decode_filter(column: &str) -> Option<Vec<String>> {
    serde_json::from_str(column).ok()
}

/// One change to storage. A commit applies a group of them in one transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    CreateQueue(QueueRecord),
    /// Writes the attributes and update time of the queue with this id.
    UpdateQueue(QueueRecord),
    /// Removes the queue and messages of it: messages are found by id (the queue's actor knows
    /// them all), since finding them by queue would scan every queue's messages. A large queue
    /// passes its first slice here and removes the rest with `RemoveMessages` afterwards;
    /// recovery removes any row left of a queue that no longer exists.
    DeleteQueue {
        queue_id: u64,
        message_ids: Vec<u64>,
    },
    InsertMessages {
        queue_id: u64,
        messages: Vec<NewMessage>,
    },
    /// Removes messages for good (deleted without rewind, expired, or no longer rewindable).
    RemoveMessages {
        queue_id: u64,
        ids: Vec<u64>,
    },
    /// Applies the deletes of one request (by receipt handles): some rows go, some stay as
    /// rewindable, some as tombstones. One operation, so a batch is all or nothing.
    DeleteMessages(DeletedMessages),
    /// Makes rewound messages visible again.
    Restore {
        queue_id: u64,
        ids: Vec<u64>,
        visible_at_ms: Millis,
    },
    RecordReceives {
        queue_id: u64,
        receives: Vec<ReceiveRecord>,
    },
    /// Moves live messages of `from_queue_id` to other queues (each `to_queue_id`), as new
    /// messages there: received never, visible at `visible_at_ms`, the dead-letter origin set
    /// or cleared. One row update per message, so each is in exactly one queue whatever
    /// happens; the writer applies it in one transaction with the rest of its group. Writes to
    /// `from_queue_id` and to every `to_queue_id`.
    MoveMessages {
        from_queue_id: u64,
        moves: Vec<MovedMessage>,
    },
    CreateTopic(TopicRecord),
    /// Writes the attributes and update time of the topic with this id.
    UpdateTopic(TopicRecord),
    /// Removes the topic and every subscription of it.
    DeleteTopic {
        topic_id: u64,
    },
    Subscribe(SubscriptionRecord),
    Unsubscribe {
        topic_id: u64,
        name: String,
    },
    /// The copies of a publish (or of a batch of publishes): each queue's messages inserted as
    /// `InsertMessages` inserts them, all in one transaction with the rest of the group, so
    /// every copy is stored or none is, across any crash. One operation, so that the writer's
    /// one-by-one retry of a failed group never splits it. Writes to every queue in `copies`.
    Publish {
        copies: Vec<(u64, Vec<NewMessage>)>,
        /// Cluster mode: the queues among `copies` that other replicas own. Their owners learn
        /// of the rows from `pending_adoptions` entries written in the same transaction (see
        /// `cluster::adoption`); the commit is refused if one of them no longer exists.
        remote_queue_ids: Vec<u64>,
        /// The highest id the publish answered with (its own, not a copy's): message ids are
        /// raised past it, so that no id is handed out twice across a restart.
        last_publish_id: u64,
        /// Added to the topic's and its subscriptions' totals in the same transaction.
        counts: PublishCounts,
    },
    /// Forgets deduplication ids of `queue_id` whose window has passed (written lazily: an id
    /// kept longer is ignored by the queue, which checks the window itself). `ids`: the ids no
    /// longer accepted, for a store keyed by id (PostgreSQL, where an id accepted again
    /// replaced its row); `message_ids`: the message ids of every acceptance past the window,
    /// for a store keyed in arrival order (SQLite, a row per acceptance).
    ForgetDeduplicationIds {
        queue_id: u64,
        ids: Vec<String>,
        message_ids: Vec<u64>,
    },
}

impl WriteOp {
    /// How many messages this writes (for the messages-per-commit metric).
    pub fn message_count(&self) -> usize {
        match self {
            Self::CreateQueue(_) | Self::UpdateQueue(_) => 0,
            Self::InsertMessages { messages, .. } => messages.len(),
            Self::DeleteQueue {
                message_ids: ids, ..
            }
            | Self::RemoveMessages { ids, .. }
            | Self::Restore { ids, .. } => ids.len(),
            Self::DeleteMessages(deleted) => deleted.len(),
            Self::RecordReceives { receives, .. } => receives.len(),
            Self::MoveMessages { moves, .. } => moves.len(),
            Self::ForgetDeduplicationIds { .. } => 0,
            Self::CreateTopic(_)
            | Self::UpdateTopic(_)
            | Self::DeleteTopic { .. }
            | Self::Subscribe(_)
            | Self::Unsubscribe { .. } => 0,
            Self::Publish { copies, .. } => copies.iter().map(|(_, messages)| messages.len()).sum(),
        }
    }

    /// The messages this inserts, with their queue ids (sends and publishes), so that a
    /// backend writes both with one statement.
    pub fn inserted_messages(&self) -> Option<Vec<(u64, &NewMessage)>> {
        match self {
            Self::InsertMessages { queue_id, messages } => Some(
                messages
                    .iter()
                    .map(|message| (*queue_id, message))
                    .collect(),
            ),
            Self::Publish { copies, .. } => Some(
                copies
                    .iter()
                    .flat_map(|(queue_id, messages)| messages.iter().map(|m| (*queue_id, m)))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// What a publish adds to its topic's totals, if this is one.
    pub fn publish_counts(&self) -> Option<&PublishCounts> {
        match self {
            Self::Publish { counts, .. } => Some(counts),
            _ => None,
        }
    }

    /// The queues whose epochs a cluster transaction reads for this (see
    /// `storage::postgres::fence`): a publish's copies' queues, else [`Self::queue_id`].
    pub fn fenced_queue_ids(&self) -> Vec<u64> {
        match self {
            Self::Publish { copies, .. } => copies.iter().map(|(queue_id, _)| *queue_id).collect(),
            _ => vec![self.queue_id()],
        }
    }

    /// The message id a publish answered with beyond its copies', if this is one.
    pub fn last_publish_id(&self) -> Option<u64> {
        match self {
            Self::Publish {
                last_publish_id, ..
            } => Some(*last_publish_id),
            _ => None,
        }
    }

    /// The queue this writes to, or for a move the queue it moves messages out of. Every
    /// operation names its queue, so that in cluster mode the writer can check, in the
    /// operation's own transaction, that this replica still owns it (see
    /// `storage::postgres::fence`). A move is fenced by its source alone: the source's owner
    /// decides what leaves its queue, and the rows it moves in are new to their target.
    ///
    /// Topic operations and publishes answer [`NO_QUEUE`]: topic operations write no queue,
    /// and a publish, which writes several, is fenced by each of them (see
    /// [`Self::fenced_queue_ids`]).
    pub fn queue_id(&self) -> u64 {
        match self {
            Self::CreateQueue(queue) | Self::UpdateQueue(queue) => queue.id,
            Self::DeleteQueue { queue_id, .. }
            | Self::InsertMessages { queue_id, .. }
            | Self::RemoveMessages { queue_id, .. }
            | Self::Restore { queue_id, .. }
            | Self::RecordReceives { queue_id, .. }
            | Self::ForgetDeduplicationIds { queue_id, .. } => *queue_id,
            Self::MoveMessages { from_queue_id, .. } => *from_queue_id,
            Self::DeleteMessages(deleted) => deleted.queue_id,
            Self::CreateTopic(_)
            | Self::UpdateTopic(_)
            | Self::DeleteTopic { .. }
            | Self::Subscribe(_)
            | Self::Unsubscribe { .. }
            | Self::Publish { .. } => NO_QUEUE,
        }
    }
}

/// What [`WriteOp::queue_id`] answers for an operation that is not fenced by one queue: queue
/// ids start at 1, so no queue has it.
pub const NO_QUEUE: u64 = 0;

/// How many live messages a queue has stored (see [`Storage::count_live`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTotals {
    pub count: u64,
    pub bytes: u64,
}

/// The queues storage held at startup (each queue's window of messages is read afterwards, see
/// `queue::window::recover`).
#[derive(Debug)]
pub struct Recovered {
    pub queues: Vec<QueueRecord>,
    /// The secret that signs receipt handles; made once with the database, so handles survive
    /// restarts (and, with shared storage, hold on every replica).
    pub receipt_secret: [u8; crate::receipt::KEY_LEN],
    /// The deduplication ids stored, of every queue (those past their window too: the queue
    /// drops them).
    pub deduplication_ids: Vec<DeduplicationRecord>,
    /// Every topic, and every subscription (those of a queue that no longer exists too: the
    /// topics drop them).
    pub topics: Vec<TopicRecord>,
    pub subscriptions: Vec<SubscriptionRecord>,
    /// The topics' totals, by topic id (absent: none yet).
    pub topic_totals: std::collections::HashMap<u64, TopicTotals>,
    /// The subscriptions' totals, by topic id and name.
    pub subscription_totals: std::collections::HashMap<(u64, String), SubscriptionTotals>,
    /// Ids at or above these were never handed out.
    pub next_queue_id: u64,
    pub next_message_id: u64,
}

/// What a message's row holds besides its metadata, as stored, for `spool migrate` (see
/// `payload` for what the columns mean).
#[derive(Debug, Clone, Default)]
pub struct ExportedPayload {
    pub body: Vec<u8>,
    /// The encoded attributes (`meta` column); None for none.
    pub meta: Option<Vec<u8>>,
    /// Where a dead-lettered message came from, and its receives there.
    pub dead_letter_source: Option<String>,
    pub dead_letter_receive_count: u32,
}

/// What a backend reports of each group commit (the server's metrics implement it). A narrow
/// trait, so storage does not depend on the metrics module (which reads the queues).
pub trait CommitObserver: Send + Sync + 'static {
    /// One transaction: how long it took, how many messages it wrote, whether it committed.
    fn observe_commit(&self, elapsed: std::time::Duration, messages: usize, succeeded: bool);
}

impl From<StorageError> for crate::error::QueueError {
    fn from(error: StorageError) -> Self {
        Self::Storage(error.to_string())
    }
}

pub type CommitReply = oneshot::Sender<Result<(), StorageError>>;

/// What a backend's one writer (SQLite's thread, PostgreSQL's task) is asked to do.
pub enum WriterRequest {
    /// `done` is None for lazy writes nobody waits for.
    Write {
        op: WriteOp,
        done: Option<CommitReply>,
    },
    /// Commit everything before this request, answer, and stop.
    Close(oneshot::Sender<()>),
}

impl WriterRequest {
    pub fn fail(self, error: StorageError) {
        match self {
            Self::Write {
                done: Some(done), ..
            } => {
                let _ = done.send(Err(error));
            }
            Self::Write { done: None, .. } => {}
            Self::Close(done) => {
                let _ = done.send(());
            }
        }
    }
}

pub type BodiesReply = oneshot::Sender<Result<Vec<(u64, Payload)>, StorageError>>;

/// Rows removed per commit when many go at once (a deleted queue's): a few milliseconds of the
/// writer, so that no one commit holds every other queue's writes for long.
pub const REMOVE_SLICE: usize = 4_096;

/// Removes these messages' rows (of the queue `queue_id`) lazily, in commits of at most
/// [`REMOVE_SLICE`].
pub fn remove_in_slices(storage: &dyn Storage, queue_id: u64, ids: &[u64]) {
    for slice in ids.chunks(REMOVE_SLICE) {
        storage.record(WriteOp::RemoveMessages {
            queue_id,
            ids: slice.to_vec(),
        });
    }
}

/// Removes every row of `queue_id` (a queue deleted), in commits of at most [`REMOVE_SLICE`],
/// each waited for before the next slice is read. Blocking: run it on its own thread. Stops
/// at the first failure (recovery finds the rest later: the queue no longer exists).
pub fn remove_queue_rows(storage: &dyn Storage, queue_id: u64) {
    loop {
        let ids = match storage.message_ids(queue_id, REMOVE_SLICE) {
            Ok(ids) if ids.is_empty() => return,
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(queue_id, %error, "cannot read the rows of a deleted queue; they are removed at the next start");
                return;
            }
        };
        let (done, committed) = oneshot::channel();
        storage.commit(WriteOp::RemoveMessages { queue_id, ids }, done);
        match committed.blocking_recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(queue_id, %error, "cannot remove the rows of a deleted queue; they are removed at the next start");
                return;
            }
            Err(_) => return,
        }
    }
}

pub trait Storage: Send + Sync + 'static {
    /// Reads every queue and the id counters. Blocking: call it off the async workers.
    fn recover(&self) -> Result<Recovered, StorageError>;

    /// The live (undeleted) messages of `queue_id` with ids above `after_id`, in id order (the
    /// order of delivery), at most `limit`: a slice of a backlog larger than the queue's window
    /// (see `queue::window`). Their metadata, not their bodies, through the index by queue, so
    /// the time it takes does not grow with the backlog. Blocking: call it off the async
    /// workers.
    fn read_messages(
        &self,
        queue_id: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError>;

    /// The stored messages of `queue_id` that are not live and visible at `now`: in flight,
    /// delayed (live, `visible_at_ms` past `now`), kept for rewind and tombstones. What the
    /// queue's actor holds in memory whatever the size of the backlog. Blocking.
    fn read_held(&self, queue_id: u64, now: Millis) -> Result<Vec<StoredMessage>, StorageError>;

    /// How many live messages `queue_id` has stored, and their bytes (body and attributes),
    /// counted from the index by queue without reading the rows. Blocking.
    fn count_live(&self, queue_id: u64) -> Result<LiveTotals, StorageError>;

    /// The ids of the queues that have stored messages (of any state), from the index by queue.
    /// Blocking.
    fn queues_with_messages(&self) -> Result<Vec<u64>, StorageError>;

    /// Up to `limit` ids of stored messages of `queue_id`, of any state (what removing the rows
    /// of a deleted queue reads). Blocking.
    fn message_ids(&self, queue_id: u64, limit: usize) -> Result<Vec<u64>, StorageError>;

    /// Applies `op` durably; `done` hears once it is committed and synced to disk.
    fn commit(&self, op: WriteOp, done: CommitReply);

    /// Applies `op` with a later commit, without anyone waiting for it. For bookkeeping whose
    /// loss in a crash is harmless (receive counts, sweeping expired rows).
    fn record(&self, op: WriteOp);

    /// The bodies and attributes of the messages in `ids` that still exist, in the order of
    /// `ids`.
    fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply);

    /// Commits everything submitted so far, then refuses further writes.
    fn close(&self, done: oneshot::Sender<()>);
}
