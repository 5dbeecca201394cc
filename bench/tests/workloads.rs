//! `spool-bench --targets spool` against a server in the test process: tiny bounded runs of
//! each workload, and the figures its JSON report must carry.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use spool::server::{self, ServerConfig};
use spool_client::{Client, ClientOptions, RetryPolicy};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A Spool server running in the test process (so the bench finds its memory and CPU here).
struct TestServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), server::ServerError>>,
    /// Kept so the data directory lives as long as the server.
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let config = ServerConfig::new(data_dir.path());
        let task = tokio::spawn(server::run(listener, shutdown, config));
        // Serving once a call succeeds: the client retries while the server recovers.
        let patient = ClientOptions::default().retry(RetryPolicy::default().max_attempts(50));
        Client::connect(&format!("http://{addr}"), patient)
            .await
            .expect("connect")
            .list_all_queues("")
            .await
            .expect("the server serves");
        Self {
            addr,
            stop,
            task,
            _data_dir: data_dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server run");
    }
}

/// Longest a tiny bench may take (each finishes in well under a second).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `spool-bench --targets spool --json ARGS` and returns Spool's report.
async fn bench(endpoint: &str, args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        RUN_LIMIT,
        Command::new(env!("CARGO_BIN_EXE_spool-bench"))
            .args([
                "--targets",
                "spool",
                "--spool",
                endpoint,
                "--json",
                "--max-seconds",
                "20",
            ])
            .args(args)
            .env_remove("SPOOL_ENDPOINT")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("spool-bench ran too long")
    .expect("run spool-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    json["reports"][0].clone()
}

/// The median of a figure, which must be there.
fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_figure_of_each_workload() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();

    let steady = bench(
        &endpoint,
        &["-N", "320", "-P", "2", "-C", "2", "-B", "16", "--runs", "2"],
    )
    .await;
    assert_eq!(steady["target"], "spool");
    assert_eq!(steady["workload"]["mode"], "steady");
    assert!(
        steady["durability"]
            .as_str()
            .is_some_and(|d| d.contains("fsync"))
    );
    assert_eq!(steady["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(figure(&steady, "messages_sent"), 320.0);
    assert_eq!(figure(&steady, "messages_consumed"), 320.0);
    assert!(figure(&steady, "end_to_end_msgs_per_s") > 0.0);
    for name in [
        "send_ack_ms_p50",
        "send_ack_ms_p99",
        "send_ack_ms_p99.9",
        "end_to_end_ms_p50",
        "end_to_end_ms_p99",
    ] {
        assert!(figure(&steady, name) > 0.0, "{name}");
    }
    let spread = &steady["figures"]["end_to_end_msgs_per_s"];
    assert!(spread["min"].as_f64() <= spread["median"].as_f64());
    assert!(spread["median"].as_f64() <= spread["max"].as_f64());
    // The server runs in this process, which bench finds by its listening port.
    assert!(figure(&steady, "server_rss_bytes") > 0.0);

    let fill_drain = bench(
        &endpoint,
        &["--mode", "fill-drain", "-N", "100", "-B", "10"],
    )
    .await;
    assert_eq!(figure(&fill_drain, "messages_consumed"), 100.0);
    assert!(figure(&fill_drain, "fill_msgs_per_s") > 0.0);
    assert!(figure(&fill_drain, "drain_msgs_per_s") > 0.0);

    let idle = bench(
        &endpoint,
        &["--mode", "idle", "-W", "20", "-N", "10", "--rate", "100"],
    )
    .await;
    assert_eq!(figure(&idle, "waiters"), 20.0);
    assert_eq!(figure(&idle, "messages_consumed"), 10.0);
    assert!(figure(&idle, "wakeup_ms_p99") >= 0.0);
    assert!(figure(&idle, "end_to_end_ms_p50") > 0.0);
    assert!(idle["figures"]["server_bytes_per_waiter"].is_object());

    let echo = bench(&endpoint, &["--mode", "echo", "-N", "50", "-P", "2"]).await;
    assert_eq!(echo["target"], "grpc-echo");
    assert_eq!(figure(&echo, "calls"), 50.0);

    // The bench queues are deleted after each run.
    let client = Client::connect(&endpoint, ClientOptions::default())
        .await
        .expect("connect");
    let queues = client.list_all_queues("").await.expect("list");
    assert!(queues.is_empty(), "{queues:?}");
    server.stop().await;
}

#[tokio::test]
async fn bench_refuses_other_hosts_and_bad_flags() {
    for args in [
        vec!["--targets", "spool", "--spool", "http://10.1.2.3:50051"],
        vec!["--targets", "spool", "-B", "17"],
        vec!["--targets", "spool", "--max-seconds", "100000"],
        vec!["storage", "send", "http://10.1.2.3:50051", "1", "1", "1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_spool-bench"))
            .args(&args)
            .env_remove("SPOOL_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run spool-bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("spool-bench:"), "{args:?}: {stderr}");
    }
}
