//! What a message carries besides its scheduling state: its body and its attributes, stored
//! together and delivered together.
//!
//! The attributes live in a column of their own beside the body (`meta`), encoded with
//! protobuf so that fields can be added later without a new layout; a message without
//! attributes stores nothing there, so the common case costs nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;

/// A message's application-defined attributes (at most 16; see `limits`).
pub type MessageAttributes = BTreeMap<String, String>;

/// What the `meta` column holds: everything about a message that is delivered with it but is
/// not its body or its scheduling.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MessageMeta {
    /// The attributes it was sent with.
    #[prost(btree_map = "string, string", tag = "1")]
    pub attributes: MessageAttributes,
    /// The topic whose publish made this message (a subscription's copy); empty for a send.
    #[prost(string, tag = "2")]
    pub source_topic: String,
    /// The W3C `traceparent` of the send that enqueued it (Spool's own span of that call, in the
    /// producer's trace), when the send was traced and its attributes carried none. Delivered as
    /// the attribute `traceparent`, so a consumer's span can link to the producer's. Not counted
    /// toward `max_message_size`: the producer did not write it, and it is 55 bytes at most.
    #[prost(string, optional, tag = "3")]
    pub trace_parent: Option<String>,
}

/// The attribute a message's trace context is delivered under (W3C Trace Context's name).
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// Where a dead-lettered message came from (stored in columns of its own, so that the move
/// writes them without reading the message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterOrigin {
    /// The queue it was moved from.
    pub source_queue: Arc<str>,
    /// How many times it had been received there.
    pub receive_count: u32,
}

/// A message's body and attributes, and where it was dead-lettered from, if it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    pub body: Bytes,
    /// None when the message has no attributes: most have none, and they then share nothing.
    pub meta: Option<Arc<MessageMeta>>,
    pub dead_letter: Option<DeadLetterOrigin>,
}

impl Payload {
    pub fn new(body: Bytes, attributes: MessageAttributes) -> Self {
        let meta = (!attributes.is_empty()).then(|| {
            Arc::new(MessageMeta {
                attributes,
                source_topic: String::new(),
                trace_parent: None,
            })
        });
        Self {
            body,
            meta,
            dead_letter: None,
        }
    }

    /// Records the trace context of the send that enqueues it, unless the producer put a
    /// `traceparent` attribute there itself (then that one is the context to follow).
    pub fn with_trace_parent(mut self, trace_parent: String) -> Self {
        let meta = self.meta.get_or_insert_with(Default::default);
        if !meta.attributes.contains_key(TRACEPARENT_ATTRIBUTE) {
            Arc::make_mut(meta).trace_parent = Some(trace_parent);
        }
        self
    }

    /// The attributes delivered with it: the producer's, and the send's `traceparent` if Spool
    /// recorded one.
    pub fn delivered_attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.meta.iter().flat_map(|meta| {
            meta.attributes
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .chain(
                    meta.trace_parent
                        .as_deref()
                        .map(|value| (TRACEPARENT_ATTRIBUTE, value)),
                )
        })
    }

    /// A subscription's copy of a publish to `topic`: the same body and attributes, marked
    /// with the topic it came from.
    pub fn copy_from_topic(&self, topic: &str) -> Self {
        let attributes = self
            .meta
            .as_ref()
            .map(|meta| meta.attributes.clone())
            .unwrap_or_default();
        Self {
            body: self.body.clone(),
            meta: Some(Arc::new(MessageMeta {
                attributes,
                source_topic: topic.to_string(),
                trace_parent: None,
            })),
            dead_letter: None,
        }
    }

    /// The topic this message was published to, if it is a subscription's copy.
    pub fn source_topic(&self) -> &str {
        self.meta
            .as_ref()
            .map_or("", |meta| meta.source_topic.as_str())
    }

    /// Bytes it holds in memory, roughly: what a cache charges for it.
    pub fn size(&self) -> usize {
        self.body.len() + self.meta.as_ref().map_or(0, |meta| meta.encoded_len())
    }

    /// The bytes its attributes count toward `max_message_size` (keys and values).
    pub fn attributes_size(&self) -> usize {
        self.meta.as_ref().map_or(0, |meta| {
            spool_client::limits::attributes_size(&meta.attributes)
        })
    }

    #[cfg(test)]
    pub fn attributes(&self) -> MessageAttributes {
        self.meta
            .as_ref()
            .map(|meta| meta.attributes.clone())
            .unwrap_or_default()
    }

    /// The `meta` column's value: None when there is nothing to store.
    pub fn encoded_meta(&self) -> Option<Vec<u8>> {
        self.meta.as_ref().map(|meta| meta.encode_to_vec())
    }

    /// A payload as stored: its body, its `meta` column (NULL for none) and its dead-letter
    /// columns (`source` NULL for a message never dead-lettered).
    pub fn stored(
        body: Bytes,
        meta: Option<&[u8]>,
        source: Option<String>,
        receive_count: u32,
    ) -> Result<Self, String> {
        let mut payload = Self::decode(body, meta)?;
        payload.dead_letter = source.map(|source| DeadLetterOrigin {
            source_queue: source.into(),
            receive_count,
        });
        Ok(payload)
    }

    /// A payload as stored: its body and its `meta` column (NULL for none).
    pub fn decode(body: Bytes, meta: Option<&[u8]>) -> Result<Self, String> {
        let meta = match meta {
            None | Some([]) => None,
            Some(bytes) => Some(Arc::new(MessageMeta::decode(bytes).map_err(|error| {
                format!("a message's stored attributes are corrupt: {error}")
            })?)),
        };
        Ok(Self {
            body,
            meta,
            dead_letter: None,
        })
    }

    /// A copy that owns its bytes (see `body_cache::BodyCache::insert_copy`).
    pub fn copied(&self) -> Self {
        Self {
            body: Bytes::copy_from_slice(&self.body),
            meta: self.meta.clone(),
            dead_letter: self.dead_letter.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_none_stores_nothing() {
        let plain = Payload::new(Bytes::from_static(b"x"), MessageAttributes::new());
        assert_eq!(plain.encoded_meta(), None);
        let attributes: MessageAttributes = [("traceparent".to_string(), "00-ab".to_string())]
            .into_iter()
            .collect();
        let with = Payload::new(Bytes::from_static(b"y"), attributes.clone());
        let stored = with.encoded_meta().expect("attributes are stored");
        let back = Payload::decode(Bytes::from_static(b"y"), Some(&stored)).expect("decodes");
        assert_eq!(back.attributes(), attributes);
        assert!(Payload::decode(Bytes::new(), Some(&[0xff, 0xff])).is_err());
    }

    #[test]
    fn a_send_trace_context_is_stored_and_delivered_unless_the_producer_set_one() {
        let traced = Payload::new(Bytes::from_static(b"x"), MessageAttributes::new())
            .with_trace_parent("00-a-b-01".into());
        assert_eq!(
            traced.attributes_size(),
            0,
            "not counted toward max_message_size"
        );
        let stored = traced.encoded_meta().expect("stored");
        let back = Payload::decode(Bytes::from_static(b"x"), Some(&stored)).expect("decodes");
        assert_eq!(
            back.delivered_attributes().collect::<Vec<_>>(),
            [("traceparent", "00-a-b-01")]
        );
        let own = MessageAttributes::from([("traceparent".to_string(), "mine".to_string())]);
        let kept = Payload::new(Bytes::from_static(b"x"), own).with_trace_parent("theirs".into());
        assert_eq!(
            kept.delivered_attributes().collect::<Vec<_>>(),
            [("traceparent", "mine")]
        );
    }
}
