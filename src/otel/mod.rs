//! Traces of the API's calls, for OpenTelemetry: [`Traced`] wraps the queue service and makes
//! one span per call, named `spool.v1.QueueService/<Method>`, in the trace of the caller's W3C
//! `traceparent` metadata (or a new one), with the queue it names (`spool.queue`), the message
//! ids its answer carries (`spool.message_ids`: sends, receives, consumer streams, peeks) and
//! its gRPC status. A span ends with the call: for a stream, when the stream ends.
//!
//! With `--otlp-endpoint`, spans go to an OpenTelemetry collector ([`export`]); without it none
//! are made. Either way, a call that carries a `traceparent` runs inside a `tracing` span with
//! `trace_id` and `span_id` fields, so its log lines (JSON or not) name the trace.

pub mod export;
pub mod traceparent;
mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http_body::Frame;
use serde_json::json;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tracing::Instrument as _;

use export::{Exporter, SpanRecord};
use traceparent::{TraceContext, hex, random_id};
use wire::{FieldOne, Shape};

/// The metadata key of W3C Trace Context.
const TRACEPARENT: &str = "traceparent";

/// The trace context a call passes on to the messages it sends (a request extension the send
/// handlers read): Spool's span of the call when that span is exported, else the caller's own
/// context. The handlers store it with each message, delivered as its `traceparent` attribute.
#[derive(Clone, Copy, Debug)]
pub struct SendTrace(pub TraceContext);

impl SendTrace {
    /// The `traceparent` value to store with the messages.
    pub fn header(&self) -> String {
        self.0.header()
    }
}

/// Wraps a gRPC service with a span per call; see the module's documentation.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    /// `None`: no `--otlp-endpoint`; only calls with a `traceparent` get a (log-only) span.
    exporter: Option<Exporter>,
}

impl<S> Traced<S> {
    pub fn new(inner: S, exporter: Option<Exporter>) -> Self {
        Self { inner, exporter }
    }
}

/// The router finds a service by its name; the wrapper serves under the inner one's.
impl<S: NamedService> NamedService for Traced<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S> Service<http::Request<Body>> for Traced<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|value| TraceContext::parse(value.as_bytes()));
        if parent.is_none() && self.exporter.is_none() {
            return Box::pin(self.inner.call(request));
        }
        let trace_id = parent.map_or_else(random_id, |parent| parent.trace_id);
        let span_id = random_id();
        let log_span = tracing::info_span!(
            "rpc",
            trace_id = %hex(&trace_id),
            span_id = %hex(&span_id),
        );
        // A caller that does not record its trace is not recorded here either.
        let exporter = match parent {
            Some(parent) if !parent.sampled => None,
            _ => self.exporter.clone(),
        };
        let Some(exporter) = exporter else {
            // Not recorded here: the messages carry the caller's own context on.
            if let Some(parent) = parent {
                request.extensions_mut().insert(SendTrace(parent));
            }
            return Box::pin(self.inner.call(request).instrument(log_span));
        };
        request.extensions_mut().insert(SendTrace(TraceContext {
            trace_id,
            span_id,
            sampled: true,
        }));
        let name = request.uri().path().trim_start_matches('/').to_string();
        let method = name.rsplit('/').next().unwrap_or_default().to_string();
        let span = Arc::new(Mutex::new(OpenSpan {
            record: Some(SpanRecord {
                trace_id,
                span_id,
                parent_span_id: parent.map(|parent| parent.span_id),
                name,
                start: SystemTime::now(),
                end: SystemTime::now(),
                grpc_code: Code::Cancelled as i32,
                error_message: None,
                attributes: Vec::new(),
            }),
            queue: None,
            message_ids: Vec::new(),
            exporter,
        }));
        let request = match request_shape(&method) {
            Some(shape) => request.map(|body| {
                Body::new(ReadBody {
                    inner: body,
                    reader: FieldOne::new(shape, 1),
                    span: span.clone(),
                    side: Side::Request,
                })
            }),
            None => request,
        };
        let call = self.inner.call(request).instrument(log_span);
        Box::pin(async move {
            let response = call.await?;
            if response.headers().contains_key(Status::GRPC_STATUS) {
                // Trailers-only: the call is over.
                finish(&span, Status::from_header_map(response.headers()).as_ref());
                return Ok(response);
            }
            let shape = response_shape(&method);
            Ok(response.map(|body| {
                Body::new(ReadBody {
                    inner: body,
                    reader: FieldOne::new(shape.unwrap_or(Shape::Flat), usize::MAX),
                    span,
                    side: if shape.is_some() {
                        Side::Response
                    } else {
                        Side::StatusOnly
                    },
                })
            }))
        })
    }
}

/// Where the queue's name is in a method's request (field 1, or field 1 of the stream's start).
fn request_shape(method: &str) -> Option<Shape> {
    match method {
        "ListQueues" => None,
        "StreamMessages" => Some(Shape::Nested),
        _ => Some(Shape::Flat),
    }
}

/// Where the message ids are in a method's answers.
fn response_shape(method: &str) -> Option<Shape> {
    match method {
        "SendMessage" | "BatchSendMessages" | "ReceiveMessages" => Some(Shape::Flat),
        "StreamMessages" | "PeekMessages" => Some(Shape::Nested),
        _ => None,
    }
}

/// A call's span until it ends.
struct OpenSpan {
    /// Taken when the span is exported, once.
    record: Option<SpanRecord>,
    queue: Option<String>,
    message_ids: Vec<String>,
    exporter: Exporter,
}

/// Ends the span with the call's status (`None`: the call ended without one) and exports it.
fn finish(span: &Mutex<OpenSpan>, status: Option<&Status>) {
    // A poisoned lock means a panic while pushing a string: what is inside is whole.
    let mut open = span.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut record) = open.record.take() else {
        return;
    };
    record.end = SystemTime::now();
    record.grpc_code = status.map_or(Code::Cancelled, Status::code) as i32;
    record.error_message = status
        .filter(|status| status.code() != Code::Ok)
        .map(|status| status.message().chars().take(512).collect());
    if let Some(queue) = open.queue.take() {
        record.attributes.push(("spool.queue", json!(queue)));
    }
    if !open.message_ids.is_empty() {
        record.attributes.push((
            "spool.message_ids",
            json!(std::mem::take(&mut open.message_ids)),
        ));
    }
    open.exporter.export(record);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Reads the queue's name.
    Request,
    /// Reads message ids, and ends the span at the trailers.
    Response,
    /// Only ends the span at the trailers.
    StatusOnly,
}

/// A body read in passing; a response body ends its span at its trailers, or when dropped
/// before them (the client went away).
struct ReadBody {
    inner: Body,
    reader: FieldOne,
    span: Arc<Mutex<OpenSpan>>,
    side: Side,
}

impl ReadBody {
    fn take_found(&mut self) {
        if self.reader.found.is_empty() {
            return;
        }
        let found = std::mem::take(&mut self.reader.found);
        let mut open = self.span.lock().unwrap_or_else(|e| e.into_inner());
        match self.side {
            Side::Request => {
                if open.queue.is_none() {
                    open.queue = found.into_iter().next();
                }
            }
            Side::Response => {
                let room = wire::MAX_STRINGS.saturating_sub(open.message_ids.len());
                open.message_ids.extend(found.into_iter().take(room));
            }
            Side::StatusOnly => {}
        }
    }
}

impl http_body::Body for ReadBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(result)) = &polled {
            match result {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref()
                        && this.side != Side::StatusOnly
                    {
                        this.reader.feed(data);
                        this.take_found();
                    }
                    if let Some(trailers) = frame.trailers_ref()
                        && this.side != Side::Request
                    {
                        finish(&this.span, Status::from_header_map(trailers).as_ref());
                    }
                }
                Err(status) => {
                    if this.side != Side::Request {
                        finish(&this.span, Some(status));
                    }
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

impl Drop for ReadBody {
    fn drop(&mut self) {
        if self.side != Side::Request {
            finish(&self.span, None);
        }
    }
}
