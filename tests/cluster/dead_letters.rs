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

/// Sets up `work` (policy: dead-letter after one receive) and `dead` on two different
/// replicas; returns the work queue's name and both owners' addresses.
async fn queues_on_two_replicas(
    replicas: &[ChildServer],
    db: &tokio_postgres::Client,
) -> (String, String, String) {
    let mut client = client_of(&replicas[0]).await;
    common::create(&mut client, "dead", pb::QueueAttributes::default()).await;
    let dead_owner = owner_address(db, "dead").await;
    let policy = pb::QueueAttributes {
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_queue: "dead".into(),
            max_receive_count: 1,
            max_time_to_live_seconds: 0,
        }),
        ..Default::default()
    };
    for index in 0..32 {
        let name = format!("work-{index}");
        common::create(&mut client, &name, policy.clone()).await;
        let owner = owner_address(db, &name).await;
        if owner != dead_owner {
            return (name, owner, dead_owner);
        }
    }
    panic!("no queue placed on another replica than the dead-letter queue's");
}

/// Moves under way while one of the two owners is killed (SIGKILL): every message sent ends
/// in exactly one queue, received once, none lost, none in both.
async fn kill_during_moves(test: &str, kill_target: bool) {
    let Some(database) = Database::create(test).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 3);
    let db = database.client().await;
    let (work, work_owner, dead_owner) = queues_on_two_replicas(&replicas, &db).await;
    let killed = if kill_target {
        &dead_owner
    } else {
        &work_owner
    };
    // Calls go through the replica that is neither.
    let survivor = replicas
        .iter()
        .position(|r| {
            let address = r.addr.to_string();
            address != dead_owner && address != work_owner
        })
        .expect("a third replica");
    let mut client = client_of(&replicas[survivor]).await;
    let sent: Vec<Vec<u8>> = (0..96).map(|i| format!("m{i:03}").into_bytes()).collect();
    for chunk in sent.chunks(16) {
        let bodies: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        common::batch_send(&mut client, &work, &bodies).await;
    }
    // Each received once (not deleted), in groups of 8 whose visibility timeouts end a second
    // apart: the next receive after its timeout moves a group, so moves go on for 12 s.
    let groups = sent.len() / 8;
    for group in 0..groups {
        let mut request = receive_request(&work, 2, group as u32 + 1);
        request.max_messages = 8;
        let received = receive_with(&mut client, request).await.expect("receive");
        assert_eq!(received.len(), 8);
    }
    let index = replicas
        .iter()
        .position(|r| r.addr.to_string() == *killed)
        .expect("the owner");
    let mover = {
        let mut client = client_of(&replicas[survivor]).await;
        let work = work.clone();
        tokio::spawn(async move {
            // Refused (UNAVAILABLE) while the work queue moves, when its owner is the one
            // killed. Delivered rather than moved: see below; taken (deleted) and counted.
            let mut delivered_here = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_secs(groups as u64 + 2);
            while tokio::time::Instant::now() < until {
                if let Ok(delivered) =
                    receive_with(&mut client, receive_request(&work, 0, 60)).await
                {
                    for message in delivered {
                        common::delete(&mut client, &work, &message.receipt_handle)
                            .await
                            .expect("delete");
                        delivered_here.push(message.body.to_vec());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            delivered_here
        })
    };
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    replicas.remove(index).kill();
    let moved_at_kill = rows_in(&db, "dead").await;
    let delivered_from_work = mover.await.expect("the mover");
    eprintln!(
        "{test}: {moved_at_kill} of {} messages moved when the {} owner was killed",
        sent.len(),
        if kill_target {
            "dead-letter queue's"
        } else {
            "work queue's"
        }
    );

    // After the failover: move what is left and take everything from both queues, deleting
    // each. A message can be delivered from the work queue rather than moved when its owner
    // died before it wrote the receive down (receive counts are written lazily): it is in
    // exactly one queue all the same.
    let survivor = replicas
        .iter()
        .position(|r| r.addr.to_string() != *killed)
        .expect("a replica left");
    let mut client = client_of(&replicas[survivor]).await;
    let mut got: Vec<Vec<u8>> = delivered_from_work;
    if kill_target {
        assert!(got.is_empty(), "moved, not delivered: {got:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < sent.len() && tokio::time::Instant::now() < deadline {
        for (queue, wait) in [(work.as_str(), 0), ("dead", 1)] {
            let Ok(messages) = receive_with(&mut client, receive_request(queue, wait, 60)).await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for message in messages {
                if queue == "dead" {
                    assert_eq!(message.dead_letter_source_queue, work);
                }
                got.push(message.body.to_vec());
                let deleted = common::delete(&mut client, queue, &message.receipt_handle).await;
                deleted.expect("delete");
            }
        }
    }
    let mut sorted = got.clone();
    sorted.sort();
    let mut distinct = sorted.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        sorted.len(),
        "a message received twice: {got:?}"
    );
    assert_eq!(
        sorted, sent,
        "every message sent is in one of the queues, once"
    );
    for queue in [work.as_str(), "dead"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let left = loop {
            match receive_with(&mut client, receive_request(queue, 1, 60)).await {
                Ok(left) => break left,
                // Still moving to a new owner.
                Err(status) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("{queue} not served again: {status:?}"),
            }
        };
        assert!(left.is_empty(), "nothing more in {queue}: {left:?}");
    }
    // Every entry of a moved message was taken in or forgotten by a takeover.
    let pending: i64 = db
        .query_one("SELECT count(*) FROM spool.pending_adoptions", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 0, "entries left in pending_adoptions");
}

/// The rows of the queue `name` in PostgreSQL.
async fn rows_in(db: &tokio_postgres::Client, name: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM spool.messages m JOIN spool.queues q ON q.id = m.queue_id
          WHERE q.name = $1",
        &[&name],
    )
    .await
    .expect("count")
    .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_queues_owner_killed_during_moves_loses_nothing() {
    kill_during_moves("kill_dead_owner", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_source_queues_owner_killed_during_moves_loses_nothing() {
    kill_during_moves("kill_work_owner", false).await;
}
