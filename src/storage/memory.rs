//! An in-memory backend with SQLite's semantics, for tests that drive queues without a disk.
//!
//! Every [`WriteOp`] is applied to tables that mirror the SQLite schema (queues, messages with
//! their state and body, the id counters, the receipt secret), in submission order, and a
//! commit is answered only once its operation is applied: what a test reads back through
//! `recover`, `read_messages`, `read_held` or `read_bodies` is what the queue wrote, so an actor started
//! again on the same storage is a restart. Two switches let a test play the disk's part:
//! [`MemoryStorage::fail_writes`] makes writes fail as an I/O error would, and
//! [`MemoryStorage::hold_writes`] keeps them pending (a commit in flight) until released;
//! [`MemoryStorage::hold_reads`] does the same for body reads (a slow disk under a receive).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{
    BodiesReply, CommitReply, DeduplicationRecord, DeletedMessages, LiveTotals, QueueRecord,
    Recovered, Storage, StorageError, StoredMessage, StoredState, SubscriptionRecord,
    SubscriptionTotals, TopicRecord, TopicTotals, WriteOp,
};
use crate::clock::Millis;
use crate::payload::Payload;
use crate::receipt::{KEY_LEN, ReceiptKey};

#[derive(Default)]
pub struct MemoryStorage {
    /// One lock for everything: a write is applied whole, and readers never see half of one.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tables: Tables,
    /// Writes submitted while held, in order; applied by `release_writes`.
    held: VecDeque<Request>,
    holding: bool,
    /// Body reads asked for while reads are held; answered by `release_reads`.
    held_reads: Vec<(Vec<u64>, BodiesReply)>,
    holding_reads: bool,
    /// Set by `fail_writes`: writes reaching the tables fail instead of being applied.
    failing: bool,
    closed: bool,
}

enum Request {
    /// `done` is None for lazy writes nobody waits for.
    Write {
        op: WriteOp,
        done: Option<CommitReply>,
    },
    Close(oneshot::Sender<()>),
}

/// What a SQLite database holds, table by table.
struct Tables {
    queues: BTreeMap<u64, QueueRecord>,
    /// By id, so recovery visits them oldest first as SQLite's rowid scan does.
    messages: BTreeMap<u64, Row>,
    next_queue_id: u64,
    next_message_id: u64,
    receipt_secret: [u8; KEY_LEN],
    /// (queue id, deduplication id) → (message id, accepted at).
    deduplication: BTreeMap<(u64, String), (u64, i64)>,
    topics: BTreeMap<u64, TopicRecord>,
    /// (topic id, subscription name) → subscription.
    subscriptions: BTreeMap<(u64, String), SubscriptionRecord>,
    /// The totals of the topics and subscriptions above (their rows' counter columns).
    topic_totals: HashMap<u64, TopicTotals>,
    subscription_totals: HashMap<(u64, String), SubscriptionTotals>,
}

/// One row of the `messages` table.
#[derive(Clone, Debug)]
struct Row {
    queue_id: u64,
    meta: StoredMessage,
    body: Payload,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            queues: BTreeMap::new(),
            messages: BTreeMap::new(),
            // As a new SQLite database's counters start.
            next_queue_id: 1,
            next_message_id: 1,
            receipt_secret: ReceiptKey::generate_secret(),
            deduplication: BTreeMap::new(),
            topics: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            topic_totals: HashMap::new(),
            subscription_totals: HashMap::new(),
        }
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the tables are whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While `fail` is set, every write fails with [`StorageError::Io`] and changes nothing, as
    /// on a disk that is full or broken: commits hear the error, lazy writes are lost.
    pub fn fail_writes(&self, fail: bool) {
        self.lock().failing = fail;
    }

    /// Keeps every write submitted from now on pending, unapplied and unanswered, until
    /// [`Self::release_writes`]: a commit that is still in flight.
    pub fn hold_writes(&self) {
        self.lock().holding = true;
    }

    /// Applies and answers the writes held, in the order they were submitted, and stops holding.
    pub fn release_writes(&self) {
        let mut state = self.lock();
        state.holding = false;
        while let Some(request) = state.held.pop_front() {
            state.process(request);
        }
    }

    /// The stored rows of one queue (metadata, not bodies), oldest first: what reached storage.
    pub fn stored_messages(&self, queue_id: u64) -> Vec<StoredMessage> {
        self.lock()
            .tables
            .messages
            .values()
            .filter(|row| row.queue_id == queue_id)
            .map(|row| row.meta)
            .collect()
    }

    /// Keeps every body read asked for from now on unanswered until [`Self::release_reads`].
    pub fn hold_reads(&self) {
        self.lock().holding_reads = true;
    }

    /// Answers the reads held, from the tables as they are now, and stops holding.
    pub fn release_reads(&self) {
        let mut state = self.lock();
        state.holding_reads = false;
        for (ids, reply) in std::mem::take(&mut state.held_reads) {
            let _ = reply.send(Ok(state.tables.bodies(ids)));
        }
    }

    /// How many body reads are held.
    pub fn held_reads(&self) -> usize {
        self.lock().held_reads.len()
    }

    /// How many writes are held (commits and lazy writes alike).
    pub fn held_writes(&self) -> usize {
        self.lock().held.len()
    }

    fn submit(&self, request: Request) {
        let mut state = self.lock();
        if state.holding {
            state.held.push_back(request);
        } else {
            state.process(request);
        }
    }
}

impl State {
    fn process(&mut self, request: Request) {
        match request {
            Request::Write { op, done } => {
                let result = if self.closed {
                    Err(StorageError::Closed)
                } else if self.failing {
                    Err(StorageError::Io(
                        "commit failed: disk I/O error (injected)".into(),
                    ))
                } else {
                    self.tables.apply(&op)
                };
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
            Request::Close(done) => {
                self.closed = true;
                let _ = done.send(());
            }
        }
    }
}

impl Tables {
    /// Applies one operation whole or not at all, as its own SQLite transaction would: what can
    /// fail (a taken id or name) is checked before anything changes.
    fn apply(&mut self, op: &WriteOp) -> Result<(), StorageError> {
        match op {
            WriteOp::CreateQueue(queue) => {
                let taken = self.queues.contains_key(&queue.id)
                    || self.queues.values().any(|q| q.name == queue.name);
                if taken {
                    return Err(constraint("UNIQUE constraint failed: queues"));
                }
                self.queues.insert(queue.id, queue.clone());
                self.next_queue_id = self.next_queue_id.max(queue.id + 1);
            }
            WriteOp::UpdateQueue(queue) => {
                if let Some(stored) = self.queues.get_mut(&queue.id) {
                    stored.attributes = queue.attributes.clone();
                    stored.update_time_ms = queue.update_time_ms;
                }
            }
            WriteOp::DeleteQueue {
                queue_id,
                message_ids,
            } => {
                for id in message_ids {
                    // Only this queue's rows, as the SQL's `AND queue_id = ?` guards.
                    if self
                        .messages
                        .get(id)
                        .is_some_and(|r| r.queue_id == *queue_id)
                    {
                        self.messages.remove(id);
                    }
                }
                self.queues.remove(queue_id);
                self.deduplication.retain(|(queue, _), _| queue != queue_id);
                self.subscriptions.retain(|_, s| s.queue_id != *queue_id);
                let subscriptions = &self.subscriptions;
                self.subscription_totals
                    .retain(|key, _| subscriptions.contains_key(key));
            }
            WriteOp::CreateTopic(topic) => {
                if self.topics.values().any(|t| t.name == topic.name) {
                    return Err(constraint("UNIQUE constraint failed: topics"));
                }
                self.topics.insert(topic.id, topic.clone());
            }
            WriteOp::UpdateTopic(topic) => {
                if let Some(stored) = self.topics.get_mut(&topic.id) {
                    stored.max_message_size = topic.max_message_size;
                    stored.update_time_ms = topic.update_time_ms;
                }
            }
            WriteOp::DeleteTopic { topic_id } => {
                self.topics.remove(topic_id);
                self.subscriptions.retain(|(topic, _), _| topic != topic_id);
                self.topic_totals.remove(topic_id);
                self.subscription_totals
                    .retain(|(topic, _), _| topic != topic_id);
            }
            WriteOp::Subscribe(subscription) => {
                let key = (subscription.topic_id, subscription.name.clone());
                if self.subscriptions.contains_key(&key) {
                    return Err(constraint("UNIQUE constraint failed: subscriptions"));
                }
                self.subscriptions.insert(key, subscription.clone());
            }
            WriteOp::Unsubscribe { topic_id, name } => {
                self.subscriptions.remove(&(*topic_id, name.clone()));
                self.subscription_totals.remove(&(*topic_id, name.clone()));
            }
            WriteOp::InsertMessages { .. } | WriteOp::Publish { .. } => {
                if let Some(counts) = op.publish_counts()
                    && self.topics.contains_key(&counts.topic_id)
                {
                    let topic = self.topic_totals.entry(counts.topic_id).or_default();
                    topic.published += counts.topic.published;
                    topic.unrouted += counts.topic.unrouted;
                    for (name, added) in &counts.subscriptions {
                        let key = (counts.topic_id, name.clone());
                        if self.subscriptions.contains_key(&key) {
                            let totals = self.subscription_totals.entry(key).or_default();
                            totals.delivered += added.delivered;
                            totals.filtered_out += added.filtered_out;
                        }
                    }
                }
                let rows = op.inserted_messages().unwrap_or_default();
                if rows.iter().any(|(_, m)| self.messages.contains_key(&m.id)) {
                    return Err(constraint("UNIQUE constraint failed: messages.id"));
                }
                for (queue_id, message) in rows {
                    let queue_id = &queue_id;
                    let meta = StoredMessage {
                        id: message.id,
                        enqueue_ms: message.enqueue_ms,
                        visible_at_ms: message.visible_at_ms,
                        dequeue_count: 0,
                        first_dequeue_ms: 0,
                        receipt_nonce: 0,
                        state: StoredState::Live,
                        size: message.payload.size() as u32,
                    };
                    let row = Row {
                        queue_id: *queue_id,
                        meta,
                        body: message.payload.clone(),
                    };
                    self.messages.insert(message.id, row);
                    if let Some(id) = &message.deduplication_id {
                        self.deduplication
                            .insert((*queue_id, id.clone()), (message.id, message.enqueue_ms));
                    }
                    self.next_message_id = self.next_message_id.max(message.id + 1);
                }
                if let Some(id) = op.last_publish_id() {
                    self.next_message_id = self.next_message_id.max(id + 1);
                }
            }
            WriteOp::RemoveMessages { ids, .. } => {
                for id in ids {
                    self.messages.remove(id);
                }
            }
            WriteOp::DeleteMessages(deleted) => self.delete_messages(deleted),
            WriteOp::Restore {
                ids, visible_at_ms, ..
            } => {
                for id in ids {
                    if let Some(row) = self.messages.get_mut(id) {
                        row.meta.state = StoredState::Live;
                        row.meta.visible_at_ms = *visible_at_ms;
                        row.meta.receipt_nonce = 0;
                    }
                }
            }
            WriteOp::RecordReceives { receives, .. } => {
                for receive in receives {
                    // Only undeleted rows: a delete committed first has the last word.
                    if let Some(row) = self.messages.get_mut(&receive.id)
                        && row.meta.state == StoredState::Live
                    {
                        row.meta.visible_at_ms = receive.visible_at_ms;
                        row.meta.dequeue_count = receive.dequeue_count;
                        row.meta.first_dequeue_ms = receive.first_dequeue_ms;
                        row.meta.receipt_nonce = receive.receipt_nonce;
                    }
                }
            }
            WriteOp::MoveMessages {
                from_queue_id,
                moves,
            } => {
                for moved in moves {
                    if let Some(row) = self.messages.get_mut(&moved.id)
                        && row.queue_id == *from_queue_id
                        && row.meta.state == StoredState::Live
                    {
                        row.queue_id = moved.to_queue_id;
                        row.meta.visible_at_ms = moved.visible_at_ms;
                        row.meta.dequeue_count = 0;
                        row.meta.first_dequeue_ms = 0;
                        row.meta.receipt_nonce = 0;
                        row.body.dead_letter = moved.dead_letter.clone();
                    }
                }
            }
            WriteOp::ForgetDeduplicationIds { queue_id, ids, .. } => {
                for id in ids {
                    self.deduplication.remove(&(*queue_id, id.clone()));
                }
            }
        }
        Ok(())
    }

    /// The bodies of the rows in `ids` that exist, in the order of `ids`.
    fn bodies(&self, ids: Vec<u64>) -> Vec<(u64, Payload)> {
        ids.into_iter()
            .filter_map(|id| Some((id, self.messages.get(&id)?.body.clone())))
            .collect()
    }

    fn delete_messages(&mut self, deleted: &DeletedMessages) {
        for id in &deleted.removed {
            self.messages.remove(id);
        }
        for kept in &deleted.kept {
            if let Some(row) = self.messages.get_mut(&kept.id) {
                row.meta.state = StoredState::Kept;
                row.meta.dequeue_count = kept.dequeue_count;
                row.meta.first_dequeue_ms = kept.first_dequeue_ms;
                row.meta.receipt_nonce = kept.receipt_nonce;
            }
        }
        for kept in &deleted.tombstones {
            if let Some(row) = self.messages.get_mut(&kept.id) {
                row.meta.state = StoredState::Tombstone;
                row.meta.visible_at_ms = deleted.tombstone_until_ms;
                row.meta.dequeue_count = kept.dequeue_count;
                row.meta.receipt_nonce = kept.receipt_nonce;
                row.body = Payload::default();
                row.meta.size = 0;
            }
        }
    }
}

fn constraint(what: &str) -> StorageError {
    StorageError::Io(format!("commit failed: {what}"))
}

impl Storage for MemoryStorage {
    fn recover(&self) -> Result<Recovered, StorageError> {
        let state = self.lock();
        let tables = &state.tables;
        Ok(Recovered {
            queues: tables.queues.values().cloned().collect(),
            topics: tables.topics.values().cloned().collect(),
            subscriptions: tables.subscriptions.values().cloned().collect(),
            topic_totals: tables
                .topic_totals
                .iter()
                .filter(|(id, _)| tables.topics.contains_key(id))
                .map(|(id, totals)| (*id, *totals))
                .collect(),
            subscription_totals: tables
                .subscription_totals
                .iter()
                .filter(|(key, _)| tables.subscriptions.contains_key(key))
                .map(|(key, totals)| (key.clone(), *totals))
                .collect(),
            deduplication_ids: tables
                .deduplication
                .iter()
                .map(
                    |((queue_id, id), (message_id, accepted_ms))| DeduplicationRecord {
                        queue_id: *queue_id,
                        deduplication_id: id.clone(),
                        message_id: *message_id,
                        accepted_ms: *accepted_ms,
                    },
                )
                .collect(),
            receipt_secret: tables.receipt_secret,
            next_queue_id: tables.next_queue_id,
            next_message_id: tables.next_message_id,
        })
    }

    fn read_messages(
        &self,
        queue_id: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let state = self.lock();
        Ok(state
            .tables
            .messages
            .range(after_id.saturating_add(1)..)
            .map(|(_, row)| row)
            .filter(|row| row.queue_id == queue_id && row.meta.state == StoredState::Live)
            .take(limit)
            .map(|row| row.meta)
            .collect())
    }

    fn read_held(&self, queue_id: u64, now: Millis) -> Result<Vec<StoredMessage>, StorageError> {
        let state = self.lock();
        Ok(state
            .tables
            .messages
            .values()
            .filter(|row| {
                row.queue_id == queue_id
                    && (row.meta.state != StoredState::Live
                        || (row.meta.visible_at_ms > now
                            && row.meta.visible_at_ms > row.meta.enqueue_ms))
            })
            .map(|row| row.meta)
            .collect())
    }

    fn count_live(&self, queue_id: u64) -> Result<LiveTotals, StorageError> {
        let state = self.lock();
        let mut totals = LiveTotals::default();
        for row in state.tables.messages.values() {
            if row.queue_id == queue_id && row.meta.state == StoredState::Live {
                totals.count += 1;
                totals.bytes += u64::from(row.meta.size);
            }
        }
        Ok(totals)
    }

    fn queues_with_messages(&self) -> Result<Vec<u64>, StorageError> {
        let state = self.lock();
        let queues: std::collections::BTreeSet<u64> = state
            .tables
            .messages
            .values()
            .map(|row| row.queue_id)
            .collect();
        Ok(queues.into_iter().collect())
    }

    fn message_ids(&self, queue_id: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        let state = self.lock();
        Ok(state
            .tables
            .messages
            .iter()
            .filter(|(_, row)| row.queue_id == queue_id)
            .take(limit)
            .map(|(id, _)| *id)
            .collect())
    }

    fn commit(&self, op: WriteOp, done: CommitReply) {
        self.submit(Request::Write {
            op,
            done: Some(done),
        });
    }

    fn record(&self, op: WriteOp) {
        self.submit(Request::Write { op, done: None });
    }

    fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply) {
        // Reads see what is applied, as SQLite's readers see what is committed.
        let mut state = self.lock();
        if state.holding_reads {
            state.held_reads.push((ids, reply));
        } else {
            let _ = reply.send(Ok(state.tables.bodies(ids)));
        }
    }

    fn close(&self, done: oneshot::Sender<()>) {
        self.submit(Request::Close(done));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use std::sync::Arc;

    use super::*;

    /// Commit figures go nowhere here (storage must not depend on metrics).
    struct Unobserved;

    impl crate::storage::CommitObserver for Unobserved {
        fn observe_commit(&self, _: std::time::Duration, _: usize, _: bool) {}
    }
    use crate::attributes::QueueAttributes;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::{KeptRecord, NewMessage, ReceiveRecord};

    fn queue(id: u64, name: &str) -> QueueRecord {
        QueueRecord {
            id,
            name: name.into(),
            attributes: QueueAttributes::default(),
            create_time_ms: 1_000,
            update_time_ms: 1_000,
        }
    }

    fn new_message(id: u64) -> NewMessage {
        NewMessage {
            id,
            payload: Payload::new(Bytes::from(format!("body {id}")), Default::default()),
            deduplication_id: None,
            enqueue_ms: 1_000 + id as i64,
            visible_at_ms: 2_000,
        }
    }

    fn receive(id: u64, nonce: u64) -> ReceiveRecord {
        ReceiveRecord {
            id,
            visible_at_ms: 40_000,
            dequeue_count: 2,
            first_dequeue_ms: 3_000,
            receipt_nonce: nonce,
        }
    }

    fn kept(id: u64) -> KeptRecord {
        KeptRecord {
            id,
            dequeue_count: 2,
            first_dequeue_ms: 3_000,
            receipt_nonce: 70 + id,
        }
    }

    /// Every kind of write, in an order where each depends on the ones before, with two that
    /// must fail whole (a taken queue name; a batch with one taken message id).
    fn script() -> Vec<WriteOp> {
        let mut updated = queue(1, "q1");
        updated.attributes.visibility_timeout_seconds = 99;
        updated.update_time_ms = 5_000;
        vec![
            WriteOp::CreateQueue(queue(1, "q1")),
            WriteOp::CreateQueue(queue(2, "q2")),
            WriteOp::CreateQueue(queue(3, "q1")),
            WriteOp::InsertMessages {
                queue_id: 1,
                messages: (1..=6).map(new_message).collect(),
            },
            WriteOp::InsertMessages {
                queue_id: 2,
                messages: vec![new_message(7), new_message(8)],
            },
            WriteOp::InsertMessages {
                queue_id: 1,
                messages: vec![new_message(9), new_message(5)],
            },
            WriteOp::RecordReceives {
                queue_id: 1,
                receives: (1..=5).map(|id| receive(id, 10 + id)).collect(),
            },
            WriteOp::DeleteMessages(DeletedMessages {
                queue_id: 1,
                removed: vec![1],
                kept: vec![kept(2)],
                tombstones: vec![kept(3)],
                tombstone_until_ms: 90_000,
            }),
            // Deleted rows keep what their delete wrote.
            WriteOp::RecordReceives {
                queue_id: 1,
                receives: vec![receive(2, 99), receive(3, 99), receive(6, 16)],
            },
            WriteOp::Restore {
                queue_id: 1,
                ids: vec![2],
                visible_at_ms: 50_000,
            },
            WriteOp::UpdateQueue(updated),
            WriteOp::RemoveMessages {
                queue_id: 1,
                ids: vec![4],
            },
            // Only the rows of queue 2 go with it, whatever ids are named.
            WriteOp::DeleteQueue {
                queue_id: 2,
                message_ids: vec![7, 8, 5],
            },
        ]
    }

    /// What a backend holds, as recovery and body reads see it.
    async fn contents(
        storage: &dyn Storage,
    ) -> (
        Vec<QueueRecord>,
        Vec<(u64, StoredMessage)>,
        Vec<(u64, Payload)>,
    ) {
        let queues = storage.recover().expect("recover").queues;
        // Every row of every queue with rows, as the window's reads see them: live ones in
        // slices, the rest as held (at the end of time no live row is hidden, so each row
        // comes once).
        let mut messages = Vec::new();
        for queue_id in storage.queues_with_messages().expect("queues") {
            let totals = storage.count_live(queue_id).expect("count");
            let live = storage.read_messages(queue_id, 0, 100).expect("slice");
            assert_eq!(totals.count, live.len() as u64);
            assert_eq!(
                totals.bytes,
                live.iter().map(|m| u64::from(m.size)).sum::<u64>()
            );
            let mut all = live;
            for held in storage.read_held(queue_id, i64::MAX).expect("held") {
                all.push(held);
            }
            all.sort_by_key(|m| m.id);
            assert_eq!(
                storage.message_ids(queue_id, 100).expect("ids").len(),
                all.len()
            );
            messages.extend(all.into_iter().map(|m| (queue_id, m)));
        }
        messages.sort_by_key(|(_, m)| m.id);
        let (reply, read) = oneshot::channel();
        storage.read_bodies((0..=10).collect(), reply);
        let bodies = read.await.expect("reply").expect("bodies");
        (queues, messages, bodies)
    }

    async fn run_script(storage: &dyn Storage) -> Vec<bool> {
        let mut succeeded = Vec::new();
        for op in script() {
            let (done, committed) = oneshot::channel();
            storage.commit(op, done);
            succeeded.push(committed.await.expect("reply").is_ok());
        }
        succeeded
    }

    /// The same writes leave the same rows in both backends, and fail in both at the same
    /// points: the in-memory storage behaves as SQLite does, not as a test wishes.
    #[tokio::test]
    async fn applies_every_write_as_sqlite_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = SqliteStorage::open(dir.path(), None, Arc::new(Unobserved))
            .expect("open sqlite storage");
        let memory = MemoryStorage::new();
        let sqlite_results = run_script(&sqlite).await;
        let memory_results = run_script(&memory).await;
        assert_eq!(memory_results, sqlite_results);
        assert_eq!(sqlite_results.iter().filter(|ok| !**ok).count(), 2);
        let expected = contents(&sqlite).await;
        assert_eq!(contents(&memory).await, expected);
        // The script is not vacuous: live, restored, kept-for-rewind... rows all remain.
        assert_eq!(expected.0.len(), 1);
        assert_eq!(
            expected.1.iter().map(|(_, m)| m.id).collect::<Vec<_>>(),
            [2, 3, 5, 6]
        );
    }

    #[tokio::test]
    async fn held_writes_wait_in_order_and_failing_writes_change_nothing() {
        let storage = MemoryStorage::new();
        storage.hold_writes();
        let (created, create_done) = oneshot::channel();
        storage.commit(WriteOp::CreateQueue(queue(1, "q")), created);
        storage.record(WriteOp::InsertMessages {
            queue_id: 1,
            messages: vec![new_message(1)],
        });
        let (removed, remove_done) = oneshot::channel();
        storage.commit(
            WriteOp::RemoveMessages {
                queue_id: 1,
                ids: vec![1],
            },
            removed,
        );
        assert_eq!(storage.held_writes(), 3);
        assert!(storage.recover().expect("recover").queues.is_empty());
        let mut create_done = create_done;
        assert!(create_done.try_recv().is_err(), "answered while held");

        storage.release_writes();
        assert!(matches!(create_done.await, Ok(Ok(()))));
        assert!(matches!(remove_done.await, Ok(Ok(()))));
        // Applied in submission order: the insert came before the removal.
        assert!(storage.stored_messages(1).is_empty());

        storage.fail_writes(true);
        let (inserted, insert_done) = oneshot::channel();
        let insert = WriteOp::InsertMessages {
            queue_id: 1,
            messages: vec![new_message(2)],
        };
        storage.commit(insert.clone(), inserted);
        assert!(matches!(insert_done.await, Ok(Err(StorageError::Io(_)))));
        assert!(storage.stored_messages(1).is_empty());
        storage.fail_writes(false);

        let (closed, close_done) = oneshot::channel();
        storage.close(closed);
        close_done.await.expect("closed");
        let (late, late_done) = oneshot::channel();
        storage.commit(insert, late);
        assert!(matches!(late_done.await, Ok(Err(StorageError::Closed))));
    }
}
