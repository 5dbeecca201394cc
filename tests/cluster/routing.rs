//! Every kind of call, sent to a replica that does not own the queue, is answered as the owner
//! answers it; forwarded calls carry the caller's credentials and grant nothing more.

use std::time::Duration;

use sha2::{Digest, Sha256};
use spool::pb;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::common::{self, ChildServer, receive_with};
use crate::harness::{Database, client_of, owner_address, replica, replicas, split};

#[tokio::test(flavor = "multi_thread")]
async fn every_call_works_through_a_replica_that_does_not_own_the_queue() {
    let Some(database) = Database::create("routing").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas(dir.path(), &database.url(), 3);
    let queue = "orders";
    let mut first = client_of(&replicas[0]).await;
    let created = common::create(
        &mut first,
        queue,
        pb::QueueAttributes {
            rewind_seconds: Some(600),
            visibility_timeout_seconds: Some(30),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(created.name, queue);
    let db = database.client().await;
    let owner = owner_address(&db, queue).await;
    let (_, others) = split(&replicas, &owner);
    let mut client = client_of(others[0]).await;
    let mut other = client_of(others[1]).await;

    // Creating it again through a non-owner is the same queue.
    let again = common::create(
        &mut client,
        queue,
        pb::QueueAttributes {
            rewind_seconds: Some(600),
            visibility_timeout_seconds: Some(30),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(again.create_time, created.create_time);

    let first_id = common::send(&mut client, queue, b"one").await;
    let batch = common::batch_send(&mut other, queue, &[b"two", b"three"]).await;
    assert_eq!(batch.len(), 2);
    assert_eq!(common::stats(&mut client, queue).await.active_messages, 3);

    let peeked = client
        .peek_messages(pb::PeekMessagesRequest {
            queue_name: queue.into(),
            max_messages: 16,
        })
        .await
        .expect("peek")
        .into_inner();
    assert_eq!(peeked.messages.len(), 3);

    // A long poll through a non-owner is served when a send arrives through another.
    let mut poller = client_of(others[0]).await;
    let purge_target = common::create(&mut other, "empty-then-one", common::attrs()).await;
    let long_poll = tokio::spawn(async move {
        receive_with(
            &mut poller,
            pb::ReceiveMessagesRequest {
                queue_name: purge_target.name,
                max_messages: 1,
                wait_seconds: Some(10),
                visibility_timeout_seconds: None,
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::send(&mut other, "empty-then-one", b"wake").await;
    let woken = long_poll.await.expect("join").expect("long poll");
    assert_eq!(woken.len(), 1);
    assert_eq!(&woken[0].body[..], b"wake");

    let received = common::receive(&mut client, queue, 3).await;
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].message_id, first_id);
    let changed = other
        .change_message_visibility(pb::ChangeMessageVisibilityRequest {
            queue_name: queue.into(),
            receipt_handle: received[1].receipt_handle.clone(),
            visibility_timeout_seconds: 0,
        })
        .await
        .expect("change visibility")
        .into_inner();
    assert!(changed.next_visible_time.is_some());
    let batch_changed = client
        .batch_change_message_visibility(pb::BatchChangeMessageVisibilityRequest {
            queue_name: queue.into(),
            entries: vec![pb::ChangeVisibilityEntry {
                receipt_handle: received[2].receipt_handle.clone(),
                visibility_timeout_seconds: 60,
            }],
        })
        .await
        .expect("batch change visibility")
        .into_inner();
    assert_eq!(batch_changed.changed.len(), 1);
    common::delete(&mut client, queue, &received[0].receipt_handle)
        .await
        .expect("delete through a non-owner");
    // The message made visible again is received anew; its old handle is stale, through a
    // non-owner as on the owner.
    let again = common::receive(&mut other, queue, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, received[1].message_id);
    let stale = common::delete(&mut other, queue, &received[1].receipt_handle)
        .await
        .expect_err("superseded handle");
    common::assert_error(&stale, Code::FailedPrecondition, 4430);
    let deleted = client
        .batch_delete_messages(pb::BatchDeleteMessagesRequest {
            queue_name: queue.into(),
            receipt_handles: again.iter().map(|m| m.receipt_handle.clone()).collect(),
        })
        .await
        .expect("batch delete")
        .into_inner();
    assert!(deleted.failures.is_empty(), "{deleted:?}");

    // A consumer stream through a non-owner: messages pushed, acknowledged on the stream.
    common::batch_send(&mut other, queue, &[b"s1", b"s2"]).await;
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::StreamMessagesRequest {
            kind: Some(pb::stream_messages_request::Kind::Start(pb::StreamStart {
                queue_name: queue.into(),
                max_outstanding_messages: 10,
                visibility_timeout_seconds: None,
            })),
        })
        .await
        .expect("start");
    let mut responses = client
        .stream_messages(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("stream through a non-owner")
        .into_inner();
    let mut handles = Vec::new();
    while handles.len() < 2 {
        match responses
            .message()
            .await
            .expect("pushed")
            .expect("open")
            .kind
        {
            Some(pb::stream_messages_response::Kind::Message(message)) => {
                handles.push(message.receipt_handle)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    requests
        .send(pb::StreamMessagesRequest {
            kind: Some(pb::stream_messages_request::Kind::Acknowledge(
                pb::StreamAcknowledge {
                    ack_id: 7,
                    receipt_handles: handles,
                },
            )),
        })
        .await
        .expect("acknowledge");
    match responses
        .message()
        .await
        .expect("answer")
        .expect("open")
        .kind
    {
        Some(pb::stream_messages_response::Kind::Acknowledged(acknowledged)) => {
            assert_eq!(acknowledged.ack_id, 7);
            assert!(acknowledged.failures.is_empty(), "{acknowledged:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(requests);
    drop(responses);

    let rewound = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: queue.into(),
            start_time: Some(prost_types::Timestamp {
                seconds: created.create_time.as_ref().expect("create time").seconds - 1,
                nanos: 0,
            }),
        })
        .await
        .expect("rewind")
        .into_inner();
    assert!(rewound.restored_messages >= 1, "{rewound:?}");

    let purged = other
        .purge_queue(pb::PurgeQueueRequest {
            queue_name: queue.into(),
        })
        .await
        .expect("purge")
        .into_inner();
    assert!(purged.purged_messages >= 1);

    let updated = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: queue.into(),
            attributes: Some(pb::QueueAttributes {
                max_backlog: Some(1_000),
                ..Default::default()
            }),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.attributes.and_then(|a| a.max_backlog), Some(1_000));

    // Every replica lists every queue, whoever owns it.
    for replica in &replicas {
        let listed = client_of(replica)
            .await
            .list_queues(pb::ListQueuesRequest::default())
            .await
            .expect("list")
            .into_inner();
        let names: Vec<_> = listed.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["empty-then-one", "orders"]);
        assert_eq!(listed.total_count, 2);
    }
    let paged = client
        .list_queues(pb::ListQueuesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list a page")
        .into_inner();
    assert_eq!(paged.queues.len(), 1);
    assert_eq!(paged.next_page_token, "empty-then-one");

    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: queue.into(),
        })
        .await
        .expect("delete queue through a non-owner");
    for replica in &replicas {
        let status = client_of(replica)
            .await
            .get_queue(pb::GetQueueRequest {
                queue_name: queue.into(),
            })
            .await
            .expect_err("deleted");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // An unknown queue is NOT_FOUND everywhere, not UNAVAILABLE.
    let status = other
        .send_message(pb::SendMessageRequest {
            queue_name: "never-made".into(),
            body: b"x".to_vec().into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .expect_err("no such queue");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_calls_are_authorized_by_the_callers_own_grants() {
    let Some(database) = Database::create("routing_auth").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principals]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\n\
             [[principals.grants]]\nqueues = \"*\"\nactions = [\"send\", \"receive\", \"admin\"]\n\n\
             [[principals]]\nname = \"sender\"\ntoken_sha256 = \"{}\"\n\
             [[principals.grants]]\nqueues = \"a-*\"\nactions = [\"send\"]\n",
            sha256_hex("admin-token"),
            sha256_hex("sender-token")
        ),
    )
    .expect("auth file");
    let auth = auth.to_str().expect("utf-8").to_string();
    let replicas: Vec<ChildServer> = (0..3)
        .map(|index| {
            replica(
                &dir.path().join(format!("replica-{index}")),
                &database.url(),
                &["--auth-file", &auth],
            )
        })
        .collect();
    // Every replica has seen the others (see `harness::replicas`).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut admin = client_of(&replicas[0]).await;
    for name in ["a-1", "b-1"] {
        admin
            .create_queue(with_token(
                pb::CreateQueueRequest {
                    queue_name: name.into(),
                    attributes: None,
                },
                "admin-token",
            ))
            .await
            .expect("create");
    }
    let db = database.client().await;
    for name in ["a-1", "b-1"] {
        let owner = owner_address(&db, name).await;
        let (_, others) = split(&replicas, &owner);
        let mut client = client_of(others[0]).await;
        let send = |token: Option<&str>| {
            let message = pb::SendMessageRequest {
                queue_name: name.into(),
                body: b"x".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            };
            match token {
                Some(token) => with_token(message, token),
                None => Request::new(message),
            }
        };
        let sent = client.send_message(send(Some("sender-token"))).await;
        if name == "a-1" {
            sent.expect("the sender may send to a-*, through a non-owner");
        } else {
            assert_eq!(
                sent.expect_err("not granted").code(),
                Code::PermissionDenied
            );
        }
        let unauthenticated = client.send_message(send(None)).await.expect_err("no token");
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
        let forged = client
            .send_message(send(Some("forged-token")))
            .await
            .expect_err("unknown token");
        assert_eq!(forged.code(), Code::Unauthenticated);
        // The sender may not receive, even though the owner is reached through a forward.
        let receive = with_token(
            pb::ReceiveMessagesRequest {
                queue_name: name.into(),
                max_messages: 1,
                wait_seconds: Some(0),
                visibility_timeout_seconds: None,
            },
            "sender-token",
        );
        let status = client
            .receive_messages(receive)
            .await
            .expect_err("not granted");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // The sender lists only what it sees, gathered from every replica.
    let listed = client_of(&replicas[1])
        .await
        .list_queues(with_token(pb::ListQueuesRequest::default(), "sender-token"))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = listed.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a-1"]);
}
