//! Where queues and messages live. The queue actors own scheduling; storage owns bytes on disk.
//!
//! The [`Storage`] trait is what an actor needs from a backend: durable commits it can wait for,
//! lazy writes it does not wait for, body reads, and recovery at startup. Replies travel through
//! oneshot channels so the trait stays object-safe and no backend call blocks an async task.

#[cfg(test)]
pub(crate) mod memory;
pub mod postgres;
pub mod sqlite;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::attributes::QueueAttributes;
use crate::clock::Millis;

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
    pub body: Bytes,
    pub enqueue_ms: Millis,
    pub visible_at_ms: Millis,
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
        }
    }

    /// The queue this writes to. Every operation names its queue, so that in cluster mode the
    /// writer can check, in the operation's own transaction, that this replica still owns it
    /// (see `storage::postgres::fence`).
    pub fn queue_id(&self) -> u64 {
        match self {
            Self::CreateQueue(queue) | Self::UpdateQueue(queue) => queue.id,
            Self::DeleteQueue { queue_id, .. }
            | Self::InsertMessages { queue_id, .. }
            | Self::RemoveMessages { queue_id, .. }
            | Self::Restore { queue_id, .. }
            | Self::RecordReceives { queue_id, .. } => *queue_id,
            Self::DeleteMessages(deleted) => deleted.queue_id,
        }
    }
}

/// The queues storage held at startup (their messages are read afterwards, by
/// [`Storage::recover_messages`]).
#[derive(Debug)]
pub struct Recovered {
    pub queues: Vec<QueueRecord>,
    /// The secret that signs receipt handles; made once with the database, so handles survive
    /// restarts (and, with shared storage, hold on every replica).
    pub receipt_secret: [u8; crate::receipt::KEY_LEN],
    /// Ids at or above these were never handed out.
    pub next_queue_id: u64,
    pub next_message_id: u64,
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

pub type BodiesReply = oneshot::Sender<Result<Vec<(u64, Bytes)>, StorageError>>;

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

pub trait Storage: Send + Sync + 'static {
    /// Reads every queue and the id counters. Blocking: call it off the async workers.
    fn recover(&self) -> Result<Recovered, StorageError>;

    /// Hands every stored message to `visit` with the id of its queue: its metadata, not its
    /// body, oldest (lowest id) first, so each queue's messages also come oldest first. One pass
    /// over all queues' messages, without collecting them: recovering a large backlog holds one
    /// copy, the actors'. Blocking, like `recover`.
    fn recover_messages(
        &self,
        visit: &mut dyn FnMut(u64, StoredMessage),
    ) -> Result<(), StorageError>;

    /// Applies `op` durably; `done` hears once it is committed and synced to disk.
    fn commit(&self, op: WriteOp, done: CommitReply);

    /// Applies `op` with a later commit, without anyone waiting for it. For bookkeeping whose
    /// loss in a crash is harmless (receive counts, sweeping expired rows).
    fn record(&self, op: WriteOp);

    /// The bodies of the messages in `ids` that still exist, in the order of `ids`.
    fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply);

    /// Commits everything submitted so far, then refuses further writes.
    fn close(&self, done: oneshot::Sender<()>);
}
