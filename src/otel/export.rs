//! The OTLP exporter: finished spans go through a bounded channel to one task, which posts them
//! in batches as OTLP/HTTP with JSON encoding (`POST <endpoint>/v1/traces`) to a collector.
//! Plain HTTP/1.1 on a TCP connection, one per batch: a collector (or an agent beside Spool)
//! is a local hop, and this keeps the whole OpenTelemetry SDK and an HTTP client out of the
//! build.
//!
//! Bounded everywhere: at most [`QUEUED_SPANS`] spans wait (more are dropped and counted in the
//! log), a batch holds at most [`MAX_BATCH`], a post has [`POST_TIMEOUT`]. A collector that is
//! down costs a WARN line per failed batch (rate limited) and the spans of that batch, never
//! the calls being traced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::logsafe::REFUSALS;

/// Spans waiting for the exporter, at most.
const QUEUED_SPANS: usize = 8_192;
/// Spans in one post, at most.
const MAX_BATCH: usize = 512;
/// How long spans wait for company before they are posted.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// One post: connect, send, read the status line.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The head of the collector's answer read, at most.
const MAX_ANSWER_HEAD: usize = 4 * 1024;

/// Where the spans go: `http://host[:port][/path]`; spans are posted to `<path>/v1/traces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, to connect to and for the Host header.
    authority: String,
    /// The request path: `/v1/traces` under the endpoint's own path.
    path: String,
}

impl Endpoint {
    /// Parses `--otlp-endpoint`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "otlp_endpoint {url:?}: only http:// is supported (OTLP/HTTP with JSON to a \
                 collector or an agent beside Spool, e.g. http://127.0.0.1:4318)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(format!(
                "otlp_endpoint {url:?}: expected http://host[:port][/path]"
            ));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.ends_with(']'))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = if path.ends_with("/v1/traces") {
            path.to_string()
        } else {
            format!("{path}/v1/traces")
        };
        Ok(Self { authority, path })
    }
}

/// One finished span: a call of the API.
#[derive(Debug)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// `spool.v1.QueueService/SendMessage`.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The call's final gRPC status code (1, CANCELLED, when the client went away first).
    pub grpc_code: i32,
    /// Its message, for server-side failures.
    pub error_message: Option<String>,
    pub attributes: Vec<(&'static str, Value)>,
}

/// Hands finished spans to the exporter task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Exporter {
    spans: mpsc::Sender<SpanRecord>,
    dropped: Arc<AtomicU64>,
}

/// The exporter task, to be closed once no call is left to trace.
#[derive(Debug)]
pub struct ExportTask {
    closing: CancellationToken,
    task: JoinHandle<()>,
}

impl ExportTask {
    /// Posts the spans still waiting (within [`POST_TIMEOUT`] each) and ends the task.
    pub async fn close(self) {
        self.closing.cancel();
        let _ = self.task.await;
    }
}

impl Exporter {
    /// Starts the exporter task.
    pub fn start(endpoint: Endpoint) -> (Self, ExportTask) {
        let (spans, received) = mpsc::channel(QUEUED_SPANS);
        let dropped = Arc::new(AtomicU64::new(0));
        let closing = CancellationToken::new();
        let task = tokio::spawn(run(endpoint, received, dropped.clone(), closing.clone()));
        (Self { spans, dropped }, ExportTask { closing, task })
    }

    /// Queues a span; dropped (and counted) when the exporter is [`QUEUED_SPANS`] behind.
    pub fn export(&self, span: SpanRecord) {
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Gathers spans into batches (full, or [`BATCH_DELAY`] after their first span) and posts
/// them, until closed.
async fn run(
    endpoint: Endpoint,
    mut received: mpsc::Receiver<SpanRecord>,
    dropped: Arc<AtomicU64>,
    closing: CancellationToken,
) {
    let resource = resource();
    let mut batch = Vec::new();
    loop {
        let mut ended = false;
        tokio::select! {
            span = received.recv() => match span {
                Some(span) => batch.push(span),
                None => ended = true,
            },
            () = closing.cancelled() => ended = true,
        }
        if !ended {
            let deadline = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(deadline);
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    span = received.recv() => match span {
                        Some(span) => batch.push(span),
                        None => {
                            ended = true;
                            break;
                        }
                    },
                    () = &mut deadline => break,
                    () = closing.cancelled() => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            while let Ok(span) = received.try_recv() {
                batch.push(span);
            }
        }
        for chunk in batch.chunks(MAX_BATCH) {
            let body = encode(&resource, chunk);
            if let Err(error) = post(&endpoint, &body).await
                && REFUSALS.allow("otlp_export")
            {
                tracing::warn!(
                    %error,
                    spans = chunk.len(),
                    endpoint = %endpoint.authority,
                    "could not export spans; they are dropped"
                );
            }
        }
        batch.clear();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 && REFUSALS.allow("otlp_dropped") {
            tracing::warn!(
                spans = lost,
                "the span exporter fell behind; spans were dropped"
            );
        }
        if ended {
            return;
        }
    }
}

/// The resource every span comes from.
fn resource() -> Value {
    json!({
        "attributes": [
            attribute("service.name", &json!("spool")),
            attribute("service.version", &json!(env!("CARGO_PKG_VERSION"))),
        ]
    })
}

fn attribute(key: &str, value: &Value) -> Value {
    let value = match value {
        Value::String(text) => json!({ "stringValue": text }),
        // OTLP/JSON writes 64-bit integers as strings.
        Value::Number(number) if number.is_i64() || number.is_u64() => {
            json!({ "intValue": number.to_string() })
        }
        Value::Array(items) => json!({
            "arrayValue": { "values": items.iter().map(|item| json!({ "stringValue": item.as_str().unwrap_or_default() })).collect::<Vec<_>>() }
        }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// An ExportTraceServiceRequest in OTLP/JSON: ids in hex, times as strings of nanoseconds.
fn encode(resource: &Value, spans: &[SpanRecord]) -> Vec<u8> {
    let nanos = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
            .to_string()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut attributes: Vec<Value> = vec![
                attribute("rpc.system", &json!("grpc")),
                attribute("rpc.grpc.status_code", &json!(span.grpc_code)),
            ];
            if let Some((service, method)) = span.name.split_once('/') {
                attributes.push(attribute("rpc.service", &json!(service)));
                attributes.push(attribute("rpc.method", &json!(method)));
            }
            attributes.extend(
                span.attributes
                    .iter()
                    .map(|(key, value)| attribute(key, value)),
            );
            // Server-side failures are errors; a client's mistake is not the server's.
            let failed = matches!(span.grpc_code, 2 | 4 | 12 | 13 | 14 | 15);
            let status = match (&span.error_message, failed) {
                (Some(message), true) => json!({ "code": 2, "message": message }),
                (None, true) => json!({ "code": 2 }),
                _ => json!({}),
            };
            let mut encoded = json!({
                "traceId": super::traceparent::hex(&span.trace_id),
                "spanId": super::traceparent::hex(&span.span_id),
                "name": span.name,
                // SPAN_KIND_SERVER
                "kind": 2,
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end),
                "attributes": attributes,
                "status": status,
            });
            if let Some(parent) = &span.parent_span_id {
                encoded["parentSpanId"] = json!(super::traceparent::hex(parent));
            }
            encoded
        })
        .collect();
    let request = json!({
        "resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{
                "scope": { "name": "spool", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }]
        }]
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Posts one batch; an error says what failed.
async fn post(endpoint: &Endpoint, body: &[u8]) -> Result<(), String> {
    let exchange = async {
        let mut connection = TcpStream::connect(&endpoint.authority)
            .await
            .map_err(|error| format!("connect to {}: {error}", endpoint.authority))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.path,
            endpoint.authority,
            body.len()
        );
        connection
            .write_all(head.as_bytes())
            .await
            .map_err(|error| error.to_string())?;
        connection
            .write_all(body)
            .await
            .map_err(|error| error.to_string())?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.windows(2).any(|window| window == b"\r\n") && answer.len() < MAX_ANSWER_HEAD {
            let read = connection
                .read(&mut chunk)
                .await
                .map_err(|error| error.to_string())?;
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..read]);
        }
        let status_line = String::from_utf8_lossy(&answer);
        let status_line = status_line.lines().next().unwrap_or_default();
        match status_line.split(' ').nth(1) {
            Some(code) if code.starts_with('2') => Ok(()),
            _ => Err(format!("the collector answered {status_line:?}")),
        }
    };
    tokio::time::timeout(POST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {POST_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_a_path_and_need_http() {
        let plain = Endpoint::parse("http://collector:4318").expect("ok");
        assert_eq!(
            (plain.authority.as_str(), plain.path.as_str()),
            ("collector:4318", "/v1/traces")
        );
        let default_port = Endpoint::parse("http://collector/").expect("ok");
        assert_eq!(default_port.authority, "collector:80");
        let prefixed = Endpoint::parse("http://127.0.0.1:4318/otlp").expect("ok");
        assert_eq!(prefixed.path, "/otlp/v1/traces");
        let full = Endpoint::parse("http://127.0.0.1:4318/v1/traces").expect("ok");
        assert_eq!(full.path, "/v1/traces");
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http://a b",
        ] {
            let error = Endpoint::parse(bad).expect_err(bad);
            assert!(error.contains("otlp_endpoint"), "{error}");
        }
    }
}
