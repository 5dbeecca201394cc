//! When a failed call is tried again, and how long the client waits before it does.
//!
//! Only UNAVAILABLE is retried: the server could not be reached, is shutting down, or its storage
//! failed. Whether a call may be sent twice depends on the call:
//!
//! - **Safe** (retried): GetQueue and ListQueues read; CreateQueue is idempotent by design (the
//!   same attributes return the existing queue); UpdateQueue sets absolute values; DeleteMessage
//!   and BatchDeleteMessages succeed again on a deleted message; DeleteQueue too, see below;
//!   PeekMessages reads; ChangeMessageVisibility and its batch set a time from now again (a nack
//!   whose first attempt took effect may then fail as a stale handle: the message was visible
//!   already); SendMessage and BatchSendMessages carry a deduplication id (the caller's, or
//!   one the client makes for each send), so a retry of a send that was stored returns the
//!   first attempt's message id and stores nothing, as long as it comes within the queue's
//!   `deduplication_window_seconds` (default 300; with 0 a retry may store a duplicate);
//!   ListDeadLetterSourceQueues reads.
//! - **Not idempotent** (retried only if the request was certainly not carried out: the
//!   connection could not be made, or the server refused it because it is still starting;
//!   or if [`RetryPolicy::retry_non_idempotent`] is on): RewindQueue (a second rewind brings
//!   back what a consumer deleted in between, and its count would only cover the second
//!   attempt), PurgeQueue (a second purge removes what was sent in between), and
//!   RedriveMessages (a second redrive moves what was dead-lettered in between).
//! - **ReceiveMessages**: opening the stream is retried like a safe call (a receive whose answer
//!   was lost leaves its messages in flight; they come back after their visibility timeout, as
//!   for any consumer that fails). A stream that broke after it opened is never retried: its
//!   messages may already be in flight for this client.
//!
//! DeleteQueue: when an attempt failed with UNAVAILABLE, the queue may or may not have been
//! deleted. If a retry then finds no queue (NOT_FOUND), the client reports success: the queue is
//! gone, which is what was asked. (Without the retry the caller would not know either way.) A
//! NOT_FOUND on the first attempt is reported as the error it is.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::errors::{ERROR_DOMAIN, STARTING};

/// How a call may be retried; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safety {
    /// Sending it twice has the effect of sending it once.
    Idempotent,
    /// Sending it twice may do it twice.
    NotIdempotent,
}

/// Retries of calls that fail with UNAVAILABLE: how many attempts, and the backoff between
/// them (exponential, with jitter, bounded).
///
/// ```
/// use std::time::Duration;
/// use spool_client::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .max_attempts(10)
///     .initial_backoff(Duration::from_millis(50))
///     .max_backoff(Duration::from_secs(1));
/// let never = RetryPolicy::none();
/// # let _ = (patient, never);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    max_attempts: u32,
    /// The backoff before the first retry; it doubles for each retry after.
    initial_backoff: Duration,
    /// The backoff never grows beyond this.
    max_backoff: Duration,
    /// Retry sends and rewinds too, accepting duplicates.
    retry_non_idempotent: bool,
}

/// Attempts in all, unless the policy says otherwise: about 1.5 s of retrying in the worst case.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            retry_non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// One attempt, never a retry.
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Attempts in all, the first included (at least 1).
    pub fn max_attempts(self, attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            ..self
        }
    }

    /// The backoff before the first retry; it doubles for every retry after, up to
    /// [`max_backoff`](Self::max_backoff). Each wait is drawn between half of it and all of it.
    pub fn initial_backoff(self, backoff: Duration) -> Self {
        Self {
            initial_backoff: backoff,
            ..self
        }
    }

    /// The longest backoff.
    pub fn max_backoff(self, backoff: Duration) -> Self {
        Self {
            max_backoff: backoff,
            ..self
        }
    }

    /// Also retry RewindQueue, PurgeQueue and RedriveMessages when their request may have
    /// reached the server. Off by default. (Sends are retried anyway: they carry
    /// deduplication ids.)
    pub fn retry_non_idempotent(self, retry: bool) -> Self {
        Self {
            retry_non_idempotent: retry,
            ..self
        }
    }

    /// Attempts in all, the first included.
    pub fn attempt_limit(&self) -> u32 {
        self.max_attempts
    }

    /// Whether attempt number `attempt` (1 for the first) that failed with `status` is followed
    /// by another one.
    pub fn should_retry(&self, safety: Safety, attempt: u32, status: &Status) -> bool {
        if attempt >= self.max_attempts || status.code() != Code::Unavailable {
            return false;
        }
        match safety {
            Safety::Idempotent => true,
            Safety::NotIdempotent => self.retry_non_idempotent || not_carried_out(status),
        }
    }

    /// How long to wait after attempt number `attempt` (1 for the first) failed, drawn with
    /// `random` (any u64): between half and all of `initial × 2^(attempt−1)`, capped.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            random % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Whether a failed call certainly did nothing, so it may be sent again whatever it is: it never
/// reached the server, or the server refused it while starting (before it serves any queue).
pub fn not_carried_out(status: &Status) -> bool {
    never_sent(status) || {
        let details = status.get_error_details();
        details
            .error_info()
            .is_some_and(|info| info.domain == ERROR_DOMAIN && info.reason == STARTING.reason)
    }
}

/// Whether a failed call's request never reached the server: the connection could not be made.
pub fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A random number for the jitter; without a random source, no jitter (the upper bound).
pub fn jitter_seed() -> u64 {
    getrandom::u64().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_failure() -> Status {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))))
    }

    #[test]
    fn retries_only_unavailable_and_only_up_to_max_attempts() {
        let policy = RetryPolicy::default().max_attempts(3);
        let unavailable = Status::unavailable("shutting down");
        assert!(policy.should_retry(Safety::Idempotent, 1, &unavailable));
        assert!(policy.should_retry(Safety::Idempotent, 2, &unavailable));
        assert!(!policy.should_retry(Safety::Idempotent, 3, &unavailable));
        for status in [
            Status::not_found("q"),
            Status::deadline_exceeded("late"),
            Status::internal("bug"),
            Status::resource_exhausted("full"),
        ] {
            assert!(
                !policy.should_retry(Safety::Idempotent, 1, &status),
                "{status:?}"
            );
        }
        assert!(!RetryPolicy::none().should_retry(Safety::Idempotent, 1, &unavailable));
    }

    #[test]
    fn sends_are_retried_only_when_never_sent_unless_opted_in() {
        let policy = RetryPolicy::default();
        let maybe_stored = Status::unavailable("storage unavailable");
        assert!(!never_sent(&maybe_stored));
        assert!(!policy.should_retry(Safety::NotIdempotent, 1, &maybe_stored));
        let refused = connect_failure();
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(never_sent(&refused));
        assert!(policy.should_retry(Safety::NotIdempotent, 1, &refused));
        let starting = STARTING.status("the server is starting");
        assert!(!never_sent(&starting));
        assert!(policy.should_retry(Safety::NotIdempotent, 1, &starting));
        let opted_in = policy.retry_non_idempotent(true);
        assert!(opted_in.should_retry(Safety::NotIdempotent, 1, &maybe_stored));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let policy = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(1_000));
        for (attempt, ceiling_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let ceiling = Duration::from_millis(ceiling_ms);
            assert_eq!(policy.backoff(attempt, 0), ceiling / 2, "attempt {attempt}");
            let spread = u64::try_from((ceiling - ceiling / 2).as_nanos()).unwrap();
            assert_eq!(
                policy.backoff(attempt, spread),
                ceiling,
                "attempt {attempt}"
            );
            for random in [1, 12_345, 987_654_321_012, u64::MAX / 3] {
                let wait = policy.backoff(attempt, random);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{attempt}: {wait:?}"
                );
            }
        }
        let zero = RetryPolicy::default().initial_backoff(Duration::ZERO);
        assert_eq!(zero.backoff(3, 42), Duration::ZERO);
    }
}
