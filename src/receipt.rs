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
    /// Parses a handle given by a client; `field` names it in the error.
    pub fn parse(text: &str, field: &str) -> Result<Self, QueueError> {
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

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.message_id, self.nonce)
    }
}

/// A fresh nonzero nonce from the operating system's CSPRNG (0 means "never received").
pub fn fresh_nonce() -> u64 {
    loop {
        // The OS random source failing is not something a request can cause or recover from;
        // falling back to a weaker source would make handles guessable, so retry.
        if let Ok(nonce) = getrandom::u64()
            && nonce != 0
        {
            return nonce;
        }
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
        let text = handle.to_string();
        assert_eq!(text.len(), HANDLE_LEN);
        assert_eq!(ReceiptHandle::parse(&text, "h"), Ok(handle));
    }

    #[test]
    fn refuses_malformed() {
        for bad in ["", "xyz", &"g".repeat(32), &"0".repeat(32), &"a".repeat(33)] {
            let err = ReceiptHandle::parse(bad, "receipt_handle").unwrap_err();
            assert!(matches!(err, QueueError::InvalidArgument(m) if m.contains("receipt_handle")));
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}
