//! Time as Spool reads it: wall-clock milliseconds since the Unix epoch, derived from tokio's
//! monotonic clock.
//!
//! Timestamps shown to clients and stored on disk are wall-clock; timers must not jump when the
//! wall clock is stepped. Anchoring one wall-clock reading to one monotonic instant gives both:
//! times never go backwards, durations are exact, and tests with paused tokio time see a
//! consistent wall clock too.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Clone, Debug)]
pub struct Clock {
    /// The monotonic instant at which `anchor_wall_ms` was read.
    anchor: Instant,
    /// Wall-clock time at `anchor`.
    anchor_wall_ms: Millis,
    /// How far [`Clock::skip_ahead`] has moved this clock; shared by its clones.
    skipped_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            anchor: Instant::now(),
            anchor_wall_ms: i64::try_from(wall.as_millis()).unwrap_or(i64::MAX),
            skipped_ms: Arc::default(),
        }
    }

    /// Wall-clock now, in milliseconds.
    pub fn now_ms(&self) -> Millis {
        let elapsed = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.anchor_wall_ms
            .saturating_add(elapsed)
            .saturating_add(self.skipped_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and its clones) forward, as if `by` had passed. Tests use it to reach
    /// retention periods and long timeouts without waiting; timers already set see the new time
    /// at their queue's next step.
    pub fn skip_ahead(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.skipped_ms.fetch_add(by, Ordering::Relaxed);
    }

    /// The monotonic instant at which the wall clock reads `at_ms` (now, if that has passed).
    pub fn instant_at(&self, at_ms: Millis) -> Instant {
        let now_ms = self.now_ms();
        let ahead = u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0);
        Instant::now() + Duration::from_millis(ahead)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds to milliseconds, for attribute values.
pub fn secs_to_ms(seconds: u32) -> Millis {
    i64::from(seconds) * 1_000
}
