//! The HTTP/1.1 port (`--http-listen`) that speaks the wire APIs existing SDKs already use:
//! Amazon SQS's JSON protocol ([`sqs`]) and its older query protocol ([`sqs_query`], a second
//! codec over the same actions), and Tencent CMQ's HTTP API v2 ([`cmq`], queues, and topics in
//! [`cmq_topics`]). Every answered request is counted in the per-method metrics.
//!
//! Both are thin edges over the gRPC service implementation, called in process
//! ([`Edge`]): a request becomes the `spool.v1` request it means, with its caller in the
//! extensions as the gRPC auth layer would put it, so validation, grants, the limits on open
//! long polls (`--max-waiting-receives`) and durability are the gRPC API's own. A message sent
//! over gRPC is received over SQS or CMQ, and back.
//!
//! Bounded like the gRPC port: connections (`--max-connections`, a cap of this port's own),
//! the time to the first request bytes (`--handshake-timeout-seconds`) and to its headers,
//! the request body's size ([`MAX_BODY_BYTES`]) and time (`--request-body-timeout-seconds`).

pub mod cmq;
pub mod cmq_signature;
pub mod cmq_topics;
pub mod sigv4;
pub mod sqs;
pub mod sqs_attributes;
pub mod sqs_query;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::auth::{Authenticator, Caller};
use crate::cluster::routing::Routed;
use crate::metrics::Metrics;
use crate::net::{self, ConnectionCounts, ConnectionLimits};
use crate::pb;
use crate::pb::queue_service_server::QueueService;
use crate::tls::TlsConfigs;

/// Largest request body, in bytes: CMQ's largest batch (16 messages of 1 MiB) form-encoded
/// does not fit in less, and SQS's requests are at most 1 MiB. A larger body is answered 413
/// before it is read whole.
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;
/// The largest header block hyper buffers for one request (its own default, stated).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The path CMQ's SDKs post to.
pub const CMQ_PATH: &str = "/v2/index.php";

/// The queue service as the HTTP edges call it, and who may call.
pub struct Edge {
    /// The gRPC service implementation (routed: in cluster mode a call for a queue another
    /// replica owns is forwarded there), shared with the gRPC port.
    service: Arc<Routed>,
    /// `None`: no auth file, every caller may do everything (as on the gRPC port).
    authenticator: Option<Arc<Authenticator>>,
    /// Nonces of CMQ requests seen within the timestamp window, refused when reused.
    nonces: cmq_signature::NonceCache,
    /// Whether the port speaks TLS: queue URLs say https then.
    secure: bool,
    /// How long a request may take to send its body.
    body_timeout: Duration,
    /// Where each answered request is counted and timed: set by [`Edge::observed_by`] (the
    /// server always does); a request whose client leaves before the answer is not counted.
    metrics: Option<Arc<Metrics>>,
}

impl Edge {
    pub fn new(
        service: Arc<Routed>,
        authenticator: Option<Arc<Authenticator>>,
        secure: bool,
        body_timeout: Duration,
    ) -> Self {
        Self {
            service,
            authenticator,
            nonces: cmq_signature::NonceCache::default(),
            secure,
            body_timeout,
            metrics: None,
        }
    }

    /// Counts and times every answered request in `metrics`, beside the RPCs
    /// (`method="sqs.<Action>"`, `"cmq.<Action>"`: see [`crate::metrics::HTTP_METHODS`]).
    pub fn observed_by(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A gRPC request carrying `caller`, as the auth layer hands requests to the service.
    fn request<T>(caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(caller.clone());
        request
    }

    /// One receive, drained: the messages it returns, after its wait if there were none.
    async fn receive(
        &self,
        caller: &Caller,
        request: pb::ReceiveMessagesRequest,
    ) -> Result<Vec<pb::ReceivedMessage>, Status> {
        let mut stream = self
            .service
            .receive_messages(Self::request(caller, request))
            .await?
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.next().await {
            messages.push(message?);
        }
        Ok(messages)
    }

    /// Answers one HTTP request.
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let is_sqs = request.headers().contains_key("x-amz-target");
        let (response, method, code) = if path == CMQ_PATH {
            cmq::answer(&self, request).await
        } else if is_sqs {
            sqs::answer(&self, request).await
        } else if sqs_query::is_query(&request) {
            sqs_query::answer(&self, request).await
        } else {
            return plain(
                StatusCode::NOT_FOUND,
                "not found: SQS requests carry X-Amz-Target (AWS JSON 1.0) or are form-encoded \
                 with Action= (the query protocol); CMQ's go to /v2/index.php\n",
            );
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe_rpc(method, code, started.elapsed());
        }
        response
    }

    /// The request's body, read whole within the size and time limits.
    async fn body(&self, body: Incoming) -> Result<Bytes, BodyError> {
        // A declared length over the limit is refused before a byte of it is read.
        if hyper::body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
            return Err(BodyError::TooLarge);
        }
        let limited = Limited::new(body, MAX_BODY_BYTES);
        match tokio::time::timeout(self.body_timeout, limited.collect()).await {
            Err(_) => Err(BodyError::TimedOut(self.body_timeout)),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge)
            }
            Ok(Err(error)) => Err(BodyError::Broken(error.to_string())),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    TimedOut(Duration),
    Broken(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "the request body is larger than {MAX_BODY_BYTES} bytes, the limit of the HTTP port"
            ),
            Self::TimedOut(limit) => write!(f, "the request body did not arrive within {limit:?}"),
            Self::Broken(error) => write!(f, "the request body could not be read: {error}"),
        }
    }
}

/// A text answer.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A fresh request id, as both APIs return one with every answer.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the id is still unique enough for logs: zeros and the time.
    let _ = getrandom::fill(&mut bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    bytes[..8]
        .iter_mut()
        .zip(now.to_le_bytes())
        .for_each(|(b, t)| *b ^= t);
    let hex = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// What the HTTP port needs besides the listener.
pub struct HttpPort {
    pub edge: Arc<Edge>,
    pub limits: ConnectionLimits,
    pub counts: Arc<ConnectionCounts>,
    pub tls: Option<Arc<TlsConfigs>>,
    pub stopping: CancellationToken,
}

/// Serves the HTTP port on `listener` until `port.stopping`; then open requests finish (long
/// polls end empty, as the service ends them) and the connections close.
pub async fn serve(listener: TcpListener, port: HttpPort) {
    let HttpPort {
        edge,
        limits,
        counts,
        tls,
        stopping,
    } = port;
    let header_timeout = limits.handshake_timeout;
    match tls {
        None => {
            let incoming = net::incoming(listener, limits, counts, stopping.clone(), {
                |stream, _| std::future::ready(Some(stream))
            });
            accept(incoming, edge, header_timeout, stopping).await;
        }
        Some(configs) => {
            let incoming = net::incoming(
                listener,
                limits,
                counts,
                stopping.clone(),
                move |stream, peer| crate::tls::handshake(&configs, stream, peer),
            );
            accept(incoming, edge, header_timeout, stopping).await;
        }
    }
}

/// Serves each connection of `incoming` in a task of its own.
async fn accept<IO>(
    mut incoming: impl futures_util::Stream<Item = Result<net::Guarded<IO>, std::io::Error>> + Unpin,
    edge: Arc<Edge>,
    header_timeout: Duration,
    stopping: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let connection = tokio::select! {
            () = stopping.cancelled() => break,
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let edge = edge.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(edge.answer(request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(connection), service);
            tokio::pin!(served);
            tokio::select! {
                _ = served.as_mut() => {}
                () = stopping.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    let _ = served.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
