//! Receipt handles cannot lie: a delete answers OK only for a message that the handle's own
//! receive deleted (issue 11). Wrong queue, forged, recreated queue, stale handles in any batch
//! order, across restarts; and what the server does with a data directory or database file it
//! must not share.

use std::time::Duration;

use spool::pb;
use tonic::Code;

use crate::common::*;

fn short_visibility() -> pb::QueueAttributes {
    pb::QueueAttributes {
        visibility_timeout_seconds: Some(5),
        ..attrs()
    }
}

async fn batch_delete(
    client: &mut Client,
    queue: &str,
    handles: &[&str],
) -> Vec<pb::DeleteFailure> {
    client
        .batch_delete_messages(pb::BatchDeleteMessagesRequest {
            queue_name: queue.into(),
            receipt_handles: handles.iter().map(|h| h.to_string()).collect(),
        })
        .await
        .expect("batch delete")
        .into_inner()
        .failures
}

/// Receives the one message of `queue` twice: the first receive's visibility timeout is made to
/// pass by moving the server's clock. Returns (older handle, newest handle).
async fn two_handles(server: &TestServer, client: &mut Client, queue: &str) -> (String, String) {
    let first = receive(client, queue, 1).await.remove(0);
    server.clock.skip_ahead(Duration::from_secs(6));
    let second = receive(client, queue, 1).await.remove(0);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.dequeue_count, 2);
    (first.receipt_handle, second.receipt_handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_of_another_queue_is_refused_and_its_message_stays() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "qa", attrs()).await;
    create(&mut client, "qb", attrs()).await;
    send(&mut client, "qa", b"for qa").await;
    let got = receive(&mut client, "qa", 1).await.remove(0);

    let status = delete(&mut client, "qb", &got.receipt_handle)
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(message.contains("not issued by queue \"qb\""), "{message}");
    assert!(!message.contains("qa"), "names the other queue: {message}");
    let failures = batch_delete(&mut client, "qb", &[&got.receipt_handle]).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].code, Code::InvalidArgument as i32);

    // The message is still in flight on qa, and its own queue deletes it.
    assert_eq!(stats(&mut client, "qa").await.inactive_messages, 1);
    delete(&mut client, "qa", &got.receipt_handle)
        .await
        .expect("delete on its own queue");
    assert_eq!(stats(&mut client, "qa").await.inactive_messages, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_and_altered_handles_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"m").await;
    let got = receive(&mut client, "q", 1).await.remove(0);

    // The old format, made up; and a string of a handle's length that is not base64url.
    let fake_length = "!".repeat(got.receipt_handle.len());
    for made_up in ["00000000000fffff1234567890abcdef", fake_length.as_str()] {
        let status = delete(&mut client, "q", made_up).await.unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(message.contains("receipt_handle"), "{message}");
        assert!(!message.contains("hex"), "{message}");
    }
    // Every character of the real handle altered in turn: never accepted.
    for position in [
        0,
        10,
        got.receipt_handle.len() / 2,
        got.receipt_handle.len() - 1,
    ] {
        let mut altered = got.receipt_handle.clone().into_bytes();
        altered[position] = if altered[position] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let altered = String::from_utf8(altered).expect("ascii");
        let status = delete(&mut client, "q", &altered).await.unwrap_err();
        assert_error(&status, Code::InvalidArgument, 4000);
    }
    assert_eq!(stats(&mut client, "q").await.inactive_messages, 1);
    delete(&mut client, "q", &got.receipt_handle)
        .await
        .expect("the real handle");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_of_a_deleted_queue_does_not_work_on_its_successor() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"old").await;
    let old = receive(&mut client, "q", 1).await.remove(0);
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect("delete queue");
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"new").await;
    let status = delete(&mut client, "q", &old.receipt_handle)
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, 4000);
    assert!(message.contains("created again"), "{message}");
    assert_eq!(stats(&mut client, "q").await.active_messages, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_handle_fails_in_a_batch_whatever_its_place() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for (queue, newest_first) in [("newest-first", true), ("stale-first", false)] {
        create(&mut client, queue, short_visibility()).await;
        send(&mut client, queue, b"twice").await;
        let (stale, newest) = two_handles(&server, &mut client, queue).await;
        let order: [&str; 2] = if newest_first {
            [&newest, &stale]
        } else {
            [&stale, &newest]
        };
        let failures = batch_delete(&mut client, queue, &order).await;
        assert_eq!(failures.len(), 1, "{queue}: {failures:?}");
        assert_eq!(failures[0].receipt_handle, stale, "{queue}");
        assert_eq!(failures[0].code, Code::FailedPrecondition as i32);
        assert_eq!(failures[0].cmq_code, 4430);
        assert_eq!(stats(&mut client, queue).await.inactive_messages, 0);
        // Afterwards too: the deleting handle's retry succeeds, the stale one still fails.
        delete(&mut client, queue, &newest)
            .await
            .expect("a retry of the delete");
        let status = delete(&mut client, queue, &stale).await.unwrap_err();
        assert_error(&status, Code::FailedPrecondition, 4430);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_failures_name_their_own_index() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", short_visibility()).await;
    send(&mut client, "q", b"x").await;
    let (stale, newest) = two_handles(&server, &mut client, "q").await;
    let failures = batch_delete(&mut client, "q", &["garbage", "zz", &stale, &newest]).await;
    let named: Vec<(String, bool)> = failures
        .iter()
        .map(|f| {
            let index = f.message.split(']').next().unwrap_or_default().to_string();
            (index, f.code == Code::FailedPrecondition as i32)
        })
        .collect();
    assert_eq!(
        named,
        vec![
            ("receipt_handles[0".to_string(), false),
            ("receipt_handles[1".to_string(), false),
            ("receipt_handles[2".to_string(), true),
        ],
        "{failures:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_keep_their_meaning_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    create(&mut client, "qa", attrs()).await;
    create(&mut client, "qb", attrs()).await;
    create(&mut client, "twice", short_visibility()).await;
    send(&mut client, "qa", b"a").await;
    send(&mut client, "twice", b"t").await;
    let of_qa = receive(&mut client, "qa", 1).await.remove(0);
    let (stale, newest) = two_handles(&server, &mut client, "twice").await;
    delete(&mut client, "twice", &newest).await.expect("delete");
    let clock = server.clock.clone();
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |config| config.clock = clock).await;
    let mut client = server.client().await;
    // Still refused on another queue (the signing key is kept in storage).
    let status = delete(&mut client, "qb", &of_qa.receipt_handle)
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, 4000);
    // The deleted message's older handle still fails; its deleting handle's retry still works.
    let status = delete(&mut client, "twice", &stale).await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, 4430);
    delete(&mut client, "twice", &newest)
        .await
        .expect("a retry after the restart");
    // And the valid handle works on its own queue.
    delete(&mut client, "qa", &of_qa.receipt_handle)
        .await
        .expect("delete after the restart");
    server.stop().await;
}

/// Many long polls whose client goes away while messages arrive: a message may stay in flight
/// only if the client did get it; none may stay claimed for a poll that is gone (it would be
/// invisible for the whole visibility timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_stays_claimed_by_a_poll_whose_client_has_gone() {
    const CONNECTIONS: usize = 3;
    const POLLS_PER_CONNECTION: usize = 1_000;
    const BATCHES: usize = 150;
    let metrics_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics_listener.local_addr().expect("addr");
    metrics_listener.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_with(move |config| {
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics_listener).expect("tokio listener"));
    })
    .await;
    let mut client = server.client().await;
    let attributes = pb::QueueAttributes {
        visibility_timeout_seconds: Some(3_600),
        ..attrs()
    };
    create(&mut client, "q", attributes.clone()).await;

    for _round in 0..2 {
        // The polls run on a runtime of their own, whose drop ends every one of their
        // connections at once, like a killed client process. What they did receive is noted.
        let endpoint = server.endpoint();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let noted = got.clone();
        let polls = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let (parked, all_parked) = std::sync::mpsc::channel();
            runtime.block_on(async {
                for _connection in 0..CONNECTIONS {
                    let client = connect(&endpoint).await;
                    for _ in 0..POLLS_PER_CONNECTION {
                        let mut client = client.clone();
                        let parked = parked.clone();
                        let noted = noted.clone();
                        tokio::spawn(async move {
                            let call = client.receive_messages(pb::ReceiveMessagesRequest {
                                queue_name: "q".into(),
                                max_messages: 1,
                                wait_seconds: Some(30),
                                visibility_timeout_seconds: None,
                            });
                            let _ = parked.send(());
                            if let Ok(response) = call.await {
                                let mut stream = response.into_inner();
                                while let Ok(Some(message)) = stream.message().await {
                                    if let Ok(mut noted) = noted.lock() {
                                        noted.push(message.message_id);
                                    }
                                }
                            }
                            std::future::pending::<()>().await;
                        });
                    }
                }
            });
            for _ in 0..CONNECTIONS * POLLS_PER_CONNECTION {
                all_parked.recv().expect("parked");
            }
            runtime
        })
        .join()
        .expect("polls");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Dropped on a thread of its own (a runtime cannot be dropped in an async context);
        // when the join returns, the polls' connections are closed, and the server is just
        // learning of it when the sends arrive. (Sends racing with the kill itself would put
        // messages on connections still open that the client then closes unread: lost in
        // transport like any delivery to a crashing consumer, and not what this is about.)
        std::thread::spawn(move || drop(polls))
            .join()
            .expect("drop the polls' runtime");
        // Sends go out once the server has seen the connections close (its waiting polls are
        // gone): from then on nothing may be claimed for them. (A message written into a
        // connection in the moment before the server learns it is dead is lost in transport, as
        // a delivery to a consumer that crashes; it comes back after its visibility timeout.)
        let waiting = "spool_queue_waiting_polls{queue=\"q\"}";
        let mut gone = false;
        for _ in 0..200 {
            let (_, body) = http_get(metrics_addr, "/metrics").await;
            if samples(&body).get(waiting) == Some(&0.0) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gone,
            "the server never noticed the polls' connections close"
        );
        for _ in 0..BATCHES {
            batch_send(&mut client, "q", &[b"1", b"2", b"3", b"4"]).await;
        }

        let received = got.lock().map(|got| got.len()).unwrap_or_default() as u64;
        // What a gone poll claimed comes back at once (well before the hour-long timeout).
        let mut counters = stats(&mut client, "q").await;
        for _ in 0..100 {
            if counters.inactive_messages <= received {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            counters = stats(&mut client, "q").await;
        }
        assert_eq!(
            counters.inactive_messages, received,
            "messages in flight that no client got: {counters:?}, received {received}"
        );
        assert_eq!(counters.active_messages + received, BATCHES as u64 * 4);
        // Empty the queue for the next round: the visible ones now, the rest by a new queue.
        client
            .delete_queue(pb::DeleteQueueRequest {
                queue_name: "q".into(),
            })
            .await
            .expect("delete queue");
        create(&mut client, "q", attributes.clone()).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_is_refused_without_the_lock_file_and_through_a_link() {
    if sqlite_only(
        "the lock of the SQLite database file (postgres::a_second_server_on_the_schema_is_refused checks the schema lock)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ChildServer::start(dir.path());
    // Deleting the side lock file must not let a second server in.
    std::fs::remove_file(dir.path().join("spool.lock")).expect("remove spool.lock");
    let (status, stderr) = serve_expecting_exit(dir.path()).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("in use by another Spool server"),
        "{stderr}"
    );
    // Nor another directory whose spool.db is a link to the same file.
    let other = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(dir.path().join("spool.db"), other.path().join("spool.db"))
        .expect("symlink");
    let (status, stderr) = serve_expecting_exit(other.path()).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("in use by another Spool server"),
        "{stderr}"
    );
    drop(first);
}

/// A file system that is read-only or full is named as such, not as a foreign database. Needs
/// root (it mounts small tmpfs file systems); skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_full_file_systems_are_named() {
    if sqlite_only("file systems under the SQLite database") {
        return;
    }
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mount = tempfile::tempdir().expect("temp dir");
    let mounted = MountedTmpfs::new(mount.path(), "size=4m");
    let data = mounted.path.join("data");
    let server = ChildServer::start(&data);
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    drop(client);
    assert_eq!(server.terminate(), Some(0));
    mounted.remount("remount,ro");
    let (status, stderr) = serve_expecting_exit(&data).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(!stderr.contains("not a Spool database"), "{stderr}");
    mounted.remount("remount,rw");

    // Fill the file system, then start on a new directory in it.
    let filler = mounted.path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 8 << 20]);
    let fresh = mounted.path.join("fresh");
    let _ = std::fs::create_dir(&fresh);
    let (status, stderr) = serve_expecting_exit(&fresh).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("full") || stderr.contains("No space left"),
        "{stderr}"
    );
    assert!(!stderr.contains("not a Spool database"), "{stderr}");
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct MountedTmpfs {
    path: std::path::PathBuf,
}

impl MountedTmpfs {
    fn new(path: &std::path::Path, options: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Self {
            path: path.to_path_buf(),
        }
    }

    fn remount(&self, options: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", options])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -o {options}");
    }
}

impl Drop for MountedTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
