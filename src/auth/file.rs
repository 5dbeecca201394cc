//! The auth file (`--auth-file`): the principals, in TOML.
//!
//! ```toml
//! [[principals]]
//! name = "orders-worker"
//! token_sha256 = "<hex SHA-256 of the bearer token>"  # or a list: two during a rotation
//! client_cert_name = "orders-worker"                   # mTLS: the certificate's DNS SAN or CN
//! signing_key_id = "AKIDorders"                        # HTTP port: SQS's access key id,
//! signing_secret = "<the secret of that key>"          #   CMQ's SecretId; and their secret
//! [[principals.grants]]
//! queues = "orders-*"                                  # one name, or a prefix ending in '*'
//! actions = ["send", "receive"]                        # send | receive | admin
//! ```
//!
//! Everything is checked when the file is read, so a file with a typo is refused as a whole
//! (at startup: the server does not start; on a reload: the previous file stays in force)
//! instead of silently granting less, or more, than meant.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;

use super::{Action, Grant, Principal, Principals, QueuePattern, SigningSecret, TokenHash};
use crate::limits::check_queue_name;

/// The shortest signing secret accepted, in bytes: shorter ones can be guessed.
pub const MIN_SIGNING_SECRET_LEN: usize = 16;

/// Why an auth file was refused; the text names the principal and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthFileError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    principals: Vec<PrincipalText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalText {
    name: String,
    #[serde(default)]
    token_sha256: Option<OneOrMany>,
    #[serde(default)]
    client_cert_name: Option<String>,
    /// The key id SQS (access key id) and CMQ (SecretId) requests are signed with, on the
    /// HTTP port; the HMAC needs the secret itself, so the file holds it (keep it private).
    #[serde(default)]
    signing_key_id: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    grants: Vec<GrantText>,
}

/// `token_sha256 = "..."` or `token_sha256 = ["...", "..."]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantText {
    queues: String,
    actions: Vec<Action>,
}

pub(super) fn parse(text: &str) -> Result<Principals, AuthFileError> {
    let file: FileText = toml::from_str(text).map_err(|e| AuthFileError(e.to_string()))?;
    let mut principals = Principals::default();
    let mut names = HashSet::new();
    let mut tokens: HashMap<TokenHash, String> = HashMap::new();
    for (index, text) in file.principals.into_iter().enumerate() {
        let name = text.name.trim().to_string();
        let invalid = |what: String| AuthFileError(format!("principal {name:?}: {what}"));
        if name.is_empty() {
            return Err(AuthFileError(format!(
                "principals[{index}]: name is empty; every principal needs one (it is logged \
                 with its refusals)"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(invalid("the name is used twice".into()));
        }
        let hashes = match text.token_sha256 {
            None => Vec::new(),
            Some(OneOrMany::One(hash)) => vec![hash],
            Some(OneOrMany::Many(hashes)) => hashes,
        };
        if hashes.is_empty() && text.client_cert_name.is_none() && text.signing_key_id.is_none() {
            return Err(invalid(
                "neither token_sha256 nor client_cert_name (nor signing_key_id): nothing could \
                 authenticate it"
                    .into(),
            ));
        }
        match (text.signing_key_id, text.signing_secret) {
            (None, None) => {}
            (Some(key_id), Some(secret)) => {
                let key_id = key_id.trim().to_string();
                if key_id.is_empty() || secret.len() < MIN_SIGNING_SECRET_LEN {
                    return Err(invalid(format!(
                        "signing_key_id is empty or signing_secret is shorter than \
                         {MIN_SIGNING_SECRET_LEN} bytes"
                    )));
                }
                if principals
                    .signing_keys
                    .insert(key_id.clone(), (SigningSecret::new(&secret), index))
                    .is_some()
                {
                    return Err(invalid(format!(
                        "signing_key_id {key_id:?} is also another principal's"
                    )));
                }
            }
            _ => {
                return Err(invalid(
                    "signing_key_id and signing_secret go together: give both or neither".into(),
                ));
            }
        }
        for hash in &hashes {
            let hash = parse_hash(hash).map_err(|why| invalid(format!("token_sha256: {why}")))?;
            if let Some(other) = tokens.insert(hash, name.clone()) {
                return Err(invalid(format!(
                    "token_sha256 {} is also a token of {other:?}; a token must name one principal",
                    hex(&hash)
                )));
            }
            principals.tokens.push((hash, index));
        }
        if let Some(cert_name) = text.client_cert_name {
            if cert_name.is_empty() {
                return Err(invalid("client_cert_name is empty".into()));
            }
            if principals
                .certificate_names
                .insert(cert_name.clone(), index)
                .is_some()
            {
                return Err(invalid(format!(
                    "client_cert_name {cert_name:?} is also another principal's"
                )));
            }
        }
        let grants = text
            .grants
            .into_iter()
            .enumerate()
            .map(|(number, grant)| {
                parse_grant(grant).map_err(|why| invalid(format!("grants[{number}]: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        principals.names.insert(name.clone(), index);
        principals
            .principals
            .push(Arc::new(Principal { name, grants }));
    }
    Ok(principals)
}

fn parse_hash(text: &str) -> Result<TokenHash, String> {
    let text = text.trim();
    let mut hash = [0u8; 32];
    if text.len() != 64 {
        return Err(format!(
            "{text:?} is not 64 hex digits (the SHA-256 of the token, e.g. \
             `printf %s \"$TOKEN\" | sha256sum`)"
        ));
    }
    for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| format!("{text:?} is not hex"))?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_grant(grant: GrantText) -> Result<Grant, String> {
    let queues = match grant.queues.strip_suffix('*') {
        Some("") => QueuePattern::Prefix(String::new()),
        Some(prefix) => {
            check_queue_name(prefix).map_err(|why| format!("queues {:?}: {why}", grant.queues))?;
            QueuePattern::Prefix(prefix.to_string())
        }
        None => {
            check_queue_name(&grant.queues)
                .map_err(|why| format!("queues {:?}: {why}", grant.queues))?;
            QueuePattern::Exact(grant.queues)
        }
    };
    if grant.actions.is_empty() {
        return Err(format!(
            "actions is empty for queues {queues}; give some of send, receive, admin"
        ));
    }
    Ok(Grant {
        queues,
        actions: grant.actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn refused(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn signing_keys_name_their_principal_and_are_checked() {
        let principals = parse(
            "[[principals]]\nname = \"app\"\nsigning_key_id = \"AKID1\"\n\
             signing_secret = \"0123456789abcdef\"\n",
        )
        .expect("a principal with only a signing key");
        let (principal, secret) = principals.by_signing_key("AKID1").expect("known key");
        assert_eq!(principal.name, "app");
        assert_eq!(secret.expose(), b"0123456789abcdef");
        assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
        assert!(principals.by_signing_key("AKID2").is_none());
        let alone = refused("[[principals]]\nname = \"a\"\nsigning_key_id = \"K\"\n");
        assert!(alone.contains("go together"), "{alone}");
        let short = refused(
            "[[principals]]\nname = \"a\"\nsigning_key_id = \"K\"\nsigning_secret = \"short\"\n",
        );
        assert!(short.contains("16 bytes"), "{short}");
        let twice = refused(
            "[[principals]]\nname = \"a\"\nsigning_key_id = \"K\"\n\
             signing_secret = \"0123456789abcdef\"\n\
             [[principals]]\nname = \"b\"\nsigning_key_id = \"K\"\n\
             signing_secret = \"0123456789abcdef\"\n",
        );
        assert!(twice.contains("also another principal's"), "{twice}");
    }

    #[test]
    fn an_empty_file_has_no_principals() {
        assert_eq!(parse("").expect("empty").len(), 0);
    }

    #[test]
    fn mistakes_are_refused_with_the_principal_and_field_named() {
        let principal = |body: &str| format!("[[principals]]\nname = \"p\"\n{body}");
        let cases = [
            (principal("token_sha256 = \"abc\""), "64 hex digits"),
            (
                principal(&format!("token_sha256 = \"{}\"", "zz".repeat(32))),
                "not hex",
            ),
            (principal(""), "neither token_sha256 nor client_cert_name"),
            (
                principal("client_cert_name = \"\""),
                "client_cert_name is empty",
            ),
            (
                principal(&format!(
                    "token_sha256 = \"{HASH}\"\n[[principals.grants]]\nqueues = \"a*b\"\nactions = [\"send\"]"
                )),
                "grants[0]: queues \"a*b\"",
            ),
            (
                principal(&format!(
                    "token_sha256 = \"{HASH}\"\n[[principals.grants]]\nqueues = \"q\"\nactions = []"
                )),
                "actions is empty",
            ),
            (
                principal(&format!(
                    "token_sha256 = \"{HASH}\"\n[[principals.grants]]\nqueues = \"q\"\nactions = [\"read\"]"
                )),
                "unknown variant",
            ),
            (
                principal(&format!("token_sha256 = \"{HASH}\"\ntoken = \"x\"")),
                "unknown field",
            ),
            (
                "[[principals]]\nname = \" \"\nclient_cert_name = \"c\"".into(),
                "name is empty",
            ),
            (
                format!(
                    "{}\n{}",
                    principal("client_cert_name = \"c\""),
                    principal("client_cert_name = \"d\"")
                ),
                "used twice",
            ),
            (
                format!(
                    "{}\n[[principals]]\nname = \"q\"\ntoken_sha256 = \"{HASH}\"",
                    principal(&format!("token_sha256 = \"{HASH}\""))
                ),
                "also a token of \"p\"",
            ),
            (
                format!(
                    "{}\n[[principals]]\nname = \"q\"\nclient_cert_name = \"c\"",
                    principal("client_cert_name = \"c\"")
                ),
                "also another principal's",
            ),
        ];
        for (text, expected) in cases {
            let error = refused(&text);
            assert!(error.contains(expected), "{text}\n→ {error}");
        }
    }

    #[test]
    fn patterns_are_names_prefixes_or_everything() {
        let text = format!(
            "[[principals]]\nname = \"p\"\ntoken_sha256 = \"{HASH}\"\n\
             [[principals.grants]]\nqueues = \"*\"\nactions = [\"send\"]\n\
             [[principals.grants]]\nqueues = \"orders-*\"\nactions = [\"receive\"]\n\
             [[principals.grants]]\nqueues = \"audit\"\nactions = [\"admin\", \"send\"]"
        );
        let principals = parse(&text).expect("valid");
        let principal = principals.by_token("test").expect("p");
        let patterns: Vec<String> = principal
            .grants
            .iter()
            .map(|grant| grant.queues.to_string())
            .collect();
        assert_eq!(patterns, ["*", "orders-*", "audit"]);
        assert!(principal.may(Action::Send, "zzz"));
        assert!(!principal.may(Action::Receive, "order"));
        assert!(principal.may(Action::Admin, "audit"));
    }
}
