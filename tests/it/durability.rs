//! Durability: what survives a graceful restart, a SIGKILL under load, and the passage of
//! retention; and which data directories the server refuses to touch.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use spool::pb;
use tokio::time::Instant;
use tonic::Code;

use crate::common::*;

/// Wall-clock now, in milliseconds since the epoch (the server's timestamps are wall-clock).
fn wall_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("ms fit in i64")
}

fn ts_ms(timestamp: Option<&prost_types::Timestamp>) -> i64 {
    let t = timestamp.expect("timestamp is set");
    t.seconds * 1_000 + i64::from(t.nanos / 1_000_000)
}

fn ms_to_ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

fn body_text(message: &pb::ReceivedMessage) -> String {
    String::from_utf8(message.body.to_vec()).expect("utf-8 body")
}

fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64
    })
}

fn receive_request(
    queue: &str,
    max: u32,
    wait: u32,
    visibility: Option<u32>,
) -> pb::ReceiveMessagesRequest {
    pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: max,
        wait_seconds: Some(wait),
        visibility_timeout_seconds: visibility,
    }
}

fn backlog(stats: &pb::QueueStats) -> u64 {
    stats.active_messages + stats.inactive_messages + stats.delayed_messages
}

// ---- 1. graceful restart ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_undeleted_messages_attributes_and_rewindable_deletes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;

    let plain_attributes = pb::QueueAttributes {
        visibility_timeout_seconds: Some(45),
        polling_wait_seconds: Some(3),
        max_message_size: Some(2_048),
        message_retention_seconds: Some(7_200),
        rewind_seconds: Some(0),
        max_backlog: Some(500),
        ..Default::default()
    };
    let plain_before = create(&mut client, "plain", plain_attributes).await;
    let rewind_attributes = pb::QueueAttributes {
        rewind_seconds: Some(3_600),
        ..attrs()
    };
    let rewind_before = create(&mut client, "rewinding", rewind_attributes).await;

    // plain: p0..p9. p0..p3 received and deleted; p4 received with a long visibility timeout
    // (its handle must still work after the restart); p5, p6 received with a 1 s timeout (they
    // come back, received once already); p7..p9 never received.
    let bodies: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    batch_send(&mut client, "plain", &refs).await;

    let to_delete = receive_with(&mut client, receive_request("plain", 4, 0, Some(60)))
        .await
        .expect("receive");
    assert_eq!(
        to_delete.iter().map(body_text).collect::<Vec<_>>(),
        ["p0", "p1", "p2", "p3"]
    );
    for message in &to_delete {
        delete(&mut client, "plain", &message.receipt_handle)
            .await
            .expect("delete");
    }
    let held = receive_with(&mut client, receive_request("plain", 1, 0, Some(600)))
        .await
        .expect("receive");
    assert_eq!(held.iter().map(body_text).collect::<Vec<_>>(), ["p4"]);
    let expiring = receive_with(&mut client, receive_request("plain", 2, 0, Some(1)))
        .await
        .expect("receive");
    assert_eq!(
        expiring.iter().map(body_text).collect::<Vec<_>>(),
        ["p5", "p6"]
    );

    // rewinding: r0..r2; r0 and r1 received and deleted (kept for rewind), r2 left visible.
    let rewind_from_ms = wall_ms() - 2_000;
    batch_send(&mut client, "rewinding", &[b"r0", b"r1", b"r2"]).await;
    let rewound = receive_with(&mut client, receive_request("rewinding", 2, 0, Some(60)))
        .await
        .expect("receive");
    assert_eq!(
        rewound.iter().map(body_text).collect::<Vec<_>>(),
        ["r0", "r1"]
    );
    for message in &rewound {
        delete(&mut client, "rewinding", &message.receipt_handle)
            .await
            .expect("delete");
    }
    assert_eq!(stats(&mut client, "rewinding").await.rewindable_messages, 2);

    assert_eq!(server.terminate(), Some(0), "SIGTERM must end spool with 0");

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;

    // Attributes and times survive.
    for before in [&plain_before, &rewind_before] {
        let after = get(&mut client, &before.name).await;
        assert_eq!(after.attributes, before.attributes, "{}", before.name);
        assert_eq!(after.create_time, before.create_time, "{}", before.name);
        assert_eq!(after.update_time, before.update_time, "{}", before.name);
    }

    // plain: p4..p9 are left, p4 in flight; nothing kept for rewind.
    let plain_stats = stats(&mut client, "plain").await;
    assert_eq!(backlog(&plain_stats), 6, "{plain_stats:?}");
    assert!(plain_stats.inactive_messages >= 1, "{plain_stats:?}");
    assert_eq!(plain_stats.rewindable_messages, 0, "{plain_stats:?}");
    // The receipt handle of the receive before the restart still deletes its message.
    delete(&mut client, "plain", &held[0].receipt_handle)
        .await
        .expect("delete with a handle issued before the restart");

    let mut drained: Vec<pb::ReceivedMessage> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = receive_with(&mut client, receive_request("plain", 16, 1, Some(600)))
            .await
            .expect("receive");
        drained.extend(got);
        if backlog(&stats(&mut client, "plain").await) == drained.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plain was not drained after 20 s; got {:?}",
            drained.iter().map(body_text).collect::<Vec<_>>()
        );
    }
    let mut got: Vec<(String, u32)> = drained
        .iter()
        .map(|m| (body_text(m), m.dequeue_count))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("p5".to_string(), 2),
            ("p6".to_string(), 2),
            ("p7".to_string(), 1),
            ("p8".to_string(), 1),
            ("p9".to_string(), 1),
        ],
        "exactly the undeleted messages come back, once, with their receive counts"
    );
    for message in &drained {
        delete(&mut client, "plain", &message.receipt_handle)
            .await
            .expect("delete");
    }
    assert_eq!(backlog(&stats(&mut client, "plain").await), 0);

    // rewinding: r2 visible, r0 and r1 still rewindable.
    let rewind_stats = stats(&mut client, "rewinding").await;
    assert_eq!(
        (
            rewind_stats.active_messages,
            rewind_stats.inactive_messages,
            rewind_stats.rewindable_messages
        ),
        (1, 0, 2),
        "{rewind_stats:?}"
    );
    let visible = receive(&mut client, "rewinding", 16).await;
    assert_eq!(visible.iter().map(body_text).collect::<Vec<_>>(), ["r2"]);
    let restored = client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "rewinding".into(),
            start_time: Some(ms_to_ts(rewind_from_ms)),
        })
        .await
        .expect("rewind")
        .into_inner()
        .restored_messages;
    assert_eq!(restored, 2);
    let again = receive(&mut client, "rewinding", 16).await;
    assert_eq!(
        again
            .iter()
            .map(|m| (body_text(m), m.dequeue_count))
            .collect::<Vec<_>>(),
        [("r0".to_string(), 2), ("r1".to_string(), 2)]
    );

    assert_eq!(server.terminate(), Some(0));
}

// ---- 2. SIGKILL under load ----

const SENDERS: usize = 8;
const BATCH: usize = 16;
const KILL_ROUNDS: usize = 3;

/// Sends batches of unique bodies until the server goes away. Returns (acknowledged, attempted,
/// the highest message id acknowledged).
async fn send_until_killed(
    endpoint: String,
    queue: String,
    prefix: String,
    killed: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>, u64) {
    let mut client = connect(&endpoint).await;
    let mut acked = Vec::new();
    let mut attempted = Vec::new();
    let mut highest_id = 0;
    for batch in 0.. {
        let bodies: Vec<String> = (0..BATCH)
            .map(|i| format!("{prefix}-b{batch}-m{i}"))
            .collect();
        attempted.extend(bodies.iter().cloned());
        let request = pb::BatchSendMessagesRequest {
            queue_name: queue.clone(),
            entries: bodies
                .iter()
                .map(|body| pb::BatchSendEntry {
                    body: body.clone().into_bytes().into(),
                    delay_seconds: None,
                    ..Default::default()
                })
                .collect(),
        };
        match client.batch_send_messages(request).await {
            Ok(response) => {
                let ids = response.into_inner().message_ids;
                assert_eq!(ids.len(), BATCH);
                for id in ids {
                    highest_id = highest_id.max(id.parse::<u64>().expect("numeric id"));
                }
                acked.extend(bodies);
            }
            // The kill: this batch may or may not be stored.
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(status) => panic!("send failed before the kill: {status:?}"),
        }
    }
    (acked, attempted, highest_id)
}

/// What the consumer knows when the server is gone.
#[derive(Default)]
struct Consumed {
    /// Bodies whose delete was acknowledged.
    deleted: Vec<String>,
    /// The body whose delete was under way at the kill: it may or may not be deleted.
    maybe_deleted: Option<String>,
}

/// Receives messages and deletes those whose body ends in an even digit (about half), until
/// the server goes away.
async fn consume_until_killed(
    endpoint: String,
    queue: String,
    killed: Arc<AtomicBool>,
) -> Consumed {
    let mut client = connect(&endpoint).await;
    let mut consumed = Consumed::default();
    loop {
        let messages = match receive_with(&mut client, receive_request(&queue, 16, 1, None)).await {
            Ok(messages) => messages,
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(status) => panic!("receive failed before the kill: {status:?}"),
        };
        for message in messages {
            let body = body_text(&message);
            // The same message always gets the same decision, however often it comes.
            let last_digit = body.bytes().last().unwrap_or(b'0');
            if !last_digit.is_multiple_of(2) {
                continue;
            }
            match delete(&mut client, &queue, &message.receipt_handle).await {
                Ok(()) => consumed.deleted.push(body),
                // Its 2 s visibility timeout ended first: it is undeleted, and comes again.
                Err(status) if status.code() == Code::FailedPrecondition => {}
                Err(_) if killed.load(Ordering::SeqCst) => {
                    consumed.maybe_deleted = Some(body);
                    return consumed;
                }
                Err(status) => panic!("delete failed before the kill: {status:?}"),
            }
        }
    }
    consumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_send_and_revives_no_acknowledged_delete() {
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..KILL_ROUNDS {
        let queue = format!("load-{round}");
        let server = ChildServer::start(dir.path());
        let mut client = server.client().await;
        create(
            &mut client,
            &queue,
            pb::QueueAttributes {
                visibility_timeout_seconds: Some(2),
                ..attrs()
            },
        )
        .await;

        let killed = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|task| {
                tokio::spawn(send_until_killed(
                    server.endpoint(),
                    queue.clone(),
                    format!("r{round}-t{task}"),
                    killed.clone(),
                ))
            })
            .collect();
        let consumer = tokio::spawn(consume_until_killed(
            server.endpoint(),
            queue.clone(),
            killed.clone(),
        ));

        let delay = Duration::from_millis(200 + random_u64() % 1_300);
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();

        let mut acked = HashSet::new();
        let mut attempted = HashSet::new();
        let mut highest_id_before = 0;
        for sender in senders {
            let (a, t, highest) = tokio::time::timeout(Duration::from_secs(30), sender)
                .await
                .expect("sender ends after the kill")
                .expect("sender task");
            acked.extend(a);
            attempted.extend(t);
            highest_id_before = highest_id_before.max(highest);
        }
        let consumed = tokio::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("consumer ends after the kill")
            .expect("consumer task");
        let deleted: HashSet<String> = consumed.deleted.into_iter().collect();
        assert!(!acked.is_empty(), "round {round}: no send was acknowledged");

        // Restart and drain: every message is received once, and kept in flight meanwhile.
        let restart = Instant::now();
        let server = ChildServer::start(dir.path());
        let mut client = server.client().await;
        let mut drained: HashMap<String, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = receive_with(&mut client, receive_request(&queue, 16, 0, Some(600)))
                .await
                .expect("drain receive");
            if got.is_empty() {
                // Messages in flight at the kill come back within their 2 s timeout.
                let s = stats(&mut client, &queue).await;
                if s.active_messages == 0
                    && s.delayed_messages == 0
                    && s.inactive_messages == drained.len() as u64
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: not drained after 60 s: {s:?}, {} received",
                    drained.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for message in got {
                let id: u64 = message.message_id.parse().expect("numeric id");
                highest_id_before = highest_id_before.max(id);
                *drained.entry(body_text(&message)).or_default() += 1;
            }
        }
        // Ids are never handed out twice, even those of a commit the kill cut short.
        let new_id: u64 = send(&mut client, &queue, b"after the restart")
            .await
            .parse()
            .expect("numeric id");
        assert!(
            new_id > highest_id_before,
            "round {round}: id {new_id} after the restart, {highest_id_before} before it"
        );

        let lost: Vec<&String> = acked
            .iter()
            .filter(|body| !deleted.contains(*body) && !drained.contains_key(*body))
            .filter(|body| consumed.maybe_deleted.as_ref() != Some(*body))
            .collect();
        let revived: Vec<&String> = deleted
            .iter()
            .filter(|body| drained.contains_key(*body))
            .collect();
        let duplicated: Vec<(&String, &u32)> = drained.iter().filter(|(_, n)| **n > 1).collect();
        let unknown: Vec<&String> = drained
            .keys()
            .filter(|body| !attempted.contains(*body))
            .collect();
        println!(
            "round {round}: killed after {delay:?}; {} sends acknowledged of {} attempted, \
             {} deletes acknowledged, {} received after the restart ({:?} to restart and drain)",
            acked.len(),
            attempted.len(),
            deleted.len(),
            drained.len(),
            restart.elapsed()
        );
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(
            revived.is_empty(),
            "round {round}: {} acknowledged deletes came back, e.g. {:?}",
            revived.len(),
            &revived[..revived.len().min(5)]
        );
        assert!(
            duplicated.is_empty(),
            "round {round}: delivered twice within a 600 s visibility timeout: {:?}",
            &duplicated[..duplicated.len().min(5)]
        );
        assert!(
            unknown.is_empty(),
            "round {round}: bodies that were never sent: {:?}",
            &unknown[..unknown.len().min(5)]
        );

        client
            .delete_queue(pb::DeleteQueueRequest {
                queue_name: queue.clone(),
            })
            .await
            .expect("delete queue");
        assert_eq!(server.terminate(), Some(0));
    }
}

// ---- 3. in-flight message after a crash ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_message_stays_in_flight_across_a_crash() {
    const QUEUE: &str = "inflight";
    /// Clock tolerance between this process and the server (same machine, same wall clock).
    const SLACK_MS: i64 = 100;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, QUEUE, attrs()).await; // visibility timeout 30 s
    send(&mut client, QUEUE, b"in flight at the crash").await;
    // 5 s of visibility: the kill and restart must fit in it even on a loaded machine (2 s
    // did not always, with the rest of the suite running beside it).
    let received = receive_with(&mut client, receive_request(QUEUE, 1, 0, Some(5)))
        .await
        .expect("receive");
    assert_eq!(received.len(), 1);
    let first = &received[0];
    assert_eq!(first.dequeue_count, 1);
    let next_visible_ms = ts_ms(first.next_visible_time.as_ref());

    // Receives are recorded lazily (nobody waits for that write). A durable write through the
    // same queue afterwards is committed after it, so once acknowledged the receive is on disk.
    client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: QUEUE.into(),
            attributes: Some(pb::QueueAttributes {
                max_message_size: Some(4_096),
                ..attrs()
            }),
        })
        .await
        .expect("update queue");
    server.kill();

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;

    // After the restart it is in flight: counted as such, not receivable, and its receive is
    // on disk as it was made. Its coming back when the visibility timeout ends is the queue's
    // timer, set from what recovery read (the queue actor's restart test covers it on storage
    // that recovers what SQLite does), so it is not waited for here.
    let s = stats(&mut client, QUEUE).await;
    let got = receive(&mut client, QUEUE, 16).await;
    let checked_at = wall_ms();
    assert!(
        checked_at < next_visible_ms - SLACK_MS,
        "the restart took longer than the 5 s visibility timeout; nothing was checked"
    );
    assert_eq!((s.active_messages, s.inactive_messages), (0, 1), "{s:?}");
    assert!(
        got.is_empty(),
        "received {}ms before its next_visible_time",
        next_visible_ms - checked_at
    );
    let stored = stored_receive(dir.path());
    assert_eq!(
        stored,
        (1, ts_ms(first.first_dequeue_time.as_ref()), next_visible_ms),
        "(dequeue_count, first_dequeue_ms, visible_at_ms) on disk"
    );

    assert_eq!(server.terminate(), Some(0));
}

// ---- 4. retention removes rows from disk ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_messages_and_their_rows() {
    const QUEUE: &str = "short-lived";
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(
        &mut client,
        QUEUE,
        pb::QueueAttributes {
            message_retention_seconds: Some(60),
            ..attrs()
        },
    )
    .await;
    batch_send(&mut client, QUEUE, &[b"a", b"b", b"c", b"d", b"e"]).await;
    // Two of them in flight: retention ends them too, received or not.
    assert_eq!(receive(&mut client, QUEUE, 2).await.len(), 2);
    let before = stats(&mut client, QUEUE).await;
    assert_eq!((before.active_messages, before.inactive_messages), (3, 2));
    let dir = server.data_dir.clone();
    assert_eq!(message_rows(&dir), 5, "sent messages are stored");

    server.clock.skip_ahead(Duration::from_secs(61));

    let after = stats(&mut client, QUEUE).await;
    assert_eq!(backlog(&after), 0, "{after:?}");
    assert_eq!(after.oldest_message_time, None);
    assert!(receive(&mut client, QUEUE, 16).await.is_empty());

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = message_rows(&dir);
        if rows == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rows} expired rows still on disk after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

// ---- 5. data directories the server must refuse ----

/// Runs `spool serve` on `data_dir`, expecting it to give up; returns its exit status and
/// stderr.
fn assert_refused(status: ExitStatus, stderr: &str, keyword: &str) {
    assert!(
        matches!(status.code(), Some(code) if code != 0),
        "expected a non-zero exit, got {status:?}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(keyword),
        "stderr does not say {keyword:?}: {stderr}"
    );
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_directories_are_refused_untouched() {
    if sqlite_only(
        "checks data directories and the database file, which a PostgreSQL server does not use",
    ) {
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");

    // (a) A regular file.
    let file = temp.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write file");
    let (status, stderr) = serve_expecting_exit(&file).await;
    assert_refused(status, &stderr, "not a directory");
    assert_eq!(std::fs::read(&file).expect("read"), b"not a directory");

    // (b) Another application's SQLite database.
    let foreign_dir = temp.path().join("foreign");
    std::fs::create_dir(&foreign_dir).expect("mkdir");
    let foreign_db = foreign_dir.join("spool.db");
    {
        let conn = Connection::open(&foreign_db).expect("create foreign db");
        conn.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL);
             INSERT INTO accounts (owner) VALUES ('alice'), ('bob');",
        )
        .expect("fill foreign db");
    }
    let foreign_bytes = std::fs::read(&foreign_db).expect("read");
    let foreign_listing = dir_listing(&foreign_dir);
    let (status, stderr) = serve_expecting_exit(&foreign_dir).await;
    assert_refused(status, &stderr, "not a Spool database");
    assert_eq!(std::fs::read(&foreign_db).expect("read"), foreign_bytes);
    assert_eq!(dir_listing(&foreign_dir), foreign_listing);

    // (c) Garbage where the database should be.
    let garbage_dir = temp.path().join("garbage");
    std::fs::create_dir(&garbage_dir).expect("mkdir");
    let garbage_db = garbage_dir.join("spool.db");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let garbage: Vec<u8> = (0..8_192)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&garbage_db, &garbage).expect("write garbage");
    let (status, stderr) = serve_expecting_exit(&garbage_dir).await;
    assert_refused(status, &stderr, "not a Spool database");
    assert_eq!(std::fs::read(&garbage_db).expect("read"), garbage);
    assert_eq!(dir_listing(&garbage_dir), ["spool.db"]);

    // (d) A directory in use by a running server.
    let used_dir = temp.path().join("in-use");
    let server = ChildServer::start(&used_dir);
    let mut client = server.client().await;
    create(&mut client, "still-served", attrs()).await;
    let (status, stderr) = serve_expecting_exit(&used_dir).await;
    assert_refused(status, &stderr, "in use");
    // The first server is unaffected.
    send(&mut client, "still-served", b"after the second start").await;
    assert_eq!(receive(&mut client, "still-served", 1).await.len(), 1);
    assert_eq!(server.terminate(), Some(0));
}

/// A commit that cannot be written (here: the database at its size cap, as on a full disk)
/// fails its requests with UNAVAILABLE, acknowledges nothing of them, and the server goes on
/// serving what it can: receives, deletes, and sends again once deletes made room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_sends_with_unavailable_and_keeps_serving() {
    if sqlite_only("--max-database-bytes caps the SQLite file; PostgreSQL space is the operator's")
    {
        return;
    }
    let server =
        TestServer::start_with(|config| config.settings.max_database_bytes = Some(512 * 1024))
            .await;
    let mut client = server.client().await;
    create(
        &mut client,
        "q",
        spool::pb::QueueAttributes {
            max_message_size: Some(1_048_576),
            ..attrs()
        },
    )
    .await;
    let body = vec![7u8; 16 * 1024];
    let mut sent = 0;
    let refused = loop {
        match client
            .send_message(spool::pb::SendMessageRequest {
                queue_name: "q".into(),
                body: body.clone().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .await
        {
            Ok(_) => sent += 1,
            Err(status) => break status,
        }
        assert!(sent < 1_000, "the size cap never took effect");
    };
    let message = assert_error(&refused, tonic::Code::Unavailable, 6000);
    assert!(message.contains("full"), "{message}");
    assert!(sent > 0);
    // Exactly the acknowledged sends are there.
    assert_eq!(stats(&mut client, "q").await.active_messages, sent);
    // Receives and deletes still work, and free room for new sends.
    let mut freed = 0;
    while freed < 8 {
        for message in receive(&mut client, "q", 16).await {
            delete(&mut client, "q", &message.receipt_handle)
                .await
                .expect("delete while full");
            freed += 1;
        }
    }
    send(&mut client, "q", &body).await;
    server.stop().await;
}

/// Steady traffic reuses the space of deleted messages: after the first rounds the database file
/// stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_reuses_space() {
    if sqlite_only("measures the size of spool.db") {
        return;
    }
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let body = vec![9u8; 4 * 1024];
    let bodies: Vec<&[u8]> = (0..16).map(|_| &body[..]).collect();
    let db = server.data_dir.join("spool.db");
    let mut sizes = Vec::new();
    for _round in 0..6 {
        for _ in 0..32 {
            batch_send(&mut client, "q", &bodies).await;
        }
        loop {
            let got = receive(&mut client, "q", 16).await;
            if got.is_empty() {
                break;
            }
            let handles = got.iter().map(|m| m.receipt_handle.clone()).collect();
            let response = client
                .batch_delete_messages(spool::pb::BatchDeleteMessagesRequest {
                    queue_name: "q".into(),
                    receipt_handles: handles,
                })
                .await
                .expect("delete")
                .into_inner();
            assert!(response.failures.is_empty());
        }
        // Let the background checkpoint copy the WAL into the file.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sizes.push(std::fs::metadata(&db).expect("db").len());
    }
    // Each round writes 2 MiB of bodies; without reuse the file would grow by that much a round.
    let settled = sizes[1];
    let last = *sizes.last().expect("rounds");
    assert!(
        last <= settled + 1024 * 1024,
        "the database keeps growing: {sizes:?}"
    );
    server.stop().await;
}

// ---- 6. the schema on disk: migration from version 1, and a deleted queue's rows ----

/// Spool's database layout version 1, as it created it: with the index `messages_by_queue`.
const SCHEMA_V1: &str = "
CREATE TABLE queues (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    visibility_timeout_seconds INTEGER NOT NULL,
    polling_wait_seconds INTEGER NOT NULL,
    max_message_size INTEGER NOT NULL,
    message_retention_seconds INTEGER NOT NULL,
    rewind_seconds INTEGER NOT NULL,
    max_backlog INTEGER NOT NULL,
    create_time_ms INTEGER NOT NULL,
    update_time_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    queue_id INTEGER NOT NULL,
    enqueue_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    first_dequeue_ms INTEGER NOT NULL DEFAULT 0,
    receipt_nonce INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
) STRICT;
CREATE INDEX messages_by_queue ON messages (queue_id, id);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
PRAGMA application_id = 0x53504f4c;
PRAGMA user_version = 1;
";

/// Writes a version-1 database: queues 1 ("alpha") and 2 ("beta") with interleaved messages
/// (`alpha-N` and `beta-N`; beta-2 delayed by ten minutes), and one row of a queue 9 that does
/// not exist. Returns the ids of alpha's and beta's messages.
fn write_v1_database(db: &Path) -> (Vec<i64>, Vec<i64>) {
    let conn = Connection::open(db).expect("create v1 db");
    conn.execute_batch(SCHEMA_V1).expect("v1 schema");
    let now = wall_ms();
    for (id, name) in [(1, "alpha"), (2, "beta")] {
        conn.execute(
            "INSERT INTO queues VALUES (?1, ?2, 30, 0, 65536, 3600, 0, 1000, ?3, ?3)",
            rusqlite::params![id, name, now - 60_000],
        )
        .expect("insert queue");
    }
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    for n in 0..6_i64 {
        let id = 100 + 2 * n;
        let enqueue_ms = now - 50_000 + n;
        let insert = "INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body)
                      VALUES (?1, ?2, ?3, ?4, ?5)";
        conn.execute(
            insert,
            rusqlite::params![
                id,
                1,
                enqueue_ms,
                enqueue_ms,
                format!("alpha-{n}").into_bytes()
            ],
        )
        .expect("insert alpha");
        alpha.push(id);
        if n < 3 {
            let visible_at_ms = if n == 2 { now + 600_000 } else { enqueue_ms };
            let body = format!("beta-{n}").into_bytes();
            conn.execute(
                insert,
                rusqlite::params![id + 1, 2, enqueue_ms, visible_at_ms, body],
            )
            .expect("insert beta");
            beta.push(id + 1);
        }
    }
    conn.execute(
        "INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body)
         VALUES (50, 9, ?1, ?1, x'00')",
        [now],
    )
    .expect("insert orphan");
    conn.execute_batch(
        "INSERT INTO counters VALUES ('next_queue_id', 10), ('next_message_id', 200);",
    )
    .expect("counters");
    (alpha, beta)
}

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open spool.db")
}

fn pragma(db: &Path, name: &str) -> i64 {
    read_only(db)
        .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .expect("pragma")
}

fn index_names(db: &Path) -> Vec<String> {
    let conn = read_only(db);
    let mut statement = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("index names")
}

fn sqlite_rows_of_queue(db: &Path, queue_id: i64) -> i64 {
    read_only(db)
        .query_row(
            "SELECT count(*) FROM messages WHERE queue_id = ?1",
            [queue_id],
            |row| row.get(0),
        )
        .expect("count rows")
}

/// A database written by a Spool with schema version 1 opens: it is migrated to the current
/// version (its index replaced by version 7's), every message comes back to its own queue, oldest first, and a row of a queue
/// that does not exist is skipped and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_and_keeps_its_messages() {
    if sqlite_only("writes a SQLite database of schema version 1") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("spool.db");
    let (alpha_ids, beta_ids) = write_v1_database(&db);
    assert_eq!(index_names(&db), ["messages_by_queue"]);

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let alpha = receive(&mut client, "alpha", 16).await;
    assert_eq!(
        alpha.iter().map(body_text).collect::<Vec<_>>(),
        [
            "alpha-0", "alpha-1", "alpha-2", "alpha-3", "alpha-4", "alpha-5"
        ]
    );
    let ids = |messages: &[pb::ReceivedMessage]| -> Vec<i64> {
        messages
            .iter()
            .map(|m| m.message_id.parse().expect("numeric id"))
            .collect()
    };
    assert_eq!(ids(&alpha), alpha_ids);
    let beta_stats = stats(&mut client, "beta").await;
    assert_eq!(
        (beta_stats.active_messages, beta_stats.delayed_messages),
        (2, 1)
    );
    let beta = receive(&mut client, "beta", 16).await;
    assert_eq!(
        beta.iter().map(body_text).collect::<Vec<_>>(),
        ["beta-0", "beta-1"]
    );
    assert_eq!(ids(&beta), beta_ids[..2]);
    // Ids go on from the stored counter.
    let sent: u64 = send(&mut client, "alpha", b"new")
        .await
        .parse()
        .expect("id");
    assert!(sent >= 200, "{sent}");

    // The orphan row is removed lazily, by a later group commit.
    until_no_rows(dir.path(), 9, "the orphan row").await;
    server.stop().await;

    assert_eq!(pragma(&db, "user_version"), 8);
    assert_eq!(pragma(&db, "application_id"), 0x5350_4f4c);
    let secret: Vec<u8> = read_only(&db)
        .query_row(
            "SELECT value FROM secrets WHERE name = 'receipt_key'",
            [],
            |row| row.get(0),
        )
        .expect("the receipt key");
    assert_eq!(secret.len(), 32);
    // Version 1's index went in version 2; version 7 made the two of the window.
    assert_eq!(index_names(&db), ["messages_by_queue", "messages_hidden"]);
    assert_eq!(sqlite_rows_of_queue(&db, 1), 7);
    assert_eq!(sqlite_rows_of_queue(&db, 2), 3);

    // And a version-2 database opens as it is.
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(backlog(&stats(&mut client, "alpha").await), 7);
    server.stop().await;
}

/// Sends batches until the queue is gone (or 200 batches).
async fn send_until_deleted(mut client: Client, queue: &'static str) {
    for _ in 0..200 {
        let entries = (0..16)
            .map(|_| pb::BatchSendEntry {
                body: b"racing".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .collect();
        let sent = client
            .batch_send_messages(pb::BatchSendMessagesRequest {
                queue_name: queue.into(),
                entries,
            })
            .await;
        if sent.is_err() {
            break;
        }
    }
}

/// Deleting a queue removes every row of it from disk, whatever state its messages were in
/// (visible, delayed, in flight, kept for rewind, being sent), and nothing of another queue; the
/// name re-created starts empty, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_removes_all_of_its_rows() {
    const DOOMED: &str = "doomed";
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path();
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let rewinding = pb::QueueAttributes {
        rewind_seconds: Some(3_600),
        ..attrs()
    };
    create(&mut client, DOOMED, rewinding).await;
    create(&mut client, "bystander", attrs()).await;
    for round in 0..5 {
        let doomed = format!("doomed-{round}");
        batch_send(&mut client, DOOMED, &[doomed.as_bytes(); 4]).await;
        send(
            &mut client,
            "bystander",
            format!("bystander-{round}").as_bytes(),
        )
        .await;
    }
    send_delayed(&mut client, DOOMED, b"delayed", 600).await;
    let received = receive_with(&mut client, receive_request(DOOMED, 6, 0, Some(600)))
        .await
        .expect("receive");
    for message in &received[..3] {
        delete(&mut client, DOOMED, &message.receipt_handle)
            .await
            .expect("delete, kept for rewind");
    }
    let doomed_id = queue_id(db, DOOMED);
    assert_eq!(rows_of_queue(db, doomed_id), 21);

    // Sends racing the delete: some are committed just before it.
    let racers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(send_until_deleted(client.clone(), DOOMED)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows_of_queue(db, doomed_id) == 21 {
        assert!(Instant::now() < deadline, "the racing sends never landed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: DOOMED.into(),
        })
        .await
        .expect("delete queue");
    for racer in racers {
        racer.await.expect("racer");
    }

    assert_eq!(rows_of_queue(db, doomed_id), 0);
    assert_eq!(rows_of_queue(db, queue_id(db, "bystander")), 5);
    create(&mut client, DOOMED, attrs()).await;
    let recreated = stats(&mut client, DOOMED).await;
    assert_eq!((backlog(&recreated), recreated.rewindable_messages), (0, 0));
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    let recreated = stats(&mut client, DOOMED).await;
    assert_eq!((backlog(&recreated), recreated.rewindable_messages), (0, 0));
    assert!(receive(&mut client, DOOMED, 16).await.is_empty());
    assert_eq!(backlog(&stats(&mut client, "bystander").await), 5);
    server.stop().await;
}

/// Sends `count` messages to `queue` in batches of 16.
async fn fill(client: &mut Client, queue: &str, count: usize) {
    let body = [7u8; 64];
    for _ in 0..count / 16 {
        batch_send(client, queue, &[&body[..]; 16]).await;
    }
}

/// Waits until the queue with this id has no row left on disk.
async fn until_no_rows(db: &Path, queue_id: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows_of_queue(db, queue_id) > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: {} rows left",
            rows_of_queue(db, queue_id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A large queue's rows are removed in slices after the queue itself (so no one commit holds
/// the writer for long), and all of them go, also when the server is killed right after the
/// delete: recovery removes what is left of a queue that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_queue_is_deleted_in_slices_even_across_a_crash() {
    // Over two slices of 4,096 rows (spool::storage::REMOVE_SLICE).
    const MESSAGES: usize = 9_600;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path();
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "bystander", attrs()).await;
    send(&mut client, "bystander", b"stays").await;

    for (round, kill) in [(0, false), (1, true)] {
        let name = format!("large-{round}");
        create(&mut client, &name, attrs()).await;
        fill(&mut client, &name, MESSAGES).await;
        let id = queue_id(db, &name);
        assert_eq!(rows_of_queue(db, id), MESSAGES as i64);
        client
            .delete_queue(pb::DeleteQueueRequest {
                queue_name: name.clone(),
            })
            .await
            .expect("delete queue");
        if kill {
            // Killed right away: some slices may not be committed yet.
            server.kill();
            let server = ChildServer::start(dir.path());
            let mut client = server.client().await;
            until_no_rows(db, id, "after the restart").await;
            create(&mut client, &name, attrs()).await;
            assert_eq!(backlog(&stats(&mut client, &name).await), 0);
            assert_eq!(backlog(&stats(&mut client, "bystander").await), 1);
            assert_eq!(server.terminate(), Some(0));
            return;
        }
        until_no_rows(db, id, "after the delete").await;
        assert_eq!(backlog(&stats(&mut client, "bystander").await), 1);
    }
}
