//! [`Observed`]: every call of a gRPC service measured and logged in one place, from what goes
//! over the wire (its path, its final `grpc-status`), so the handlers and the error mapping
//! have no side effects.
//!
//! A call's outcome is in the response headers when it fails before any message
//! (trailers-only), else in the trailers at the end of its body: for a ReceiveMessages stream,
//! when the stream ends. A body dropped before its trailers is a call the client (or the
//! connection) gave up: it counts as CANCELLED.
//!
//! Logs: client faults at INFO, server-side failures (UNAVAILABLE, INTERNAL, DATA_LOSS,
//! UNKNOWN) at ERROR, with the method, the code, the time taken and the message. Successful
//! calls are counted, not logged; so are refusals (UNAUTHENTICATED, PERMISSION_DENIED), which
//! `grpc::auth` logs with the principal. The message is the client-facing text, which may carry
//! client strings (queue names): it is cut to [`LOGGED_MESSAGE_CHARS`] and logged with Debug
//! escaping, so it cannot forge a log line; refusal lines are rate limited per kind
//! (`logsafe::REFUSALS`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::Map;
use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::logsafe::REFUSALS;
use crate::metrics::{Method, Metrics};

/// Characters of a status message a log line keeps.
pub const LOGGED_MESSAGE_CHARS: usize = 512;

/// Wraps a gRPC service: counts and times every call in [`Metrics`], and logs failures.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Observed<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

/// The router finds a service by its name; the wrapper serves under the inner one's.
impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S> Service<http::Request<Body>> for Observed<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Map<S::Future, Box<dyn FnOnce(Answer) -> Answer + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = Call {
            method: Method::of_path(request.uri().path()),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        };
        self.inner
            .call(request)
            .map(Box::new(move |answer: Answer| {
                answer.map(|response| call.watch(response))
            }))
    }
}

/// One call being observed; [`Call::finish`] records it, once.
struct Call {
    method: Method,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Call {
    /// Records the call now if its response already carries its status (trailers-only), else
    /// wraps the body to record it at the trailers.
    fn watch(self, response: http::Response<Body>) -> http::Response<Body> {
        if response.headers().contains_key(Status::GRPC_STATUS) {
            let status = Status::from_header_map(response.headers());
            self.finish(status.as_ref());
            return response;
        }
        response.map(|body| {
            Body::new(ObservedBody {
                inner: body,
                call: Some(self),
            })
        })
    }

    /// `None`: the call ended without a status of its own (the client went away).
    fn finish(self, status: Option<&Status>) {
        let elapsed = self.started.elapsed();
        let code = status.map_or(Code::Cancelled, Status::code);
        self.metrics.observe_rpc(self.method, code, elapsed);
        // Refusals are logged by `grpc::auth`, which knows the principal.
        if matches!(
            code,
            Code::Ok | Code::Unauthenticated | Code::PermissionDenied
        ) {
            return;
        }
        let method = self.method.name();
        let message = status.map_or("the call ended before its status", Status::message);
        let message = cut(message, LOGGED_MESSAGE_CHARS);
        // Rate limited: a client looping on a refused call (or on a full disk) must not
        // flood the log.
        match code {
            Code::Unavailable | Code::Internal | Code::DataLoss | Code::Unknown => {
                if REFUSALS.allow("request_failed") {
                    tracing::error!(method, ?code, ?elapsed, message, "request failed");
                }
            }
            _ => {
                if REFUSALS.allow("request_refused") {
                    tracing::info!(method, ?code, ?elapsed, message, "request refused");
                }
            }
        }
    }
}

/// The first `max` characters of `text`, Debug-escaped (a client string inside cannot forge a
/// log line), marked when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{:?}… ({} bytes in all)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// A response body that records its call when its trailers pass, or when it is dropped first.
struct ObservedBody {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    call.finish(Status::from_header_map(trailers).as_ref());
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(call) = self.call.take() {
                    call.finish(Some(status));
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "\"short\"");
        assert_eq!(cut("a\nb", 10), "\"a\\nb\"");
        let long = "é".repeat(20);
        let shown = cut(&long, 4);
        assert!(shown.starts_with("\"éééé\"… "), "{shown}");
        assert!(shown.ends_with("(40 bytes in all)"), "{shown}");
    }
}
