//! Receive bookkeeping (visibility deadline, dequeue count, nonce) that is yet to be written.
//!
//! Nobody waits for these writes, and losing them in a crash only makes a message visible again
//! before its deadline (at-least-once holds). So a queue gathers them for a moment and hands
//! them to storage in one batch; a message deleted meanwhile — the common case, a consumer that
//! deletes what it received — never needs its record written at all.

use std::collections::HashMap;

use crate::clock::Millis;
use crate::storage::ReceiveRecord;

/// How long a record may wait to be written.
pub const RECORD_DELAY_MS: Millis = 100;
/// Records gathered before they are written regardless of the delay.
const MAX_PENDING: usize = 4_096;

#[derive(Debug, Default)]
pub struct ReceiveLog {
    /// By message id: a later receive of the same message replaces the earlier record.
    pending: HashMap<u64, ReceiveRecord>,
    /// When the oldest pending record is due.
    due_ms: Option<Millis>,
}

impl ReceiveLog {
    pub fn add(&mut self, records: impl IntoIterator<Item = ReceiveRecord>, now: Millis) {
        for record in records {
            self.pending.insert(record.id, record);
        }
        if !self.pending.is_empty() && self.due_ms.is_none() {
            self.due_ms = Some(now + RECORD_DELAY_MS);
        }
    }

    /// The message was deleted or made visible again: its record is moot.
    pub fn forget(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    pub fn due_ms(&self) -> Option<Millis> {
        self.due_ms
    }

    pub fn is_due(&self, now: Millis) -> bool {
        self.pending.len() >= MAX_PENDING || self.due_ms.is_some_and(|due| due <= now)
    }

    /// Everything pending, to be written now.
    pub fn take(&mut self) -> Vec<ReceiveRecord> {
        self.due_ms = None;
        self.pending.drain().map(|(_, record)| record).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, visible_at_ms: Millis) -> ReceiveRecord {
        ReceiveRecord {
            id,
            visible_at_ms,
            dequeue_count: 1,
            first_dequeue_ms: 0,
            receipt_nonce: 7,
        }
    }

    #[test]
    fn gathers_forgets_and_comes_due() {
        let mut log = ReceiveLog::default();
        assert_eq!(log.due_ms(), None);
        log.add([record(1, 10), record(2, 10)], 1_000);
        assert_eq!(log.due_ms(), Some(1_000 + RECORD_DELAY_MS));
        log.add([record(1, 20)], 1_050); // a later receive of 1 replaces it; the due time stays
        assert_eq!(log.due_ms(), Some(1_000 + RECORD_DELAY_MS));
        log.forget(2);
        assert!(!log.is_due(1_099));
        assert!(log.is_due(1_100));
        let taken = log.take();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].id, taken[0].visible_at_ms), (1, 20));
        assert_eq!(log.due_ms(), None);
        assert!(log.take().is_empty());
    }
}
