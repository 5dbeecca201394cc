//! Receipt handles: opaque, unguessable names of one receive of one message.
//!
//! A handle is the message id and a random 64-bit nonce drawn at the receive, as 32 hex digits.
//! The nonce is what makes it unguessable and what tells a handle of an older receive from the
//! newest one; the actor compares it with the message's current nonce.

use std::fmt;

use crate::error::QueueError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReceiptHandle {
    pub message_id: u64,
    pub nonce: u64,
}

const HANDLE_LEN: usize = 32;

impl ReceiptHandle {
    /// Parses a handle given by a client; `field` names it in the error (and is formatted only
    /// then).
    pub fn parse(text: &str, field: &dyn fmt::Display) -> Result<Self, QueueError> {
        let malformed = || {
            QueueError::InvalidArgument(format!(
                "{field} is not a receipt handle issued by Spool (expected {HANDLE_LEN} hex digits)"
            ))
        };
        if text.len() != HANDLE_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let message_id = u64::from_str_radix(&text[..16], 16).map_err(|_| malformed())?;
        let nonce = u64::from_str_radix(&text[16..], 16).map_err(|_| malformed())?;
        if nonce == 0 {
            return Err(malformed());
        }
        Ok(Self { message_id, nonce })
    }
}

impl ReceiptHandle {
    /// The handle as clients see it: 32 lowercase hex digits. Written digit by digit into a
    /// string of the right size, as every received message needs one: `format!` grew its
    /// string three times per handle, which showed in profiles of the receive path.
    pub fn encode(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(HANDLE_LEN);
        for word in [self.message_id, self.nonce] {
            for shift in (0..16).rev() {
                text.push(DIGITS[((word >> (shift * 4)) & 0xf) as usize] as char);
            }
        }
        text
    }
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
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

    #[test]
    fn round_trips() {
        let handle = ReceiptHandle {
            message_id: 42,
            nonce: 0xdead_beef_0123_4567,
        };
        let text = handle.encode();
        assert_eq!(text, "000000000000002adeadbeef01234567");
        assert_eq!(handle.to_string(), text);
        assert_eq!(ReceiptHandle::parse(&text, &"h"), Ok(handle));
        let extreme = ReceiptHandle {
            message_id: u64::MAX,
            nonce: 1,
        };
        assert_eq!(extreme.encode(), "ffffffffffffffff0000000000000001");
        assert_eq!(ReceiptHandle::parse(&extreme.encode(), &"h"), Ok(extreme));
    }

    #[test]
    fn refuses_malformed() {
        for bad in ["", "xyz", &"g".repeat(32), &"0".repeat(32), &"a".repeat(33)] {
            let err = ReceiptHandle::parse(bad, &"receipt_handle").unwrap_err();
            assert!(matches!(err, QueueError::InvalidArgument(m) if m.contains("receipt_handle")));
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
