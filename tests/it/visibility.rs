//! Visibility changes (heartbeat, nack), purge and peek over gRPC, on the configured backend;
//! and that an acknowledged change or purge survives a SIGKILL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spool::pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

use crate::common::*;

fn wall_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("ms fit in i64")
}

fn ts_ms(timestamp: Option<&prost_types::Timestamp>) -> i64 {
    let t = timestamp.expect("timestamp is set");
    t.seconds * 1_000 + i64::from(t.nanos / 1_000_000)
}

async fn change(
    client: &mut Client,
    queue: &str,
    handle: &str,
    seconds: u32,
) -> Result<i64, tonic::Status> {
    let answer = client
        .change_message_visibility(pb::ChangeMessageVisibilityRequest {
            queue_name: queue.into(),
            receipt_handle: handle.into(),
            visibility_timeout_seconds: seconds,
        })
        .await?
        .into_inner();
    Ok(ts_ms(answer.next_visible_time.as_ref()))
}

async fn purge(client: &mut Client, queue: &str) -> u64 {
    client
        .purge_queue(pb::PurgeQueueRequest {
            queue_name: queue.into(),
        })
        .await
        .expect("purge")
        .into_inner()
        .purged_messages
}

async fn peek(
    client: &mut Client,
    queue: &str,
    max: u32,
) -> Result<Vec<pb::PeekedMessage>, tonic::Status> {
    Ok(client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: queue.into(),
            max_messages: max,
        })
        .await?
        .into_inner()
        .messages)
}

fn receive_request(queue: &str, wait: u32, visibility: Option<u32>) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: 1,
        wait_seconds: Some(wait),
        visibility_timeout_seconds: visibility,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_extends_and_a_nack_redelivers() {
    const QUEUE: &str = "vis";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    send(&mut client, QUEUE, b"work").await;
    let first = receive(&mut client, QUEUE, 1).await.remove(0);

    let before = wall_ms();
    let extended = change(&mut client, QUEUE, &first.receipt_handle, 600)
        .await
        .expect("heartbeat");
    assert!(
        (before + 600_000 - 1_000..=wall_ms() + 600_000 + 1_000).contains(&extended),
        "next_visible_time {extended} is not 600 s from now ({before})"
    );
    let s = stats(&mut client, QUEUE).await;
    assert_eq!((s.active_messages, s.inactive_messages), (0, 1));
    // The handle stays the newest: it changes again, and a nack makes the message visible.
    let nacked = change(&mut client, QUEUE, &first.receipt_handle, 0)
        .await
        .expect("nack");
    assert!(nacked <= wall_ms() + 1_000);
    let again = receive(&mut client, QUEUE, 1).await.remove(0);
    assert_eq!(
        (again.message_id.as_str(), again.dequeue_count),
        (first.message_id.as_str(), 2)
    );

    // The first handle is superseded now: 4430, as for a delete.
    let stale = change(&mut client, QUEUE, &first.receipt_handle, 10)
        .await
        .expect_err("superseded");
    let text = assert_error(&stale, Code::FailedPrecondition, 4430);
    assert!(text.contains("receipt_handle"), "{text}");
    let stale = delete(&mut client, QUEUE, &first.receipt_handle)
        .await
        .expect_err("superseded");
    assert_error(&stale, Code::FailedPrecondition, 4430);

    // Validation names the field.
    let out_of_range = change(&mut client, QUEUE, &again.receipt_handle, 43_201)
        .await
        .expect_err("out of range");
    let text = assert_error(&out_of_range, Code::InvalidArgument, 4000);
    assert!(text.contains("visibility_timeout_seconds"), "{text}");
    let garbage = change(&mut client, QUEUE, "nope", 10)
        .await
        .expect_err("garbage");
    let text = assert_error(&garbage, Code::InvalidArgument, 4000);
    assert!(text.contains("receipt_handle"), "{text}");
    let missing = change(&mut client, "no-such-queue", &again.receipt_handle, 10)
        .await
        .expect_err("no queue");
    assert_error(&missing, Code::NotFound, 4440);

    // A handle of another queue is refused without changing anything.
    create(&mut client, "vis-other", attrs()).await;
    let foreign = change(&mut client, "vis-other", &again.receipt_handle, 0)
        .await
        .expect_err("foreign");
    assert_error(&foreign, Code::InvalidArgument, 4000);
    delete(&mut client, QUEUE, &again.receipt_handle)
        .await
        .expect("the newest handle deletes after its changes");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_changes_report_each_failure_with_its_index() {
    const QUEUE: &str = "vis-batch";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    batch_send(&mut client, QUEUE, &[b"a", b"b"]).await;
    let got = receive(&mut client, QUEUE, 2).await;
    // Receive "b" again so that its first handle is stale.
    change(&mut client, QUEUE, &got[1].receipt_handle, 0)
        .await
        .expect("nack");
    let b_again = receive(&mut client, QUEUE, 1).await.remove(0);
    let entry = |handle: &str, seconds| pb::ChangeVisibilityEntry {
        receipt_handle: handle.into(),
        visibility_timeout_seconds: seconds,
    };
    let answer = client
        .batch_change_message_visibility(pb::BatchChangeMessageVisibilityRequest {
            queue_name: QUEUE.into(),
            entries: vec![
                entry(&got[0].receipt_handle, 300),
                entry("not-a-handle", 300),
                entry(&got[1].receipt_handle, 300),
                entry(&b_again.receipt_handle, 0),
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    let changed: Vec<u32> = answer.changed.iter().map(|c| c.index).collect();
    assert_eq!(changed, [0, 3]);
    assert!(ts_ms(answer.changed[0].next_visible_time.as_ref()) > wall_ms() + 200_000);
    let failures: Vec<(u32, i32, i32)> = answer
        .failures
        .iter()
        .map(|f| (f.index, f.code, f.cmq_code))
        .collect();
    assert_eq!(
        failures,
        [
            (1, Code::InvalidArgument as i32, 4000),
            (2, Code::FailedPrecondition as i32, 4430)
        ]
    );
    assert_eq!(answer.failures[0].receipt_handle, "not-a-handle");
    assert!(
        answer.failures[0]
            .message
            .contains("entries[1].receipt_handle"),
        "{}",
        answer.failures[0].message
    );
    assert!(
        answer.failures[1]
            .message
            .contains("entries[2].receipt_handle"),
        "{}",
        answer.failures[1].message
    );
    let s = stats(&mut client, QUEUE).await;
    assert_eq!((s.active_messages, s.inactive_messages), (1, 1));

    // The request's own faults change nothing.
    for (entries, field, code) in [
        (vec![], "entries", 4000),
        (vec![entry("x", 1); 17], "entries", 4400),
        (
            vec![entry(&got[0].receipt_handle, 0), entry("x", 43_201)],
            "entries[1].visibility_timeout_seconds",
            4000,
        ),
    ] {
        let status = client
            .batch_change_message_visibility(pb::BatchChangeMessageVisibilityRequest {
                queue_name: QUEUE.into(),
                entries,
            })
            .await
            .expect_err("refused");
        let text = assert_error(&status, Code::InvalidArgument, code);
        assert!(text.contains(field), "{text}");
    }
    let s = stats(&mut client, QUEUE).await;
    assert_eq!((s.active_messages, s.inactive_messages), (1, 1));
    server.stop().await;
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: spool\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_everything_keeps_waiters_and_can_be_rewound() {
    const QUEUE: &str = "purged";
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    metrics.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_with(|config| {
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics).expect("tokio listener"));
    })
    .await;
    let mut client = server.client().await;
    let rewindable = pb::QueueAttributes {
        rewind_seconds: Some(600),
        ..attrs()
    };
    create(&mut client, QUEUE, rewindable).await;
    let purge_started = wall_ms() - 1_000;
    send(&mut client, QUEUE, b"in flight").await;
    let in_flight = receive(&mut client, QUEUE, 1).await.remove(0);
    send(&mut client, QUEUE, b"visible").await;
    send_delayed(&mut client, QUEUE, b"delayed", 600).await;

    assert_eq!(purge(&mut client, QUEUE).await, 3);
    let s = stats(&mut client, QUEUE).await;
    assert_eq!(
        (
            s.active_messages,
            s.inactive_messages,
            s.delayed_messages,
            s.rewindable_messages
        ),
        (0, 0, 0, 3)
    );
    // As if deleted through its newest receive: that handle's delete is a retry.
    delete(&mut client, QUEUE, &in_flight.receipt_handle)
        .await
        .expect("retry of the purge's delete");

    // A waiting receive stays parked through a purge and gets the next message.
    let mut waiter = server.client().await;
    let waiting =
        tokio::spawn(
            async move { receive_with(&mut waiter, receive_request(QUEUE, 10, None)).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(purge(&mut client, QUEUE).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the purge ended a waiting receive");
    send(&mut client, QUEUE, b"after").await;
    let got = waiting.await.expect("join").expect("receive");
    assert_eq!(&got[0].body[..], b"after");

    // The rewind undoes the purge (and brings back "after", deleted by the second purge).
    assert_eq!(purge(&mut client, QUEUE).await, 1);
    let restored = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: QUEUE.into(),
            start_time: Some(prost_types::Timestamp {
                seconds: purge_started / 1_000,
                nanos: 0,
            }),
        })
        .await
        .expect("rewind")
        .into_inner()
        .restored_messages;
    assert_eq!(restored, 4);
    let bodies: Vec<Vec<u8>> = receive(&mut client, QUEUE, 16)
        .await
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    assert_eq!(
        bodies,
        [&b"in flight"[..], b"visible", b"delayed", b"after"]
    );

    let text = scrape(metrics_addr).await;
    let sample = format!("spool_queue_messages_purged_total{{queue=\"{QUEUE}\"}} 4");
    assert!(text.contains(&sample), "no {sample} in:\n{text}");
    let missing = client
        .purge_queue(pb::PurgeQueueRequest {
            queue_name: "nowhere".into(),
        })
        .await
        .expect_err("no queue");
    assert_error(&missing, Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_shows_what_a_receive_would_get_and_changes_nothing() {
    const QUEUE: &str = "peeked";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    let ids = batch_send(&mut client, QUEUE, &[b"1", b"2", b"3"]).await;
    send_delayed(&mut client, QUEUE, b"later", 600).await;
    let first = receive(&mut client, QUEUE, 1).await.remove(0);
    change(&mut client, QUEUE, &first.receipt_handle, 0)
        .await
        .expect("nack");

    let peeked = peek(&mut client, QUEUE, 16).await.expect("peek");
    let seen: Vec<(&str, &[u8], u32)> = peeked
        .iter()
        .map(|m| (m.message_id.as_str(), &m.body[..], m.dequeue_count))
        .collect();
    assert_eq!(
        seen,
        [
            (ids[0].as_str(), &b"1"[..], 1),
            (ids[1].as_str(), b"2", 0),
            (ids[2].as_str(), b"3", 0)
        ]
    );
    assert!(peeked[0].first_dequeue_time.is_some());
    assert!(peeked[1].first_dequeue_time.is_none());
    assert!(peeked[1].enqueue_time.is_some());
    assert_eq!(peek(&mut client, QUEUE, 0).await.expect("peek").len(), 1);
    let s = stats(&mut client, QUEUE).await;
    assert_eq!(
        (s.active_messages, s.inactive_messages, s.delayed_messages),
        (3, 0, 1)
    );

    let got = receive(&mut client, QUEUE, 16).await;
    let received: Vec<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(
        received,
        [ids[0].as_str(), ids[1].as_str(), ids[2].as_str()]
    );
    assert_eq!(got[1].dequeue_count, 1, "the peek counted as a receive");
    assert!(peek(&mut client, QUEUE, 16).await.expect("peek").is_empty());

    let too_many = peek(&mut client, QUEUE, 17).await.expect_err("17");
    let text = assert_error(&too_many, Code::InvalidArgument, 4000);
    assert!(text.contains("max_messages"), "{text}");
    server.stop().await;
}

/// kill -9 right after an acknowledged heartbeat and an acknowledged purge: after the restart
/// the message is still in flight past its first deadline and the purged queue is empty; then
/// an acknowledged nack, another kill, and the message is visible at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_and_purges_survive_a_crash() {
    const QUEUE: &str = "vis-crash";
    const PURGED: &str = "vis-crash-purged";
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    create(&mut client, PURGED, attrs()).await;
    batch_send(&mut client, PURGED, &[b"x", b"y"]).await;
    receive(&mut client, PURGED, 1).await;
    send(&mut client, QUEUE, b"slow").await;
    let received = receive_with(&mut client, receive_request(QUEUE, 0, Some(1)))
        .await
        .expect("receive")
        .remove(0);
    let extended = change(&mut client, QUEUE, &received.receipt_handle, 600)
        .await
        .expect("heartbeat");
    assert_eq!(purge(&mut client, PURGED).await, 2);
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    // Past the receive's own 1 s.
    let first_deadline = ts_ms(received.next_visible_time.as_ref());
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(first_deadline + 200 - wall_ms()).unwrap_or(0),
    ))
    .await;
    let s = stats(&mut client, QUEUE).await;
    assert_eq!((s.active_messages, s.inactive_messages), (0, 1), "{s:?}");
    assert!(receive(&mut client, QUEUE, 1).await.is_empty());
    let stored = stored_receive(dir.path());
    assert_eq!(
        stored,
        (1, ts_ms(received.first_dequeue_time.as_ref()), extended)
    );
    let s = stats(&mut client, PURGED).await;
    assert_eq!(
        (s.active_messages, s.inactive_messages, s.delayed_messages),
        (0, 0, 0)
    );

    change(&mut client, QUEUE, &received.receipt_handle, 0)
        .await
        .expect("nack after the restart, with the handle from before it");
    server.kill();
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let again = receive(&mut client, QUEUE, 1).await;
    assert_eq!(again.len(), 1, "the nack did not survive the crash");
    assert_eq!(again[0].dequeue_count, 2);
    assert_eq!(server.terminate(), Some(0));
}
