//! StreamMessages, the consumer stream, against a real server: flow control, acknowledgements,
//! nacks and extensions answered after their commit, fairness with other streams and long
//! polls, its life (no deadline, shutdown, clients that leave) and bad input.

use std::time::Duration;

use spool::pb;
use spool::pb::stream_messages_request::Kind as RequestKind;
use spool::pb::stream_messages_response::Kind as ResponseKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::common::*;

/// How long a test waits for something that should happen at once, before calling it missing.
const PROMPTLY: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does not happen.
const A_WHILE: Duration = Duration::from_millis(300);

/// One open consumer stream: its request side and its responses.
struct Consumer {
    requests: mpsc::Sender<pb::StreamMessagesRequest>,
    responses: Streaming<pb::StreamMessagesResponse>,
}

fn start(queue: &str, max_outstanding: u32) -> pb::StreamMessagesRequest {
    pb::StreamMessagesRequest {
        kind: Some(RequestKind::Start(pb::StreamStart {
            queue_name: queue.into(),
            max_outstanding_messages: max_outstanding,
            visibility_timeout_seconds: None,
        })),
    }
}

fn acknowledge(ack_id: u64, handles: &[&str]) -> pb::StreamMessagesRequest {
    pb::StreamMessagesRequest {
        kind: Some(RequestKind::Acknowledge(pb::StreamAcknowledge {
            ack_id,
            receipt_handles: handles.iter().map(|h| h.to_string()).collect(),
        })),
    }
}

fn nack(nack_id: u64, handles: &[&str], delay_seconds: u32) -> pb::StreamMessagesRequest {
    pb::StreamMessagesRequest {
        kind: Some(RequestKind::Nack(pb::StreamNack {
            nack_id,
            receipt_handles: handles.iter().map(|h| h.to_string()).collect(),
            delay_seconds,
        })),
    }
}

fn extend(extend_id: u64, handles: &[&str], seconds: u32) -> pb::StreamMessagesRequest {
    pb::StreamMessagesRequest {
        kind: Some(RequestKind::Extend(pb::StreamExtend {
            extend_id,
            receipt_handles: handles.iter().map(|h| h.to_string()).collect(),
            visibility_timeout_seconds: seconds,
        })),
    }
}

/// Opens a stream whose first request is `first`; the error of the call if it is refused.
async fn open_with(
    client: &mut Client,
    first: pb::StreamMessagesRequest,
) -> Result<Consumer, Status> {
    let (requests, outgoing) = mpsc::channel(16);
    requests.send(first).await.expect("queue the first request");
    let responses = client
        .stream_messages(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    Ok(Consumer {
        requests,
        responses,
    })
}

async fn open(client: &mut Client, queue: &str, max_outstanding: u32) -> Consumer {
    open_with(client, start(queue, max_outstanding))
        .await
        .expect("open the stream")
}

impl Consumer {
    async fn next(&mut self) -> Option<ResponseKind> {
        tokio::time::timeout(PROMPTLY, self.responses.message())
            .await
            .expect("a response in time")
            .expect("the stream goes on")
            .map(|response| response.kind.expect("a response has a kind"))
    }

    async fn message(&mut self) -> pb::ReceivedMessage {
        match self.next().await {
            Some(ResponseKind::Message(message)) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn acknowledged(&mut self) -> pb::StreamAcknowledged {
        match self.next().await {
            Some(ResponseKind::Acknowledged(acknowledged)) => acknowledged,
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }

    async fn nacked(&mut self) -> pb::StreamVisibilityChanged {
        match self.next().await {
            Some(ResponseKind::Nacked(nacked)) => nacked,
            other => panic!("expected a nack's answer, got {other:?}"),
        }
    }

    async fn extended(&mut self) -> pb::StreamVisibilityChanged {
        match self.next().await {
            Some(ResponseKind::Extended(extended)) => extended,
            other => panic!("expected an extension's answer, got {other:?}"),
        }
    }

    async fn send(&self, request: pb::StreamMessagesRequest) {
        self.requests
            .send(request)
            .await
            .expect("the request side is open");
    }

    /// Whether nothing arrives for a while.
    async fn is_quiet(&mut self) -> bool {
        tokio::time::timeout(A_WHILE, self.responses.message())
            .await
            .is_err()
    }

    async fn ack(&self, ack_id: u64, handles: &[&str]) {
        self.requests
            .send(acknowledge(ack_id, handles))
            .await
            .expect("the request side is open");
    }

    /// The call's end: its status, once the server ends it.
    async fn end(mut self) -> Result<(), Status> {
        loop {
            match tokio::time::timeout(PROMPTLY, self.responses.message())
                .await
                .expect("the stream ends in time")?
            {
                Some(_) => continue,
                None => return Ok(()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_pushes_up_to_max_outstanding_and_each_ack_answered_frees_a_slot() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    for body in [b"m1", b"m2", b"m3", b"m4", b"m5"] {
        send(&mut client, "q", body).await;
    }
    let mut consumer = open(&mut client, "q", 2).await;
    let first = consumer.message().await;
    let second = consumer.message().await;
    assert_eq!(
        (&first.body[..], &second.body[..]),
        (&b"m1"[..], &b"m2"[..])
    );
    assert_eq!(first.dequeue_count, 1);
    assert!(consumer.is_quiet().await, "pushed past max_outstanding");
    let counters = stats(&mut client, "q").await;
    assert_eq!(
        (counters.active_messages, counters.inactive_messages),
        (3, 2)
    );

    // One good handle and one malformed: the answer reports the malformed one as
    // BatchDeleteMessages does, and comes after the delete is durable.
    consumer
        .ack(7, &[&first.receipt_handle, "not-a-handle"])
        .await;
    let answer = consumer.acknowledged().await;
    assert_eq!(answer.ack_id, 7);
    assert_eq!(answer.failures.len(), 1, "{answer:?}");
    assert_eq!(answer.failures[0].receipt_handle, "not-a-handle");
    assert_eq!(answer.failures[0].code, Code::InvalidArgument as i32);
    assert_eq!(answer.failures[0].cmq_code, 4000);
    // The freed slot takes exactly one more.
    assert_eq!(&consumer.message().await.body[..], b"m3");
    assert!(consumer.is_quiet().await, "pushed past max_outstanding");
    let counters = stats(&mut client, "q").await;
    assert_eq!(
        (counters.active_messages, counters.inactive_messages),
        (2, 2),
        "m1 deleted; m2 and m3 in flight"
    );
    // Acknowledging again with the same handle succeeds (as a retried delete does), and frees
    // no slot it did not hold.
    consumer.ack(8, &[&first.receipt_handle]).await;
    assert!(consumer.acknowledged().await.failures.is_empty());
    assert!(consumer.is_quiet().await, "pushed past max_outstanding");
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_long_polls_share_a_queue_in_arrival_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut first = open(&mut client, "q", 10).await;
    tokio::time::sleep(A_WHILE).await;
    let mut poller = client.clone();
    let poll = tokio::spawn(async move {
        receive_with(
            &mut poller,
            pb::ReceiveMessagesRequest {
                queue_name: "q".into(),
                max_messages: 1,
                wait_seconds: Some(20),
                visibility_timeout_seconds: None,
            },
        )
        .await
    });
    tokio::time::sleep(A_WHILE).await;
    let mut second = open(&mut client, "q", 10).await;
    tokio::time::sleep(A_WHILE).await;

    for body in [b"one", b"two", b"six", b"ten"] {
        send(&mut client, "q", body).await;
    }
    // In line: the first stream, the poll, the second stream; then the first again.
    assert_eq!(&first.message().await.body[..], b"one");
    let polled = poll.await.expect("poll task").expect("poll");
    assert_eq!(polled.len(), 1);
    assert_eq!(&polled[0].body[..], b"two");
    assert_eq!(&second.message().await.body[..], b"six");
    assert_eq!(&first.message().await.body[..], b"ten");
    drop((first, second));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_any_long_poll_wait_and_ends_ok_at_shutdown() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut consumer = open(&mut client, "q", 1).await;
    tokio::time::sleep(A_WHILE).await;
    // A minute of queue time passes with the stream parked (past the 30 s a long poll may wait).
    server.clock.skip_ahead(Duration::from_secs(60));
    send(&mut client, "q", b"late").await;
    assert_eq!(&consumer.message().await.body[..], b"late");
    let waiting = tokio::spawn(async move { consumer.end().await });
    tokio::time::sleep(A_WHILE).await;
    server.stop().await;
    waiting
        .await
        .expect("task")
        .expect("the stream ends OK at shutdown");
}

/// The request body of a consumer stream stays open for the stream's life: the body timeout
/// bounds each of its requests, not the whole body (it ended every stream after 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_request_body_timeout() {
    let server = TestServer::start_with(|config| {
        config.settings.request_body_timeout_seconds = Some(1);
    })
    .await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut consumer = open(&mut client, "q", 1).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    send(&mut client, "q", b"late").await;
    let message = consumer.message().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    consumer.ack(1, &[&message.receipt_handle]).await;
    assert!(consumer.acknowledged().await.failures.is_empty());
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_ends_leaves_what_it_pushed_in_flight_and_releases_the_rest() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let attributes = pb::QueueAttributes {
        max_message_size: Some(1 << 20),
        ..attrs()
    };
    create(&mut client, "q", attributes).await;
    // Bodies large enough that the transport's windows and buffers take a few of 16 at most:
    // the rest are claimed for the stream and not pushed when the client leaves.
    let body = vec![b'x'; 512 << 10];
    for _ in 0..16 {
        send(&mut client, "q", &body).await;
    }
    let mut leaver = connect(&server.endpoint()).await;
    let mut consumer = open(&mut leaver, "q", 16).await;
    let read = consumer.message().await;
    tokio::time::sleep(A_WHILE).await;
    drop(consumer);
    drop(leaver);
    tokio::time::sleep(A_WHILE).await;

    let counters = stats(&mut client, "q").await;
    assert_eq!(counters.active_messages + counters.inactive_messages, 16);
    assert!(
        (1..16).contains(&counters.inactive_messages),
        "pushed ones stay in flight, the others are released: {counters:?}"
    );
    // What it read is still in flight under its handle.
    client
        .delete_message(pb::DeleteMessageRequest {
            queue_name: "q".into(),
            receipt_handle: read.receipt_handle,
        })
        .await
        .expect("the read message's handle still works");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_stream_answers_its_acks_and_ends_ok() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"only").await;
    let mut consumer = open(&mut client, "q", 1).await;
    let message = consumer.message().await;
    consumer.ack(1, &[&message.receipt_handle]).await;
    let Consumer {
        requests,
        mut responses,
    } = consumer;
    drop(requests);
    let answer = tokio::time::timeout(PROMPTLY, responses.message())
        .await
        .expect("in time")
        .expect("OK")
        .and_then(|response| response.kind);
    assert!(
        matches!(answer, Some(ResponseKind::Acknowledged(ref a)) if a.failures.is_empty()),
        "{answer:?}"
    );
    let end = tokio::time::timeout(PROMPTLY, responses.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    assert_eq!(stats(&mut client, "q").await.inactive_messages, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_requests_are_refused_with_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;

    let refused = open_with(&mut client, acknowledge(1, &["x"])).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::InvalidArgument));
    let refused = open_with(&mut client, start("q", 1_001)).await.err();
    let status = refused.expect("max_outstanding_messages 1001 is refused");
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(message.contains("max_outstanding_messages"), "{message}");
    let refused = open_with(&mut client, start("nope", 1)).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::NotFound));

    // More than 16 handles in one acknowledgement ends the stream.
    let consumer = open(&mut client, "q", 1).await;
    let handles: Vec<String> = (0..17).map(|i| format!("h{i}")).collect();
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    consumer.ack(1, &handles).await;
    let status = consumer.end().await.expect_err("17 handles end the stream");
    assert_error(&status, Code::InvalidArgument, 4400);

    // So does a second `start`.
    let consumer = open(&mut client, "q", 1).await;
    consumer
        .requests
        .send(start("q", 1))
        .await
        .expect("request side open");
    let status = consumer
        .end()
        .await
        .expect_err("a second start ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_consumes_with_batched_acks_answered_after_the_delete() {
    use futures_util::StreamExt as _;
    use spool_client::{ClientError, ConsumeOptions};

    let server = TestServer::start().await;
    let mut grpc = server.client().await;
    create(&mut grpc, "q", attrs()).await;
    for body in [b"m1", b"m2", b"m3"] {
        send(&mut grpc, "q", body).await;
    }
    let client =
        spool_client::Client::connect(&server.endpoint(), spool_client::ClientOptions::default())
            .await
            .expect("connect");
    let options = ConsumeOptions::default().max_outstanding_messages(2);
    let mut consumer = client.consume("q", options).await.expect("consume");
    let first = consumer.next().await.expect("one").expect("delivered");
    let second = consumer.next().await.expect("two").expect("delivered");
    assert_eq!(&first.message().body[..], b"m1");
    // Both acknowledgements go out together; each answer comes after its delete is durable.
    let (one, two) = tokio::join!(first.ack(), second.ack());
    one.expect("first ack");
    two.expect("second ack");
    let counters = stats(&mut grpc, "q").await;
    assert_eq!(counters.inactive_messages + counters.active_messages, 1);
    let third = consumer.next().await.expect("three").expect("delivered");
    assert_eq!(&third.message().body[..], b"m3");

    // An acknowledgement after its consumer was dropped fails (the message comes back after
    // its visibility timeout).
    create(&mut grpc, "other", attrs()).await;
    send(&mut grpc, "other", b"x").await;
    let mut elsewhere = client
        .consume("other", ConsumeOptions::default())
        .await
        .expect("consume");
    let foreign = elsewhere.next().await.expect("one").expect("delivered");
    drop(elsewhere);
    assert!(
        matches!(foreign.ack().await, Err(ClientError::Other(_))),
        "acknowledged after its consumer ended"
    );
    drop(third);
    // The server is told of nothing: the message stays in flight until its timeout.
    assert_eq!(stats(&mut grpc, "q").await.inactive_messages, 1);

    let missing = client.consume("nope", ConsumeOptions::default()).await;
    assert!(
        matches!(missing, Err(ClientError::QueueNotFound(_))),
        "{missing:?}"
    );
    drop(consumer);
    server.stop().await;
}

/// The failures of a nack's or an extension's answer, as (index, code, cmq_code).
fn failures(answer: &pb::StreamVisibilityChanged) -> Vec<(u32, i32, i32)> {
    answer
        .failures
        .iter()
        .map(|failure| (failure.index, failure.code, failure.cmq_code))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_redelivers_at_once_with_a_higher_dequeue_count_and_frees_its_slot() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    create(&mut client, "other", attrs()).await;
    send(&mut client, "other", b"x").await;
    let foreign = receive(&mut client, "other", 1).await.remove(0);
    send(&mut client, "q", b"m1").await;
    let mut consumer = open(&mut client, "q", 1).await;
    let first = consumer.message().await;
    assert_eq!(first.dequeue_count, 1);

    // A forged handle and one of another queue fail per handle, as
    // BatchChangeMessageVisibility reports them; the good one is given back.
    consumer
        .send(nack(
            5,
            &["forged", &first.receipt_handle, &foreign.receipt_handle],
            0,
        ))
        .await;
    let answer = consumer.nacked().await;
    assert_eq!(answer.request_id, 5);
    assert_eq!(answer.changed.len(), 1, "{answer:?}");
    assert_eq!(answer.changed[0].index, 1);
    let invalid = Code::InvalidArgument as i32;
    assert_eq!(failures(&answer), [(0, invalid, 4000), (2, invalid, 4000)]);
    assert_eq!(answer.failures[0].receipt_handle, "forged");
    assert!(
        answer.failures[1].message.contains("receipt_handles[2]"),
        "{answer:?}"
    );
    // Its slot is free and the message visible: it is pushed again now, not after 30 s.
    let again = consumer.message().await;
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.dequeue_count, 2);
    assert_ne!(again.receipt_handle, first.receipt_handle);
    // The first receive's handle is spent: nacking it again fails with 4430.
    consumer.send(nack(6, &[&first.receipt_handle], 0)).await;
    let answer = consumer.nacked().await;
    assert_eq!(
        failures(&answer),
        [(0, Code::FailedPrecondition as i32, 4430)]
    );
    // The other queue's message was not touched.
    assert_eq!(stats(&mut client, "other").await.inactive_messages, 1);

    // A nack with a delay frees the slot at once; the message comes back after the delay.
    send(&mut client, "q", b"m2").await;
    consumer.send(nack(7, &[&again.receipt_handle], 2)).await;
    let answer = consumer.nacked().await;
    assert!(answer.failures.is_empty(), "{answer:?}");
    let next = consumer.message().await;
    assert_eq!(
        &next.body[..],
        b"m2",
        "the freed slot took the next message"
    );
    consumer.send(acknowledge(8, &[&next.receipt_handle])).await;
    assert!(consumer.acknowledged().await.failures.is_empty());
    let later = consumer.message().await;
    assert_eq!((&later.body[..], later.dequeue_count), (&b"m1"[..], 3));
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_keeps_a_message_invisible_past_its_timeout_and_its_slot_taken() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"m1").await;
    send(&mut client, "q", b"m2").await;
    // Pushed messages are invisible for 1 s only, unless extended.
    let mut first_request = start("q", 1);
    if let Some(RequestKind::Start(start)) = &mut first_request.kind {
        start.visibility_timeout_seconds = Some(1);
    }
    let mut consumer = open_with(&mut client, first_request)
        .await
        .expect("open the stream");
    let first = consumer.message().await;
    consumer
        .send(extend(3, &[&first.receipt_handle, "forged"], 30))
        .await;
    let answer = consumer.extended().await;
    assert_eq!(answer.request_id, 3);
    assert_eq!(answer.changed.len(), 1, "{answer:?}");
    let extended_to = answer.changed[0]
        .next_visible_time
        .expect("next_visible_time");
    let original = first.next_visible_time.expect("next_visible_time");
    assert!(extended_to.seconds >= original.seconds + 20, "{answer:?}");
    assert_eq!(failures(&answer), [(1, Code::InvalidArgument as i32, 4000)]);

    // Well past the original second: still in flight, its slot still taken, the handle good.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(consumer.is_quiet().await, "the extended slot was freed");
    let counters = stats(&mut client, "q").await;
    assert_eq!(
        (counters.active_messages, counters.inactive_messages),
        (1, 1),
        "m1 stays in flight past its original timeout"
    );
    assert!(
        receive(&mut client, "q", 16)
            .await
            .iter()
            .all(|message| message.message_id != first.message_id)
    );
    consumer
        .send(acknowledge(4, &[&first.receipt_handle]))
        .await;
    assert!(consumer.acknowledged().await.failures.is_empty());
    drop(consumer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nacks_and_extensions_end_the_stream_with_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let cases: [(pb::StreamMessagesRequest, i32, &str); 4] = [
        (
            extend(1, &["h"], 0),
            4000,
            "extend.visibility_timeout_seconds",
        ),
        (
            extend(1, &["h"], 43_201),
            4000,
            "extend.visibility_timeout_seconds",
        ),
        (nack(1, &["h"], 43_201), 4000, "nack.delay_seconds"),
        (
            nack(1, &(0..17).map(|_| "h").collect::<Vec<_>>(), 0),
            4400,
            "nack.receipt_handles",
        ),
    ];
    for (request, cmq_code, field) in cases {
        let consumer = open(&mut client, "q", 1).await;
        consumer.send(request).await;
        let status = consumer.end().await.expect_err("the stream ends");
        let message = assert_error(&status, Code::InvalidArgument, cmq_code);
        assert!(message.contains(field), "{message}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_nacks_and_extends_on_the_stream() {
    use futures_util::StreamExt as _;
    use spool_client::{ClientError, ConsumeOptions};

    let server = TestServer::start().await;
    let mut grpc = server.client().await;
    create(&mut grpc, "q", attrs()).await;
    send(&mut grpc, "q", b"m1").await;
    let client =
        spool_client::Client::connect(&server.endpoint(), spool_client::ClientOptions::default())
            .await
            .expect("connect");
    let options = ConsumeOptions::default()
        .max_outstanding_messages(1)
        .visibility_timeout_seconds(1);
    let mut consumer = client.consume("q", options).await.expect("consume");
    let first = consumer.next().await.expect("one").expect("delivered");
    first.nack().await.expect("nack");
    let again = consumer.next().await.expect("again").expect("delivered");
    assert_eq!(&again.message().body[..], b"m1");
    assert_eq!(again.message().dequeue_count, 2);

    // Extended past its 1 s timeout, it stays in flight and its handle good.
    let until = again.extend(Duration::from_secs(30)).await.expect("extend");
    let original = again.message().next_visible_time.expect("set");
    assert!(until.seconds >= original.seconds + 20, "{until:?}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(stats(&mut grpc, "q").await.inactive_messages, 1);
    again.ack().await.expect("ack after the extension");
    assert_eq!(stats(&mut grpc, "q").await.inactive_messages, 0);

    // A handle past its timeout fails per handle, as ChangeMessageVisibility's would.
    send(&mut grpc, "q", b"m2").await;
    let late = consumer.next().await.expect("m2").expect("delivered");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let refused = late.extend(Duration::from_secs(30)).await;
    assert!(
        matches!(refused, Err(ClientError::StaleReceipt(_))),
        "{refused:?}"
    );
    let refused = late.nack().await;
    assert!(
        matches!(refused, Err(ClientError::StaleReceipt(_))),
        "{refused:?}"
    );
    drop(consumer);
    server.stop().await;
}
