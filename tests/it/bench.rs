//! `spool bench` against an in-process server: tiny bounded runs of each workload, and the
//! figures its JSON report must carry.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::common::TestServer;

/// Longest a tiny bench may take (each finishes in well under a second).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `spool bench --json ARGS` and returns its report.
async fn bench(endpoint: &str, args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        RUN_LIMIT,
        Command::new(env!("CARGO_BIN_EXE_spool"))
            .args([
                "--endpoint",
                endpoint,
                "bench",
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
    .expect("spool bench ran too long")
    .expect("run spool bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON report")
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
    let mut client = server.client().await;
    let queues = client
        .list_queues(spool::pb::ListQueuesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(queues.queues.is_empty(), "{queues:?}");
    server.stop().await;
}

#[tokio::test]
async fn bench_refuses_other_hosts_and_bad_flags() {
    for args in [
        vec!["--endpoint", "http://10.1.2.3:50051", "bench", "-N", "1"],
        vec!["bench", "-B", "17"],
        vec!["bench", "--max-seconds", "100000"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(&args)
            .env_remove("SPOOL_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run spool");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("spool bench:"));
    }
}
