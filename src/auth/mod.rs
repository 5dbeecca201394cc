//! Who may call, and what they may do.
//!
//! The principals come from the auth file (`--auth-file`, [`file`]): each has a name, the
//! SHA-256 of its bearer tokens and/or the name its client certificate carries, and grants (a
//! queue name or prefix × send / receive / admin). The gRPC edge (`grpc::auth`) authenticates
//! every call to a [`Caller`] before the service sees it; handlers then check the call's
//! [`Action`] on its queue with [`Caller::authorize`], before the queue is looked up, so a
//! refusal says the same whether or not the queue exists. In cluster mode a call forwarded by
//! another replica carries the principal that replica authenticated, asserted with the
//! cluster's key ([`forwarded`]).

pub mod cert;
mod file;
pub mod forwarded;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::QueueError;

pub use file::AuthFileError;

/// What a grant allows on its queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SendMessage, BatchSendMessages.
    Send,
    /// ReceiveMessages, DeleteMessage, BatchDeleteMessages, ChangeMessageVisibility,
    /// BatchChangeMessageVisibility, PeekMessages (and the stream call to come): everything a
    /// consumer does.
    Receive,
    /// CreateQueue, UpdateQueue, DeleteQueue, RewindQueue, PurgeQueue (and redrive to come).
    Admin,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The queues a grant covers: one name, or every name with a prefix (`orders-*`; `*` is all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueuePattern {
    Exact(String),
    Prefix(String),
}

impl QueuePattern {
    pub fn matches(&self, queue: &str) -> bool {
        match self {
            Self::Exact(name) => name == queue,
            Self::Prefix(prefix) => queue.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for QueuePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub queues: QueuePattern,
    pub actions: Vec<Action>,
}

/// A caller the auth file knows, with what it may do.
#[derive(Debug, PartialEq, Eq)]
pub struct Principal {
    /// Logged with every refusal, and named in PERMISSION_DENIED messages.
    pub name: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether a grant allows `action` on `queue`.
    pub fn may(&self, action: Action, queue: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.queues.matches(queue) && grant.actions.contains(&action))
    }

    /// Whether any grant covers `queue`: it may see the queue (GetQueue, ListQueues).
    pub fn sees(&self, queue: &str) -> bool {
        self.grants.iter().any(|grant| grant.queues.matches(queue))
    }
}

/// Who is calling, as the gRPC edge established it. It travels in the request's extensions
/// from the auth layer to the handlers.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The server runs without an auth file: every caller may do everything.
    Anyone,
    Principal(Arc<Principal>),
}

impl Caller {
    /// Ok when the caller may do `action` on `queue`; PERMISSION_DENIED naming both otherwise.
    /// Checked before the queue is looked up, so the answer does not depend on whether it
    /// exists.
    pub fn authorize(&self, action: Action, queue: &str) -> Result<(), QueueError> {
        match self {
            Self::Anyone => Ok(()),
            Self::Principal(principal) if principal.may(action, queue) => Ok(()),
            Self::Principal(principal) => Err(QueueError::PermissionDenied(format!(
                "principal {:?} may not {action} on queue {queue:?}: no grant allows it",
                principal.name
            ))),
        }
    }

    /// Ok when any grant of the caller covers `queue` (what GetQueue needs).
    pub fn authorize_any(&self, queue: &str) -> Result<(), QueueError> {
        match self {
            Self::Anyone => Ok(()),
            Self::Principal(principal) if principal.sees(queue) => Ok(()),
            Self::Principal(principal) => Err(QueueError::PermissionDenied(format!(
                "principal {:?} has no grant on queue {queue:?}",
                principal.name
            ))),
        }
    }

    /// Whether ListQueues shows `queue` to the caller.
    pub fn sees(&self, queue: &str) -> bool {
        match self {
            Self::Anyone => true,
            Self::Principal(principal) => principal.sees(queue),
        }
    }

    /// The principal's name, for logs; `None` without an auth file.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Anyone => None,
            Self::Principal(principal) => Some(&principal.name),
        }
    }
}

/// Why a call could not be authenticated. Each is counted under its [`Refusal::reason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither a bearer token nor a client certificate.
    NoCredentials,
    /// `authorization` metadata that is not `Bearer <token>`.
    MalformedAuthorization,
    /// A bearer token whose hash no principal has.
    UnknownToken,
    /// A client certificate (valid for the CA) whose names no principal has.
    UnknownCertificate { names: Vec<String> },
    /// A forwarded identity (`spool-forwarded-identity`) that does not verify: not made by a
    /// replica of this cluster for this replica and call, stale, or replayed. A client's own
    /// copy of the header lands here too.
    BadForward { why: String },
    /// A forwarded identity that verifies, naming a principal this replica's auth file does
    /// not have (the replicas' auth files differ, for instance during a reload).
    UnknownForwardedPrincipal { name: String },
}

impl Refusal {
    /// The `reason` label of `spool_auth_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::MalformedAuthorization => "malformed_authorization",
            Self::UnknownToken => "unknown_token",
            Self::UnknownCertificate { .. } => "unknown_certificate",
            Self::BadForward { .. } => "bad_forward",
            Self::UnknownForwardedPrincipal { .. } => "unknown_forwarded_principal",
        }
    }

    /// What the caller is told (UNAUTHENTICATED); it never repeats the token.
    pub fn message(&self) -> String {
        match self {
            Self::NoCredentials => "no credentials: send `authorization: Bearer <token>` \
                 metadata, or a client certificate a principal is known by"
                .into(),
            Self::MalformedAuthorization => {
                "the authorization metadata is not `Bearer <token>`".into()
            }
            Self::UnknownToken => "the bearer token belongs to no principal".into(),
            Self::UnknownCertificate { names } => {
                format!("the client certificate's names {names:?} belong to no principal")
            }
            Self::BadForward { why } => format!(
                "the spool-forwarded-identity metadata is refused ({why}); only replicas of the \
                 cluster set it, clients must not"
            ),
            Self::UnknownForwardedPrincipal { name } => format!(
                "the forwarded principal {name:?} is not in this replica's auth file; the \
                 replicas must read the same auth file"
            ),
        }
    }
}

/// The secret of a signing key, as the auth file gives it: never shown by Debug (the principals
/// are), so it cannot reach a log.
#[derive(Clone)]
pub struct SigningSecret(Arc<str>);

impl SigningSecret {
    pub fn new(secret: &str) -> Self {
        Self(Arc::from(secret))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// The SHA-256 of a bearer token, as the auth file stores it.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The principals of one version of the auth file, indexed for authentication.
#[derive(Debug, Default)]
pub struct Principals {
    principals: Vec<Arc<Principal>>,
    /// Every token hash with the index of its principal; a principal may have several (a
    /// rotation in progress).
    tokens: Vec<(TokenHash, usize)>,
    /// Principal name → its index: a call forwarded by another replica names its principal
    /// (see `auth::forwarded`).
    names: HashMap<String, usize>,
    /// Client-certificate name → index of its principal.
    certificate_names: HashMap<String, usize>,
    /// Signing key id (the HTTP port's SQS access key id and CMQ SecretId) → its secret and
    /// the index of its principal.
    signing_keys: HashMap<String, (SigningSecret, usize)>,
}

impl Principals {
    /// Parses an auth file's text (its format: [`file`]).
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        file::parse(text)
    }

    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// The principal whose token this is. Every stored hash is compared, in constant time, so
    /// the time taken says nothing about which hash (if any) is close.
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        let presented = token_hash(token);
        let mut found = None;
        for (hash, index) in &self.tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(*index);
            }
        }
        found.and_then(|index| self.principals.get(index).cloned())
    }

    /// The principal a signing key id belongs to, with the key's secret (to check an HMAC
    /// signature with).
    pub fn by_signing_key(&self, key_id: &str) -> Option<(Arc<Principal>, SigningSecret)> {
        let (secret, index) = self.signing_keys.get(key_id)?;
        Some((self.principals.get(*index)?.clone(), secret.clone()))
    }

    /// The principal named `name` (a forwarded call's, whose replica authenticated it).
    pub fn by_name(&self, name: &str) -> Option<Arc<Principal>> {
        self.names
            .get(name)
            .and_then(|index| self.principals.get(*index).cloned())
    }

    /// The principal of the first of `names` (a certificate's DNS names, then its CN) that one
    /// is known by.
    pub fn by_certificate_names(&self, names: &[String]) -> Option<Arc<Principal>> {
        names
            .iter()
            .find_map(|name| self.certificate_names.get(name))
            .and_then(|index| self.principals.get(*index).cloned())
    }

    /// Authenticates a call: by its bearer token when it has one (an unknown token is refused
    /// even with a good certificate: the caller meant that token), else by its client
    /// certificate's names.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate_names: Option<Vec<String>>,
    ) -> Result<Arc<Principal>, Refusal> {
        if let Some(value) = authorization {
            let token = bearer_token(value).ok_or(Refusal::MalformedAuthorization)?;
            return self.by_token(token).ok_or(Refusal::UnknownToken);
        }
        match certificate_names {
            Some(names) => self
                .by_certificate_names(&names)
                .ok_or(Refusal::UnknownCertificate { names }),
            None => Err(Refusal::NoCredentials),
        }
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme in any case, as HTTP
/// allows); `None` for anything else.
fn bearer_token(value: &[u8]) -> Option<&str> {
    const SCHEME: &str = "bearer ";
    let value = std::str::from_utf8(value).ok()?;
    let scheme = value.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim();
    (!token.is_empty()).then_some(token)
}

/// The principals in force; a reload of the auth file replaces them as a whole, and calls
/// already authenticated keep the principal they got.
#[derive(Debug)]
pub struct Authenticator {
    current: RwLock<Arc<Principals>>,
}

impl Authenticator {
    pub fn new(principals: Principals) -> Self {
        Self {
            current: RwLock::new(Arc::new(principals)),
        }
    }

    pub fn principals(&self) -> Arc<Principals> {
        // A poisoned lock means a panic while swapping an Arc: the Arc inside is whole.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, principals: Principals) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(principals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[principals]]
        name = "orders-worker"
        token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                        "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"]
        [[principals.grants]]
        queues = "orders-*"
        actions = ["send", "receive"]
        [[principals.grants]]
        queues = "audit"
        actions = ["send"]

        [[principals]]
        name = "ops"
        client_cert_name = "ops.example.com"
        [[principals.grants]]
        queues = "*"
        actions = ["admin"]
    "#;

    #[test]
    fn tokens_and_certificate_names_find_their_principal() {
        let principals = Principals::parse(FILE).expect("valid");
        assert_eq!(principals.len(), 2);
        // sha256("test") and sha256("test2"): both tokens of a rotation work.
        for token in ["test", "test2"] {
            let found = principals.by_token(token).expect("known token");
            assert_eq!(found.name, "orders-worker");
        }
        assert!(principals.by_token("test3").is_none());
        let names = vec!["other".to_string(), "ops.example.com".to_string()];
        assert_eq!(
            principals.by_certificate_names(&names).expect("known").name,
            "ops"
        );
        assert!(principals.by_certificate_names(&["x".into()]).is_none());
    }

    #[test]
    fn a_bearer_token_decides_when_present() {
        let principals = Principals::parse(FILE).expect("valid");
        let cert = || Some(vec!["ops.example.com".to_string()]);
        let by = |value: &str, names| {
            principals
                .authenticate(Some(value.as_bytes()), names)
                .map(|p| p.name.clone())
        };
        assert_eq!(by("Bearer test", cert()), Ok("orders-worker".into()));
        assert_eq!(by("bearer  test ", None), Ok("orders-worker".into()));
        assert_eq!(by("Bearer nope", cert()), Err(Refusal::UnknownToken));
        for malformed in ["Basic dGVzdA==", "Bearer ", "Bearer", "test"] {
            assert_eq!(
                by(malformed, None),
                Err(Refusal::MalformedAuthorization),
                "{malformed}"
            );
        }
        let by_cert = principals.authenticate(None, cert()).expect("cert");
        assert_eq!(by_cert.name, "ops");
        assert_eq!(
            principals.authenticate(None, None),
            Err(Refusal::NoCredentials)
        );
        assert_eq!(
            principals.authenticate(None, Some(vec!["x".into()])),
            Err(Refusal::UnknownCertificate {
                names: vec!["x".into()]
            })
        );
    }

    #[test]
    fn grants_allow_their_actions_on_their_queues_only() {
        let principals = Principals::parse(FILE).expect("valid");
        let worker = Caller::Principal(principals.by_token("test").expect("worker"));
        assert!(worker.authorize(Action::Send, "orders-eu").is_ok());
        assert!(worker.authorize(Action::Receive, "orders-").is_ok());
        assert!(worker.authorize(Action::Send, "audit").is_ok());
        let denied = worker
            .authorize(Action::Receive, "audit")
            .expect_err("send only");
        assert!(matches!(denied, QueueError::PermissionDenied(_)));
        let text = denied.to_string();
        assert!(
            text.contains("receive")
                && text.contains("\"audit\"")
                && text.contains("orders-worker"),
            "{text}"
        );
        assert!(worker.authorize(Action::Admin, "orders-eu").is_err());
        assert!(worker.authorize(Action::Send, "order").is_err());
        assert!(worker.authorize(Action::Send, "audit2").is_err());
        assert!(worker.authorize_any("audit").is_ok());
        assert!(worker.authorize_any("billing").is_err());
        assert!(worker.sees("orders-x") && !worker.sees("billing"));

        let ops = Caller::Principal(
            principals
                .by_certificate_names(&["ops.example.com".into()])
                .expect("ops"),
        );
        assert!(ops.authorize(Action::Admin, "anything").is_ok());
        assert!(ops.authorize(Action::Send, "anything").is_err());
        assert!(Caller::Anyone.authorize(Action::Admin, "q").is_ok());
    }
}
