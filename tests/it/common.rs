//! Test harness: a real Spool server on 127.0.0.1:0, in process (with a clock the test can move)
//! or as a child process of the `spool` binary (for restarts, crashes and signals).
//!
//! The suite runs on either storage backend. With `SPOOL_TEST_BACKEND=postgres`, every server
//! keeps its queues in PostgreSQL at `SPOOL_TEST_POSTGRES_URL` (scripts/test makes a database
//! for the run and drops it afterwards), in a schema named after the server's data directory:
//! a server started again on the same directory finds its queues again, and every test has
//! its own schema. Tests that only make sense on one backend say why and return early.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use spool::clock::Clock;
use spool::pb;
use spool::pb::queue_service_client::QueueServiceClient;
use spool::server::{self, ServerConfig};
use spool_client::RpcError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = QueueServiceClient<Channel>;

/// The environment variable that selects the backend ("postgres"; anything else: SQLite).
pub const BACKEND_VAR: &str = "SPOOL_TEST_BACKEND";
/// The PostgreSQL database of the run (a libpq URL or key=value string).
pub const POSTGRES_URL_VAR: &str = "SPOOL_TEST_POSTGRES_URL";

/// Whether this run keeps its queues in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|backend| backend == "postgres")
}

/// The run's PostgreSQL database.
pub fn postgres_base_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{BACKEND_VAR}=postgres needs {POSTGRES_URL_VAR}, a database of this run's own \
             (scripts/test makes one and drops it afterwards)"
        )
    })
}

/// `url` with one more option, in its own syntax (URL query or key=value).
pub fn with_option(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{key}={value}")
    } else {
        format!("{url} {key}={value}")
    }
}

/// The schema of the server on `data_dir`: the same for every start on that directory.
pub fn schema_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("t_{:016x}", hasher.finish())
}

/// The URL a server on `data_dir` connects with: the run's database, and an application name
/// of its own so a test can find (and terminate) exactly its sessions.
pub fn postgres_url_for(data_dir: &Path) -> String {
    with_option(
        &postgres_base_url(),
        "application_name",
        &application_name(data_dir),
    )
}

/// What `pg_stat_activity.application_name` shows for the server on `data_dir`.
pub fn application_name(data_dir: &Path) -> String {
    format!("spool_{}", schema_for(data_dir))
}

/// Points `settings` at PostgreSQL when the run is on it (and nothing else set a URL).
pub fn use_backend(settings: &mut spool::config::Settings, data_dir: &Path) {
    if on_postgres() && settings.postgres_url.is_none() {
        settings.postgres_url = Some(postgres_url_for(data_dir));
        settings.postgres_schema = Some(schema_for(data_dir));
    }
}

/// True, after saying why, when this test is for SQLite only and the run is on PostgreSQL.
pub fn sqlite_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    on_postgres()
}

/// True, after saying so, when this test is for PostgreSQL only and the run is on SQLite.
pub fn postgres_only() -> bool {
    if !on_postgres() {
        eprintln!("skipped: a PostgreSQL test ({BACKEND_VAR}=postgres runs it)");
    }
    !on_postgres()
}

/// A connection to the run's database, for tests that look at or break what the server does.
pub async fn postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs `query` (one bigint result) against the server's storage on `data_dir`: `sqlite` on
/// spool.db, `postgres` in the server's schema (`{s}` stands for it).
pub fn stored_value(data_dir: &Path, sqlite: &str, postgres: &str, param: StoredParam) -> i64 {
    if on_postgres() {
        let query = postgres.replace("{s}", &format!("\"{}\"", schema_for(data_dir)));
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let client = postgres_client().await;
                let row = match &param {
                    StoredParam::None => client.query_one(&query, &[]).await,
                    StoredParam::Id(id) => client.query_one(&query, &[id]).await,
                    StoredParam::Name(name) => client.query_one(&query, &[name]).await,
                };
                row.expect("query the schema").get(0)
            })
        })
    } else {
        let conn = rusqlite::Connection::open_with_flags(
            data_dir.join("spool.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open spool.db read-only");
        match param {
            StoredParam::None => conn.query_row(sqlite, [], |row| row.get(0)),
            StoredParam::Id(id) => conn.query_row(sqlite, [id], |row| row.get(0)),
            StoredParam::Name(name) => conn.query_row(sqlite, [name], |row| row.get(0)),
        }
        .expect("query spool.db")
    }
}

pub enum StoredParam {
    None,
    Id(i64),
    Name(String),
}

/// Stored message rows, of every queue, of the server on `data_dir`.
pub fn message_rows(data_dir: &Path) -> i64 {
    stored_value(
        data_dir,
        "SELECT count(*) FROM messages",
        "SELECT count(*) FROM {s}.messages",
        StoredParam::None,
    )
}

/// Stored message rows of one queue.
pub fn rows_of_queue(data_dir: &Path, queue_id: i64) -> i64 {
    stored_value(
        data_dir,
        "SELECT count(*) FROM messages WHERE queue_id = ?1",
        "SELECT count(*) FROM {s}.messages WHERE queue_id = $1",
        StoredParam::Id(queue_id),
    )
}

/// (dequeue_count, first_dequeue_ms, visible_at_ms) of the one stored message of the server on
/// `data_dir`: its receive as it is on disk.
pub fn stored_receive(data_dir: &Path) -> (i64, i64, i64) {
    let column = |name: &str| {
        stored_value(
            data_dir,
            &format!("SELECT {name} FROM messages"),
            &format!("SELECT {name}::bigint FROM {{s}}.messages"),
            StoredParam::None,
        )
    };
    (
        column("dequeue_count"),
        column("first_dequeue_ms"),
        column("visible_at_ms"),
    )
}

/// The stored id of the queue named `name`.
pub fn queue_id(data_dir: &Path, name: &str) -> i64 {
    stored_value(
        data_dir,
        "SELECT id FROM queues WHERE name = ?1",
        "SELECT id FROM {s}.queues WHERE name = $1",
        StoredParam::Name(name.to_string()),
    )
}

/// A server running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: Clock,
    pub data_dir: PathBuf,
    /// Kept so the directory lives as long as the server (None when the test owns it).
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServerError>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(temp.path(), adjust).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (which the caller keeps).
    pub async fn start_in(dir: &Path, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_on(dir, adjust, on_postgres()).await
    }

    /// Starts a server on the embedded database in `dir`, whatever the run's backend (for
    /// tests that move data between the two).
    pub async fn start_in_sqlite(dir: &Path, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_on(dir, adjust, false).await
    }

    async fn start_on(dir: &Path, adjust: impl FnOnce(&mut ServerConfig), postgres: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut config = ServerConfig::new(dir);
        adjust(&mut config);
        // After the test's own adjustments, which may replace the settings whole.
        if postgres {
            use_backend(&mut config.settings, dir);
        }
        let clock = config.clock.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            listener,
            async move {
                let _ = stopped.await;
            },
            config,
        ));
        let server = Self {
            addr,
            clock,
            data_dir: dir.to_path_buf(),
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        };
        wait_until_serving(&server.endpoint()).await;
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        connect(&self.endpoint()).await
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
    }
}

/// Waits until the queue service reports SERVING (its queues are recovered).
pub async fn wait_until_serving(endpoint: &str) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    for _ in 0..2_000 {
        if let Ok(channel) = tonic::transport::Channel::from_shared(endpoint.to_string())
            .expect("endpoint")
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "spool.v1.QueueService".into(),
                })
                .await
                .map(|r| r.into_inner().status());
            if let Ok(ServingStatus::Serving) = status {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{endpoint} never became SERVING");
}

/// Connects, retrying while the server is still starting.
pub async fn connect(endpoint: &str) -> Client {
    for _ in 0..200 {
        if let Ok(client) = QueueServiceClient::connect(endpoint.to_string()).await {
            return client
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {endpoint}");
}

/// The `spool` binary as a child process.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// The metrics endpoint's address, when the flags asked for one.
    pub metrics: Option<SocketAddr>,
    /// The HTTP port's address (SQS, CMQ), when the flags asked for one.
    pub http: Option<SocketAddr>,
    /// Its log lines (stderr) so far, gathered by a thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts `spool serve` on 127.0.0.1:0 and waits until it is ready.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], &[])
    }

    /// Starts it with more flags and environment variables. The address and readiness come
    /// from the machine-readable lines `spool serve` writes on stdout, not from its logs.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut backend = Vec::new();
        if on_postgres() && !args.contains(&"--postgres-url") {
            backend.extend([
                "--postgres-url".to_string(),
                postgres_url_for(data_dir),
                "--postgres-schema".to_string(),
                schema_for(data_dir),
            ]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&backend)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spool");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let gathered = log.clone();
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = gathered.lock() {
                    log.push(line);
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut events = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut metrics = None;
        let mut http = None;
        loop {
            let Some(Ok(line)) = events.next() else {
                // Give the log thread a moment to gather the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let log = log.lock().map(|log| log.join("\n")).unwrap_or_default();
                panic!("spool exited before it was ready; its log:\n{log}");
            };
            let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON event");
            match event["event"].as_str() {
                Some("listening") => {
                    let grpc = event["grpc"].as_str().expect("the gRPC address");
                    addr = Some(grpc.parse().expect("addr"));
                    metrics = event["metrics"].as_str().map(|a| a.parse().expect("addr"));
                    http = event["http"].as_str().map(|a| a.parse().expect("addr"));
                }
                Some("ready") => break,
                other => panic!("unknown event {other:?} in {line}"),
            }
        }
        std::thread::spawn(move || for _ in events.by_ref() {});
        Self {
            child,
            addr: addr.expect("a listening event before the ready one"),
            metrics,
            http,
            log,
        }
    }

    /// Whether any log line so far contains `needle` (no waiting).
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .map(|log| log.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// The first log line containing `needle`, waiting up to 10 s for it.
    pub fn log_line(&self, needle: &str) -> String {
        for _ in 0..1_000 {
            if let Ok(log) = self.log.lock()
                && let Some(line) = log.iter().find(|line| line.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no log line contains {needle:?}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        connect(&self.endpoint()).await
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        signal(&self.child, "TERM");
        self.child.wait().expect("wait").code()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Asserts a status's code and CMQ code (from its ErrorInfo detail, decoded as the client crate
/// does: Spool's domain only), and returns its message.
pub fn assert_error(status: &Status, code: Code, cmq_code: i32) -> String {
    let rpc = RpcError::from_status(status);
    assert_eq!(
        (rpc.code, rpc.cmq_code),
        (code, Some(cmq_code)),
        "{status:?}"
    );
    assert!(
        rpc.reason.is_some_and(|reason| !reason.is_empty()),
        "{status:?}"
    );
    rpc.message
}

// ---- small request helpers ----

pub fn attrs() -> pb::QueueAttributes {
    pb::QueueAttributes::default()
}

pub async fn create(client: &mut Client, name: &str, attributes: pb::QueueAttributes) -> pb::Queue {
    client
        .create_queue(pb::CreateQueueRequest {
            queue_name: name.into(),
            attributes: Some(attributes),
        })
        .await
        .expect("create queue")
        .into_inner()
}

pub async fn send(client: &mut Client, queue: &str, body: &[u8]) -> String {
    client
        .send_message(pb::SendMessageRequest {
            queue_name: queue.into(),
            body: body.to_vec().into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .expect("send")
        .into_inner()
        .message_id
}

pub async fn send_delayed(client: &mut Client, queue: &str, body: &[u8], delay: u32) -> String {
    client
        .send_message(pb::SendMessageRequest {
            queue_name: queue.into(),
            body: body.to_vec().into(),
            delay_seconds: Some(delay),
            ..Default::default()
        })
        .await
        .expect("send")
        .into_inner()
        .message_id
}

pub async fn batch_send(client: &mut Client, queue: &str, bodies: &[&[u8]]) -> Vec<String> {
    client
        .batch_send_messages(pb::BatchSendMessagesRequest {
            queue_name: queue.into(),
            entries: bodies
                .iter()
                .map(|b| pb::BatchSendEntry {
                    body: b.to_vec().into(),
                    delay_seconds: None,
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("batch send")
        .into_inner()
        .message_ids
}

/// Receives and collects the whole stream.
pub async fn receive_with(
    client: &mut Client,
    request: pb::ReceiveMessagesRequest,
) -> Result<Vec<pb::ReceivedMessage>, Status> {
    let mut stream = client.receive_messages(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

/// Receives up to `max` messages without waiting.
pub async fn receive(client: &mut Client, queue: &str, max: u32) -> Vec<pb::ReceivedMessage> {
    receive_with(
        client,
        pb::ReceiveMessagesRequest {
            queue_name: queue.into(),
            max_messages: max,
            wait_seconds: Some(0),
            visibility_timeout_seconds: None,
        },
    )
    .await
    .expect("receive")
}

pub async fn delete(client: &mut Client, queue: &str, handle: &str) -> Result<(), Status> {
    client
        .delete_message(pb::DeleteMessageRequest {
            queue_name: queue.into(),
            receipt_handle: handle.into(),
        })
        .await
        .map(|_| ())
}

pub async fn get(client: &mut Client, queue: &str) -> pb::Queue {
    client
        .get_queue(pb::GetQueueRequest {
            queue_name: queue.into(),
        })
        .await
        .expect("get queue")
        .into_inner()
}

pub async fn stats(client: &mut Client, queue: &str) -> pb::QueueStats {
    get(client, queue).await.stats.expect("stats")
}

/// Runs `spool serve` on `data_dir`, expecting it to exit (it refuses the directory); returns
/// its exit status and what it wrote to stderr.
pub async fn serve_expecting_exit(data_dir: &Path) -> (ExitStatus, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn spool");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("spool kept running on {}", data_dir.display()))
        .expect("wait for spool");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One HTTP/1.1 GET (the metrics endpoint): its head and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: spool\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

/// `name{labels}` → value, for every sample line.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}
