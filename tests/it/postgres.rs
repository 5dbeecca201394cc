//! What only the PostgreSQL backend has: one server per schema, schemas that are not Spool's,
//! PostgreSQL that is not there yet, sessions terminated under load, TLS. Run with
//! `SPOOL_TEST_BACKEND=postgres` (scripts/test does); on SQLite they say so and return.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spool::pb;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::*;

fn body_text(message: &pb::ReceivedMessage) -> String {
    String::from_utf8(message.body.to_vec()).expect("utf-8 body")
}

/// Runs `spool serve` with `args`, expecting it to exit within 20 s; its exit code and stderr.
async fn serve_expecting_refusal(args: &[String]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn spool");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("spool kept running")
        .expect("wait for spool");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn backend_args(dir: &Path) -> Vec<String> {
    vec![
        "--postgres-url".into(),
        postgres_url_for(dir),
        "--postgres-schema".into(),
        schema_for(dir),
    ]
}

/// A second server on a schema in use stops at once with a clear error, and the first one
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_schema_is_refused() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ChildServer::start(dir.path());
    let (code, stderr) = serve_expecting_refusal(&backend_args(dir.path())).await;
    assert!(
        matches!(code, Some(code) if code != 0),
        "{code:?}: {stderr}"
    );
    assert!(
        stderr.contains("in use by another Spool server"),
        "{stderr}"
    );
    assert!(stderr.contains(&schema_for(dir.path())), "{stderr}");
    let mut client = first.client().await;
    create(&mut client, "still-serving", attrs()).await;
    assert_eq!(first.terminate(), Some(0));
}

/// A schema holding someone else's tables, or Spool's tables of a newer version, is refused
/// with a clear error and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_newer_schemas_are_refused_untouched() {
    if postgres_only() {
        return;
    }
    let admin = postgres_client().await;
    let foreign = tempfile::tempdir().expect("temp dir");
    let schema = schema_for(foreign.path());
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.queues (x integer);
             INSERT INTO {schema}.queues VALUES (42);"
        ))
        .await
        .expect("a foreign table");
    let (code, stderr) = serve_expecting_refusal(&backend_args(foreign.path())).await;
    assert!(
        matches!(code, Some(code) if code != 0),
        "{code:?}: {stderr}"
    );
    assert!(stderr.contains("not Spool's"), "{stderr}");
    let row = admin
        .query_one(&format!("SELECT x FROM {schema}.queues"), &[])
        .await
        .expect("the foreign table is still there");
    assert_eq!(row.get::<_, i32>(0), 42);

    let newer = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(newer.path());
    assert_eq!(server.terminate(), Some(0));
    let schema = schema_for(newer.path());
    admin
        .batch_execute(&format!("UPDATE {schema}.schema_version SET version = 999"))
        .await
        .expect("make it newer");
    let (code, stderr) = serve_expecting_refusal(&backend_args(newer.path())).await;
    assert!(
        matches!(code, Some(code) if code != 0),
        "{code:?}: {stderr}"
    );
    assert!(stderr.contains("newer Spool"), "{stderr}");
    assert!(stderr.contains("999"), "{stderr}");
}

/// The run's connection string with another host and port (key=value form, as scripts/test
/// writes it).
fn url_at(base: &str, host: &str, port: u16) -> String {
    assert!(
        !base.contains("://"),
        "{POSTGRES_URL_VAR} must be key=value pairs for this test: {base}"
    );
    let mut pairs: Vec<String> = base
        .split_whitespace()
        .filter(|pair| !pair.starts_with("host=") && !pair.starts_with("port="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("host={host}"));
    pairs.push(format!("port={port}"));
    pairs.join(" ")
}

/// Forwards every connection to `port` on to PostgreSQL, until the task is aborted.
async fn proxy(listener: tokio::net::TcpListener, postgres: std::net::SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(postgres).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

async fn health_status(endpoint: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "spool.v1.QueueService".into(),
        })
        .await
        .ok()
        .map(|response| response.into_inner().status())
}

/// With PostgreSQL unreachable at start, the server still starts: health NOT_SERVING, queue
/// calls UNAVAILABLE; once PostgreSQL answers (here: a proxy opened on the port it was given),
/// it connects by itself and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_then_serving_once_it_answers() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A port nothing listens on, for now.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let mut settings = spool::config::Settings::for_data_dir(dir.path());
    settings.postgres_url = Some(with_option(
        &url_at(&postgres_base_url(), "127.0.0.1", port),
        "application_name",
        &application_name(dir.path()),
    ));
    settings.postgres_schema = Some(schema_for(dir.path()));
    settings.shutdown_grace_seconds = Some(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spool::server::run(
        listener,
        async move {
            let _ = stopped.await;
        },
        spool::server::ServerConfig::from_settings(settings),
    ));

    // Unreachable for a while: it answers, but is not serving.
    let unreachable_until = Instant::now() + Duration::from_millis(1_500);
    let mut client = connect(&endpoint).await;
    while Instant::now() < unreachable_until {
        assert_eq!(
            health_status(&endpoint).await,
            Some(ServingStatus::NotServing)
        );
        let refused = client
            .create_queue(pb::CreateQueueRequest {
                queue_name: "q".into(),
                attributes: Some(attrs()),
            })
            .await
            .expect_err("no queue calls before PostgreSQL answers");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // PostgreSQL appears on that port.
    let proxy_listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(error) => {
                assert!(
                    Instant::now() < unreachable_until + Duration::from_secs(10),
                    "cannot bind port {port} again: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let postgres: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let forwarding = tokio::spawn(proxy(proxy_listener, postgres));
    let appeared = Instant::now();
    wait_until_serving(&endpoint).await;
    let took = appeared.elapsed();
    // The longest backoff between attempts is 8 s.
    assert!(
        took < Duration::from_secs(15),
        "serving {took:?} after PostgreSQL appeared"
    );
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"hello").await;
    let got = receive(&mut client, "q", 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"hello".to_vec());

    let _ = stop.send(());
    server.await.expect("server task").expect("server run");
    forwarding.abort();
}

const SENDERS: usize = 4;
const BATCH: usize = 16;
const TERMINATIONS: usize = 3;

/// What a producer saw.
#[derive(Default)]
struct Produced {
    acked: Vec<String>,
    attempted: Vec<String>,
    failed_batches: usize,
}

async fn produce(
    endpoint: String,
    queue: String,
    prefix: String,
    stop: Arc<AtomicBool>,
) -> Produced {
    let mut client = connect(&endpoint).await;
    let mut produced = Produced::default();
    let mut batch = 0;
    while !stop.load(Ordering::SeqCst) {
        let bodies: Vec<String> = (0..BATCH)
            .map(|i| format!("{prefix}-b{batch}-m{i}"))
            .collect();
        batch += 1;
        produced.attempted.extend(bodies.iter().cloned());
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
            Ok(_) => produced.acked.extend(bodies),
            // A session terminated mid-commit: this batch may or may not be stored.
            Err(status) if status.code() == Code::Unavailable => {
                produced.failed_batches += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("send failed: {status:?}"),
        }
    }
    produced
}

#[derive(Default)]
struct Consumed {
    deleted: Vec<String>,
    /// Deletes that failed with UNAVAILABLE: their outcome is unknown.
    maybe_deleted: HashSet<String>,
}

/// Receives and deletes the messages whose body ends in an even digit, until told to stop.
async fn consume(endpoint: String, queue: String, stop: Arc<AtomicBool>) -> Consumed {
    let mut client = connect(&endpoint).await;
    let mut consumed = Consumed::default();
    while !stop.load(Ordering::SeqCst) {
        let request = pb::ReceiveMessagesRequest {
            queue_name: queue.clone(),
            max_messages: 16,
            wait_seconds: Some(1),
            visibility_timeout_seconds: None,
        };
        let messages = match receive_with(&mut client, request).await {
            Ok(messages) => messages,
            Err(status) if status.code() == Code::Unavailable => continue,
            Err(status) => panic!("receive failed: {status:?}"),
        };
        for message in messages {
            let body = body_text(&message);
            if !body.bytes().last().unwrap_or(b'0').is_multiple_of(2) {
                continue;
            }
            match delete(&mut client, &queue, &message.receipt_handle).await {
                Ok(()) => consumed.deleted.push(body),
                Err(status) if status.code() == Code::FailedPrecondition => {}
                Err(status) if status.code() == Code::Unavailable => {
                    consumed.maybe_deleted.insert(body);
                }
                Err(status) => panic!("delete failed: {status:?}"),
            }
        }
    }
    consumed
}

/// Terminates the server's PostgreSQL sessions; how many there were.
async fn terminate_sessions(admin: &tokio_postgres::Client, application: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name = $1",
            &[&application],
        )
        .await
        .expect("pg_terminate_backend")
        .get(0)
}

/// Spool's sessions terminated (`pg_terminate_backend`) again and again under concurrent
/// batched producers and a consumer: calls caught in it fail UNAVAILABLE, the service resumes
/// by itself, and after a restart nothing acknowledged is lost and no acknowledged delete is
/// undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_under_load_lose_nothing_acknowledged() {
    if postgres_only() {
        return;
    }
    const QUEUE: &str = "terminated";
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(
        &mut client,
        QUEUE,
        pb::QueueAttributes {
            visibility_timeout_seconds: Some(2),
            ..attrs()
        },
    )
    .await;
    let admin = postgres_client().await;
    let application = application_name(dir.path());

    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..SENDERS)
        .map(|task| {
            tokio::spawn(produce(
                server.endpoint(),
                QUEUE.into(),
                format!("t{task}"),
                stop.clone(),
            ))
        })
        .collect();
    let consumer = tokio::spawn(consume(server.endpoint(), QUEUE.into(), stop.clone()));
    let mut terminated = 0;
    for _ in 0..TERMINATIONS {
        tokio::time::sleep(Duration::from_millis(600)).await;
        terminated += terminate_sessions(&admin, &application).await;
    }
    assert!(
        terminated >= TERMINATIONS as i64,
        "only {terminated} sessions terminated"
    );

    // The service resumes by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .send_message(pb::SendMessageRequest {
                queue_name: QUEUE.into(),
                body: b"after-1".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(Instant::now() < deadline, "never resumed: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("send after the terminations: {status:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut acked = HashSet::new();
    let mut attempted = HashSet::from(["after-1".to_string()]);
    let mut failed_batches = 0;
    for producer in producers {
        let produced = producer.await.expect("producer");
        acked.extend(produced.acked);
        attempted.extend(produced.attempted);
        failed_batches += produced.failed_batches;
    }
    let consumed = consumer.await.expect("consumer");
    let deleted: HashSet<String> = consumed.deleted.into_iter().collect();
    assert!(!acked.is_empty());
    assert_eq!(server.terminate(), Some(0));

    // Everything from storage alone: restart and drain.
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let mut drained: HashMap<String, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = pb::ReceiveMessagesRequest {
            queue_name: QUEUE.into(),
            max_messages: 16,
            wait_seconds: Some(0),
            visibility_timeout_seconds: Some(600),
        };
        let got = receive_with(&mut client, request).await.expect("drain");
        if got.is_empty() {
            let s = stats(&mut client, QUEUE).await;
            if s.active_messages == 0 && s.inactive_messages == drained.len() as u64 {
                break;
            }
            assert!(Instant::now() < deadline, "not drained: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for message in got {
            *drained.entry(body_text(&message)).or_default() += 1;
        }
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|body| !deleted.contains(*body) && !consumed.maybe_deleted.contains(*body))
        .filter(|body| !drained.contains_key(*body))
        .collect();
    let revived: Vec<&String> = deleted
        .iter()
        .filter(|b| drained.contains_key(*b))
        .collect();
    let unknown: Vec<&String> = drained.keys().filter(|b| !attempted.contains(*b)).collect();
    println!(
        "{terminated} sessions terminated; {} sends acknowledged, {failed_batches} batches \
         failed UNAVAILABLE, {} deletes acknowledged, {} received after the restart",
        acked.len(),
        deleted.len(),
        drained.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged sends lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        revived.is_empty(),
        "acknowledged deletes undone: {:?}",
        &revived[..revived.len().min(5)]
    );
    assert!(unknown.is_empty(), "never sent: {unknown:?}");
    assert!(
        drained.values().all(|n| *n == 1),
        "delivered twice within 600 s"
    );
    assert!(drained.contains_key("after-1"));
    assert_eq!(server.terminate(), Some(0));
}

/// TLS to PostgreSQL with rustls: `sslmode=require` encrypts (pg_stat_ssl says so),
/// `verify-full` with the server's certificate as the CA file serves, and `verify-full` for a
/// name the certificate does not carry is refused. Skipped when the server has no TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_and_certificates_are_checked() {
    if postgres_only() {
        return;
    }
    let admin = postgres_client().await;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.expect("ssl").get(0);
    if ssl != "on" {
        eprintln!("skipped: the PostgreSQL under test has ssl = {ssl}");
        return;
    }
    let cert_file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("ssl_cert_file")
        .get(0);
    let base = postgres_base_url();

    let dir = tempfile::tempdir().expect("temp dir");
    let application = application_name(dir.path());
    let url = with_option(
        &with_option(&base, "sslmode", "require"),
        "application_name",
        &application,
    );
    let server = ChildServer::start_with(
        dir.path(),
        &[
            "--postgres-url",
            &url,
            "--postgres-schema",
            &schema_for(dir.path()),
        ],
        &[],
    );
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    let encrypted: bool = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "sessions of {application} without TLS");
    assert_eq!(server.terminate(), Some(0));

    // The certificate names "localhost" (Debian's snakeoil one does).
    let verify = |host: &str| {
        with_option(
            &with_option(
                &with_option(&url_at(&base, host, 5432), "sslmode", "verify-full"),
                "sslrootcert",
                &cert_file,
            ),
            "application_name",
            &application,
        )
    };
    let by_name =
        spool::PostgresConnectOptions::parse(&verify("localhost"), None).expect("options");
    match by_name.connect().await {
        Ok(_) => {}
        Err(error) => {
            eprintln!("skipped verify-full: the certificate does not name localhost ({error})");
            return;
        }
    }
    let server = ChildServer::start_with(
        dir.path(),
        &[
            "--postgres-url",
            &verify("localhost"),
            "--postgres-schema",
            &schema_for(dir.path()),
        ],
        &[],
    );
    let mut client = server.client().await;
    assert_eq!(get(&mut client, "q").await.name, "q");
    assert_eq!(server.terminate(), Some(0));

    let by_address =
        spool::PostgresConnectOptions::parse(&verify("127.0.0.1"), None).expect("options");
    let refused = by_address
        .connect()
        .await
        .expect_err("a certificate for localhost does not name 127.0.0.1");
    let text = format!("{refused:?}");
    assert!(text.contains("NotValidForName"), "{text}");
}

// ---- spool migrate ----

fn ts_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp.map_or("-".into(), |t| format!("{}.{:09}", t.seconds, t.nanos))
}

/// A received message as both servers must show it: its first receive's time only when that
/// was before the move (a first receive now happens at a different instant on each).
fn describe_message(message: &pb::ReceivedMessage) -> String {
    let first_received = if message.dequeue_count > 1 {
        ts_text(message.first_dequeue_time.as_ref())
    } else {
        "now".into()
    };
    format!(
        "{} {:?} enqueued {} first received {first_received} received {} times",
        message.message_id,
        body_text(message),
        ts_text(message.enqueue_time.as_ref()),
        message.dequeue_count
    )
}

fn describe_stats(stats: &pb::QueueStats) -> String {
    format!(
        "active {} in flight {} delayed {} rewindable {} oldest {}",
        stats.active_messages,
        stats.inactive_messages,
        stats.delayed_messages,
        stats.rewindable_messages,
        ts_text(stats.oldest_message_time.as_ref())
    )
}

/// Handles and times recorded before the move, used on both servers.
struct Before {
    in_flight_handle: String,
    stale_handle: String,
    rewind_to: prost_types::Timestamp,
}

/// What a server makes of the migrated state: counters, receipts from before, receives,
/// rewind, and the next id. Everything a client sees but the new receipt handles and the
/// visibility deadlines of new receives (which depend on when they happen).
async fn transcript(client: &mut Client, before: &Before) -> Vec<String> {
    let mut lines = Vec::new();
    for queue in ["plain", "rewinding", "dlq-target", "with-policy"] {
        let queue_info = get(client, queue).await;
        lines.push(format!(
            "{queue}: {:?} created {} {}",
            queue_info.attributes,
            ts_text(queue_info.create_time.as_ref()),
            describe_stats(queue_info.stats.as_ref().expect("stats"))
        ));
    }
    let stale = delete(client, "plain", &before.stale_handle).await;
    lines.push(format!(
        "delete with a superseded handle: {:?}",
        stale.map_err(|status| status.code())
    ));
    let in_flight = delete(client, "plain", &before.in_flight_handle).await;
    lines.push(format!(
        "delete with the in-flight handle: {:?}",
        in_flight.map_err(|status| status.code())
    ));
    for message in receive(client, "plain", 16).await {
        lines.push(format!("plain: {}", describe_message(&message)));
    }
    client
        .rewind_queue(pb::RewindQueueRequest {
            queue_name: "rewinding".into(),
            start_time: Some(before.rewind_to),
        })
        .await
        .expect("rewind");
    for message in receive(client, "rewinding", 16).await {
        lines.push(format!("rewinding: {}", describe_message(&message)));
    }
    // Attributes, deduplication ids and dead-letter origins moved too.
    let duplicate = client
        .send_message(pb::SendMessageRequest {
            queue_name: "with-policy".into(),
            body: b"retried".to_vec().into(),
            deduplication_id: "d-1".into(),
            ..Default::default()
        })
        .await
        .expect("send a duplicate")
        .into_inner()
        .message_id;
    lines.push(format!("duplicate of d-1: {duplicate}"));
    for queue in ["with-policy", "dlq-target"] {
        for message in receive(client, queue, 16).await {
            let attributes: std::collections::BTreeMap<_, _> = message.attributes.iter().collect();
            lines.push(format!(
                "{queue}: {} {attributes:?} from {:?} after {}",
                describe_message(&message),
                message.dead_letter_source_queue,
                message.dead_letter_receive_count
            ));
        }
    }
    lines.push(format!(
        "next id: {}",
        send(client, "plain", b"after the move").await
    ));
    lines
}

/// A data directory with every kind of message, moved with `spool migrate` and served from
/// PostgreSQL, gives what the same directory gives served as it is: the same counters, receipt
/// handles from before the move that still work (or still fail), the same receives, rewind and
/// next id. A second migration into the now non-empty schema is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_data_directory_serves_the_same_from_postgres() {
    if postgres_only() {
        return;
    }
    let source = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in_sqlite(source.path(), |_| {}).await;
    let mut client = server.client().await;
    create(&mut client, "plain", attrs()).await;
    create(
        &mut client,
        "rewinding",
        pb::QueueAttributes {
            rewind_seconds: Some(3_600),
            ..attrs()
        },
    )
    .await;
    let receive_for = |queue: &str, max: u32, visibility: u32| pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: max,
        wait_seconds: Some(0),
        visibility_timeout_seconds: Some(visibility),
    };
    // with-policy: a message with attributes and a deduplication id, and one moved to
    // dlq-target by the policy (received once, visible again after 1 s, then moved).
    create(&mut client, "dlq-target", attrs()).await;
    create(
        &mut client,
        "with-policy",
        pb::QueueAttributes {
            deduplication_window_seconds: Some(3_600),
            dead_letter_policy: Some(pb::DeadLetterPolicy {
                dead_letter_queue: "dlq-target".into(),
                max_receive_count: 1,
                max_time_to_live_seconds: 0,
            }),
            ..attrs()
        },
    )
    .await;
    send(&mut client, "with-policy", b"poison").await;
    receive_with(&mut client, receive_for("with-policy", 1, 1))
        .await
        .expect("receive the poison");
    // plain: a tombstone (deleted after two receives), one in flight, one visible, one delayed.
    send(&mut client, "plain", b"tombstone").await;
    let first = receive_with(&mut client, receive_for("plain", 1, 1))
        .await
        .expect("receive");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let second = receive_with(&mut client, receive_for("plain", 1, 600))
        .await
        .expect("receive again");
    assert_eq!(second[0].dequeue_count, 2);
    delete(&mut client, "plain", &second[0].receipt_handle)
        .await
        .expect("delete");
    send(&mut client, "plain", b"in flight").await;
    let in_flight = receive_with(&mut client, receive_for("plain", 1, 600))
        .await
        .expect("receive");
    send(&mut client, "plain", b"visible").await;
    send_delayed(&mut client, "plain", b"delayed", 600).await;
    // rewinding: two deleted (kept for rewind), one visible.
    let rewind_to = get(&mut client, "rewinding")
        .await
        .create_time
        .expect("time");
    batch_send(&mut client, "rewinding", &[b"kept-1", b"kept-2"]).await;
    for message in receive(&mut client, "rewinding", 2).await {
        delete(&mut client, "rewinding", &message.receipt_handle)
            .await
            .expect("delete");
    }
    send(&mut client, "rewinding", b"waiting").await;
    // The poison's visibility ended with the sleep above: this receive moves it.
    assert!(receive(&mut client, "with-policy", 1).await.is_empty());
    client
        .send_message(pb::SendMessageRequest {
            queue_name: "with-policy".into(),
            body: b"traced".to_vec().into(),
            attributes: [("traceparent".to_string(), "00-ab-cd-01".to_string())].into(),
            deduplication_id: "d-1".into(),
            ..Default::default()
        })
        .await
        .expect("send with attributes");
    // The move is handed to dlq-target's actor just after its commit (a generous bound).
    for _ in 0..500 {
        if get(&mut client, "dlq-target")
            .await
            .stats
            .expect("stats")
            .active_messages
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A topic with a subscription, which the migration carries too.
    client
        .create_topic(pb::CreateTopicRequest {
            topic_name: "migrated-topic".into(),
            attributes: Some(pb::TopicAttributes {
                max_message_size: Some(2_048),
                filter_type: pb::FilterType::RoutingKeys as i32,
            }),
        })
        .await
        .expect("create a topic");
    client
        .subscribe(pb::SubscribeRequest {
            topic_name: "migrated-topic".into(),
            subscription_name: "audit".into(),
            queue_name: "dlq-target".into(),
            binding_keys: vec!["audit.#".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe");
    server.stop().await;
    let before = Before {
        in_flight_handle: in_flight[0].receipt_handle.clone(),
        stale_handle: first[0].receipt_handle.clone(),
        rewind_to,
    };

    let target = tempfile::tempdir().expect("temp dir");
    let migrate = |dir: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["migrate", "--from-data-dir"])
            .arg(dir)
            .args(["--to-postgres-url", &postgres_url_for(target.path())])
            .args(["--to-postgres-schema", &schema_for(target.path())])
            .output()
            .expect("run spool migrate")
    };
    let output = migrate(source.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
    assert_eq!(summary["queues"], 4, "{summary}");
    assert_eq!(summary["live"], 6, "{summary}");
    assert_eq!(summary["kept_for_rewind"], 2, "{summary}");
    assert_eq!(summary["tombstones"], 1, "{summary}");
    assert_eq!(
        (&summary["topics"], &summary["subscriptions"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{summary}"
    );

    let again = migrate(source.path());
    assert!(!again.status.success());
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(refused.contains("not empty"), "{refused}");

    let from_postgres = {
        let server = TestServer::start_in(target.path(), |_| {}).await;
        let mut client = server.client().await;
        let lines = transcript(&mut client, &before).await;
        server.stop().await;
        lines
    };
    let from_sqlite = {
        let server = TestServer::start_in_sqlite(source.path(), |_| {}).await;
        let mut client = server.client().await;
        let lines = transcript(&mut client, &before).await;
        server.stop().await;
        lines
    };
    println!("{}", from_sqlite.join("\n"));
    assert_eq!(from_postgres, from_sqlite);
    // The topic and its subscription came along, and publish into the migrated queue.
    {
        let server = TestServer::start_in(target.path(), |_| {}).await;
        let mut client = server.client().await;
        let topic = client
            .get_topic(pb::GetTopicRequest {
                topic_name: "migrated-topic".into(),
            })
            .await
            .expect("the topic")
            .into_inner();
        let attributes = topic.attributes.expect("attributes");
        assert_eq!(attributes.max_message_size, Some(2_048));
        assert_eq!(attributes.filter_type, pb::FilterType::RoutingKeys as i32);
        let published = client
            .publish_message(pb::PublishMessageRequest {
                topic_name: "migrated-topic".into(),
                body: b"after the move"[..].into(),
                routing_key: "audit.login".into(),
                ..Default::default()
            })
            .await
            .expect("publish")
            .into_inner();
        assert_eq!(published.copies.len(), 1);
        assert_eq!(published.copies[0].queue_name, "dlq-target");
        server.stop().await;
    }
    // The transcript saw every kind of message.
    let all = from_sqlite.join("\n");
    for expected in [
        "delete with a superseded handle: Err(FailedPrecondition)",
        "delete with the in-flight handle: Ok(())",
        "\"visible\"",
        "\"kept-1\"",
        "\"kept-2\"",
        "\"waiting\"",
        "delayed 1",
        "\"traced\"",
        "\"traceparent\": \"00-ab-cd-01\"",
        "from \"with-policy\" after 1",
    ] {
        assert!(all.contains(expected), "{expected} missing from:\n{all}");
    }
}

/// A schema of version 1 (before message attributes, deduplication, dead-letter policies,
/// topics, byte quotas and message sizes) is migrated to the current version (5) when a server opens it, in one
/// transaction:
/// its queues and messages stay, queues get the default deduplication window and no policy,
/// and the new features work on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_to_the_current_version() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "old", attrs()).await;
    let id = send(&mut client, "old", b"from version 1").await;
    assert_eq!(server.terminate(), Some(0));
    let admin = postgres_client().await;
    let schema = schema_for(dir.path());
    admin
        .batch_execute(&format!(
            "DROP INDEX {schema}.messages_hidden;
             DROP INDEX {schema}.messages_by_queue;
             ALTER TABLE {schema}.messages DROP COLUMN size;
             CREATE INDEX messages_by_queue ON {schema}.messages (queue_id, id);
             ALTER TABLE {schema}.messages DROP COLUMN meta, DROP COLUMN dead_letter_source,
                 DROP COLUMN dead_letter_receive_count;
             ALTER TABLE {schema}.queues DROP COLUMN deduplication_window_seconds,
                 DROP COLUMN dead_letter_queue, DROP COLUMN max_receive_count,
                 DROP COLUMN max_time_to_live_seconds;
             ALTER TABLE {schema}.queues DROP COLUMN max_bytes;
             DROP TABLE {schema}.deduplication;
             DROP TABLE {schema}.topics;
             DROP TABLE {schema}.subscriptions;
             UPDATE {schema}.schema_version SET version = 1;"
        ))
        .await
        .expect("make it version 1");

    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let version: i32 = admin
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 5);
    let queue = get(&mut client, "old").await;
    let attributes = queue.attributes.expect("attributes");
    assert_eq!(attributes.deduplication_window_seconds, Some(300));
    assert_eq!(attributes.dead_letter_policy, None);
    let message = receive(&mut client, "old", 1).await.remove(0);
    assert_eq!(
        (message.message_id, &message.body[..]),
        (id, &b"from version 1"[..])
    );
    assert!(message.attributes.is_empty());
    let send_once = |body: &'static [u8]| pb::SendMessageRequest {
        queue_name: "old".into(),
        body: body.to_vec().into(),
        attributes: [("k".to_string(), "v".to_string())].into(),
        deduplication_id: "once".into(),
        ..Default::default()
    };
    let first = client
        .send_message(send_once(b"new"))
        .await
        .expect("send")
        .into_inner()
        .message_id;
    let again = client
        .send_message(send_once(b"new again"))
        .await
        .expect("send again")
        .into_inner()
        .message_id;
    assert_eq!(first, again);
    assert_eq!(server.terminate(), Some(0));
}

/// A schema of version 2 (before topics) is migrated to the current version when a server opens
/// it: its queues stay, and topics publish into them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_gains_topics() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "before-topics", attrs()).await;
    assert_eq!(server.terminate(), Some(0));
    let admin = postgres_client().await;
    let schema = schema_for(dir.path());
    admin
        .batch_execute(&format!(
            "DROP INDEX {schema}.messages_hidden;
             DROP INDEX {schema}.messages_by_queue;
             ALTER TABLE {schema}.messages DROP COLUMN size;
             CREATE INDEX messages_by_queue ON {schema}.messages (queue_id, id);
             ALTER TABLE {schema}.queues DROP COLUMN max_bytes;
             DROP TABLE {schema}.topics;
             DROP TABLE {schema}.subscriptions;
             UPDATE {schema}.schema_version SET version = 2;"
        ))
        .await
        .expect("make it version 2");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let version: i32 = admin
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 5);
    client
        .create_topic(pb::CreateTopicRequest {
            topic_name: "after".into(),
            attributes: None,
        })
        .await
        .expect("create a topic");
    client
        .subscribe(pb::SubscribeRequest {
            topic_name: "after".into(),
            subscription_name: "s".into(),
            queue_name: "before-topics".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let published = client
        .publish_message(pb::PublishMessageRequest {
            topic_name: "after".into(),
            body: b"hello"[..].into(),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.copies.len(), 1);
    assert_eq!(stats(&mut client, "before-topics").await.active_messages, 1);
    assert_eq!(server.terminate(), Some(0));
}

/// A schema of version 3 (before byte quotas and kept topic totals) is migrated to the current
/// version when a server opens it: its queues get no quota, the bytes their messages hold are counted
/// from the rows, and its topics count from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_gains_byte_quotas() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    create(&mut client, "before-quotas", attrs()).await;
    send(&mut client, "before-quotas", &[1; 25]).await;
    assert_eq!(server.terminate(), Some(0));
    let admin = postgres_client().await;
    let schema = schema_for(dir.path());
    admin
        .batch_execute(&format!(
            "DROP INDEX {schema}.messages_hidden;
             DROP INDEX {schema}.messages_by_queue;
             ALTER TABLE {schema}.messages DROP COLUMN size;
             CREATE INDEX messages_by_queue ON {schema}.messages (queue_id, id);
             ALTER TABLE {schema}.queues DROP COLUMN max_bytes;
             ALTER TABLE {schema}.topics DROP COLUMN published_messages,
                 DROP COLUMN unrouted_messages;
             ALTER TABLE {schema}.subscriptions DROP COLUMN delivered_messages,
                 DROP COLUMN filtered_out_messages;
             UPDATE {schema}.schema_version SET version = 3;"
        ))
        .await
        .expect("make it version 3");
    let server = ChildServer::start(dir.path());
    let mut client = server.client().await;
    let version: i32 = admin
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 5);
    let queue = get(&mut client, "before-quotas").await;
    assert_eq!(queue.attributes.expect("attributes").max_bytes, Some(0));
    assert_eq!(queue.stats.expect("stats").backlog_bytes, 25);
    client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "before-quotas".into(),
            attributes: Some(pb::QueueAttributes {
                max_bytes: Some(30),
                ..Default::default()
            }),
        })
        .await
        .expect("set a quota");
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "before-quotas".into(),
            body: vec![2; 6].into(),
            ..Default::default()
        })
        .await
        .expect_err("beyond the quota");
    assert_error(&status, tonic::Code::ResourceExhausted, 4410);
    assert_eq!(server.terminate(), Some(0));
}

/// A schema of version 4 (before message sizes and the indexes by queue) is migrated to version
/// 5 when a server opens it: every message gets its size (body and attributes), and a backlog
/// larger than the window is counted and delivered from the new index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_schema_gains_sizes_and_indexes_by_queue() {
    if postgres_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--queue-window", "2", "--total-window", "4"];
    let server = ChildServer::start_with(dir.path(), &flags, &[]);
    let mut client = server.client().await;
    create(&mut client, "before-sizes", attrs()).await;
    for n in 0..6u8 {
        send(&mut client, "before-sizes", &[n; 10]).await;
    }
    assert_eq!(server.terminate(), Some(0));
    let admin = postgres_client().await;
    let schema = schema_for(dir.path());
    admin
        .batch_execute(&format!(
            "DROP INDEX {schema}.messages_hidden;
             DROP INDEX {schema}.messages_by_queue;
             ALTER TABLE {schema}.messages DROP COLUMN size;
             CREATE INDEX messages_by_queue ON {schema}.messages (queue_id, id);
             UPDATE {schema}.schema_version SET version = 4;"
        ))
        .await
        .expect("make it version 4");
    let server = ChildServer::start_with(dir.path(), &flags, &[]);
    let mut client = server.client().await;
    let version: i32 = admin
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, 5);
    let sizes: i64 = admin
        .query_one(
            &format!("SELECT sum(size)::int8 FROM {schema}.messages"),
            &[],
        )
        .await
        .expect("sizes")
        .get(0);
    assert_eq!(sizes, 60);
    let stats = stats(&mut client, "before-sizes").await;
    assert_eq!((stats.active_messages, stats.backlog_bytes), (6, 60));
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let got = receive(&mut client, "before-sizes", 1).await;
        for message in &got {
            delete(&mut client, "before-sizes", &message.receipt_handle)
                .await
                .expect("delete");
            bodies.push(message.body[0]);
        }
    }
    assert_eq!(bodies, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(server.terminate(), Some(0));
}
