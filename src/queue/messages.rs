//! The scheduling state of one queue's messages: which are visible, delayed, in flight or kept
//! for rewind, and when the next of them changes. Pure data, no I/O and no clock of its own
//! (every call takes `now`), so it is tested directly.
//!
//! Bodies are not here: they live in storage. Per message this keeps a few integers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::tombstones::{Tombstone, Tombstones};
use super::window::{Window, WindowLimits};
use crate::clock::Millis;
use crate::error::QueueError;
use crate::receipt::ReceiptHandle;
use crate::storage::{KeptRecord, ReceiveRecord, StoredMessage, StoredState};

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
    /// Bytes of its body and attributes as stored (see `Counts::bytes`).
    pub size: u32,
}

/// A deleted message kept for rewind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptMessage {
    pub enqueue_ms: Millis,
    pub first_dequeue_ms: Millis,
    pub dequeue_count: u32,
    /// The nonce of the receive whose handle deleted it, so that handle's retry succeeds and
    /// older ones fail.
    pub receipt_nonce: u64,
    /// Bytes of its body and attributes: a kept message still holds them on disk.
    pub size: u32,
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
    pub body: Option<crate::payload::Payload>,
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
    /// Bytes of the bodies and attributes of the visible, in-flight, delayed and rewindable
    /// messages (what counts against `max_bytes`): changed wherever a count above changes.
    pub bytes: u64,
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
    /// The message was removed; it is now rewindable, a tombstone, or gone.
    Deleted {
        id: u64,
        before: LiveMessage,
        remains: Remains,
    },
    /// This handle's own receive deleted it already: nothing to do, and the retry succeeds.
    AlreadyDeleted,
}

/// What a deleted message leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remains {
    /// Nothing: its row is removed.
    Nothing,
    /// Kept for rewind.
    Kept,
    /// A tombstone until this time (see `tombstones`).
    Tombstone { until_ms: Millis },
}

impl Deletion {
    /// The row of a deleted message as storage keeps it (`None` for [`Deletion::AlreadyDeleted`]).
    pub fn kept_record(&self) -> Option<KeptRecord> {
        match self {
            Self::Deleted { id, before, .. } => Some(KeptRecord {
                id: *id,
                dequeue_count: before.dequeue_count,
                first_dequeue_ms: before.first_dequeue_ms,
                receipt_nonce: before.receipt_nonce,
            }),
            Self::AlreadyDeleted => None,
        }
    }
}

/// What a visibility change did, so that it can be undone if its commit fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisibilityChange {
    pub id: u64,
    pub before: LiveMessage,
    pub after: LiveMessage,
}

impl VisibilityChange {
    /// The message's receive bookkeeping after the change, as storage keeps it: the same receive,
    /// a new `visible_at_ms`.
    pub fn record(&self) -> ReceiveRecord {
        ReceiveRecord {
            id: self.id,
            visible_at_ms: self.after.visible_at_ms,
            dequeue_count: self.after.dequeue_count,
            first_dequeue_ms: self.after.first_dequeue_ms,
            receipt_nonce: self.after.receipt_nonce,
        }
    }
}

/// A visible message as PeekMessages shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peeked {
    pub id: u64,
    pub enqueue_ms: Millis,
    /// 0 when never received.
    pub first_dequeue_ms: Millis,
    pub dequeue_count: u32,
}

/// Messages a claim takes out for the dead-letter queue, at most (see `claim_or_dead_letter`).
pub const MAX_DEAD_LETTERS_PER_CLAIM: usize = 1_024;

/// When a visible message goes to the dead-letter queue instead of to a receiver.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetterRule {
    /// Received this many times already: moved.
    pub max_receive_count: u32,
    /// Enqueued at or before this instant: moved (the policy's time to live); None when off.
    pub enqueued_by_ms: Option<Millis>,
}

impl DeadLetterRule {
    fn is_due(&self, message: &LiveMessage) -> bool {
        message.dequeue_count >= self.max_receive_count
            || self
                .enqueued_by_ms
                .is_some_and(|by| message.enqueue_ms <= by)
    }
}

/// What a claim took: messages for the receiver, and messages for the dead-letter queue.
#[derive(Debug, Default)]
pub struct Claim {
    pub claimed: Vec<Claimed>,
    /// Taken out of the table; the caller moves them, or puts them back if it cannot.
    pub dead_letters: Vec<(u64, LiveMessage)>,
}

/// How a queue deletes: what its attributes say a deleted message leaves behind.
#[derive(Clone, Copy, Debug)]
pub struct DeletePolicy {
    /// Rewind is on: deleted messages stay, rewindable.
    pub keep_for_rewind: bool,
    /// How long a tombstone lasts (see `tombstones`).
    pub tombstone_ms: Millis,
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
    /// The queue incarnation whose messages these are; named by every receipt handle.
    queue_id: u64,
    /// Undeleted messages by id; ids grow with enqueue time, so the first is the oldest.
    live: BTreeMap<u64, LiveMessage>,
    /// Deleted messages kept for rewind, by id.
    kept: BTreeMap<u64, KeptMessage>,
    /// Ids of the visible messages, so the oldest is found at once.
    visible: BTreeSet<u64>,
    /// (instant, id) at which a delayed or in-flight message becomes visible. Entries are not
    /// removed when a message changes; one that no longer matches is skipped when it comes up.
    timers: BinaryHeap<Reverse<(Millis, u64)>>,
    /// Messages deleted after more than one receive, remembered for a while.
    tombstones: Tombstones,
    /// Tombstones dropped early to stay bounded, whose rows `advance` hands back for removal.
    dropped_tombstones: Vec<u64>,
    /// The counts of what is in memory; `counts()` adds the spilled messages.
    counts: Counts,
    /// Which visible messages are in memory and which only in storage (see `window`).
    window: Window,
}

/// Rebuild the timer heap once stale entries outnumber live ones by this factor, so a queue
/// with long visibility timeouts and quick deletes does not grow it without bound.
const STALE_TIMER_FACTOR: usize = 2;
const MIN_TIMERS_BEFORE_REBUILD: usize = 1_024;

impl MessageTable {
    /// An empty table for the queue with this id.
    pub fn new(queue_id: u64) -> Self {
        Self {
            queue_id,
            ..Self::default()
        }
    }

    /// An empty table for the queue with this id, keeping only a window of its visible
    /// messages in memory.
    pub fn with_window(queue_id: u64, limits: WindowLimits) -> Self {
        Self {
            queue_id,
            window: Window::new(limits),
            ..Self::default()
        }
    }

    /// The counts of every message, spilled ones (visible, in storage only) included.
    pub fn counts(&self) -> Counts {
        Counts {
            visible: self.counts.visible + self.window.spilled(),
            bytes: self.counts.bytes + self.window.spilled_bytes(),
            ..self.counts
        }
    }

    /// Visible messages in memory.
    pub fn visible_in_memory(&self) -> u64 {
        self.counts.visible
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    pub fn window_mut(&mut self) -> &mut Window {
        &mut self.window
    }

    /// Tells the total window budget how many visible messages this table holds now.
    pub fn settle_window(&mut self) {
        self.window.settle(self.counts.visible);
    }

    /// Whether memory holds `id` in any form (live, kept, tombstone).
    pub fn holds(&self, id: u64) -> bool {
        self.live.contains_key(&id)
            || self.kept.contains_key(&id)
            || self.tombstones.get(id).is_some()
    }

    /// Takes in messages a slice read brought from storage (see `window::finish_read`).
    pub fn take_slice(&mut self, messages: &[StoredMessage], now: Millis) {
        for message in messages {
            self.recover(message, now);
        }
    }

    /// Enqueue time of the oldest undeleted message.
    pub fn oldest_live_enqueue_ms(&self) -> Option<Millis> {
        let in_memory = self.live.first_key_value().map(|(_, m)| m.enqueue_ms);
        in_memory
            .into_iter()
            .chain(self.window.first_spilled_ms())
            .min()
    }

    /// Adds a newly sent message of `size` bytes (body and attributes). Returns whether memory
    /// holds it: a visible message past a full window stays in storage only (spilled).
    pub fn insert(
        &mut self,
        id: u64,
        enqueue_ms: Millis,
        visible_at_ms: Millis,
        now: Millis,
        size: u32,
    ) -> bool {
        let phase = if visible_at_ms > now {
            Phase::Delayed
        } else {
            Phase::Visible
        };
        if phase == Phase::Visible
            && !self.live.contains_key(&id)
            && self.window.spills(id, self.counts.visible)
        {
            let held_above = self.live.range(id..).map(|(&held, _)| held);
            self.window.spill(id, enqueue_ms, size, held_above);
            return false;
        }
        self.put_live(
            id,
            LiveMessage {
                enqueue_ms,
                visible_at_ms,
                first_dequeue_ms: 0,
                receipt_nonce: 0,
                dequeue_count: 0,
                phase,
                size,
            },
        );
        true
    }

    /// Adds a message read back from storage (at startup, or a slice of a spilled backlog).
    pub fn recover(&mut self, stored: &StoredMessage, now: Millis) {
        match stored.state {
            StoredState::Live => {}
            StoredState::Kept => {
                self.kept.insert(
                    stored.id,
                    KeptMessage {
                        enqueue_ms: stored.enqueue_ms,
                        first_dequeue_ms: stored.first_dequeue_ms,
                        dequeue_count: stored.dequeue_count,
                        receipt_nonce: stored.receipt_nonce,
                        size: stored.size,
                    },
                );
                self.counts.rewindable += 1;
                self.counts.bytes += u64::from(stored.size);
                return;
            }
            StoredState::Tombstone => {
                // One past its time is removed by the next `advance`.
                self.tombstones.insert(
                    stored.id,
                    Tombstone {
                        receipt_nonce: stored.receipt_nonce,
                        receive_count: stored.dequeue_count,
                        until_ms: stored.visible_at_ms,
                    },
                );
                return;
            }
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
                size: stored.size,
            },
        );
    }

    fn put_live(&mut self, id: u64, message: LiveMessage) {
        self.window.note(id);
        self.counts.bytes += u64::from(message.size);
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
        self.counts.bytes -= u64::from(message.size);
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

    /// The ids of every message that has a row: live, kept or tombstone.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live
            .keys()
            .chain(self.kept.keys())
            .copied()
            .chain(self.tombstones.ids())
    }

    /// Whether a receive can take a message now (a visible one in memory, within the window).
    pub fn has_visible(&self) -> bool {
        self.visible
            .first()
            .is_some_and(|&id| self.window.claimable(id))
    }

    /// Whether receives must wait for a slice of the spilled backlog (see `Window::must_wait`).
    pub fn must_wait_for_window(&self, now: Millis) -> bool {
        self.window.must_wait(self.has_visible(), now)
    }

    /// Ids of the visible messages a receive may take, oldest first: the order receives take
    /// them in.
    pub fn visible_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.visible
            .iter()
            .copied()
            .take_while(|&id| self.window.claimable(id))
    }

    pub fn is_visible(&self, id: u64) -> bool {
        self.visible.contains(&id)
    }

    /// Receives up to `max` visible messages, oldest first: each becomes in flight until
    /// `now + visibility_ms`, with a fresh nonce from `nonce`.
    #[cfg(test)]
    pub fn claim(
        &mut self,
        max: usize,
        now: Millis,
        visibility_ms: Millis,
        nonce: impl FnMut() -> u64,
    ) -> Vec<Claimed> {
        self.claim_or_dead_letter(max, now, visibility_ms, nonce, None)
            .claimed
    }

    /// [`Self::claim`] under a dead-letter policy: a visible message the policy says is done
    /// (received `max_receive_count` times, or older than its time to live) is taken out of
    /// the table instead of being claimed, for its move to the dead-letter queue, and the claim
    /// goes on with the next one. At most [`MAX_DEAD_LETTERS_PER_CLAIM`] are taken at once, so
    /// that one move stays one short commit.
    pub fn claim_or_dead_letter(
        &mut self,
        max: usize,
        now: Millis,
        visibility_ms: Millis,
        mut nonce: impl FnMut() -> u64,
        rule: Option<DeadLetterRule>,
    ) -> Claim {
        let mut claimed = Vec::with_capacity(max.min(self.visible.len()));
        let mut dead_letters = Vec::new();
        while claimed.len() < max {
            let Some(&id) = self.visible.first() else {
                break;
            };
            if !self.window.claimable(id) {
                // Spilled messages come before it: after the next slice.
                break;
            }
            if let Some(rule) = rule
                && let Some(message) = self.live.get(&id)
                && rule.is_due(message)
            {
                if dead_letters.len() >= MAX_DEAD_LETTERS_PER_CLAIM {
                    break;
                }
                if let Some(message) = self.take_live(id) {
                    dead_letters.push((id, message));
                }
                continue;
            }
            self.visible.pop_first();
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
                    queue_id: self.queue_id,
                    message_id: id,
                    nonce: message.receipt_nonce,
                    receive_count: message.dequeue_count,
                },
                enqueue_ms: message.enqueue_ms,
                first_dequeue_ms: message.first_dequeue_ms,
                visible_at_ms: message.visible_at_ms,
                dequeue_count: message.dequeue_count,
                body: None,
            });
        }
        self.compact_timers();
        Claim {
            claimed,
            dead_letters,
        }
    }

    /// Adds a message moved here from another queue (dead-lettered or redriven): visible at
    /// once, never received here. Returns whether it was new here. Always held in memory,
    /// window or not: its row may have any id, and one at or below the window's end must be.
    pub fn adopt(&mut self, id: u64, enqueue_ms: Millis, now: Millis, size: u32) -> bool {
        if self.live.contains_key(&id) {
            self.window.adopted_after_load(size);
            return false;
        }
        self.put_live(
            id,
            LiveMessage {
                enqueue_ms,
                visible_at_ms: now,
                first_dequeue_ms: 0,
                receipt_nonce: 0,
                dequeue_count: 0,
                phase: Phase::Visible,
                size,
            },
        );
        true
    }

    /// Takes a visible message out, for a move to another queue (a redrive).
    pub fn take_visible(&mut self, id: u64) -> Option<LiveMessage> {
        if !self.visible.contains(&id) {
            return None;
        }
        self.take_live(id)
    }

    /// Puts back a message taken out for a move whose commit failed: visible again.
    pub fn put_back(&mut self, id: u64, message: LiveMessage) {
        if !self.live.contains_key(&id) {
            self.put_live(
                id,
                LiveMessage {
                    phase: Phase::Visible,
                    receipt_nonce: 0,
                    ..message
                },
            );
        }
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
    /// expired. The caller has checked that the handle is authentic and names this queue.
    ///
    /// For a message that is no longer here, only the handle of the receive that deleted it
    /// succeeds (a retry); any other fails as stale. Which receive deleted it is known from the
    /// kept message (rewind), its tombstone (deleted after more than one receive), or, with
    /// neither, from the handle itself: a handle of a first receive is the only handle such a
    /// message ever had. Past a tombstone's time, that last rule may answer OK to the handle of
    /// an older first receive; tombstones outlive the visibility timeout for that reason.
    pub fn delete(
        &mut self,
        handle: ReceiptHandle,
        now: Millis,
        policy: DeletePolicy,
        field: &dyn std::fmt::Display,
    ) -> Result<Deletion, QueueError> {
        let id = handle.message_id;
        let Some(message) = self.live.get(&id) else {
            let deleting_receive = match (self.kept.get(&id), self.tombstones.get(id)) {
                (Some(kept), _) => Some(kept.receipt_nonce),
                (None, Some(tombstone)) => Some(tombstone.receipt_nonce),
                (None, None) => None,
            };
            return match deleting_receive {
                Some(nonce) if nonce == handle.nonce => Ok(Deletion::AlreadyDeleted),
                Some(_) => Err(QueueError::StaleReceipt(format!(
                    "{field} is not the newest receipt handle of message {id}: the message was \
                     received again since, and deleted through that newer receive"
                ))),
                None if handle.receive_count <= 1 => Ok(Deletion::AlreadyDeleted),
                None => Err(QueueError::StaleReceipt(format!(
                    "{field} names message {id}, which is no longer in the queue (deleted \
                     through another receive, or its retention ended)"
                ))),
            };
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
        Ok(self
            .remove_live(id, now, policy)
            .unwrap_or(Deletion::AlreadyDeleted))
    }

    /// Removes a live message as a delete through its newest receive does; `None` if `id` is
    /// not live.
    fn remove_live(&mut self, id: u64, now: Millis, policy: DeletePolicy) -> Option<Deletion> {
        let before = self.take_live(id)?;
        let remains = if policy.keep_for_rewind {
            self.keep(id, &before);
            Remains::Kept
        } else if before.dequeue_count > 1 {
            let until_ms = now + policy.tombstone_ms;
            let dropped = self.tombstones.insert(
                id,
                Tombstone {
                    receipt_nonce: before.receipt_nonce,
                    receive_count: before.dequeue_count,
                    until_ms,
                },
            );
            self.dropped_tombstones.extend(dropped);
            Remains::Tombstone { until_ms }
        } else {
            Remains::Nothing
        };
        Some(Deletion::Deleted {
            id,
            before,
            remains,
        })
    }

    /// Removes every live message (visible, delayed, in flight) as if each had been deleted
    /// through its newest receive: so that receive's handle then deletes as a retry would, older
    /// handles fail, and with rewind on they stay rewindable.
    pub fn purge(&mut self, now: Millis, policy: DeletePolicy) -> Vec<Deletion> {
        let ids: Vec<u64> = self.live.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.remove_live(id, now, policy))
            .collect()
    }

    /// Makes the message named by `handle` visible again `visibility_ms` from now (at once for
    /// 0), if the handle is its newest receive and has not expired: the rules of [`Self::delete`]
    /// for a live message. The handle stays the newest; the receive's count does not change.
    pub fn change_visibility(
        &mut self,
        handle: ReceiptHandle,
        now: Millis,
        visibility_ms: Millis,
        field: &dyn std::fmt::Display,
    ) -> Result<VisibilityChange, QueueError> {
        let id = handle.message_id;
        let Some(message) = self.live.get(&id) else {
            return Err(QueueError::StaleReceipt(format!(
                "{field} names message {id}, which is no longer in the queue (deleted, or its \
                 retention ended)"
            )));
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
        let after = LiveMessage {
            visible_at_ms: now + visibility_ms,
            phase: if visibility_ms == 0 {
                Phase::Visible
            } else {
                Phase::InFlight
            },
            ..before
        };
        self.take_live(id);
        self.put_live(id, after);
        // The old deadline's timer entry is stale now; long heartbeats must not pile them up.
        self.compact_timers();
        Ok(VisibilityChange { id, before, after })
    }

    /// Puts back a message whose visibility change could not be committed, unless something
    /// changed it since (a receive after a nack): then that newer state stands.
    pub fn undo_visibility(&mut self, change: VisibilityChange) {
        if self.live.get(&change.id) == Some(&change.after) {
            self.take_live(change.id);
            self.put_live(change.id, change.before);
        }
    }

    /// Up to `max` visible messages, in the order `claim` would take them; changes nothing.
    pub fn peek(&self, max: usize) -> Vec<Peeked> {
        self.visible_ids()
            .take(max)
            .filter_map(|id| {
                let message = self.live.get(&id)?;
                Some(Peeked {
                    id,
                    enqueue_ms: message.enqueue_ms,
                    first_dequeue_ms: message.first_dequeue_ms,
                    dequeue_count: message.dequeue_count,
                })
            })
            .collect()
    }

    fn keep(&mut self, id: u64, message: &LiveMessage) {
        self.kept.insert(
            id,
            KeptMessage {
                enqueue_ms: message.enqueue_ms,
                first_dequeue_ms: message.first_dequeue_ms,
                dequeue_count: message.dequeue_count,
                receipt_nonce: message.receipt_nonce,
                size: message.size,
            },
        );
        self.counts.rewindable += 1;
        self.counts.bytes += u64::from(message.size);
    }

    /// Puts back a message whose delete could not be committed.
    pub fn undo_delete(&mut self, deletion: Deletion) {
        if let Deletion::Deleted {
            id,
            before,
            remains,
        } = deletion
        {
            match remains {
                Remains::Kept => {
                    if let Some(kept) = self.kept.remove(&id) {
                        self.counts.rewindable -= 1;
                        self.counts.bytes -= u64::from(kept.size);
                    }
                }
                Remains::Tombstone { .. } => self.tombstones.remove(id),
                Remains::Nothing => {}
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
            let size = message.size;
            self.kept.remove(&id);
            self.counts.rewindable -= 1;
            self.counts.bytes -= u64::from(size);
            advanced.expired.push(id);
        }
        self.tombstones.expire(now, &mut advanced.expired);
        advanced.expired.append(&mut self.dropped_tombstones);
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
        let tombstone = self.tombstones.next_expiry_ms();
        let dropped = (!self.dropped_tombstones.is_empty()).then_some(Millis::MIN);
        [timer, retention, tombstone, dropped]
            .into_iter()
            .flatten()
            .min()
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
                self.counts.bytes -= u64::from(kept.size);
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
                        size: kept.size,
                    },
                );
            }
        }
        restored
    }

    /// Forgets every kept message (rewind turned off); returns their ids.
    pub fn drop_kept(&mut self) -> Vec<u64> {
        self.counts.rewindable = 0;
        let kept = std::mem::take(&mut self.kept);
        self.counts.bytes -= kept.values().map(|m| u64::from(m.size)).sum::<u64>();
        kept.into_keys().collect()
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
    const TOMBSTONE: Millis = 60_000;
    const DROP: DeletePolicy = DeletePolicy {
        keep_for_rewind: false,
        tombstone_ms: TOMBSTONE,
    };
    const KEEP: DeletePolicy = DeletePolicy {
        keep_for_rewind: true,
        tombstone_ms: TOMBSTONE,
    };

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
        table.insert(1, 100, 100, 100, 0);
        table.insert(2, 101, 5_000, 101, 0); // delayed
        table.insert(3, 102, 102, 102, 0);
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
        table.insert(7, 0, 0, 0, 0);
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
            table.delete(first.handle, now, DROP, &"h"),
            Err(QueueError::StaleReceipt(_))
        ));
        assert!(matches!(
            table.delete(second.handle, now, DROP, &"h"),
            Ok(Deletion::Deleted { .. })
        ));
        assert_eq!(
            table.delete(second.handle, now, DROP, &"h"),
            Ok(Deletion::AlreadyDeleted)
        );
        assert_eq!(table.counts(), Counts::default());
    }

    #[test]
    fn expired_handle_is_refused() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        // Not yet advanced, but the deadline has passed: still refused.
        assert!(matches!(
            table.delete(claimed.handle, VIS, DROP, &"h"),
            Err(QueueError::StaleReceipt(m)) if m.contains("expired")
        ));
    }

    #[test]
    fn release_makes_visible_at_once() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        assert!(table.release(claimed.handle));
        assert_eq!(table.counts().visible, 1);
        assert!(!table.release(claimed.handle));
    }

    #[test]
    fn retention_removes_live_and_kept() {
        let mut table = MessageTable::default();
        table.insert(1, 0, 0, 0, 0);
        table.insert(2, 10, 10, 10, 0);
        let claimed = table.claim(1, 20, VIS, nonces())[0].clone();
        table.delete(claimed.handle, 30, KEEP, &"h").unwrap();
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
            table.insert(id, id as Millis * 100, 0, 0, 0);
        }
        for claimed in table.claim(3, 400, VIS, nonces()) {
            table.delete(claimed.handle, 500, KEEP, &"h").unwrap();
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
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        let deletion = table.delete(claimed.handle, 1, KEEP, &"h").unwrap();
        table.undo_delete(deletion);
        assert_eq!(
            table.counts(),
            Counts {
                in_flight: 1,
                ..Default::default()
            }
        );
        assert!(table.delete(claimed.handle, 2, DROP, &"h").is_ok());
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
            state: StoredState::Live,
            size: 0,
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
                state: StoredState::Kept,
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
                rewindable: 1,
                bytes: 0,
            }
        );
        // The handle of the receive before the restart still deletes.
        let handle = ReceiptHandle {
            queue_id: 0,
            message_id: 3,
            nonce: 9,
            receive_count: 1,
        };
        assert!(matches!(
            table.delete(handle, 200, DROP, &"h"),
            Ok(Deletion::Deleted { .. })
        ));
    }

    #[test]
    fn stale_timers_are_compacted() {
        let mut table = MessageTable::default();
        for round in 0..10u64 {
            for i in 0..1_000u64 {
                let id = round * 1_000 + i + 1;
                table.insert(id, 0, 0, 0, 0);
            }
            for claimed in table.claim(usize::MAX, 0, VIS, nonces()) {
                table.delete(claimed.handle, 1, DROP, &"h").unwrap();
            }
        }
        assert!(table.timers.len() <= 2 * MIN_TIMERS_BEFORE_REBUILD);
    }

    /// Receives message 1 twice (the first receive's timeout passing), returning both claims.
    fn received_twice(table: &mut MessageTable) -> (Claimed, Claimed) {
        table.insert(1, 0, 0, 0, 0);
        let first = table.claim(1, 0, VIS, || 11)[0].clone();
        table.advance(VIS, RETENTION);
        let second = table.claim(1, VIS, VIS, || 22)[0].clone();
        assert_eq!(
            (first.handle.receive_count, second.handle.receive_count),
            (1, 2)
        );
        (first, second)
    }

    #[test]
    fn only_the_deleting_receive_succeeds_after_a_delete() {
        for policy in [DROP, KEEP] {
            let mut table = MessageTable::new(5);
            let (first, second) = received_twice(&mut table);
            assert_eq!(first.handle.queue_id, 5);
            let now = VIS + 1;
            assert!(matches!(
                table.delete(second.handle, now, policy, &"h"),
                Ok(Deletion::Deleted { .. })
            ));
            // The older handle fails after the delete too (the order in a batch does not
            // matter), and the deleting one's retry succeeds.
            assert!(matches!(
                table.delete(first.handle, now, policy, &"h"),
                Err(QueueError::StaleReceipt(m)) if m.contains("newer receive")
            ));
            assert_eq!(
                table.delete(second.handle, now, policy, &"h"),
                Ok(Deletion::AlreadyDeleted)
            );
        }
    }

    #[test]
    fn a_first_receive_leaves_no_tombstone() {
        let mut table = MessageTable::new(1);
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        let deletion = table.delete(claimed.handle, 1, DROP, &"h").unwrap();
        assert!(matches!(
            deletion,
            Deletion::Deleted {
                remains: Remains::Nothing,
                ..
            }
        ));
        assert_eq!(table.ids().count(), 0);
        assert_eq!(
            table.delete(claimed.handle, 2, DROP, &"h"),
            Ok(Deletion::AlreadyDeleted)
        );
    }

    #[test]
    fn tombstones_expire_and_their_rows_go() {
        let mut table = MessageTable::new(1);
        let (first, second) = received_twice(&mut table);
        let now = VIS + 1;
        let deletion = table.delete(second.handle, now, DROP, &"h").unwrap();
        assert_eq!(
            deletion,
            Deletion::Deleted {
                id: 1,
                before: LiveMessage {
                    enqueue_ms: 0,
                    visible_at_ms: 2 * VIS,
                    // 0 means "never received", so the claim at 0 did not set it.
                    first_dequeue_ms: VIS,
                    receipt_nonce: 22,
                    dequeue_count: 2,
                    phase: Phase::InFlight,
                    size: 0,
                },
                remains: Remains::Tombstone {
                    until_ms: now + TOMBSTONE
                },
            }
        );
        assert_eq!(table.ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(table.counts(), Counts::default());
        let due = now + TOMBSTONE;
        // A stale timer comes first; the tombstone is the next change after it.
        table.advance(2 * VIS, RETENTION);
        assert_eq!(table.next_change_ms(RETENTION), Some(due));
        assert_eq!(table.advance(due, RETENTION).expired, vec![1]);
        assert_eq!(table.ids().count(), 0);
        // Past its tombstone, a message's second-receive handle can no longer tell.
        assert!(table.delete(second.handle, due, DROP, &"h").is_err());
        assert_eq!(
            table.delete(first.handle, due, DROP, &"h"),
            Ok(Deletion::AlreadyDeleted)
        );
    }

    #[test]
    fn undo_delete_forgets_the_tombstone() {
        let mut table = MessageTable::new(1);
        let (_, second) = received_twice(&mut table);
        let deletion = table.delete(second.handle, VIS + 1, DROP, &"h").unwrap();
        table.undo_delete(deletion);
        assert_eq!(table.counts().in_flight, 1);
        assert_eq!(table.ids().collect::<Vec<_>>(), vec![1]);
        assert!(table.delete(second.handle, VIS + 2, DROP, &"h").is_ok());
    }

    #[test]
    fn recovered_tombstones_still_refuse_older_handles() {
        let mut table = MessageTable::new(1);
        table.recover(
            &StoredMessage {
                id: 8,
                enqueue_ms: 0,
                visible_at_ms: 500,
                dequeue_count: 3,
                first_dequeue_ms: 0,
                receipt_nonce: 77,
                state: StoredState::Tombstone,
                size: 0,
            },
            100,
        );
        assert_eq!(table.counts(), Counts::default());
        let handle = |nonce, receive_count| ReceiptHandle {
            queue_id: 1,
            message_id: 8,
            nonce,
            receive_count,
        };
        assert!(table.delete(handle(5, 2), 200, DROP, &"h").is_err());
        assert_eq!(
            table.delete(handle(77, 3), 200, DROP, &"h"),
            Ok(Deletion::AlreadyDeleted)
        );
        assert_eq!(table.next_change_ms(RETENTION), Some(500));
    }

    #[test]
    fn a_heartbeat_extends_and_the_handle_stays_the_newest() {
        let mut table = MessageTable::new(1);
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        let change = table
            .change_visibility(claimed.handle, 10, 5 * VIS, &"h")
            .unwrap();
        assert_eq!(change.after.visible_at_ms, 10 + 5 * VIS);
        assert_eq!(change.record().receipt_nonce, claimed.handle.nonce);
        // The original deadline passes: still in flight, the handle still works.
        table.advance(VIS + 1, RETENTION);
        assert_eq!(table.counts().in_flight, 1);
        assert!(table.claim(1, VIS + 1, VIS, nonces()).is_empty());
        assert!(
            table
                .change_visibility(claimed.handle, VIS + 2, VIS, &"h")
                .is_ok()
        );
        assert!(matches!(
            table.delete(claimed.handle, VIS + 3, DROP, &"h"),
            Ok(Deletion::Deleted { .. })
        ));
    }

    #[test]
    fn a_nack_makes_visible_at_once_and_expires_the_handle() {
        let mut table = MessageTable::new(1);
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        table.change_visibility(claimed.handle, 5, 0, &"h").unwrap();
        assert_eq!(table.counts().visible, 1);
        assert!(matches!(
            table.change_visibility(claimed.handle, 5, VIS, &"h"),
            Err(QueueError::StaleReceipt(m)) if m.contains("expired")
        ));
        assert!(table.delete(claimed.handle, 5, DROP, &"h").is_err());
        let again = table.claim(1, 6, VIS, nonces());
        assert_eq!(again[0].dequeue_count, 2);
        // A shortened timeout fires at its new time, not the old one.
        table
            .change_visibility(again[0].handle, 7, 1_000, &"h")
            .unwrap();
        assert_eq!(table.next_change_ms(RETENTION), Some(1_007));
        assert_eq!(table.advance(1_007, RETENTION).became_visible, 1);
    }

    #[test]
    fn visibility_changes_follow_the_receipt_rules() {
        let mut table = MessageTable::new(1);
        let (first, second) = received_twice(&mut table);
        assert!(matches!(
            table.change_visibility(first.handle, VIS + 1, VIS, &"h"),
            Err(QueueError::StaleReceipt(m)) if m.contains("newest")
        ));
        // Expired without `advance` having run yet.
        assert!(
            table
                .change_visibility(second.handle, 2 * VIS, VIS, &"h")
                .is_err()
        );
        table.delete(second.handle, VIS + 1, DROP, &"h").unwrap();
        assert!(matches!(
            table.change_visibility(second.handle, VIS + 2, VIS, &"h"),
            Err(QueueError::StaleReceipt(m)) if m.contains("no longer")
        ));
    }

    #[test]
    fn undo_visibility_restores_unless_received_since() {
        let mut table = MessageTable::new(1);
        table.insert(1, 0, 0, 0, 0);
        let claimed = table.claim(1, 0, VIS, nonces())[0].clone();
        let change = table.change_visibility(claimed.handle, 1, 0, &"h").unwrap();
        table.undo_visibility(change);
        assert_eq!(table.counts().in_flight, 1);
        assert_eq!(table.next_change_ms(RETENTION), Some(VIS));
        // Nacked and received again before the undo: the new receive stands.
        let change = table.change_visibility(claimed.handle, 1, 0, &"h").unwrap();
        let again = table.claim(1, 2, VIS, || 77)[0].clone();
        table.undo_visibility(change);
        assert_eq!(table.live[&1].receipt_nonce, again.handle.nonce);
        assert_eq!(table.live[&1].visible_at_ms, 2 + VIS);
    }

    #[test]
    fn purge_removes_every_live_message_as_deletes_do() {
        for policy in [DROP, KEEP] {
            let mut table = MessageTable::new(1);
            let (first, second) = received_twice(&mut table); // message 1, in flight
            table.insert(2, 1, 1, 1, 0); // visible
            table.insert(3, 2, 10 * VIS, 2, 0); // delayed
            let deletions = table.purge(VIS + 1, policy);
            assert_eq!(deletions.len(), 3);
            assert_eq!(table.counts().backlog(), 0);
            assert!(!table.has_visible());
            // As after a delete through the newest receive.
            assert_eq!(
                table.delete(second.handle, VIS + 2, policy, &"h"),
                Ok(Deletion::AlreadyDeleted)
            );
            assert!(table.delete(first.handle, VIS + 2, policy, &"h").is_err());
            if policy.keep_for_rewind {
                assert_eq!(table.counts().rewindable, 3);
                assert_eq!(table.restore(&table.kept_since(0)), 3);
                assert_eq!(table.counts().visible, 3);
            } else {
                assert_eq!(table.counts().rewindable, 0);
            }
            for deletion in deletions.into_iter().rev() {
                table.undo_delete(deletion);
            }
        }
    }

    #[test]
    fn peek_shows_the_receive_order_and_changes_nothing() {
        let mut table = MessageTable::new(1);
        table.insert(3, 30, 30, 30, 0);
        table.insert(1, 10, 10, 10, 0);
        table.insert(2, 20, 10_000, 20, 0); // delayed
        let before = table.counts();
        let peeked = table.peek(16);
        assert_eq!(peeked.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(peeked[0].dequeue_count, 0);
        assert_eq!(table.peek(1).len(), 1);
        assert_eq!(table.counts(), before);
        let claimed = table.claim(16, 40, VIS, nonces());
        assert_eq!(
            claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
            peeked.iter().map(|p| p.id).collect::<Vec<_>>()
        );
    }

    /// The byte count follows the messages through every change of state: sends, receives,
    /// deletes (kept for rewind or not), undone deletes, rewinds, purges, retention, and rewind
    /// turned off.
    #[test]
    fn bytes_follow_the_messages() {
        let mut table = MessageTable::new(1);
        table.insert(1, 0, 0, 0, 100);
        table.insert(2, 0, 10 * VIS, 0, 30); // delayed
        table.insert(3, 1, 1, 1, 7);
        assert_eq!(table.counts().bytes, 137);
        let claimed = table.claim(1, 2, VIS, nonces()).remove(0);
        assert_eq!((claimed.id, table.counts().bytes), (1, 137));
        let deletion = table.delete(claimed.handle, 3, KEEP, &"h").unwrap();
        assert_eq!(
            table.counts().bytes,
            137,
            "a rewindable message keeps its bytes"
        );
        table.undo_delete(deletion);
        assert_eq!(table.counts().bytes, 137);
        table.delete(claimed.handle, 3, DROP, &"h").unwrap();
        assert_eq!(table.counts().bytes, 37);
        let again = table.claim(1, 4, VIS, nonces()).remove(0);
        table.delete(again.handle, 5, KEEP, &"h").unwrap();
        assert_eq!(table.restore(&table.kept_since(0)), 1);
        assert_eq!(table.counts().bytes, 37);
        let purged = table.purge(6, KEEP);
        assert_eq!((purged.len(), table.counts().bytes), (2, 37));
        assert_eq!(table.drop_kept().len(), 2);
        assert_eq!(table.counts().bytes, 0);
        table.insert(4, 10, 10, 10, 5);
        let kept = table.claim(1, 11, VIS, nonces()).remove(0);
        table.delete(kept.handle, 12, KEEP, &"h").unwrap();
        table.insert(5, 20, 20, 20, 6);
        assert_eq!(table.counts().bytes, 11);
        let advanced = table.advance(10 + RETENTION, RETENTION);
        assert_eq!(advanced.expired, vec![4]);
        assert_eq!(table.counts().bytes, 6);
        table.advance(20 + RETENTION, RETENTION);
        assert_eq!(table.counts(), Counts::default());
    }
}
