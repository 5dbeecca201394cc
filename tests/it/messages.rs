//! Sending, receiving and deleting messages over gRPC.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use spool::pb;
use tonic::Code;

use crate::common::*;

fn receive_request(queue: &str, max: u32, wait: Option<u32>) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: max,
        wait_seconds: wait,
        visibility_timeout_seconds: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_delete_round_trip_is_binary_safe() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let body: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let id = send(&mut client, "q", &body).await;
    assert!(!id.is_empty());
    let stats = stats(&mut client, "q").await;
    assert_eq!(stats.active_messages, 1);
    assert!(stats.oldest_message_time.is_some());

    let got = receive(&mut client, "q", 0).await; // 0 means 1
    assert_eq!(got.len(), 1);
    let message = &got[0];
    assert_eq!(message.message_id, id);
    assert_eq!(&message.body[..], &body[..]);
    assert_eq!(message.dequeue_count, 1);
    assert!(message.enqueue_time.is_some() && message.first_dequeue_time.is_some());
    let next_visible = message.next_visible_time.expect("next visible");
    let first_dequeue = message.first_dequeue_time.expect("first dequeue");
    assert_eq!(next_visible.seconds - first_dequeue.seconds, 30);

    let stats_now = crate::common::stats(&mut client, "q").await;
    assert_eq!(
        (stats_now.active_messages, stats_now.inactive_messages),
        (0, 1)
    );
    delete(&mut client, "q", &message.receipt_handle)
        .await
        .expect("delete");
    // Deleting again is a safe retry.
    delete(&mut client, "q", &message.receipt_handle)
        .await
        .expect("retry");
    let stats_now = crate::common::stats(&mut client, "q").await;
    assert_eq!(stats_now, pb::QueueStats::default());
    assert!(receive(&mut client, "q", 16).await.is_empty());
    server.stop().await;
}

/// Bodies not received yet are kept in memory within a byte budget; those beyond it, and every
/// later receive, are read from storage. Either way each message gets its own body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_come_back_whether_kept_in_memory_or_read_from_storage() {
    let entry = spool::BODY_CACHE_ENTRY_OVERHEAD;
    // Room for two bodies of 100 bytes: the batch's other three are read from storage.
    let server = TestServer::start_with(move |config| {
        config.settings.body_cache_bytes = Some(2 * (100 + entry))
    })
    .await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let ids = batch_send(&mut client, "q", &refs).await;

    let first = receive(&mut client, "q", 16).await;
    let got: Vec<(String, Vec<u8>)> = first
        .iter()
        .map(|m| (m.message_id.clone(), m.body.to_vec()))
        .collect();
    let expected: Vec<(String, Vec<u8>)> = ids.iter().cloned().zip(bodies.clone()).collect();
    assert_eq!(got, expected);

    // After the visibility timeout, the second receive reads every body from storage.
    server.clock.skip_ahead(Duration::from_secs(31));
    let again = receive(&mut client, "q", 16).await;
    let got: Vec<(String, Vec<u8>)> = again
        .iter()
        .map(|m| (m.message_id.clone(), m.body.to_vec()))
        .collect();
    assert_eq!(got, expected);
    assert!(again.iter().all(|m| m.dequeue_count == 2));
    server.stop().await;
}

/// A backlog whose bodies are not in memory (here: sent with the cache off, then the server
/// restarted with it on) is read ahead from storage in blocks while it is received: every
/// message still gets its own body, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_ahead_from_storage_keeps_each_body_with_its_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |config| {
        config.settings.body_cache_bytes = Some(0)
    })
    .await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut sent = Vec::new();
    for batch in 0..40 {
        let bodies: Vec<Vec<u8>> = (0..16)
            .map(|i| format!("b{batch}-m{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let ids = batch_send(&mut client, "q", &refs).await;
        sent.extend(ids.into_iter().zip(bodies));
    }
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let mut received = Vec::new();
    loop {
        let got = receive(&mut client, "q", 16).await;
        if got.is_empty() {
            break;
        }
        received.extend(got.into_iter().map(|m| (m.message_id, m.body.to_vec())));
    }
    assert_eq!(received.len(), sent.len());
    assert!(
        received == sent,
        "bodies or order differ after the read-ahead"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_validates_body_and_delay() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            max_message_size: Some(1_024),
            message_retention_seconds: Some(600),
            ..attrs()
        },
    )
    .await;
    let attempt = |body: Vec<u8>, delay: Option<u32>| pb::SendMessageRequest {
        queue_name: "q".into(),
        body: body.into(),
        delay_seconds: delay,
        ..Default::default()
    };
    let status = client
        .send_message(attempt(vec![], None))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(message.contains("body"), "{message}");
    let status = client
        .send_message(attempt(vec![1; 1_025], None))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4400);
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );
    client
        .send_message(attempt(vec![1; 1_024], None))
        .await
        .expect("exactly the max size");
    let status = client
        .send_message(attempt(vec![1], Some(601)))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(
        message.contains("delay_seconds") && message.contains("600"),
        "{message}"
    );
    client
        .send_message(attempt(vec![1], Some(600)))
        .await
        .expect("delay of the whole retention");
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "missing".into(),
            body: vec![1].into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    let stats = stats(&mut client, "q").await;
    assert_eq!((stats.active_messages, stats.delayed_messages), (1, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_send_is_all_or_nothing_with_per_entry_delay() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            max_message_size: Some(1_024),
            ..attrs()
        },
    )
    .await;
    let entry = |body: Vec<u8>, delay: Option<u32>| pb::BatchSendEntry {
        body: body.into(),
        delay_seconds: delay,
        ..Default::default()
    };
    let batch = |entries: Vec<pb::BatchSendEntry>| pb::BatchSendMessagesRequest {
        queue_name: "q".into(),
        entries,
    };
    let status = client.batch_send_messages(batch(vec![])).await.unwrap_err();
    assert_error(&status, Code::InvalidArgument, 4000);
    let status = client
        .batch_send_messages(batch((0..17).map(|_| entry(vec![1], None)).collect()))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4400);
    assert!(
        message.contains("entries") && message.contains("16"),
        "{message}"
    );
    // One entry too large rejects the whole batch.
    let status = client
        .batch_send_messages(batch(vec![
            entry(vec![1], None),
            entry(vec![2; 2_000], None),
            entry(vec![3], None),
        ]))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4400);
    assert!(message.contains("entries[1].body"), "{message}");
    let status = client
        .batch_send_messages(batch(vec![entry(vec![1], None), entry(vec![], None)]))
        .await
        .unwrap_err();
    assert!(status.message().contains("entries[1].body"));
    assert_eq!(stats(&mut client, "q").await, pb::QueueStats::default());

    let ids = client
        .batch_send_messages(batch(vec![
            entry(b"now".to_vec(), None),
            entry(b"later".to_vec(), Some(1)),
            entry(b"also now".to_vec(), Some(0)),
        ]))
        .await
        .expect("batch")
        .into_inner()
        .message_ids;
    assert_eq!(ids.len(), 3);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);
    let stats_now = stats(&mut client, "q").await;
    assert_eq!(
        (stats_now.active_messages, stats_now.delayed_messages),
        (2, 1)
    );
    let got = receive(&mut client, "q", 16).await;
    assert_eq!(
        got.iter().map(|m| &m.body[..]).collect::<Vec<_>>(),
        [&b"now"[..], &b"also now"[..]]
    );
    // The delayed one arrives when its delay ends: the server's clock is moved past it rather
    // than waited for (the queue actor's unit tests wake a long poll with the delay's timer).
    server.clock.skip_ahead(Duration::from_secs(1));
    let got = receive(&mut client, "q", 16).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"later");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batch_of_largest_bodies_is_accepted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "big",
        pb::QueueAttributes {
            max_message_size: Some(1_048_576),
            ..attrs()
        },
    )
    .await;
    let entries = (0..16u8)
        .map(|i| pb::BatchSendEntry {
            body: vec![i; 1_048_576].into(),
            delay_seconds: None,
            ..Default::default()
        })
        .collect();
    let ids = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: "big".into(),
            entries,
        })
        .await
        .expect("16 x 1 MiB")
        .into_inner()
        .message_ids;
    assert_eq!(ids.len(), 16);
    let got = receive(&mut client, "big", 16).await;
    assert_eq!(got.len(), 16);
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.body.len(), 1_048_576);
        assert!(message.body.iter().all(|&b| b == i as u8));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_cap_refuses_sends() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            max_backlog: Some(3),
            ..attrs()
        },
    )
    .await;
    batch_send(&mut client, "q", &[b"1", b"2"]).await;
    let status = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: "q".into(),
            entries: vec![
                pb::BatchSendEntry {
                    body: vec![3].into(),
                    delay_seconds: None,
                    ..Default::default()
                };
                2
            ],
        })
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::ResourceExhausted, 4410);
    assert!(message.contains("max_backlog"), "{message}");
    send_delayed(&mut client, "q", b"3", 60).await;
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: vec![4].into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::ResourceExhausted, 4410);
    // In-flight messages count too; deleting one makes room.
    let got = receive(&mut client, "q", 1).await;
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: vec![4].into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    delete(&mut client, "q", &got[0].receipt_handle)
        .await
        .expect("delete");
    send(&mut client, "q", b"4").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_validates_its_parameters() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let cases = [
        (receive_request("q", 17, None), "max_messages"),
        (receive_request("q", 1, Some(31)), "wait_seconds"),
        (
            pb::ReceiveMessagesRequest {
                visibility_timeout_seconds: Some(0),
                ..receive_request("q", 1, None)
            },
            "visibility_timeout_seconds",
        ),
        (
            pb::ReceiveMessagesRequest {
                visibility_timeout_seconds: Some(43_201),
                ..receive_request("q", 1, None)
            },
            "visibility_timeout_seconds",
        ),
    ];
    for (request, field) in cases {
        let status = receive_with(&mut client, request).await.unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(message.contains(field), "{message}");
    }
    let status = receive_with(&mut client, receive_request("missing", 1, None))
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_returns_what_is_visible_at_once_oldest_first() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            polling_wait_seconds: Some(10),
            ..attrs()
        },
    )
    .await;
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    for body in &bodies {
        send(&mut client, "q", body).await;
    }
    // Fewer visible than asked: returns at once, it never waits to fill the batch.
    let started = Instant::now();
    let got = receive_with(&mut client, receive_request("q", 16, None))
        .await
        .expect("receive");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        got.iter().map(|m| m.body.to_vec()).collect::<Vec<_>>(),
        bodies
    );
    let handles: HashSet<_> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    assert_eq!(handles.len(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_send_and_ends_empty_after_the_wait() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;

    // Nothing arrives: the stream ends OK and empty after the wait.
    let started = Instant::now();
    let got = receive_with(&mut client, receive_request("q", 1, Some(1)))
        .await
        .expect("empty is OK");
    let waited = started.elapsed();
    assert!(got.is_empty());
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // wait_seconds 0 (and the queue's default of 0) does not wait.
    let started = Instant::now();
    assert!(
        receive_with(&mut client, receive_request("q", 1, None))
            .await
            .expect("no wait")
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_millis(900));

    // A send wakes a waiting poll.
    let mut poller = client.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let got = receive_with(&mut poller, receive_request("q", 16, Some(20)))
            .await
            .expect("poll");
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut client, "q", b"wake").await;
    let (got, waited) = poll.await.expect("join");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].body[..], b"wake");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_ends_ok_before_the_client_deadline() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut request = tonic::Request::new(receive_request("q", 1, Some(30)));
    request.set_timeout(Duration::from_millis(1_500));
    let started = Instant::now();
    let mut stream = client
        .receive_messages(request)
        .await
        .expect("stream")
        .into_inner();
    let next = stream.message().await;
    assert!(matches!(next, Ok(None)), "{next:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_000), "{waited:?}");
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let mut polls = Vec::new();
    for i in 0..3 {
        let mut poller = client.clone();
        polls.push(tokio::spawn(async move {
            let got = receive_with(&mut poller, receive_request("q", 1, Some(20)))
                .await
                .expect("poll");
            (i, got)
        }));
        // Let each poll register before the next one.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for body in [b"first", b"secnd", b"third"] {
        send(&mut client, "q", body).await;
    }
    let mut results = Vec::new();
    for poll in polls {
        results.push(poll.await.expect("join"));
    }
    let expected: [&[u8]; 3] = [b"first", b"secnd", b"third"];
    for (i, got) in results {
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], expected[i], "poll {i}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_timeout_redelivers_with_a_new_handle() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        pb::QueueAttributes {
            visibility_timeout_seconds: Some(1),
            ..attrs()
        },
    )
    .await;
    send(&mut client, "q", b"m").await;
    let first = receive(&mut client, "q", 1).await.remove(0);
    assert!(
        receive(&mut client, "q", 1).await.is_empty(),
        "invisible while in flight"
    );

    // Delivered again once the visibility timeout ends: the server's clock is moved past it
    // rather than waited for (the queue actor's unit tests wake a long poll with that timer).
    server.clock.skip_ahead(Duration::from_secs(1));
    let second = receive(&mut client, "q", 1).await.remove(0);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.dequeue_count, 2);
    assert_eq!(second.first_dequeue_time, first.first_dequeue_time);
    assert_ne!(second.receipt_handle, first.receipt_handle);

    // The superseded handle is refused; the newest works.
    let status = delete(&mut client, "q", &first.receipt_handle)
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, 4430);
    delete(&mut client, "q", &second.receipt_handle)
        .await
        .expect("newest handle");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_visibility_override_and_expired_handle() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"m").await;
    let got = receive_with(
        &mut client,
        pb::ReceiveMessagesRequest {
            visibility_timeout_seconds: Some(1),
            ..receive_request("q", 1, Some(0))
        },
    )
    .await
    .expect("receive")
    .remove(0);
    let next = got.next_visible_time.expect("next visible");
    let first = got.first_dequeue_time.expect("first dequeue");
    let millis = |t: prost_types::Timestamp| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000;
    assert_eq!(millis(next) - millis(first), 1_000);
    server.clock.skip_ahead(Duration::from_secs(1));
    // Expired, even before anyone received it again.
    let status = delete(&mut client, "q", &got.receipt_handle)
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::FailedPrecondition, 4430);
    assert!(message.contains("expired"), "{message}");
    assert_eq!(stats(&mut client, "q").await.active_messages, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_refuses_malformed_and_reports_batch_failures() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let status = delete(&mut client, "q", "not-a-handle").await.unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(message.contains("receipt_handle"), "{message}");

    batch_send(&mut client, "q", &[b"a", b"b", b"c"]).await;
    let got = receive(&mut client, "q", 3).await;
    // A handle of message "c" with one character changed: its signature no longer matches.
    let forged = {
        let mut text = got[2].receipt_handle.clone().into_bytes();
        text[20] = if text[20] == b'A' { b'B' } else { b'A' };
        String::from_utf8(text).expect("ascii")
    };
    let response = client
        .batch_delete_messages(pb::BatchDeleteMessagesRequest {
            queue_name: "q".into(),
            receipt_handles: vec![
                got[0].receipt_handle.clone(),
                "garbage".into(),
                forged.clone(),
                got[1].receipt_handle.clone(),
                got[0].receipt_handle.clone(), // a retry in the same batch is fine
            ],
        })
        .await
        .expect("batch delete")
        .into_inner();
    assert_eq!(response.failures.len(), 2, "{:?}", response.failures);
    assert_eq!(response.failures[0].receipt_handle, "garbage");
    assert_eq!(response.failures[0].code, Code::InvalidArgument as i32);
    assert_eq!(response.failures[0].cmq_code, 4000);
    assert!(response.failures[0].message.contains("receipt_handles[1]"));
    assert_eq!(response.failures[1].receipt_handle, forged);
    assert_eq!(response.failures[1].code, Code::InvalidArgument as i32);
    assert_eq!(response.failures[1].cmq_code, 4000);
    assert!(
        response.failures[1]
            .message
            .contains("receipt_handles[2] was not issued by this server"),
        "{}",
        response.failures[1].message
    );
    let stats = stats(&mut client, "q").await;
    assert_eq!((stats.active_messages, stats.inactive_messages), (0, 1));

    for count in [0, 17] {
        let status = client
            .batch_delete_messages(pb::BatchDeleteMessagesRequest {
                queue_name: "q".into(),
                receipt_handles: vec![got[2].receipt_handle.clone(); count],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("receipt_handles"));
    }
    server.stop().await;
}
