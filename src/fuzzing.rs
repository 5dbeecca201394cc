//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes the
//! fuzzer's bytes and runs them through the server's own code, the way a client's input
//! reaches it. Built only with the `fuzzing` feature; not an API.
//!
//! Every entry point either returns or panics, and a panic is a bug: no input may panic the
//! server. Besides "no panic", each checks what must hold for any input it accepts (a handle
//! that decodes re-encodes to the same text, accepted attributes validate, ...).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{Service, http};

use crate::attributes::{QueueAttributes, validate_queue_name};
use crate::auth::Principals;
use crate::clock::Clock;
use crate::config::Settings;
use crate::disk::DiskGuard;
use crate::grpc::QueueServiceImpl;
use crate::grpc::auth::Authenticated;
use crate::grpc::layer::RequestSizeLimit;
use crate::grpc::receive_stream::ReceiveLimits;
use crate::limits::MAX_REQUEST_BYTES;
use crate::logsafe::{LOGGED_CLIENT_CHARS, Shown};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::queue_service_server::QueueServiceServer;
use crate::receipt::{KEY_LEN, ReceiptHandle, ReceiptKey};
use crate::registry::Registry;
use crate::storage::Storage;
use crate::storage::memory::MemoryStorage;

/// A receipt handle as a client sends it: decoding must refuse what this server did not
/// issue, and whatever decodes must be a handle that encodes back to the same text.
pub fn receipt_handle(data: &[u8]) {
    let key = ReceiptKey::new(&[7; KEY_LEN]);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(handle) = key.decode(text, &"receipt_handle")
    {
        assert_eq!(
            key.encode(&handle),
            text,
            "a decoded handle re-encodes as given"
        );
    }
    // Handles this server issues always decode to themselves, and a flipped character breaks
    // them.
    if let Some(fields) = data.get(..28) {
        let word = |at: usize| u64::from_le_bytes(fields[at..at + 8].try_into().unwrap_or([0; 8]));
        let handle = ReceiptHandle {
            queue_id: word(0),
            message_id: word(8),
            nonce: word(16),
            receive_count: u32::from_le_bytes(fields[24..28].try_into().unwrap_or([0; 4])),
        };
        let text = key.encode(&handle);
        assert_eq!(key.decode(&text, &"receipt_handle").ok(), Some(handle));
        let at = usize::from(data.get(28).copied().unwrap_or(0)) % text.len();
        let mut altered = text.into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        if let Ok(altered) = String::from_utf8(altered) {
            assert!(key.decode(&altered, &"receipt_handle").is_err());
        }
    }
}

/// A queue name and attributes as CreateQueue or UpdateQueue carry them: the first byte is
/// how long the name is, the rest the encoded `QueueAttributes`.
pub fn queue_name_and_attributes(data: &[u8]) {
    let Some((&name_len, rest)) = data.split_first() else {
        return;
    };
    let (name, attributes) = rest.split_at(usize::from(name_len).min(rest.len()));
    let name = String::from_utf8_lossy(name);
    if validate_queue_name(&name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 64, "{name:?} accepted");
    }
    // What a log line shows of the name is bounded and has no control character.
    let shown = Shown(&name).to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.chars().count() <= LOGGED_CLIENT_CHARS * 10 + 64);

    let Ok(attributes) = pb::QueueAttributes::decode(attributes) else {
        return;
    };
    let patch = crate::grpc::convert::patch(Some(attributes));
    if let Ok(merged) = QueueAttributes::default().patched(&patch) {
        assert!(merged.validate().is_ok());
        // What GetQueue answers reads back as the same attributes.
        let shown = crate::grpc::convert::attributes(&merged);
        let again = QueueAttributes::default()
            .patched(&crate::grpc::convert::patch(Some(shown)))
            .ok();
        assert_eq!(again, Some(merged));
    }
}

/// A config file as `spool serve --config FILE` reads it, then everything the server derives
/// from it (the effective settings, the startup log's lines).
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = Settings::from_toml(text) else {
        return;
    };
    let _ = settings.to_redacted_lines();
    let effective = settings.effective();
    let _ = (
        effective.handshake_timeout(),
        effective.request_body_timeout(),
        effective.stream_stall_timeout(),
        effective.shutdown_grace(),
        effective.max_connection_age(),
    );
}

/// An auth file as `--auth-file` reads it; the first line is the `authorization` value of a
/// call to authenticate against it, the second a client certificate's name.
pub fn auth_file(data: &[u8]) {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let authorization = lines.next().unwrap_or_default();
    let certificate_name = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let Ok(text) = std::str::from_utf8(lines.next().unwrap_or_default()) else {
        return;
    };
    let Ok(principals) = Principals::parse(text) else {
        return;
    };
    let queue = String::from_utf8_lossy(authorization);
    for (authorization, names) in [
        (Some(authorization), None),
        (None, Some(vec![certificate_name])),
    ] {
        if let Ok(principal) = principals.authenticate(authorization, names) {
            for action in [
                crate::auth::Action::Send,
                crate::auth::Action::Receive,
                crate::auth::Action::Admin,
            ] {
                // A grant on an action implies the queue is seen.
                if principal.may(action, &queue) {
                    assert!(principal.sees(&queue));
                }
            }
        }
    }
}

/// The methods of `spool.v1.QueueService`, as the first byte of a call picks them.
const METHODS: &[&str] = &[
    "CreateQueue",
    "GetQueue",
    "UpdateQueue",
    "DeleteQueue",
    "ListQueues",
    "RewindQueue",
    "SendMessage",
    "BatchSendMessages",
    "ReceiveMessages",
    "DeleteMessage",
    "BatchDeleteMessages",
    "ChangeMessageVisibility",
    "BatchChangeMessageVisibility",
    "PurgeQueue",
    "PeekMessages",
    "StreamMessages",
];

/// Queues one input may create: enough for every cross-queue path, few enough that memory
/// stays small at any input.
const MAX_QUEUES: usize = 8;
/// How long a call's answer is read before it is dropped (a consumer stream stays open until
/// its client goes): long enough for an immediate answer.
const CALL_BUDGET: Duration = Duration::from_millis(20);
/// A response stream's messages read at most.
const MAX_RESPONSE_FRAMES: usize = 64;

/// The gRPC stack of the server (auth layer without an auth file, the per-method request
/// size limit and body timeout, the generated server, the handlers) on an in-memory storage,
/// fresh for each input so that an input is a whole story that replays the same.
pub struct Handlers {
    runtime: tokio::runtime::Runtime,
}

impl Default for Handlers {
    fn default() -> Self {
        Self::new()
    }
}

impl Handlers {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            // The fuzz target cannot start without one; nothing a client sends reaches this.
            .expect("a tokio runtime");
        Self { runtime }
    }

    /// Runs the calls `data` encodes, one after the other: each is a method byte, a
    /// two-byte length and that many bytes of the request message (for StreamMessages, a
    /// sequence of such messages each with its own length).
    pub fn run(&self, data: &[u8]) {
        self.runtime.block_on(async {
            let metrics = Arc::new(Metrics::default());
            let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
            let Ok(registry) = Registry::recover(
                storage,
                Clock::new(),
                MAX_QUEUES,
                1 << 20,
                crate::queue::window::WindowLimits::unbounded(),
            )
            .await
            else {
                panic!("recovery of an empty in-memory storage failed");
            };
            let slot = Arc::new(OnceLock::new());
            let _ = slot.set(Arc::new(registry));
            let stopping = CancellationToken::new();
            let service = QueueServiceImpl::new(
                slot,
                stopping.clone(),
                ReceiveLimits::new(
                    16,
                    4 * MAX_REQUEST_BYTES,
                    Duration::from_secs(1),
                    metrics.clone(),
                ),
                Arc::new(DiskGuard::new(metrics.clone())),
            );
            let mut stack = Authenticated::new(
                RequestSizeLimit::new(
                    QueueServiceServer::new(service)
                        .max_decoding_message_size(MAX_REQUEST_BYTES)
                        .max_encoding_message_size(MAX_REQUEST_BYTES),
                    Duration::from_secs(1),
                    metrics.clone(),
                ),
                None,
                metrics,
            );
            let mut rest = data;
            // The receipt handle last received: a fuzzer cannot forge one, so it writes
            // HANDLE_MARK where a handle goes and gets this one.
            let mut last_handle = None;
            while let Some((call, after)) = next_call(rest, last_handle.as_deref()) {
                rest = after;
                let request = grpc_request(call.method, call.frames);
                let answer = stack.call(request);
                let _ = tokio::time::timeout(CALL_BUDGET, async {
                    let Ok(response) = answer.await;
                    drain(response.into_body(), call.method, &mut last_handle).await;
                })
                .await;
            }
            stopping.cancel();
        });
    }
}

/// One call of a fuzz input.
struct Call {
    method: &'static str,
    /// The gRPC body: the request messages, framed.
    frames: Bytes,
}

/// Marks a receipt handle in a fuzz input: these bytes and the ones up to a handle's length
/// are replaced by the handle last received, so the length fields around it stay right.
const HANDLE_MARK: &[u8] = b"@RH@";

/// The next call of `data`, and what follows it.
fn next_call<'a>(data: &'a [u8], last_handle: Option<&str>) -> Option<(Call, &'a [u8])> {
    let (&selector, rest) = data.split_first()?;
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let messages = if method == "StreamMessages" {
        usize::from(selector / 16 % 4) + 1
    } else {
        1
    };
    let mut frames = BytesMut::new();
    let mut rest = rest;
    for _ in 0..messages {
        let [high, low, after @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(after.len());
        let (message, after) = after.split_at(len);
        frames.put_u8(0);
        frames.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        let start = frames.len();
        frames.put_slice(message);
        if let Some(handle) = last_handle {
            replace_marks(&mut frames[start..], handle.as_bytes());
        }
        rest = after;
    }
    Some((
        Call {
            method,
            frames: frames.freeze(),
        },
        rest,
    ))
}

/// Writes `handle` over each [`HANDLE_MARK`] in `message` that has room for all of it.
fn replace_marks(message: &mut [u8], handle: &[u8]) {
    let mut at = 0;
    while at + handle.len() <= message.len() {
        if message[at..].starts_with(HANDLE_MARK) {
            message[at..at + handle.len()].copy_from_slice(handle);
            at += handle.len();
        } else {
            at += 1;
        }
    }
}

/// A gRPC call as it comes off the wire, with a short deadline so that long polls end.
fn grpc_request(method: &str, frames: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(frames)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("/spool.v1.QueueService/{method}")
        .parse()
        .unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", http::HeaderValue::from_static("4m"));
    request
}

/// Reads a response body to its end (or [`MAX_RESPONSE_FRAMES`] frames), keeping the last
/// receipt handle it carries.
async fn drain(mut body: Body, method: &str, last_handle: &mut Option<String>) {
    for _ in 0..MAX_RESPONSE_FRAMES {
        let Some(Ok(frame)) = body.frame().await else {
            return;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // One gRPC message per data frame, as tonic writes them.
        let Some(message) = data.get(5..) else {
            continue;
        };
        let handle = match method {
            "ReceiveMessages" => pb::ReceivedMessage::decode(message)
                .ok()
                .map(|m| m.receipt_handle),
            "StreamMessages" => match pb::StreamMessagesResponse::decode(message) {
                Ok(pb::StreamMessagesResponse {
                    kind: Some(pb::stream_messages_response::Kind::Message(m)),
                }) => Some(m.receipt_handle),
                _ => None,
            },
            _ => None,
        };
        if handle.is_some() {
            *last_handle = handle;
        }
    }
}
