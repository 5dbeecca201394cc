//! The lives of ReceiveMessages streams: clients that leave, queues deleted under a poll,
//! shutdown with polls open, bad input that must not hurt the server.

use std::time::{Duration, Instant};

use spool::pb;
use tonic::Code;

use crate::common::*;

fn poll(queue: &str, wait: u32) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: 16,
        wait_seconds: Some(wait),
        visibility_timeout_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_whose_client_left_gives_its_messages_back_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    // A client that opens a poll and goes away (its connection dropped).
    {
        let mut leaver = connect(&server.endpoint()).await;
        let stream = leaver
            .receive_messages(poll("q", 20))
            .await
            .expect("stream");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(stream);
        drop(leaver);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut client, "q", b"for someone present").await;
    // Not stuck in flight for the 30 s visibility timeout of a receiver that is not there.
    let got = receive_with(&mut client, poll("q", 5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dequeue_count, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_ends_its_polls_with_not_found() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut poller = client.clone();
    let waiting = tokio::spawn(async move { receive_with(&mut poller, poll("q", 20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect("delete");
    let status = waiting.await.expect("join").unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_polls_empty_and_ok() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut poller = client.clone();
    let waiting = tokio::spawn(async move { receive_with(&mut poller, poll("q", 30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    server.stop().await;
    let got = waiting.await.expect("join").expect("OK, not an error");
    assert!(got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_drains_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut poller = client.clone();
    let waiting = tokio::spawn(async move { receive_with(&mut poller, poll("q", 30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let code = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    let got = waiting.await.expect("join").expect("OK, not an error");
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_errors_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let huge_name = "x".repeat(100_000);
    let nul_name = "q\0";
    for name in [huge_name.as_str(), nul_name, "q\u{202e}"] {
        let status = client
            .send_message(pb::SendMessageRequest {
                queue_name: name.into(),
                body: vec![1].into(),
                delay_seconds: Some(u32::MAX),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: vec![1].into(),
            delay_seconds: Some(u32::MAX),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "q".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: i64::MIN,
                nanos: -5,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "q".into(),
            attributes: Some(pb::QueueAttributes {
                max_backlog: Some(u64::MAX),
                visibility_timeout_seconds: Some(u32::MAX),
                ..attrs()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for handle in ["", "ffffffffffffffffffffffffffffffff", "💥💥💥💥💥💥💥💥"] {
        let _ = delete(&mut client, "q", handle).await;
    }
    let status = receive_with(
        &mut client,
        pb::ReceiveMessagesRequest {
            queue_name: "q".into(),
            max_messages: u32::MAX,
            wait_seconds: Some(u32::MAX),
            visibility_timeout_seconds: Some(u32::MAX),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // Still serving.
    send(&mut client, "q", b"still here").await;
    assert_eq!(receive(&mut client, "q", 1).await.len(), 1);
    server.stop().await;
}
