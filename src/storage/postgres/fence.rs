//! Cluster mode's fence: the owner epochs this replica holds, checked by the writer inside every
//! group's own transaction.
//!
//! Several replicas share the schema, each queue owned by one of them at a time, recorded as
//! `queues.owner` and `queues.owner_epoch` (the epoch grows on every change of owner; see
//! `cluster::ownership`). Each group transaction starts by reading the epochs of the queues it
//! writes `FOR SHARE`: a takeover's `UPDATE ... SET owner_epoch = owner_epoch + 1` must wait for
//! that transaction to end, and a transaction that starts after the takeover reads the new
//! epoch. An operation whose queue's epoch is not the one this replica holds is not applied,
//! its caller hears UNAVAILABLE, and the queue is reported lost, so its actor stops. A replica
//! that was paused or cut off can therefore never commit anything for a queue it lost.
//!
//! The epoch an operation is judged by is the one held when it was handed to the writer (its
//! [`Stamp`]), not the one held when its group commits: a replica can lose a queue and take it
//! again (a lease that lapsed under load, then a takeover of its own former queue), and a write
//! its former actor handed over before must not commit under the new epoch, whose actor
//! recovered the queue's rows without it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::storage::WriteOp;

/// The epochs this replica holds, and the id ranges it may hand out.
pub struct Fence {
    /// This replica's member id, written as the owner of the queues it creates.
    member: String,
    /// Queue id → the owner epoch this replica holds it at.
    epochs: Mutex<HashMap<u64, i64>>,
    /// Message ids below this are this replica's to use (the block it reserved); an insert
    /// beyond it is refused, so two replicas can never write the same id.
    message_ids_end: AtomicU64,
    /// Likewise for queue ids.
    queue_ids_end: AtomicU64,
    /// Told of every queue whose write was fenced off: the owner must stop its actor.
    lost: mpsc::UnboundedSender<u64>,
}

/// The epochs this replica held, when an operation was handed to the writer, of the queues it
/// writes (those not held then are absent). Empty outside cluster mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp(Vec<(u64, i64)>);

impl Stamp {
    /// The epoch `queue_id` was held at, if it was.
    pub fn epoch(&self, queue_id: u64) -> Option<i64> {
        self.0
            .iter()
            .find(|(id, _)| *id == queue_id)
            .map(|(_, epoch)| *epoch)
    }
}

/// What the fence decided for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// The queue's epoch is no longer this replica's (or it was deleted by another).
    Fenced,
    /// An id beyond this replica's reserved block.
    OutOfIds,
}

impl Fence {
    pub fn new(member: String, lost: mpsc::UnboundedSender<u64>) -> Self {
        Self {
            member,
            epochs: Mutex::default(),
            message_ids_end: AtomicU64::new(0),
            queue_ids_end: AtomicU64::new(0),
            lost,
        }
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        // Inserts and removes are single calls: a poisoned map is still consistent.
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on this replica writes `queue_id` as its owner at `epoch`.
    pub fn hold(&self, queue_id: u64, epoch: i64) {
        self.epochs().insert(queue_id, epoch);
    }

    /// This replica no longer writes `queue_id`; returns the epoch it held.
    pub fn release(&self, queue_id: u64) -> Option<i64> {
        self.epochs().remove(&queue_id)
    }

    pub fn held(&self, queue_id: u64) -> Option<i64> {
        self.epochs().get(&queue_id).copied()
    }

    /// The epochs `op`'s queues are held at now: taken as the operation is handed to the
    /// writer, and judged by at its commit (see the module's comment).
    pub fn stamp(&self, op: &WriteOp) -> Stamp {
        let epochs = self.epochs();
        Stamp(
            op.fenced_queue_ids()
                .into_iter()
                .filter_map(|id| epochs.get(&id).map(|&epoch| (id, epoch)))
                .collect(),
        )
    }

    /// Every queue held, with its epoch.
    pub fn all_held(&self) -> Vec<(u64, i64)> {
        self.epochs()
            .iter()
            .map(|(&id, &epoch)| (id, epoch))
            .collect()
    }

    /// The id ranges reserved for this replica: ids below these ends are its own.
    pub fn set_id_ends(&self, queue_ids_end: u64, message_ids_end: u64) {
        self.queue_ids_end.store(queue_ids_end, Ordering::Relaxed);
        self.message_ids_end
            .store(message_ids_end, Ordering::Relaxed);
    }

    /// The verdict on `op`, stamped `stamp` when it was handed over, given the epochs read
    /// (under a share lock) in its transaction: `stored` maps each existing queue id among the
    /// group's to its current epoch.
    pub fn judge(&self, op: &WriteOp, stamp: &Stamp, stored: &HashMap<u64, i64>) -> Verdict {
        let queue_id = op.queue_id();
        match op {
            WriteOp::CreateQueue(_) => {
                return if queue_id >= self.queue_ids_end.load(Ordering::Relaxed) {
                    Verdict::OutOfIds
                } else if stored.contains_key(&queue_id) {
                    Verdict::Fenced
                } else {
                    Verdict::Apply
                };
            }
            WriteOp::InsertMessages { messages, .. } => {
                let end = self.message_ids_end.load(Ordering::Relaxed);
                if messages.iter().any(|message| message.id >= end) {
                    return Verdict::OutOfIds;
                }
            }
            // A publish writes several queues: those held here must still be at the epoch
            // held (their actors reserved the copies), those other replicas own must still
            // exist (their owners take the rows in); any other case refuses the whole publish.
            WriteOp::Publish {
                copies,
                remote_queue_ids,
                ..
            } => {
                let end = self.message_ids_end.load(Ordering::Relaxed);
                if copies
                    .iter()
                    .any(|(_, messages)| messages.iter().any(|message| message.id >= end))
                {
                    return Verdict::OutOfIds;
                }
                let current = copies.iter().all(|(queue_id, _)| {
                    match (stamp.epoch(*queue_id), stored.get(queue_id)) {
                        (Some(held), Some(current)) => held == *current,
                        (None, Some(_)) => remote_queue_ids.contains(queue_id),
                        _ => false,
                    }
                });
                return if current {
                    Verdict::Apply
                } else {
                    Verdict::Fenced
                };
            }
            _ => {}
        }
        match (stamp.epoch(queue_id), stored.get(&queue_id)) {
            (Some(held), Some(current)) if held == *current => Verdict::Apply,
            // A queue no longer stored, never held here: removing rows left of a deleted queue
            // (recovery's orphans, the slices after a queue's delete) is safe from anywhere.
            (None, None) => Verdict::Apply,
            _ => Verdict::Fenced,
        }
    }

    /// After a commit: queues created here are held at their first epoch; deleted ones no
    /// longer.
    pub fn committed(&self, op: &WriteOp) {
        match op {
            WriteOp::CreateQueue(queue) => self.hold(queue.id, FIRST_EPOCH),
            WriteOp::DeleteQueue { queue_id, .. } => {
                self.release(*queue_id);
            }
            _ => {}
        }
    }

    /// Reports the queues whose writes were fenced off (once each per call), each with the
    /// epoch its write was stamped with: a queue held again since, at a newer epoch, is not
    /// the one lost.
    pub fn report_lost(&self, lost: HashSet<(u64, Option<i64>)>) {
        for (queue_id, stamped) in lost {
            let released = {
                let mut epochs = self.epochs();
                match epochs.get(&queue_id) {
                    Some(held) if Some(*held) == stamped => epochs.remove(&queue_id),
                    _ => None,
                }
            };
            // A queue this replica does not hold (or holds anew) is nobody's actor here.
            if released.is_some() {
                tracing::warn!(
                    queue_id,
                    "a write was fenced off: another replica owns the queue now; stopping it here"
                );
                let _ = self.lost.send(queue_id);
            }
        }
    }
}

/// The epoch a queue's creator holds it at.
pub const FIRST_EPOCH: i64 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::NewMessage;

    fn fence() -> (Fence, mpsc::UnboundedReceiver<u64>) {
        let (lost, told) = mpsc::unbounded_channel();
        let fence = Fence::new("me".into(), lost);
        fence.set_id_ends(100, 1_000);
        (fence, told)
    }

    /// The verdict on `op` handed over now.
    fn judge_now(fence: &Fence, op: &WriteOp, stored: &HashMap<u64, i64>) -> Verdict {
        fence.judge(op, &fence.stamp(op), stored)
    }

    fn insert(queue_id: u64, id: u64) -> WriteOp {
        WriteOp::InsertMessages {
            queue_id,
            messages: vec![NewMessage {
                id,
                payload: crate::payload::Payload::new(
                    bytes::Bytes::from_static(b"x"),
                    Default::default(),
                ),
                deduplication_id: None,
                enqueue_ms: 0,
                visible_at_ms: 0,
            }],
        }
    }

    #[test]
    fn only_writes_at_the_epoch_held_are_applied() {
        let (fence, mut told) = fence();
        fence.hold(7, 3);
        let stored = HashMap::from([(7, 3), (8, 1)]);
        assert_eq!(judge_now(&fence, &insert(7, 10), &stored), Verdict::Apply);
        // Another replica's takeover raised the epoch.
        let moved = HashMap::from([(7, 4)]);
        assert_eq!(judge_now(&fence, &insert(7, 10), &moved), Verdict::Fenced);
        // Never held here, or deleted by another replica.
        assert_eq!(judge_now(&fence, &insert(8, 11), &stored), Verdict::Fenced);
        assert_eq!(
            judge_now(&fence, &insert(7, 12), &HashMap::new()),
            Verdict::Fenced
        );
        // Rows left of a queue deleted everywhere may go from anywhere.
        let orphans = WriteOp::RemoveMessages {
            queue_id: 9,
            ids: vec![1],
        };
        assert_eq!(judge_now(&fence, &orphans, &stored), Verdict::Apply);
        // A lost queue is told once, and no longer held.
        fence.report_lost([(7, Some(3))].into());
        assert_eq!(told.try_recv().ok(), Some(7));
        assert_eq!(fence.held(7), None);
        fence.report_lost([(7, Some(3))].into());
        assert!(told.try_recv().is_err());
    }

    /// A queue lost and taken again by this replica: a write handed over under the former
    /// epoch is fenced off (the new epoch's actor recovered the rows without it), and its
    /// loss does not stop the queue's new life.
    #[test]
    fn a_write_of_a_former_epoch_is_fenced_off_after_the_queue_is_taken_again() {
        let (fence, mut told) = fence();
        fence.hold(7, 3);
        let former = insert(7, 10);
        let stamp = fence.stamp(&former);
        assert_eq!(stamp.epoch(7), Some(3));
        // The lease lapsed; then this replica took its own queue over again.
        fence.release(7);
        fence.hold(7, 4);
        let stored = HashMap::from([(7, 4)]);
        assert_eq!(fence.judge(&former, &stamp, &stored), Verdict::Fenced);
        fence.report_lost([(7, stamp.epoch(7))].into());
        assert!(told.try_recv().is_err(), "the new life is not the one lost");
        assert_eq!(fence.held(7), Some(4));
        // Handed over while not held at all: fenced off too.
        fence.release(7);
        let unheld = insert(7, 11);
        let stamp = fence.stamp(&unheld);
        fence.hold(7, 4);
        assert_eq!(fence.judge(&unheld, &stamp, &stored), Verdict::Fenced);
        assert_eq!(judge_now(&fence, &insert(7, 12), &stored), Verdict::Apply);
    }

    #[test]
    fn ids_beyond_the_reserved_blocks_are_refused() {
        let (fence, _told) = fence();
        fence.hold(7, 1);
        let stored = HashMap::from([(7, 1)]);
        assert_eq!(judge_now(&fence, &insert(7, 999), &stored), Verdict::Apply);
        assert_eq!(
            judge_now(&fence, &insert(7, 1_000), &stored),
            Verdict::OutOfIds
        );
        let queue = |id| crate::storage::QueueRecord {
            id,
            name: "q".into(),
            attributes: crate::attributes::QueueAttributes::default(),
            create_time_ms: 0,
            update_time_ms: 0,
        };
        assert_eq!(
            judge_now(&fence, &WriteOp::CreateQueue(queue(99)), &stored),
            Verdict::Apply
        );
        assert_eq!(
            judge_now(&fence, &WriteOp::CreateQueue(queue(100)), &stored),
            Verdict::OutOfIds
        );
        // Created: held at the first epoch; deleted: no longer.
        fence.committed(&WriteOp::CreateQueue(queue(42)));
        assert_eq!(fence.held(42), Some(FIRST_EPOCH));
        fence.committed(&WriteOp::DeleteQueue {
            queue_id: 42,
            message_ids: vec![],
        });
        assert_eq!(fence.held(42), None);
    }
}
