//! Topics (issue 20): a publish puts one copy in every subscribed queue whose filter it passes
//! (tags, routing keys with wildcards), all or none: across a queue's backlog refusing its
//! copy, and across kill -9 during publishes. Deleting a queue takes its subscriptions along.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool::pb;
use tonic::{Code, Status};

use crate::common::*;

async fn create_topic(
    client: &mut Client,
    name: &str,
    filter_type: pb::FilterType,
) -> Result<pb::Topic, Status> {
    Ok(client
        .create_topic(pb::CreateTopicRequest {
            topic_name: name.into(),
            attributes: Some(pb::TopicAttributes {
                max_message_size: None,
                filter_type: filter_type as i32,
            }),
        })
        .await?
        .into_inner())
}

async fn subscribe(
    client: &mut Client,
    topic: &str,
    name: &str,
    queue: &str,
    filter: &[&str],
) -> Result<pb::Subscription, Status> {
    let kind = client
        .get_topic(pb::GetTopicRequest {
            topic_name: topic.into(),
        })
        .await
        .map(|t| t.into_inner().attributes.unwrap_or_default().filter_type)
        .unwrap_or(pb::FilterType::Tags as i32);
    let filter: Vec<String> = filter.iter().map(|f| f.to_string()).collect();
    let (filter_tags, binding_keys) = if kind == pb::FilterType::RoutingKeys as i32 {
        (Vec::new(), filter)
    } else {
        (filter, Vec::new())
    };
    Ok(client
        .subscribe(pb::SubscribeRequest {
            topic_name: topic.into(),
            subscription_name: name.into(),
            queue_name: queue.into(),
            filter_tags,
            binding_keys,
        })
        .await?
        .into_inner())
}

async fn publish(
    client: &mut Client,
    topic: &str,
    body: &str,
    tags: &[&str],
    routing_key: &str,
) -> Result<pb::PublishMessageResponse, Status> {
    Ok(client
        .publish_message(pb::PublishMessageRequest {
            topic_name: topic.into(),
            body: body.as_bytes().to_vec().into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            routing_key: routing_key.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Every message of the queue, received with a long visibility timeout until none is left.
async fn drain(client: &mut Client, queue: &str) -> Vec<pb::ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = receive_with(
            client,
            pb::ReceiveMessagesRequest {
                queue_name: queue.into(),
                max_messages: 16,
                wait_seconds: Some(0),
                visibility_timeout_seconds: Some(600),
            },
        )
        .await
        .expect("receive");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn bodies(messages: &[pb::ReceivedMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn copies(response: &pb::PublishMessageResponse) -> Vec<(String, String)> {
    response
        .copies
        .iter()
        .map(|c| (c.subscription_name.clone(), c.queue_name.clone()))
        .collect()
}

async fn subscriptions(client: &mut Client, topic: &str) -> Vec<pb::Subscription> {
    client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            topic_name: topic.into(),
            ..Default::default()
        })
        .await
        .expect("list subscriptions")
        .into_inner()
        .subscriptions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_fans_out_to_the_queues_whose_tags_match() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for queue in ["fan-all", "fan-red", "fan-warm"] {
        create(&mut client, queue, attrs()).await;
    }
    create_topic(&mut client, "paint", pb::FilterType::Unspecified)
        .await
        .expect("create topic");
    subscribe(&mut client, "paint", "all", "fan-all", &[])
        .await
        .expect("subscribe all");
    subscribe(&mut client, "paint", "red", "fan-red", &["red"])
        .await
        .expect("subscribe red");
    subscribe(&mut client, "paint", "warm", "fan-warm", &["red", "orange"])
        .await
        .expect("subscribe warm");

    let red = client
        .publish_message(pb::PublishMessageRequest {
            topic_name: "paint".into(),
            body: b"red paint"[..].into(),
            attributes: [("colour".to_string(), "red".to_string())].into(),
            tags: vec!["red".into(), "glossy".into()],
            ..Default::default()
        })
        .await
        .expect("publish red")
        .into_inner();
    assert_eq!(
        copies(&red),
        [("all", "fan-all"), ("red", "fan-red"), ("warm", "fan-warm")]
            .map(|(s, q)| (s.to_string(), q.to_string()))
    );
    let orange = publish(&mut client, "paint", "orange paint", &["orange"], "")
        .await
        .expect("publish orange");
    assert_eq!(
        copies(&orange),
        vec![
            ("all".to_string(), "fan-all".to_string()),
            ("warm".into(), "fan-warm".into())
        ]
    );
    let plain = publish(&mut client, "paint", "no tags", &[], "")
        .await
        .expect("publish untagged");
    assert_eq!(
        copies(&plain),
        vec![("all".to_string(), "fan-all".to_string())]
    );

    let all = drain(&mut client, "fan-all").await;
    assert_eq!(
        bodies(&all),
        ["red paint", "orange paint", "no tags"]
            .map(String::from)
            .into()
    );
    let reds = drain(&mut client, "fan-red").await;
    assert_eq!(bodies(&reds), ["red paint"].map(String::from).into());
    let warm = drain(&mut client, "fan-warm").await;
    assert_eq!(
        bodies(&warm),
        ["red paint", "orange paint"].map(String::from).into()
    );
    // Each copy is its own message, which says where it came from and keeps the attributes.
    let red_copies: Vec<&pb::ReceivedMessage> = [&all, &reds, &warm]
        .iter()
        .flat_map(|queue| queue.iter())
        .filter(|m| &m.body[..] == b"red paint")
        .collect();
    let ids: BTreeSet<&str> = red_copies.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each copy has its own id");
    assert!(!ids.contains(red.message_id.as_str()));
    let answered: BTreeSet<&str> = red.copies.iter().map(|c| c.message_id.as_str()).collect();
    assert_eq!(ids, answered);
    for copy in red_copies {
        assert_eq!(copy.source_topic, "paint");
        assert_eq!(
            copy.attributes.get("colour").map(String::as_str),
            Some("red")
        );
    }
    // A plain send carries no topic.
    send(&mut client, "fan-red", b"direct").await;
    assert_eq!(receive(&mut client, "fan-red", 1).await[0].source_topic, "");

    // Counters: per topic, per subscription, and in the metrics.
    let topic = client
        .get_topic(pb::GetTopicRequest {
            topic_name: "paint".into(),
        })
        .await
        .expect("get topic")
        .into_inner();
    assert_eq!(topic.subscription_count, 3);
    assert_eq!(topic.stats.unwrap_or_default().published_messages, 3);
    let counts: Vec<(String, u64, u64)> = subscriptions(&mut client, "paint")
        .await
        .into_iter()
        .map(|s| (s.name, s.delivered_messages, s.filtered_out_messages))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("all".to_string(), 3, 0),
            ("red".into(), 1, 2),
            ("warm".into(), 2, 1)
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keys_match_binding_keys_with_wildcards() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for queue in ["rk-created", "rk-orders", "rk-deleted"] {
        create(&mut client, queue, attrs()).await;
    }
    create_topic(&mut client, "events", pb::FilterType::RoutingKeys)
        .await
        .expect("create topic");
    subscribe(
        &mut client,
        "events",
        "created",
        "rk-created",
        &["order.*.created"],
    )
    .await
    .expect("subscribe");
    subscribe(&mut client, "events", "orders", "rk-orders", &["order.#"])
        .await
        .expect("subscribe");
    subscribe(
        &mut client,
        "events",
        "deleted",
        "rk-deleted",
        &["#.deleted", "audit.*"],
    )
    .await
    .expect("subscribe");
    let results = client
        .batch_publish_messages(pb::BatchPublishMessagesRequest {
            topic_name: "events".into(),
            entries: [
                "order.eu.created",
                "order.deleted",
                "invoice.x",
                "audit.log",
                "order.eu.west.created",
            ]
            .iter()
            .map(|key| pb::BatchPublishEntry {
                body: key.as_bytes().to_vec().into(),
                routing_key: key.to_string(),
                ..Default::default()
            })
            .collect(),
        })
        .await
        .expect("batch publish")
        .into_inner()
        .results;
    let routed: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            r.copies
                .iter()
                .map(|c| c.subscription_name.clone())
                .collect()
        })
        .collect();
    assert_eq!(
        routed,
        vec![
            vec!["created".to_string(), "orders".into()],
            vec!["deleted".to_string(), "orders".into()],
            vec![],
            vec!["deleted".to_string()],
            vec!["orders".to_string()],
        ]
    );
    assert_eq!(
        bodies(&drain(&mut client, "rk-created").await),
        ["order.eu.created"].map(String::from).into()
    );
    assert_eq!(
        bodies(&drain(&mut client, "rk-orders").await),
        ["order.eu.created", "order.deleted", "order.eu.west.created"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        bodies(&drain(&mut client, "rk-deleted").await),
        ["order.deleted", "audit.log"].map(String::from).into()
    );
    let stats = client
        .get_topic(pb::GetTopicRequest {
            topic_name: "events".into(),
        })
        .await
        .expect("get topic")
        .into_inner()
        .stats
        .unwrap_or_default();
    assert_eq!((stats.published_messages, stats.unrouted_messages), (5, 1));
    server.stop().await;
}

/// A queue whose backlog is full refuses its copy, and with it the whole publish: no other
/// queue gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_the_whole_publish() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "cap-roomy", attrs()).await;
    create(
        &mut client,
        "cap-tight",
        pb::QueueAttributes {
            max_backlog: Some(1),
            ..Default::default()
        },
    )
    .await;
    create_topic(&mut client, "capped", pb::FilterType::Tags)
        .await
        .expect("create topic");
    subscribe(&mut client, "capped", "a", "cap-roomy", &[])
        .await
        .expect("subscribe");
    subscribe(&mut client, "capped", "b", "cap-tight", &[])
        .await
        .expect("subscribe");
    publish(&mut client, "capped", "first", &[], "")
        .await
        .expect("the first fits");
    let refused = publish(&mut client, "capped", "second", &[], "")
        .await
        .expect_err("the tight queue is full");
    let message = assert_error(&refused, Code::ResourceExhausted, 4410);
    assert!(message.contains("cap-tight"), "{message}");
    assert_eq!(stats(&mut client, "cap-roomy").await.active_messages, 1);
    assert_eq!(stats(&mut client, "cap-tight").await.active_messages, 1);
    // A batch is all or nothing too.
    let batch = client
        .batch_publish_messages(pb::BatchPublishMessagesRequest {
            topic_name: "capped".into(),
            entries: vec![
                pb::BatchPublishEntry {
                    body: b"x"[..].into(),
                    ..Default::default()
                };
                2
            ],
        })
        .await
        .expect_err("no room");
    assert_eq!(batch.code(), Code::ResourceExhausted);
    assert_eq!(stats(&mut client, "cap-roomy").await.active_messages, 1);
    // Room again: publishes go through, to both.
    let handle = receive(&mut client, "cap-tight", 1)
        .await
        .remove(0)
        .receipt_handle;
    delete(&mut client, "cap-tight", &handle)
        .await
        .expect("delete");
    publish(&mut client, "capped", "third", &[], "")
        .await
        .expect("room again");
    assert_eq!(stats(&mut client, "cap-roomy").await.active_messages, 2);
    server.stop().await;
}

/// A queue without room under its max_bytes refuses its copy, and with it the whole publish,
/// as a full backlog does. A copy's bytes are its body and attributes as stored, which name the
/// topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_quota_refuses_the_whole_publish() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "bytes-roomy", attrs()).await;
    create(
        &mut client,
        "bytes-tight",
        pb::QueueAttributes {
            max_bytes: Some(100),
            ..Default::default()
        },
    )
    .await;
    create_topic(&mut client, "quota", pb::FilterType::Tags)
        .await
        .expect("create topic");
    for (name, queue) in [("a", "bytes-roomy"), ("b", "bytes-tight")] {
        subscribe(&mut client, "quota", name, queue, &[])
            .await
            .expect("subscribe");
    }
    publish(&mut client, "quota", &"x".repeat(40), &[], "")
        .await
        .expect("the first fits");
    let copy = stats(&mut client, "bytes-tight").await.backlog_bytes;
    assert!(copy > 40, "the copy names its topic: {copy}");
    assert_eq!(stats(&mut client, "bytes-roomy").await.backlog_bytes, copy);
    let refused = publish(
        &mut client,
        "quota",
        &"y".repeat(100 - copy as usize),
        &[],
        "",
    )
    .await
    .expect_err("no room in the tight queue");
    let message = assert_error(&refused, Code::ResourceExhausted, 4410);
    assert!(
        message.contains("bytes-tight") && message.contains("max_bytes is 100"),
        "{message}"
    );
    assert_eq!(stats(&mut client, "bytes-roomy").await.active_messages, 1);
    assert_eq!(stats(&mut client, "bytes-tight").await.backlog_bytes, copy);
    // A batch whose entries fit one by one but not together is refused whole.
    let status = client
        .batch_publish_messages(pb::BatchPublishMessagesRequest {
            topic_name: "quota".into(),
            entries: vec![
                pb::BatchPublishEntry {
                    body: b"z"[..].into(),
                    ..Default::default()
                };
                16
            ],
        })
        .await
        .expect_err("no room for 16");
    assert_error(&status, Code::ResourceExhausted, 4410);
    assert_eq!(stats(&mut client, "bytes-roomy").await.active_messages, 1);
    publish(&mut client, "quota", "z", &[], "")
        .await
        .expect("a small one fits");
    assert_eq!(stats(&mut client, "bytes-roomy").await.active_messages, 2);
    server.stop().await;
}

/// Deleting a queue deletes its subscriptions (in the same transaction); a queue created again
/// under the name is not subscribed, before or after a restart. Topics and the other
/// subscriptions survive the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_removes_its_subscriptions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    create(&mut client, "del-stays", attrs()).await;
    create(&mut client, "del-goes", attrs()).await;
    create_topic(&mut client, "news", pb::FilterType::Tags)
        .await
        .expect("create topic");
    subscribe(&mut client, "news", "stays", "del-stays", &[])
        .await
        .expect("subscribe");
    subscribe(&mut client, "news", "goes", "del-goes", &["sport"])
        .await
        .expect("subscribe");
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "del-goes".into(),
        })
        .await
        .expect("delete a subscribed queue");
    let names: Vec<String> = subscriptions(&mut client, "news")
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["stays".to_string()]);
    create(&mut client, "del-goes", attrs()).await;
    let published = publish(&mut client, "news", "score", &["sport"], "")
        .await
        .expect("publish");
    assert_eq!(published.copies.len(), 1);
    assert_eq!(stats(&mut client, "del-goes").await.active_messages, 0);
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let after: Vec<(String, String, Vec<String>)> = subscriptions(&mut client, "news")
        .await
        .into_iter()
        .map(|s| (s.name, s.queue_name, s.filter_tags))
        .collect();
    assert_eq!(
        after,
        vec![("stays".to_string(), "del-stays".to_string(), vec![])]
    );
    // The subscription can be made again, on the new queue.
    subscribe(&mut client, "news", "goes", "del-goes", &["sport"])
        .await
        .expect("subscribe again");
    let published = publish(&mut client, "news", "again", &["sport"], "")
        .await
        .expect("publish");
    assert_eq!(published.copies.len(), 2);
    // Deleting the topic leaves the queues and their copies.
    client
        .delete_topic(pb::DeleteTopicRequest {
            topic_name: "news".into(),
        })
        .await
        .expect("delete topic");
    assert_eq!(stats(&mut client, "del-goes").await.active_messages, 1);
    let gone = publish(&mut client, "news", "x", &[], "")
        .await
        .expect_err("no topic");
    assert_error(&gone, Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "val-q", attrs()).await;
    create_topic(&mut client, "val-tags", pb::FilterType::Tags)
        .await
        .expect("create");
    create_topic(&mut client, "val-keys", pb::FilterType::RoutingKeys)
        .await
        .expect("create");
    let invalid = |status: Result<_, Status>, field: &str| {
        let status = status.expect_err(field);
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(message.contains(field), "{field}: {message}");
    };
    invalid(
        create_topic(&mut client, "1bad", pb::FilterType::Tags)
            .await
            .map(|_| ()),
        "topic_name",
    );
    invalid(
        client
            .create_topic(pb::CreateTopicRequest {
                topic_name: "val-size".into(),
                attributes: Some(pb::TopicAttributes {
                    max_message_size: Some(10),
                    filter_type: 0,
                }),
            })
            .await
            .map(|_| ()),
        "attributes.max_message_size",
    );
    invalid(
        client
            .create_topic(pb::CreateTopicRequest {
                topic_name: "val-kind".into(),
                attributes: Some(pb::TopicAttributes {
                    max_message_size: None,
                    filter_type: 7,
                }),
            })
            .await
            .map(|_| ()),
        "attributes.filter_type",
    );
    invalid(
        client
            .update_topic(pb::UpdateTopicRequest {
                topic_name: "val-tags".into(),
                attributes: Some(pb::TopicAttributes {
                    max_message_size: None,
                    filter_type: pb::FilterType::RoutingKeys as i32,
                }),
            })
            .await
            .map(|_| ()),
        "attributes.filter_type",
    );
    invalid(
        subscribe(&mut client, "val-keys", "s", "val-q", &["order..x"])
            .await
            .map(|_| ()),
        "binding_keys[0]",
    );
    invalid(
        client
            .subscribe(pb::SubscribeRequest {
                topic_name: "val-tags".into(),
                subscription_name: "s".into(),
                queue_name: "val-q".into(),
                binding_keys: vec!["a.b".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "binding_keys",
    );
    invalid(
        subscribe(&mut client, "val-tags", "bad name", "val-q", &[])
            .await
            .map(|_| ()),
        "subscription_name",
    );
    invalid(
        publish(&mut client, "val-tags", "x", &[], "a.b")
            .await
            .map(|_| ()),
        "routing_key",
    );
    invalid(
        publish(&mut client, "val-keys", "x", &[], "a.*")
            .await
            .map(|_| ()),
        "routing_key",
    );
    invalid(
        publish(&mut client, "val-keys", "x", &["t"], "")
            .await
            .map(|_| ()),
        "tags",
    );
    invalid(
        publish(&mut client, "val-tags", "", &[], "")
            .await
            .map(|_| ()),
        "body",
    );
    let many: Vec<&str> = vec!["t"; 17];
    invalid(
        publish(&mut client, "val-tags", "x", &many, "")
            .await
            .map(|_| ()),
        "tags",
    );
    let too_large = publish(&mut client, "val-tags", &"x".repeat(70_000), &[], "")
        .await
        .expect_err("larger than the topic's max_message_size");
    let message = assert_error(&too_large, Code::InvalidArgument, 4400);
    assert!(message.contains("max_message_size"), "{message}");
    let batch = client
        .batch_publish_messages(pb::BatchPublishMessagesRequest {
            topic_name: "val-tags".into(),
            entries: vec![
                pb::BatchPublishEntry {
                    body: b"x"[..].into(),
                    ..Default::default()
                };
                17
            ],
        })
        .await
        .expect_err("17 entries");
    assert!(batch.message().contains("entries"), "{batch:?}");

    // Things that do not exist, and conflicts.
    let missing = publish(&mut client, "no-topic", "x", &[], "")
        .await
        .expect_err("no topic");
    assert_error(&missing, Code::NotFound, 4440);
    let no_queue = subscribe(&mut client, "val-tags", "s", "no-queue", &[])
        .await
        .expect_err("no queue");
    assert_error(&no_queue, Code::NotFound, 4440);
    subscribe(&mut client, "val-tags", "s", "val-q", &["a"])
        .await
        .expect("subscribe");
    subscribe(&mut client, "val-tags", "s", "val-q", &["a"])
        .await
        .expect("the same again is fine");
    let other = subscribe(&mut client, "val-tags", "s", "val-q", &["b"])
        .await
        .expect_err("another filter under the name");
    assert_error(&other, Code::AlreadyExists, 4460);
    let exists = create_topic(&mut client, "val-tags", pb::FilterType::RoutingKeys)
        .await
        .expect_err("other attributes");
    assert_error(&exists, Code::AlreadyExists, 4460);
    let unsubscribed = client
        .unsubscribe(pb::UnsubscribeRequest {
            topic_name: "val-tags".into(),
            subscription_name: "nope".into(),
        })
        .await
        .expect_err("no such subscription");
    assert_error(&unsubscribed, Code::NotFound, 4440);
    server.stop().await;
}

/// A publish retried with its deduplication id adds no second copy to queues with
/// deduplication on, and answers the first copies' ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_deduplicated_by_each_queue() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "dd-a", attrs()).await;
    create(&mut client, "dd-b", attrs()).await;
    create_topic(&mut client, "dd", pb::FilterType::Tags)
        .await
        .expect("create topic");
    subscribe(&mut client, "dd", "a", "dd-a", &[])
        .await
        .expect("sub");
    subscribe(&mut client, "dd", "b", "dd-b", &[])
        .await
        .expect("sub");
    let request = pb::PublishMessageRequest {
        topic_name: "dd".into(),
        body: b"once"[..].into(),
        deduplication_id: "publish-1".into(),
        ..Default::default()
    };
    let first = client
        .publish_message(request.clone())
        .await
        .expect("publish")
        .into_inner();
    let again = client
        .publish_message(request)
        .await
        .expect("publish again")
        .into_inner();
    assert_eq!(first.copies, again.copies);
    assert_eq!(stats(&mut client, "dd-a").await.active_messages, 1);
    assert_eq!(stats(&mut client, "dd-b").await.active_messages, 1);
    server.stop().await;
}

/// kill -9 while publishes to a topic with four queues are under way: after the restart every
/// acknowledged publish is in all four queues, and no publish is in some but not all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_leaves_a_publish_in_some_queues_only() {
    const QUEUES: [&str; 4] = ["crash-t0", "crash-t1", "crash-t2", "crash-t3"];
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "crash-topic", pb::FilterType::Tags)
        .await
        .expect("create topic");
    for (index, queue) in QUEUES.iter().enumerate() {
        create(&mut client, queue, attrs()).await;
        subscribe(&mut client, "crash-topic", &format!("s{index}"), queue, &[])
            .await
            .expect("subscribe");
    }
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut publishers = Vec::new();
    for publisher in 0..4 {
        let mut client = client.clone();
        let acknowledged = acknowledged.clone();
        publishers.push(tokio::spawn(async move {
            for n in 0.. {
                let body = format!("p{publisher}-{n}");
                match publish(&mut client, "crash-topic", &body, &[], "").await {
                    Ok(_) => {
                        acknowledged.lock().expect("lock").insert(body);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let publishes run, then kill in the middle of them.
    for _ in 0..500 {
        if acknowledged.lock().expect("lock").len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= 100,
        "only {} publishes",
        acknowledged.len()
    );

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let mut found: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for queue in QUEUES {
        let messages = drain(&mut client, queue).await;
        let set = bodies(&messages);
        assert_eq!(set.len(), messages.len(), "a copy twice in {queue}");
        assert!(messages.iter().all(|m| m.source_topic == "crash-topic"));
        found.insert(queue, set);
    }
    let first = &found[QUEUES[0]];
    for queue in QUEUES {
        assert_eq!(
            &found[queue], first,
            "queue {queue} holds other publishes than {}",
            QUEUES[0]
        );
        let lost: Vec<&String> = acknowledged.difference(&found[queue]).collect();
        assert!(
            lost.is_empty(),
            "acknowledged publishes lost in {queue}: {lost:?}"
        );
    }
    // The subscriptions survived too, and their totals, and the topic's: written in the
    // transaction of the copies, they count exactly the publishes whose copies are there.
    let totals: Vec<(u64, u64)> = subscriptions(&mut client, "crash-topic")
        .await
        .into_iter()
        .map(|s| (s.delivered_messages, s.filtered_out_messages))
        .collect();
    assert_eq!(totals, vec![(first.len() as u64, 0); 4]);
    let stats = topic_stats(&mut client, "crash-topic").await;
    assert_eq!(
        (stats.published_messages, stats.unrouted_messages),
        (first.len() as u64, 0)
    );
    assert_eq!(server.terminate(), Some(0));
}

async fn topic_stats(client: &mut Client, topic: &str) -> pb::TopicStats {
    client
        .get_topic(pb::GetTopicRequest {
            topic_name: topic.into(),
        })
        .await
        .expect("get topic")
        .into_inner()
        .stats
        .unwrap_or_default()
}

/// Topic and subscription totals are kept across a restart (issue 20): published, unrouted,
/// delivered (a copy its queue deduplicated not counted again) and filtered out; a
/// subscription made after the restart starts from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_totals_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    create(&mut client, "kept-all", attrs()).await;
    create(&mut client, "kept-blue", attrs()).await;
    create_topic(&mut client, "kept", pb::FilterType::Tags)
        .await
        .expect("create topic");
    subscribe(&mut client, "kept", "all", "kept-all", &[])
        .await
        .expect("subscribe");
    subscribe(&mut client, "kept", "blue", "kept-blue", &["blue"])
        .await
        .expect("subscribe");
    publish(&mut client, "kept", "one", &["blue"], "")
        .await
        .expect("publish");
    publish(&mut client, "kept", "two", &["red"], "")
        .await
        .expect("publish");
    // A retried publish: both queues deduplicate their copy.
    for _ in 0..2 {
        client
            .publish_message(pb::PublishMessageRequest {
                topic_name: "kept".into(),
                body: b"three"[..].into(),
                tags: vec!["blue".into()],
                deduplication_id: "three".into(),
                ..Default::default()
            })
            .await
            .expect("publish");
    }
    let expected = |subscriptions: Vec<pb::Subscription>| {
        subscriptions
            .into_iter()
            .map(|s| (s.name, s.delivered_messages, s.filtered_out_messages))
            .collect::<Vec<_>>()
    };
    let before = expected(subscriptions(&mut client, "kept").await);
    assert_eq!(
        before,
        vec![("all".to_string(), 3, 0), ("blue".to_string(), 2, 1)]
    );
    assert_eq!(topic_stats(&mut client, "kept").await.published_messages, 4);
    // No subscription left that takes red: unrouted.
    client
        .unsubscribe(pb::UnsubscribeRequest {
            topic_name: "kept".into(),
            subscription_name: "all".into(),
        })
        .await
        .expect("unsubscribe");
    publish(&mut client, "kept", "four", &["red"], "")
        .await
        .expect("publish");
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let stats = topic_stats(&mut client, "kept").await;
    assert_eq!((stats.published_messages, stats.unrouted_messages), (5, 1));
    assert_eq!(
        expected(subscriptions(&mut client, "kept").await),
        vec![("blue".to_string(), 2, 2)]
    );
    subscribe(&mut client, "kept", "all", "kept-all", &[])
        .await
        .expect("subscribe again");
    publish(&mut client, "kept", "five", &[], "")
        .await
        .expect("publish");
    assert_eq!(
        expected(subscriptions(&mut client, "kept").await),
        vec![("all".to_string(), 1, 0), ("blue".to_string(), 2, 3)]
    );
    server.stop().await;
}
