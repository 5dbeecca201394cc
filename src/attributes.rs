//! Queue names and attributes: their domain types and validation, shared by create and update.

use crate::error::QueueError;
use crate::limits::*;

/// Where a queue moves the messages it cannot get processed (CMQ 3.0's deadLetterPolicy, SQS's
/// redrive policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterPolicy {
    /// A queue of the same server, not this one; it must exist when the policy is set.
    pub dead_letter_queue: String,
    /// A message received this many times without being deleted is moved instead of being
    /// delivered again (1..=1000).
    pub max_receive_count: u32,
    /// A message not deleted this long after it was sent is moved too (0 = off, else
    /// 300..=43200).
    pub max_time_to_live_seconds: u32,
}

/// Every attribute of a queue, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueAttributes {
    pub visibility_timeout_seconds: u32,
    pub polling_wait_seconds: u32,
    pub max_message_size: u32,
    pub message_retention_seconds: u32,
    /// 0 = rewind off; otherwise how far back a rewind may go, at most the retention.
    pub rewind_seconds: u32,
    pub max_backlog: u64,
    /// 0 = deduplication off.
    pub deduplication_window_seconds: u32,
    pub dead_letter_policy: Option<DeadLetterPolicy>,
    /// Most bytes the queue holds (see `queue::quota`); 0 = no quota.
    pub max_bytes: u64,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
            polling_wait_seconds: DEFAULT_POLLING_WAIT_SECONDS,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            message_retention_seconds: DEFAULT_MESSAGE_RETENTION_SECONDS,
            rewind_seconds: DEFAULT_REWIND_SECONDS,
            max_backlog: DEFAULT_MAX_BACKLOG,
            deduplication_window_seconds: DEFAULT_DEDUPLICATION_WINDOW_SECONDS,
            dead_letter_policy: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Attributes as a request gives them: each one set or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributesPatch {
    pub visibility_timeout_seconds: Option<u32>,
    pub polling_wait_seconds: Option<u32>,
    pub max_message_size: Option<u32>,
    pub message_retention_seconds: Option<u32>,
    pub rewind_seconds: Option<u32>,
    pub max_backlog: Option<u64>,
    pub deduplication_window_seconds: Option<u32>,
    /// `Some(None)` removes the policy (the request's policy names no queue).
    pub dead_letter_policy: Option<Option<DeadLetterPolicy>>,
    pub max_bytes: Option<u64>,
}

impl QueueAttributes {
    /// These attributes with the set fields of `patch` replaced, validated as a whole
    /// (the rewind window is checked against the resulting retention).
    pub fn patched(&self, patch: &AttributesPatch) -> Result<Self, QueueError> {
        let merged = Self {
            visibility_timeout_seconds: patch
                .visibility_timeout_seconds
                .unwrap_or(self.visibility_timeout_seconds),
            polling_wait_seconds: patch
                .polling_wait_seconds
                .unwrap_or(self.polling_wait_seconds),
            max_message_size: patch.max_message_size.unwrap_or(self.max_message_size),
            message_retention_seconds: patch
                .message_retention_seconds
                .unwrap_or(self.message_retention_seconds),
            rewind_seconds: patch.rewind_seconds.unwrap_or(self.rewind_seconds),
            max_backlog: patch.max_backlog.unwrap_or(self.max_backlog),
            deduplication_window_seconds: patch
                .deduplication_window_seconds
                .unwrap_or(self.deduplication_window_seconds),
            dead_letter_policy: match &patch.dead_letter_policy {
                Some(policy) => policy.clone(),
                None => self.dead_letter_policy.clone(),
            },
            max_bytes: patch.max_bytes.unwrap_or(self.max_bytes),
        };
        merged.validate()?;
        Ok(merged)
    }

    pub fn validate(&self) -> Result<(), QueueError> {
        check_range(
            "attributes.visibility_timeout_seconds",
            self.visibility_timeout_seconds,
            &VISIBILITY_TIMEOUT_SECONDS,
        )?;
        check_range(
            "attributes.polling_wait_seconds",
            self.polling_wait_seconds,
            &POLLING_WAIT_SECONDS,
        )?;
        check_range(
            "attributes.max_message_size",
            self.max_message_size,
            &MAX_MESSAGE_SIZE,
        )?;
        check_range(
            "attributes.message_retention_seconds",
            self.message_retention_seconds,
            &MESSAGE_RETENTION_SECONDS,
        )?;
        if self.rewind_seconds > self.message_retention_seconds {
            return Err(QueueError::InvalidArgument(format!(
                "attributes.rewind_seconds is {}; it must be 0..={} (the queue's message_retention_seconds)",
                self.rewind_seconds, self.message_retention_seconds
            )));
        }
        check_range("attributes.max_backlog", self.max_backlog, &MAX_BACKLOG)?;
        check_range(
            "attributes.deduplication_window_seconds",
            self.deduplication_window_seconds,
            &DEDUPLICATION_WINDOW_SECONDS,
        )?;
        if let Some(policy) = &self.dead_letter_policy {
            policy.validate()?;
        }
        check_range("attributes.max_bytes", self.max_bytes, &MAX_BYTES)?;
        Ok(())
    }

    pub fn rewind_enabled(&self) -> bool {
        self.rewind_seconds > 0
    }
}

impl DeadLetterPolicy {
    /// The checks that need no other queue (the registry checks that the target exists and is
    /// not the queue itself).
    pub fn validate(&self) -> Result<(), QueueError> {
        check_queue_name(&self.dead_letter_queue).map_err(|why| {
            QueueError::InvalidArgument(format!(
                "attributes.dead_letter_policy.dead_letter_queue: {why}"
            ))
        })?;
        check_range(
            "attributes.dead_letter_policy.max_receive_count",
            self.max_receive_count,
            &MAX_RECEIVE_COUNT,
        )?;
        let ttl = self.max_time_to_live_seconds;
        if ttl != 0 && !DEAD_LETTER_TIME_TO_LIVE_SECONDS.contains(&ttl) {
            return Err(QueueError::InvalidArgument(format!(
                "attributes.dead_letter_policy.max_time_to_live_seconds is {ttl}; it must be 0 \
                 (off) or {}..={}",
                DEAD_LETTER_TIME_TO_LIVE_SECONDS.start(),
                DEAD_LETTER_TIME_TO_LIVE_SECONDS.end()
            )));
        }
        Ok(())
    }
}

/// `field` is `value`; it must lie in `range`.
pub fn check_range<T>(
    field: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), QueueError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!(
            "{field} is {value}; it must be {}..={}",
            range.start(),
            range.end()
        )))
    }
}

/// Checks a queue name (the rule is the API's: [`crate::limits::check_queue_name`]).
pub fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    check_queue_name(name).map_err(QueueError::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "Queue-1_x", &"q".repeat(64)] {
            assert!(validate_queue_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "-a", "a b", "a.b", "é", &"q".repeat(65)] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_validates_the_whole() {
        let base = QueueAttributes::default();
        let err = base
            .patched(&AttributesPatch {
                message_retention_seconds: Some(60),
                rewind_seconds: Some(61),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("rewind_seconds"));
        let err = base
            .patched(&AttributesPatch {
                visibility_timeout_seconds: Some(0),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("1..=43200"), "{err}");
        let ok = base
            .patched(&AttributesPatch {
                polling_wait_seconds: Some(30),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ok.polling_wait_seconds, 30);
        assert_eq!(ok.max_backlog, base.max_backlog);
    }
}
