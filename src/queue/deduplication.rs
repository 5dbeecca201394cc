//! The deduplication ids a queue accepted recently: a send whose id is here, within the
//! queue's window, enqueues nothing and gets the first send's message id.
//!
//! Each id is stored with its message, in the same transaction, so an acknowledged id survives
//! a crash; recovery hands the stored ones back here. The window is applied when an id is
//! looked up (`accepted_ms + window > now`), so a changed window applies to the ids already
//! accepted; ids past it are dropped from memory as time passes and their rows removed lazily.
//!
//! Memory: one entry per send with an id in the last window (about 80 bytes plus the id, held
//! once for the map and the drop order), so the queue's rate of sends with ids times its
//! window (86,400 s at most).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::clock::Millis;

/// One accepted id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Accepted {
    message_id: u64,
    accepted_ms: Millis,
}

#[derive(Debug, Default)]
pub struct Deduplication {
    accepted: HashMap<Arc<str>, Accepted>,
    /// Ids in the order they were accepted (oldest first), to drop them as the window passes.
    /// An id accepted again (after its window) appears twice; the older entry is skipped.
    order: VecDeque<(Millis, Arc<str>)>,
}

impl Deduplication {
    /// The message id of the send that was accepted with `id` less than `window_ms` ago.
    pub fn lookup(&self, id: &str, now: Millis, window_ms: Millis) -> Option<u64> {
        self.accepted
            .get(id)
            .filter(|accepted| accepted.accepted_ms + window_ms > now)
            .map(|accepted| accepted.message_id)
    }

    /// Remembers an id whose send has committed (or was recovered from storage).
    pub fn accept(&mut self, id: String, message_id: u64, accepted_ms: Millis) {
        let id: Arc<str> = id.into();
        self.order.push_back((accepted_ms, id.clone()));
        self.accepted.insert(
            id,
            Accepted {
                message_id,
                accepted_ms,
            },
        );
    }

    /// Drops the ids whose window has passed; returns them, for their rows to be removed.
    pub fn expire(&mut self, now: Millis, window_ms: Millis) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((accepted_ms, _)) = self.order.front() {
            if accepted_ms + window_ms > now {
                break;
            }
            let Some((accepted_ms, id)) = self.order.pop_front() else {
                break;
            };
            // Only the entry of the id's latest acceptance removes it.
            if self
                .accepted
                .get(&id)
                .is_some_and(|accepted| accepted.accepted_ms == accepted_ms)
            {
                self.accepted.remove(&id);
                expired.push(id.to_string());
            }
        }
        expired
    }

    /// Recovered ids arrive in no particular order: sorts the drop order once they are all in.
    pub fn finish_recovery(&mut self) {
        self.order.make_contiguous().sort();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.accepted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_within_the_window_only() {
        let mut ids = Deduplication::default();
        ids.accept("a".into(), 7, 1_000);
        assert_eq!(ids.lookup("a", 1_000, 300_000), Some(7));
        assert_eq!(ids.lookup("a", 300_999, 300_000), Some(7));
        assert_eq!(ids.lookup("a", 301_000, 300_000), None);
        assert_eq!(ids.lookup("b", 1_000, 300_000), None);
        // A shorter window applies to ids already accepted.
        assert_eq!(ids.lookup("a", 2_000, 1_000), None);
        assert!(ids.expire(300_999, 300_000).is_empty());
        assert_eq!(ids.expire(301_000, 300_000), vec!["a".to_string()]);
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn an_id_accepted_again_is_kept_by_its_newer_acceptance() {
        let mut ids = Deduplication::default();
        ids.accept("a".into(), 1, 0);
        ids.accept("a".into(), 2, 500);
        assert!(ids.expire(400, 400).is_empty());
        assert_eq!(ids.lookup("a", 600, 400), Some(2));
        assert_eq!(ids.expire(900, 400), vec!["a".to_string()]);
    }
}
