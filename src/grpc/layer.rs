//! [`RequestSizeLimit`]: the queue service's answer to a request larger than
//! [`MAX_REQUEST_BYTES`] is Spool's documented "too large" error (INVALID_ARGUMENT, reason
//! TOO_LARGE, cmq_code 4400) rather than tonic's bare OUT_OF_RANGE.
//!
//! Why a wrapper around the service and not a check in the codec: tonic enforces
//! `max_decoding_message_size` on the 5-byte length prefix, before it buffers any of the
//! message, so an oversized request costs the server nothing. A codec only ever sees a message
//! tonic has already buffered whole: a codec-level check would need tonic's own limit raised
//! above Spool's, so every request between the two limits would be read into memory first, and
//! requests above tonic's limit would still get OUT_OF_RANGE. Here tonic keeps the one limit and
//! its early check, and only the wording of its answer changes.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::Map;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::error::QueueError;
use crate::limits::{MAX_BATCH, MAX_MESSAGE_SIZE, MAX_REQUEST_BYTES, REQUEST_OVERHEAD_BYTES};

/// Wraps a gRPC service whose `max_decoding_message_size` is [`MAX_REQUEST_BYTES`], and turns
/// the trailers-only OUT_OF_RANGE of tonic's length check into [`too_large`].
///
/// A trailers-only OUT_OF_RANGE can only be that check: Spool's handlers never answer
/// OUT_OF_RANGE (`grpc::status::code_of` has no case for it), and tonic's other OUT_OF_RANGE, a
/// response above `max_encoding_message_size`, arrives in the trailers after the response
/// headers, never in them.
#[derive(Debug, Clone)]
pub struct RequestSizeLimit<S> {
    inner: S,
}

impl<S> RequestSizeLimit<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
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
        self.inner
            .call(request)
            .map(|answer| answer.map(rewrite_length_check))
    }
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
