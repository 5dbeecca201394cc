//! What a queue remembers of messages deleted after more than one receive, so that a delete
//! with the handle of an older receive keeps failing after the message is gone.
//!
//! A receipt handle carries the number of its receive (see `receipt`). A message deleted by its
//! first receive has had no other handle, so any valid handle of it is the deleting one, and a
//! retry may be answered OK with nothing remembered: the common case costs nothing. A message
//! received again had older handles; for it, the queue keeps a tombstone (its deleting receive)
//! for a while, in memory and as a bodiless row in storage, so the answer to those older handles
//! does not depend on the order in which a batch lists them, nor on a restart.

use std::collections::{BTreeSet, HashMap};

use crate::clock::Millis;

/// Most tombstones one queue keeps; beyond it the ones due first are dropped early. A queue
/// only gets one per message delivered more than once, so this bounds a pathological consumer,
/// not normal traffic (about 40 bytes each in memory).
pub const MAX_TOMBSTONES: usize = 262_144;

/// Tombstones are kept at least this long, whatever the queue's visibility timeout.
pub const MIN_TOMBSTONE_MS: Millis = 60_000;

/// The receive whose handle deleted a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub receipt_nonce: u64,
    pub receive_count: u32,
    /// When it is forgotten.
    pub until_ms: Millis,
}

#[derive(Debug, Default)]
pub struct Tombstones {
    by_id: HashMap<u64, Tombstone>,
    /// (until, id), so the next to expire is found at once.
    by_expiry: BTreeSet<(Millis, u64)>,
}

impl Tombstones {
    pub fn get(&self, id: u64) -> Option<&Tombstone> {
        self.by_id.get(&id)
    }

    /// Remembers a deleted message; returns the ids of tombstones dropped early to stay within
    /// [`MAX_TOMBSTONES`] (their rows are to be removed).
    pub fn insert(&mut self, id: u64, tombstone: Tombstone) -> Vec<u64> {
        if let Some(old) = self.by_id.insert(id, tombstone) {
            self.by_expiry.remove(&(old.until_ms, id));
        }
        self.by_expiry.insert((tombstone.until_ms, id));
        let mut dropped = Vec::new();
        while self.by_id.len() > MAX_TOMBSTONES {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
            dropped.push(oldest);
        }
        dropped
    }

    /// Forgets one (its delete failed to commit).
    pub fn remove(&mut self, id: u64) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_expiry.remove(&(old.until_ms, id));
        }
    }

    /// Forgets those due at or before `now`; returns their ids.
    pub fn expire(&mut self, now: Millis, expired: &mut Vec<u64>) {
        while let Some(&(until, id)) = self.by_expiry.first() {
            if until > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_id.remove(&id);
            expired.push(id);
        }
    }

    pub fn next_expiry_ms(&self) -> Option<Millis> {
        self.by_expiry.first().map(|&(until, _)| until)
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(until_ms: Millis) -> Tombstone {
        Tombstone {
            receipt_nonce: 9,
            receive_count: 2,
            until_ms,
        }
    }

    #[test]
    fn expire_in_order_and_stay_bounded() {
        let mut tombstones = Tombstones::default();
        tombstones.insert(1, tombstone(300));
        tombstones.insert(2, tombstone(100));
        assert_eq!(tombstones.next_expiry_ms(), Some(100));
        let mut expired = Vec::new();
        tombstones.expire(200, &mut expired);
        assert_eq!(expired, vec![2]);
        assert!(tombstones.get(2).is_none() && tombstones.get(1).is_some());
        tombstones.remove(1);
        assert_eq!(tombstones.len(), 0);
        assert_eq!(tombstones.next_expiry_ms(), None);

        for id in 0..MAX_TOMBSTONES as u64 {
            assert!(
                tombstones
                    .insert(id, tombstone(1_000 + id as Millis))
                    .is_empty()
            );
        }
        assert_eq!(tombstones.insert(u64::MAX, tombstone(5)), vec![u64::MAX]);
        assert_eq!(
            tombstones.insert(u64::MAX - 1, tombstone(i64::MAX)),
            vec![0]
        );
        assert_eq!(tombstones.len(), MAX_TOMBSTONES);
    }
}
