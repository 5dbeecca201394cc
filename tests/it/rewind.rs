//! Rewind and retention over gRPC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;
use spool::clock::Clock;
use spool::pb;
use tonic::Code;

use crate::common::*;

fn at(offset_seconds: i64) -> Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    Timestamp {
        seconds: now + offset_seconds,
        nanos: 0,
    }
}

/// The time `offset_ms` from now by the server's clock (which a test may have moved ahead).
fn server_at(clock: &Clock, offset_ms: i64) -> Timestamp {
    let ms = clock.now_ms() + offset_ms;
    Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

async fn rewind(client: &mut Client, queue: &str, start: Timestamp) -> Result<u64, tonic::Status> {
    client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: queue.into(),
            start_time: Some(start),
        })
        .await
        .map(|r| r.into_inner().restored_messages)
}

async fn receive_and_delete_all(client: &mut Client, queue: &str) -> Vec<Vec<u8>> {
    let got = receive(client, queue, 16).await;
    for message in &got {
        delete(client, queue, &message.receipt_handle)
            .await
            .expect("delete");
    }
    got.iter().map(|m| m.body.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_needs_rewind_enabled_and_a_start_in_the_window() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "plain", attrs()).await;
    let status = rewind(&mut client, "plain", at(-1)).await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, 6050);

    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(600),
            ..attrs()
        },
    )
    .await;
    for start in [at(-601), at(3_600)] {
        let status = rewind(&mut client, "q", start).await.unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(
            message.contains("start_time") && message.contains("600"),
            "{message}"
        );
    }
    let status = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "q".into(),
            start_time: None,
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, 4000);
    let status = rewind(&mut client, "missing", at(-1)).await.unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    assert_eq!(
        rewind(&mut client, "q", at(-599)).await.expect("in window"),
        0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_restores_deleted_messages_since_the_start_oldest_first() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(3_600),
            ..attrs()
        },
    )
    .await;
    batch_send(&mut client, "q", &[b"old-1", b"old-2"]).await;
    assert_eq!(receive_and_delete_all(&mut client, "q").await.len(), 2);
    // A moment strictly between the old messages' enqueue time and the new ones', by the
    // server's clock, moved ahead instead of waited for.
    server.clock.skip_ahead(Duration::from_secs(1));
    let good_moment = server_at(&server.clock, 0);
    server.clock.skip_ahead(Duration::from_secs(1));
    batch_send(&mut client, "q", &[b"new-1", b"new-2", b"new-3"]).await;
    assert_eq!(receive_and_delete_all(&mut client, "q").await.len(), 3);
    assert_eq!(stats(&mut client, "q").await.rewindable_messages, 5);

    assert_eq!(
        rewind(&mut client, "q", good_moment).await.expect("rewind"),
        3
    );
    let stats_now = stats(&mut client, "q").await;
    assert_eq!(
        (stats_now.active_messages, stats_now.rewindable_messages),
        (3, 2)
    );
    let again = receive(&mut client, "q", 16).await;
    assert_eq!(
        again.iter().map(|m| m.body.to_vec()).collect::<Vec<_>>(),
        [b"new-1".to_vec(), b"new-2".to_vec(), b"new-3".to_vec()]
    );
    assert!(again.iter().all(|m| m.dequeue_count == 2));

    // Rewinding further back takes the older ones too (the new ones are in flight).
    assert_eq!(
        rewind(&mut client, "q", server_at(&server.clock, -3_599_000))
            .await
            .expect("rewind"),
        2
    );
    let older = receive(&mut client, "q", 16).await;
    assert_eq!(
        older.iter().map(|m| m.body.to_vec()).collect::<Vec<_>>(),
        [b"old-1".to_vec(), b"old-2".to_vec()]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_wakes_a_waiting_poll() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(60),
            ..attrs()
        },
    )
    .await;
    send(&mut client, "q", b"again").await;
    receive_and_delete_all(&mut client, "q").await;
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
        .expect("poll")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rewind(&mut client, "q", at(-30)).await.expect("rewind"), 1);
    let got = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(&got[0].body[..], b"again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_rewind_off_drops_rewindable_messages() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(60),
            ..attrs()
        },
    )
    .await;
    batch_send(&mut client, "q", &[b"a", b"b"]).await;
    receive_and_delete_all(&mut client, "q").await;
    assert_eq!(stats(&mut client, "q").await.rewindable_messages, 2);
    client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "q".into(),
            attributes: Some(pb::QueueAttributes {
                rewind_seconds: Some(0),
                ..attrs()
            }),
        })
        .await
        .expect("update");
    assert_eq!(stats(&mut client, "q").await.rewindable_messages, 0);
    let status = rewind(&mut client, "q", at(-10)).await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, 6050);
    client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "q".into(),
            attributes: Some(pb::QueueAttributes {
                rewind_seconds: Some(60),
                ..attrs()
            }),
        })
        .await
        .expect("update");
    assert_eq!(rewind(&mut client, "q", at(-50)).await.expect("rewind"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_ends_messages_received_or_not() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            message_retention_seconds: Some(60),
            rewind_seconds: Some(60),
            visibility_timeout_seconds: Some(3_600),
            ..attrs()
        },
    )
    .await;
    batch_send(&mut client, "q", &[b"visible", b"in-flight", b"deleted"]).await;
    send_delayed(&mut client, "q", b"delayed", 30).await;
    let got = receive(&mut client, "q", 2).await;
    assert_eq!(&got[1].body[..], b"in-flight");
    delete(&mut client, "q", &got[0].receipt_handle)
        .await
        .expect("delete");
    let stats_before = stats(&mut client, "q").await;
    assert_eq!(
        (
            stats_before.active_messages,
            stats_before.inactive_messages,
            stats_before.delayed_messages,
            stats_before.rewindable_messages
        ),
        (1, 1, 1, 1)
    );

    server.clock.skip_ahead(Duration::from_secs(61));
    let stats_after = stats(&mut client, "q").await;
    assert_eq!(stats_after, pb::QueueStats::default());
    assert!(receive(&mut client, "q", 16).await.is_empty());
    // Its receipt handle names a message that is gone: deleting it is a harmless no-op.
    delete(&mut client, "q", &got[1].receipt_handle)
        .await
        .expect("gone");
    server.stop().await;
}
