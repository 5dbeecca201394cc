//! [`Authenticated`]: the layer that tells who is calling, before a service reads the request.
//!
//! Without an auth file every call is [`Caller::Anyone`]. With one, a call needs a bearer token
//! (`authorization: Bearer <token>`) or a client certificate (mTLS) that a principal is known
//! by; anything else is answered UNAUTHENTICATED here, so the service never decodes the body.
//! The [`Caller`] goes on in the request's extensions; the handlers check its grants on the
//! queue the request names (see [`caller`]).
//!
//! In cluster mode a call another replica forwards carries the principal that replica
//! authenticated, in `spool-forwarded-identity` (see `auth::forwarded`): when the header is
//! there it decides, and it must verify, so a client's own copy is refused.
//!
//! Refusals are counted (`spool_auth_refusals_total{reason}`) and logged here, with the
//! principal's name when there is one, never the token: UNAUTHENTICATED from this layer, and
//! PERMISSION_DENIED from the handlers' answers as they pass back through it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::{self, Either, Map, Ready};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Request, Status};

use crate::auth::cert::certificate_names;
use crate::auth::forwarded::{ForwardKeySlot, FromReplica, IDENTITY_HEADER, REPLICA_PRINCIPAL};
use crate::auth::{Authenticator, Caller, Refusal};
use crate::error::QueueError;
use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;

/// The `reason` label of a PERMISSION_DENIED in `spool_auth_refusals_total`.
pub const NOT_GRANTED: &str = "not_granted";
/// Characters of a refusal's message a log line keeps.
const LOGGED_MESSAGE_CHARS: usize = 512;

/// Wraps a gRPC service: authenticates each call and puts its [`Caller`] in the extensions.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    /// `None`: no auth file, everyone may call.
    authenticator: Option<Arc<Authenticator>>,
    metrics: Arc<Metrics>,
    /// Cluster mode: the key that checks a forwarded call's asserted principal
    /// (`auth::forwarded`). Unset elsewhere, where such a header is always refused.
    forward_key: ForwardKeySlot,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, authenticator: Option<Arc<Authenticator>>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            authenticator,
            metrics,
            forward_key: ForwardKeySlot::default(),
        }
    }

    /// Accepts calls forwarded by the cluster's replicas, checked with the key in `slot` once
    /// it is set.
    pub fn with_forwarded(mut self, slot: ForwardKeySlot) -> Self {
        self.forward_key = slot;
        self
    }
}

/// The router finds a service by its name; the wrapper serves under the inner one's.
impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, Map<S::Future, Box<dyn FnOnce(Answer) -> Answer + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let forwarded = request
            .headers()
            .get(IDENTITY_HEADER)
            .map(|value| self.forwarded(value.as_bytes(), request.uri().path()));
        let caller = match (forwarded, &self.authenticator) {
            (Some(Err(refusal)), _) => {
                let answer = self.refuse(request.uri().path(), &refusal);
                return Either::Left(future::ready(Ok(answer)));
            }
            (Some(Ok((caller, from_replica))), _) => {
                if from_replica {
                    request.extensions_mut().insert(FromReplica);
                }
                caller
            }
            (None, None) => Caller::Anyone,
            (None, Some(authenticator)) => {
                let authorization = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(http::HeaderValue::as_bytes);
                match authenticator
                    .principals()
                    .authenticate(authorization, client_certificate_names(&request))
                {
                    Ok(principal) => Caller::Principal(principal),
                    Err(refusal) => {
                        let answer = self.refuse(request.uri().path(), &refusal);
                        return Either::Left(future::ready(Ok(answer)));
                    }
                }
            }
        };
        request.extensions_mut().insert(caller.clone());
        let metrics = self.metrics.clone();
        let path = request.uri().path().to_string();
        let watch: Box<dyn FnOnce(Answer) -> Answer + Send> = Box::new(move |answer: Answer| {
            if let Ok(response) = &answer {
                note_permission_denied(&metrics, &caller, &path, response);
            }
            answer
        });
        Either::Right(self.inner.call(request).map(watch))
    }
}

impl<S> Authenticated<S> {
    /// The caller a replica's forward asserts, once its header verifies (see
    /// `auth::forwarded`); the principal is this replica's own of that name, with its own
    /// grants. A replica's own calls assert no principal: they may do anything ([`FromReplica`]
    /// says so to the service).
    fn forwarded(&self, value: &[u8], path: &str) -> Result<(Caller, bool), Refusal> {
        let Some(key) = self.forward_key.get() else {
            return Err(Refusal::BadForward {
                why: "this server is not a replica of a cluster".into(),
            });
        };
        let name = key
            .verify(value, path)
            .map_err(|why| Refusal::BadForward { why })?;
        if name == REPLICA_PRINCIPAL {
            return Ok((Caller::Anyone, true));
        }
        match &self.authenticator {
            None => Ok((Caller::Anyone, false)),
            Some(authenticator) => authenticator
                .principals()
                .by_name(&name)
                .map(|principal| (Caller::Principal(principal), false))
                .ok_or(Refusal::UnknownForwardedPrincipal { name }),
        }
    }

    /// Counts, logs and answers an UNAUTHENTICATED call.
    fn refuse(&self, path: &str, refusal: &Refusal) -> http::Response<Body> {
        self.metrics.auth_refused(refusal.reason());
        let message = refusal.message();
        if REFUSALS.allow("unauthenticated") {
            tracing::info!(
                method = path,
                reason = refusal.reason(),
                message = cut(&message),
                "refused: not authenticated"
            );
        }
        Status::from(QueueError::Unauthenticated(message)).into_http()
    }
}

/// The names of the call's client certificate, when it came over mTLS with one.
fn client_certificate_names(request: &http::Request<Body>) -> Option<Vec<String>> {
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certificates.first().map(certificate_names)
}

/// Counts and logs a PERMISSION_DENIED answer (always trailers-only: handlers refuse before
/// any message).
fn note_permission_denied(
    metrics: &Metrics,
    caller: &Caller,
    path: &str,
    response: &http::Response<Body>,
) {
    let denied = response
        .headers()
        .get(Status::GRPC_STATUS)
        .is_some_and(|code| Code::from_bytes(code.as_bytes()) == Code::PermissionDenied);
    if !denied {
        return;
    }
    metrics.auth_refused(NOT_GRANTED);
    let message = Status::from_header_map(response.headers())
        .map(|status| status.message().to_string())
        .unwrap_or_default();
    if !REFUSALS.allow("not_granted") {
        return;
    }
    tracing::info!(
        method = path,
        principal = caller.name().unwrap_or(""),
        message = cut(&message),
        "refused: not granted"
    );
}

/// The first [`LOGGED_MESSAGE_CHARS`] characters of `text`, Debug-escaped so that a client's
/// string cannot forge a log line.
fn cut(text: &str) -> String {
    let shown: String = text.chars().take(LOGGED_MESSAGE_CHARS).collect();
    format!("{shown:?}")
}

/// The caller of a request, as [`Authenticated`] put it there. A request that did not pass
/// the layer has none and is refused: failing closed, should a service ever be served without
/// it.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, QueueError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            QueueError::Unauthenticated("the call was not authenticated (no auth layer)".into())
        })
}
