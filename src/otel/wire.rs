//! What a span says about a call, read off the gRPC messages as they pass, without decoding
//! them whole or holding them: the queue a request names and the message ids a response
//! carries are each message's field 1 (a string), or field 1 of its field 1 for the calls that
//! wrap their messages (StreamMessages, PeekMessages). Only the first [`CAPTURED_BYTES`] of a
//! message are looked at; the rest passes by.

/// Bytes of each message kept to find its field 1 in: a queue name is at most 64 bytes, a
/// batch's 16 ids a few hundred, a peek's first entries (bodies included) a few KiB.
const CAPTURED_BYTES: usize = 4 * 1024;
/// Strings one call records at most (a consumer stream may deliver millions of messages).
pub const MAX_STRINGS: usize = 64;

/// Where the strings are in each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every field 1 (a string) at the message's start.
    Flat,
    /// Field 1 of each field 1 (a message) at the message's start.
    Nested,
}

/// A gRPC message's prefix: a compression flag and a big-endian u32 length.
const GRPC_HEADER_LEN: usize = 5;

/// Walks the gRPC framing of a body chunk by chunk, collecting the strings.
#[derive(Debug)]
pub struct FieldOne {
    shape: Shape,
    /// Messages to look at; the later ones pass by (a request names its queue once).
    messages_left: usize,
    header: [u8; GRPC_HEADER_LEN],
    header_filled: usize,
    /// Bytes of the current message still to come.
    payload_left: usize,
    captured: Vec<u8>,
    /// The current message is compressed: not read.
    compressed: bool,
    pub found: Vec<String>,
}

impl FieldOne {
    pub fn new(shape: Shape, messages: usize) -> Self {
        Self {
            shape,
            messages_left: messages,
            header: [0; GRPC_HEADER_LEN],
            header_filled: 0,
            payload_left: 0,
            captured: Vec::new(),
            compressed: false,
            found: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.messages_left > 0 {
            if self.payload_left > 0 {
                let taken = self.payload_left.min(chunk.len());
                let room = CAPTURED_BYTES.saturating_sub(self.captured.len());
                if !self.compressed {
                    self.captured.extend_from_slice(&chunk[..taken.min(room)]);
                }
                self.payload_left -= taken;
                chunk = &chunk[taken..];
                if self.payload_left == 0 {
                    self.end_message();
                }
                continue;
            }
            let taken = (GRPC_HEADER_LEN - self.header_filled).min(chunk.len());
            self.header[self.header_filled..self.header_filled + taken]
                .copy_from_slice(&chunk[..taken]);
            self.header_filled += taken;
            chunk = &chunk[taken..];
            if self.header_filled == GRPC_HEADER_LEN {
                self.header_filled = 0;
                let [flag, a, b, c, d] = self.header;
                self.compressed = flag & 1 == 1;
                self.payload_left = u32::from_be_bytes([a, b, c, d]) as usize;
                if self.payload_left == 0 {
                    self.end_message();
                }
            }
        }
    }

    fn end_message(&mut self) {
        let captured = std::mem::take(&mut self.captured);
        match self.shape {
            Shape::Flat => self.collect(&captured),
            Shape::Nested => {
                for inner in field_ones(&captured) {
                    self.collect(inner);
                }
            }
        }
        self.messages_left -= 1;
    }

    fn collect(&mut self, message: &[u8]) {
        for value in field_ones(message) {
            if self.found.len() >= MAX_STRINGS {
                return;
            }
            if let Ok(text) = std::str::from_utf8(value) {
                self.found.push(text.to_string());
            }
        }
    }
}

/// The values of the field-1 entries (length-delimited) at the start of a message, as far as
/// they lie whole within `message`.
fn field_ones(mut message: &[u8]) -> Vec<&[u8]> {
    let mut values = Vec::new();
    // Tag of field 1, wire type 2 (length-delimited).
    while message.first() == Some(&0x0a) {
        let Some((length, used)) = varint(&message[1..]) else {
            break;
        };
        let start = 1 + used;
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| start.checked_add(length))
            .filter(|end| *end <= message.len())
        else {
            break;
        };
        values.push(&message[start..end]);
        message = &message[end..];
    }
    values
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_field(number: u8, text: &str) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, text.len() as u8];
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn strings_are_found_across_chunk_boundaries() {
        // Two ReceivedMessage-like messages: id, then a body (field 3).
        let mut body = Vec::new();
        for id in ["17", "18"] {
            let mut message = string_field(1, id);
            message.extend(string_field(3, "payload"));
            body.extend(framed(&message));
        }
        for split in 0..body.len() {
            let mut reader = FieldOne::new(Shape::Flat, usize::MAX);
            reader.feed(&body[..split]);
            reader.feed(&body[split..]);
            assert_eq!(reader.found, ["17", "18"], "split at {split}");
        }
    }

    #[test]
    fn nested_and_repeated_fields_and_the_first_message_only() {
        // A batch response: repeated ids in field 1.
        let mut batch = string_field(1, "1");
        batch.extend(string_field(1, "2"));
        let mut reader = FieldOne::new(Shape::Flat, usize::MAX);
        reader.feed(&framed(&batch));
        assert_eq!(reader.found, ["1", "2"]);
        // A stream's start: field 1 (StreamStart) holding field 1 (the queue); then an
        // acknowledgement that is not looked at.
        let start = framed(&{
            let inner = string_field(1, "orders");
            let mut outer = vec![0x0a, inner.len() as u8];
            outer.extend(inner);
            outer
        });
        let mut reader = FieldOne::new(Shape::Nested, 1);
        reader.feed(&start);
        reader.feed(&framed(&string_field(1, "ignored")));
        assert_eq!(reader.found, ["orders"]);
    }
}
