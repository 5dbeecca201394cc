//! OpenTelemetry traces: the real binary with `--otlp-endpoint` pointed at an OTLP/HTTP
//! receiver the test runs (it keeps what is posted, as a collector would). Calls carrying a W3C
//! `traceparent` join the caller's trace; each call is one server span with its queue, its
//! message ids and its status; an unsampled caller is not recorded; the JSON log line of a
//! refused call names its trace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use spool::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Request;

use crate::common::{ChildServer, attrs};

/// What the receiver was sent: one entry per post (its path, content type and JSON).
type Posts = Arc<Mutex<Vec<(String, String, Value)>>>;

/// An OTLP/HTTP receiver on 127.0.0.1:0: reads each POST whole and answers 200 `{}`.
async fn receiver() -> (String, Posts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let posts: Posts = Arc::default();
    let kept = posts.clone();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let read = connection.read(&mut chunk).await.expect("read");
                    if read == 0 {
                        return;
                    }
                    raw.extend_from_slice(&chunk[..read]);
                    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..split]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .filter_map(|line| line.split_once(':'))
                            .find(|(key, _)| key.eq_ignore_ascii_case(name))
                            .map(|(_, value)| value.trim().to_string())
                            .unwrap_or_default()
                    };
                    let length: usize = header("content-length").parse().expect("a length");
                    if raw.len() < split + 4 + length {
                        continue;
                    }
                    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                    let json = serde_json::from_slice(&raw[split + 4..split + 4 + length])
                        .expect("a JSON body");
                    kept.lock()
                        .expect("posts")
                        .push((path, header("content-type"), json));
                    let _ = connection
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                        .await;
                    return;
                }
            });
        }
    });
    (url, posts)
}

/// Every span posted so far.
fn spans(posts: &Posts) -> Vec<Value> {
    posts
        .lock()
        .expect("posts")
        .iter()
        .flat_map(|(_, _, json)| {
            json["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|resource| resource["scopeSpans"].as_array().into_iter().flatten())
                .flat_map(|scope| scope["spans"].as_array().into_iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The span of `trace_id` named `name`, waiting up to 15 s for it to be posted.
async fn span_of(posts: &Posts, trace_id: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(span) = spans(posts)
            .into_iter()
            .find(|span| span["traceId"] == trace_id && span["name"] == name)
        {
            return span;
        }
        assert!(
            Instant::now() < deadline,
            "no {name} span of trace {trace_id} in {:#?}",
            spans(posts)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A span's attribute, as OTLP/JSON writes it (`{"stringValue": ..}`, ...).
fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|attributes| attributes.iter().find(|a| a["key"] == key))
        .map(|a| &a["value"])
        .unwrap_or(&Value::Null)
}

fn with_parent<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata"));
    request
}

const SEND_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SEND_PARENT: &str = "00f067aa0ba902b7";
const RECEIVE_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const MISSING_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4738";
const UNSAMPLED_TRACE: &str = "7bf92f3577b34da6a3ce929d0e0e4739";
const LAST_TRACE: &str = "8bf92f3577b34da6a3ce929d0e0e4730";
const STOPPING_TRACE: &str = "9bf92f3577b34da6a3ce929d0e0e4731";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_span_in_the_callers_trace_with_its_queue_and_message_ids() {
    let (url, posts) = receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start_with(dir.path(), &["--otlp-endpoint", &url], &[]);
    let mut client = server.client().await;
    let service = "spool.v1.QueueService";

    client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "traced".into(),
            attributes: Some(attrs()),
        })
        .await
        .expect("create");
    let sent = client
        .send_message(with_parent(
            pb::SendMessageRequest {
                queue_name: "traced".into(),
                body: b"followed".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            },
            &format!("00-{SEND_TRACE}-{SEND_PARENT}-01"),
        ))
        .await
        .expect("send")
        .into_inner()
        .message_id;
    let mut stream = client
        .receive_messages(with_parent(
            pb::ReceiveMessagesRequest {
                queue_name: "traced".into(),
                max_messages: 16,
                wait_seconds: Some(0),
                visibility_timeout_seconds: None,
            },
            &format!("00-{RECEIVE_TRACE}-{SEND_PARENT}-01"),
        ))
        .await
        .expect("receive")
        .into_inner();
    let mut received = Vec::new();
    let mut carried = Vec::new();
    while let Some(message) = stream.message().await.expect("a message") {
        received.push(message.message_id);
        carried.push(message.attributes.get("traceparent").cloned());
    }
    assert_eq!(received, std::slice::from_ref(&sent));
    let missing = client
        .get_queue(with_parent(
            pb::GetQueueRequest {
                queue_name: "nowhere".into(),
            },
            &format!("00-{MISSING_TRACE}-{SEND_PARENT}-01"),
        ))
        .await
        .expect_err("no such queue");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // The caller does not record this trace: neither does Spool.
    client
        .get_queue(with_parent(
            pb::GetQueueRequest {
                queue_name: "traced".into(),
            },
            &format!("00-{UNSAMPLED_TRACE}-{SEND_PARENT}-00"),
        ))
        .await
        .expect("get");
    client
        .get_queue(with_parent(
            pb::GetQueueRequest {
                queue_name: "traced".into(),
            },
            &format!("00-{LAST_TRACE}-{SEND_PARENT}-01"),
        ))
        .await
        .expect("get");

    let send = span_of(&posts, SEND_TRACE, &format!("{service}/SendMessage")).await;
    assert_eq!(send["parentSpanId"], SEND_PARENT);
    assert_eq!(send["kind"], 2, "a server span");
    let span_id = send["spanId"].as_str().expect("a span id");
    assert!(span_id.len() == 16 && span_id != SEND_PARENT, "{span_id}");
    // The message carries the send's span on, for its consumer to link to.
    assert_eq!(
        carried,
        [Some(format!("00-{SEND_TRACE}-{span_id}-01"))],
        "the delivered message's traceparent attribute"
    );
    assert_eq!(attribute(&send, "spool.queue")["stringValue"], "traced");
    assert_eq!(
        attribute(&send, "spool.message_ids")["arrayValue"]["values"][0]["stringValue"],
        sent.as_str()
    );
    assert_eq!(attribute(&send, "rpc.method")["stringValue"], "SendMessage");
    assert_eq!(attribute(&send, "rpc.grpc.status_code")["intValue"], "0");
    let start: u128 = send["startTimeUnixNano"]
        .as_str()
        .expect("a time")
        .parse()
        .expect("nanoseconds");
    let end: u128 = send["endTimeUnixNano"]
        .as_str()
        .expect("a time")
        .parse()
        .expect("nanoseconds");
    assert!(start > 0 && end >= start, "{start} {end}");

    // The receive's span lasts as long as its stream and names what it delivered.
    let receive = span_of(&posts, RECEIVE_TRACE, &format!("{service}/ReceiveMessages")).await;
    assert_eq!(
        attribute(&receive, "spool.message_ids")["arrayValue"]["values"][0]["stringValue"],
        sent.as_str()
    );

    // A client's mistake is recorded with its code, and is not a server error.
    let not_found = span_of(&posts, MISSING_TRACE, &format!("{service}/GetQueue")).await;
    assert_eq!(
        attribute(&not_found, "rpc.grpc.status_code")["intValue"],
        "5"
    );
    assert_eq!(
        attribute(&not_found, "spool.queue")["stringValue"],
        "nowhere"
    );
    assert_eq!(not_found["status"], serde_json::json!({}));

    span_of(&posts, LAST_TRACE, &format!("{service}/GetQueue")).await;
    assert!(
        spans(&posts)
            .iter()
            .all(|span| span["traceId"] != UNSAMPLED_TRACE),
        "an unsampled trace was recorded"
    );
    // A call without a traceparent starts a trace of its own.
    let create = spans(&posts)
        .into_iter()
        .find(|span| span["name"] == format!("{service}/CreateQueue"))
        .expect("the create's span");
    assert_eq!(create.get("parentSpanId"), None);
    assert_eq!(create["traceId"].as_str().map(str::len), Some(32));
    for (path, content_type, _) in posts.lock().expect("posts").iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/json");
    }

    // The refused call's log line (JSON) carries its trace id.
    let line = server.log_line(MISSING_TRACE);
    assert!(line.contains("request refused"), "{line}");
    let logged: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(logged["span"]["trace_id"], MISSING_TRACE, "{line}");

    // A span still waiting for its batch when the server stops is posted before it exits.
    client
        .get_queue(with_parent(
            pb::GetQueueRequest {
                queue_name: "traced".into(),
            },
            &format!("00-{STOPPING_TRACE}-{SEND_PARENT}-01"),
        ))
        .await
        .expect("get");
    assert_eq!(server.terminate(), Some(0));
    assert!(
        spans(&posts)
            .iter()
            .any(|span| span["traceId"] == STOPPING_TRACE),
        "the last span was lost at shutdown"
    );
}

/// Without an exporter Spool records no span, so a traced send's messages carry the caller's
/// own context on; a producer's own `traceparent` attribute wins; an untraced send adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_their_send_trace_context_to_consumers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "carried".into(),
            attributes: Some(attrs()),
        })
        .await
        .expect("create");
    let caller = format!("00-{SEND_TRACE}-{SEND_PARENT}-01");
    let own = format!("00-{RECEIVE_TRACE}-{SEND_PARENT}-00");
    let entry = |body: &str, attributes: &[(&str, &str)]| pb::BatchSendEntry {
        body: body.as_bytes().to_vec().into(),
        attributes: attributes
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        ..Default::default()
    };
    client
        .batch_send_messages(with_parent(
            pb::BatchSendMessagesRequest {
                queue_name: "carried".into(),
                entries: vec![
                    entry("traced", &[("k", "v")]),
                    entry("own context", &[("traceparent", own.as_str())]),
                ],
            },
            &caller,
        ))
        .await
        .expect("batch send");
    client
        .send_message(pb::SendMessageRequest {
            queue_name: "carried".into(),
            body: b"untraced".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("send");
    let mut stream = client
        .receive_messages(pb::ReceiveMessagesRequest {
            queue_name: "carried".into(),
            max_messages: 16,
            wait_seconds: Some(0),
            visibility_timeout_seconds: None,
        })
        .await
        .expect("receive")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = stream.message().await.expect("a message") {
        let mut attributes: Vec<(String, String)> = message.attributes.into_iter().collect();
        attributes.sort();
        seen.push((
            String::from_utf8(message.body.to_vec()).expect("text"),
            attributes,
        ));
    }
    let pair = |key: &str, value: &str| (key.to_string(), value.to_string());
    assert_eq!(
        seen,
        [
            (
                "traced".to_string(),
                vec![pair("k", "v"), pair("traceparent", &caller)]
            ),
            ("own context".to_string(), vec![pair("traceparent", &own)]),
            ("untraced".to_string(), vec![]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_not_calls() {
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start_with(dir.path(), &["--otlp-endpoint", &url], &[]);
    let mut client = server.client().await;
    client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "untraced".into(),
            attributes: Some(attrs()),
        })
        .await
        .expect("create");
    client
        .send_message(pb::SendMessageRequest {
            queue_name: "untraced".into(),
            body: b"still sent".to_vec().into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .expect("send");
    let line = server.log_line("could not export spans");
    assert!(line.contains("WARN"), "{line}");
    assert_eq!(server.terminate(), Some(0));
}
