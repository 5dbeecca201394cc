//! The HTTP port of other SDKs' wire APIs (`--http-listen`, src/http): its own behaviour at
//! the edge, over raw HTTP/1.1 (the SDKs' tests are in tests/sdk): limits on bodies, headers,
//! connections and open long polls; errors in each API's own form; keep-alive; shutdown.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::TestServer;

/// A server with its HTTP port; `adjust` changes its settings first.
async fn start(adjust: impl FnOnce(&mut spool::config::Settings)) -> (TestServer, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let http = listener.local_addr().expect("addr").to_string();
    let server = TestServer::start_with(|config| {
        adjust(&mut config.settings);
        config.http_listener = Some(tokio::net::TcpListener::from_std(listener).expect("listener"));
    })
    .await;
    (server, http)
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads one answer (with a Content-Length) from `stream`.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "the connection closed before an answer: {buffer:?}"
        );
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the connection closed in the body");
        body.extend_from_slice(&chunk[..read]);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn sqs_request(action: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: spool\r\nX-Amz-Target: AmazonSQS.{action}\r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn call(http: &str, request: &str) -> Answer {
    let mut stream = TcpStream::connect(http).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_answer(&mut stream).await
}

/// Whether the server closes `stream` within `within` without answering.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn requests_on_one_kept_alive_connection_and_errors_in_each_apis_form() {
    let (server, http) = start(|_| {}).await;
    let mut stream = TcpStream::connect(&http).await.expect("connect");
    stream
        .write_all(sqs_request("CreateQueue", r#"{"QueueName":"wire"}"#).as_bytes())
        .await
        .expect("write");
    let created = read_answer(&mut stream).await;
    assert_eq!(created.status, 200);
    assert_eq!(created.json()["QueueUrl"], "http://spool/000000000000/wire");
    assert_eq!(
        created.header("content-type"),
        Some("application/x-amz-json-1.0")
    );
    // The same connection: a queue that does not exist, as SQS says it.
    let request = sqs_request("GetQueueUrl", r#"{"QueueName":"nope"}"#);
    stream.write_all(request.as_bytes()).await.expect("write");
    let missing = read_answer(&mut stream).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.json()["__type"],
        "com.amazonaws.sqs#QueueDoesNotExist"
    );
    assert_eq!(
        missing.header("x-amzn-query-error"),
        Some("AWS.SimpleQueueService.NonExistentQueue;Sender")
    );
    // Not JSON; an action Spool does not have; no target at all.
    let bad = call(&http, &sqs_request("SendMessage", "{not json")).await;
    assert_eq!(
        (bad.status, bad.json()["__type"].as_str()),
        (400, Some("com.amazonaws.sqs#SerializationException"))
    );
    let unknown = call(&http, &sqs_request("TagQueue", "{}")).await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("TagQueue")
    );
    let nowhere = call(&http, "GET /metrics HTTP/1.1\r\nHost: spool\r\n\r\n").await;
    assert_eq!(nowhere.status, 404);
    // CMQ: always 200, the outcome in `code`, by GET or POST.
    let cmq = call(
        &http,
        "GET /v2/index.php?Action=SendMessage&queueName=nope&msgBody=x HTTP/1.1\r\nHost: spool\r\n\r\n",
    )
    .await;
    assert_eq!(cmq.status, 200);
    assert_eq!(cmq.json()["code"], 4440);
    let form = "Action=ReceiveMessage&queueName=wire&pollingWaitSeconds=0";
    let empty = call(
        &http,
        &format!(
            "POST /v2/index.php HTTP/1.1\r\nHost: spool\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(empty.json()["code"], 7000);
    let no_action = call(&http, "GET /v2/index.php HTTP/1.1\r\nHost: spool\r\n\r\n").await;
    assert_eq!(no_action.json()["code"], 4000);
    assert!(
        no_action.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Action")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let (server, http) = start(|_| {}).await;
    let too_large = spool_http_max_body() + 1;
    let mut stream = TcpStream::connect(&http).await.expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: spool\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n\
         Content-Length: {too_large}\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let refused = read_answer(&mut stream).await;
    assert_eq!(refused.status, 413);
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&spool_http_max_body().to_string()),
        "{message}"
    );
    server.stop().await;
}

/// The limit the server documents (src/http/mod.rs, MAX_BODY_BYTES; docs/compat.md).
fn spool_http_max_body() -> usize {
    24 * 1024 * 1024
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_and_the_connection_cap_holds() {
    let (server, http) = start(|settings| {
        settings.handshake_timeout_seconds = Some(1);
        settings.max_connections = Some(2);
    })
    .await;
    // Nothing sent; then only half a header block: both closed after the timeout.
    let mut silent = TcpStream::connect(&http).await.expect("connect");
    let mut slow = TcpStream::connect(&http).await.expect("connect");
    slow.write_all(b"POST / HTTP/1.1\r\nHost: spool\r\nX-Amz-Tar")
        .await
        .expect("write");
    // Both slots are taken: a third connection is closed at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&http).await.expect("connect");
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    assert!(closed_within(&mut slow, Duration::from_secs(10)).await);
    // The slots are free again.
    let listed = call(&http, &sqs_request("ListQueues", "{}")).await;
    assert_eq!(listed.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn long_polls_count_under_max_waiting_receives_and_end_empty_at_shutdown() {
    let (server, http) = start(|settings| settings.max_waiting_receives = Some(1)).await;
    assert_eq!(
        call(
            &http,
            &sqs_request("CreateQueue", r#"{"QueueName":"polls"}"#)
        )
        .await
        .status,
        200
    );
    let receive = sqs_request(
        "ReceiveMessage",
        r#"{"QueueUrl":"http://spool/000000000000/polls","WaitTimeSeconds":20}"#,
    );
    let mut parked = TcpStream::connect(&http).await.expect("connect");
    parked.write_all(receive.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = call(&http, &receive).await;
    assert_eq!(second.status, 403);
    assert_eq!(second.json()["__type"], "com.amazonaws.sqs#OverLimit");
    // Shutdown ends the parked poll, empty and OK, long before its 20 seconds.
    let stopping = tokio::spawn(server.stop());
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut parked))
        .await
        .expect("the poll ends at shutdown");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({}));
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn http_calls_are_counted_per_protocol_and_action_beside_the_rpcs() {
    let bind = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        listener
    };
    let (http_listener, metrics_listener) = (bind(), bind());
    let http = http_listener.local_addr().expect("addr").to_string();
    let metrics = metrics_listener.local_addr().expect("addr");
    let server = TestServer::start_with(|config| {
        config.http_listener =
            Some(tokio::net::TcpListener::from_std(http_listener).expect("listener"));
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics_listener).expect("listener"));
    })
    .await;
    let created = call(
        &http,
        &sqs_request("CreateQueue", r#"{"QueueName":"counted"}"#),
    )
    .await;
    assert_eq!(created.status, 200);
    let send = r#"{"QueueUrl":"http://spool/000000000000/counted","MessageBody":"x"}"#;
    for _ in 0..2 {
        assert_eq!(
            call(&http, &sqs_request("SendMessage", send)).await.status,
            200
        );
    }
    let missing = r#"{"QueueUrl":"http://spool/000000000000/missing","MessageBody":"x"}"#;
    assert_eq!(
        call(&http, &sqs_request("SendMessage", missing))
            .await
            .status,
        400
    );
    assert_eq!(
        call(&http, &sqs_request("TagQueue", "{}")).await.status,
        400
    );
    let cmq = |query: &str| format!("GET /v2/index.php?{query} HTTP/1.1\r\nHost: spool\r\n\r\n");
    let sent = call(
        &http,
        &cmq("Action=SendMessage&queueName=counted&msgBody=y"),
    )
    .await;
    assert_eq!(sent.json()["code"], 0);
    let nothing = call(&http, &cmq("Action=ReceiveMessage&queueName=missing")).await;
    assert_eq!(nothing.json()["code"], 4440);
    let bad = call(&http, &cmq("Action=CreateTopic&topicName=t&filterType=9")).await;
    assert_eq!(bad.json()["code"], 4000);
    // A gRPC call too, to see both side by side.
    server
        .client()
        .await
        .get_queue(spool::pb::GetQueueRequest {
            queue_name: "counted".into(),
        })
        .await
        .expect("get");

    let (_, text) = crate::common::http_get(metrics, "/metrics").await;
    let samples = crate::common::samples(&text);
    let count = |labels: &str| {
        samples
            .get(&format!("spool_grpc_requests_total{{{labels}}}"))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        count(r#"method="sqs.CreateQueue",code="OK""#),
        1.0,
        "{text}"
    );
    assert_eq!(count(r#"method="sqs.SendMessage",code="OK""#), 2.0);
    assert_eq!(count(r#"method="sqs.SendMessage",code="NOT_FOUND""#), 1.0);
    assert_eq!(count(r#"method="cmq.SendMessage",code="OK""#), 1.0);
    assert_eq!(
        count(r#"method="cmq.ReceiveMessage",code="NOT_FOUND""#),
        1.0
    );
    assert_eq!(
        count(r#"method="cmq.CreateTopic",code="INVALID_ARGUMENT""#),
        1.0
    );
    // An action no API has is counted as unknown, so the label set stays fixed.
    assert_eq!(count(r#"method="unknown",code="INVALID_ARGUMENT""#), 1.0);
    assert!(!text.contains("TagQueue"), "{text}");
    // The gRPC call under its own name; the HTTP calls are not counted as RPCs as well.
    assert_eq!(count(r#"method="GetQueue",code="OK""#), 1.0);
    assert_eq!(count(r#"method="SendMessage",code="OK""#), 0.0);
    assert_eq!(
        samples
            .get(r#"spool_grpc_request_duration_seconds_count{method="sqs.SendMessage"}"#)
            .copied(),
        Some(3.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_query_protocol_answers_in_xml_over_the_same_actions() {
    let (server, http) = start(|_| {}).await;
    let form = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: spool\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let created = call(
        &http,
        &form("/", "Action=CreateQueue&Version=2012-11-05&QueueName=xml&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=5"),
    )
    .await;
    assert_eq!(created.status, 200);
    assert_eq!(created.header("content-type"), Some("text/xml"));
    let text = String::from_utf8_lossy(&created.body).to_string();
    assert!(
        text.contains("<CreateQueueResult><QueueUrl>http://spool/000000000000/xml</QueueUrl>"),
        "{text}"
    );
    // Posted to the queue's URL without QueueUrl (as older SDKs do); a body needing escapes.
    let sent = call(
        &http,
        &form(
            "/000000000000/xml",
            "Action=SendMessage&MessageBody=a%3Cb%26c",
        ),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", String::from_utf8_lossy(&sent.body));
    // A GET with the parameters in the URL; list members numbered as SQS's model has them.
    let received = call(
        &http,
        "GET /?Action=ReceiveMessage&QueueUrl=http%3A%2F%2Fspool%2F000000000000%2Fxml&AttributeName.1=All HTTP/1.1\r\nHost: spool\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&received.body).to_string();
    assert!(text.contains("<Body>a&lt;b&amp;c</Body>"), "{text}");
    assert!(
        text.contains(
            "<Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute>"
        ),
        "{text}"
    );
    // Errors are SQS's XML errors, with the query protocol's code.
    let missing = call(&http, &form("/", "Action=GetQueueUrl&QueueName=nope")).await;
    assert_eq!(missing.status, 400);
    let text = String::from_utf8_lossy(&missing.body).to_string();
    assert!(
        text.contains("<Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code>"),
        "{text}"
    );
    let malformed = call(&http, &form("/", "Action=ListQueues&AttributeName.x=1")).await;
    assert_eq!(malformed.status, 400);
    assert!(String::from_utf8_lossy(&malformed.body).contains("MalformedQueryString"));
    let no_action = call(&http, &form("/", "QueueName=x")).await;
    assert!(String::from_utf8_lossy(&no_action.body).contains("<Code>MissingAction</Code>"));
    server.stop().await;
}
