//! What the client commands print: one JSON object per line, with field names as in the proto,
//! times in RFC 3339 (UTC), and bodies as text or, when not UTF-8, as base64.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use super::time::format_timestamp;
use crate::pb;

/// A queue: attributes, counters, times.
#[derive(Serialize)]
pub struct QueueJson<'a> {
    pub name: &'a str,
    pub attributes: AttributesJson,
    pub stats: StatsJson,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

#[derive(Serialize)]
pub struct AttributesJson {
    pub visibility_timeout_seconds: Option<u32>,
    pub polling_wait_seconds: Option<u32>,
    pub max_message_size: Option<u32>,
    pub message_retention_seconds: Option<u32>,
    pub rewind_seconds: Option<u32>,
    pub max_backlog: Option<u64>,
    pub deduplication_window_seconds: Option<u32>,
    pub max_bytes: Option<u64>,
    /// Absent when the queue has no dead-letter policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_policy: Option<DeadLetterPolicyJson>,
}

#[derive(Serialize)]
pub struct DeadLetterPolicyJson {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
    pub max_time_to_live_seconds: u32,
}

#[derive(Serialize)]
pub struct StatsJson {
    pub active_messages: u64,
    pub inactive_messages: u64,
    pub delayed_messages: u64,
    pub rewindable_messages: u64,
    pub oldest_message_time: Option<String>,
    pub backlog_bytes: u64,
}

impl<'a> From<&'a pb::Queue> for QueueJson<'a> {
    fn from(queue: &'a pb::Queue) -> Self {
        let attributes = queue.attributes.clone().unwrap_or_default();
        let stats = queue.stats.unwrap_or_default();
        Self {
            name: &queue.name,
            attributes: AttributesJson {
                visibility_timeout_seconds: attributes.visibility_timeout_seconds,
                polling_wait_seconds: attributes.polling_wait_seconds,
                max_message_size: attributes.max_message_size,
                message_retention_seconds: attributes.message_retention_seconds,
                rewind_seconds: attributes.rewind_seconds,
                max_backlog: attributes.max_backlog,
                deduplication_window_seconds: attributes.deduplication_window_seconds,
                max_bytes: attributes.max_bytes,
                dead_letter_policy: attributes.dead_letter_policy.map(|policy| {
                    DeadLetterPolicyJson {
                        dead_letter_queue: policy.dead_letter_queue,
                        max_receive_count: policy.max_receive_count,
                        max_time_to_live_seconds: policy.max_time_to_live_seconds,
                    }
                }),
            },
            stats: StatsJson {
                active_messages: stats.active_messages,
                inactive_messages: stats.inactive_messages,
                delayed_messages: stats.delayed_messages,
                rewindable_messages: stats.rewindable_messages,
                oldest_message_time: stats.oldest_message_time.as_ref().map(format_timestamp),
                backlog_bytes: stats.backlog_bytes,
            },
            create_time: queue.create_time.as_ref().map(format_timestamp),
            update_time: queue.update_time.as_ref().map(format_timestamp),
        }
    }
}

/// A received message. Exactly one of `body` and `body_base64` is present.
#[derive(Serialize)]
pub struct MessageJson<'a> {
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
    /// The body, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    /// The body in standard base64 (with padding), when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub enqueue_time: Option<String>,
    pub first_dequeue_time: Option<String>,
    pub next_visible_time: Option<String>,
    pub dequeue_count: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<&'a str, &'a str>,
    /// For a dead-lettered message: the queue it came from, and its receives there.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub dead_letter_source_queue: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_letter_receive_count: u32,
    /// For a copy of a message published to a topic: the topic.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub source_topic: &'a str,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// Attributes in key order, so the output is the same from run to run.
fn sorted(attributes: &std::collections::HashMap<String, String>) -> BTreeMap<&str, &str> {
    attributes
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

impl<'a> From<&'a pb::ReceivedMessage> for MessageJson<'a> {
    fn from(message: &'a pb::ReceivedMessage) -> Self {
        let (body, body_base64) = match std::str::from_utf8(&message.body) {
            Ok(text) => (Some(text), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&message.body)),
            ),
        };
        Self {
            message_id: &message.message_id,
            receipt_handle: &message.receipt_handle,
            body,
            body_base64,
            enqueue_time: message.enqueue_time.as_ref().map(format_timestamp),
            first_dequeue_time: message.first_dequeue_time.as_ref().map(format_timestamp),
            next_visible_time: message.next_visible_time.as_ref().map(format_timestamp),
            dequeue_count: message.dequeue_count,
            attributes: sorted(&message.attributes),
            dead_letter_source_queue: &message.dead_letter_source_queue,
            dead_letter_receive_count: message.dead_letter_receive_count,
            source_topic: &message.source_topic,
        }
    }
}

/// The answer to `send`.
#[derive(Serialize)]
pub struct SentJson<'a> {
    pub message_id: &'a str,
}

/// The answer to `queue delete` and `delete`.
#[derive(Serialize)]
pub struct DeletedJson<'a> {
    pub queue_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_handle: Option<&'a str>,
    pub deleted: bool,
}

/// The answer to `rewind`.
#[derive(Serialize)]
pub struct RewoundJson<'a> {
    pub queue_name: &'a str,
    pub restored_messages: u64,
}

/// The answer to `queue purge`.
#[derive(Serialize)]
pub struct PurgedJson<'a> {
    pub queue_name: &'a str,
    pub purged_messages: u64,
}

/// The answer to `change-visibility` and `nack`.
#[derive(Serialize)]
pub struct VisibilityJson<'a> {
    pub queue_name: &'a str,
    pub receipt_handle: &'a str,
    pub next_visible_time: String,
}

/// A peeked message: a received message's fields but the receive's own (handle, next visible
/// time). Exactly one of `body` and `body_base64` is present.
#[derive(Serialize)]
pub struct PeekedJson<'a> {
    pub message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub enqueue_time: Option<String>,
    pub first_dequeue_time: Option<String>,
    pub dequeue_count: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub dead_letter_source_queue: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_letter_receive_count: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub source_topic: &'a str,
}

impl<'a> From<&'a pb::PeekedMessage> for PeekedJson<'a> {
    fn from(message: &'a pb::PeekedMessage) -> Self {
        let (body, body_base64) = match std::str::from_utf8(&message.body) {
            Ok(text) => (Some(text), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&message.body)),
            ),
        };
        Self {
            message_id: &message.message_id,
            body,
            body_base64,
            enqueue_time: message.enqueue_time.as_ref().map(format_timestamp),
            first_dequeue_time: message.first_dequeue_time.as_ref().map(format_timestamp),
            dequeue_count: message.dequeue_count,
            attributes: sorted(&message.attributes),
            dead_letter_source_queue: &message.dead_letter_source_queue,
            dead_letter_receive_count: message.dead_letter_receive_count,
            source_topic: &message.source_topic,
        }
    }
}

/// The answer to `redrive`.
#[derive(Serialize)]
pub struct RedrivenJson<'a> {
    pub queue_name: &'a str,
    pub redriven_messages: u64,
    pub skipped_messages: u64,
}

/// The answer to `dead-letter-sources`.
#[derive(Serialize)]
pub struct SourcesJson<'a> {
    pub queue_name: &'a str,
    pub source_queues: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> pb::ReceivedMessage {
        pb::ReceivedMessage {
            message_id: "7".into(),
            receipt_handle: "h".into(),
            body: body.to_vec().into(),
            enqueue_time: Some(prost_types::Timestamp {
                seconds: 1_488_718_862,
                nanos: 0,
            }),
            first_dequeue_time: None,
            next_visible_time: None,
            dequeue_count: 2,
            ..Default::default()
        }
    }

    #[test]
    fn text_bodies_are_text_and_others_base64() {
        let text = message("héllo \"you\"\n".as_bytes());
        let json = serde_json::to_value(MessageJson::from(&text)).expect("json");
        assert_eq!(json["body"], "héllo \"you\"\n");
        assert!(json.get("body_base64").is_none());
        assert_eq!(json["enqueue_time"], "2017-03-05T13:01:02Z");
        assert_eq!(json["first_dequeue_time"], serde_json::Value::Null);
        assert_eq!(json["dequeue_count"], 2);

        let binary = message(&[0xff, 0x00, 0xfe]);
        let json = serde_json::to_value(MessageJson::from(&binary)).expect("json");
        assert!(json.get("body").is_none());
        assert_eq!(json["body_base64"], "/wD+");
    }
}
