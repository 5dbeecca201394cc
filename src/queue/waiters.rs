//! Long polls and consumer streams parked on a queue: served first come, first served, a long
//! poll until its deadline, a stream's claim until its client goes (it has no deadline).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use tokio::sync::oneshot;

use crate::clock::Millis;
use crate::error::QueueError;
use crate::queue::messages::Claimed;

pub type ReceiveReply = oneshot::Sender<Result<Vec<Claimed>, QueueError>>;

pub struct Waiter {
    pub max_messages: usize,
    pub visibility_ms: Millis,
    pub respond_to: ReceiveReply,
}

#[derive(Default)]
pub struct Waiters {
    /// By arrival: the smallest sequence number is served first.
    parked: BTreeMap<u64, Waiter>,
    /// (deadline, sequence number). Entries of waiters served already are skipped when they
    /// come up.
    deadlines: BinaryHeap<Reverse<(Millis, u64)>>,
    next_seq: u64,
    /// When `parked` reaches this size, waiters whose receiver has gone are swept out, so a
    /// crowd of abandoned polls does not pile up until its deadlines.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 64;

impl Waiters {
    /// Parks `waiter` behind every waiter parked before; `None`: it waits until served or its
    /// receiver goes (a consumer stream's claim).
    pub fn park(&mut self, waiter: Waiter, deadline_ms: Option<Millis>) {
        if self.parked.len() >= self.sweep_at.max(MIN_SWEEP) {
            self.parked.retain(|_, w| !w.respond_to.is_closed());
            self.sweep_at = self.parked.len() * 2;
            if self.deadlines.len() > 2 * self.parked.len() + MIN_SWEEP {
                let parked = &self.parked;
                self.deadlines
                    .retain(|Reverse((_, seq))| parked.contains_key(seq));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.parked.insert(seq, waiter);
        if let Some(deadline_ms) = deadline_ms {
            self.deadlines.push(Reverse((deadline_ms, seq)));
        }
    }

    /// The oldest waiter whose receiver is still there, with its place in line (for
    /// [`Self::put_back`]).
    pub fn pop_first_in_line(&mut self) -> Option<(u64, Waiter)> {
        while let Some((seq, waiter)) = self.parked.pop_first() {
            if !waiter.respond_to.is_closed() {
                return Some((seq, waiter));
            }
        }
        None
    }

    /// Puts a waiter back in its place in line, its deadline unchanged: it was taken to be
    /// served, but what was visible went to the dead-letter queue instead.
    pub fn put_back(&mut self, seq: u64, waiter: Waiter) {
        self.parked.insert(seq, waiter);
    }

    /// Waiters whose deadline is at or before `now`: their polls end empty.
    pub fn expire(&mut self, now: Millis) -> Vec<Waiter> {
        let mut expired = Vec::new();
        while let Some(&Reverse((deadline, seq))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(waiter) = self.parked.remove(&seq) {
                expired.push(waiter);
            }
        }
        expired
    }

    pub fn next_deadline_ms(&self) -> Option<Millis> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Every waiter still parked (for ending them when the queue goes away).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.deadlines.clear();
        std::mem::take(&mut self.parked).into_values()
    }

    /// Waiters whose receiver is still there.
    pub fn open_count(&self) -> usize {
        self.parked
            .values()
            .filter(|w| !w.respond_to.is_closed())
            .count()
    }
}
