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

use std::collections::hash_map::Entry;
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
    /// Every acceptance in the order they came (oldest first), with its message id, to drop
    /// them as the window passes. An id accepted again (after its window) appears twice.
    order: VecDeque<(Millis, Arc<str>, u64)>,
}

/// What [`Deduplication::expire`] dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// The ids no longer in the window.
    pub ids: Vec<String>,
    /// The message ids of every acceptance past the window, an id's superseded ones too: a
    /// store that keeps each acceptance as a row of its own (SQLite) removes them by these.
    pub message_ids: Vec<u64>,
}

impl Expired {
    pub fn is_empty(&self) -> bool {
        self.message_ids.is_empty()
    }
}

impl Deduplication {
    /// The message id of the send that was accepted with `id` less than `window_ms` ago.
    pub fn lookup(&self, id: &str, now: Millis, window_ms: Millis) -> Option<u64> {
        self.accepted
            .get(id)
            .filter(|accepted| accepted.accepted_ms + window_ms > now)
            .map(|accepted| accepted.message_id)
    }

    /// Remembers an id whose send has committed (or was recovered from storage). Of two
    /// acceptances of one id (recovered in any order), the newer is the one looked up.
    pub fn accept(&mut self, id: String, message_id: u64, accepted_ms: Millis) {
        let id: Arc<str> = id.into();
        self.order.push_back((accepted_ms, id.clone(), message_id));
        let accepted = Accepted {
            message_id,
            accepted_ms,
        };
        match self.accepted.entry(id) {
            Entry::Occupied(mut held) => {
                let newer =
                    (accepted_ms, message_id) >= (held.get().accepted_ms, held.get().message_id);
                if newer {
                    held.insert(accepted);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(accepted);
            }
        }
    }

    /// Drops the ids whose window has passed; returns them, for their rows to be removed.
    pub fn expire(&mut self, now: Millis, window_ms: Millis) -> Expired {
        let mut expired = Expired::default();
        while let Some((accepted_ms, _, _)) = self.order.front() {
            if accepted_ms + window_ms > now {
                break;
            }
            let Some((_, id, message_id)) = self.order.pop_front() else {
                break;
            };
            expired.message_ids.push(message_id);
            // Only the entry of the id's latest acceptance removes it.
            if self
                .accepted
                .get(&id)
                .is_some_and(|accepted| accepted.message_id == message_id)
            {
                self.accepted.remove(&id);
                expired.ids.push(id.to_string());
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
        assert_eq!(
            ids.expire(301_000, 300_000),
            Expired {
                ids: vec!["a".to_string()],
                message_ids: vec![7],
            }
        );
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn an_id_accepted_again_is_kept_by_its_newer_acceptance() {
        let mut ids = Deduplication::default();
        ids.accept("a".into(), 1, 0);
        ids.accept("a".into(), 2, 500);
        // The superseded acceptance's row goes; the id stays, by its newer acceptance.
        assert_eq!(
            ids.expire(400, 400),
            Expired {
                ids: Vec::new(),
                message_ids: vec![1],
            }
        );
        assert_eq!(ids.lookup("a", 600, 400), Some(2));
        assert_eq!(
            ids.expire(900, 400),
            Expired {
                ids: vec!["a".to_string()],
                message_ids: vec![2],
            }
        );
    }

    /// Recovery hands the stored acceptances back in any order: the newer one is looked up.
    #[test]
    fn recovered_acceptances_of_one_id_keep_the_newer() {
        let mut ids = Deduplication::default();
        ids.accept("a".into(), 2, 500);
        ids.accept("a".into(), 1, 0);
        ids.finish_recovery();
        assert_eq!(ids.lookup("a", 600, 400), Some(2));
        assert_eq!(ids.expire(400, 400).message_ids, vec![1]);
        assert_eq!(ids.lookup("a", 600, 400), Some(2));
    }
}
