//! gRPC over TLS, against the real binary with certificates made in the test: the right CA
//! works; another CA, an expired certificate and a plaintext client are refused; certificates
//! rotate in place; mTLS refuses clients without a certificate of its CA and maps certificate
//! names to principals.

use std::time::{Duration, Instant};

use spool_client::{
    Client, ClientError, ClientOptions, QueueAttributes, ReceiveOptions, RetryPolicy,
};
use tokio::process::Command;

use crate::certs::{Ca, Pair, SERVER_NAME, TlsFiles, write_atomically};
use crate::common::ChildServer;

/// How long a test waits for a rotated file to be picked up (the server polls every second).
const RELOAD_WAIT: Duration = Duration::from_secs(15);

fn https(server: &ChildServer) -> String {
    format!("https://127.0.0.1:{}", server.addr.port())
}

/// Options that trust `ca` and verify the server as [`SERVER_NAME`], with no retries: a
/// refused handshake fails at once.
fn trusting(ca: &str) -> ClientOptions {
    ClientOptions::default()
        .tls_ca_certificate(ca.as_bytes().to_vec())
        .tls_domain_name(SERVER_NAME)
        .retry(RetryPolicy::default().max_attempts(1))
        .connect_timeout(Duration::from_secs(5))
}

fn with_identity(options: ClientOptions, pair: &Pair) -> ClientOptions {
    options.tls_client_identity(pair.cert.as_bytes().to_vec(), pair.key.as_bytes().to_vec())
}

/// One call on a new connection.
async fn list(endpoint: &str, options: ClientOptions) -> Result<(), ClientError> {
    let client = Client::connect_lazy(endpoint, options)?;
    client.list_queues("", 0, "").await.map(|_| ())
}

fn start(dir: &std::path::Path, args: &[String]) -> ChildServer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChildServer::start_with(&dir.join("data"), &args, &[])
}

fn assert_refused(result: Result<(), ClientError>, expected: &[&str]) {
    let error = result.expect_err("refused");
    let text = error.to_string();
    assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
    assert!(
        expected.iter().any(|word| text.contains(word)),
        "{text} names none of {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_right_ca_and_refuses_another_ca_and_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("Spool test CA");
    let files = TlsFiles::write(dir.path(), &ca.server());
    let server = start(dir.path(), &files.args(false));
    let endpoint = https(&server);

    let client = Client::connect(&endpoint, trusting(&ca.pem))
        .await
        .expect("connect");
    client
        .create_queue("tls", QueueAttributes::default())
        .await
        .expect("create over TLS");
    client.send_message("tls", "secret").await.expect("send");
    let received = client
        .receive("tls", ReceiveOptions::default().wait_seconds(0))
        .await
        .expect("receive");
    assert_eq!(received[0].body.as_ref(), b"secret");

    let other = Ca::new("Another CA");
    assert_refused(
        list(&endpoint, trusting(&other.pem)).await,
        &["UnknownIssuer", "certificate"],
    );
    // The certificate is for localhost: a client that expects another name refuses it.
    assert_refused(
        list(
            &endpoint,
            trusting(&ca.pem).tls_domain_name("elsewhere.example"),
        )
        .await,
        &["NotValidForName", "certificate"],
    );

    let plaintext = format!("http://127.0.0.1:{}", server.addr.port());
    let options = ClientOptions::default().retry(RetryPolicy::default().max_attempts(1));
    let error = list(&plaintext, options).await.expect_err("plaintext");
    assert!(
        matches!(error, ClientError::Unavailable(_) | ClientError::Other(_)),
        "{error:?}"
    );
    let line = server.log_line("does not speak TLS");
    assert!(line.contains("https://"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("Spool test CA");
    let files = TlsFiles::write(dir.path(), &ca.expired_server());
    let server = start(dir.path(), &files.args(false));
    assert_refused(
        list(&https(&server), trusting(&ca.pem)).await,
        &["Expired", "expired"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_in_place_and_open_connections_keep_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Ca::new("First CA");
    let second = Ca::new("Second CA");
    let files = TlsFiles::write(dir.path(), &first.server());
    let server = start(dir.path(), &files.args(false));
    let endpoint = https(&server);

    let open = Client::connect(&endpoint, trusting(&first.pem))
        .await
        .expect("connect");
    open.create_queue("rotating", QueueAttributes::default())
        .await
        .expect("create");

    // A broken pair (the new key, the old certificate) is refused; the old one stays.
    write_atomically(&files.key, &second.server().key);
    server.log_line("cannot reload");
    list(&endpoint, trusting(&first.pem))
        .await
        .expect("the previous certificate is still served");

    // Which CA a new handshake needs says which certificate it was shown.
    files.replace(&second.server());
    let started = Instant::now();
    while list(&endpoint, trusting(&second.pem)).await.is_err() {
        assert!(
            started.elapsed() < RELOAD_WAIT,
            "the rotated certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused(
        list(&endpoint, trusting(&first.pem)).await,
        &["UnknownIssuer", "certificate"],
    );
    // The connection made before the rotation goes on, on its old session.
    open.send_message("rotating", "after the rotation")
        .await
        .expect("the open connection still works");
    assert_eq!(
        open.get_queue("rotating")
            .await
            .expect("get")
            .stats
            .expect("stats")
            .active_messages,
        1
    );
}

/// The auth file of the mTLS test: a principal known by its certificate's name.
const MTLS_PRINCIPALS: &str = r#"
[[principals]]
name = "orders-worker"
client_cert_name = "orders-worker"
[[principals.grants]]
queues = "orders-*"
actions = ["send", "receive", "admin"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_certificate_of_its_ca_and_maps_its_name_to_a_principal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("Spool test CA");
    let clients = Ca::new("Client CA");
    let files = TlsFiles::write(dir.path(), &ca.server());
    std::fs::write(&files.client_ca, &clients.pem).expect("client CA");
    let auth_file = dir.path().join("principals.toml");
    std::fs::write(&auth_file, MTLS_PRINCIPALS).expect("auth file");
    let mut args = files.args(true);
    args.extend(["--auth-file".to_string(), auth_file.display().to_string()]);
    let server = start(dir.path(), &args);
    let endpoint = https(&server);

    // No certificate, or one of another CA: the handshake fails.
    let no_certificate = list(&endpoint, trusting(&ca.pem)).await;
    assert!(no_certificate.is_err(), "{no_certificate:?}");
    let stranger = Ca::new("Stranger CA").client("orders-worker");
    let foreign = list(&endpoint, with_identity(trusting(&ca.pem), &stranger)).await;
    assert!(foreign.is_err(), "{foreign:?}");
    // The client hears only that the connection closed; the server's log says why.
    let line = server.log_line("TLS handshake failed");
    assert!(line.contains("certificate"), "{line}");

    // The CA's certificate named orders-worker is that principal, with its grants.
    let worker = clients.client("orders-worker");
    let client = Client::connect(&endpoint, with_identity(trusting(&ca.pem), &worker))
        .await
        .expect("connect with a certificate");
    client
        .create_queue("orders-eu", QueueAttributes::default())
        .await
        .expect("granted");
    let denied = client
        .create_queue("billing", QueueAttributes::default())
        .await
        .expect_err("not granted");
    assert!(
        matches!(denied, ClientError::PermissionDenied(_)),
        "{denied:?}"
    );

    // A certificate the CA signed whose name no principal has is not enough.
    let nobody = clients.client("nobody");
    let unknown = list(&endpoint, with_identity(trusting(&ca.pem), &nobody))
        .await
        .expect_err("unknown name");
    assert!(
        matches!(unknown, ClientError::Unauthenticated(_)),
        "{unknown:?}"
    );
    assert!(unknown.to_string().contains("nobody"), "{unknown}");

    // The command line, with the same files.
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.crt", &ca.pem),
        write("client.crt", &worker.cert),
        write("client.key", &worker.key),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["queue", "get", "orders-eu", "--endpoint", &endpoint])
        .args(["--ca-cert", &ca_file, "--client-cert", &cert_file])
        .args(["--client-key", &key_file])
        .env("SPOOL_TOKEN", "")
        .output()
        .await
        .expect("spool queue get");
    // The certificate is for localhost and the CLI connects to 127.0.0.1, which the server
    // certificate names too.
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let queue: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(queue["name"], "orders-eu");
}
