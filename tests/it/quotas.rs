//! Per-queue byte quotas (issue 15's last item): `max_bytes` refuses sends and batches beyond
//! it as the backlog cap does (RESOURCE_EXHAUSTED, BACKLOG_FULL, 4410, naming max_bytes), and
//! `backlog_bytes` counts exactly through deletes, purges, rewinds, retention and restarts,
//! kill -9 included. (Publishes: `topics`; dead-letter moves and redrives: `dead_letters`.)

use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::*;

fn quota(max_bytes: u64) -> pb::QueueAttributes {
    pb::QueueAttributes {
        max_bytes: Some(max_bytes),
        ..attrs()
    }
}

fn entry(body: &[u8]) -> pb::BatchSendEntry {
    pb::BatchSendEntry {
        body: body.to_vec().into(),
        ..Default::default()
    }
}

async fn batch(client: &mut Client, queue: &str, bodies: &[&[u8]]) -> Result<(), tonic::Status> {
    client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: queue.into(),
            entries: bodies.iter().map(|body| entry(body)).collect(),
        })
        .await
        .map(drop)
}

async fn try_send(client: &mut Client, queue: &str, body: &[u8]) -> Result<(), tonic::Status> {
    client
        .send_message(pb::SendMessageRequest {
            queue_name: queue.into(),
            body: body.to_vec().into(),
            ..Default::default()
        })
        .await
        .map(drop)
}

async fn update(client: &mut Client, queue: &str, attributes: pb::QueueAttributes) -> pb::Queue {
    client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: queue.into(),
            attributes: Some(attributes),
        })
        .await
        .expect("update")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_refuses_sends_and_whole_batches_beyond_it() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = create(&mut client, "q", quota(100)).await;
    assert_eq!(created.attributes.expect("attributes").max_bytes, Some(100));
    send(&mut client, "q", &[b'a'; 60]).await;
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 60);

    // A batch is all or nothing: 30 would fit, 30 + 20 does not, so neither is enqueued.
    let status = batch(&mut client, "q", &[&[b'b'; 30], &[b'c'; 20]])
        .await
        .expect_err("beyond max_bytes");
    let message = assert_error(&status, Code::ResourceExhausted, 4410);
    assert!(
        message.contains("max_bytes is 100") && message.contains("holds 60 bytes"),
        "{message}"
    );
    let s = stats(&mut client, "q").await;
    assert_eq!((s.active_messages, s.backlog_bytes), (1, 60));

    // Exactly up to the quota fits.
    batch(&mut client, "q", &[&[b'b'; 30], &[b'c'; 10]])
        .await
        .expect("a batch that fits");
    let status = try_send(&mut client, "q", b"d").await.expect_err("full");
    assert_error(&status, Code::ResourceExhausted, 4410);
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 100);

    // Attributes count too (as stored: more than their keys and values).
    let with_attributes = pb::SendMessageRequest {
        queue_name: "free".into(),
        body: b"12345".to_vec().into(),
        attributes: [("key".to_string(), "value".to_string())].into(),
        ..Default::default()
    };
    create(&mut client, "free", attrs()).await;
    client
        .send_message(with_attributes)
        .await
        .expect("send with attributes");
    let free = get(&mut client, "free").await;
    assert_eq!(free.attributes.expect("attributes").max_bytes, Some(0));
    let held = free.stats.expect("stats").backlog_bytes;
    assert!(held >= 5 + 8, "{held}");

    // 0 turns the quota off; the bytes are still counted.
    update(&mut client, "q", quota(0)).await;
    send(&mut client, "q", b"d").await;
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 101);
    // Lowering it below what the queue holds refuses new messages, keeps the old ones.
    update(&mut client, "q", quota(50)).await;
    let status = try_send(&mut client, "q", b"e").await.expect_err("over");
    assert_error(&status, Code::ResourceExhausted, 4410);
    assert_eq!(stats(&mut client, "q").await.active_messages, 4);

    for bad in [1u64 << 50 | 1, u64::MAX] {
        let status = client
            .update_queue(pb::UpdateQueueRequest {
                queue_name: "q".into(),
                attributes: Some(quota(bad)),
            })
            .await
            .expect_err("out of range");
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(
            message.contains("attributes.max_bytes") && message.contains("1125899906842624"),
            "{message}"
        );
    }
    server.stop().await;
}

/// The count follows deletes, purges, rewinds (rewindable messages count: they are on disk)
/// and rewind turned off; retention ends it; a restart recovers it from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_bytes_follow_deletes_purges_rewinds_retention_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(600),
            message_retention_seconds: Some(3_600),
            max_bytes: Some(1_000),
            ..attrs()
        },
    )
    .await;
    let start = server.clock.now_ms();
    batch_send(&mut client, "q", &[&[1; 10], &[2; 20], &[3; 30]]).await;
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 60);

    let first = receive(&mut client, "q", 1).await.remove(0);
    assert_eq!(first.body.len(), 10);
    delete(&mut client, "q", &first.receipt_handle)
        .await
        .expect("delete");
    let s = stats(&mut client, "q").await;
    assert_eq!((s.rewindable_messages, s.backlog_bytes), (1, 60));

    client
        .purge_queue(pb::PurgeQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect("purge");
    let s = stats(&mut client, "q").await;
    assert_eq!((s.rewindable_messages, s.backlog_bytes), (3, 60));

    client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "q".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: start / 1_000 - 1,
                nanos: 0,
            }),
        })
        .await
        .expect("rewind");
    let s = stats(&mut client, "q").await;
    assert_eq!((s.active_messages, s.backlog_bytes), (3, 60));

    server.stop().await;
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 60);

    // Delete one for good (rewind off drops the rewindable ones, and their bytes).
    let got = receive(&mut client, "q", 1).await.remove(0);
    delete(&mut client, "q", &got.receipt_handle)
        .await
        .expect("delete");
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, 60);
    update(
        &mut client,
        "q",
        pb::QueueAttributes {
            rewind_seconds: Some(0),
            ..attrs()
        },
    )
    .await;
    let left = 60 - got.body.len() as u64;
    assert_eq!(stats(&mut client, "q").await.backlog_bytes, left);

    server.clock.skip_ahead(Duration::from_secs(3_601));
    let s = stats(&mut client, "q").await;
    assert_eq!((s.active_messages, s.backlog_bytes), (0, 0), "{s:?}");
    // The room is free again.
    send(&mut client, "q", &[4; 1_000]).await;
    server.stop().await;
}

/// After kill -9 the count is what storage holds: the acknowledged sends, and not the refused
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_bytes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "q", quota(100)).await;
    for _ in 0..3 {
        send(&mut client, "q", &[7; 30]).await;
    }
    assert!(try_send(&mut client, "q", &[8; 11]).await.is_err());
    let handle = receive(&mut client, "q", 1).await.remove(0).receipt_handle;
    delete(&mut client, "q", &handle).await.expect("delete");
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let s = stats(&mut client, "q").await;
    assert_eq!((s.active_messages, s.backlog_bytes), (2, 60), "{s:?}");
    send(&mut client, "q", &[9; 40]).await;
    assert!(try_send(&mut client, "q", b"x").await.is_err());
    assert_eq!(server.terminate(), Some(0));
}
