//! Dead-letter queues (issue 16): the policy and its checks, the move instead of a delivery
//! (by receive count and by time to live), what a dead-lettered message carries, redrives back
//! to the source or to a named queue, the guard on deleting a dead-letter queue, the metrics,
//! and the move's atomicity across kill -9.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::*;

fn policy(queue: &str, max_receive_count: u32, ttl: u32) -> pb::QueueAttributes {
    pb::QueueAttributes {
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_queue: queue.into(),
            max_receive_count,
            max_time_to_live_seconds: ttl,
        }),
        ..Default::default()
    }
}

async fn try_create(
    client: &mut Client,
    name: &str,
    attributes: pb::QueueAttributes,
) -> Result<pb::Queue, tonic::Status> {
    Ok(client
        .create_queue(pb::CreateQueueRequest {
            queue_name: name.into(),
            attributes: Some(attributes),
        })
        .await?
        .into_inner())
}

async fn update(
    client: &mut Client,
    name: &str,
    attributes: pb::QueueAttributes,
) -> Result<pb::Queue, tonic::Status> {
    Ok(client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: name.into(),
            attributes: Some(attributes),
        })
        .await?
        .into_inner())
}

async fn sources(client: &mut Client, queue: &str) -> Vec<String> {
    client
        .list_dead_letter_source_queues(pb::ListDeadLetterSourceQueuesRequest {
            queue_name: queue.into(),
        })
        .await
        .expect("list sources")
        .into_inner()
        .queue_names
}

async fn redrive(
    client: &mut Client,
    queue: &str,
    destination: &str,
    max_messages: u32,
) -> Result<pb::RedriveMessagesResponse, tonic::Status> {
    Ok(client
        .redrive_messages(pb::RedriveMessagesRequest {
            queue_name: queue.into(),
            destination_queue: destination.into(),
            max_messages,
        })
        .await?
        .into_inner())
}

async fn delete_queue(client: &mut Client, queue: &str) -> Result<(), tonic::Status> {
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: queue.into(),
        })
        .await
        .map(drop)
}

/// Waits until `queue` shows `count` visible messages: a dead-letter move is handed to the
/// dead-letter queue's actor just after its commit, not before the receive that made it
/// answers. The bound is generous; it is not what is tested.
async fn wait_for_visible(client: &mut Client, queue: &str, count: u64) {
    for _ in 0..500 {
        if stats(client, queue).await.active_messages == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{queue} has {:?}, not {count} visible messages",
        stats(client, queue).await
    );
}

/// Receives with a 1 s visibility timeout, so the test can let it run out.
async fn receive_briefly(client: &mut Client, queue: &str, max: u32) -> Vec<pb::ReceivedMessage> {
    receive_with(
        client,
        pb::ReceiveMessagesRequest {
            queue_name: queue.into(),
            max_messages: max,
            wait_seconds: Some(0),
            visibility_timeout_seconds: Some(1),
        },
    )
    .await
    .expect("receive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_needs_an_existing_other_queue_and_guards_its_deletion() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let error = try_create(&mut client, "src", policy("dlq", 3, 0))
        .await
        .expect_err("no such dead-letter queue");
    let text = assert_error(&error, Code::InvalidArgument, 4000);
    assert!(
        text.contains("dead_letter_queue") && text.contains("\"dlq\"") && text.contains("exist"),
        "{text}"
    );
    create(&mut client, "dlq", attrs()).await;
    for (attributes, field, limit) in [
        (policy("dlq", 0, 0), "max_receive_count", "1..=1000"),
        (policy("dlq", 1_001, 0), "max_receive_count", "1..=1000"),
        (
            policy("dlq", 3, 299),
            "max_time_to_live_seconds",
            "300..=43200",
        ),
        (
            policy("dlq", 3, 43_201),
            "max_time_to_live_seconds",
            "300..=43200",
        ),
        (policy("no such!", 3, 0), "dead_letter_queue", "1..=64"),
    ] {
        let error = try_create(&mut client, "src", attributes)
            .await
            .expect_err("out of range");
        let text = assert_error(&error, Code::InvalidArgument, 4000);
        assert!(text.contains(field) && text.contains(limit), "{text}");
    }
    let created = try_create(&mut client, "src", policy("dlq", 3, 600))
        .await
        .expect("create with a policy");
    assert_eq!(
        created.attributes.expect("attributes").dead_letter_policy,
        Some(pb::DeadLetterPolicy {
            dead_letter_queue: "dlq".into(),
            max_receive_count: 3,
            max_time_to_live_seconds: 600,
        })
    );
    create(&mut client, "other", attrs()).await;
    update(&mut client, "other", policy("dlq", 1, 0))
        .await
        .expect("a second source");
    let error = update(&mut client, "dlq", policy("dlq", 1, 0))
        .await
        .expect_err("itself");
    assert!(assert_error(&error, Code::InvalidArgument, 4000).contains("itself"));
    assert_eq!(sources(&mut client, "dlq").await, ["other", "src"]);
    assert!(sources(&mut client, "src").await.is_empty());

    let error = delete_queue(&mut client, "dlq")
        .await
        .expect_err("still a dead-letter queue");
    let text = assert_error(&error, Code::FailedPrecondition, 4000);
    assert!(
        text.contains("\"other\"") && text.contains("\"src\""),
        "{text}"
    );
    // A policy naming no queue removes it; a deleted source no longer counts.
    let removed = update(&mut client, "other", policy("", 0, 0))
        .await
        .expect("remove the policy");
    assert_eq!(
        removed.attributes.expect("attributes").dead_letter_policy,
        None
    );
    delete_queue(&mut client, "src").await.expect("delete src");
    assert!(sources(&mut client, "dlq").await.is_empty());
    delete_queue(&mut client, "dlq").await.expect("delete dlq");
    let missing = client
        .list_dead_letter_source_queues(pb::ListDeadLetterSourceQueuesRequest {
            queue_name: "dlq".into(),
        })
        .await
        .expect_err("gone");
    assert_error(&missing, Code::NotFound, 4440);
    server.stop().await;
}

/// The README's story: a message received twice lands in the dead-letter queue on its third
/// receive, with everything it had and where it came from; a redrive sends it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_received_too_often_is_moved_and_redriven() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    metrics.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_with(|config| {
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics).expect("tokio listener"));
    })
    .await;
    let mut client = server.client().await;
    create(&mut client, "orders-dlq", attrs()).await;
    create(&mut client, "orders", policy("orders-dlq", 2, 0)).await;
    let poison = pb::SendMessageRequest {
        queue_name: "orders".into(),
        body: b"poison".to_vec().into(),
        attributes: HashMap::from([("traceparent".to_string(), "00-ab-cd-01".to_string())]),
        deduplication_id: "poison-1".into(),
        ..Default::default()
    };
    let id = client
        .send_message(poison.clone())
        .await
        .expect("send")
        .into_inner()
        .message_id;
    // Its retry is a duplicate (counted in spool_queue_sends_deduplicated_total).
    let retried = client
        .send_message(poison)
        .await
        .expect("send again")
        .into_inner()
        .message_id;
    assert_eq!(retried, id);
    send(&mut client, "orders", b"fine").await;
    let mut enqueue_time = None;
    for round in 1..=2 {
        let got = receive_briefly(&mut client, "orders", 1).await;
        assert_eq!(
            (got[0].message_id.as_str(), got[0].dequeue_count),
            (id.as_str(), round)
        );
        enqueue_time = got[0].enqueue_time;
        server.clock.skip_ahead(Duration::from_secs(2));
    }
    // The third receive moves it and gets the next message instead.
    let got = receive(&mut client, "orders", 16).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"fine"[..]]);
    let s = stats(&mut client, "orders").await;
    assert_eq!((s.active_messages, s.inactive_messages), (0, 1));
    wait_for_visible(&mut client, "orders-dlq", 1).await;

    let peeked = client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: "orders-dlq".into(),
            max_messages: 1,
        })
        .await
        .expect("peek")
        .into_inner()
        .messages
        .remove(0);
    assert_eq!(
        (
            peeked.message_id.as_str(),
            peeked.dead_letter_source_queue.as_str(),
            peeked.dead_letter_receive_count,
            peeked.dequeue_count
        ),
        (id.as_str(), "orders", 2, 0)
    );
    let dead = receive(&mut client, "orders-dlq", 1).await.remove(0);
    assert_eq!(dead.message_id, id);
    assert_eq!(&dead.body[..], b"poison");
    assert_eq!(dead.attributes["traceparent"], "00-ab-cd-01");
    assert_eq!(dead.enqueue_time, enqueue_time, "the original enqueue time");
    assert_eq!(
        (
            dead.dead_letter_source_queue.as_str(),
            dead.dead_letter_receive_count,
            dead.dequeue_count
        ),
        ("orders", 2, 1)
    );
    // In flight in the dead-letter queue: a redrive leaves it.
    let none = redrive(&mut client, "orders-dlq", "", 0)
        .await
        .expect("redrive");
    assert_eq!((none.redriven_messages, none.skipped_messages), (0, 0));
    client
        .change_message_visibility(pb::ChangeMessageVisibilityRequest {
            queue_name: "orders-dlq".into(),
            receipt_handle: dead.receipt_handle,
            visibility_timeout_seconds: 0,
        })
        .await
        .expect("nack");
    let moved = redrive(&mut client, "orders-dlq", "", 0)
        .await
        .expect("redrive");
    assert_eq!((moved.redriven_messages, moved.skipped_messages), (1, 0));
    assert_eq!(stats(&mut client, "orders-dlq").await.active_messages, 0);
    let back = receive(&mut client, "orders", 16).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        (
            back[0].message_id.as_str(),
            back[0].dequeue_count,
            back[0].dead_letter_source_queue.as_str(),
            back[0].attributes.len()
        ),
        (id.as_str(), 1, "", 1),
        "back in its queue as a fresh message with its attributes"
    );

    let (_, text) = http_get(metrics_addr, "/metrics").await;
    let samples = samples(&text);
    assert_eq!(
        samples.get("spool_queue_messages_dead_lettered_total{queue=\"orders\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        samples.get("spool_queue_messages_redriven_total{queue=\"orders-dlq\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        samples.get("spool_queue_sends_deduplicated_total{queue=\"orders\"}"),
        Some(&1.0),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_their_time_to_live_are_moved_and_redrives_go_where_asked() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "ttl-dlq", attrs()).await;
    create(&mut client, "elsewhere", attrs()).await;
    create(&mut client, "ttl", policy("ttl-dlq", 1_000, 300)).await;
    create(&mut client, "gone", policy("ttl-dlq", 1_000, 300)).await;
    batch_send(&mut client, "ttl", &[b"a", b"b", b"c"]).await;
    send(&mut client, "gone", b"orphan").await;
    server.clock.skip_ahead(Duration::from_secs(200));
    let fresh = send(&mut client, "ttl", b"fresh").await;
    server.clock.skip_ahead(Duration::from_secs(101));
    // Never received, but sent more than 300 s ago: moved at the next receive.
    let got = receive(&mut client, "ttl", 16).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, fresh);
    assert!(receive(&mut client, "gone", 1).await.is_empty());
    wait_for_visible(&mut client, "ttl-dlq", 4).await;

    // The source of "orphan" is deleted (its policy went with it): it stays.
    delete_queue(&mut client, "gone")
        .await
        .expect("delete source");
    let one = redrive(&mut client, "ttl-dlq", "", 1)
        .await
        .expect("redrive one");
    assert_eq!((one.redriven_messages, one.skipped_messages), (1, 0));
    let rest = redrive(&mut client, "ttl-dlq", "", 0)
        .await
        .expect("redrive rest");
    assert_eq!((rest.redriven_messages, rest.skipped_messages), (2, 1));
    // Oldest first: a, then b and c.
    let ttl_bodies: Vec<Vec<u8>> = client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: "ttl".into(),
            max_messages: 16,
        })
        .await
        .expect("peek")
        .into_inner()
        .messages
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    assert_eq!(ttl_bodies, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // To a named queue; not to itself, nor to a queue that does not exist.
    let error = redrive(&mut client, "ttl-dlq", "ttl-dlq", 0)
        .await
        .expect_err("itself");
    assert!(assert_error(&error, Code::InvalidArgument, 4000).contains("destination_queue"));
    let error = redrive(&mut client, "ttl-dlq", "nowhere", 0)
        .await
        .expect_err("no such queue");
    assert_error(&error, Code::NotFound, 4440);
    let error = redrive(&mut client, "ttl-dlq", "", 100_001)
        .await
        .expect_err("too many");
    assert!(assert_error(&error, Code::InvalidArgument, 4000).contains("1..=100000"));
    let named = redrive(&mut client, "ttl-dlq", "elsewhere", 0)
        .await
        .expect("redrive to a named queue");
    assert_eq!((named.redriven_messages, named.skipped_messages), (1, 0));
    let orphan = receive(&mut client, "elsewhere", 1).await.remove(0);
    assert_eq!(&orphan.body[..], b"orphan");
    assert!(orphan.dead_letter_source_queue.is_empty());
    server.stop().await;
}

/// kill -9 while messages are being moved to the dead-letter queue: after the restart every
/// message is in exactly one of the two queues (none lost, none twice), and the same across a
/// crash during a redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_leaves_a_message_in_both_queues_or_in_neither() {
    const COUNT: usize = 48;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "crash-dlq", attrs()).await;
    create(&mut client, "crash", policy("crash-dlq", 1, 0)).await;
    let mut sent = BTreeSet::new();
    for chunk in 0..COUNT / 16 {
        let bodies: Vec<Vec<u8>> = (0..16)
            .map(|i| format!("m{}", chunk * 16 + i).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        sent.extend(batch_send(&mut client, "crash", &refs).await);
    }
    for _ in 0..COUNT / 16 {
        assert_eq!(receive_briefly(&mut client, "crash", 16).await.len(), 16);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // This receive moves all of them (each was received once), in one commit that may or may
    // not be durable when the kill comes.
    assert!(receive(&mut client, "crash", 16).await.is_empty());
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    // A receive on the source moves whatever the crash left there.
    assert!(receive(&mut client, "crash", 16).await.is_empty());
    wait_for_visible(&mut client, "crash-dlq", COUNT as u64).await;
    let mut in_dlq = Vec::new();
    loop {
        let got = receive(&mut client, "crash-dlq", 16).await;
        if got.is_empty() {
            break;
        }
        for message in got {
            assert_eq!(message.dead_letter_source_queue, "crash");
            in_dlq.push(message);
        }
    }
    let unique: BTreeSet<String> = in_dlq.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(
        unique.len(),
        in_dlq.len(),
        "a message twice in the dead-letter queue"
    );
    assert_eq!(unique, sent, "messages lost in the move");
    for message in in_dlq {
        client
            .change_message_visibility(pb::ChangeMessageVisibilityRequest {
                queue_name: "crash-dlq".into(),
                receipt_handle: message.receipt_handle,
                visibility_timeout_seconds: 0,
            })
            .await
            .expect("nack, for the redrive");
    }

    // A crash during a redrive back to the source.
    let moved = redrive(&mut client, "crash-dlq", "", 0)
        .await
        .expect("redrive");
    assert_eq!(moved.redriven_messages as usize, COUNT);
    server.kill();
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let s = stats(&mut client, "crash").await;
    let d = stats(&mut client, "crash-dlq").await;
    assert_eq!(
        (s.active_messages, d.active_messages, d.inactive_messages),
        (COUNT as u64, 0, 0)
    );
    assert_eq!(server.terminate(), Some(0));
}

/// A long poll parked when its queue's only message goes to the dead-letter queue keeps
/// waiting, and gets the next message sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_outlasts_a_dead_letter_move() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "wait-dlq", attrs()).await;
    create(&mut client, "wait", policy("wait-dlq", 1, 0)).await;
    send(&mut client, "wait", b"poison").await;
    assert_eq!(receive_briefly(&mut client, "wait", 1).await.len(), 1);
    let mut poller = client.clone();
    let poll = tokio::spawn(async move {
        receive_with(
            &mut poller,
            pb::ReceiveMessagesRequest {
                queue_name: "wait".into(),
                max_messages: 1,
                wait_seconds: Some(20),
                visibility_timeout_seconds: None,
            },
        )
        .await
        .expect("long poll")
    });
    // The poison's visibility timeout (1 s) ends while the poll waits: it is moved, and the
    // poll waits on.
    wait_for_visible(&mut client, "wait-dlq", 1).await;
    send(&mut client, "wait", b"next").await;
    let got = poll.await.expect("poll task");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"next");
    server.stop().await;
}

/// A dead-letter queue without room under its max_bytes takes the messages that fit, oldest
/// first; the others stay visible in their queue (not delivered: they are due for the move) and
/// move once there is room. A redrive into a queue without room moves the messages before the
/// first that does not fit, then fails with RESOURCE_EXHAUSTED naming max_bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_moves_and_redrives_stay_within_max_bytes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "tight-dlq",
        pb::QueueAttributes {
            max_bytes: Some(10),
            ..attrs()
        },
    )
    .await;
    create(&mut client, "jobs", policy("tight-dlq", 1, 0)).await;
    batch_send(&mut client, "jobs", &[b"poison1", b"poison2"]).await;
    assert_eq!(receive_briefly(&mut client, "jobs", 2).await.len(), 2);
    server.clock.skip_ahead(Duration::from_secs(2));
    // Both are due for the move; only the first fits (7 + 7 > 10).
    assert!(receive(&mut client, "jobs", 16).await.is_empty());
    wait_for_visible(&mut client, "tight-dlq", 1).await;
    wait_for_visible(&mut client, "jobs", 1).await;
    assert_eq!(stats(&mut client, "tight-dlq").await.backlog_bytes, 7);
    assert_eq!(stats(&mut client, "jobs").await.backlog_bytes, 7);
    // Still no room: the next receive leaves it where it is.
    assert!(receive(&mut client, "jobs", 16).await.is_empty());
    wait_for_visible(&mut client, "jobs", 1).await;
    assert_eq!(stats(&mut client, "tight-dlq").await.active_messages, 1);

    // A redrive into a queue without room moves nothing and says why.
    create(
        &mut client,
        "small",
        pb::QueueAttributes {
            max_bytes: Some(5),
            ..attrs()
        },
    )
    .await;
    let status = redrive(&mut client, "tight-dlq", "small", 0)
        .await
        .expect_err("no room in small");
    let message = assert_error(&status, Code::ResourceExhausted, 4410);
    assert!(
        message.contains("\"small\"") && message.contains("max_bytes is 5"),
        "{message}"
    );
    assert_eq!(stats(&mut client, "tight-dlq").await.active_messages, 1);
    assert_eq!(stats(&mut client, "small").await.backlog_bytes, 0);

    // Room made in the dead-letter queue: the second message moves at the next receive.
    update(
        &mut client,
        "tight-dlq",
        pb::QueueAttributes {
            max_bytes: Some(14),
            ..attrs()
        },
    )
    .await
    .expect("raise the quota");
    assert!(receive(&mut client, "jobs", 16).await.is_empty());
    wait_for_visible(&mut client, "tight-dlq", 2).await;
    let s = stats(&mut client, "jobs").await;
    assert_eq!((s.active_messages, s.backlog_bytes), (0, 0), "{s:?}");

    // A redrive of both into room for one: the first moves, then it fails.
    update(
        &mut client,
        "small",
        pb::QueueAttributes {
            max_bytes: Some(10),
            ..attrs()
        },
    )
    .await
    .expect("raise the quota");
    let status = redrive(&mut client, "tight-dlq", "small", 0)
        .await
        .expect_err("room for one");
    assert_error(&status, Code::ResourceExhausted, 4410);
    wait_for_visible(&mut client, "small", 1).await;
    assert_eq!(stats(&mut client, "small").await.backlog_bytes, 7);
    assert_eq!(stats(&mut client, "tight-dlq").await.backlog_bytes, 7);
    server.stop().await;
}
