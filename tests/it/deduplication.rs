//! Idempotent sends (issue 16): a send whose deduplication id the queue accepted within its
//! window enqueues nothing and answers the first send's message id; duplicates inside a batch
//! count once; the window survives a crash (kill -9) and a restart.

use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::*;

async fn send_once(
    client: &mut Client,
    queue: &str,
    body: &[u8],
    deduplication_id: &str,
) -> Result<String, tonic::Status> {
    Ok(client
        .send_message(pb::SendMessageRequest {
            queue_name: queue.into(),
            body: body.to_vec().into(),
            deduplication_id: deduplication_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .message_id)
}

fn entry(body: &[u8], deduplication_id: &str) -> pb::BatchSendEntry {
    pb::BatchSendEntry {
        body: body.to_vec().into(),
        deduplication_id: deduplication_id.into(),
        ..Default::default()
    }
}

/// Receives and deletes what is visible; returns the bodies.
async fn bodies(client: &mut Client, queue: &str) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for message in receive(client, queue, 16).await {
        delete(client, queue, &message.receipt_handle)
            .await
            .expect("delete");
        bodies.push(message.body.to_vec());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_enqueues_nothing_and_answers_the_first_id_within_the_window() {
    const QUEUE: &str = "dedup";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let queue = create(&mut client, QUEUE, attrs()).await;
    assert_eq!(
        queue
            .attributes
            .expect("attributes")
            .deduplication_window_seconds,
        Some(300),
        "the default window"
    );
    let first = send_once(&mut client, QUEUE, b"order 1", "order-1")
        .await
        .expect("send");
    let again = send_once(&mut client, QUEUE, b"order 1, retried", "order-1")
        .await
        .expect("duplicate");
    assert_eq!(again, first);
    // Ids are per queue, and a send without one is never a duplicate.
    create(&mut client, "dedup-other", attrs()).await;
    let elsewhere = send_once(&mut client, "dedup-other", b"order 1", "order-1")
        .await
        .expect("another queue");
    assert_ne!(elsewhere, first);
    send(&mut client, QUEUE, b"plain").await;
    send(&mut client, QUEUE, b"plain").await;

    // A batch: its own duplicates count once, and an id accepted before is a duplicate too.
    let ids = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: QUEUE.into(),
            entries: vec![
                entry(b"order 2", "order-2"),
                entry(b"order 1 again", "order-1"),
                entry(b"order 2 again", "order-2"),
                entry(b"order 3", "order-3"),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .message_ids;
    assert_eq!(ids[1], first);
    assert_eq!(ids[2], ids[0]);
    assert!(ids[3] != ids[0] && ids[3] != first);
    assert_eq!(
        bodies(&mut client, QUEUE).await,
        [&b"order 1"[..], b"plain", b"plain", b"order 2", b"order 3"]
    );

    // Still a duplicate once its message was received and deleted.
    let id = send_once(&mut client, QUEUE, b"late", "order-3")
        .await
        .expect("duplicate of a received message");
    assert_eq!(id, ids[3]);

    // Past the window the id is new again.
    server.clock.skip_ahead(Duration::from_secs(301));
    let fresh = send_once(&mut client, QUEUE, b"order 1, a day later", "order-1")
        .await
        .expect("send after the window");
    assert_ne!(fresh, first);
    assert_eq!(
        bodies(&mut client, QUEUE).await,
        [&b"order 1, a day later"[..]]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_is_a_queue_attribute_and_ids_are_validated() {
    const QUEUE: &str = "dedup-window";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        QUEUE,
        pb::QueueAttributes {
            deduplication_window_seconds: Some(0),
            ..Default::default()
        },
    )
    .await;
    // Window 0: deduplication off.
    let a = send_once(&mut client, QUEUE, b"a", "same")
        .await
        .expect("a");
    let b = send_once(&mut client, QUEUE, b"b", "same")
        .await
        .expect("b");
    assert_ne!(a, b);
    let updated = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: QUEUE.into(),
            attributes: Some(pb::QueueAttributes {
                deduplication_window_seconds: Some(86_400),
                ..Default::default()
            }),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        updated
            .attributes
            .expect("attributes")
            .deduplication_window_seconds,
        Some(86_400)
    );
    let c = send_once(&mut client, QUEUE, b"c", "same")
        .await
        .expect("c");
    server.clock.skip_ahead(Duration::from_secs(3_600));
    assert_eq!(
        send_once(&mut client, QUEUE, b"d", "same")
            .await
            .expect("d"),
        c
    );

    let error = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: QUEUE.into(),
            attributes: Some(pb::QueueAttributes {
                deduplication_window_seconds: Some(86_401),
                ..Default::default()
            }),
        })
        .await
        .expect_err("too long a window");
    let text = assert_error(&error, Code::InvalidArgument, 4000);
    assert!(
        text.contains("deduplication_window_seconds") && text.contains("0..=86400"),
        "{text}"
    );
    for bad in ["x".repeat(129), "tab\there".to_string(), "é".to_string()] {
        let error = send_once(&mut client, QUEUE, b"x", &bad)
            .await
            .expect_err("bad id");
        let text = assert_error(&error, Code::InvalidArgument, 4000);
        assert!(
            text.contains("deduplication_id") && text.contains("1..=128 printable ASCII"),
            "{text}"
        );
    }
    let error = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: QUEUE.into(),
            entries: vec![entry(b"ok", "fine"), entry(b"bad", &"y".repeat(200))],
        })
        .await
        .expect_err("bad entry");
    assert!(
        assert_error(&error, Code::InvalidArgument, 4000).contains("entries[1].deduplication_id")
    );
    server.stop().await;
}

/// kill -9 right after an acknowledged send with an id: after the restart, the id is still
/// known (the same message id, nothing enqueued); after another crash too, with the queue's
/// messages all received and deleted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_id_survives_a_crash() {
    const QUEUE: &str = "dedup-crash";
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    let first = send_once(&mut client, QUEUE, b"payment 7", "payment-7")
        .await
        .expect("send");
    let batch = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: QUEUE.into(),
            entries: vec![entry(b"payment 8", "payment-8"), entry(b"payment 9", "")],
        })
        .await
        .expect("batch")
        .into_inner()
        .message_ids;
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(
        send_once(&mut client, QUEUE, b"payment 7, retried", "payment-7")
            .await
            .expect("retry after the crash"),
        first
    );
    assert_eq!(
        send_once(&mut client, QUEUE, b"payment 8, retried", "payment-8")
            .await
            .expect("retry after the crash"),
        batch[0]
    );
    for message in receive(&mut client, QUEUE, 16).await {
        delete(&mut client, QUEUE, &message.receipt_handle)
            .await
            .expect("delete");
    }
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(
        send_once(&mut client, QUEUE, b"payment 7, once more", "payment-7")
            .await
            .expect("retry after the second crash"),
        first
    );
    assert_eq!(stats(&mut client, QUEUE).await.active_messages, 0);
    // Deleting the queue forgets its ids: a queue created again under the name is new.
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: QUEUE.into(),
        })
        .await
        .expect("delete queue");
    create(&mut client, QUEUE, attrs()).await;
    let new = send_once(&mut client, QUEUE, b"payment 7", "payment-7")
        .await
        .expect("send to the new queue");
    assert_ne!(new, first);
    assert_eq!(server.terminate(), Some(0));
}

/// An id accepted again once its window passed is a new message; after a crash a retry still
/// answers that newer message's id, and the stored acceptances past the window are removed
/// (SQLite keeps a row per acceptance; PostgreSQL one per id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_accepted_again_after_its_window_keeps_its_newer_message_across_a_crash() {
    const QUEUE: &str = "dedup-again";
    const WINDOW: Duration = Duration::from_secs(4);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let attributes = pb::QueueAttributes {
        deduplication_window_seconds: Some(WINDOW.as_secs() as u32),
        ..attrs()
    };
    create(&mut client, QUEUE, attributes).await;
    let first = send_once(&mut client, QUEUE, b"order 1", "order-1")
        .await
        .expect("send");
    tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
    let again = send_once(&mut client, QUEUE, b"order 1, later", "order-1")
        .await
        .expect("send again");
    assert_ne!(again, first, "the window had passed: a new message");
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(
        send_once(&mut client, QUEUE, b"order 1, retried", "order-1")
            .await
            .expect("retry after the crash"),
        again
    );
    let queue_id = queue_id(dir.path(), QUEUE);
    let stored = || {
        stored_value(
            dir.path(),
            "SELECT count(*) FROM deduplication WHERE queue_id = ?1",
            "SELECT count(*) FROM {s}.deduplication WHERE queue_id = $1",
            StoredParam::Id(queue_id),
        )
    };
    // Once the newer acceptance's window has passed too, no row is left (ids are forgotten
    // lazily, as the queue does something: here, sends without an id).
    tokio::time::sleep(WINDOW).await;
    let deadline = std::time::Instant::now() + WINDOW * 3;
    while stored() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} deduplication rows left after the window",
            stored()
        );
        send(&mut client, QUEUE, b"a send without an id").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.terminate(), Some(0));
}
