//! An owner that dies (kill -9) or stops answering (SIGSTOP beyond the TTL): its queues are
//! taken over, and nothing acknowledged is lost or undone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spool::pb;
use tokio_util::sync::CancellationToken;

use crate::checker::{self, Log, VISIBILITY_SECONDS};
use crate::common::{self, signal};
use crate::harness::{Database, client_of, epoch, owner_address, replicas, split, ttl_seconds};

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_killed_under_load_loses_nothing_acknowledged() {
    let Some(database) = Database::create("kill").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 3);
    const QUEUE: &str = "load";
    common::create(&mut client_of(&replicas[0]).await, QUEUE, common::attrs()).await;
    let db = database.client().await;
    let owner = owner_address(&db, QUEUE).await;
    let epoch_before = epoch(&db, QUEUE).await;
    let (_, others) = split(&replicas, &owner);
    let (producer_at, consumer_at) = (others[0].endpoint(), others[1].endpoint());

    let log: checker::Shared = Arc::new(Mutex::new(Log::default()));
    let stop_producing = CancellationToken::new();
    let stop_consuming = CancellationToken::new();
    let producer = checker::producer(
        producer_at,
        QUEUE,
        "kill",
        log.clone(),
        stop_producing.clone(),
    );
    let consumer = checker::consumer(consumer_at, QUEUE, log.clone(), stop_consuming.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent_before = log.lock().expect("log").sent.len();
    assert!(sent_before > 0, "the workload runs before the kill");

    let index = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == owner)
        .expect("owner");
    let killed_at = Instant::now();
    replicas.remove(index).kill();

    // Until the queue serves again elsewhere, then a little more.
    let deadline = killed_at + Duration::from_secs(60);
    let served_again = loop {
        if let Some(at) = checker::first_receive_after(&log, killed_at)
            && checker::first_send_after(&log, killed_at).is_some()
        {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never served again after its owner died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failover = served_again - killed_at;
    eprintln!(
        "failover (kill -9 of the owner to the first receive through another replica, TTL {} s): {failover:?}",
        ttl_seconds()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
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

    let new_owner = owner_address(&db, QUEUE).await;
    assert_ne!(new_owner, owner);
    assert!(epoch(&db, QUEUE).await > epoch_before);
    // Generous: the member TTL, a round, the takeover; a bound, not a benchmark.
    assert!(
        failover < Duration::from_secs(ttl_seconds() * 5),
        "failover took {failover:?}"
    );
    let log = log.lock().expect("log");
    eprintln!(
        "kill -9: {} sends acknowledged, {} deleted, {} errors seen (retried)",
        log.sent.len(),
        log.deleted.len(),
        log.errors.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_paused_beyond_the_ttl_acknowledges_nothing_for_the_queue_it_lost() {
    let Some(database) = Database::create("pause").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas(dir.path(), &database.url(), 3);
    const QUEUE: &str = "paused";
    common::create(&mut client_of(&replicas[0]).await, QUEUE, common::attrs()).await;
    let db = database.client().await;
    let owner_addr = owner_address(&db, QUEUE).await;
    let epoch_before = epoch(&db, QUEUE).await;
    let (owner, others) = split(&replicas, &owner_addr);

    // A producer and a consumer talking to the owner itself, and another pair elsewhere.
    let log: checker::Shared = Arc::new(Mutex::new(Log::default()));
    let stop_producing = CancellationToken::new();
    let stop_consuming = CancellationToken::new();
    let producers = [
        checker::producer(
            owner.endpoint(),
            QUEUE,
            "direct",
            log.clone(),
            stop_producing.clone(),
        ),
        checker::producer(
            others[0].endpoint(),
            QUEUE,
            "forwarded",
            log.clone(),
            stop_producing.clone(),
        ),
    ];
    let consumers = [
        checker::consumer(owner.endpoint(), QUEUE, log.clone(), stop_consuming.clone()),
        checker::consumer(
            others[1].endpoint(),
            QUEUE,
            log.clone(),
            stop_consuming.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;

    signal(&owner.child, "STOP");
    tokio::time::sleep(Duration::from_secs(ttl_seconds() * 3)).await;
    // Taken over while the owner was paused.
    let taken_by = owner_address(&db, QUEUE).await;
    assert_ne!(
        taken_by, owner_addr,
        "the paused owner's queue was not taken over"
    );
    assert!(epoch(&db, QUEUE).await > epoch_before);
    signal(&owner.child, "CONT");
    // The woken replica keeps being talked to directly for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_producing.cancel();
    for producer in producers {
        producer.await.expect("producer");
    }
    checker::drain(
        &log,
        Duration::from_secs(30 + u64::from(VISIBILITY_SECONDS)),
    )
    .await;
    stop_consuming.cancel();
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    checker::check(&log);
    // It noticed it had lost its lease, rather than serving on from memory.
    assert!(
        owner.log_contains("no heartbeat reached PostgreSQL within the member TTL"),
        "the woken replica did not drop its queues"
    );
    // Still a working replica: it forwards to the new owner.
    let mut direct = client_of(owner).await;
    let mut sent = None;
    for _ in 0..100 {
        match direct
            .send_message(pb::SendMessageRequest {
                queue_name: QUEUE.into(),
                body: b"after".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .await
        {
            Ok(response) => {
                sent = Some(response.into_inner());
                break;
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sent.is_some(),
        "the woken replica never served the queue again"
    );
    let log = log.lock().expect("log");
    eprintln!(
        "SIGSTOP: {} sends acknowledged, {} deleted, {} errors seen (retried)",
        log.sent.len(),
        log.deleted.len(),
        log.errors.len()
    );
}

/// The fence itself: once the queue's epoch has moved on in PostgreSQL (as a takeover moves
/// it), the owner's next write commits nothing and answers UNAVAILABLE, whether the write
/// reaches the writer before the owner notices or after.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_after_the_epoch_moved_on_commits_nothing() {
    let Some(database) = Database::create("fence").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas(dir.path(), &database.url(), 1);
    const QUEUE: &str = "fenced";
    let mut client = client_of(&replicas[0]).await;
    common::create(&mut client, QUEUE, common::attrs()).await;
    common::send(&mut client, QUEUE, b"before").await;
    let db = database.client().await;
    // Another member, alive (its heartbeat kept fresh) but unreachable, takes the queue.
    db.execute(
        "INSERT INTO spool.members (id, address, heartbeat_at) VALUES ('usurper', '127.0.0.1:9', now())",
        &[],
    )
    .await
    .expect("a member");
    let beating = tokio::spawn({
        let db = database.client().await;
        async move {
            loop {
                let _ = db
                    .execute(
                        "UPDATE spool.members SET heartbeat_at = now() WHERE id = 'usurper'",
                        &[],
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    db.execute(
        "UPDATE spool.queues SET owner = 'usurper', owner_epoch = owner_epoch + 1 WHERE name = $1",
        &[&QUEUE],
    )
    .await
    .expect("take the queue");
    assert_eq!(rows_of(&db, QUEUE).await, 1);
    for attempt in 0..20 {
        let status = client
            .send_message(pb::SendMessageRequest {
                queue_name: QUEUE.into(),
                body: format!("after-{attempt}").into_bytes().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .await
            .expect_err("the queue is another's");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows_of(&db, QUEUE).await,
        1,
        "a write committed after the epoch moved on"
    );
    beating.abort();
}

async fn rows_of(db: &tokio_postgres::Client, queue: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM spool.messages m JOIN spool.queues q ON q.id = m.queue_id
          WHERE q.name = $1",
        &[&queue],
    )
    .await
    .expect("count")
    .get(0)
}

/// A long poll forwarded to an owner that dies ends UNAVAILABLE (retryable) at once, not when
/// its wait is over.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_on_an_owner_that_dies_ends_unavailable() {
    let Some(database) = Database::create("dying_poll").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = replicas(dir.path(), &database.url(), 2);
    const QUEUE: &str = "quiet";
    common::create(&mut client_of(&replicas[0]).await, QUEUE, common::attrs()).await;
    let db = database.client().await;
    let owner = owner_address(&db, QUEUE).await;
    let (_, others) = split(&replicas, &owner);
    let mut client = client_of(others[0]).await;
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let outcome = common::receive_with(
            &mut client,
            pb::ReceiveMessagesRequest {
                queue_name: QUEUE.into(),
                max_messages: 1,
                wait_seconds: Some(25),
                visibility_timeout_seconds: None,
            },
        )
        .await;
        (outcome, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let index = replicas
        .iter()
        .position(|replica| replica.addr.to_string() == owner)
        .expect("owner");
    replicas.remove(index).kill();
    let (outcome, elapsed) = poll.await.expect("join");
    let status = outcome.expect_err("the owner died under the poll");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "ended only after {elapsed:?}"
    );
}
