//! The task that owns one queue: its attributes, its messages' scheduling state, its parked long
//! polls and its one timer.
//!
//! Sends and message deletes wait for their storage commit without stalling the actor: the
//! commit's completion is a future the actor polls beside its mailbox, and the reply goes out
//! when it resolves; visibility changes do the same. Rare administrative commands (update,
//! rewind, purge, drop) await their commit in line, which keeps their ordering simple.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::collections::HashMap;

use futures_util::future::{BoxFuture, Shared};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::body_cache::BodyCache;
use super::deduplication::Deduplication;
use super::messages::{
    Claimed, DeadLetterRule, DeletePolicy, Deletion, LiveMessage, MessageTable, Remains,
    VisibilityChange,
};
use super::quota::ByteQuota;
use super::receive_log::ReceiveLog;
use super::tombstones::MIN_TOMBSTONE_MS;
use super::waiters::{ReceiveReply, Waiter, Waiters};
use super::window::SliceRequest;
use super::{
    Adopted, Command, DeleteResult, DeleteTarget, Outgoing, QueueContext, QueueHandle, QueueInfo,
    QueueTotals, ReceiveRequest, RecoveredIds, Redriven, Staged, StreamClaim, VisibilityResult,
    VisibilityTarget,
};
use crate::attributes::AttributesPatch;
use crate::clock::{Millis, secs_to_ms};
use crate::error::QueueError;
use crate::payload::{DeadLetterOrigin, Payload};
use crate::receipt::{Indexed, Nonces};
use crate::storage::{
    DeletedMessages, MovedMessage, NewMessage, QueueRecord, REMOVE_SLICE, StorageError,
    StoredMessage, WriteOp, remove_in_slices, remove_queue_rows,
};

/// Bodies read ahead from storage for the visible messages the cache lacks, at most this many
/// per read: one blocking read then serves 16 receives of 16, instead of one read each.
const READ_AHEAD: usize = 256;
/// A read-ahead starts once one of this many next visible messages lacks its body, early
/// enough for the receives after it to find theirs in memory.
const READ_AHEAD_LOW_WATER: usize = 64;
/// A read-ahead only starts while the body budget has this much room left.
const READ_AHEAD_MIN_ROOM: usize = 1 << 20;

/// Messages a redrive moves per commit, at most; with an empty destination their bodies are read
/// (for their source queue), so this also bounds the memory one redrive holds.
const REDRIVE_SLICE: usize = 64;

type BodiesRead = oneshot::Receiver<Result<Vec<(u64, Payload)>, StorageError>>;

/// A slice of the spilled backlog being read (see `window`), on a blocking thread.
type SliceRead = (
    SliceRequest,
    tokio::task::JoinHandle<Result<Vec<StoredMessage>, StorageError>>,
);

/// A message of a send, as the actor schedules it once committed.
struct SentMessage {
    id: u64,
    enqueue_ms: Millis,
    visible_at_ms: Millis,
    payload: Payload,
    deduplication_id: Option<String>,
}

/// Where a staged send (a topic's publish) answers: `respond_to` hears the rows at once,
/// `answer` is handed over with them and hears the ids once the publish's commit is in.
struct StageReply {
    respond_to: oneshot::Sender<Result<Staged, QueueError>>,
    answer: oneshot::Receiver<Result<Vec<u64>, QueueError>>,
}

/// A commit the actor is waiting for, and what to do when it is done.
enum Pending {
    Sent {
        /// The first id of the send (see `Sending`).
        first_id: u64,
        /// The messages the send enqueues (not its duplicates).
        messages: Vec<SentMessage>,
        /// The message id answered for each entry of the send, in order.
        answer: Vec<u64>,
        /// Entries that enqueued nothing, being duplicates.
        deduplicated: u64,
        /// The outcome of the earlier sends whose duplicates these are and whose commit was
        /// still under way: an id is only answered once its message is durable.
        waited: Result<(), StorageError>,
        respond_to: oneshot::Sender<Result<Vec<u64>, QueueError>>,
    },
    /// Messages moved to the dead-letter queue `target`, taken out of the table meanwhile.
    DeadLettered {
        target: QueueHandle,
        moved: Vec<(u64, LiveMessage, Option<Payload>)>,
        /// Their bytes, reserved in the target's quota; None when it had no room (nothing was
        /// committed: they are put back).
        reserved: Option<u64>,
    },
    Deleted {
        deletions: Vec<Deletion>,
        results: Vec<DeleteResult>,
        respond_to: oneshot::Sender<Result<Vec<DeleteResult>, QueueError>>,
    },
    VisibilityChanged {
        /// In the order they were applied, so that a failed commit undoes them in reverse.
        changes: Vec<VisibilityChange>,
        results: Vec<VisibilityResult>,
        respond_to: oneshot::Sender<Result<Vec<VisibilityResult>, QueueError>>,
    },
}

type Completion = (Pending, Result<(), StorageError>);

/// A commit that several requests may wait for.
type SharedCommit = Shared<BoxFuture<'static, Result<(), StorageError>>>;

pub struct QueueActor {
    record: QueueRecord,
    table: MessageTable,
    waiters: Waiters,
    /// Messages whose send is being committed.
    sending: Sending,
    context: QueueContext,
    commits: FuturesUnordered<BoxFuture<'static, Completion>>,
    /// Messages whose delete is being committed. A retry of the same delete must not be
    /// acknowledged before that commit is durable, so it waits for it.
    deleting: HashMap<u64, SharedCommit>,
    totals: QueueTotals,
    /// Receive bookkeeping gathered for a moment before it is written (see `receive_log`).
    receive_log: ReceiveLog,
    /// Bodies of messages not received yet, so their first receive reads no storage.
    bodies: BodyCache,
    /// Receipt nonces, drawn from the OS in batches.
    nonces: Nonces,
    /// The read-ahead of bodies under way, if any (see `read_ahead`).
    reading_ahead: Option<BodiesRead>,
    /// The slice of the spilled backlog being read, if any (see `window`).
    reading_slice: Option<SliceRead>,
    /// Deduplication ids accepted within the window (committed).
    deduplication: Deduplication,
    /// Deduplication ids of sends being committed: the message id, and the commit a duplicate
    /// waits for before it is answered.
    deduplicating: HashMap<String, (u64, SharedCommit)>,
    inbox: mpsc::Receiver<Command>,
    /// The queue's byte quota, shared with the actors that move messages in (see `quota`).
    quota: Arc<ByteQuota>,
    /// The table's bytes as `quota` counts them; `settle_quota` hands it the difference.
    quota_settled: u64,
}

/// Whether the actor goes on after a command.
enum Flow {
    Continue,
    Stop,
}

impl QueueActor {
    pub fn new(
        record: QueueRecord,
        table: MessageTable,
        deduplication_ids: RecoveredIds,
        context: QueueContext,
        inbox: mpsc::Receiver<Command>,
        quota: Arc<ByteQuota>,
    ) -> Self {
        let bodies = BodyCache::new(context.body_budget.clone());
        let quota_settled = table.counts().bytes;
        let mut deduplication = Deduplication::default();
        for (id, message_id, accepted_ms) in deduplication_ids {
            deduplication.accept(id, message_id, accepted_ms);
        }
        deduplication.finish_recovery();
        let mut actor = Self {
            record,
            table,
            waiters: Waiters::default(),
            sending: Sending::default(),
            context,
            commits: FuturesUnordered::new(),
            deleting: HashMap::new(),
            totals: QueueTotals::default(),
            receive_log: ReceiveLog::default(),
            bodies,
            nonces: Nonces::new(),
            reading_ahead: None,
            reading_slice: None,
            deduplication,
            deduplicating: HashMap::new(),
            inbox,
            quota,
            quota_settled,
        };
        if !actor.record.attributes.rewind_enabled() {
            // Rewind was turned off but the removal of the kept rows did not reach the disk.
            actor.forget_kept();
        }
        actor
    }

    pub async fn run(mut self) {
        // One timer for the actor's life, moved only when the next change moves: a new one per
        // turn of the loop (per command) was a timer registered and cancelled each time.
        let mut wake = Box::pin(sleep_until(far_future()));
        // The change it is set for, and when.
        let mut armed: Option<(Millis, Instant)> = None;
        loop {
            self.advance_time();
            self.settle_quota();
            self.read_slice();
            self.table.settle_window();
            let wake_at = self.next_change();
            if let Some(at) = wake_at {
                let instant = self.context.clock.instant_at(at);
                // Moved when the change is another, or is now due sooner (the clock skipped
                // ahead, or the wall clock stepped forward); not for the jitter of the
                // conversion to an instant.
                let moved = armed.is_none_or(|(armed_at, armed_instant)| {
                    armed_at != at || instant + WAKE_SLACK < armed_instant
                });
                if moved {
                    wake.as_mut().reset(instant);
                    armed = Some((at, instant));
                }
            }
            tokio::select! {
                Some((pending, result)) = self.commits.next(), if !self.commits.is_empty() => {
                    self.complete(pending, result);
                }
                read = read_finished(&mut self.reading_ahead), if self.reading_ahead.is_some() => {
                    self.reading_ahead = None;
                    self.keep_read_ahead(read);
                }
                read = slice_finished(&mut self.reading_slice), if self.reading_slice.is_some() => {
                    if let Some((request, _)) = self.reading_slice.take() {
                        self.take_slice(request, read);
                    }
                }
                command = self.inbox.recv() => {
                    let Some(command) = command else { break };
                    // A command sees the queue as of now, not as of the last wakeup.
                    self.advance_time();
                    if let Flow::Stop = self.handle(command).await {
                        break;
                    }
                    // Commands already waiting are handled now, a few at most, without a turn
                    // of the loop each (its select and its timer cost more than most commands).
                    let mut stop = false;
                    for _ in 1..COMMANDS_PER_TURN {
                        let Ok(command) = self.inbox.try_recv() else {
                            break;
                        };
                        // What a turn of the loop does before a command (the window of the
                        // backlog in memory kept filled, the quota settled, time applied).
                        self.settle_quota();
                        self.read_slice();
                        self.table.settle_window();
                        self.advance_time();
                        if let Flow::Stop = self.handle(command).await {
                            stop = true;
                            break;
                        }
                    }
                    if stop {
                        break;
                    }
                }
                () = wake.as_mut(), if wake_at.is_some() => {
                    // Spent: the next turn sets it again, even to the same time.
                    armed = None;
                }
            }
        }
        // The queue is gone (or handed off): its window no longer counts in the total.
        self.table.window_mut().release();
    }

    /// Starts reading the next slice of the spilled backlog once the window runs low.
    fn read_slice(&mut self) {
        if self.reading_slice.is_some() {
            return;
        }
        let now = self.now();
        let in_memory = self.table.visible_in_memory();
        let has_visible = self.table.has_visible();
        let expired = self.spilled_expired(now);
        let window = self.table.window_mut();
        let request = if expired {
            // Past its retention: read in to be removed, window or not.
            window.start_read_now(window.per_queue())
        } else {
            window.start_read(in_memory, has_visible, now)
        };
        if let Some(request) = request {
            self.spawn_slice_read(request);
        }
    }

    /// Whether the oldest spilled message's retention has ended.
    fn spilled_expired(&self, now: Millis) -> bool {
        self.table
            .window()
            .first_spilled_ms()
            .is_some_and(|enqueue_ms| enqueue_ms + self.retention_ms() <= now)
    }

    /// Reads in and removes every spilled message past its retention (before the counters are
    /// shown).
    async fn expire_spilled(&mut self) -> Result<(), StorageError> {
        while self.spilled_expired(self.now()) {
            let limit = self.table.window().per_queue();
            self.read_slice_now(limit).await?;
            self.advance_time();
        }
        Ok(())
    }

    fn spawn_slice_read(&mut self, request: SliceRequest) {
        let storage = self.context.storage.clone();
        let queue_id = self.record.id;
        let read = tokio::task::spawn_blocking(move || {
            storage.read_messages(queue_id, request.after_id, request.limit.saturating_add(1))
        });
        self.reading_slice = Some((request, read));
    }

    /// Takes in a slice read from storage: the messages it brings are in the window now.
    fn take_slice(
        &mut self,
        request: SliceRequest,
        read: Result<Vec<StoredMessage>, StorageError>,
    ) {
        let now = self.now();
        match read {
            Ok(rows) => {
                // Rows memory holds, or whose send or delete is being committed, are not taken
                // again (see `window`).
                let held: std::collections::HashSet<u64> = rows
                    .iter()
                    .map(|row| row.id)
                    .filter(|&id| {
                        self.table.holds(id)
                            || self.sending.contains(id)
                            || self.deleting.contains_key(&id)
                    })
                    .collect();
                let load = self
                    .table
                    .window_mut()
                    .finish_read(request, rows, |id| held.contains(&id));
                self.table.take_slice(&load, now);
                self.serve_waiters(now);
            }
            Err(error) => {
                tracing::warn!(queue = %self.record.name, %error, "reading the next slice of a queue's backlog failed; trying again in a moment");
                self.table.window_mut().read_failed(now);
            }
        }
    }

    /// Reads the next slice at once (administrative commands that go through the whole
    /// backlog: purge, peek), waiting for a read already under way first.
    async fn read_slice_now(&mut self, limit: usize) -> Result<(), StorageError> {
        self.await_slice_read().await?;
        let Some(request) = self.table.window_mut().start_read_now(limit) else {
            return Ok(());
        };
        self.spawn_slice_read(request);
        self.await_slice_read().await
    }

    /// Waits for the slice read under way, if any, and takes it in.
    async fn await_slice_read(&mut self) -> Result<(), StorageError> {
        let Some((request, read)) = self.reading_slice.take() else {
            return Ok(());
        };
        let result = read
            .await
            .unwrap_or_else(|e| Err(StorageError::Io(format!("slice read failed: {e}"))));
        let failed = result.as_ref().err().cloned();
        self.take_slice(request, result);
        failed.map_or(Ok(()), Err)
    }

    fn now(&self) -> Millis {
        self.context.clock.now_ms()
    }

    fn retention_ms(&self) -> Millis {
        secs_to_ms(self.record.attributes.message_retention_seconds)
    }

    fn deduplication_window_ms(&self) -> Millis {
        secs_to_ms(self.record.attributes.deduplication_window_seconds)
    }

    fn next_change(&self) -> Option<Millis> {
        let retention_ms = self.retention_ms();
        let messages = self.table.next_change_ms(retention_ms);
        // The oldest spilled message's retention: its slice is read then (see `read_slice`).
        let spilled = self
            .table
            .window()
            .first_spilled_ms()
            .filter(|_| self.reading_slice.is_none())
            .map(|enqueue_ms| enqueue_ms + retention_ms);
        let messages = messages.into_iter().chain(spilled).min();
        // Polls waiting for a slice of the backlog end once it is in, not at their deadline.
        let waiters = self
            .waiters
            .next_deadline_ms()
            .filter(|_| !self.table.must_wait_for_window(self.now()));
        let records = self.receive_log.due_ms();
        messages.into_iter().chain(waiters).chain(records).min()
    }

    /// Applies what time changed: delays and visibility timeouts that ended (serving waiting
    /// polls), retention, and polls whose wait is over.
    fn advance_time(&mut self) {
        let now = self.now();
        let advanced = self.table.advance(now, self.retention_ms());
        self.totals.expired += advanced.expired_live as u64;
        for &id in &advanced.expired {
            self.bodies.remove(id);
        }
        if !advanced.expired.is_empty() {
            self.context.storage.record(WriteOp::RemoveMessages {
                queue_id: self.record.id,
                ids: advanced.expired,
            });
        }
        if advanced.became_visible > 0 {
            self.serve_waiters(now);
        }
        let forgotten = self
            .deduplication
            .expire(now, self.deduplication_window_ms());
        if !forgotten.is_empty() {
            self.context
                .storage
                .record(WriteOp::ForgetDeduplicationIds {
                    queue_id: self.record.id,
                    ids: forgotten.ids,
                    message_ids: forgotten.message_ids,
                });
        }
        // A poll past its wait still gets the messages of a slice being read: they were
        // visible (spilled) when it came.
        if !self.table.must_wait_for_window(now) {
            for waiter in self.waiters.expire(now) {
                if waiter.respond_to.send(Ok(Vec::new())).is_ok() {
                    self.totals.empty_receives += 1;
                }
            }
        }
        if self.receive_log.is_due(now) {
            self.flush_receives();
        }
    }

    /// Tells the quota what the table's bytes did since the last time: deletes, expiry, purges
    /// and moves out free room; undone deletes and moves take it back. (Bytes that came in by a
    /// reservation are counted as settled where they enter the table.)
    fn settle_quota(&mut self) {
        let bytes = self.table.counts().bytes;
        if bytes < self.quota_settled {
            self.quota.release(self.quota_settled - bytes);
        } else if bytes > self.quota_settled {
            self.quota.add(bytes - self.quota_settled);
        }
        self.quota_settled = bytes;
    }

    /// Hands the gathered receive bookkeeping to storage. Administrative commits call it first,
    /// so a durable write acknowledged after a receive also covers that receive.
    fn flush_receives(&mut self) {
        let records = self.receive_log.take();
        if !records.is_empty() {
            self.context.storage.record(WriteOp::RecordReceives {
                queue_id: self.record.id,
                receives: records,
            });
        }
    }

    async fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Info { respond_to } => {
                // The counters are exact: spilled messages past their retention are removed
                // first.
                if let Err(error) = self.expire_spilled().await {
                    tracing::warn!(queue = %self.record.name, %error, "reading a queue's expired backlog failed");
                }
                let _ = respond_to.send(self.info());
            }
            Command::Update { patch, respond_to } => {
                let result = self.update(patch).await;
                let _ = respond_to.send(result);
            }
            Command::Drop { respond_to } => {
                let result = self.drop_queue().await;
                let dropped = result.is_ok();
                let _ = respond_to.send(result);
                if dropped {
                    return Flow::Stop;
                }
            }
            Command::Send {
                messages,
                respond_to,
            } => self.send(messages, respond_to, None),
            Command::Stage {
                messages,
                respond_to,
            } => {
                let (answer_to, answer) = oneshot::channel();
                self.send(messages, answer_to, Some(StageReply { respond_to, answer }));
            }
            Command::Receive {
                request,
                respond_to,
            } => self.receive(request, respond_to),
            Command::StreamClaim { claim, respond_to } => {
                self.claim_for_stream(claim, respond_to);
            }
            Command::Release { handles } => {
                let mut released = false;
                for handle in handles {
                    if self.table.release(handle) {
                        self.receive_log.forget(handle.message_id);
                        released = true;
                    }
                }
                if released {
                    self.serve_waiters(self.now());
                }
            }
            Command::DeleteMessages {
                targets,
                respond_to,
            } => self.delete_messages(targets, respond_to),
            Command::ChangeVisibility {
                targets,
                respond_to,
            } => self.change_visibility(targets, respond_to),
            Command::Purge { respond_to } => {
                let result = self.purge().await;
                let _ = respond_to.send(result);
            }
            Command::Peek {
                max_messages,
                respond_to,
            } => {
                let mut peeked: Vec<_> = self
                    .table
                    .peek(max_messages)
                    .into_iter()
                    .map(|message| (message, self.bodies.get(message.id)))
                    .collect();
                if peeked.len() < max_messages {
                    peeked.extend(
                        self.peek_spilled(max_messages - peeked.len())
                            .await
                            .into_iter()
                            .map(|message| (message, None)),
                    );
                }
                let _ = respond_to.send(peeked);
            }
            Command::Rewind {
                start_ms,
                respond_to,
            } => {
                let result = self.rewind(start_ms).await;
                let _ = respond_to.send(result);
            }
            Command::Flush { respond_to } => {
                self.flush_receives();
                let _ = respond_to.send(());
            }
            Command::Adopt { messages } => self.adopt(messages),
            Command::Redrive {
                destination,
                max_messages,
                respond_to,
            } => {
                let result = self.redrive(destination, max_messages).await;
                let _ = respond_to.send(result);
            }
            Command::HandOff { respond_to } => {
                self.hand_off().await;
                let _ = respond_to.send(());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// The next visible messages past the window, in delivery order, read from storage without
    /// taking them in (a peek changes nothing). Empty when nothing is spilled; a failed read
    /// shows what memory holds only.
    async fn peek_spilled(&mut self, max: usize) -> Vec<super::messages::Peeked> {
        let Some(mut after) = self.table.window().end() else {
            return Vec::new();
        };
        if self.table.window().spilled() == 0 {
            return Vec::new();
        }
        let mut peeked = Vec::new();
        while peeked.len() < max {
            let storage = self.context.storage.clone();
            let queue_id = self.record.id;
            let limit = max.max(64);
            let rows =
                tokio::task::spawn_blocking(move || storage.read_messages(queue_id, after, limit))
                    .await;
            let rows = match rows {
                Ok(Ok(rows)) => rows,
                Ok(Err(error)) => {
                    tracing::warn!(queue = %self.record.name, %error, "peeking past a queue's window failed");
                    break;
                }
                Err(_) => break,
            };
            let done = rows.len() < limit;
            for row in rows {
                after = row.id;
                // A visible message memory holds past the end (a delay that ended) is in its
                // place in id order; anything else memory holds or is committing is not
                // visible, or is shown from memory already.
                let visible_here = self.table.is_visible(row.id);
                if !visible_here
                    && (self.table.window().is_known(row.id)
                        || self.table.holds(row.id)
                        || self.sending.contains(row.id))
                {
                    continue;
                }
                peeked.push(super::messages::Peeked {
                    id: row.id,
                    enqueue_ms: row.enqueue_ms,
                    first_dequeue_ms: row.first_dequeue_ms,
                    dequeue_count: row.dequeue_count,
                });
                if peeked.len() == max {
                    break;
                }
            }
            if done {
                break;
            }
        }
        peeked
    }

    fn info(&self) -> QueueInfo {
        QueueInfo {
            name: self.record.name.clone(),
            attributes: self.record.attributes.clone(),
            counts: self.table.counts(),
            oldest_message_ms: self.table.oldest_live_enqueue_ms(),
            create_time_ms: self.record.create_time_ms,
            update_time_ms: self.record.update_time_ms,
            totals: self.totals,
            waiting_polls: self.waiters.open_count(),
        }
    }

    async fn update(&mut self, patch: AttributesPatch) -> Result<QueueInfo, QueueError> {
        let attributes = self.record.attributes.patched(&patch)?;
        if attributes == self.record.attributes {
            return Ok(self.info());
        }
        self.flush_receives();
        let rewind_enabled = attributes.rewind_enabled();
        let updated = QueueRecord {
            attributes,
            update_time_ms: self.now().max(self.record.update_time_ms),
            ..self.record.clone()
        };
        self.submit(WriteOp::UpdateQueue(updated.clone())).await?;
        self.quota.set_max(updated.attributes.max_bytes);
        self.record = updated;
        if !rewind_enabled {
            self.forget_kept();
        }
        Ok(self.info())
    }

    /// Drops the rewindable messages, removing their rows lazily (recovery repeats this if the
    /// removal is lost in a crash).
    fn forget_kept(&mut self) {
        let ids = self.table.drop_kept();
        if !ids.is_empty() {
            self.context.storage.record(WriteOp::RemoveMessages {
                queue_id: self.record.id,
                ids,
            });
        }
    }

    async fn drop_queue(&mut self) -> Result<(), QueueError> {
        self.flush_receives();
        let mut message_ids = self.stored_ids();
        let rest = message_ids.split_off(message_ids.len().min(REMOVE_SLICE));
        self.submit(WriteOp::DeleteQueue {
            queue_id: self.record.id,
            message_ids,
        })
        .await?;
        // The queue is gone; the rest of its rows go in slices, so that no one commit holds the
        // writer (and every other queue's sends) for long: 1M rows in one took 1.5 s. Should
        // the server stop before they are all removed, recovery removes the rows of a queue that
        // no longer exists, and a queue created again under the name has a new id.
        remove_in_slices(&*self.context.storage, self.record.id, &rest);
        if self.table.window().spilled() > 0 {
            // The rows of the spilled backlog are not in memory: found through the index by
            // queue and removed in slices, on a thread of their own.
            let storage = self.context.storage.clone();
            let queue_id = self.record.id;
            std::thread::spawn(move || remove_queue_rows(&*storage, queue_id));
        }
        let gone = QueueError::QueueNotFound(self.record.name.clone());
        for waiter in self.waiters.drain() {
            let _ = waiter.respond_to.send(Err(gone.clone()));
        }
        Ok(())
    }

    /// Cluster mode: the queue moves to another replica, which recovers it from storage. What
    /// was acknowledged is committed already; the commits in flight are answered; the receive
    /// bookkeeping is committed (not just recorded), so the next owner keeps received messages
    /// invisible until their timeouts; parked receives end empty, as at shutdown.
    async fn hand_off(&mut self) {
        while let Some((pending, result)) = self.commits.next().await {
            self.complete(pending, result);
        }
        let receives = self.receive_log.take();
        if !receives.is_empty() {
            let committed = self.submit(WriteOp::RecordReceives {
                queue_id: self.record.id,
                receives,
            });
            if let Err(error) = committed.await {
                tracing::warn!(queue = %self.record.name, %error, "the receive bookkeeping of a queue handed off was not committed; its next owner may deliver received messages again early");
            }
        }
        for waiter in self.waiters.drain() {
            let _ = waiter.respond_to.send(Ok(Vec::new()));
        }
    }

    /// Every message of the queue that may have a row: live and kept ones, and those whose send
    /// or delete is still being committed (committed before the queue's delete, since the
    /// writer applies writes in order, or failed, which leaves nothing to delete). Rows removed
    /// lazily (expired, no longer rewindable) were handed to the writer before, too.
    fn stored_ids(&self) -> Vec<u64> {
        self.table
            .ids()
            .chain(self.sending.ids())
            .chain(self.deleting.keys().copied())
            .collect()
    }

    /// Sends `messages`: checks them, reserves their ids and backlog room, and commits them,
    /// answering `respond_to` once durable. With `stage` (a topic's publish), the queue does
    /// not commit them itself: it hands their rows to the publisher, which commits every
    /// queue's copies in one transaction and tells each queue the outcome; until then they
    /// count against the backlog as any send being committed does.
    fn send(
        &mut self,
        messages: Vec<Outgoing>,
        respond_to: oneshot::Sender<Result<Vec<u64>, QueueError>>,
        stage: Option<StageReply>,
    ) {
        let refuse =
            |error: QueueError, respond_to: oneshot::Sender<_>, stage: Option<StageReply>| {
                match stage {
                    Some(stage) => {
                        let _ = stage.respond_to.send(Err(error));
                    }
                    None => {
                        let _ = respond_to.send(Err(error));
                    }
                }
            };
        if let Err(error) = self.check_send(&messages) {
            refuse(error, respond_to, stage);
            return;
        }
        let now = self.now();
        let window_ms = self.deduplication_window_ms();
        // Each entry is a new message (its index among `fresh`) or a duplicate (the id of the
        // first send with its deduplication id).
        let mut entries: Vec<Result<usize, u64>> = Vec::with_capacity(messages.len());
        let mut fresh: Vec<Outgoing> = Vec::with_capacity(messages.len());
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        let mut earlier_commits: Vec<SharedCommit> = Vec::new();
        let mut deduplicated = 0;
        for mut message in messages {
            if window_ms == 0 {
                // Deduplication is off: ids are neither looked up nor remembered.
                message.deduplication_id = None;
            }
            if let Some(id) = &message.deduplication_id {
                let earlier = self
                    .deduplication
                    .lookup(id, now, window_ms)
                    .map(|message_id| (message_id, None))
                    .or_else(|| {
                        self.deduplicating
                            .get(id)
                            .map(|(message_id, commit)| (*message_id, Some(commit.clone())))
                    });
                if let Some((message_id, commit)) = earlier {
                    earlier_commits.extend(commit);
                    entries.push(Err(message_id));
                    deduplicated += 1;
                    continue;
                }
                if let Some(&index) = in_batch.get(id) {
                    entries.push(Ok(index));
                    deduplicated += 1;
                    continue;
                }
                in_batch.insert(id.clone(), fresh.len());
            }
            entries.push(Ok(fresh.len()));
            fresh.push(message);
        }
        if let Err(error) = self.check_backlog(fresh.len()) {
            refuse(error, respond_to, stage);
            return;
        }
        let adding: u64 = fresh.iter().map(|m| m.payload.size() as u64).sum();
        if let Err(refused) = self.quota.try_reserve(adding) {
            let error = self.bytes_full(refused, adding);
            refuse(error, respond_to, stage);
            return;
        }
        let count = fresh.len() as u64;
        let first_id = self.context.message_ids.fetch_add(count, Ordering::Relaxed);
        let answer: Vec<u64> = entries
            .iter()
            .map(|entry| match entry {
                Ok(index) => first_id + *index as u64,
                Err(message_id) => *message_id,
            })
            .collect();
        let sent: Vec<SentMessage> = fresh
            .into_iter()
            .zip(first_id..)
            .map(|(message, id)| SentMessage {
                id,
                enqueue_ms: now,
                visible_at_ms: now + secs_to_ms(message.delay_seconds),
                payload: message.payload,
                deduplication_id: message.deduplication_id,
            })
            .collect();
        let own_commit = if sent.is_empty() {
            if let Some(stage) = stage {
                // Every copy is a duplicate: nothing to write; the answer still waits for the
                // commits of the sends it duplicates.
                let (commit, _) = oneshot::channel();
                let _ = stage.respond_to.send(Ok(Staged {
                    queue_id: self.record.id,
                    rows: Vec::new(),
                    commit,
                    answer: stage.answer,
                }));
            }
            None
        } else {
            let rows: Vec<NewMessage> = sent
                .iter()
                .map(|m| NewMessage {
                    id: m.id,
                    payload: m.payload.clone(),
                    enqueue_ms: m.enqueue_ms,
                    visible_at_ms: m.visible_at_ms,
                    deduplication_id: m.deduplication_id.clone(),
                })
                .collect();
            self.sending.start(first_id, count);
            let commit = match stage {
                None => self
                    .submit(WriteOp::InsertMessages {
                        queue_id: self.record.id,
                        messages: rows,
                    })
                    .boxed()
                    .shared(),
                Some(stage) => {
                    let (commit, outcome) = oneshot::channel();
                    let _ = stage.respond_to.send(Ok(Staged {
                        queue_id: self.record.id,
                        rows,
                        commit,
                        answer: stage.answer,
                    }));
                    // A publisher that goes away without telling counts as a failed commit:
                    // the ids and the backlog room are given back.
                    async move { outcome.await.unwrap_or(Err(StorageError::Closed)) }
                        .boxed()
                        .shared()
                }
            };
            for message in &sent {
                if let Some(id) = &message.deduplication_id {
                    self.deduplicating
                        .insert(id.clone(), (message.id, commit.clone()));
                }
            }
            Some(commit)
        };
        self.commits.push(Box::pin(async move {
            let mut waited = Ok(());
            for commit in earlier_commits {
                if let Err(error) = commit.await {
                    waited = Err(error);
                }
            }
            let result = match own_commit {
                Some(commit) => commit.await,
                None => Ok(()),
            };
            (
                Pending::Sent {
                    first_id,
                    messages: sent,
                    answer,
                    deduplicated,
                    waited,
                    respond_to,
                },
                result,
            )
        }));
    }

    fn check_send(&self, messages: &[Outgoing]) -> Result<(), QueueError> {
        let attributes = &self.record.attributes;
        let single = messages.len() == 1;
        let field = |index: usize, name: &str| {
            if single {
                name.to_string()
            } else {
                format!("entries[{index}].{name}")
            }
        };
        for (index, message) in messages.iter().enumerate() {
            let size = message.payload.body.len() + message.payload.attributes_size();
            if size > attributes.max_message_size as usize {
                let what = if message.payload.attributes_size() > 0 {
                    format!(
                        "{} and {} together are {size} bytes",
                        field(index, "body"),
                        field(index, "attributes")
                    )
                } else {
                    format!("{} is {size} bytes", field(index, "body"))
                };
                return Err(QueueError::TooLarge(format!(
                    "{what}; the queue's max_message_size is {}",
                    attributes.max_message_size
                )));
            }
            if message.delay_seconds > attributes.message_retention_seconds {
                return Err(QueueError::InvalidArgument(format!(
                    "{} is {}; it must be 0..={} (the queue's message_retention_seconds)",
                    field(index, "delay_seconds"),
                    message.delay_seconds,
                    attributes.message_retention_seconds
                )));
            }
        }
        Ok(())
    }

    /// Refuses a send of `count` new messages that the backlog has no room for.
    fn check_backlog(&self, count: usize) -> Result<(), QueueError> {
        let max = self.record.attributes.max_backlog;
        let backlog = self.table.counts().backlog() + self.sending.messages;
        if count > 0 && backlog + count as u64 > max {
            return Err(QueueError::BacklogFull {
                name: self.record.name.clone(),
                backlog,
                max,
            });
        }
        Ok(())
    }

    fn bytes_full(&self, refused: super::quota::Refused, adding: u64) -> QueueError {
        QueueError::BytesFull {
            name: self.record.name.clone(),
            held: refused.held,
            adding,
            max: refused.max,
        }
    }

    /// Hands `op` to storage; the future resolves when it is durable (or failed). It borrows
    /// nothing, so the actor can await it in line (administrative commands) or park it in
    /// `commits` (sends and deletes).
    fn submit(&self, op: WriteOp) -> impl Future<Output = Result<(), StorageError>> + use<> {
        let (done, committed) = oneshot::channel();
        self.context.storage.commit(op, done);
        async move { committed.await.unwrap_or(Err(StorageError::Closed)) }
    }

    fn complete(&mut self, pending: Pending, result: Result<(), StorageError>) {
        match pending {
            Pending::Sent {
                first_id,
                messages,
                answer,
                deduplicated,
                waited,
                respond_to,
            } => {
                self.sending.finish(first_id, messages.len() as u64);
                for message in &messages {
                    if let Some(id) = &message.deduplication_id
                        && self
                            .deduplicating
                            .get(id)
                            .is_some_and(|(message_id, _)| *message_id == message.id)
                    {
                        self.deduplicating.remove(id);
                    }
                }
                let reply = match result.clone().and(waited) {
                    Ok(()) => {
                        self.totals.deduplicated += deduplicated;
                        Ok(answer)
                    }
                    Err(error) => Err(error.into()),
                };
                if result.is_err() {
                    // The room reserved in `send` is given back.
                    self.quota.release(
                        messages
                            .iter()
                            .map(|message| message.payload.size() as u64)
                            .sum(),
                    );
                } else {
                    let now = self.now();
                    for message in messages {
                        let size = message.payload.size() as u32;
                        let in_memory = self.table.insert(
                            message.id,
                            message.enqueue_ms,
                            message.visible_at_ms,
                            now,
                            size,
                        );
                        // Reserved in `send`: already counted by the quota.
                        self.quota_settled += u64::from(size);
                        if in_memory {
                            // A spilled message's body is read with its slice's read-ahead.
                            self.bodies.insert_copy(message.id, &message.payload);
                        }
                        if let Some(id) = message.deduplication_id {
                            self.deduplication
                                .accept(id, message.id, message.enqueue_ms);
                        }
                        self.totals.sent += 1;
                    }
                    self.serve_waiters(now);
                }
                let _ = respond_to.send(reply);
            }
            Pending::DeadLettered {
                target,
                moved,
                reserved,
            } => match reserved.map(|bytes| (bytes, result)) {
                Some((_, Ok(()))) => {
                    self.totals.dead_lettered += moved.len() as u64;
                    let origin = DeadLetterOrigin {
                        source_queue: self.record.name.as_str().into(),
                        receive_count: 0,
                    };
                    let adopted = moved
                        .into_iter()
                        .map(|(id, message, payload)| Adopted {
                            id,
                            enqueue_ms: message.enqueue_ms,
                            size: message.size,
                            payload: payload.map(|payload| Payload {
                                dead_letter: Some(DeadLetterOrigin {
                                    receive_count: message.dequeue_count,
                                    ..origin.clone()
                                }),
                                ..payload
                            }),
                        })
                        .collect();
                    target.adopt(adopted);
                }
                failed => {
                    match failed {
                        Some((bytes, Err(error))) => {
                            target.quota().release(bytes);
                            tracing::warn!(%error, queue = %self.record.name, "moving messages to the dead-letter queue failed; they stay");
                        }
                        _ => {
                            // Not at WARN: every receive tries again while the quota is full
                            // (the bytes gauge and max_bytes show it).
                            tracing::debug!(queue = %self.record.name, dead_letter_queue = %target.name(), "the dead-letter queue's max_bytes has no room; the messages stay");
                        }
                    }
                    // Visible again; the next receive tries the move again.
                    for (id, message, payload) in moved {
                        self.table.put_back(id, message);
                        if let Some(payload) = payload {
                            self.bodies.insert(id, payload);
                        }
                    }
                }
            },
            Pending::Deleted {
                deletions,
                results,
                respond_to,
            } => {
                for deletion in &deletions {
                    if let Deletion::Deleted { id, .. } = deletion {
                        self.deleting.remove(id);
                    }
                }
                let reply = match result {
                    Ok(()) => {
                        self.totals.deleted += deletions.len() as u64;
                        Ok(results)
                    }
                    Err(error) => {
                        for deletion in deletions {
                            self.table.undo_delete(deletion);
                        }
                        self.serve_waiters(self.now());
                        Err(error.into())
                    }
                };
                let _ = respond_to.send(reply);
            }
            Pending::VisibilityChanged {
                changes,
                results,
                respond_to,
            } => {
                let reply = match result {
                    Ok(()) => Ok(results),
                    Err(error) => {
                        for change in changes.into_iter().rev() {
                            self.table.undo_visibility(change);
                        }
                        Err(error.into())
                    }
                };
                let _ = respond_to.send(reply);
            }
        }
    }

    fn receive(&mut self, request: ReceiveRequest, respond_to: ReceiveReply) {
        let attributes = &self.record.attributes;
        let visibility_ms = secs_to_ms(
            request
                .visibility_timeout_seconds
                .unwrap_or(attributes.visibility_timeout_seconds),
        );
        let polling_wait_seconds = attributes.polling_wait_seconds;
        let now = self.now();
        // Waiters are served as soon as anything becomes visible, so visible messages here
        // mean nobody is waiting ahead of this request.
        if self.table.has_visible() {
            let claimed = self.claim(request.max_messages, now, visibility_ms);
            // Empty when every visible message went to the dead-letter queue: then it waits.
            if !claimed.is_empty() {
                self.hand_over(claimed, respond_to, now);
                return;
            }
        }
        let wait_seconds = request.wait_seconds.unwrap_or(polling_wait_seconds);
        // With visible messages spilled and none in memory, even a poll that does not wait
        // waits for the slice that brings them (see `advance_time`).
        if wait_seconds == 0 && !self.table.must_wait_for_window(now) {
            if respond_to.send(Ok(Vec::new())).is_ok() {
                self.totals.empty_receives += 1;
            }
            return;
        }
        self.waiters.park(
            Waiter {
                max_messages: request.max_messages,
                visibility_ms,
                respond_to,
            },
            Some(now + secs_to_ms(wait_seconds)),
        );
    }

    /// A consumer stream's turn: claims at once what is visible, else waits in line with the
    /// long polls, with no deadline (the stream's client decides how long it stays).
    fn claim_for_stream(&mut self, claim: StreamClaim, respond_to: ReceiveReply) {
        let visibility_ms = secs_to_ms(
            claim
                .visibility_timeout_seconds
                .unwrap_or(self.record.attributes.visibility_timeout_seconds),
        );
        let now = self.now();
        // As in `receive`: visible messages here mean nobody is waiting ahead.
        if self.table.has_visible() {
            let claimed = self.claim(claim.max_messages, now, visibility_ms);
            if !claimed.is_empty() {
                self.hand_over(claimed, respond_to, now);
                return;
            }
        }
        self.waiters.park(
            Waiter {
                max_messages: claim.max_messages,
                visibility_ms,
                respond_to,
            },
            None,
        );
    }

    /// Claims up to `max` visible messages for a receiver. Under a dead-letter policy, the
    /// messages it says are done are moved to the dead-letter queue instead (see
    /// `dead_letter`), so a claim may come back short, or empty.
    ///
    /// Every message a claim takes out for the dead-letter queue leaves the table, so a claim
    /// that comes back empty while messages were visible has made progress (callers that loop
    /// while something is visible end).
    fn claim(&mut self, max: usize, now: Millis, visibility_ms: Millis) -> Vec<Claimed> {
        // The registry keeps a dead-letter queue from being deleted while a policy names it;
        // should it be missing all the same (a policy changing at this moment), messages are
        // delivered as without a policy rather than held.
        let target = self
            .record
            .attributes
            .dead_letter_policy
            .as_ref()
            .and_then(|policy| {
                let target = self
                    .context
                    .directory
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&policy.dead_letter_queue)
                    .cloned()?;
                let rule = DeadLetterRule {
                    max_receive_count: policy.max_receive_count,
                    enqueued_by_ms: (policy.max_time_to_live_seconds > 0)
                        .then(|| now - secs_to_ms(policy.max_time_to_live_seconds)),
                };
                Some((target, rule))
            });
        let rule = target.as_ref().map(|(_, rule)| *rule);
        let claim = self.table.claim_or_dead_letter(
            max,
            now,
            visibility_ms,
            || self.nonces.next_nonce(),
            rule,
        );
        if let Some((target, _)) = target
            && !claim.dead_letters.is_empty()
        {
            self.dead_letter(claim.dead_letters, target, now);
        }
        claim.claimed
    }

    /// Moves messages taken out of the table to the dead-letter queue: one commit moves their
    /// rows (each is then in the dead-letter queue and nowhere else, across any crash), and
    /// once it is durable the dead-letter queue's actor is handed them (see `complete`). Until
    /// then they are in neither actor, only in storage, where recovery finds them in whichever
    /// queue the commit left them. Should the commit fail, they are visible here again.
    ///
    /// Room is reserved in the target's quota first, message by message, oldest first; those
    /// that do not fit are not moved, and come back visible once the actor next looks at its
    /// commits (not at once: a claim that took messages out must not find them visible again,
    /// see `claim`).
    fn dead_letter(&mut self, messages: Vec<(u64, LiveMessage)>, target: QueueHandle, now: Millis) {
        let mut bytes = 0;
        let (messages, refused): (Vec<_>, Vec<_>) =
            messages.into_iter().partition(|(_, message)| {
                let size = u64::from(message.size);
                let fits = target.quota().try_reserve(size).is_ok();
                if fits {
                    bytes += size;
                }
                fits
            });
        if !refused.is_empty() {
            let target = target.clone();
            let moved = refused
                .into_iter()
                .map(|(id, message)| (id, message, None))
                .collect();
            self.commits.push(Box::pin(async move {
                let pending = Pending::DeadLettered {
                    target,
                    moved,
                    reserved: None,
                };
                (pending, Ok(()))
            }));
        }
        if messages.is_empty() {
            return;
        }
        let source: std::sync::Arc<str> = self.record.name.as_str().into();
        let mut moves = Vec::with_capacity(messages.len());
        let mut moved = Vec::with_capacity(messages.len());
        for (id, message) in messages {
            // Receive bookkeeping not yet written would land on the moved row: dropped.
            self.receive_log.forget(id);
            moves.push(MovedMessage {
                id,
                to_queue_id: target.id(),
                visible_at_ms: now,
                dead_letter: Some(DeadLetterOrigin {
                    source_queue: source.clone(),
                    receive_count: message.dequeue_count,
                }),
            });
            moved.push((id, message, self.bodies.take(id)));
        }
        let committed = self.submit(WriteOp::MoveMessages {
            from_queue_id: self.record.id,
            moves,
        });
        self.commits.push(Box::pin(async move {
            let pending = Pending::DeadLettered {
                target,
                moved,
                reserved: Some(bytes),
            };
            (pending, committed.await)
        }));
    }

    /// Takes in messages another queue moved here (committed already): visible at once.
    fn adopt(&mut self, messages: Vec<Adopted>) {
        let now = self.now();
        for message in messages {
            if self
                .table
                .adopt(message.id, message.enqueue_ms, now, message.size)
            {
                // Reserved by the mover: already counted by the quota.
                self.quota_settled += u64::from(message.size);
            } else {
                self.quota.release(u64::from(message.size));
            }
            if let Some(payload) = message.payload {
                self.bodies.insert(message.id, payload);
            }
        }
        self.serve_waiters(now);
    }

    /// Moves up to `max_messages` visible messages, oldest first, to the queue each was
    /// dead-lettered from (`destination` None) or to `destination`, in commits of at most
    /// [`REDRIVE_SLICE`]; each committed slice is handed to its queues' actors at once. Awaits
    /// in line, like the other administrative commands: the messages it looks at cannot
    /// change meanwhile. A message without an existing source queue stays (`skipped`).
    async fn redrive(
        &mut self,
        destination: Option<String>,
        max_messages: usize,
    ) -> Result<Redriven, QueueError> {
        let directory = self.context.directory.clone();
        let lookup = |name: &str| {
            directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned()
        };
        let named = match &destination {
            Some(name) if name == &self.record.name => {
                return Err(QueueError::InvalidArgument(format!(
                    "destination_queue is {name:?}, the queue itself: name another queue, or \
                     leave it empty to move messages back to their source queues"
                )));
            }
            Some(name) => {
                Some(lookup(name).ok_or_else(|| QueueError::QueueNotFound(name.clone()))?)
            }
            None => None,
        };
        self.flush_receives();
        let mut outcome = Redriven::default();
        // The first message whose destination's max_bytes has no room ends the redrive, after
        // the messages before it are moved.
        let mut refused: Option<QueueError> = None;
        // Past the window, the next slices are read in first (a redrive may move more than a
        // window's worth).
        while self.table.window().spilled() > 0
            && self.table.visible_ids().take(max_messages).count() < max_messages
        {
            self.read_slice_now(max_messages).await?;
        }
        let candidates: Vec<u64> = self.table.visible_ids().take(max_messages).collect();
        for slice in candidates.chunks(REDRIVE_SLICE) {
            if refused.is_some() {
                break;
            }
            let mut payloads: HashMap<u64, Payload> = HashMap::new();
            if named.is_none() {
                let missing: Vec<u64> = slice
                    .iter()
                    .copied()
                    .filter(|&id| !self.bodies.contains(id))
                    .collect();
                if !missing.is_empty() {
                    let (reply, read) = oneshot::channel();
                    self.context.storage.read_bodies(missing, reply);
                    payloads = read
                        .await
                        .unwrap_or(Err(StorageError::Closed))?
                        .into_iter()
                        .collect();
                }
            }
            let mut moves = Vec::with_capacity(slice.len());
            let mut moved = Vec::with_capacity(slice.len());
            for &id in slice {
                let target = match &named {
                    Some(target) => Some(target.clone()),
                    None => {
                        let cached = self.bodies.get(id);
                        let payload = cached.as_ref().or_else(|| payloads.get(&id));
                        payload
                            .and_then(|payload| payload.dead_letter.as_ref())
                            .map(|origin| origin.source_queue.clone())
                            .filter(|source| **source != *self.record.name)
                            .and_then(|source| lookup(&source))
                    }
                };
                let Some(target) = target else {
                    outcome.skipped += 1;
                    continue;
                };
                let Some(message) = self.table.take_visible(id) else {
                    continue;
                };
                let size = u64::from(message.size);
                if let Err(full) = target.quota().try_reserve(size) {
                    self.table.put_back(id, message);
                    refused = Some(QueueError::BytesFull {
                        name: target.name().to_string(),
                        held: full.held,
                        adding: size,
                        max: full.max,
                    });
                    break;
                }
                moves.push(MovedMessage {
                    id,
                    to_queue_id: target.id(),
                    visible_at_ms: self.now(),
                    dead_letter: None,
                });
                let payload =
                    self.bodies
                        .take(id)
                        .or_else(|| payloads.remove(&id))
                        .map(|payload| Payload {
                            dead_letter: None,
                            ..payload
                        });
                moved.push((id, message, target, payload));
            }
            if moves.is_empty() {
                continue;
            }
            let committed = self
                .submit(WriteOp::MoveMessages {
                    from_queue_id: self.record.id,
                    moves,
                })
                .await;
            if let Err(error) = committed {
                for (id, message, target, payload) in moved {
                    target.quota().release(u64::from(message.size));
                    self.table.put_back(id, message);
                    if let Some(payload) = payload {
                        self.bodies.insert(id, payload);
                    }
                }
                self.serve_waiters(self.now());
                return Err(error.into());
            }
            outcome.moved += moved.len() as u64;
            self.totals.redriven += moved.len() as u64;
            let mut by_target: HashMap<u64, (QueueHandle, Vec<Adopted>)> = HashMap::new();
            for (id, message, target, payload) in moved {
                by_target
                    .entry(target.id())
                    .or_insert_with(|| (target.clone(), Vec::new()))
                    .1
                    .push(Adopted {
                        id,
                        enqueue_ms: message.enqueue_ms,
                        payload,
                        size: message.size,
                    });
            }
            for (target, adopted) in by_target.into_values() {
                target.adopt(adopted);
            }
        }
        match refused {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }

    /// Serves parked polls, oldest first, while messages are visible.
    fn serve_waiters(&mut self, now: Millis) {
        while self.table.has_visible() {
            let Some((place, waiter)) = self.waiters.pop_first_in_line() else {
                break;
            };
            let claimed = self.claim(waiter.max_messages, now, waiter.visibility_ms);
            if claimed.is_empty() {
                // What was visible went to the dead-letter queue: it waits on.
                self.waiters.put_back(place, waiter);
                continue;
            }
            self.hand_over(claimed, waiter.respond_to, now);
        }
    }

    /// Reads ahead the bodies of the next visible messages that the cache lacks (a backlog
    /// older than the cache, or recovered after a restart), so that their receives find them in
    /// memory. One read at a time; only while the body budget has room.
    fn read_ahead(&mut self) {
        if self.reading_ahead.is_some() || self.bodies.room() < READ_AHEAD_MIN_ROOM {
            return;
        }
        let bodies = &self.bodies;
        let lacking_soon = self
            .table
            .visible_ids()
            .take(READ_AHEAD_LOW_WATER)
            .any(|id| !bodies.contains(id));
        if !lacking_soon {
            return;
        }
        let ids: Vec<u64> = self
            .table
            .visible_ids()
            .take(READ_AHEAD)
            .filter(|&id| !bodies.contains(id))
            .collect();
        let (reply, read) = oneshot::channel();
        self.context.storage.read_bodies(ids, reply);
        self.reading_ahead = Some(read);
    }

    /// Keeps the bodies read ahead of messages that are still waiting to be received.
    fn keep_read_ahead(&mut self, read: Result<Vec<(u64, Payload)>, StorageError>) {
        match read {
            Ok(bodies) => {
                for (id, body) in bodies {
                    if self.table.is_visible(id) && !self.bodies.contains(id) {
                        self.bodies.insert(id, body);
                    }
                }
            }
            // Nothing is lost: a receive reads the bodies it lacks itself (and reports errors).
            Err(error) => tracing::debug!(%error, "reading bodies ahead failed"),
        }
    }

    /// Gives claimed messages to a receiver; if it has gone, they are visible again at once.
    fn hand_over(&mut self, mut claimed: Vec<Claimed>, respond_to: ReceiveReply, now: Millis) {
        for message in &mut claimed {
            message.body = self.bodies.take(message.id);
        }
        self.read_ahead();
        let records: Vec<_> = claimed.iter().map(Claimed::receive_record).collect();
        match respond_to.send(Ok(claimed)) {
            Ok(()) => {
                self.totals.received += records.len() as u64;
                self.receive_log.add(records, now);
                if self.receive_log.is_due(now) {
                    self.flush_receives();
                }
            }
            Err(Ok(returned)) => {
                for message in returned {
                    self.table.release(message.handle);
                    if let Some(body) = message.body {
                        self.bodies.insert(message.id, body);
                    }
                }
                self.serve_waiters(now);
            }
            Err(Err(_)) => {}
        }
    }

    fn delete_policy(&self) -> DeletePolicy {
        let attributes = &self.record.attributes;
        DeletePolicy {
            keep_for_rewind: attributes.rewind_enabled(),
            tombstone_ms: secs_to_ms(attributes.visibility_timeout_seconds).max(MIN_TOMBSTONE_MS),
        }
    }

    fn delete_messages(
        &mut self,
        targets: Vec<DeleteTarget>,
        respond_to: oneshot::Sender<Result<Vec<DeleteResult>, QueueError>>,
    ) {
        let now = self.now();
        let policy = self.delete_policy();
        let mut deletions = Vec::with_capacity(targets.len());
        let mut results = Vec::with_capacity(targets.len());
        // (index in results, the commit of an earlier delete of the same message).
        let mut earlier_commits = Vec::new();
        for (position, target) in targets.into_iter().enumerate() {
            let handle = target.handle;
            let indexed;
            let field: &dyn std::fmt::Display = match target.index {
                Some(index) => {
                    indexed = Indexed("receipt_handles", index);
                    &indexed
                }
                None => &"receipt_handle",
            };
            if let Err(error) = self.check_issuer(&handle, field) {
                results.push(Err(error));
                continue;
            }
            match self.table.delete(handle, now, policy, field) {
                Ok(deletion @ Deletion::Deleted { .. }) => {
                    self.receive_log.forget(handle.message_id);
                    self.bodies.remove(handle.message_id);
                    deletions.push(deletion);
                    results.push(Ok(()));
                }
                Ok(Deletion::AlreadyDeleted) => {
                    if let Some(commit) = self.deleting.get(&handle.message_id) {
                        earlier_commits.push((position, commit.clone()));
                    }
                    results.push(Ok(()));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if deletions.is_empty() && earlier_commits.is_empty() {
            let _ = respond_to.send(Ok(results));
            return;
        }
        let own_commit = if deletions.is_empty() {
            None
        } else {
            let deleted = deleted_rows(self.record.id, &deletions);
            let ids: Vec<u64> = deletions
                .iter()
                .filter_map(|d| d.kept_record().map(|r| r.id))
                .collect();
            let commit = self
                .submit(WriteOp::DeleteMessages(deleted))
                .boxed()
                .shared();
            for id in ids {
                self.deleting.insert(id, commit.clone());
            }
            Some(commit)
        };
        self.commits.push(Box::pin(async move {
            let mut results = results;
            for (index, commit) in earlier_commits {
                if let Err(error) = commit.await {
                    results[index] = Err(error.into());
                }
            }
            let result = match own_commit {
                Some(commit) => commit.await,
                None => Ok(()),
            };
            (
                Pending::Deleted {
                    deletions,
                    results,
                    respond_to,
                },
                result,
            )
        }));
    }

    /// Checks that a receipt handle was issued by this queue incarnation.
    fn check_issuer(
        &self,
        handle: &crate::receipt::ReceiptHandle,
        field: &dyn std::fmt::Display,
    ) -> Result<(), QueueError> {
        if handle.queue_id != self.record.id {
            // Says nothing of the queue that did issue it, nor whether it still exists.
            return Err(QueueError::InvalidArgument(format!(
                "{field} was not issued by queue {:?}: use a receipt handle with the queue it was \
                 received from (a queue deleted and created again is a new queue)",
                self.record.name
            )));
        }
        Ok(())
    }

    /// Applies the changes at once (a nacked message goes to waiting polls straight away) and
    /// answers once they are durable; a failed commit undoes them. Each change writes the
    /// message's whole receive record, so a pending lazy record of the same receive, which still
    /// holds the old time and would be written after it, is dropped.
    fn change_visibility(
        &mut self,
        targets: Vec<VisibilityTarget>,
        respond_to: oneshot::Sender<Result<Vec<VisibilityResult>, QueueError>>,
    ) {
        let now = self.now();
        let mut changes = Vec::with_capacity(targets.len());
        let mut results = Vec::with_capacity(targets.len());
        for target in targets {
            let field = &target.place;
            let handle = target.handle;
            let visibility_ms = secs_to_ms(target.visibility_timeout_seconds);
            let result = self.check_issuer(&handle, field).and_then(|()| {
                self.table
                    .change_visibility(handle, now, visibility_ms, field)
            });
            match result {
                Ok(change) => {
                    self.receive_log.forget(change.id);
                    results.push(Ok(change.after.visible_at_ms));
                    changes.push(change);
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if changes.is_empty() {
            let _ = respond_to.send(Ok(results));
            return;
        }
        if changes
            .iter()
            .any(|change| change.after.visible_at_ms <= now)
        {
            self.serve_waiters(now);
        }
        let records = changes.iter().map(VisibilityChange::record).collect();
        let committed = self.submit(WriteOp::RecordReceives {
            queue_id: self.record.id,
            receives: records,
        });
        self.commits.push(Box::pin(async move {
            (
                Pending::VisibilityChanged {
                    changes,
                    results,
                    respond_to,
                },
                committed.await,
            )
        }));
    }

    /// Deletes every live message, in commits of at most [`REMOVE_SLICE`] so that a large
    /// purge does not hold the writer (and every other queue's sends) in one long commit. It
    /// answers once all are durable; should one commit fail, the messages of it and of the
    /// slices after it are put back (those before stay purged: a retry purges the rest).
    ///
    /// A backlog larger than the window is purged a slice at a time: each is read into memory
    /// and purged as the window was.
    async fn purge(&mut self) -> Result<u64, QueueError> {
        let mut purged = self.purge_in_memory().await?;
        while self.table.window().spilled() > 0 {
            self.read_slice_now(REMOVE_SLICE).await?;
            purged += self.purge_in_memory().await?;
        }
        Ok(purged)
    }

    async fn purge_in_memory(&mut self) -> Result<u64, QueueError> {
        let now = self.now();
        let deletions = self.table.purge(now, self.delete_policy());
        for deletion in &deletions {
            if let Deletion::Deleted { id, .. } = deletion {
                self.receive_log.forget(*id);
                self.bodies.remove(*id);
            }
        }
        let mut committed = 0;
        for slice in deletions.chunks(REMOVE_SLICE) {
            let result = self
                .submit(WriteOp::DeleteMessages(deleted_rows(self.record.id, slice)))
                .await;
            if let Err(error) = result {
                for deletion in deletions[committed..].iter().rev() {
                    self.table.undo_delete(*deletion);
                }
                self.totals.purged += committed as u64;
                self.serve_waiters(self.now());
                return Err(error.into());
            }
            committed += slice.len();
        }
        self.totals.purged += committed as u64;
        Ok(committed as u64)
    }

    async fn rewind(&mut self, start_ms: Millis) -> Result<u64, QueueError> {
        let attributes = self.record.attributes.clone();
        if !attributes.rewind_enabled() {
            return Err(QueueError::RewindDisabled(self.record.name.clone()));
        }
        let now = self.now();
        let earliest = now - secs_to_ms(attributes.rewind_seconds);
        if start_ms < earliest || start_ms > now + REWIND_CLOCK_SKEW_MS {
            return Err(QueueError::InvalidArgument(format!(
                "start_time must lie within the queue's rewind window: \
                 [now - rewind_seconds ({}), now]",
                attributes.rewind_seconds
            )));
        }
        let ids = self.table.kept_since(start_ms);
        if ids.is_empty() {
            return Ok(0);
        }
        self.flush_receives();
        self.submit(WriteOp::Restore {
            queue_id: self.record.id,
            ids: ids.clone(),
            visible_at_ms: now,
        })
        .await?;
        let restored = self.table.restore(&ids);
        self.serve_waiters(self.now());
        Ok(restored)
    }
}

/// The sends being committed, as runs of ids: they count against the backlog already, and a
/// queue deleted meanwhile must delete their rows too. A send's ids are consecutive, so this
/// costs one map entry per send, not one per message.
#[derive(Default)]
struct Sending {
    /// First id → how many.
    runs: HashMap<u64, u64>,
    messages: u64,
}

impl Sending {
    // An empty send takes no id, so its `first_id` may be another send's: it is not recorded.
    fn start(&mut self, first_id: u64, count: u64) {
        if count > 0 {
            self.runs.insert(first_id, count);
            self.messages += count;
        }
    }

    fn finish(&mut self, first_id: u64, count: u64) {
        if count > 0 && self.runs.remove(&first_id).is_some() {
            self.messages -= count;
        }
    }

    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|(&first_id, &count)| first_id..first_id + count)
    }

    fn contains(&self, id: u64) -> bool {
        self.runs
            .iter()
            .any(|(&first_id, &count)| (first_id..first_id + count).contains(&id))
    }
}

/// The rows of deleted messages, as storage writes them: removed, kept for rewind, or
/// tombstones.
fn deleted_rows(queue_id: u64, deletions: &[Deletion]) -> DeletedMessages {
    let mut deleted = DeletedMessages {
        queue_id,
        ..DeletedMessages::default()
    };
    for deletion in deletions {
        let (Deletion::Deleted { id, remains, .. }, Some(record)) =
            (deletion, deletion.kept_record())
        else {
            continue;
        };
        match remains {
            Remains::Nothing => deleted.removed.push(*id),
            Remains::Kept => deleted.kept.push(record),
            Remains::Tombstone { until_ms } => {
                // Every tombstone of one request ends at the same time (see DeletedMessages).
                deleted.tombstone_until_ms = *until_ms;
                deleted.tombstones.push(record);
            }
        }
    }
    deleted
}

/// Resolves when the read-ahead in `slot` is done (never, when there is none).
async fn slice_finished(slot: &mut Option<SliceRead>) -> Result<Vec<StoredMessage>, StorageError> {
    match slot {
        Some((_, read)) => read
            .await
            .unwrap_or_else(|e| Err(StorageError::Io(format!("slice read failed: {e}")))),
        None => std::future::pending().await,
    }
}

async fn read_finished(slot: &mut Option<BodiesRead>) -> Result<Vec<(u64, Payload)>, StorageError> {
    match slot {
        Some(read) => read.await.unwrap_or(Err(StorageError::Closed)),
        None => std::future::pending().await,
    }
}

/// A rewind to "now" computed on a client whose clock runs slightly ahead is still accepted.
const REWIND_CLOCK_SKEW_MS: Millis = 1_000;

/// Most commands an actor handles in one turn of its loop when they are waiting (commits that
/// completed meanwhile wait for the next turn).
const COMMANDS_PER_TURN: usize = 16;

/// How much sooner than the actor's timer a change must become due for the timer to be moved
/// (see `QueueActor::run`): more than the jitter of converting a time in milliseconds to an
/// instant.
const WAKE_SLACK: std::time::Duration = std::time::Duration::from_millis(2);

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400)
}
