//! One queue: an actor task that owns its state, and the cheap handle that talks to it.
//!
//! Handlers never touch a queue's state; they send a command through the handle's bounded
//! mailbox and await the reply on a oneshot. The actor is the only owner, so there are no locks
//! on the hot path and a busy queue pushes back on its callers.

mod actor;
pub mod body_cache;
mod consuming;
mod deduplication;
pub mod messages;
pub mod quota;
mod receive_log;
pub mod receiving;
#[cfg(test)]
mod tests;
mod tombstones;
mod waiters;
pub mod window;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::attributes::{AttributesPatch, QueueAttributes};
use crate::clock::{Clock, Millis};
use crate::error::QueueError;
use crate::payload::Payload;
use crate::receipt::ReceiptHandle;
use crate::storage::{NewMessage, QueueRecord, Storage, StorageError};
pub use consuming::{ConsumeSettings, Consuming, Event, Settlement};
pub use messages::{Claimed, Counts, Peeked};
pub use receiving::Receiving;

/// Commands waiting for a queue's actor; beyond this, callers wait (back-pressure).
const MAILBOX_CAPACITY: usize = 1_024;

/// A queue's attributes and counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub attributes: QueueAttributes,
    pub counts: Counts,
    pub oldest_message_ms: Option<Millis>,
    pub create_time_ms: Millis,
    pub update_time_ms: Millis,
    /// Since the server started.
    pub totals: QueueTotals,
    /// Long polls waiting now, their clients still connected.
    pub waiting_polls: usize,
}

/// What happened to a queue's messages since the server started (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Messages whose send was acknowledged.
    pub sent: u64,
    /// Deliveries to receivers.
    pub received: u64,
    /// Messages whose delete was acknowledged.
    pub deleted: u64,
    /// Undeleted messages whose retention ended.
    pub expired: u64,
    /// Receives answered with no message.
    pub empty_receives: u64,
    /// Messages removed by acknowledged purges.
    pub purged: u64,
    /// Messages moved to the dead-letter queue by the queue's policy.
    pub dead_lettered: u64,
    /// Messages moved out by RedriveMessages.
    pub redriven: u64,
    /// Sends (entries) that enqueued nothing: their deduplication id was accepted before.
    pub deduplicated: u64,
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub payload: Payload,
    pub delay_seconds: u32,
    /// Checked already (`limits::check_deduplication_id`); None: no deduplication.
    pub deduplication_id: Option<String>,
}

/// One queue's copies of a publish, checked and reserved by the queue but not written: the
/// publisher writes every queue's `rows` in one transaction, then sends each queue the outcome
/// on `commit` (dropping it counts as a failure), and reads the copies' ids from `answer`.
pub struct Staged {
    pub queue_id: u64,
    /// The rows to insert; empty when every copy duplicates an earlier send.
    pub rows: Vec<NewMessage>,
    pub commit: oneshot::Sender<Result<(), StorageError>>,
    /// The copies' message ids (a duplicate's is the earlier one's), once durable.
    pub answer: oneshot::Receiver<Result<Vec<u64>, QueueError>>,
}

/// What a receive asks for.
#[derive(Clone, Copy, Debug)]
pub struct ReceiveRequest {
    /// 1..=16.
    pub max_messages: usize,
    /// None: the queue's polling wait.
    pub wait_seconds: Option<u32>,
    /// None: the queue's visibility timeout.
    pub visibility_timeout_seconds: Option<u32>,
}

/// What a consumer stream asks for on each turn.
#[derive(Clone, Copy, Debug)]
pub struct StreamClaim {
    /// 1..=16: the stream's free slots, at most a batch.
    pub max_messages: usize,
    /// None: the queue's visibility timeout.
    pub visibility_timeout_seconds: Option<u32>,
}

/// The result of deleting one receipt handle of a batch.
pub type DeleteResult = Result<(), QueueError>;

/// One receipt handle to delete by, with its place in the caller's request (for error
/// messages: `receipt_handles[2]`; `None` for DeleteMessage's single `receipt_handle`).
#[derive(Clone, Copy, Debug)]
pub struct DeleteTarget {
    pub handle: ReceiptHandle,
    pub index: Option<usize>,
}

/// One receipt handle whose message's visibility is to change, with its place in the caller's
/// request.
#[derive(Clone, Copy, Debug)]
pub struct VisibilityTarget {
    pub handle: ReceiptHandle,
    /// From now until the message is visible again: 0 makes it visible at once.
    pub visibility_timeout_seconds: u32,
    pub place: HandlePlace,
}

/// Where a receipt handle sits in the caller's request, to name it in an error message.
#[derive(Clone, Copy, Debug)]
pub enum HandlePlace {
    /// ChangeMessageVisibility's `receipt_handle`.
    Single,
    /// BatchChangeMessageVisibility's `entries[i].receipt_handle`.
    Entry(usize),
    /// A consumer stream's nack or extension: `receipt_handles[i]`.
    Listed(usize),
}

impl std::fmt::Display for HandlePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single => f.write_str("receipt_handle"),
            Self::Entry(index) => write!(f, "entries[{index}].receipt_handle"),
            Self::Listed(index) => write!(f, "receipt_handles[{index}]"),
        }
    }
}

/// The result of one visibility change of a batch: the message's new `next_visible_time`.
pub type VisibilityResult = Result<Millis, QueueError>;

/// A message moved into a queue from another (a dead-letter move, a redrive), after the move
/// committed.
#[derive(Clone, Debug)]
pub struct Adopted {
    pub id: u64,
    pub enqueue_ms: Millis,
    /// Its body and attributes, when the queue it came from had them in memory.
    pub payload: Option<Payload>,
    /// Bytes of its body and attributes, reserved in this queue's quota by the mover.
    pub size: u32,
}

/// What RedriveMessages did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    pub moved: u64,
    /// Visible messages left because they have no source queue that exists.
    pub skipped: u64,
}

/// Every queue's handle by name: the registry's map, shared with the queues so that one can
/// hand messages to another (dead-letter moves, redrives).
pub type Directory = Arc<RwLock<BTreeMap<String, QueueHandle>>>;

/// A visible message as PeekMessages returns it.
#[derive(Clone, Debug)]
pub struct PeekedMessage {
    pub message: Peeked,
    pub payload: Payload,
}

pub(crate) enum Command {
    Info {
        respond_to: oneshot::Sender<QueueInfo>,
    },
    Update {
        patch: AttributesPatch,
        respond_to: oneshot::Sender<Result<QueueInfo, QueueError>>,
    },
    /// Deletes the queue and its messages, then the actor ends.
    Drop {
        respond_to: oneshot::Sender<Result<(), QueueError>>,
    },
    Send {
        messages: Vec<Outgoing>,
        respond_to: oneshot::Sender<Result<Vec<u64>, QueueError>>,
    },
    /// A send whose commit someone else makes (a topic's publish; see [`Staged`]).
    Stage {
        messages: Vec<Outgoing>,
        respond_to: oneshot::Sender<Result<Staged, QueueError>>,
    },
    Receive {
        request: ReceiveRequest,
        respond_to: waiters::ReceiveReply,
    },
    /// A consumer stream's next turn (see `consuming`).
    StreamClaim {
        claim: StreamClaim,
        respond_to: waiters::ReceiveReply,
    },
    /// Gives back messages claimed for a receiver that has gone.
    Release { handles: Vec<ReceiptHandle> },
    DeleteMessages {
        targets: Vec<DeleteTarget>,
        respond_to: oneshot::Sender<Result<Vec<DeleteResult>, QueueError>>,
    },
    ChangeVisibility {
        targets: Vec<VisibilityTarget>,
        respond_to: oneshot::Sender<Result<Vec<VisibilityResult>, QueueError>>,
    },
    /// Deletes every live message; answers how many.
    Purge {
        respond_to: oneshot::Sender<Result<u64, QueueError>>,
    },
    /// The first visible messages, with the bodies the queue has in memory.
    Peek {
        max_messages: usize,
        respond_to: oneshot::Sender<Vec<(Peeked, Option<Payload>)>>,
    },
    Rewind {
        start_ms: Millis,
        respond_to: oneshot::Sender<Result<u64, QueueError>>,
    },
    /// Hands everything the actor holds back for storage (receive bookkeeping) to it now.
    Flush { respond_to: oneshot::Sender<()> },
    /// Messages another queue moved here; their move is committed.
    Adopt { messages: Vec<Adopted> },
    /// Moves visible messages to their source queues or to `destination`.
    Redrive {
        destination: Option<String>,
        max_messages: usize,
        respond_to: oneshot::Sender<Result<Redriven, QueueError>>,
    },
    /// Cluster mode: the queue moves to another replica. The actor answers its commits in
    /// flight, commits its receive bookkeeping, ends parked receives empty, and stops.
    HandOff { respond_to: oneshot::Sender<()> },
}

/// The shared things every queue actor needs.
#[derive(Clone)]
pub struct QueueContext {
    pub storage: Arc<dyn Storage>,
    pub clock: Clock,
    /// Message ids are unique across the server: one counter for all queues.
    pub message_ids: Arc<AtomicU64>,
    /// The memory all queues may use for bodies not yet received (see `body_cache`).
    pub body_budget: Arc<body_cache::BodyBudget>,
    /// How many visible messages each queue, and all together, keep in memory (see `window`).
    pub window: window::WindowLimits,
    /// The other queues, for dead-letter moves and redrives.
    pub directory: Directory,
}

/// Deduplication ids recovered from storage for one queue: (id, message id, accepted at).
pub type RecoveredIds = Vec<(String, u64, Millis)>;

/// A cheap, cloneable way to talk to one queue's actor.
#[derive(Clone)]
pub struct QueueHandle {
    name: Arc<str>,
    /// The queue incarnation's id (storage's), which moves into it name.
    id: u64,
    mailbox: mpsc::Sender<Command>,
    /// For the bodies a receive reads itself (see `receiving`).
    storage: Arc<dyn Storage>,
    /// The queue's clock: a consumer stream frees the slot of a message when it is visible again.
    clock: Clock,
    /// Set when the queue leaves this replica (cluster mode), so that calls finding its actor
    /// gone hear a retryable UNAVAILABLE rather than NOT_FOUND.
    moved: Arc<AtomicBool>,
    /// The queue's byte quota, where other queues' actors reserve room for what they move in.
    quota: Arc<quota::ByteQuota>,
}

impl QueueHandle {
    /// Starts the actor of a queue, with its messages' state (recovered from storage, or empty
    /// for a new queue).
    pub fn spawn(
        record: QueueRecord,
        table: messages::MessageTable,
        context: QueueContext,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        Self::spawn_recovered(record, table, Vec::new(), context, tracker)
    }

    /// [`Self::spawn`] with the deduplication ids storage held for the queue.
    pub fn spawn_recovered(
        record: QueueRecord,
        table: messages::MessageTable,
        deduplication_ids: RecoveredIds,
        context: QueueContext,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (mailbox, inbox) = mpsc::channel(MAILBOX_CAPACITY);
        let name: Arc<str> = record.name.as_str().into();
        let id = record.id;
        let storage = context.storage.clone();
        let clock = context.clock.clone();
        let quota = Arc::new(quota::ByteQuota::new(
            table.counts().bytes,
            record.attributes.max_bytes,
        ));
        let actor = actor::QueueActor::new(
            record,
            table,
            deduplication_ids,
            context,
            inbox,
            quota.clone(),
        );
        tracker.spawn(actor.run());
        Self {
            name,
            id,
            mailbox,
            storage,
            clock,
            moved: Arc::default(),
            quota,
        }
    }

    /// Cluster mode: a stand-in for the queue `name` (id `id`) that another queue's actor moves
    /// messages into (dead-letter moves, redrives), wherever the queue's actor is. The moves
    /// themselves commit with an entry of `pending_adoptions` for the target's owner; handing
    /// the moved messages to the stand-in (`adopt`) only tells `moved_into` the queue's name,
    /// so that its owner takes them in now rather than at its next round. Any other command is
    /// answered as by a queue that is gone.
    pub fn relay(
        name: &str,
        id: u64,
        storage: Arc<dyn Storage>,
        clock: Clock,
        moved_into: mpsc::UnboundedSender<String>,
    ) -> Self {
        let (mailbox, mut inbox) = mpsc::channel(MAILBOX_CAPACITY);
        let name: Arc<str> = name.into();
        let told = name.to_string();
        tokio::spawn(async move {
            while let Some(command) = inbox.recv().await {
                if let Command::Adopt { .. } = command {
                    let _ = moved_into.send(told.clone());
                }
            }
        });
        Self {
            name,
            id,
            mailbox,
            storage,
            clock,
            moved: Arc::default(),
            // The target's quota is its owner's: a move into a queue another replica owns is
            // not held to it here (docs/deploy.md says so); 0 is "no quota".
            quota: Arc::new(quota::ByteQuota::new(0, 0)),
        }
    }

    /// The queue's byte quota (see `quota`).
    pub(crate) fn quota(&self) -> &quota::ByteQuota {
        &self.quota
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands messages moved here (committed) to the actor, without waiting: the caller is
    /// another queue's actor, which must not block on this one's mailbox (two queues may be
    /// each other's dead-letter queues). With the mailbox full, a task delivers them. Should
    /// the actor be gone (its queue deleted), the rows went with the queue.
    pub(crate) fn adopt(&self, messages: Vec<Adopted>) {
        if messages.is_empty() {
            return;
        }
        match self.mailbox.try_send(Command::Adopt { messages }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let mailbox = self.mailbox.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = mailbox.send(command).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Moves up to `max_messages` visible messages, oldest first, to their source queues
    /// (`destination` None) or to `destination`, durably.
    pub async fn redrive(
        &self,
        destination: Option<String>,
        max_messages: usize,
    ) -> Result<Redriven, QueueError> {
        self.ask(|respond_to| Command::Redrive {
            destination,
            max_messages,
            respond_to,
        })
        .await?
    }

    /// Sends a command and waits for its reply. A closed mailbox or a dropped reply means the
    /// actor has ended, which it does only when its queue is deleted.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, QueueError> {
        let (respond_to, reply) = oneshot::channel();
        self.mailbox
            .send(command(respond_to))
            .await
            .map_err(|_| self.gone())?;
        reply.await.map_err(|_| self.gone())
    }

    /// Why the actor is not there: the queue was deleted, or it moved to another replica.
    pub(crate) fn gone(&self) -> QueueError {
        if self.moved.load(Ordering::Relaxed) {
            QueueError::Storage(format!(
                "queue {:?} moved to another replica; retry the call",
                &*self.name
            ))
        } else {
            QueueError::QueueNotFound(self.name.to_string())
        }
    }

    /// Cluster mode: hands the queue off (see [`Command::HandOff`]); returns once the actor has
    /// stopped, everything it acknowledged committed.
    pub async fn hand_off(&self) {
        self.moved.store(true, Ordering::Relaxed);
        let _ = self.ask(|respond_to| Command::HandOff { respond_to }).await;
        // The actor is gone once its mailbox is closed, whatever answered first.
        self.mailbox.closed().await;
    }

    pub async fn info(&self) -> Result<QueueInfo, QueueError> {
        self.ask(|respond_to| Command::Info { respond_to }).await
    }

    pub async fn update(&self, patch: AttributesPatch) -> Result<QueueInfo, QueueError> {
        self.ask(|respond_to| Command::Update { patch, respond_to })
            .await?
    }

    pub async fn drop_queue(&self) -> Result<(), QueueError> {
        self.ask(|respond_to| Command::Drop { respond_to }).await?
    }

    /// Sends messages, all or nothing; returns their ids once they are durable.
    pub async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<u64>, QueueError> {
        self.ask(|respond_to| Command::Send {
            messages,
            respond_to,
        })
        .await?
    }

    /// Checks and reserves `messages` as a send would, without committing them: the caller
    /// commits the rows of [`Staged`] (with other queues' copies) and reports the outcome.
    pub async fn stage(&self, messages: Vec<Outgoing>) -> Result<Staged, QueueError> {
        self.ask(|respond_to| Command::Stage {
            messages,
            respond_to,
        })
        .await?
    }

    /// Asks for messages: they come as a stream (see [`Receiving`]), at once when messages are
    /// visible or the wait is 0, otherwise when one becomes visible or the wait ends. The stream
    /// also ends, empty, at `deadline` (the caller's own) or when `shutdown` is cancelled.
    /// Dropping it gives back at once whatever was claimed for it and not yet handed out.
    pub async fn receive(
        &self,
        request: ReceiveRequest,
        deadline: Option<tokio::time::Instant>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Receiving, QueueError> {
        let (respond_to, reply) = oneshot::channel();
        self.mailbox
            .send(Command::Receive {
                request,
                respond_to,
            })
            .await
            .map_err(|_| self.gone())?;
        Ok(Receiving::new(
            self.clone(),
            self.storage.clone(),
            reply,
            deadline,
            Some(shutdown),
        ))
    }

    /// Deletes by receipt handles; one result per handle, in order.
    pub async fn delete_messages(
        &self,
        targets: Vec<DeleteTarget>,
    ) -> Result<Vec<DeleteResult>, QueueError> {
        self.ask(|respond_to| Command::DeleteMessages {
            targets,
            respond_to,
        })
        .await?
    }

    /// Hands the queue's pending receive bookkeeping to storage (before a shutdown).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.ask(|respond_to| Command::Flush { respond_to }).await
    }

    pub async fn rewind(&self, start_ms: Millis) -> Result<u64, QueueError> {
        self.ask(|respond_to| Command::Rewind {
            start_ms,
            respond_to,
        })
        .await?
    }

    /// Changes when received messages become visible again; one result per target, in order,
    /// once the changes are durable.
    pub async fn change_visibility(
        &self,
        targets: Vec<VisibilityTarget>,
    ) -> Result<Vec<VisibilityResult>, QueueError> {
        self.ask(|respond_to| Command::ChangeVisibility {
            targets,
            respond_to,
        })
        .await?
    }

    /// Deletes every visible, delayed and in-flight message; returns how many, once durable.
    pub async fn purge(&self) -> Result<u64, QueueError> {
        self.ask(|respond_to| Command::Purge { respond_to }).await?
    }

    /// Up to `max_messages` visible messages, oldest first, without receiving them. Bodies the
    /// queue no longer holds in memory are read from storage here, not in the actor; a message
    /// deleted meanwhile (its body gone) is left out.
    pub async fn peek(&self, max_messages: usize) -> Result<Vec<PeekedMessage>, QueueError> {
        let peeked = self
            .ask(|respond_to| Command::Peek {
                max_messages,
                respond_to,
            })
            .await?;
        let missing: Vec<u64> = peeked
            .iter()
            .filter(|(_, body)| body.is_none())
            .map(|(message, _)| message.id)
            .collect();
        let mut read: std::collections::HashMap<u64, Payload> = if missing.is_empty() {
            Default::default()
        } else {
            let (reply, bodies) = oneshot::channel();
            self.storage.read_bodies(missing, reply);
            bodies
                .await
                .unwrap_or(Err(crate::storage::StorageError::Closed))?
                .into_iter()
                .collect()
        };
        Ok(peeked
            .into_iter()
            .filter_map(|(message, body)| {
                let payload = body.or_else(|| read.remove(&message.id))?;
                Some(PeekedMessage { message, payload })
            })
            .collect())
    }
}
