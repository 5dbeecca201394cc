//! Dead-letter queues in cluster mode: a move commits the rows into the dead-letter queue with
//! an entry for its owner, which takes them in (src/cluster/adoption.rs), also when that owner
//! is another replica, and a redrive moves them back the same way.

use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::{self, ChildServer, receive_with};
use crate::harness::{Database, client_of, owner_address, replicas, split};

fn receive_request(queue: &str, wait: u32, visibility: u32) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: 16,
        wait_seconds: Some(wait),
        visibility_timeout_seconds: Some(visibility),
    }
}

/// The replica at `address`.
fn at<'a>(replicas: &'a [ChildServer], address: &str) -> &'a ChildServer {
    split(replicas, address).0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_move_reaches_a_queue_another_replica_owns_and_a_redrive_comes_back() {
    let Some(database) = Database::create("dead_letters").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas(dir.path(), &database.url(), 3);
    let db = database.client().await;
    let mut client = client_of(&replicas[0]).await;
    common::create(&mut client, "dead", pb::QueueAttributes::default()).await;
    let dead_owner = owner_address(&db, "dead").await;
    // A work queue owned by another replica than the dead-letter queue's.
    let mut work = None;
    for index in 0..32 {
        let name = format!("work-{index}");
        common::create(&mut client, &name, pb::QueueAttributes::default()).await;
        if owner_address(&db, &name).await != dead_owner {
            work = Some(name);
            break;
        }
    }
    let work = work.expect("some queue placed on another replica");
    let work_owner = owner_address(&db, &work).await;
    // The policy is set through the replica that owns neither.
    let third = replicas
        .iter()
        .find(|replica| {
            let address = replica.addr.to_string();
            address != dead_owner && address != work_owner
        })
        .expect("a third replica");
    let mut through_third = client_of(third).await;
    through_third
        .update_queue(pb::UpdateQueueRequest {
            queue_name: work.clone(),
            attributes: Some(pb::QueueAttributes {
                dead_letter_policy: Some(pb::DeadLetterPolicy {
                    dead_letter_queue: "dead".into(),
                    max_receive_count: 1,
                    max_time_to_live_seconds: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("a dead-letter policy naming a queue of another replica");
    // Deleting the dead-letter queue is refused while a queue of another replica names it.
    let refused = client_of(at(&replicas, &dead_owner))
        .await
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "dead".into(),
        })
        .await
        .expect_err("a dead-letter target");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let sources = client
        .list_dead_letter_source_queues(pb::ListDeadLetterSourceQueuesRequest {
            queue_name: "dead".into(),
        })
        .await
        .expect("sources")
        .into_inner()
        .queue_names;
    assert_eq!(sources, vec![work.clone()]);

    let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    for body in &bodies {
        common::send(&mut through_third, &work, body).await;
    }
    // Received once and not deleted; once visible again, the next receive moves them.
    let first = receive_with(&mut through_third, receive_request(&work, 5, 1))
        .await
        .expect("receive");
    assert_eq!(first.len(), bodies.len());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = receive_with(&mut through_third, receive_request(&work, 0, 30))
        .await
        .expect("receive");
    assert!(second.is_empty(), "moved, not delivered: {second:?}");

    // Received from the dead-letter queue through a replica that does not own it.
    let mut got = Vec::new();
    let mut from_work_owner = client_of(at(&replicas, &work_owner)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < bodies.len() && tokio::time::Instant::now() < deadline {
        got.extend(
            receive_with(&mut from_work_owner, receive_request("dead", 2, 1))
                .await
                .expect("receive from the dead-letter queue"),
        );
    }
    let mut received: Vec<Vec<u8>> = got.iter().map(|m| m.body.to_vec()).collect();
    received.sort();
    assert_eq!(
        received, bodies,
        "every message in the dead-letter queue, once"
    );
    for message in &got {
        assert_eq!(message.dead_letter_source_queue, work);
        assert_eq!(message.dead_letter_receive_count, 1);
    }
    let stats = common::stats(&mut client, &work).await;
    assert_eq!(
        stats.active_messages + stats.inactive_messages,
        0,
        "{stats:?}"
    );

    // A redrive back to the source: moved from the dead-letter queue's owner into the work
    // queue's, and received there.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let redriven = client
        .redrive_messages(pb::RedriveMessagesRequest {
            queue_name: "dead".into(),
            ..Default::default()
        })
        .await
        .expect("redrive")
        .into_inner();
    assert_eq!(
        redriven.redriven_messages,
        bodies.len() as u64,
        "{redriven:?}"
    );
    let mut back = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while back.len() < bodies.len() && tokio::time::Instant::now() < deadline {
        back.extend(
            receive_with(&mut client, receive_request(&work, 2, 60))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(
        back.len(),
        bodies.len(),
        "every message back in its source queue"
    );
}
