//! Message attributes (issue 16): sent with SendMessage and BatchSendMessages, delivered by
//! receives, consumer streams and peeks, counted toward max_message_size, validated with the
//! field named, stored durably (restart and kill -9) and kept through a rewind.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use spool::pb;
use tonic::Code;

use crate::common::*;

fn attributes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

async fn send_with(
    client: &mut Client,
    queue: &str,
    body: &[u8],
    pairs: &[(&str, &str)],
) -> Result<String, tonic::Status> {
    Ok(client
        .send_message(pb::SendMessageRequest {
            queue_name: queue.into(),
            body: body.to_vec().into(),
            attributes: attributes(pairs),
            ..Default::default()
        })
        .await?
        .into_inner()
        .message_id)
}

async fn peek(client: &mut Client, queue: &str) -> Vec<pb::PeekedMessage> {
    client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: queue.into(),
            max_messages: 16,
        })
        .await
        .expect("peek")
        .into_inner()
        .messages
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_travel_with_their_message_through_every_read() {
    const QUEUE: &str = "attrs";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await;
    let traced = [("traceparent", TRACEPARENT), ("content-type", "text/plain")];
    send_with(&mut client, QUEUE, b"one", &traced)
        .await
        .expect("send");
    client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: QUEUE.into(),
            entries: vec![
                pb::BatchSendEntry {
                    body: b"two".to_vec().into(),
                    attributes: attributes(&[("k.1", "v1")]),
                    ..Default::default()
                },
                pb::BatchSendEntry {
                    body: b"three".to_vec().into(),
                    ..Default::default()
                },
            ],
        })
        .await
        .expect("batch send");

    let peeked = peek(&mut client, QUEUE).await;
    let seen: Vec<_> = peeked
        .iter()
        .map(|m| (m.body.to_vec(), m.attributes.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (b"one".to_vec(), attributes(&traced)),
            (b"two".to_vec(), attributes(&[("k.1", "v1")])),
            (b"three".to_vec(), HashMap::new()),
        ]
    );
    // A receive right after the send (bodies from memory) and after a nack (from storage).
    let first = receive(&mut client, QUEUE, 1).await.remove(0);
    assert_eq!(first.attributes, attributes(&traced));
    client
        .change_message_visibility(pb::ChangeMessageVisibilityRequest {
            queue_name: QUEUE.into(),
            receipt_handle: first.receipt_handle,
            visibility_timeout_seconds: 0,
        })
        .await
        .expect("nack");
    let all = receive(&mut client, QUEUE, 16).await;
    let seen: Vec<_> = all
        .iter()
        .map(|m| (m.body.to_vec(), m.attributes.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (b"one".to_vec(), attributes(&traced)),
            (b"two".to_vec(), attributes(&[("k.1", "v1")])),
            (b"three".to_vec(), HashMap::new()),
        ]
    );

    // A consumer stream delivers them too (it reuses ReceivedMessage).
    send_with(&mut client, QUEUE, b"streamed", &[("a", "b")])
        .await
        .expect("send");
    let start = pb::StreamMessagesRequest {
        kind: Some(pb::stream_messages_request::Kind::Start(pb::StreamStart {
            queue_name: QUEUE.into(),
            ..Default::default()
        })),
    };
    let (requests, outgoing) = tokio::sync::mpsc::channel(1);
    requests.send(start).await.expect("start");
    let mut stream = client
        .stream_messages(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("stream")
        .into_inner();
    let pushed = stream.message().await.expect("push").expect("a message");
    let Some(pb::stream_messages_response::Kind::Message(message)) = pushed.kind else {
        panic!("not a message: {pushed:?}");
    };
    assert_eq!(
        (message.body.to_vec(), message.attributes),
        (b"streamed".to_vec(), attributes(&[("a", "b")]))
    );
    drop(requests);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attributes_are_refused_naming_the_field_and_the_limit() {
    const QUEUE: &str = "attrs-bad";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        QUEUE,
        pb::QueueAttributes {
            max_message_size: Some(1_024),
            ..Default::default()
        },
    )
    .await;
    let seventeen: Vec<(String, String)> = (0..17)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let pairs: Vec<(&str, &str)> = seventeen
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (pairs, "at most 16"),
        (vec![("", "v")], "1..=64"),
        (vec![("sp ace", "v")], "1..=64"),
        (vec![("ключ", "v")], "letters, digits"),
    ];
    for (pairs, limit) in cases {
        let error = send_with(&mut client, QUEUE, b"x", &pairs)
            .await
            .expect_err("refused");
        let text = assert_error(&error, Code::InvalidArgument, 4000);
        assert!(
            text.contains("attributes") && text.contains(limit),
            "{text}"
        );
    }
    let long_key = "k".repeat(65);
    let error = send_with(&mut client, QUEUE, b"x", &[(&long_key, "v")])
        .await
        .expect_err("65-character key");
    assert!(assert_error(&error, Code::InvalidArgument, 4000).contains("1..=64"));

    // Body + keys + values count toward max_message_size: 1000 + 5 + 20 > 1024.
    let value = "v".repeat(20);
    let error = send_with(&mut client, QUEUE, &[7u8; 1000], &[("trace", &value)])
        .await
        .expect_err("too large with its attributes");
    let text = assert_error(&error, Code::InvalidArgument, 4400);
    assert!(
        text.contains("body and attributes") && text.contains("1025") && text.contains("1024"),
        "{text}"
    );
    // 1000 + 5 + 19 = 1024 fits.
    send_with(&mut client, QUEUE, &[7u8; 1000], &[("trace", &value[..19])])
        .await
        .expect("exactly max_message_size");
    // In a batch the entry is named.
    let error = client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: QUEUE.into(),
            entries: vec![
                pb::BatchSendEntry {
                    body: b"ok".to_vec().into(),
                    ..Default::default()
                },
                pb::BatchSendEntry {
                    body: b"bad".to_vec().into(),
                    attributes: attributes(&[("a/b", "v")]),
                    ..Default::default()
                },
            ],
        })
        .await
        .expect_err("bad entry");
    let text = assert_error(&error, Code::InvalidArgument, 4000);
    assert!(text.contains("entries[1].attributes"), "{text}");
    assert_eq!(
        peek(&mut client, QUEUE).await.len(),
        1,
        "the batch enqueued nothing"
    );
    server.stop().await;
}

/// Attributes are stored with the message: they survive kill -9 right after the send's
/// acknowledgement, a graceful restart, and a delete undone by a rewind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_survive_a_crash_and_a_rewind() {
    const QUEUE: &str = "attrs-durable";
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(
        &mut client,
        QUEUE,
        pb::QueueAttributes {
            rewind_seconds: Some(3_600),
            ..Default::default()
        },
    )
    .await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        - 1;
    send_with(&mut client, QUEUE, b"kept", &[("traceparent", TRACEPARENT)])
        .await
        .expect("send");
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let received = receive(&mut client, QUEUE, 1).await.remove(0);
    assert_eq!(
        received.attributes,
        attributes(&[("traceparent", TRACEPARENT)])
    );
    delete(&mut client, QUEUE, &received.receipt_handle)
        .await
        .expect("delete");
    assert_eq!(server.terminate(), Some(0));

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let restored = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: QUEUE.into(),
            start_time: Some(prost_types::Timestamp {
                seconds: before,
                nanos: 0,
            }),
        })
        .await
        .expect("rewind")
        .into_inner()
        .restored_messages;
    assert_eq!(restored, 1);
    let again = receive(&mut client, QUEUE, 1).await.remove(0);
    assert_eq!(
        (again.body.to_vec(), again.attributes),
        (
            b"kept".to_vec(),
            attributes(&[("traceparent", TRACEPARENT)])
        )
    );
    assert_eq!(server.terminate(), Some(0));
}
