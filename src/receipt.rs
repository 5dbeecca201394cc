//! Receipt handles: opaque, unforgeable names of one receive of one message.
//!
//! A handle names the queue incarnation that issued it (its queue id, never reused, so a queue
//! deleted and created again under the same name refuses the old queue's handles), the message,
//! the receive (its number, `dequeue_count` at that receive, and a random 64-bit nonce drawn for
//! it) and ends with an HMAC-SHA-256 tag, truncated to 96 bits, under a key that the server keeps
//! in storage. So a handle cannot be made up or altered, and it survives restarts. Text form:
//! base64url (no padding) of
//!
//! ```text
//! version (1 byte) | queue id (8) | message id (8) | nonce (8) | receive number (4) | tag (12)
//! ```
//!
//! The tag is checked here, at the edge; which receive of a message may still delete it is the
//! queue actor's call (see `queue::messages`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

use crate::error::QueueError;

/// One receive of one message, as a handle names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReceiptHandle {
    /// The queue incarnation that issued it.
    pub queue_id: u64,
    pub message_id: u64,
    /// Drawn at random for the receive; never 0.
    pub nonce: u64,
    /// The message's `dequeue_count` at this receive: 1 for its first receive.
    pub receive_count: u32,
}

/// The format written by this version; others are refused as malformed.
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 8 + 8 + 8 + 4;
/// 96 bits: a forger's chance per attempt is 2^-96.
const TAG_LEN: usize = 12;
const HANDLE_BYTES: usize = PAYLOAD_LEN + TAG_LEN;
/// Length of the secret kept in storage.
pub const KEY_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Signs and checks receipt handles with the server's key. Cheap to clone; the keyed HMAC state
/// is computed once and copied per handle.
#[derive(Clone)]
pub struct ReceiptKey {
    mac: HmacSha256,
}

impl fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReceiptKey(<secret>)")
    }
}

impl ReceiptKey {
    pub fn new(secret: &[u8; KEY_LEN]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// A new random secret, for a new database.
    pub fn generate_secret() -> [u8; KEY_LEN] {
        let mut secret = [0u8; KEY_LEN];
        // As for nonces: no weaker fallback, so retry.
        while getrandom::fill(&mut secret).is_err() {}
        secret
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The handle as clients see it.
    pub fn encode(&self, handle: &ReceiptHandle) -> String {
        let mut bytes = [0u8; HANDLE_BYTES];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&handle.queue_id.to_be_bytes());
        bytes[9..17].copy_from_slice(&handle.message_id.to_be_bytes());
        bytes[17..25].copy_from_slice(&handle.nonce.to_be_bytes());
        bytes[25..29].copy_from_slice(&handle.receive_count.to_be_bytes());
        let tag = self.tag(&bytes[..PAYLOAD_LEN]);
        bytes[PAYLOAD_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a handle given by a client and checks that this server issued it; `field` names it
    /// in the error (and is formatted only then). Whether it names this queue is for the caller.
    pub fn decode(
        &self,
        text: &str,
        field: &dyn fmt::Display,
    ) -> Result<ReceiptHandle, QueueError> {
        let malformed = || {
            QueueError::InvalidArgument(format!(
                "{field} is not a receipt handle: pass the receipt_handle of a received message \
                 unchanged"
            ))
        };
        // The length test first bounds the work a long string can cause.
        if text.len() != encoded_len() {
            return Err(malformed());
        }
        let mut bytes = [0u8; HANDLE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(HANDLE_BYTES) => {}
            _ => return Err(malformed()),
        }
        if bytes[0] != VERSION {
            return Err(malformed());
        }
        let mut mac = self.mac.clone();
        mac.update(&bytes[..PAYLOAD_LEN]);
        // Constant-time comparison of the truncated tag.
        if mac.verify_truncated_left(&bytes[PAYLOAD_LEN..]).is_err() {
            return Err(QueueError::InvalidArgument(format!(
                "{field} was not issued by this server: its signature does not match (it was \
                 altered, made up, or issued by another Spool deployment)"
            )));
        }
        let word = |range: std::ops::Range<usize>| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[range]);
            u64::from_be_bytes(word)
        };
        let mut count = [0u8; 4];
        count.copy_from_slice(&bytes[25..29]);
        Ok(ReceiptHandle {
            queue_id: word(1..9),
            message_id: word(9..17),
            nonce: word(17..25),
            receive_count: u32::from_be_bytes(count),
        })
    }
}

/// Characters of a handle's text form.
const fn encoded_len() -> usize {
    (HANDLE_BYTES * 4).div_ceil(3)
}

/// The name of one entry of a list field in an error message, `name[index]`: formatted only
/// when an error needs it, not for every entry of every batch.
#[derive(Clone, Copy, Debug)]
pub struct Indexed<'a>(pub &'a str, pub usize);

impl fmt::Display for Indexed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

/// The name of a field of one entry of a list field, `list[index].field`, formatted only when
/// an error needs it.
#[derive(Clone, Copy, Debug)]
pub struct IndexedField<'a>(pub &'a str, pub usize, pub &'a str);

impl fmt::Display for IndexedField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}].{}", self.0, self.1, self.2)
    }
}

/// How many nonces one call to the OS random source draws.
const NONCES_PER_DRAW: usize = 64;

/// Nonces from the operating system's CSPRNG, drawn 64 at a time: a receive of 16 messages
/// would otherwise make 16 getrandom system calls.
pub struct Nonces {
    drawn: [u64; NONCES_PER_DRAW],
    next: usize,
}

impl Default for Nonces {
    fn default() -> Self {
        Self::new()
    }
}

impl Nonces {
    pub fn new() -> Self {
        Self {
            drawn: [0; NONCES_PER_DRAW],
            next: NONCES_PER_DRAW,
        }
    }

    /// The next nonzero nonce (0 means "never received").
    pub fn next_nonce(&mut self) -> u64 {
        loop {
            if self.next == NONCES_PER_DRAW {
                self.draw();
            }
            let nonce = self.drawn[self.next];
            self.next += 1;
            if nonce != 0 {
                return nonce;
            }
        }
    }

    fn draw(&mut self) {
        let mut bytes = [0u8; NONCES_PER_DRAW * 8];
        // The OS random source failing is not something a request can cause or recover from;
        // falling back to a weaker source would make handles guessable, so retry.
        while getrandom::fill(&mut bytes).is_err() {}
        for (nonce, chunk) in self.drawn.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *nonce = u64::from_ne_bytes(word);
        }
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ReceiptKey {
        ReceiptKey::new(&[byte; KEY_LEN])
    }

    fn handle() -> ReceiptHandle {
        ReceiptHandle {
            queue_id: 3,
            message_id: 42,
            nonce: 0xdead_beef_0123_4567,
            receive_count: 2,
        }
    }

    #[test]
    fn round_trips() {
        let key = key(7);
        for handle in [
            handle(),
            ReceiptHandle {
                queue_id: u64::MAX,
                message_id: u64::MAX,
                nonce: 1,
                receive_count: u32::MAX,
            },
        ] {
            let text = key.encode(&handle);
            assert_eq!(text.len(), encoded_len());
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(key.decode(&text, &"h"), Ok(handle));
        }
    }

    #[test]
    fn refuses_malformed_without_talking_of_hex() {
        let key = key(7);
        let long = "A".repeat(encoded_len() + 1);
        let wrong_version = {
            let mut text = key.encode(&handle()).into_bytes();
            text[0] = b'B'; // the version byte's bits change
            String::from_utf8(text).expect("ascii")
        };
        for bad in [
            "",
            "xyz",
            "00000000000fffff1234567890abcdef",
            &long,
            &"!".repeat(encoded_len()),
            &wrong_version,
        ] {
            let err = key.decode(bad, &"receipt_handle").unwrap_err();
            let QueueError::InvalidArgument(message) = err else {
                panic!("{bad:?}: {err:?}")
            };
            assert!(message.starts_with("receipt_handle "), "{message}");
            assert!(!message.contains("hex"), "{message}");
        }
    }

    #[test]
    fn refuses_forged_and_foreign_handles() {
        let text = key(7).encode(&handle());
        // Another server's key.
        let err = key(8).decode(&text, &"receipt_handle").unwrap_err();
        assert!(
            matches!(&err, QueueError::InvalidArgument(m) if m.contains("not issued by this server")),
            "{err:?}"
        );
        // Any one payload byte changed: the tag no longer matches.
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).expect("base64");
        for index in 1..PAYLOAD_LEN {
            bytes[index] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(key(7).decode(&altered, &"h").is_err(), "byte {index}");
            bytes[index] ^= 1;
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(Nonces::new().next_nonce(), Nonces::new().next_nonce());
        // Across draws too: 200 nonces span four draws of 64, all distinct and nonzero.
        let mut nonces = Nonces::new();
        let drawn: std::collections::HashSet<u64> = (0..200).map(|_| nonces.next_nonce()).collect();
        assert_eq!(drawn.len(), 200);
        assert!(!drawn.contains(&0));
    }
}
