//! Bodies of messages that have not been received yet, kept in memory so that the first
//! receive of a fresh message needs no storage read.
//!
//! In steady traffic a message is usually received moments after its send, and reading its
//! body back from SQLite costs a blocking-thread hop, a read transaction and a lookup per
//! message. The body was in memory at the send, so the actor keeps it until the message's
//! first receive takes it (or its retention ends). Storage stays the source of truth: a body
//! not in the cache (the budget was full, the server restarted, a second receive, a rewind)
//! is read from storage as before.
//!
//! One byte budget is shared by every queue of the server, so memory stays bounded whatever the
//! backlog: once it is spent, new bodies are simply not kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::payload::Payload;

/// What one cached body costs beyond its bytes: the map entry and the allocation's header.
pub const ENTRY_OVERHEAD: usize = 64;

/// The server-wide budget for cached bodies, in bytes.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn refund(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One queue's cached bodies, charged to the shared budget (and refunded when dropped).
pub struct BodyCache {
    budget: Arc<BodyBudget>,
    bodies: HashMap<u64, Payload>,
    charged: usize,
}

fn cost(body: &Payload) -> usize {
    body.size() + ENTRY_OVERHEAD
}

impl BodyCache {
    pub fn new(budget: Arc<BodyBudget>) -> Self {
        Self {
            budget,
            bodies: HashMap::new(),
            charged: 0,
        }
    }

    /// Keeps a copy of a body just sent, if the budget allows. It is copied because a decoded
    /// request's body is a slice of the connection's receive buffer: holding it would keep the
    /// whole buffer alive, which the budget would not see.
    pub fn insert_copy(&mut self, id: u64, body: &Payload) {
        if self.budget.limit > 0 {
            self.insert(id, body.copied());
        }
    }

    /// Keeps a body that is already a copy of its own (one taken back from a receive that did
    /// not happen), if the budget allows.
    pub fn insert(&mut self, id: u64, body: Payload) {
        let charge = cost(&body);
        if !self.budget.try_charge(charge) {
            return;
        }
        self.charged += charge;
        if let Some(replaced) = self.bodies.insert(id, body) {
            self.uncharge(cost(&replaced));
        }
    }

    /// Takes the body of a message out of the cache.
    pub fn take(&mut self, id: u64) -> Option<Payload> {
        let body = self.bodies.remove(&id)?;
        self.uncharge(cost(&body));
        Some(body)
    }

    /// A cached body, left in the cache (a peek: the message's receive still wants it).
    pub fn get(&self, id: u64) -> Option<Payload> {
        self.bodies.get(&id).cloned()
    }

    /// Forgets a message's body (its message is gone).
    pub fn remove(&mut self, id: u64) {
        self.take(id);
    }

    pub fn contains(&self, id: u64) -> bool {
        self.bodies.contains_key(&id)
    }

    /// Bytes the shared budget has left.
    pub fn room(&self) -> usize {
        self.budget.limit.saturating_sub(self.budget.used())
    }

    /// How many bodies are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    fn uncharge(&mut self, charge: usize) {
        self.charged -= charge;
        self.budget.refund(charge);
    }
}

impl Drop for BodyCache {
    fn drop(&mut self) {
        self.budget.refund(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Payload {
        Payload::new(bytes::Bytes::from(vec![7u8; len]), Default::default())
    }

    #[test]
    fn takes_what_it_kept_once() {
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let mut cache = BodyCache::new(budget.clone());
        cache.insert_copy(1, &body(100));
        assert_eq!(budget.used(), 100 + ENTRY_OVERHEAD);
        assert_eq!(cache.take(1), Some(body(100)));
        assert_eq!(cache.take(1), None);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn keeps_nothing_beyond_the_shared_budget() {
        let budget = Arc::new(BodyBudget::new(2 * (100 + ENTRY_OVERHEAD)));
        let mut first = BodyCache::new(budget.clone());
        let mut second = BodyCache::new(budget.clone());
        first.insert_copy(1, &body(100));
        second.insert_copy(2, &body(100));
        second.insert_copy(3, &body(100));
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_eq!(second.take(3), None);
        first.remove(1);
        second.insert_copy(3, &body(100));
        assert_eq!(second.len(), 2);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let budget = Arc::new(BodyBudget::new(0));
        let mut cache = BodyCache::new(budget.clone());
        cache.insert_copy(1, &body(1));
        assert_eq!(cache.len(), 0);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn refunds_everything_when_dropped() {
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let mut cache = BodyCache::new(budget.clone());
        for id in 0..10 {
            cache.insert_copy(id, &body(50));
        }
        cache.insert(3, body(10)); // replaces: the old body's cost is refunded
        assert_eq!(
            budget.used(),
            9 * (50 + ENTRY_OVERHEAD) + 10 + ENTRY_OVERHEAD
        );
        drop(cache);
        assert_eq!(budget.used(), 0);
    }
}
