//! [`RequestSizeLimit`]: each method's requests are limited to the largest legal one of that
//! method ([`method_limit`]: 16 MiB + 64 KiB for a batch send, 1 MiB + 4 KiB for a send, 64 KiB
//! for the rest), and a request body must arrive whole within `--request-body-timeout-seconds`.
//! A request over its limit is Spool's documented "too large" error (INVALID_ARGUMENT, reason
//! TOO_LARGE, cmq_code 4400) rather than tonic's bare OUT_OF_RANGE; a body that stalls ends the
//! call with DEADLINE_EXCEEDED, freeing the partial message it held.
//!
//! The per-method limit is checked on each message's 5-byte gRPC length prefix as it streams
//! in ([`LimitedBody`]), before tonic buffers the message: a 15 MiB SendMessage is refused when
//! its first 5 bytes arrive. Tonic's own limit stays at [`MAX_REQUEST_BYTES`] as the outer
//! bound.
//!
//! Why a wrapper around the service and not a check in the codec: tonic enforces
//! `max_decoding_message_size` on the 5-byte length prefix, before it buffers any of the
//! message, so an oversized request costs the server nothing. A codec only ever sees a message
//! tonic has already buffered whole: a codec-level check would need tonic's own limit raised
//! above Spool's, so every request between the two limits would be read into memory first, and
//! requests above tonic's limit would still get OUT_OF_RANGE. Here tonic keeps the one limit and
//! its early check, and only the wording of its answer changes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Map;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use http_body::Frame;
use tokio::time::{Instant, Sleep};

use crate::error::QueueError;
use crate::limits::{
    MAX_BATCH, MAX_CONTROL_REQUEST_BYTES, MAX_MESSAGE_SIZE, MAX_REQUEST_BYTES,
    MAX_SEND_REQUEST_BYTES, REQUEST_OVERHEAD_BYTES,
};
use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;

/// The largest legal request of a method of the queue service, by its path.
pub fn method_limit(path: &str) -> usize {
    match path.rsplit('/').next().unwrap_or_default() {
        "BatchSendMessages" | "BatchPublishMessages" => MAX_REQUEST_BYTES,
        "SendMessage" | "PublishMessage" => MAX_SEND_REQUEST_BYTES,
        _ => MAX_CONTROL_REQUEST_BYTES,
    }
}

/// Wraps a gRPC service whose `max_decoding_message_size` is [`MAX_REQUEST_BYTES`], and turns
/// the trailers-only OUT_OF_RANGE of tonic's length check into [`too_large`].
///
/// A trailers-only OUT_OF_RANGE can only be that check: Spool's handlers never answer
/// OUT_OF_RANGE (`grpc::status::code_of` has no case for it), and tonic's other OUT_OF_RANGE, a
/// response above `max_encoding_message_size`, arrives in the trailers after the response
/// headers, never in them.
#[derive(Clone)]
pub struct RequestSizeLimit<S> {
    inner: S,
    /// `--request-body-timeout-seconds`: time for a whole request body.
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<S> RequestSizeLimit<S> {
    pub fn new(inner: S, body_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            body_timeout,
            metrics,
        }
    }
}

/// The router finds a service by its name; the wrapper serves under the inner one's.
impl<S: NamedService> NamedService for RequestSizeLimit<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S> Service<http::Request<Body>> for RequestSizeLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Map<S::Future, fn(Answer) -> Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let limit = method_limit(path);
        let per_message = method_name(path) == STREAMING_REQUEST_METHOD;
        // The URI shares the request's bytes: no copy of the method's name per call.
        let uri = request.uri().clone();
        let timeout = self.body_timeout;
        let metrics = self.metrics.clone();
        let request = request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                limit,
                uri,
                header: [0; GRPC_HEADER_LEN],
                header_filled: 0,
                payload_left: 0,
                deadline: (!per_message).then(|| Deadline::at(Instant::now() + timeout)),
                per_message,
                timeout,
                metrics,
            })
        });
        self.inner
            .call(request)
            .map(|answer| answer.map(rewrite_length_check))
    }
}

/// The one method whose request body is a stream that may stay open indefinitely.
const STREAMING_REQUEST_METHOD: &str = "StreamMessages";

/// A gRPC message's prefix: a compression flag and a big-endian u32 length.
const GRPC_HEADER_LEN: usize = 5;

/// A request body whose messages are checked against their method's limit as their length
/// prefixes pass, and which fails if it has not ended by its deadline.
///
/// A consumer stream's body (StreamMessages) stays open for the stream's life, which has no
/// limit: there the deadline bounds each message instead, from its first byte to its last, so
/// a client that starts a message and trickles it is still ended, and one that is merely quiet
/// between acknowledgements is not.
struct LimitedBody {
    inner: Body,
    limit: usize,
    /// The call's URI, for its method's name in refusals.
    uri: http::Uri,
    header: [u8; GRPC_HEADER_LEN],
    header_filled: usize,
    /// Bytes of the current message's payload still to come.
    payload_left: usize,
    /// Until the body ends (per message: until the message ends): when it must have.
    deadline: Option<Deadline>,
    /// Whether the deadline is per message (a consumer stream) rather than for the whole body.
    per_message: bool,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// A request body's deadline: its timer is made only once the body is found waiting (most
/// unary requests arrive whole with their headers, and never need one).
struct Deadline {
    at: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn at(at: Instant) -> Self {
        Self { at, timer: None }
    }

    /// Whether it has passed; if not, the task is woken when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let at = self.at;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }
}

/// The method's name of a gRPC path (`/spool.v1.QueueService/SendMessage`: `SendMessage`).
fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

impl LimitedBody {
    fn method(&self) -> &str {
        method_name(self.uri.path())
    }

    /// Walks the gRPC framing over `chunk`; the refusal when a message is over the limit.
    fn check(&mut self, mut chunk: &[u8]) -> Result<(), tonic::Status> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(chunk.len());
                self.payload_left -= skipped;
                chunk = &chunk[skipped..];
                continue;
            }
            let taken = (GRPC_HEADER_LEN - self.header_filled).min(chunk.len());
            self.header[self.header_filled..self.header_filled + taken]
                .copy_from_slice(&chunk[..taken]);
            self.header_filled += taken;
            chunk = &chunk[taken..];
            if self.header_filled == GRPC_HEADER_LEN {
                self.header_filled = 0;
                let [_, a, b, c, d] = self.header;
                let length = u32::from_be_bytes([a, b, c, d]) as usize;
                if length > self.limit {
                    return Err(too_large_for(self.method(), self.limit, length));
                }
                self.payload_left = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for LimitedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.check(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                    if this.per_message {
                        let mid_message = this.header_filled > 0 || this.payload_left > 0;
                        if !mid_message {
                            this.deadline = None;
                        } else if this.deadline.is_none() {
                            this.deadline = Some(Deadline::at(Instant::now() + this.timeout));
                        }
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.deadline = None,
            Poll::Pending => {
                if let Some(deadline) = &mut this.deadline
                    && deadline.poll_passed(cx)
                {
                    this.deadline = None;
                    this.metrics.limit_refused("request_body_timeout");
                    if REFUSALS.allow("request_body_timeout") {
                        tracing::info!(
                            method = %this.method(),
                            timeout = ?this.timeout,
                            "refused a request whose body did not arrive in time"
                        );
                    }
                    // Not CANCELLED: tonic reads a request body's CANCELLED as its end.
                    return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                        "the request body did not arrive within {:?} \
                         (--request-body-timeout-seconds)",
                        this.timeout
                    )))));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The status of a request above its method's limit.
fn too_large_for(method: &str, limit: usize, length: usize) -> tonic::Status {
    QueueError::TooLarge(format!(
        "the request is {length} bytes; a {method} request may be at most {limit} bytes (the \
         largest legal one: bodies of at most {} bytes, {MAX_BATCH} to a batch)",
        MAX_MESSAGE_SIZE.end()
    ))
    .into()
}

fn rewrite_length_check(response: http::Response<Body>) -> http::Response<Body> {
    let out_of_range = response
        .headers()
        .get(tonic::Status::GRPC_STATUS)
        .is_some_and(|code| Code::from_bytes(code.as_bytes()) == Code::OutOfRange);
    if out_of_range {
        too_large().into_http()
    } else {
        response
    }
}

/// The status of a request above [`MAX_REQUEST_BYTES`], naming the limit and what it allows.
pub fn too_large() -> tonic::Status {
    QueueError::TooLarge(format!(
        "the request is larger than {MAX_REQUEST_BYTES} bytes, the largest a request may be \
         (a batch of {MAX_BATCH} bodies of {} bytes, plus {REQUEST_OVERHEAD_BYTES} bytes)",
        MAX_MESSAGE_SIZE.end()
    ))
    .into()
}
