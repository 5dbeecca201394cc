//! The scheduling state of one queue's messages: which are visible, delayed, in flight or kept
//! for rewind, and when the next of them changes. Pure data, no I/O and no clock of its own
//! (every call takes `now`), so it is tested directly.
//!
//! Bodies are not here: they live in storage. Per message this keeps a few integers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::clock::Millis;
use crate::error::QueueError;
use crate::receipt::ReceiptHandle;
use crate::storage::{ReceiveRecord, StoredMessage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Receivable now.
    Visible,
    /// Sent with a delay that has not ended.
    Delayed,
    /// Received; invisible until `visible_at_ms` unless deleted first.
    InFlight,
}

/// An undeleted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveMessage {
    pub enqueue_ms: Millis,
    /// When a delayed or in-flight message becomes visible.
    pub visible_at_ms: Millis,
    /// 0 when never received.
    pub first_dequeue_ms: Millis,
    /// Nonce of the newest receive; 0 when there is none that a handle may name.
    pub receipt_nonce: u64,
    pub dequeue_count: u32,
    pub phase: Phase,
}

/// A deleted message kept for rewind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptMessage {
    pub enqueue_ms: Millis,
    pub first_dequeue_ms: Millis,
    pub dequeue_count: u32,
}

/// A message handed to a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: u64,
    pub handle: ReceiptHandle,
    pub enqueue_ms: Millis,
    pub first_dequeue_ms: Millis,
    pub visible_at_ms: Millis,
    pub dequeue_count: u32,
    /// The body, when the queue still had it in memory (see `body_cache`); otherwise the
    /// receiver reads it from storage.
    pub body: Option<bytes::Bytes>,
}

impl Claimed {
    pub fn receive_record(&self) -> ReceiveRecord {
        ReceiveRecord {
            id: self.id,
            visible_at_ms: self.visible_at_ms,
            dequeue_count: self.dequeue_count,
            first_dequeue_ms: self.first_dequeue_ms,
            receipt_nonce: self.handle.nonce,
        }
    }
}

/// How many messages are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub rewindable: u64,
}

impl Counts {
    /// What counts against `max_backlog`.
    pub fn backlog(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// What a successful delete changed, so that it can be undone if its commit fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The message was removed; `kept` says whether it is now rewindable.
    Deleted {
        id: u64,
        before: LiveMessage,
        kept: bool,
    },
    /// It was deleted already: nothing to do, and the caller's retry succeeds.
    AlreadyDeleted,
}

/// What `advance` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advanced {
    /// Delays and visibility timeouts that ended.
    pub became_visible: usize,
    /// Messages (live or kept) whose retention ended; their rows are to be removed.
    pub expired: Vec<u64>,
    /// How many of `expired` were undeleted.
    pub expired_live: usize,
}

#[derive(Debug, Default)]
pub struct MessageTable {
    /// Undeleted messages by id; ids grow with enqueue time, so the first is the oldest.
    live: BTreeMap<u64, LiveMessage>,
    /// Deleted messages kept for rewind, by id.
    kept: BTreeMap<u64, KeptMessage>,
    /// Ids of the visible messages, so the oldest is found at once.
    visible: BTreeSet<u64>,
    /// (instant, id) at which a delayed or in-flight message becomes visible. Entries are not
    /// removed when a message changes; one that no longer matches is skipped when it comes up.
    timers: BinaryHeap<Reverse<(Millis, u64)>>,
    counts: Counts,
}

/// Rebuild the timer heap once stale entries outnumber live ones by this factor, so a queue
/// with long visibility timeouts and quick deletes does not grow it without bound.
const STALE_TIMER_FACTOR: usize = 2;
const MIN_TIMERS_BEFORE_REBUILD: usize = 1_024;

impl MessageTable {
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Enqueue time of the oldest undeleted message.
    pub fn oldest_live_enqueue_ms(&self) -> Option<Millis> {
        self.live.first_key_value().map(|(_, m)| m.enqueue_ms)
    }

    /// Adds a newly sent message.
    pub fn insert(&mut self, id: u64, enqueue_ms: Millis, visible_at_ms: Millis, now: Millis) {
        let phase = if visible_at_ms > now {
            Phase::Delayed
        } else {
            Phase::Visible
        };
        self.put_live(
            id,
            LiveMessage {
                enqueue_ms,
                visible_at_ms,
                first_dequeue_ms: 0,
                receipt_nonce: 0,
                dequeue_count: 0,
                phase,
            },
        );
    }

    /// Adds a message read back from storage at startup.
    pub fn recover(&mut self, stored: &StoredMessage, now: Millis) {
        if stored.deleted {
            self.kept.insert(
                stored.id,
                KeptMessage {
                    enqueue_ms: stored.enqueue_ms,
                    first_dequeue_ms: stored.first_dequeue_ms,
                    dequeue_count: stored.dequeue_count,
                },
            );
            self.counts.rewindable += 1;
            return;
        }
        let phase = match (stored.visible_at_ms > now, stored.dequeue_count > 0) {
            (false, _) => Phase::Visible,
            (true, true) => Phase::InFlight,
            (true, false) => Phase::Delayed,
        };
        self.put_live(
            stored.id,
            LiveMessage {
                enqueue_ms: stored.enqueue_ms,
                visible_at_ms: stored.visible_at_ms,
                first_dequeue_ms: stored.first_dequeue_ms,
                receipt_nonce: stored.receipt_nonce,
                dequeue_count: stored.dequeue_count,
                phase,
            },
        );
    }

    fn put_live(&mut self, id: u64, message: LiveMessage) {
        match message.phase {
            Phase::Visible => {
                self.visible.insert(id);
                self.counts.visible += 1;
            }
            Phase::Delayed => {
                self.timers.push(Reverse((message.visible_at_ms, id)));
                self.counts.delayed += 1;
            }
            Phase::InFlight => {
                self.timers.push(Reverse((message.visible_at_ms, id)));
                self.counts.in_flight += 1;
            }
        }
        self.live.insert(id, message);
    }

    fn take_live(&mut self, id: u64) -> Option<LiveMessage> {
        let message = self.live.remove(&id)?;
        match message.phase {
            Phase::Visible => {
                self.visible.remove(&id);
                self.counts.visible -= 1;
            }
            Phase::Delayed => self.counts.delayed -= 1,
            Phase::InFlight => self.counts.in_flight -= 1,
        }
        Some(message)
    }

    /// The ids of every message here, live or kept.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.keys().chain(self.kept.keys()).copied()
    }

    pub fn has_visible(&self) -> bool {
        !self.visible.is_empty()
    }

    /// Ids of the visible messages, oldest first: the order receives take them in.
    pub fn visible_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.visible.iter().copied()
    }

    pub fn is_visible(&self, id: u64) -> bool {
        self.visible.contains(&id)
    }

    /// Receives up to `max` visible messages, oldest first: each becomes in flight until
    /// `now + visibility_ms`, with a fresh nonce from `nonce`.
    pub fn claim(
        &mut self,
        max: usize,
        now: Millis,
        visibility_ms: Millis,
        mut nonce: impl FnMut() -> u64,
    ) -> Vec<Claimed> {
        let mut claimed = Vec::with_capacity(max.min(self.visible.len()));
        while claimed.len() < max {
            let Some(id) = self.visible.pop_first() else {
                break;
            };
            // Invariant: every id in `visible` is a live message (put_live/take_live keep them
            // together), so this lookup cannot miss.
            let Some(message) = self.live.get_mut(&id) else {
                continue;
            };
            message.phase = Phase::InFlight;
            message.visible_at_ms = now + visibility_ms;
            message.dequeue_count = message.dequeue_count.saturating_add(1);
            if message.first_dequeue_ms == 0 {
                message.first_dequeue_ms = now;
            }
            message.receipt_nonce = nonce();
            self.counts.visible -= 1;
            self.counts.in_flight += 1;
            self.timers.push(Reverse((message.visible_at_ms, id)));
            claimed.push(Claimed {
                id,
                handle: ReceiptHandle {
                    message_id: id,
                    nonce: message.receipt_nonce,
                },
                enqueue_ms: message.enqueue_ms,
                first_dequeue_ms: message.first_dequeue_ms,
                visible_at_ms: message.visible_at_ms,
                dequeue_count: message.dequeue_count,
                body: None,
            });
        }
        self.compact_timers();
        claimed
    }

    /// Makes a message claimed for a receiver that has gone visible again at once. The receive
    /// still counts in `dequeue_count`. Returns whether it changed anything.
    pub fn release(&mut self, handle: ReceiptHandle) -> bool {
        match self.live.get(&handle.message_id) {
            Some(m) if m.phase == Phase::InFlight && m.receipt_nonce == handle.nonce => {}
            _ => return false,
        }
        if let Some(mut message) = self.take_live(handle.message_id) {
            message.phase = Phase::Visible;
            message.receipt_nonce = 0;
            self.put_live(handle.message_id, message);
        }
        true
    }

    /// Deletes the message named by `handle`, if the handle is its newest receive and has not
    /// expired. With `keep`, the message stays as rewindable.
    pub fn delete(
        &mut self,
        handle: ReceiptHandle,
        now: Millis,
        keep: bool,
        field: &dyn std::fmt::Display,
    ) -> Result<Deletion, QueueError> {
        let id = handle.message_id;
        let Some(message) = self.live.get(&id) else {
            // Deleted already (kept or removed), or expired: a retry must succeed.
            return Ok(Deletion::AlreadyDeleted);
        };
        if message.receipt_nonce != handle.nonce {
            return Err(QueueError::StaleReceipt(format!(
                "{field} is not the newest receipt handle of message {id}: it was received again, \
                 or became visible again, since"
            )));
        }
        if message.phase != Phase::InFlight || message.visible_at_ms <= now {
            return Err(QueueError::StaleReceipt(format!(
                "{field} has expired: message {id} became visible again at its next_visible_time"
            )));
        }
        let before = *message;
        self.take_live(id);
        if keep {
            self.keep(id, &before);
        }
        Ok(Deletion::Deleted {
            id,
            before,
            kept: keep,
        })
    }

    fn keep(&mut self, id: u64, message: &LiveMessage) {
        self.kept.insert(
            id,
            KeptMessage {
                enqueue_ms: message.enqueue_ms,
                first_dequeue_ms: message.first_dequeue_ms,
                dequeue_count: message.dequeue_count,
            },
        );
        self.counts.rewindable += 1;
    }

    /// Puts back a message whose delete could not be committed.
    pub fn undo_delete(&mut self, deletion: Deletion) {
        if let Deletion::Deleted { id, before, kept } = deletion {
            if kept && self.kept.remove(&id).is_some() {
                self.counts.rewindable -= 1;
            }
            if !self.live.contains_key(&id) {
                self.put_live(id, before);
            }
        }
    }

    /// Applies what the passage of time changed up to `now`: delays and visibility timeouts
    /// that ended, and retention (messages enqueued `retention_ms` ago or earlier are gone,
    /// received or not, kept or not).
    pub fn advance(&mut self, now: Millis, retention_ms: Millis) -> Advanced {
        let mut advanced = Advanced::default();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let due = matches!(
                self.live.get(&id),
                Some(m) if m.phase != Phase::Visible && m.visible_at_ms == at
            );
            if due && let Some(mut message) = self.take_live(id) {
                message.phase = Phase::Visible;
                self.put_live(id, message);
                advanced.became_visible += 1;
            }
        }
        let cutoff = now - retention_ms;
        while let Some((&id, message)) = self.live.first_key_value() {
            if message.enqueue_ms > cutoff {
                break;
            }
            self.take_live(id);
            advanced.expired.push(id);
            advanced.expired_live += 1;
        }
        while let Some((&id, message)) = self.kept.first_key_value() {
            if message.enqueue_ms > cutoff {
                break;
            }
            self.kept.remove(&id);
            self.counts.rewindable -= 1;
            advanced.expired.push(id);
        }
        advanced
    }

    /// The earliest instant at which `advance` has something to do.
    pub fn next_change_ms(&self, retention_ms: Millis) -> Option<Millis> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let retention = [
            self.live.first_key_value().map(|(_, m)| m.enqueue_ms),
            self.kept.first_key_value().map(|(_, m)| m.enqueue_ms),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|enqueue| enqueue + retention_ms);
        [timer, retention].into_iter().flatten().min()
    }

    /// Ids of the kept messages enqueued at or after `start_ms`, oldest first.
    pub fn kept_since(&self, start_ms: Millis) -> Vec<u64> {
        self.kept
            .iter()
            .filter(|(_, m)| m.enqueue_ms >= start_ms)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Makes these kept messages visible again (those still kept); returns how many.
    pub fn restore(&mut self, ids: &[u64]) -> u64 {
        let mut restored = 0;
        for &id in ids {
            if let Some(kept) = self.kept.remove(&id) {
                self.counts.rewindable -= 1;
                restored += 1;
                self.put_live(
                    id,
                    LiveMessage {
                        enqueue_ms: kept.enqueue_ms,
                        visible_at_ms: 0,
                        first_dequeue_ms: kept.first_dequeue_ms,
                        receipt_nonce: 0,
                        dequeue_count: kept.dequeue_count,
                        phase: Phase::Visible,
                    },
                );
            }
        }
        restored
    }

    /// Forgets every kept message (rewind turned off); returns their ids.
    pub fn drop_kept(&mut self) -> Vec<u64> {
        self.counts.rewindable = 0;
        std::mem::take(&mut self.kept).into_keys().collect()
    }

    /// Drops the timer entries that no longer match their message. It looks at the heap only,
    /// not at every message: the visible backlog can be far larger than the heap.
    fn compact_timers(&mut self) {
        let timed = (self.counts.delayed + self.counts.in_flight) as usize;
        if self.timers.len() > MIN_TIMERS_BEFORE_REBUILD.max(timed * STALE_TIMER_FACTOR) {
            let live = &self.live;
            self.timers.retain(|Reverse((at, id))| {
                live.get(id)
                    .is_some_and(|m| m.phase != Phase::Visible && m.visible_at_ms == *at)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIS: Millis = 30_000;
    const RETENTION: Millis = 3_600_000;

    fn nonces() -> impl FnMut() -> u64 {
        let mut next = 0;
        move || {
            next += 1;
            next
        }
    }

    #[test]
    fn oldest_visible_first_and_delays() {
        let mut table = MessageTable::default();
        table.insert(1, 100, 100, 100);
        table.insert(2, 101, 5_000, 101); // delayed
        table.insert(3, 102, 102, 102);
        assert_eq!(
            table.counts(),
            Counts {
                visible: 2,
                delayed: 1,
                ..Default::default()
            }
        );
        let got = table.claim(16, 200, VIS, nonces());
        assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(table.next_change_ms(RETENTION), Some(5_000));
        assert_eq!(table.advance(5_000, RETENTION).became_visible, 1);
        let got = table.claim(16, 5_000, VIS, nonces());
        assert_eq!(got[0].id, 2);
        assert_eq!(got[0].dequeue_count, 1);
        assert_eq!(got[0].first_dequeue_ms, 5_000);
    }

    #[test]
    fn visibility_timeout_redelivers_with_a_new_handle() {
        let mut table = MessageTable::default();
        table.insert(7, 0, 0, 0);
        let first = table.claim(1, 10, VIS, nonces())[0].clone();
        assert_eq!(table.counts().in_flight, 1);
        assert!(table.claim(1, 10, VIS, nonces()).is_empty());
        table.advance(10 + VIS, RETENTION);
        let second = table.claim(1, 10 + VIS, VIS, || 99)[0].clone();
        assert_eq!(second.dequeue_count, 2);
        assert_eq!(second.first_dequeue_ms, 10);
        assert_ne!(first.handle, second.handle);
        // The first handle is superseded; the second works once; a retry is fine.
        let now = 20 + VIS;
        assert!(matches!(
            table.delete(first.handle, now, false, &"h"),
            Err(QueueError::StaleReceipt(_))
        ));
        assert!(matches!(
            table.delete(second.handle, now, false, &"h"),
            Ok(Deletion::Deleted { .. })
        ));
        assert_eq!(
            table.delete(second.handle, now, false, &"h"),
            Ok(Deletion::AlreadyDeleted)
        );
        assert_eq!(table.counts(), Counts::default());
    }

    #[test]
    fn expired_handle_is_refused() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        // Not yet advanced, but the deadline has passed: still refused.
        assert!(matches!(
            table.delete(claimed.handle, VIS, false, &"h"),
            Err(QueueError::StaleReceipt(m)) if m.contains("expired")
        ));
    }

    #[test]
    fn release_makes_visible_at_once() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        assert!(table.release(claimed.handle));
        assert_eq!(table.counts().visible, 1);
        assert!(!table.release(claimed.handle));
    }

    #[test]
    fn retention_removes_live_and_kept() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0);
        table.insert(2, 10, 10, 10);
        let claimed = table.claim(1, 20, VIS, nonces())[0].clone();
        table.delete(claimed.handle, 30, true, &"h").unwrap();
        assert_eq!(table.counts().rewindable, 1);
        assert_eq!(table.next_change_ms(1_000), Some(1_000));
        let advanced = table.advance(1_005, 1_000);
        assert_eq!(advanced.expired, vec![1]);
        let advanced = table.advance(1_010, 1_000);
        assert_eq!(advanced.expired, vec![2]);
        assert_eq!(table.counts(), Counts::default());
        assert_eq!(table.next_change_ms(1_000), Some(VIS + 20)); // a stale timer only
    }

    #[test]
    fn rewind_restores_kept_since_start() {
        let mut table = MessageTable::default();
        for id in 1..=3 {
            table.insert(id, id as Millis * 100, 0, 0);
        }
        for claimed in table.claim(3, 400, VIS, nonces()) {
            table.delete(claimed.handle, 500, true, &"h").unwrap();
        }
        assert_eq!(table.counts().rewindable, 3);
        let since = table.kept_since(200);
        assert_eq!(since, vec![2, 3]);
        assert_eq!(table.restore(&since), 2);
        assert_eq!(table.restore(&since), 0);
        let counts = table.counts();
        assert_eq!((counts.visible, counts.rewindable), (2, 1));
        let again = table.claim(16, 600, VIS, nonces());
        assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(again[0].dequeue_count, 2);
        assert_eq!(table.drop_kept(), vec![1]);
        assert_eq!(table.counts().rewindable, 0);
    }

    #[test]
    fn undo_delete_puts_it_back() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        let deletion = table.delete(claimed.handle, 1, true, &"h").unwrap();
        table.undo_delete(deletion);
        assert_eq!(
            table.counts(),
            Counts {
                in_flight: 1,
                ..Default::default()
            }
        );
        assert!(table.delete(claimed.handle, 2, false, &"h").is_ok());
    }

    #[test]
    fn recovery_classifies_messages() {
        let mut table = MessageTable::default();
        let base = StoredMessage {
            id: 1,
            enqueue_ms: 0,
            visible_at_ms: 0,
            dequeue_count: 0,
            first_dequeue_ms: 0,
            receipt_nonce: 0,
            deleted: false,
        };
        table.recover(&base, 100);
        table.recover(
            &StoredMessage {
                id: 2,
                visible_at_ms: 500,
                ..base
            },
            100,
        );
        table.recover(
            &StoredMessage {
                id: 3,
                visible_at_ms: 500,
                dequeue_count: 1,
                receipt_nonce: 9,
                ..base
            },
            100,
        );
        table.recover(
            &StoredMessage {
                id: 4,
                deleted: true,
                ..base
            },
            100,
        );
        assert_eq!(
            table.counts(),
            Counts {
                visible: 1,
                delayed: 1,
                in_flight: 1,
                rewindable: 1
            }
        );
        // The handle of the receive before the restart still deletes.
        let handle = ReceiptHandle {
            message_id: 3,
            nonce: 9,
        };
        assert!(matches!(
            table.delete(handle, 200, false, &"h"),
            Ok(Deletion::Deleted { .. })
        ));
    }

    #[test]
    fn stale_timers_are_compacted() {
        let mut table = MessageTable::default();
        for round in 0..10u64 {
            for i in 0..1_000u64 {
                let id = round * 1_000 + i + 1;
                table.insert(id, 0, 0, 0);
            }
            for claimed in table.claim(usize::MAX, 0, VIS, nonces()) {
                table.delete(claimed.handle, 1, false, &"h").unwrap();
            }
        }
        assert!(table.timers.len() <= 2 * MIN_TIMERS_BEFORE_REBUILD);
    }
}
