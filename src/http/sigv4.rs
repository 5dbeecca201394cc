//! Who an SQS request comes from. Without an auth file, anyone (as on the gRPC port). With
//! one, a request must carry an AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256
//! Credential=<key id>/<date>/<region>/<service>/aws4_request, SignedHeaders=..., Signature=...`)
//! made with a principal's `signing_key_id` and `signing_secret`, as every AWS SDK makes it;
//! its `X-Amz-Date` must be within [`CLOCK_SKEW`] of the server's clock (AWS's own window).
//! Any region and service name are accepted: they are part of what is signed.

use hmac::{Hmac, KeyInit as _, Mac as _};
use hyper::http::request::Parts;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::sqs::SqsError;
use super::{Edge, hex};
use crate::auth::Caller;

/// How far `X-Amz-Date` may be from the server's clock, either way.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// What SigV4 leaves unencoded: letters, digits, `-`, `.`, `_`, `~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn refused(code: &'static str, message: String) -> SqsError {
    SqsError::forbidden(code, message)
}

/// The caller of a request, or SQS's refusal.
pub fn authenticate(edge: &Edge, parts: &Parts, body: &[u8]) -> Result<Caller, SqsError> {
    let Some(authenticator) = &edge.authenticator else {
        return Ok(Caller::Anyone);
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let authorization = header("authorization").ok_or_else(|| {
        SqsError::forbidden_missing("the request is not signed: it has no Authorization header")
    })?;
    let signed = parse_authorization(authorization)?;
    let [key_id, date, region, service, terminal] = signed.scope[..] else {
        return Err(refused(
            "IncompleteSignature",
            "Credential must be <key id>/<date>/<region>/<service>/aws4_request".into(),
        ));
    };
    if terminal != "aws4_request" {
        return Err(refused(
            "IncompleteSignature",
            "Credential must end in aws4_request".into(),
        ));
    }
    let amz_date = header("x-amz-date").ok_or_else(|| {
        refused(
            "IncompleteSignature",
            "the request has no X-Amz-Date header".into(),
        )
    })?;
    let Some((principal, secret)) = authenticator.principals().by_signing_key(key_id) else {
        return Err(refused(
            "InvalidClientTokenId",
            "The security token included in the request is invalid.".into(),
        ));
    };
    let canonical = canonical_request(parts, &signed.signed_headers, body);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", String::from_utf8_lossy(secret.expose())).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if !bool::from(expected.as_bytes().ct_eq(signed.signature.as_bytes())) {
        return Err(refused(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method."
                .into(),
        ));
    }
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        refused(
            "IncompleteSignature",
            format!("X-Amz-Date {amz_date:?} is not YYYYMMDD'T'HHMMSS'Z'"),
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - signed_at).unsigned_abs() > CLOCK_SKEW.as_secs() || !amz_date.starts_with(date) {
        return Err(refused(
            "SignatureDoesNotMatch",
            format!(
                "Signature expired: {amz_date} is more than {} minutes from the server's time",
                CLOCK_SKEW.as_secs() / 60
            ),
        ));
    }
    Ok(Caller::Principal(principal))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

struct Signed<'a> {
    scope: Vec<&'a str>,
    signed_headers: Vec<String>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Signed<'_>, SqsError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or_else(|| {
        refused(
            "IncompleteSignature",
            format!("Authorization must be an {ALGORITHM} signature"),
        )
    })?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(refused(
            "IncompleteSignature",
            "Authorization needs Credential, SignedHeaders and Signature".into(),
        ));
    };
    Ok(Signed {
        scope: credential.split('/').collect(),
        signed_headers: signed_headers
            .split(';')
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        signature,
    })
}

/// SigV4's canonical request.
fn canonical_request(parts: &Parts, signed_headers: &[String], body: &[u8]) -> String {
    let path = parts.uri.path();
    let path = if path.is_empty() { "/" } else { path };
    let canonical_path: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
        .collect();
    let mut query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| {
                (
                    utf8_percent_encode(&k, UNRESERVED).to_string(),
                    utf8_percent_encode(&v, UNRESERVED).to_string(),
                )
            })
            .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|value| {
                String::from_utf8_lossy(value.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| hex(&Sha256::digest(body)));
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload}",
        parts.method.as_str(),
        canonical_path.join("/"),
        query.join("&"),
        signed_headers.join(";"),
    )
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_read_as_utc() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("2015-08-30T12:36"), None);
    }

    /// AWS's documented example (the IAM ListUsers GET request of the SigV4 guide).
    #[test]
    fn signs_as_aws_documents() {
        let request =
            hyper::Request::get("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
                .header("host", "iam.amazonaws.com")
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .header("x-amz-date", "20150830T123600Z")
                .body(())
                .expect("request");
        let (parts, ()) = request.into_parts();
        let headers = ["content-type", "host", "x-amz-date"].map(String::from);
        let canonical = canonical_request(&parts, &headers, b"");
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20150830");
        for part in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let string_to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        assert_eq!(
            hex(&hmac(&key, string_to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }
}
