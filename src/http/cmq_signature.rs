//! Who a CMQ request comes from. Without an auth file, anyone (as on the gRPC port). With one,
//! a request must be signed as CMQ's SDKs sign: `SecretId` (a principal's `signing_key_id`),
//! `Nonce`, `Timestamp` (Unix seconds), `SignatureMethod` (`HmacSHA1` or `HmacSHA256`) and
//! `Signature`, the base64 HMAC with the key's secret of
//! `METHOD + Host + path + "?" + k=v&...` over every other parameter sorted by name, values as
//! sent (before form encoding). A timestamp more than [`TIMESTAMP_WINDOW`] away from the
//! server's clock is refused, and so is a nonce the same key used within that window (the
//! [`NonceCache`], bounded).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

use super::Edge;
use crate::auth::Caller;

/// How far a request's `Timestamp` may be from the server's clock, either way.
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(300);
/// Nonces remembered at most; beyond it (more signed requests within the window than this)
/// requests are refused until older nonces expire, rather than forgetting them early.
pub const MAX_REMEMBERED_NONCES: usize = 1_000_000;

/// Why a signed request was refused: the message CMQ's answer carries.
pub type Refusal = String;

/// (key id, nonce) pairs seen within the timestamp window, oldest first, to refuse replays.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: Mutex<Nonces>,
}

#[derive(Debug, Default)]
struct Nonces {
    /// Expiry (Unix seconds) and key, in order of arrival.
    order: VecDeque<(u64, (String, String))>,
    keys: HashSet<(String, String)>,
}

impl NonceCache {
    /// Records `nonce` of `key_id` at `now`; false if it was seen within the window.
    fn record(&self, key_id: &str, nonce: &str, now: u64) -> Result<(), Refusal> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while seen.order.front().is_some_and(|(expiry, _)| *expiry <= now) {
            if let Some((_, key)) = seen.order.pop_front() {
                seen.keys.remove(&key);
            }
        }
        let key = (key_id.to_string(), nonce.to_string());
        if seen.keys.contains(&key) {
            return Err(format!(
                "Nonce {nonce:?} was already used by this SecretId within the last {}s \
                 (a replayed request)",
                TIMESTAMP_WINDOW.as_secs()
            ));
        }
        if seen.order.len() >= MAX_REMEMBERED_NONCES {
            return Err(format!(
                "too many signed requests in the last {}s to remember their nonces; retry",
                TIMESTAMP_WINDOW.as_secs()
            ));
        }
        // Twice the window: a timestamp may be that far ahead of the clock.
        let expiry = now + 2 * TIMESTAMP_WINDOW.as_secs();
        seen.order.push_back((expiry, key.clone()));
        seen.keys.insert(key);
        Ok(())
    }
}

/// The caller of a request, or the refusal's message.
pub fn authenticate(
    edge: &Edge,
    method: &str,
    host: &str,
    path: &str,
    params: &BTreeMap<String, String>,
) -> Result<Caller, Refusal> {
    let Some(authenticator) = &edge.authenticator else {
        return Ok(Caller::Anyone);
    };
    let field = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("the request is not signed: {name} is missing"))
    };
    let key_id = field("SecretId")?;
    let nonce = field("Nonce")?;
    let timestamp = field("Timestamp")?;
    let signature = field("Signature")?;
    let method_name = params
        .get("SignatureMethod")
        .map(String::as_str)
        .unwrap_or("HmacSHA1");
    let Some((principal, secret)) = authenticator.principals().by_signing_key(key_id) else {
        return Err(format!("SecretId {key_id:?} is not known"));
    };
    let text = string_to_sign(method, host, path, params);
    let expected = match method_name {
        "HmacSHA1" => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose())
                .map_err(|_| "the signing secret cannot key an HMAC".to_string())?;
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HmacSHA256" => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose())
                .map_err(|_| "the signing secret cannot key an HMAC".to_string())?;
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        other => {
            return Err(format!(
                "SignatureMethod {other:?} is not HmacSHA1 or HmacSHA256"
            ));
        }
    };
    let presented = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .unwrap_or_default();
    if !bool::from(presented.ct_eq(&expected)) {
        return Err(
            "the Signature does not match the request (a wrong secret, or a request \
                    changed after signing)"
                .into(),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("Timestamp {timestamp:?} is not Unix seconds"))?;
    if stamp.abs_diff(now) > TIMESTAMP_WINDOW.as_secs() {
        return Err(format!(
            "Timestamp {stamp} is more than {}s away from the server's clock ({now})",
            TIMESTAMP_WINDOW.as_secs()
        ));
    }
    edge.nonces.record(key_id, nonce, now)?;
    Ok(Caller::Principal(principal))
}

/// What CMQ's SDKs sign: `METHOD + host + path + "?" + k=v&...`, every parameter but
/// `Signature`, sorted, `_` in names written `.`; on POST, values starting with `@` are left
/// out (the SDKs' file-upload convention).
fn string_to_sign(
    method: &str,
    host: &str,
    path: &str,
    params: &BTreeMap<String, String>,
) -> String {
    let post = method.eq_ignore_ascii_case("POST");
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(key, value)| *key != "Signature" && !(post && value.starts_with('@')))
        .map(|(key, value)| (key.replace('_', "."), value.as_str()))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    format!(
        "{}{host}{path}?{}",
        method.to_ascii_uppercase(),
        query.join("&")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_is_the_sdks() {
        let params: BTreeMap<String, String> = [
            ("b", "2"),
            ("a", "1"),
            ("Signature", "x"),
            ("file", "@path"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            string_to_sign("post", "h:1", "/v2/index.php", &params),
            "POSTh:1/v2/index.php?a=1&b=2"
        );
        assert_eq!(
            string_to_sign("GET", "h:1", "/v2/index.php", &params),
            "GETh:1/v2/index.php?a=1&b=2&file=@path"
        );
    }

    #[test]
    fn a_nonce_is_refused_the_second_time_within_the_window() {
        let cache = NonceCache::default();
        assert!(cache.record("k", "1", 1_000).is_ok());
        assert!(cache.record("k", "1", 1_001).is_err());
        assert!(cache.record("other", "1", 1_001).is_ok());
        let later = 1_000 + 2 * TIMESTAMP_WINDOW.as_secs();
        assert!(cache.record("k", "1", later).is_ok());
    }
}
