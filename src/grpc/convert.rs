//! Proto ⇄ domain conversions at the edge. Request validation that needs no queue state
//! happens here; what depends on a queue's attributes is checked by its actor.

use prost_types::Timestamp;

use crate::attributes::{AttributesPatch, DeadLetterPolicy, QueueAttributes};
use crate::clock::Millis;
use crate::error::QueueError;
use crate::payload::{MessageAttributes, Payload};
use crate::pb;
use crate::queue::{Claimed, PeekedMessage, QueueInfo, VisibilityResult};
use crate::receipt::ReceiptKey;

pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

/// A timestamp as milliseconds since the epoch; `field` names it in the error.
pub fn millis(timestamp: &Timestamp, field: &str) -> Result<Millis, QueueError> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(QueueError::InvalidArgument(format!(
            "{field}.nanos is {}; it must be 0..=999999999",
            timestamp.nanos
        )));
    }
    timestamp
        .seconds
        .checked_mul(1_000)
        .and_then(|ms| ms.checked_add(i64::from(timestamp.nanos / 1_000_000)))
        .ok_or_else(|| {
            QueueError::InvalidArgument(format!("{field} is out of the representable range"))
        })
}

pub fn patch(attributes: Option<pb::QueueAttributes>) -> AttributesPatch {
    let a = attributes.unwrap_or_default();
    AttributesPatch {
        visibility_timeout_seconds: a.visibility_timeout_seconds,
        polling_wait_seconds: a.polling_wait_seconds,
        max_message_size: a.max_message_size,
        message_retention_seconds: a.message_retention_seconds,
        rewind_seconds: a.rewind_seconds,
        max_backlog: a.max_backlog,
        deduplication_window_seconds: a.deduplication_window_seconds,
        max_bytes: a.max_bytes,
        // A policy that names no queue removes it.
        dead_letter_policy: a.dead_letter_policy.map(|policy| {
            (!policy.dead_letter_queue.is_empty()).then_some(DeadLetterPolicy {
                dead_letter_queue: policy.dead_letter_queue,
                max_receive_count: policy.max_receive_count,
                max_time_to_live_seconds: policy.max_time_to_live_seconds,
            })
        }),
    }
}

pub fn attributes(a: &QueueAttributes) -> pb::QueueAttributes {
    pb::QueueAttributes {
        visibility_timeout_seconds: Some(a.visibility_timeout_seconds),
        polling_wait_seconds: Some(a.polling_wait_seconds),
        max_message_size: Some(a.max_message_size),
        message_retention_seconds: Some(a.message_retention_seconds),
        rewind_seconds: Some(a.rewind_seconds),
        max_backlog: Some(a.max_backlog),
        deduplication_window_seconds: Some(a.deduplication_window_seconds),
        max_bytes: Some(a.max_bytes),
        dead_letter_policy: a
            .dead_letter_policy
            .as_ref()
            .map(|policy| pb::DeadLetterPolicy {
                dead_letter_queue: policy.dead_letter_queue.clone(),
                max_receive_count: policy.max_receive_count,
                max_time_to_live_seconds: policy.max_time_to_live_seconds,
            }),
    }
}

/// A message's attributes and dead-letter origin, as every message the API returns has them.
fn message_meta(payload: &Payload) -> (std::collections::HashMap<String, String>, String, u32) {
    let attributes = payload
        .delivered_attributes()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let (source, receive_count) = payload
        .dead_letter
        .as_ref()
        .map(|origin| (origin.source_queue.to_string(), origin.receive_count))
        .unwrap_or_default();
    (attributes, source, receive_count)
}

pub fn queue(info: QueueInfo) -> pb::Queue {
    pb::Queue {
        name: info.name,
        attributes: Some(attributes(&info.attributes)),
        stats: Some(pb::QueueStats {
            active_messages: info.counts.visible,
            inactive_messages: info.counts.in_flight,
            delayed_messages: info.counts.delayed,
            rewindable_messages: info.counts.rewindable,
            oldest_message_time: info.oldest_message_ms.map(timestamp),
            backlog_bytes: info.counts.bytes,
        }),
        create_time: Some(timestamp(info.create_time_ms)),
        update_time: Some(timestamp(info.update_time_ms)),
    }
}

pub fn received(message: &Claimed, payload: Payload, key: &ReceiptKey) -> pb::ReceivedMessage {
    let payload_topic = payload.source_topic().to_string();
    let (attributes, dead_letter_source_queue, dead_letter_receive_count) = message_meta(&payload);
    pb::ReceivedMessage {
        message_id: message.id.to_string(),
        receipt_handle: key.encode(&message.handle),
        body: payload.body,
        attributes,
        dead_letter_source_queue,
        dead_letter_receive_count,
        source_topic: payload_topic,
        enqueue_time: Some(timestamp(message.enqueue_ms)),
        first_dequeue_time: Some(timestamp(message.first_dequeue_ms)),
        next_visible_time: Some(timestamp(message.visible_at_ms)),
        dequeue_count: message.dequeue_count,
    }
}

pub fn peeked(peeked: PeekedMessage) -> pb::PeekedMessage {
    let message = peeked.message;
    let (attributes, dead_letter_source_queue, dead_letter_receive_count) =
        message_meta(&peeked.payload);
    let source_topic = peeked.payload.source_topic().to_string();
    pb::PeekedMessage {
        source_topic,
        message_id: message.id.to_string(),
        body: peeked.payload.body,
        attributes,
        dead_letter_source_queue,
        dead_letter_receive_count,
        enqueue_time: Some(timestamp(message.enqueue_ms)),
        // 0 is "never received" inside; the API says so by leaving it unset.
        first_dequeue_time: (message.dequeue_count > 0)
            .then(|| timestamp(message.first_dequeue_ms)),
        dequeue_count: message.dequeue_count,
    }
}

/// A message to send, from a request's fields; `field` prefixes the fields' names in errors
/// (`""` for SendMessage, `entries[2].` for a batch entry).
pub fn outgoing(
    field: &str,
    body: bytes::Bytes,
    delay_seconds: Option<u32>,
    attributes: std::collections::HashMap<String, String>,
    deduplication_id: String,
) -> Result<crate::queue::Outgoing, QueueError> {
    if body.is_empty() {
        return Err(QueueError::InvalidArgument(format!(
            "{field}body is empty; a message body has 1..=max_message_size bytes"
        )));
    }
    // The fields' names are made only when there is something to check (most sends have no
    // attributes and no deduplication id): they cost two allocations per message.
    if !attributes.is_empty() {
        spool_client::limits::check_message_attributes(
            &format!("{field}attributes"),
            attributes.keys(),
        )
        .map_err(QueueError::InvalidArgument)?;
    }
    if !deduplication_id.is_empty() {
        spool_client::limits::check_deduplication_id(
            &format!("{field}deduplication_id"),
            &deduplication_id,
        )
        .map_err(QueueError::InvalidArgument)?;
    }
    let attributes: MessageAttributes = attributes.into_iter().collect();
    Ok(crate::queue::Outgoing {
        payload: Payload::new(body, attributes),
        delay_seconds: delay_seconds.unwrap_or(0),
        deduplication_id: (!deduplication_id.is_empty()).then_some(deduplication_id),
    })
}

/// BatchChangeMessageVisibility's answer (also a consumer stream's to a nack or an extension):
/// `results[i]` is the outcome for the handle at request index `positions[i]`; `failures`
/// holds the indexes refused before any change (undecodable handles); `handle_at` gives a
/// failed index's receipt handle. Failures come in index order.
pub fn visibility_changes(
    positions: Vec<usize>,
    results: Vec<VisibilityResult>,
    mut failures: Vec<(usize, QueueError)>,
    mut handle_at: impl FnMut(usize) -> String,
) -> (Vec<pb::ChangedVisibility>, Vec<pb::ChangeVisibilityFailure>) {
    let mut changed = Vec::with_capacity(positions.len());
    for (index, result) in positions.into_iter().zip(results) {
        match result {
            Ok(next_visible_ms) => changed.push(pb::ChangedVisibility {
                index: index as u32,
                next_visible_time: Some(timestamp(next_visible_ms)),
            }),
            Err(error) => failures.push((index, error)),
        }
    }
    failures.sort_by_key(|(index, _)| *index);
    let failures = failures
        .into_iter()
        .map(|(index, error)| pb::ChangeVisibilityFailure {
            index: index as u32,
            receipt_handle: handle_at(index),
            code: super::status::code_of(&error) as i32,
            message: error.to_string(),
            cmq_code: error.cmq_code(),
        })
        .collect();
    (changed, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_000, 1_700_000_000_123] {
            assert_eq!(millis(&timestamp(ms), "t"), Ok(ms));
        }
        let bad = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(millis(&bad, "start_time").is_err());
        let huge = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(millis(&huge, "start_time").is_err());
    }
}
