//! What operators rely on: metrics, readiness, configuration precedence.

use std::time::Duration;

use spool::pb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_known_traffic_and_get_queue() {
    let metrics_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics_listener.local_addr().expect("addr");
    metrics_listener.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_with(move |config| {
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics_listener).expect("tokio listener"));
    })
    .await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    create(&mut client, "idle", attrs()).await;
    send(&mut client, "q", b"one").await;
    batch_send(&mut client, "q", &[b"two", b"three"]).await;
    send_delayed(&mut client, "q", b"later", 60).await;
    let got = receive(&mut client, "q", 2).await;
    delete(&mut client, "q", &got[0].receipt_handle)
        .await
        .expect("delete");
    assert!(receive(&mut client, "idle", 1).await.is_empty());
    let _ = client
        .get_queue(pb::GetQueueRequest {
            queue_name: "missing".into(),
        })
        .await
        .unwrap_err();
    // A receive refused at once, and a long poll whose client goes away: measured by their
    // outcome on the wire (trailers-only NOT_FOUND; a stream dropped before its trailers).
    assert!(
        receive_with(
            &mut client,
            pb::ReceiveMessagesRequest {
                queue_name: "missing".into(),
                max_messages: 1,
                wait_seconds: Some(0),
                visibility_timeout_seconds: None,
            }
        )
        .await
        .is_err()
    );
    let abandoned = client
        .receive_messages(pb::ReceiveMessagesRequest {
            queue_name: "idle".into(),
            max_messages: 1,
            wait_seconds: Some(20),
            visibility_timeout_seconds: None,
        })
        .await
        .expect("a long poll");
    drop(abandoned);
    let mut cancelled = 0.0;
    for _ in 0..200 {
        let (_, body) = http_get(metrics_addr, "/metrics").await;
        let key = "spool_grpc_requests_total{method=\"ReceiveMessages\",code=\"CANCELLED\"}";
        if let Some(count) = samples(&body).get(key) {
            cancelled = *count;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cancelled, 1.0,
        "the abandoned long poll is counted as CANCELLED"
    );

    let (head, body) = http_get(metrics_addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let metrics = samples(&body);
    let value = |key: &str| {
        *metrics
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from\n{body}"))
    };

    // The gauges equal what GetQueue reports.
    let stats = stats(&mut client, "q").await;
    assert_eq!(
        (
            stats.active_messages,
            stats.inactive_messages,
            stats.delayed_messages
        ),
        (1, 1, 1)
    );
    assert_eq!(
        value("spool_queue_visible_messages{queue=\"q\"}"),
        stats.active_messages as f64
    );
    assert_eq!(
        value("spool_queue_in_flight_messages{queue=\"q\"}"),
        stats.inactive_messages as f64
    );
    assert_eq!(
        value("spool_queue_delayed_messages{queue=\"q\"}"),
        stats.delayed_messages as f64
    );
    assert_eq!(value("spool_queue_rewindable_messages{queue=\"q\"}"), 0.0);
    assert!(value("spool_queue_oldest_message_age_seconds{queue=\"q\"}") >= 0.0);
    assert_eq!(value("spool_queue_visible_messages{queue=\"idle\"}"), 0.0);
    assert_eq!(
        value("spool_queue_oldest_message_age_seconds{queue=\"idle\"}"),
        0.0
    );

    // Totals.
    assert_eq!(value("spool_queue_messages_sent_total{queue=\"q\"}"), 4.0);
    assert_eq!(
        value("spool_queue_messages_received_total{queue=\"q\"}"),
        2.0
    );
    assert_eq!(
        value("spool_queue_messages_deleted_total{queue=\"q\"}"),
        1.0
    );
    assert_eq!(
        value("spool_queue_messages_expired_total{queue=\"q\"}"),
        0.0
    );
    assert_eq!(
        value("spool_queue_empty_receives_total{queue=\"idle\"}"),
        1.0
    );
    assert_eq!(value("spool_queue_empty_receives_total{queue=\"q\"}"), 0.0);
    assert_eq!(value("spool_queue_waiting_polls{queue=\"q\"}"), 0.0);

    // The bodies of "three" and "later", not received yet, are held in memory.
    let entry = spool::BODY_CACHE_ENTRY_OVERHEAD as f64;
    assert_eq!(value("spool_body_cache_bytes"), 2.0 * (5.0 + entry));

    // Calls by method and code, with real histograms.
    assert_eq!(
        value("spool_grpc_requests_total{method=\"SendMessage\",code=\"OK\"}"),
        2.0
    );
    assert_eq!(
        value("spool_grpc_requests_total{method=\"BatchSendMessages\",code=\"OK\"}"),
        1.0
    );
    assert_eq!(
        value("spool_grpc_requests_total{method=\"GetQueue\",code=\"NOT_FOUND\"}"),
        1.0
    );
    assert_eq!(
        value("spool_grpc_requests_total{method=\"ReceiveMessages\",code=\"OK\"}"),
        2.0
    );
    assert_eq!(
        value("spool_grpc_requests_total{method=\"ReceiveMessages\",code=\"NOT_FOUND\"}"),
        1.0
    );
    assert_eq!(
        value("spool_grpc_request_duration_seconds_count{method=\"SendMessage\"}"),
        2.0
    );
    assert_eq!(
        value("spool_grpc_request_duration_seconds_bucket{method=\"SendMessage\",le=\"+Inf\"}"),
        2.0
    );
    assert!(body.contains("# TYPE spool_grpc_request_duration_seconds histogram"));
    assert!(value("spool_storage_commit_duration_seconds_count") >= 4.0);
    assert!(value("spool_storage_commit_messages_sum") >= 5.0);
    assert_eq!(value("spool_storage_commit_failures_total"), 0.0);

    let (head, _) = http_get(metrics_addr, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drops_at_shutdown_while_liveness_stays() {
    let server =
        TestServer::start_with(|config| config.settings.shutdown_grace_seconds = Some(2)).await;
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let mut readiness = health
        .watch(HealthCheckRequest {
            service: "spool.v1.QueueService".into(),
        })
        .await
        .expect("watch readiness")
        .into_inner();
    let mut liveness = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch liveness")
        .into_inner();
    let first = readiness.message().await.expect("status").expect("one");
    assert_eq!(first.status(), ServingStatus::Serving);
    let first = liveness.message().await.expect("status").expect("one");
    assert_eq!(first.status(), ServingStatus::Serving);

    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(Duration::from_secs(5), readiness.message())
        .await
        .expect("readiness changes at once");
    assert_eq!(
        next.expect("status").expect("one").status(),
        ServingStatus::NotServing
    );
    // Liveness does not turn NOT_SERVING while the server drains.
    if let Ok(Ok(Some(status))) =
        tokio::time::timeout(Duration::from_millis(500), liveness.message()).await
    {
        assert_eq!(status.status(), ServingStatus::Serving);
    }
    stopping.await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_precedence_is_file_then_env_then_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("spool.toml");
    std::fs::write(&config, "max_queues = 1\nshutdown_grace_seconds = 7\n").expect("config");
    let config_arg = config.to_str().expect("utf-8 path");
    let effective = |server: &ChildServer| server.log_line("effective configuration");

    let file_only = ChildServer::start_with(&dir.path().join("a"), &["--config", config_arg], &[]);
    let line = effective(&file_only);
    assert!(
        line.contains(r#"\"max_queues\":1,"#) && line.contains(r#"\"shutdown_grace_seconds\":7"#),
        "{line}"
    );
    // The file's limit is the one in force.
    let mut client = file_only.client().await;
    create(&mut client, "one", attrs()).await;
    let status = client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "two".into(),
            attributes: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    drop(file_only);

    let env_over_file = ChildServer::start_with(
        &dir.path().join("b"),
        &["--config", config_arg],
        &[("SPOOL_MAX_QUEUES", "2")],
    );
    let line = effective(&env_over_file);
    assert!(
        line.contains(r#"\"max_queues\":2,"#) && line.contains(r#"\"shutdown_grace_seconds\":7"#),
        "{line}"
    );
    drop(env_over_file);

    let flag_over_env = ChildServer::start_with(
        &dir.path().join("c"),
        &["--config", config_arg, "--max-queues", "3"],
        &[
            ("SPOOL_MAX_QUEUES", "2"),
            ("SPOOL_CONFIG", "/nonexistent.toml"),
        ],
    );
    let line = effective(&flag_over_env);
    assert!(line.contains(r#"\"max_queues\":3,"#), "{line}");
    drop(flag_over_env);

    // A bad file is a clear startup error.
    std::fs::write(&config, "max_queue = 1\n").expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config_arg])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_queue"), "{stderr}");
}

/// The config files that ship with the container image and the Kubernetes base are ones the
/// server accepts (it refuses unknown keys). The image's listens on every interface without an
/// auth file, so it starts only once given one (SPOOL_AUTH_FILE), or told
/// SPOOL_ALLOW_UNAUTHENTICATED: protected by default.
#[test]
fn shipped_config_files_parse() {
    let read = |file: &str, auth_file: Option<&str>| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        spool::config::Settings {
            config: Some(path),
            auth_file: auth_file.map(Into::into),
            ..Default::default()
        }
        .resolve()
    };
    for (file, auth_file) in [
        ("deploy/base/spool.toml", None),
        ("deploy/overlays/cluster/spool.toml", None),
        (
            "deploy/docker/spool.toml",
            Some("/run/secrets/principals.toml"),
        ),
    ] {
        let settings = read(file, auth_file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(settings.metrics_listen.is_some(), "{file} serves metrics");
    }
    let unprotected = read("deploy/docker/spool.toml", None).expect_err("no auth file");
    assert!(
        unprotected.to_string().contains("--auth-file"),
        "{unprotected}"
    );
}

/// While the queues are recovered, the server already answers: liveness is SERVING, readiness
/// (`spool.v1.QueueService`) NOT_SERVING and the queue calls UNAVAILABLE with reason STARTING;
/// once recovery is done, readiness turns SERVING and the queues are all there. A backlog of
/// 300,000 rows make recovery last long enough to watch (the first check comes within
/// milliseconds; recovery takes about a second in a debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_service_is_not_serving_until_recovery_is_done() {
    if sqlite_only("writes its backlog straight into spool.db") {
        return;
    }
    const BACKLOG: i64 = 300_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    server.stop().await;

    // The backlog, written straight into the database (far quicker than sending it).
    let db = rusqlite::Connection::open(dir.path().join("spool.db")).expect("open spool.db");
    let queue_id: i64 = db
        .query_row("SELECT id FROM queues WHERE name = 'q'", [], |row| {
            row.get(0)
        })
        .expect("queue id");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    db.execute_batch(&format!(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {BACKLOG})
         INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body)
             SELECT x, {queue_id}, {now_ms}, {now_ms}, zeroblob(16) FROM n;
         UPDATE counters SET value = {BACKLOG} + 1 WHERE name = 'next_message_id';"
    ))
    .expect("write the backlog");
    drop(db);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(spool::server::run(
        listener,
        async move {
            let _ = stopped.await;
        },
        spool::server::ServerConfig::from_settings(spool::config::Settings {
            // The readiness watch below is an open call the shutdown would wait for.
            shutdown_grace_seconds: Some(1),
            ..spool::config::Settings::for_data_dir(dir.path())
        }),
    ));
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let readiness = health
        .check(check("spool.v1.QueueService"))
        .await
        .expect("readiness")
        .into_inner();
    assert_eq!(readiness.status(), ServingStatus::NotServing);
    let liveness = health
        .check(check(""))
        .await
        .expect("liveness")
        .into_inner();
    assert_eq!(liveness.status(), ServingStatus::Serving);
    let mut client = pb::queue_service_client::QueueServiceClient::new(channel);
    let refused = client
        .get_queue(pb::GetQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect_err("not serving yet");
    assert_error(&refused, tonic::Code::Unavailable, 6000);
    assert_eq!(
        refused
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone()),
        Some("STARTING".to_string())
    );

    let mut watch = health
        .watch(check("spool.v1.QueueService"))
        .await
        .expect("watch readiness")
        .into_inner();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(status) = watch.message().await.expect("status") {
            if status.status() == ServingStatus::Serving {
                return;
            }
        }
        panic!("the readiness watch ended before SERVING");
    });
    ready.await.expect("SERVING after recovery");
    let stats = stats(&mut client, "q").await;
    assert_eq!(stats.active_messages, BACKLOG as u64);

    drop((watch, health, client));
    let _ = stop.send(());
    serving.await.expect("server task").expect("server");
}
