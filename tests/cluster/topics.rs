//! Topics in cluster mode: any replica serves the topic API, reading topics and subscriptions
//! from PostgreSQL for each call; a publish commits every copy in one transaction, those for
//! queues other replicas own with `pending_adoptions` entries their owners take in (see
//! src/topic/mod.rs and src/cluster/adoption.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::{self, Client, receive_with};
use crate::harness::{Database, client_of, owner_address, replicas};

/// Creates queues `prefix-0`, `prefix-1`, … until `wanted` of them have different owners:
/// the first queue of each owner, with its owner's address.
async fn queues_on_owners(
    client: &mut Client,
    db: &tokio_postgres::Client,
    prefix: &str,
    wanted: usize,
    attributes: pb::QueueAttributes,
) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for index in 0..64 {
        let name = format!("{prefix}-{index}");
        common::create(client, &name, attributes.clone()).await;
        let owner = owner_address(db, &name).await;
        if found.iter().all(|(_, seen)| *seen != owner) {
            found.push((name, owner));
            if found.len() == wanted {
                return found;
            }
        }
    }
    panic!("fewer than {wanted} owners among the queues");
}

/// Retries `call` while it answers UNAVAILABLE, as the API asks (a replica's read of the topics
/// in PostgreSQL can time out on a loaded machine), up to 20 times.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    for _ in 0..20 {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => panic!("{what}: {status:?}"),
        }
    }
    panic!("{what}: UNAVAILABLE 20 times");
}

async fn create_topic(client: &mut Client, name: &str) {
    retrying(&format!("create topic {name}"), || {
        let mut client = client.clone();
        let request = pb::CreateTopicRequest {
            topic_name: name.into(),
            attributes: None,
        };
        async move { client.create_topic(request).await }
    })
    .await;
}

async fn subscribe(client: &mut Client, topic: &str, name: &str, queue: &str, tags: &[&str]) {
    retrying(&format!("subscribe {name} to {queue}"), || {
        let mut client = client.clone();
        let request = pb::SubscribeRequest {
            topic_name: topic.into(),
            subscription_name: name.into(),
            queue_name: queue.into(),
            filter_tags: tags.iter().map(|tag| tag.to_string()).collect(),
            binding_keys: Vec::new(),
        };
        async move { client.subscribe(request).await }
    })
    .await;
}

fn publish(
    topic: &str,
    body: &[u8],
    tags: &[&str],
    deduplication_id: &str,
) -> pb::PublishMessageRequest {
    pb::PublishMessageRequest {
        topic_name: topic.into(),
        body: body.to_vec().into(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        deduplication_id: deduplication_id.into(),
        ..Default::default()
    }
}

async fn subscription_names(client: &mut Client, topic: &str) -> Vec<String> {
    client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            topic_name: topic.into(),
            ..Default::default()
        })
        .await
        .expect("list subscriptions")
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|subscription| subscription.name)
        .collect()
}

/// Receives and deletes everything in `queue` until it has been empty for a while (retrying
/// while the queue moves to a new owner), as (body, message id, source topic).
async fn drain(
    client: &mut Client,
    queue: &str,
    limit: Duration,
) -> Vec<(Vec<u8>, String, String)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut empty_rounds = 0;
    loop {
        if empty_rounds >= 3 {
            // Empty polls are not enough: a receive forwarded to the owner can claim messages
            // and lose its answer (a deadline passing under load), leaving them in flight until
            // their visibility timeout. Done only when the queue holds nothing at all.
            match client
                .get_queue(pb::GetQueueRequest {
                    queue_name: queue.into(),
                })
                .await
            {
                Ok(queue) => {
                    let stats = queue.into_inner().stats.expect("stats");
                    if stats.active_messages + stats.inactive_messages + stats.delayed_messages == 0
                    {
                        break;
                    }
                    empty_rounds = 0;
                }
                Err(status) => assert_eq!(status.code(), Code::Unavailable, "{queue}: {status:?}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} not drained within {limit:?}"
        );
        let request = pb::ReceiveMessagesRequest {
            queue_name: queue.into(),
            max_messages: 16,
            wait_seconds: Some(1),
            visibility_timeout_seconds: Some(10),
        };
        match receive_with(client, request).await {
            Ok(messages) if messages.is_empty() => empty_rounds += 1,
            Ok(messages) => {
                empty_rounds = 0;
                for message in messages {
                    common::delete(client, queue, &message.receipt_handle)
                        .await
                        .expect("delete");
                    got.push((
                        message.body.to_vec(),
                        message.message_id,
                        message.source_topic,
                    ));
                }
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{queue}: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    got
}

/// A publish through each replica fans out to queues three different replicas own; each copy
/// is received through a replica that does not own its queue. Topics and subscriptions made
/// through one replica are seen alike through the others; a filter keeps a copy out; a
/// deduplication id holds for copies in other replicas' queues; a backlog cap refuses the
/// whole publish; a queue deleted through its owner takes its subscription along.
#[tokio::test(flavor = "multi_thread")]
async fn a_publish_fans_out_to_queues_of_different_replicas() {
    let Some(database) = Database::create("topics_fanout").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas(dir.path(), &database.url(), 3);
    let db = database.client().await;
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(client_of(replica).await);
    }
    let queues = queues_on_owners(
        &mut clients[0],
        &db,
        "fan",
        3,
        pb::QueueAttributes::default(),
    )
    .await;

    // Made through replica 0, subscribed through replica 1, listed through replica 2.
    create_topic(&mut clients[0], "events").await;
    for (index, (queue, _)) in queues.iter().enumerate() {
        subscribe(&mut clients[1], "events", &format!("s{index}"), queue, &[]).await;
    }
    // The last queue also takes only what is tagged "audit".
    let (audited, _) = &queues[2];
    subscribe(&mut clients[2], "events", "s-audit", audited, &["audit"]).await;
    let topics = clients[2]
        .list_topics(pb::ListTopicsRequest::default())
        .await
        .expect("list topics")
        .into_inner();
    assert_eq!(topics.topics.len(), 1, "{topics:?}");
    assert_eq!(topics.topics[0].subscription_count, 4, "{topics:?}");
    let expected = vec!["s-audit", "s0", "s1", "s2"];
    for client in clients.iter_mut() {
        assert_eq!(subscription_names(client, "events").await, expected);
    }
    // The same subscription again, through another replica, is the same subscription; another
    // queue under its name is refused.
    subscribe(&mut clients[0], "events", "s0", &queues[0].0, &[]).await;
    let refused = clients[2]
        .subscribe(pb::SubscribeRequest {
            topic_name: "events".into(),
            subscription_name: "s0".into(),
            queue_name: queues[1].0.clone(),
            ..Default::default()
        })
        .await
        .expect_err("another queue under the same subscription name");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");

    // One publish through each replica, the first tagged "audit".
    let mut published: Vec<(Vec<u8>, pb::PublishMessageResponse)> = Vec::new();
    for (index, client) in clients.iter_mut().enumerate() {
        let body = format!("event-{index}").into_bytes();
        let tags: &[&str] = if index == 0 { &["audit"] } else { &[] };
        let response = client
            .publish_message(publish("events", &body, tags, ""))
            .await
            .unwrap_or_else(|status| panic!("publish through replica {index}: {status:?}"))
            .into_inner();
        let expected_copies = if index == 0 { 4 } else { 3 };
        assert_eq!(response.copies.len(), expected_copies, "{response:?}");
        published.push((body, response));
    }

    // Each queue received through a replica that does not own it: every copy, with the id
    // the publish answered, from the topic.
    for (queue, owner) in &queues {
        let reader = replicas
            .iter()
            .position(|replica| replica.addr.to_string() != *owner)
            .expect("a replica that does not own it");
        let got = drain(&mut clients[reader], queue, Duration::from_secs(20)).await;
        let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (body, response) in &published {
            for copy in response
                .copies
                .iter()
                .filter(|copy| copy.queue_name == *queue)
            {
                expected.insert(copy.message_id.clone(), body.clone());
            }
        }
        let received: BTreeMap<String, Vec<u8>> = got
            .iter()
            .map(|(body, id, topic)| {
                assert_eq!(topic, "events");
                (id.clone(), body.clone())
            })
            .collect();
        assert_eq!(received.len(), got.len(), "a copy received twice: {got:?}");
        assert_eq!(received, expected, "the copies in {queue}");
    }

    // A deduplication id holds for every copy, wherever its queue is served.
    let first = clients[0]
        .publish_message(publish("events", b"once", &[], "dedup-1"))
        .await
        .expect("publish")
        .into_inner();
    let again = clients[0]
        .publish_message(publish("events", b"once", &[], "dedup-1"))
        .await
        .expect("publish again")
        .into_inner();
    let ids = |response: &pb::PublishMessageResponse| -> BTreeSet<(String, String)> {
        response
            .copies
            .iter()
            .map(|copy| (copy.queue_name.clone(), copy.message_id.clone()))
            .collect()
    };
    assert_eq!(ids(&first), ids(&again), "the earlier copies' ids");
    for (queue, owner) in &queues {
        let reader = replicas
            .iter()
            .position(|replica| replica.addr.to_string() == *owner)
            .expect("the owner");
        let got = drain(&mut clients[reader], queue, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1, "one copy in {queue}: {got:?}");
    }

    // A queue whose backlog is full refuses its copy, and so the publish: no copy anywhere.
    let full = queues_on_owners(
        &mut clients[0],
        &db,
        "capped",
        1,
        pb::QueueAttributes {
            max_backlog: Some(1),
            ..Default::default()
        },
    )
    .await
    .remove(0);
    subscribe(&mut clients[0], "events", "s-capped", &full.0, &[]).await;
    let publisher = replicas
        .iter()
        .position(|replica| replica.addr.to_string() != full.1)
        .expect("a replica that does not own the capped queue");
    clients[publisher]
        .publish_message(publish("events", b"fits", &[], ""))
        .await
        .expect("the first publish fits");
    let refused = clients[publisher]
        .publish_message(publish("events", b"does not fit", &[], ""))
        .await
        .expect_err("the capped queue is full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains(&full.0), "{refused:?}");
    for (queue, _) in &queues {
        let got = drain(&mut clients[0], queue, Duration::from_secs(20)).await;
        let bodies: Vec<&[u8]> = got.iter().map(|(body, _, _)| body.as_slice()).collect();
        assert_eq!(
            bodies,
            vec![b"fits".as_slice()],
            "only the first publish in {queue}"
        );
    }

    // Unsubscribed through another replica than the one that subscribed it.
    clients[2]
        .unsubscribe(pb::UnsubscribeRequest {
            topic_name: "events".into(),
            subscription_name: "s-capped".into(),
        })
        .await
        .expect("unsubscribe");

    // A queue deleted through its owner takes its subscription along, seen through the others.
    let (deleted, owner) = &queues[1];
    let at_owner = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == *owner)
        .expect("the owner");
    clients[at_owner]
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: deleted.clone(),
        })
        .await
        .expect("delete queue");
    let subscriptions: i64 = db
        .query_one(
            "SELECT count(*) FROM spool.subscriptions WHERE queue_name = $1",
            &[deleted],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(subscriptions, 0);
    for (index, client) in clients.iter_mut().enumerate() {
        let names = subscription_names(client, "events").await;
        assert!(
            !names.contains(&"s1".to_string()),
            "replica {index} still lists s1: {names:?}"
        );
        let response = client
            .publish_message(publish("events", b"after", &[], ""))
            .await
            .expect("publish after the delete")
            .into_inner();
        assert!(
            response
                .copies
                .iter()
                .all(|copy| copy.queue_name != *deleted),
            "{response:?}"
        );
    }
}

/// Publishes go on through every replica while one of them (which also owns subscribed
/// queues) is killed (SIGKILL): every acknowledged publish is in every subscribed queue once,
/// and no publish is in only some of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_during_publishes_leaves_every_publish_in_all_queues_or_none() {
    let Some(database) = Database::create("topics_kill").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 3);
    let db = database.client().await;
    let mut client = client_of(&replicas[0]).await;
    let queues = queues_on_owners(&mut client, &db, "sub", 3, pb::QueueAttributes::default()).await;
    create_topic(&mut client, "feed").await;
    for (index, (queue, _)) in queues.iter().enumerate() {
        subscribe(&mut client, "feed", &format!("s{index}"), queue, &[]).await;
    }
    // The replica killed owns queues[1]; publishes go through every replica, so through it too.
    let killed_address = queues[1].1.clone();
    let killed = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == killed_address)
        .expect("the owner");

    let acknowledged: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut publishers = Vec::new();
    for (index, replica) in replicas.iter().enumerate() {
        for worker in 0..2 {
            let mut client = client_of(replica).await;
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            publishers.push(tokio::spawn(async move {
                let mut attempts = 0u64;
                while !stop.is_cancelled() {
                    let body = format!("r{index}-w{worker}-{attempts:05}").into_bytes();
                    attempts += 1;
                    let entries = (0..4)
                        .map(|part| pb::BatchPublishEntry {
                            body: [body.as_slice(), format!("-{part}").as_bytes()]
                                .concat()
                                .into(),
                            ..Default::default()
                        })
                        .collect();
                    let request = pb::BatchPublishMessagesRequest {
                        topic_name: "feed".into(),
                        entries,
                    };
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(Duration::from_secs(5));
                    match client.batch_publish_messages(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            assert_eq!(response.results.len(), 4);
                            let mut acknowledged = acknowledged.lock().unwrap();
                            for part in 0..4 {
                                acknowledged.push(
                                    [body.as_slice(), format!("-{part}").as_bytes()].concat(),
                                );
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                attempts
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acknowledged.lock().unwrap().len();
    replicas.remove(killed).kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    let mut attempts = 0;
    for publisher in publishers {
        attempts += publisher.await.expect("publisher");
    }
    let acknowledged: BTreeSet<Vec<u8>> = acknowledged.lock().unwrap().iter().cloned().collect();
    eprintln!(
        "{} messages acknowledged ({before_kill} before the kill) in {attempts} batches",
        acknowledged.len()
    );
    assert!(before_kill > 0, "publishes acknowledged before the kill");

    let mut survivor = client_of(&replicas[0]).await;
    let mut in_queues: Vec<BTreeSet<Vec<u8>>> = Vec::new();
    for (queue, _) in &queues {
        let got = drain(&mut survivor, queue, Duration::from_secs(90)).await;
        let bodies: BTreeSet<Vec<u8>> = got.iter().map(|(body, _, _)| body.clone()).collect();
        assert_eq!(bodies.len(), got.len(), "a copy twice in {queue}");
        let missing: Vec<_> = acknowledged.difference(&bodies).take(5).collect();
        if !missing.is_empty() {
            // Where they are: a row still stored (its state, whether its pending_adoptions
            // entry is left) says whether the owner's memory or storage lost them.
            let mut stored = Vec::new();
            for body in &missing {
                let rows = db
                    .query(
                        "SELECT m.id, m.state, EXISTS (SELECT 1 FROM spool.pending_adoptions p
                                                        WHERE p.message_id = m.id)
                           FROM spool.messages m JOIN spool.queues q ON q.id = m.queue_id
                          WHERE q.name = $1 AND m.body = $2",
                        &[queue, &body.as_slice()],
                    )
                    .await
                    .expect("rows");
                for row in rows {
                    let (id, state, pending): (i64, i16, bool) =
                        (row.get(0), row.get(1), row.get(2));
                    stored.push(format!(
                        "{}: id {id}, state {state}, pending {pending}",
                        String::from_utf8_lossy(body)
                    ));
                }
            }
            let missing: Vec<_> = missing.iter().map(|b| String::from_utf8_lossy(b)).collect();
            panic!("acknowledged publishes missing from {queue}: {missing:?}; stored: {stored:?}");
        }
        in_queues.push(bodies);
    }
    for (index, bodies) in in_queues.iter().enumerate() {
        for other in &in_queues[index + 1..] {
            let only_some: Vec<_> = bodies.symmetric_difference(other).take(5).collect();
            assert!(
                only_some.is_empty(),
                "publishes in only some of the queues: {only_some:?}"
            );
        }
    }
    let pending: i64 = db
        .query_one("SELECT count(*) FROM spool.pending_adoptions", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 0, "entries left in pending_adoptions");
}
