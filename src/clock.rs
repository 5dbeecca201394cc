//! Time as Spool reads it: wall-clock milliseconds since the Unix epoch that never go backwards.
//!
//! Timestamps shown to clients and stored on disk are wall-clock; timers must not misfire when
//! the wall clock is stepped. So `now` is the later of the system's wall clock and a reading
//! derived from the monotonic clock (one wall-clock reading anchored to one monotonic instant),
//! and never earlier than any `now` returned before:
//! - a forward step of the wall clock (NTP, resume after suspend) is followed at once;
//! - a backward step is absorbed: time goes on from the monotonic clock instead of jumping back;
//! - in tests with paused tokio time the monotonic part advances with the paused clock.

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
    /// Shared by clones: the latest time returned, and how far `skip_ahead` moved the clock.
    state: Arc<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    latest_ms: AtomicI64,
    skipped_ms: AtomicI64,
}

fn system_now_ms() -> Millis {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(wall.as_millis()).unwrap_or(i64::MAX)
}

impl Clock {
    pub fn new() -> Self {
        Self {
            anchor: Instant::now(),
            anchor_wall_ms: system_now_ms(),
            state: Arc::default(),
        }
    }

    /// Wall-clock now, in milliseconds; never less than an earlier reading.
    pub fn now_ms(&self) -> Millis {
        let elapsed = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
        let monotonic = self.anchor_wall_ms.saturating_add(elapsed);
        let now = monotonic
            .max(system_now_ms())
            .saturating_add(self.state.skipped_ms.load(Ordering::Relaxed));
        let latest = self.state.latest_ms.fetch_max(now, Ordering::Relaxed);
        now.max(latest)
    }

    /// Moves this clock (and its clones) forward, as if `by` had passed. Tests use it to reach
    /// retention periods and long timeouts without waiting; timers already set see the new time
    /// at their queue's next step.
    pub fn skip_ahead(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.state.skipped_ms.fetch_add(by, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_and_never_goes_back() {
        let clock = Clock::new();
        let first = clock.now_ms();
        assert!((first - system_now_ms()).abs() < 1_000);
        clock.skip_ahead(Duration::from_secs(60));
        let later = clock.now_ms();
        assert!(later >= first + 60_000);
        assert!(clock.now_ms() >= later);
    }
}
