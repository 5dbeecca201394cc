//! Who a CMQ request comes from. Without an auth file, anyone (as on the gRPC port). With one,
//! requests must carry CMQ's signature (SecretId, Nonce, Timestamp, SignatureMethod,
//! Signature) by a principal's signing key; this server does not verify it yet, so it refuses
//! them rather than serve them unchecked.

use std::collections::BTreeMap;

use super::Edge;
use crate::auth::Caller;

/// Nonces seen recently (to refuse replays), bounded.
#[derive(Debug, Default)]
pub struct NonceCache {}

/// The caller of a request, or the refusal's message.
pub fn authenticate(edge: &Edge, _params: &BTreeMap<String, String>) -> Result<Caller, String> {
    let _ = &edge.nonces;
    match &edge.authenticator {
        None => Ok(Caller::Anyone),
        Some(_) => Err(
            "CMQ requests cannot be authenticated by this server yet: run the HTTP port without \
             --auth-file, on loopback (see docs/compat.md)"
                .into(),
        ),
    }
}
