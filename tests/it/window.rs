//! Backlogs larger than a queue's window (issue 18): with `--queue-window 4 --total-window 16`,
//! most of every backlog here lives in storage only, and every semantic must hold as if it
//! were all in memory: delivery order, counters, restarts, purge, peek, rewind, retention,
//! dead letters, byte quotas, topics, deletes, and crashes. Run on both backends.

use std::time::Duration;

use spool::pb;

use crate::common::*;

const QUEUE_WINDOW: usize = 4;
const TOTAL_WINDOW: usize = 16;

fn tiny_window(config: &mut spool::server::ServerConfig) {
    config.settings.queue_window = Some(QUEUE_WINDOW);
    config.settings.total_window = Some(TOTAL_WINDOW);
}

async fn windowed(dir: &std::path::Path) -> TestServer {
    TestServer::start_in(dir, tiny_window).await
}

fn body(n: usize) -> String {
    format!("m{n:03}")
}

/// Sends messages `from..to` (bodies `m000`...), ten per batch.
async fn send_range(client: &mut Client, queue: &str, from: usize, to: usize) {
    let bodies: Vec<String> = (from..to).map(body).collect();
    for chunk in bodies.chunks(10) {
        let chunk: Vec<&[u8]> = chunk.iter().map(|b| b.as_bytes()).collect();
        batch_send(client, queue, &chunk).await;
    }
}

fn bodies(messages: &[pb::ReceivedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).expect("utf-8"))
        .collect()
}

/// Receives `max` at a time without waiting, deleting each, until a receive comes back empty:
/// the bodies in the order they came.
async fn drain(client: &mut Client, queue: &str, max: u32) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let got = receive(client, queue, max).await;
        if got.is_empty() {
            return all;
        }
        for message in &got {
            delete(client, queue, &message.receipt_handle)
                .await
                .expect("delete");
        }
        all.extend(bodies(&got));
    }
}

fn expected(from: usize, to: usize) -> Vec<String> {
    (from..to).map(body).collect()
}

async fn peek(client: &mut Client, queue: &str, max: u32) -> Vec<String> {
    client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: queue.into(),
            max_messages: max,
        })
        .await
        .expect("peek")
        .into_inner()
        .messages
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).expect("utf-8"))
        .collect()
}

/// A backlog five times the window comes out oldest first, whatever the receive size, and its
/// counters count every message (spilled ones too) as it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_window_is_delivered_oldest_first_with_exact_counters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send_range(&mut client, "q", 0, 20).await;
    let stats = stats(&mut client, "q").await;
    assert_eq!(stats.active_messages, 20);
    assert_eq!(stats.backlog_bytes, 20 * 4);
    let oldest = stats.oldest_message_time.expect("an oldest message");
    // Peek shows past the window, in order, and changes nothing.
    assert_eq!(peek(&mut client, "q", 16).await, expected(0, 16));
    assert_eq!(stats_of(&mut client).await.active_messages, 20);

    let first = receive(&mut client, "q", 3).await;
    assert_eq!(bodies(&first), expected(0, 3));
    let after_first = stats_of(&mut client).await;
    assert_eq!(
        (after_first.active_messages, after_first.inactive_messages),
        (17, 3)
    );
    assert_eq!(after_first.oldest_message_time, Some(oldest));
    for message in &first {
        delete(&mut client, "q", &message.receipt_handle)
            .await
            .expect("delete");
    }
    assert_eq!(drain(&mut client, "q", 3).await, expected(3, 20));
    let empty = stats_of(&mut client).await;
    assert_eq!(
        (
            empty.active_messages,
            empty.inactive_messages,
            empty.backlog_bytes
        ),
        (0, 0, 0)
    );
    assert_eq!(empty.oldest_message_time, None);
    // Sends after the backlog drained still come in order.
    send_range(&mut client, "q", 20, 30).await;
    assert_eq!(drain(&mut client, "q", 16).await, expected(20, 30));
    server.stop().await;
}

async fn stats_of(client: &mut Client) -> pb::QueueStats {
    stats(client, "q").await
}

/// A restart reads only the window and keeps the rest counted: visible, in flight and delayed
/// messages, their bytes and the oldest time are as before, and delivery goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_window_and_keeps_order_and_counters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send_range(&mut client, "q", 0, 30).await;
    let in_flight = receive_with(
        &mut client,
        pb::ReceiveMessagesRequest {
            queue_name: "q".into(),
            max_messages: 2,
            wait_seconds: Some(0),
            visibility_timeout_seconds: Some(600),
        },
    )
    .await
    .expect("receive");
    assert_eq!(bodies(&in_flight), expected(0, 2));
    send_delayed(&mut client, "q", b"late", 600).await;
    let before = stats_of(&mut client).await;
    assert_eq!(
        (
            before.active_messages,
            before.inactive_messages,
            before.delayed_messages
        ),
        (28, 2, 1)
    );
    server.stop().await;

    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    let after = stats_of(&mut client).await;
    assert_eq!(after, before);
    // The receipt handles of the received ones still work.
    for message in &in_flight {
        delete(&mut client, "q", &message.receipt_handle)
            .await
            .expect("delete across the restart");
    }
    assert_eq!(drain(&mut client, "q", 5).await, expected(2, 30));
    server.clock.skip_ahead(Duration::from_secs(601));
    assert_eq!(drain(&mut client, "q", 5).await, vec!["late".to_string()]);
    let empty = stats_of(&mut client).await;
    assert_eq!((empty.active_messages, empty.backlog_bytes), (0, 0));
    server.stop().await;
}

/// A purge removes the spilled backlog too; deleting a queue with a spilled backlog removes
/// every row it had in storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_queue_reach_past_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send_range(&mut client, "q", 0, 40).await;
    let purged = client
        .purge_queue(pb::PurgeQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect("purge")
        .into_inner()
        .purged_messages;
    assert_eq!(purged, 40);
    let stats = stats_of(&mut client).await;
    assert_eq!((stats.active_messages, stats.backlog_bytes), (0, 0));
    assert!(receive(&mut client, "q", 16).await.is_empty());
    send_range(&mut client, "q", 40, 50).await;
    assert_eq!(drain(&mut client, "q", 16).await, expected(40, 50));

    create(&mut client, "big", attrs()).await;
    send_range(&mut client, "big", 0, 40).await;
    let big = queue_id(dir.path(), "big");
    assert_eq!(rows_of_queue(dir.path(), big), 40);
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "big".into(),
        })
        .await
        .expect("delete queue");
    // The rows past the window go in the background.
    let mut left = rows_of_queue(dir.path(), big);
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = rows_of_queue(dir.path(), big);
    }
    assert_eq!(left, 0);
    server.stop().await;
}

/// Retention ends spilled messages too, and rewind brings back kept ones in order, ahead of
/// the spilled ones sent later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_rewind_past_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            message_retention_seconds: Some(60),
            rewind_seconds: Some(60),
            ..attrs()
        },
    )
    .await;
    send_range(&mut client, "q", 0, 10).await;
    assert_eq!(drain(&mut client, "q", 3).await, expected(0, 10));
    assert_eq!(stats_of(&mut client).await.rewindable_messages, 10);
    send_range(&mut client, "q", 10, 30).await;
    let restored = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "q".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: server.clock.now_ms() / 1_000 - 30,
                nanos: 0,
            }),
        })
        .await
        .expect("rewind")
        .into_inner()
        .restored_messages;
    assert_eq!(restored, 10);
    let stats = stats_of(&mut client).await;
    assert_eq!((stats.active_messages, stats.rewindable_messages), (30, 0));
    assert_eq!(stats.backlog_bytes, 30 * 4);
    // Rewound messages are older than the spilled ones: they come first.
    let got = receive(&mut client, "q", 12).await;
    assert_eq!(bodies(&got), expected(0, 12));

    // Past the retention, everything goes: in flight, visible and spilled.
    server.clock.skip_ahead(Duration::from_secs(61));
    let stats = stats_of(&mut client).await;
    assert_eq!(
        (
            stats.active_messages,
            stats.inactive_messages,
            stats.backlog_bytes
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(receive(&mut client, "q", 16).await.is_empty());
    server.stop().await;
}

/// Dead-lettering by time to live moves a backlog larger than the window, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_move_a_backlog_past_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(&mut client, "dlq", attrs()).await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            dead_letter_policy: Some(pb::DeadLetterPolicy {
                dead_letter_queue: "dlq".into(),
                max_receive_count: 1_000,
                max_time_to_live_seconds: 300,
            }),
            ..attrs()
        },
    )
    .await;
    send_range(&mut client, "q", 0, 20).await;
    server.clock.skip_ahead(Duration::from_secs(301));
    // Each receive moves what it finds due, then waits for the next slice.
    for _ in 0..50 {
        assert!(receive(&mut client, "q", 16).await.is_empty());
        if stats(&mut client, "dlq").await.active_messages == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source = stats_of(&mut client).await;
    assert_eq!((source.active_messages, source.backlog_bytes), (0, 0));
    let target = stats(&mut client, "dlq").await;
    assert_eq!((target.active_messages, target.backlog_bytes), (20, 20 * 4));
    assert_eq!(drain(&mut client, "dlq", 16).await, expected(0, 20));
    server.stop().await;
}

/// The byte quota counts spilled messages, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_quotas_count_the_spilled_backlog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            max_bytes: Some(40),
            ..attrs()
        },
    )
    .await;
    send_range(&mut client, "q", 0, 10).await;
    let refused = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: b"m999".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect_err("the quota is full");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    server.stop().await;

    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    assert_eq!(stats_of(&mut client).await.backlog_bytes, 40);
    let refused = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: b"m999".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect_err("the quota is still full");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(drain(&mut client, "q", 16).await, expected(0, 10));
    send(&mut client, "q", b"m999").await;
    server.stop().await;
}

/// A topic's copies into a queue whose window is full are spilled like sends, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_copies_into_a_spilled_queue_keep_their_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = windowed(dir.path()).await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    client
        .create_topic(pb::CreateTopicRequest {
            topic_name: "t".into(),
            attributes: Some(pb::TopicAttributes {
                max_message_size: None,
                filter_type: pb::FilterType::Tags as i32,
            }),
        })
        .await
        .expect("create topic");
    client
        .subscribe(pb::SubscribeRequest {
            topic_name: "t".into(),
            subscription_name: "s".into(),
            queue_name: "q".into(),
            filter_tags: Vec::new(),
            binding_keys: Vec::new(),
        })
        .await
        .expect("subscribe");
    send_range(&mut client, "q", 0, 10).await;
    for n in 10..20 {
        client
            .publish_message(pb::PublishMessageRequest {
                topic_name: "t".into(),
                body: body(n).into_bytes().into(),
                ..Default::default()
            })
            .await
            .expect("publish");
    }
    assert_eq!(stats_of(&mut client).await.active_messages, 20);
    assert_eq!(drain(&mut client, "q", 7).await, expected(0, 20));
    server.stop().await;
}

/// SIGKILL with most of the backlog spilled, some of it received and deleted: after the
/// restart nothing acknowledged is lost or delivered again, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_a_spilled_backlog_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--queue-window", "4", "--total-window", "16"];
    let server = ChildServer::start_with(dir.path(), &flags, &[]);
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send_range(&mut client, "q", 0, 40).await;
    // A receive takes what the window holds (4 here, read again once half is taken): the
    // third finds the next slice, waiting for it if need be.
    let mut first = Vec::new();
    for _ in 0..3 {
        first.extend(receive(&mut client, "q", 2).await);
    }
    assert_eq!(bodies(&first), expected(0, 6));
    for message in &first {
        delete(&mut client, "q", &message.receipt_handle)
            .await
            .expect("delete");
    }
    send_range(&mut client, "q", 40, 50).await;
    server.kill();

    let server = ChildServer::start_with(dir.path(), &flags, &[]);
    let mut client = server.client().await;
    let stats = stats_of(&mut client).await;
    assert_eq!(
        (stats.active_messages, stats.backlog_bytes),
        (44, 44 * 4),
        "{stats:?}"
    );
    assert_eq!(drain(&mut client, "q", 5).await, expected(6, 50));
    server.kill();
}
