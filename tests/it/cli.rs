//! The `spool` binary's client commands against an in-process server: JSON on stdout, errors
//! on stderr with the status and the CMQ code, and the exit codes.

use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::common::TestServer;

/// Longest a command may take; only `receive --wait` waits, and never this long.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn spool(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spool"));
    command
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("SPOOL_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn output(command: &mut Command) -> Output {
    tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("spool ran too long")
        .expect("run spool")
}

/// Runs a command that must succeed; returns its stdout lines as JSON values.
async fn ok(endpoint: &str, args: &[&str]) -> Vec<Value> {
    let output = output(&mut spool(endpoint, args)).await;
    lines(args, &output)
}

fn lines(args: &[&str], output: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "spool {args:?} failed: {}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Runs a command that must succeed and print one JSON object.
async fn one(endpoint: &str, args: &[&str]) -> Value {
    let mut values = ok(endpoint, args).await;
    assert_eq!(values.len(), 1, "spool {args:?} printed {values:?}");
    values.remove(0)
}

/// Runs a command that must fail; returns (exit code, stderr).
async fn fails(endpoint: &str, args: &[&str]) -> (i32, String) {
    let output = output(&mut spool(endpoint, args)).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "spool {args:?} succeeded; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty(), "spool {args:?} printed output");
    (output.status.code().expect("exit code"), stderr)
}

/// Runs `spool send NAME` with the body on stdin.
async fn send_stdin(endpoint: &str, queue: &str, body: &[u8]) -> Value {
    let args = ["send", queue];
    let mut child = spool(endpoint, &args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body).await.expect("write body");
    drop(stdin);
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("spool ran too long")
        .expect("run spool");
    let mut values = lines(&args, &output);
    assert_eq!(values.len(), 1);
    values.remove(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_print_queues_as_json() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    let created = one(
        &endpoint,
        &[
            "queue",
            "create",
            "QueueForTest",
            "--visibility-timeout",
            "10",
            "--polling-wait",
            "10",
            "--max-message-size",
            "65536",
            "--retention",
            "3600",
            "--rewind",
            "600",
            "--max-backlog",
            "1000",
        ],
    )
    .await;
    assert_eq!(created["name"], "QueueForTest");
    let a = &created["attributes"];
    assert_eq!(a["visibility_timeout_seconds"], 10);
    assert_eq!(a["polling_wait_seconds"], 10);
    assert_eq!(a["max_message_size"], 65_536);
    assert_eq!(a["message_retention_seconds"], 3_600);
    assert_eq!(a["rewind_seconds"], 600);
    assert_eq!(a["max_backlog"], 1_000);
    assert_eq!(created["stats"]["active_messages"], 0);
    assert_eq!(created["stats"]["oldest_message_time"], Value::Null);
    let create_time = created["create_time"].as_str().expect("create_time");
    assert!(
        create_time.ends_with('Z') && create_time.len() >= 20,
        "{create_time}"
    );

    let got = one(&endpoint, &["queue", "get", "QueueForTest"]).await;
    assert_eq!(got, created);
    let updated = one(
        &endpoint,
        &[
            "queue",
            "update",
            "QueueForTest",
            "--visibility-timeout",
            "20",
        ],
    )
    .await;
    assert_eq!(updated["attributes"]["visibility_timeout_seconds"], 20);
    assert_eq!(updated["attributes"]["rewind_seconds"], 600);

    one(&endpoint, &["queue", "create", "QueueTest"]).await;
    one(&endpoint, &["queue", "create", "Other"]).await;
    let all = ok(&endpoint, &["queue", "list"]).await;
    let names: Vec<_> = all.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Other", "QueueForTest", "QueueTest"]);
    let some = ok(&endpoint, &["queue", "list", "--prefix", "Queue"]).await;
    assert_eq!(some.len(), 2);
    assert!(
        ok(&endpoint, &["queue", "list", "--prefix", "None"])
            .await
            .is_empty()
    );

    let deleted = one(&endpoint, &["queue", "delete", "Other"]).await;
    assert_eq!(deleted["queue_name"], "Other");
    assert_eq!(deleted["deleted"], true);
    let (code, stderr) = fails(&endpoint, &["queue", "get", "Other"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "spool: NOT_FOUND: queue \"Other\" does not exist (cmq_code 4440)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_delete_round_trip() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(&endpoint, &["queue", "create", "q"]).await;

    let sent = one(&endpoint, &["send", "q", "I am test message."]).await;
    let text_id = sent["message_id"].as_str().expect("message_id").to_string();
    // From stdin, as bytes: not UTF-8, so it comes back as base64.
    let sent = send_stdin(&endpoint, "q", &[0xff, 0x00, b'A']).await;
    let binary_id = sent["message_id"].as_str().expect("message_id").to_string();
    let sent = send_stdin(&endpoint, "q", "héllo\n".as_bytes()).await;
    let newline_id = sent["message_id"].as_str().expect("message_id").to_string();
    one(&endpoint, &["send", "q", "later", "--delay", "600"]).await;

    let got = ok(
        &endpoint,
        &[
            "receive",
            "q",
            "--max",
            "16",
            "--wait",
            "0",
            "--visibility-timeout",
            "60",
        ],
    )
    .await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0]["message_id"], text_id.as_str());
    assert_eq!(got[0]["body"], "I am test message.");
    assert!(got[0].get("body_base64").is_none());
    assert_eq!(got[1]["message_id"], binary_id.as_str());
    assert_eq!(got[1]["body_base64"], "/wBB");
    assert!(got[1].get("body").is_none());
    assert_eq!(got[2]["message_id"], newline_id.as_str());
    assert_eq!(got[2]["body"], "héllo\n");
    for message in &got {
        assert_eq!(message["dequeue_count"], 1);
        for field in ["enqueue_time", "first_dequeue_time", "next_visible_time"] {
            assert!(
                message[field].as_str().is_some_and(|t| t.ends_with('Z')),
                "{message}"
            );
        }
        assert!(
            message["receipt_handle"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
        );
    }

    let handle = got[0]["receipt_handle"].as_str().unwrap();
    let deleted = one(&endpoint, &["delete", "q", handle]).await;
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["receipt_handle"], handle);
    one(&endpoint, &["delete", "q", handle]).await; // deleting again is fine
    for message in &got[1..] {
        one(
            &endpoint,
            &["delete", "q", message["receipt_handle"].as_str().unwrap()],
        )
        .await;
    }
    // Empty: nothing printed, and success.
    assert!(
        ok(&endpoint, &["receive", "q", "--wait", "0"])
            .await
            .is_empty()
    );
    let stats = one(&endpoint, &["queue", "get", "q"]).await["stats"].clone();
    assert_eq!(stats["active_messages"], 0);
    assert_eq!(stats["inactive_messages"], 0);
    assert_eq!(stats["delayed_messages"], 1);

    // --delete: printed, then deleted.
    one(&endpoint, &["send", "q", "one"]).await;
    one(&endpoint, &["send", "q", "two"]).await;
    let got = ok(
        &endpoint,
        &["receive", "q", "--max", "5", "--wait", "0", "--delete"],
    )
    .await;
    let bodies: Vec<_> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["one", "two"]);
    let stats = one(&endpoint, &["queue", "get", "q"]).await["stats"].clone();
    assert_eq!(
        (
            stats["active_messages"].clone(),
            stats["inactive_messages"].clone()
        ),
        (0.into(), 0.into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_waits_for_a_message() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(&endpoint, &["queue", "create", "q"]).await;
    let mut waiting = spool(&endpoint, &["receive", "q", "--wait", "20", "--delete"]);
    let waiting = tokio::spawn(async move { output(&mut waiting).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    one(&endpoint, &["send", "q", "worth the wait"]).await;
    let output = waiting.await.expect("receive task");
    let got = lines(&["receive"], &output);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], "worth the wait");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_takes_unix_seconds_or_rfc_3339() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(
        &endpoint,
        &["queue", "create", "QueueTest", "--rewind", "43200"],
    )
    .await;
    let start = unix_now();
    one(&endpoint, &["send", "QueueTest", "i am test"]).await;
    let got = ok(
        &endpoint,
        &["receive", "QueueTest", "--wait", "0", "--delete"],
    )
    .await;
    assert_eq!(got.len(), 1);

    let rewound = one(
        &endpoint,
        &["rewind", "QueueTest", "--to", &start.to_string()],
    )
    .await;
    assert_eq!(rewound["queue_name"], "QueueTest");
    assert_eq!(rewound["restored_messages"], 1);
    let again = ok(
        &endpoint,
        &["receive", "QueueTest", "--wait", "0", "--delete"],
    )
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["body"], "i am test");
    assert_eq!(again[0]["dequeue_count"], 2);

    // The same moment in RFC 3339, in UTC and with an offset.
    let utc = spool::cli::time::format_timestamp(&prost_types::Timestamp {
        seconds: start as i64,
        nanos: 0,
    });
    let rewound = one(&endpoint, &["rewind", "QueueTest", "--to", &utc]).await;
    assert_eq!(rewound["restored_messages"], 1, "{utc}");
    ok(
        &endpoint,
        &["receive", "QueueTest", "--wait", "0", "--delete"],
    )
    .await;
    let shifted = spool::cli::time::format_timestamp(&prost_types::Timestamp {
        seconds: start as i64 + 8 * 3_600,
        nanos: 0,
    })
    .replace('Z', "+08:00");
    let rewound = one(&endpoint, &["rewind", "QueueTest", "--to", &shifted]).await;
    assert_eq!(rewound["restored_messages"], 1, "{shifted}");

    // Rewind off: FAILED_PRECONDITION, 6050.
    one(&endpoint, &["queue", "create", "plain"]).await;
    let (code, stderr) = fails(&endpoint, &["rewind", "plain", "--to", &start.to_string()]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("spool: FAILED_PRECONDITION: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("rewind is not enabled on queue \"plain\""),
        "{stderr}"
    );
    assert!(stderr.contains("(cmq_code 6050)"), "{stderr}");
    // Not a time: a usage error from the argument parser.
    let (code, stderr) = fails(&endpoint, &["rewind", "plain", "--to", "yesterday"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("\"yesterday\" is not a time"), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_go_to_stderr_with_status_and_a_non_zero_exit() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(
        &endpoint,
        &["queue", "create", "q", "--max-message-size", "1024"],
    )
    .await;

    let (code, stderr) = fails(&endpoint, &["queue", "create", "q"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("spool: ALREADY_EXISTS: "), "{stderr}");
    assert!(stderr.contains("(cmq_code 4460)"), "{stderr}");

    // The server's INVALID_ARGUMENT (ranges the command line knows are refused before a call:
    // flags_outside_their_range_are_refused_naming_the_flag_and_the_range).
    let (code, stderr) = fails(&endpoint, &["queue", "create", "1bad"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("spool: INVALID_ARGUMENT: "), "{stderr}");
    assert!(stderr.contains("queue_name"), "{stderr}");
    assert!(stderr.contains("(cmq_code 4000)"), "{stderr}");

    let big = "x".repeat(1_025);
    let (code, stderr) = fails(&endpoint, &["send", "q", &big]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("(cmq_code 4400)"), "{stderr}");
    let (_, stderr) = fails(&endpoint, &["send", "nope", "x"]).await;
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    let (code, stderr) = fails(&endpoint, &["receive", "q", "--max", "17"]).await;
    assert_eq!(code, 2, "refused by the command line, before any call");
    assert!(stderr.contains("17 is not in 1..=16"), "{stderr}");
    let (_, stderr) = fails(&endpoint, &["delete", "q", "not-a-handle"]).await;
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
    assert!(stderr.contains("receipt_handle"), "{stderr}");

    // A stale handle: the message was received again since.
    one(&endpoint, &["send", "q", "x"]).await;
    let first = ok(
        &endpoint,
        &["receive", "q", "--wait", "0", "--visibility-timeout", "1"],
    )
    .await;
    // Visible again after its 1 s; the wait covers a late timer.
    let second = ok(&endpoint, &["receive", "q", "--wait", "5"]).await;
    assert_eq!(second[0]["dequeue_count"], 2);
    let handle = first[0]["receipt_handle"].as_str().unwrap();
    let (code, stderr) = fails(&endpoint, &["delete", "q", handle]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("spool: FAILED_PRECONDITION: "),
        "{stderr}"
    );
    assert!(stderr.contains("(cmq_code 4430)"), "{stderr}");

    // Usage errors are clap's: exit code 2.
    let (code, _) = fails(&endpoint, &["receive"]).await;
    assert_eq!(code, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_comes_from_the_flag_or_the_environment() {
    let server = TestServer::start().await;
    // SPOOL_ENDPOINT, without --endpoint (and host:port means http://host:port).
    let output = output(
        Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["queue", "create", "from-env"])
            .env("SPOOL_ENDPOINT", server.addr.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true),
    )
    .await;
    let created = lines(&["queue", "create"], &output);
    assert_eq!(created[0]["name"], "from-env");

    // Nobody listening: UNAVAILABLE, after the client's few retries, with a hint.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let (code, stderr) = fails(&closed, &["queue", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!("spool: UNAVAILABLE: cannot connect to {closed}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("SPOOL_ENDPOINT"), "{stderr}");

    let (code, stderr) = fails("ftp://localhost:1", &["queue", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid endpoint \"ftp://localhost:1\""),
        "{stderr}"
    );
    server.stop().await;
}

/// First line of the README's command-line block, right after its opening fence.
const README_MARKER: &str = "# command line";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_command_line_block_runs_as_written() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("read README.md");
    let start = readme
        .find(&format!("```bash\n{README_MARKER}\n"))
        .expect("the README's command-line block")
        + "```bash\n".len();
    let script = &readme[start..start + readme[start..].find("```").expect("its end")];

    let server = TestServer::start().await;
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_spool"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let output = output(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .env("PATH", path)
            .env("SPOOL_ENDPOINT", server.endpoint())
            .stdin(Stdio::null())
            .kill_on_drop(true),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(
        output.status.success(),
        "the block failed: {}\n{shown}",
        output.status
    );
    for expected in [
        "\"visibility_timeout_seconds\":10",
        "\"body\":\"I am test message.\"",
        "\"body\":\"I am test message 0.\"",
        "\"deleted\":true",
        "\"delayed_messages\":1",
        "\"restored_messages\":1",
        "\"dequeue_count\":2",
        "\"rewind_seconds\":0",
        "\"body\":\"slow work\"",
        "\"purged_messages\":2",
        "\"attributes\":{\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}",
        "\"dead_letter_policy\":{\"dead_letter_queue\":\"OrdersDLQ\",\"max_receive_count\":2,\"max_time_to_live_seconds\":0}",
        "\"source_queues\":[\"Orders\"]",
        "\"dead_letter_source_queue\":\"Orders\",\"dead_letter_receive_count\":2",
        "\"redriven_messages\":1",
        "exit code 1",
    ] {
        assert!(
            stdout.contains(expected),
            "the output lacks {expected:?}\n{shown}"
        );
    }
    assert!(
        stderr.contains("spool: NOT_FOUND: queue \"QueueTest\" does not exist (cmq_code 4440)"),
        "{shown}"
    );
    server.stop().await;
}

/// An endpoint where nothing listens: commands refused by the command line never get there.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

/// Runs `spool ARGS` (no --endpoint added) with the given SPOOL_ENDPOINT, or none.
async fn bare(args: &[&str], spool_endpoint: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spool"));
    command
        .args(args)
        .env_remove("SPOOL_ENDPOINT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(endpoint) = spool_endpoint {
        command.env("SPOOL_ENDPOINT", endpoint);
    }
    output(&mut command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_outside_their_range_are_refused_naming_the_flag_and_the_range() {
    let endpoint = closed_endpoint();
    for (args, expected) in [
        (
            &["receive", "q", "--max", "0"][..],
            "'--max <N>': 0 is not in 1..=16",
        ),
        (
            &["receive", "q", "--max", "17"],
            "'--max <N>': 17 is not in 1..=16",
        ),
        (
            &["receive", "q", "--wait", "-1"],
            "'--wait <S>': -1 is not in 0..=30",
        ),
        (
            &["receive", "q", "--wait", "31"],
            "'--wait <S>': 31 is not in 0..=30",
        ),
        (
            &["receive", "q", "--visibility-timeout", "0"],
            "'--visibility-timeout <S>': 0 is not in 1..=43200",
        ),
        (
            &["queue", "create", "q", "--visibility-timeout", "43201"],
            "43201 is not in 1..=43200",
        ),
        (
            &["queue", "update", "q", "--polling-wait", "-5"],
            "'--polling-wait <S>': -5 is not in 0..=30",
        ),
        (
            &["queue", "create", "q", "--max-message-size", "1023"],
            "1023 is not in 1024..=1048576",
        ),
        (
            &["queue", "create", "q", "--retention", "59"],
            "59 is not in 60..=1296000",
        ),
        (
            &["queue", "create", "q", "--max-backlog", "-3"],
            "'--max-backlog <N>': -3 is not in 1..=1000000000",
        ),
        (
            &["send", "q", "x", "--delay", "-1"],
            "'--delay <S>': -1 is not in",
        ),
        (
            &["change-visibility", "q", "h", "--timeout", "43201"],
            "'--timeout <S>': 43201 is not in 0..=43200",
        ),
        (
            &["peek", "q", "--max", "17"],
            "'--max <N>': 17 is not in 1..=16",
        ),
        (
            &["queue", "create", "q", "--dedup-window", "86401"],
            "'--dedup-window <S>': 86401 is not in 0..=86400",
        ),
        (
            &[
                "queue",
                "create",
                "q",
                "--dead-letter-queue",
                "d",
                "--max-receive-count",
                "0",
            ],
            "'--max-receive-count <N>': 0 is not in 1..=1000",
        ),
        (
            &["queue", "create", "q", "--dead-letter-queue", "d"],
            "--max-receive-count <N>",
        ),
        (
            &["redrive", "q", "--max", "100001"],
            "'--max <N>': 100001 is not in 1..=100000",
        ),
    ] {
        let (code, stderr) = fails(&endpoint, args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("-- -"),
            "{args:?}: a useless tip: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_belongs_to_client_commands_only() {
    let serve_help = bare(&["serve", "--help"], None).await;
    let serve_help = String::from_utf8_lossy(&serve_help.stdout);
    assert!(serve_help.contains("--listen"), "{serve_help}");
    assert!(!serve_help.contains("--endpoint"), "{serve_help}");
    for command in [&["receive", "--help"][..], &["queue", "get", "--help"]] {
        let help = bare(command, None).await;
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("--endpoint <URL>"), "{command:?}: {help}");
        assert!(help.contains("SPOOL_ENDPOINT"), "{command:?}: {help}");
    }
    let refused = bare(&["--endpoint", "http://127.0.0.1:1", "serve"], None).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--endpoint is for client commands"),
        "{refused:?}"
    );

    // SPOOL_ENDPOINT does not make usage lines show --endpoint as if it were required.
    let usage = bare(&["receive"], Some("http://127.0.0.1:1")).await;
    assert_eq!(usage.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&usage.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line: {stderr}"));
    assert!(!line.contains("--endpoint"), "{line}");

    // The flag after the command wins over the one before it, which wins over SPOOL_ENDPOINT.
    let server = TestServer::start().await;
    let live = server.endpoint();
    let closed = closed_endpoint();
    for (args, env) in [
        (
            vec!["queue", "list", "--endpoint", &live],
            Some(closed.as_str()),
        ),
        (vec!["queue", "--endpoint", &live, "list"], None),
        (
            vec!["--endpoint", &closed, "queue", "list", "--endpoint", &live],
            None,
        ),
        (
            vec!["--endpoint", &live, "receive", "q", "--wait", "0"],
            Some(&closed),
        ),
        (vec!["queue", "create", "after", "--endpoint", &live], None),
        (vec!["send", "after", "x", "--endpoint", &live], None),
    ] {
        let output = bare(&args, env).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // `receive` of a queue that does not exist reaches the server: NOT_FOUND.
        assert!(
            output.status.success() || stderr.contains("NOT_FOUND"),
            "{args:?}: {stderr}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_is_not_grpc_gets_a_hint() {
    // An HTTP/1 server, as on a metrics port or a web server's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    for args in [&["queue", "list"][..], &["receive", "q"]] {
        let (code, stderr) = fails(&endpoint, args).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!("is {endpoint} a Spool gRPC endpoint?")),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_change_visibility_nack_and_purge() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(&endpoint, &["queue", "create", "cv"]).await;
    for body in ["first", "second"] {
        one(&endpoint, &["send", "cv", body]).await;
    }
    let peeked = ok(&endpoint, &["peek", "cv", "--max", "16"]).await;
    let bodies: Vec<&str> = peeked
        .iter()
        .map(|m| m["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    assert!(peeked[0].get("receipt_handle").is_none(), "{peeked:?}");
    assert_eq!(peeked[0]["dequeue_count"], 0);

    let received = one(&endpoint, &["receive", "cv"]).await;
    let handle = received["receipt_handle"]
        .as_str()
        .expect("handle")
        .to_string();
    let changed = one(
        &endpoint,
        &["change-visibility", "cv", &handle, "--timeout", "600"],
    )
    .await;
    assert_eq!(changed["receipt_handle"], handle.as_str());
    let extended = changed["next_visible_time"].as_str().expect("time");
    assert!(
        extended > received["next_visible_time"].as_str().expect("time"),
        "{changed} is not later than {received}"
    );
    // Only "second" is visible now; a nack brings "first" back, ahead of it.
    assert_eq!(ok(&endpoint, &["peek", "cv", "--max", "16"]).await.len(), 1);
    one(&endpoint, &["nack", "cv", &handle]).await;
    let peeked = one(&endpoint, &["peek", "cv"]).await;
    assert_eq!(
        (peeked["body"].as_str(), peeked["dequeue_count"].as_u64()),
        (Some("first"), Some(1))
    );
    let (code, stderr) = fails(&endpoint, &["nack", "cv", &handle]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("FAILED_PRECONDITION"), "{stderr}");

    let purged = one(&endpoint, &["queue", "purge", "cv"]).await;
    assert_eq!(purged["purged_messages"], 2);
    assert!(ok(&endpoint, &["peek", "cv"]).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_prints_json_lines_deletes_them_and_exits_ok_when_the_server_stops() {
    use tokio::io::AsyncBufReadExt as _;

    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(&endpoint, &["queue", "create", "q"]).await;
    for body in ["one", "two", "three"] {
        one(&endpoint, &["send", "q", body]).await;
    }
    let mut child = spool(
        &endpoint,
        &["consume", "q", "--max-outstanding", "2", "--delete"],
    )
    .spawn()
    .expect("start spool consume");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        let line = tokio::time::timeout(RUN_LIMIT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line before the end");
        let message: Value = serde_json::from_str(&line).expect("JSON");
        bodies.push(message["body"].as_str().expect("body").to_string());
    }
    assert_eq!(bodies, ["one", "two", "three"]);
    // Deleted: with two outstanding at most, the third came only after an acknowledgement.
    let mut deleted = false;
    for _ in 0..50 {
        let queue = one(&endpoint, &["queue", "get", "q"]).await;
        if queue["stats"]["active_messages"] == 0 && queue["stats"]["inactive_messages"] == 0 {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted, "the consumed messages were not all deleted");
    server.stop().await;
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .expect("spool consume ends with the server")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_publish_into_subscribed_queues() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    one(&endpoint, &["queue", "create", "cli-eu"]).await;
    one(&endpoint, &["queue", "create", "cli-all"]).await;
    let topic = one(
        &endpoint,
        &[
            "topic",
            "create",
            "cli-orders",
            "--filter-type",
            "routing-keys",
        ],
    )
    .await;
    assert_eq!(topic["attributes"]["filter_type"], "routing-keys");
    assert_eq!(topic["attributes"]["max_message_size"], 65_536);
    let eu = one(
        &endpoint,
        &[
            "subscribe",
            "cli-orders",
            "eu",
            "--queue",
            "cli-eu",
            "--binding-key",
            "order.eu.*",
        ],
    )
    .await;
    assert_eq!(eu["binding_keys"], serde_json::json!(["order.eu.*"]));
    one(
        &endpoint,
        &["subscribe", "cli-orders", "all", "--queue", "cli-all"],
    )
    .await;
    let published = one(
        &endpoint,
        &[
            "publish",
            "cli-orders",
            "an order",
            "--routing-key",
            "order.us.created",
            "--attr",
            "k=v",
            "--dedup-id",
            "o-1",
        ],
    )
    .await;
    let copies = published["copies"].as_array().expect("copies");
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0]["queue_name"], "cli-all");
    let received = one(&endpoint, &["receive", "cli-all"]).await;
    assert_eq!(received["body"], "an order");
    assert_eq!(received["source_topic"], "cli-orders");
    assert_eq!(received["attributes"]["k"], "v");
    let subscriptions = ok(&endpoint, &["subscriptions", "cli-orders"]).await;
    let counts: Vec<(String, u64)> = subscriptions
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                s["delivered_messages"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(counts, vec![("all".to_string(), 1), ("eu".to_string(), 0)]);
    one(&endpoint, &["unsubscribe", "cli-orders", "eu"]).await;
    let updated = one(
        &endpoint,
        &[
            "topic",
            "update",
            "cli-orders",
            "--max-message-size",
            "2048",
        ],
    )
    .await;
    assert_eq!(updated["attributes"]["max_message_size"], 2048);
    assert_eq!(updated["subscription_count"], 1);
    let listed = ok(&endpoint, &["topic", "list"]).await;
    assert_eq!(listed.len(), 1);
    let (code, stderr) = fails(
        &endpoint,
        &["publish", "cli-orders", "x", "--routing-key", "bad..key"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("routing_key"), "{stderr}");
    one(&endpoint, &["topic", "delete", "cli-orders"]).await;
    let (_, stderr) = fails(&endpoint, &["topic", "get", "cli-orders"]).await;
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    server.stop().await;
}
