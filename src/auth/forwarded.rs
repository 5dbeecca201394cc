//! Who a forwarded call is from, asserted by the replica that authenticated it.
//!
//! A call reaches any replica and is authenticated there: by a bearer token, a client
//! certificate (mTLS), or a signature of the HTTP port's SQS and CMQ APIs. Only the first of
//! those could travel with a forward (the owner sees no certificate, and a signed HTTP request
//! is not a gRPC call), so the forwarding replica asserts the principal instead, in
//! [`IDENTITY_HEADER`]: the principal's name, the time, a nonce, and an HMAC-SHA-256 over them,
//! the call's method path and the target replica's address, with the cluster's forwarding key.
//!
//! The key is made once per schema and kept in PostgreSQL (`secrets`, row
//! [`FORWARD_SECRET`]), so every replica has it and nothing else does: anyone who can read the
//! database can do anything to the queues anyway. The owner accepts the asserted principal only
//! when the MAC verifies for itself as the target and this method, within [`WINDOW`] of its
//! clock, with a nonce not seen before; then it authorizes the call with its own auth file's
//! grants for that principal, as for a call of its own. A client's own copy of the header
//! never verifies and is refused (UNAUTHENTICATED), and a captured one cannot be replayed: not
//! to another replica or method (they are in the MAC), not twice (the nonce), not later (the
//! window).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The metadata a forwarding replica sets (and a client must not).
pub const IDENTITY_HEADER: &str = "spool-forwarded-identity";
/// The name of the forwarding key's row in `secrets`.
pub const FORWARD_SECRET: &str = "cluster_forward_key";
/// Bytes of the forwarding key.
pub const KEY_LEN: usize = 32;
/// How far a forward's time may be from the owner's clock, either way: replicas' clocks are
/// kept by NTP, and a forward is checked the moment it arrives.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Nonces remembered at most (each for twice the window, about 50 bytes each). Beyond it
/// forwards are refused until older ones expire, rather than forgetting nonces early: that is
/// 33,000 forwards a second to one replica for a minute, about 100 MB at worst.
pub const MAX_REMEMBERED_NONCES: usize = 2_000_000;
/// What the MAC's text starts with: the header's version.
const VERSION: &str = "v1";

/// The principal a replica asserts for its own calls (telling an owner of moved messages, see
/// `cluster::adoption`): empty, which no principal of an auth file can be named.
pub const REPLICA_PRINCIPAL: &str = "";

/// In a call's extensions when another replica of the cluster made it for itself.
#[derive(Clone, Copy, Debug)]
pub struct FromReplica;

/// Where the server finds the key once the replica has joined (unset on a single server: a
/// header is then always refused).
pub type ForwardKeySlot = Arc<OnceLock<Arc<ForwardKey>>>;

/// The cluster's forwarding key, and the nonces this replica has accepted.
pub struct ForwardKey {
    secret: [u8; KEY_LEN],
    /// This replica's advertised address: what a forward to it names as its target.
    me: String,
    nonces: Mutex<Nonces>,
}

#[derive(Default)]
struct Nonces {
    /// Expiry (Unix ms) and nonce, in order of arrival.
    order: VecDeque<(u64, u128)>,
    seen: HashSet<u128>,
}

impl ForwardKey {
    pub fn new(secret: [u8; KEY_LEN], me: String) -> Self {
        Self {
            secret,
            me,
            nonces: Mutex::default(),
        }
    }

    /// A fresh random key (made once per schema).
    pub fn generate_secret() -> [u8; KEY_LEN] {
        let mut secret = [0u8; KEY_LEN];
        // The operating system's randomness; a failure here is a broken machine.
        if let Err(error) = getrandom::fill(&mut secret) {
            panic!("no randomness for the cluster's forwarding key: {error}");
        }
        secret
    }

    /// The header value asserting `principal` for a call of `path` forwarded to `target`.
    pub fn sign(&self, principal: &str, path: &str, target: &str) -> String {
        self.sign_at(principal, path, target, now_ms(), &nonce())
    }

    fn sign_at(
        &self,
        principal: &str,
        path: &str,
        target: &str,
        at_ms: u64,
        nonce: &str,
    ) -> String {
        let name = URL_SAFE_NO_PAD.encode(principal.as_bytes());
        let tag = self.mac(&name, path, target, at_ms, nonce);
        format!(
            "{VERSION}.{at_ms}.{nonce}.{name}.{}",
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The principal a forward to this replica of a call of `path` asserts, if the header
    /// verifies; why not otherwise.
    pub fn verify(&self, value: &[u8], path: &str) -> Result<String, String> {
        self.verify_at(value, path, now_ms())
    }

    fn verify_at(&self, value: &[u8], path: &str, now: u64) -> Result<String, String> {
        let value = std::str::from_utf8(value).map_err(|_| "not text".to_string())?;
        let parts: Vec<&str> = value.split('.').collect();
        let [version, at, nonce, name, tag] = parts[..] else {
            return Err("malformed".into());
        };
        if version != VERSION {
            return Err(format!("version {version:?} is not {VERSION:?}"));
        }
        let at_ms: u64 = at.parse().map_err(|_| "malformed time".to_string())?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| "malformed MAC".to_string())?;
        let expected = self.mac(name, path, &self.me, at_ms, nonce);
        if !bool::from(expected.as_slice().ct_eq(&tag)) {
            return Err(
                "its MAC does not verify (not made with this cluster's key for this replica and \
                 method)"
                    .into(),
            );
        }
        if now.abs_diff(at_ms) > WINDOW.as_millis() as u64 {
            return Err(format!(
                "made more than {}s from this replica's clock",
                WINDOW.as_secs()
            ));
        }
        let principal = URL_SAFE_NO_PAD
            .decode(name)
            .ok()
            .and_then(|name| String::from_utf8(name).ok())
            .ok_or_else(|| "malformed principal".to_string())?;
        // Up to 32 hex digits (this replica's own make 32): kept as a number, small in memory.
        let nonce = u128::from_str_radix(nonce, 16).map_err(|_| "malformed nonce".to_string())?;
        self.record(nonce, now)?;
        Ok(principal)
    }

    /// Remembers a verified nonce; refuses one seen within twice the window.
    fn record(&self, nonce: u128, now: u64) -> Result<(), String> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        while nonces
            .order
            .front()
            .is_some_and(|(expiry, _)| *expiry <= now)
        {
            if let Some((_, old)) = nonces.order.pop_front() {
                nonces.seen.remove(&old);
            }
        }
        if nonces.seen.contains(&nonce) {
            return Err("replayed (its nonce was used already)".into());
        }
        if nonces.order.len() >= MAX_REMEMBERED_NONCES {
            return Err(format!(
                "more than {MAX_REMEMBERED_NONCES} forwards within {}s; retry",
                2 * WINDOW.as_secs()
            ));
        }
        // Twice the window: a forward's time may be that far ahead of this clock.
        let expiry = now + 2 * WINDOW.as_millis() as u64;
        nonces.order.push_back((expiry, nonce));
        nonces.seen.insert(nonce);
        Ok(())
    }

    fn mac(&self, name: &str, path: &str, target: &str, at_ms: u64, nonce: &str) -> Vec<u8> {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return Vec::new();
        };
        // Newlines separate the fields: none can contain one (the name is base64, the path a
        // gRPC method's, the target an address, the nonce hex).
        mac.update(
            format!("spool-forward-{VERSION}\n{at_ms}\n{nonce}\n{name}\n{path}\n{target}")
                .as_bytes(),
        );
        mac.finalize().into_bytes().to_vec()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 16 random bytes, in hex.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if let Err(error) = getrandom::fill(&mut bytes) {
        panic!("no randomness for a forward's nonce: {error}");
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The gRPC path of a QueueService method, from its handler's name (`send_message` →
/// `/spool.v1.QueueService/SendMessage`): what a forward's MAC covers.
pub fn method_path(handler: &str) -> String {
    let mut path = String::from("/spool.v1.QueueService/");
    for word in handler.split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            path.extend(first.to_uppercase());
            path.push_str(chars.as_str());
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/spool.v1.QueueService/SendMessage";

    fn keys() -> (ForwardKey, ForwardKey) {
        let secret = [7u8; KEY_LEN];
        (
            ForwardKey::new(secret, "10.0.0.1:50051".into()),
            ForwardKey::new(secret, "10.0.0.2:50051".into()),
        )
    }

    #[test]
    fn a_forward_verifies_once_for_its_target_and_method_only() {
        let (first, second) = keys();
        let now = 1_000_000_000;
        let value = first.sign_at("orders worker ✓", PATH, "10.0.0.2:50051", now, "aa");
        assert_eq!(
            second.verify_at(value.as_bytes(), PATH, now + 5).as_deref(),
            Ok("orders worker ✓")
        );
        // Replayed to the same replica.
        let replayed = second.verify_at(value.as_bytes(), PATH, now + 6);
        assert!(replayed.expect_err("replay").contains("replayed"));
        // To another replica, or another method.
        assert!(first.verify_at(value.as_bytes(), PATH, now).is_err());
        let other = first.sign_at("p", PATH, "10.0.0.2:50051", now, "bb");
        let refused = second
            .verify_at(other.as_bytes(), "/spool.v1.QueueService/PurgeQueue", now)
            .expect_err("another method");
        assert!(refused.contains("MAC"), "{refused}");
        // Too old, or too far ahead.
        let old = first.sign_at("p", PATH, "10.0.0.2:50051", now, "cc");
        let late = now + WINDOW.as_millis() as u64 + 1;
        assert!(second.verify_at(old.as_bytes(), PATH, late).is_err());
        let ahead = first.sign_at("p", PATH, "10.0.0.2:50051", late, "dd");
        assert!(second.verify_at(ahead.as_bytes(), PATH, now).is_err());
    }

    #[test]
    fn forged_or_altered_headers_are_refused() {
        let (first, second) = keys();
        let now = 1_000_000_000;
        let value = first.sign_at("reader", PATH, "10.0.0.2:50051", now, "ee");
        // Another principal's name with the MAC of this one.
        let admin = URL_SAFE_NO_PAD.encode("admin");
        let reader = URL_SAFE_NO_PAD.encode("reader");
        let altered = value.replace(&reader, &admin);
        assert!(second.verify_at(altered.as_bytes(), PATH, now).is_err());
        // Another cluster's key.
        let stranger = ForwardKey::new([8u8; KEY_LEN], "x".into());
        let forged = stranger.sign_at("admin", PATH, "10.0.0.2:50051", now, "ff");
        assert!(second.verify_at(forged.as_bytes(), PATH, now).is_err());
        for junk in ["", "v1", "v1.1.2.3", "v2.1.a.b.c", "admin"] {
            assert!(
                second.verify_at(junk.as_bytes(), PATH, now).is_err(),
                "{junk}"
            );
        }
        // The real one still verifies: refusals record no nonce.
        assert!(second.verify_at(value.as_bytes(), PATH, now).is_ok());
    }

    #[test]
    fn handler_names_become_method_paths() {
        assert_eq!(method_path("send_message"), PATH);
        assert_eq!(
            method_path("list_dead_letter_source_queues"),
            "/spool.v1.QueueService/ListDeadLetterSourceQueues"
        );
    }
}
