//! The edges a client or an operator meets first: malformed and oversized requests, health
//! Watch of an unknown service, startup errors, and the startup log of the settings.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use serde_json::Value;
use spool::pb;
use spool_client::limits::{MAX_CONTROL_REQUEST_BYTES, MAX_REQUEST_BYTES, MAX_SEND_REQUEST_BYTES};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::common::{ChildServer, TestServer, assert_error, attrs, create, on_postgres};

/// Sends any bytes as a request message and reads any bytes back: requests no generated
/// client would write.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_client(endpoint: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// A unary call of `method` with `message` as the request's bytes.
async fn raw_unary(endpoint: &str, method: &'static str, message: Bytes) -> tonic::Status {
    let mut grpc = raw_client(endpoint).await;
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(message),
        PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .map(|_| ())
    .map_or_else(
        |status| status,
        |()| panic!("{method} accepted the request"),
    )
}

/// ReceiveMessages (a server stream) with `message` as the request's bytes.
async fn raw_receive(endpoint: &str, message: Bytes) -> tonic::Status {
    let mut grpc = raw_client(endpoint).await;
    grpc.ready().await.expect("ready");
    let opened = grpc
        .server_streaming(
            tonic::Request::new(message),
            PathAndQuery::from_static("/spool.v1.QueueService/ReceiveMessages"),
            RawCodec,
        )
        .await;
    match opened {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("ReceiveMessages accepted the request"),
    }
}

fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument() {
    let server = TestServer::start().await;
    // Field 1 with wire type 7, which protobuf does not have.
    let malformed = Bytes::from_static(&[0x0f, 0x01]);
    // A length-delimited field 1 that claims 5 bytes and has 1.
    let truncated = Bytes::from_static(&[0x0a, 0x05, b'q']);

    for (method, message) in [
        ("/spool.v1.QueueService/SendMessage", malformed.clone()),
        ("/spool.v1.QueueService/CreateQueue", truncated.clone()),
        (
            "/spool.v1.QueueService/BatchDeleteMessages",
            malformed.clone(),
        ),
    ] {
        let status = raw_unary(&server.endpoint(), method, message).await;
        let text = assert_error(&status, Code::InvalidArgument, 4000);
        assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
        assert!(text.contains("not a valid protobuf"), "{method}: {text}");
    }
    let status = raw_receive(&server.endpoint(), truncated).await;
    let text = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(
        text.contains("ReceiveMessagesRequest"),
        "the message names the request type: {text}"
    );
    server.stop().await;
}

/// A SendMessageRequest for `queue` with a small body, padded with an unknown field (which
/// protobuf skips) to exactly `size` bytes.
fn send_request_of_size(queue: &str, size: usize) -> Bytes {
    fn varint(mut value: usize, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let mut head = Vec::new();
    head.push(0x0a); // queue_name = 1
    varint(queue.len(), &mut head);
    head.extend_from_slice(queue.as_bytes());
    head.extend_from_slice(&[0x12, 0x01, b'x']); // body = 2: "x"
    head.push(0x7a); // field 15, length-delimited: unknown to spool.v1
    let mut padding = size - head.len() - 1;
    loop {
        let mut length = Vec::new();
        varint(padding, &mut length);
        let total = head.len() + length.len() + padding;
        if total == size {
            head.extend_from_slice(&length);
            break;
        }
        padding -= total - size;
    }
    head.resize(size, 0);
    assert_eq!(head.len(), size);
    Bytes::from(head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_above_the_limit_are_too_large_with_error_info() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "big",
        pb::QueueAttributes {
            max_message_size: Some(1_048_576),
            ..attrs()
        },
    )
    .await;

    // 17 MiB through the generated client: one body larger than the whole limit.
    let refused = client
        .send_message(pb::SendMessageRequest {
            queue_name: "big".into(),
            body: vec![7u8; 17 * 1024 * 1024].into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .expect_err("17 MiB is refused");
    let text = assert_error(&refused, Code::InvalidArgument, 4400);
    assert_eq!(reason(&refused).as_deref(), Some("TOO_LARGE"));
    assert!(
        text.contains(&MAX_SEND_REQUEST_BYTES.to_string()),
        "the message names the limit: {text}"
    );

    // Each method has its own limit, the largest legal request of it, and it is exact: one
    // byte more is refused, the limit itself is not.
    let status = raw_receive(
        &server.endpoint(),
        send_request_of_size("big", MAX_CONTROL_REQUEST_BYTES + 1),
    )
    .await;
    let text = assert_error(&status, Code::InvalidArgument, 4400);
    assert!(
        text.contains(&MAX_CONTROL_REQUEST_BYTES.to_string()),
        "{text}"
    );
    let status = raw_unary(
        &server.endpoint(),
        "/spool.v1.QueueService/SendMessage",
        send_request_of_size("big", MAX_SEND_REQUEST_BYTES + 1),
    )
    .await;
    let text = assert_error(&status, Code::InvalidArgument, 4400);
    assert!(text.contains(&MAX_SEND_REQUEST_BYTES.to_string()), "{text}");
    let status = raw_unary(
        &server.endpoint(),
        "/spool.v1.QueueService/BatchSendMessages",
        send_request_of_size("big", MAX_REQUEST_BYTES + 1),
    )
    .await;
    assert_error(&status, Code::InvalidArgument, 4400);
    let mut grpc = raw_client(&server.endpoint()).await;
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(send_request_of_size("big", MAX_SEND_REQUEST_BYTES)),
        PathAndQuery::from_static("/spool.v1.QueueService/SendMessage"),
        RawCodec,
    )
    .await
    .expect("a SendMessage of exactly MAX_SEND_REQUEST_BYTES is decoded");

    // The largest legal batch still passes: 16 bodies of 1 MiB.
    let ids = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: "big".into(),
            entries: (0..16u8)
                .map(|i| pb::BatchSendEntry {
                    body: vec![i; 1_048_576].into(),
                    delay_seconds: Some(3_600),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("16 x 1 MiB")
        .into_inner()
        .message_ids;
    assert_eq!(ids.len(), 16);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_of_an_unknown_service_streams_service_unknown_and_stays_open() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let request = |service: &str| HealthCheckRequest {
        service: service.into(),
    };

    let mut watch = health
        .watch(request("no.such.Service"))
        .await
        .expect("a watch of an unknown service opens")
        .into_inner();
    let first = watch.message().await.expect("status").expect("one message");
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    // Open: nothing more arrives, and the stream does not end.
    let next = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
    assert!(next.is_err(), "the watch ended or sent more: {next:?}");

    // Check keeps the protocol's NOT_FOUND for an unknown service, and the known ones answer.
    let unknown = health
        .check(request("no.such.Service"))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    for service in ["", "spool.v1.QueueService"] {
        let status = health
            .check(request(service))
            .await
            .expect("check")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    drop(watch);
    server.stop().await;
}

/// Runs `spool serve` with RUST_BACKTRACE=1, expecting it to fail at startup.
fn serve_fails(data_dir: &Path, args: &[&str]) -> String {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_spool"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env_remove("SPOOL_CONFIG")
        .env_remove("SPOOL_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run spool serve");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "spool serve {args:?} started");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "spool serve {args:?} printed a backtrace:\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ` line:\n{stderr}"));
    // The whole cause follows the error line (a TOML error spans a few lines).
    stderr[stderr.find(error).unwrap_or(0)..].to_string()
}

#[test]
fn startup_errors_print_the_cause_without_a_backtrace() {
    let dir = tempfile::tempdir().expect("dir");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let error = serve_fails(&dir.path().join("a"), &["--listen", &busy_addr]);
    assert!(
        error.starts_with(&format!("error: cannot listen on {busy_addr}: caused by ")),
        "{error}"
    );
    assert!(error.contains("in use"), "{error}");

    let config = dir.path().join("spool.toml");
    std::fs::write(&config, "max_queus = 5\n").expect("config");
    let config_arg = config.to_str().expect("utf-8 path");
    let error = serve_fails(
        &dir.path().join("b"),
        &["--config", config_arg, "--listen", "127.0.0.1:0"],
    );
    assert!(error.contains("unknown field `max_queus`"), "{error}");

    // A data directory in use: only a server on the embedded database locks one.
    if !on_postgres() {
        let used = dir.path().join("c");
        let running = ChildServer::start(&used);
        let error = serve_fails(&used, &["--listen", "127.0.0.1:0"]);
        assert!(error.contains(&used.display().to_string()), "{error}");
        assert!(error.contains("in use"), "{error}");
        drop(running);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_effective_settings_are_logged_as_one_json_object() {
    let dir = tempfile::tempdir().expect("dir");
    let server = ChildServer::start_with(&dir.path().join("data"), &["--max-queues", "3"], &[]);
    let line = &server.log_line("effective configuration");
    assert!(!line.contains("Settings {"), "a Rust debug struct: {line}");
    let event: Value = serde_json::from_str(line).expect("a JSON log line");
    let settings = event["fields"]["settings"]
        .as_str()
        .unwrap_or_else(|| panic!("no settings field: {line}"));
    let settings: Value = serde_json::from_str(settings).expect("the settings are a JSON object");
    assert_eq!(settings["max_queues"], 3, "{settings}");
    assert_eq!(settings["log_format"], "json", "{settings}");
    assert_eq!(settings["metrics_listen"], Value::Null, "{settings}");
    drop(server);
}
