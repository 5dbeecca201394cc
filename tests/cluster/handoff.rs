//! Graceful scale-down: SIGTERM to an owner moves its queues after draining them; clients of
//! the other replicas see no error but a retryable UNAVAILABLE.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spool::pb;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::checker::{self, Log, VISIBILITY_SECONDS};
use crate::common;
use crate::harness::{Database, client_of, owner_address, replicas, split};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_the_queues_off_with_nothing_but_retryable_errors() {
    let Some(database) = Database::create("handoff").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 3);
    const QUEUE: &str = "moving";
    common::create(&mut client_of(&replicas[0]).await, QUEUE, common::attrs()).await;
    let db = database.client().await;
    let owner = owner_address(&db, QUEUE).await;
    let (_, others) = split(&replicas, &owner);

    let log: checker::Shared = Arc::new(Mutex::new(Log::default()));
    let stop_producing = CancellationToken::new();
    let stop_consuming = CancellationToken::new();
    let producer = checker::producer(
        others[0].endpoint(),
        QUEUE,
        "handoff",
        log.clone(),
        stop_producing.clone(),
    );
    let consumer = checker::consumer(
        others[1].endpoint(),
        QUEUE,
        log.clone(),
        stop_consuming.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let index = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == owner)
        .expect("owner");
    let terminated_at = Instant::now();
    let code = replicas.remove(index).terminate();
    let stopped_after = terminated_at.elapsed();
    assert_eq!(code, Some(0), "the replica stops cleanly");
    let new_owner = owner_address(&db, QUEUE).await;
    assert_ne!(new_owner, owner);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_producing.cancel();
    producer.await.expect("producer");
    checker::drain(
        &log,
        Duration::from_secs(30 + u64::from(VISIBILITY_SECONDS)),
    )
    .await;
    stop_consuming.cancel();
    consumer.await.expect("consumer");
    checker::check(&log);

    let log = log.lock().expect("log");
    let unexpected: Vec<_> = log
        .errors
        .iter()
        .filter(|(_, code, _)| *code != Code::Unavailable)
        .collect();
    assert!(
        unexpected.is_empty(),
        "errors other than UNAVAILABLE: {unexpected:?}"
    );
    // The longest time without an acknowledged send around the hand-off.
    let mut acks: Vec<Instant> = log.sent.values().copied().collect();
    acks.sort();
    let gap = acks
        .windows(2)
        .filter(|pair| pair[1] > terminated_at)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "graceful hand-off: the old owner exited {stopped_after:?} after SIGTERM; longest gap \
         between acknowledged sends {gap:?}; {} UNAVAILABLE answers (retried); {} sends",
        log.errors.len(),
        log.sent.len()
    );
    assert!(gap < Duration::from_secs(10), "sends stalled for {gap:?}");
}

/// A receipt handle made by one owner deletes its message on the next: the key that signs
/// handles is the schema's, and a hand-off commits the receive that made the handle.
#[tokio::test(flavor = "multi_thread")]
async fn receipt_handles_stay_valid_across_a_hand_off() {
    let Some(database) = Database::create("handles").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 3);
    const QUEUE: &str = "handles";
    let mut first = client_of(&replicas[0]).await;
    common::create(&mut first, QUEUE, common::attrs()).await;
    common::batch_send(&mut first, QUEUE, &[b"a", b"b"]).await;
    let db = database.client().await;
    let owner = owner_address(&db, QUEUE).await;
    let received = {
        let (owner_replica, _) = split(&replicas, &owner);
        common::receive(&mut client_of(owner_replica).await, QUEUE, 2).await
    };
    assert_eq!(received.len(), 2);
    let index = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == owner)
        .expect("owner");
    assert_eq!(replicas.remove(index).terminate(), Some(0));
    let new_owner = owner_address(&db, QUEUE).await;
    assert_ne!(new_owner, owner);
    let mut client = client_of(&replicas[0]).await;
    // Still in flight at the new owner: nothing to receive before their visibility timeout.
    // The owner's row names the new owner as its takeover begins; until the takeover has read
    // the queue, calls answer UNAVAILABLE ("moving between replicas; retry"), as clients retry.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after_takeover = loop {
        let request = pb::ReceiveMessagesRequest {
            queue_name: QUEUE.into(),
            max_messages: 2,
            wait_seconds: Some(0),
            visibility_timeout_seconds: None,
        };
        match common::receive_with(&mut client, request).await {
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => break result.expect("receive at the new owner"),
        }
    };
    assert!(after_takeover.is_empty());
    for message in &received {
        common::delete(&mut client, QUEUE, &message.receipt_handle)
            .await
            .expect("a handle of the old owner deletes on the new one");
    }
    let stats = common::stats(&mut client, QUEUE).await;
    assert_eq!((stats.active_messages, stats.inactive_messages), (0, 0));
}
