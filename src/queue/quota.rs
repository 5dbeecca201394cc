//! A queue's byte quota (`max_bytes`): what it holds and has promised, shared by every actor
//! that puts messages into it.
//!
//! Messages enter a queue from its own sends and a topic's copies, and from other queues' actors
//! (dead-letter moves, redrives), which must not wait on this queue's mailbox (two queues may be
//! each other's dead-letter queues). So the room is reserved on an atomic, by whichever actor
//! brings the bytes, before the commit that writes them: two reservations can never both take
//! the last room. `held` is the queue's table bytes (`Counts::bytes`, which its actor settles
//! here as they change) plus the bytes of commits under way into it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct ByteQuota {
    /// Bytes held and reserved.
    held: AtomicU64,
    /// The queue's `max_bytes`; 0 means no quota (bytes are still counted, so that setting one
    /// later starts from the truth).
    max: AtomicU64,
}

/// A reservation refused: what was held then, and the quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub held: u64,
    pub max: u64,
}

impl ByteQuota {
    pub fn new(held: u64, max: u64) -> Self {
        Self {
            held: AtomicU64::new(held),
            max: AtomicU64::new(max),
        }
    }

    /// The queue's `max_bytes` changed.
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Takes room for `bytes` more, unless that would go beyond the quota. A reservation of
    /// nothing always succeeds (a publish whose copies all are duplicates).
    pub fn try_reserve(&self, bytes: u64) -> Result<(), Refused> {
        let max = self.max.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let after = held.saturating_add(bytes);
                (max == 0 || bytes == 0 || after <= max).then_some(after)
            })
            .map(|_| ())
            .map_err(|held| Refused { held, max })
    }

    /// Gives back room: a reservation whose commit failed, or bytes that left the queue.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Counts bytes that came back without a reservation (a delete or a move undone because its
    /// commit failed): they are the queue's again even if that goes beyond the quota.
    pub fn add(&self, bytes: u64) {
        self.held.fetch_add(bytes, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_quota() {
        let quota = ByteQuota::new(10, 100);
        assert_eq!(quota.try_reserve(90), Ok(()));
        assert_eq!(
            quota.try_reserve(1),
            Err(Refused {
                held: 100,
                max: 100
            })
        );
        assert_eq!(quota.try_reserve(0), Ok(()));
        quota.release(50);
        assert_eq!(quota.try_reserve(50), Ok(()));
        assert_eq!(quota.held(), 100);
        quota.set_max(0);
        assert_eq!(quota.try_reserve(1 << 40), Ok(()), "0 is no quota");
        quota.release(u64::MAX);
        assert_eq!(quota.held(), 0);
    }

    /// Two threads racing for the last room: exactly one reservation fits.
    #[test]
    fn concurrent_reservations_never_overshoot() {
        let quota = std::sync::Arc::new(ByteQuota::new(0, 1_000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let quota = quota.clone();
                std::thread::spawn(move || {
                    (0..1_000).filter(|_| quota.try_reserve(3).is_ok()).count()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(granted, 333);
        assert_eq!(quota.held(), 999);
    }
}
