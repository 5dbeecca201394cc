//! The gRPC port for browsers: gRPC-Web calls over HTTP/1.1 (plaintext and TLS) under the same
//! auth as gRPC, CORS (preflights, the page's own origin, a refused origin), and the web
//! console's files with their headers. Requests are written by hand on a TCP (or TLS)
//! connection, as a browser would send them, and checked against the native gRPC client.

use std::sync::Arc;

use prost::Message as _;
use sha2::{Digest, Sha256};
use spool::pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Request;

use crate::certs::{Ca, SERVER_NAME, TlsFiles};
use crate::common::{ChildServer, TestServer, attrs, create};

const ADMIN_TOKEN: &str = "web-admin-token";
const READER_TOKEN: &str = "web-reader-token";
const ALLOWED_ORIGIN: &str = "https://console.example.com";
const REFUSED_ORIGIN: &str = "https://elsewhere.example.com";

/// One HTTP/1.1 answer: status, headers (lowercase names) and body (chunked decoded).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The gRPC-Web body's messages and its trailers (`name:value` lines of the 0x80 frame),
    /// or, for a trailers-only answer, the status in the headers.
    fn grpc(&self) -> (Vec<Vec<u8>>, String) {
        let mut messages = Vec::new();
        let mut trailers = String::new();
        let mut rest = &self.body[..];
        while rest.len() >= 5 {
            let flag = rest[0];
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let payload = &rest[5..5 + length];
            if flag & 0x80 != 0 {
                trailers.push_str(&String::from_utf8_lossy(payload));
            } else {
                messages.push(payload.to_vec());
            }
            rest = &rest[5 + length..];
        }
        if let Some(status) = self.header("grpc-status") {
            trailers.push_str(&format!("grpc-status:{status}\r\n"));
            if let Some(message) = self.header("grpc-message") {
                trailers.push_str(&format!("grpc-message:{message}\r\n"));
            }
        }
        (messages, trailers)
    }

    /// The grpc-status of the call.
    fn grpc_status(&self) -> u16 {
        let (_, trailers) = self.grpc();
        trailers
            .lines()
            .find_map(|line| line.strip_prefix("grpc-status:"))
            .unwrap_or_else(|| panic!("no grpc-status in {trailers:?}"))
            .trim()
            .parse()
            .expect("a number")
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the whole answer.
async fn exchange<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: spool.test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await.expect("write head");
    io.write_all(body).await.expect("write body");
    io.flush().await.expect("flush");
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify after Connection: close; what came counts.
    let _ = io.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A gRPC-Web call (binary, as connect-web and grpc-web send it) on a new plaintext connection.
async fn grpc_web(
    addr: std::net::SocketAddr,
    method: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    grpc_web_on(tcp, method, message, headers).await
}

async fn grpc_web_on<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    method: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> Answer {
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let mut all = vec![
        ("content-type", "application/grpc-web+proto"),
        ("x-grpc-web", "1"),
    ];
    all.extend_from_slice(headers);
    exchange(
        io,
        "POST",
        &format!("/spool.v1.QueueService/{method}"),
        &all,
        &body,
    )
    .await
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An auth file: an admin of every queue, and a principal that may only receive.
fn principals() -> String {
    format!(
        "[[principals]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\n\
         [[principals.grants]]\nqueues = \"*\"\nactions = [\"send\", \"receive\", \"admin\"]\n\n\
         [[principals]]\nname = \"reader\"\ntoken_sha256 = \"{}\"\n\
         [[principals.grants]]\nqueues = \"*\"\nactions = [\"receive\"]\n",
        sha256_hex(ADMIN_TOKEN),
        sha256_hex(READER_TOKEN)
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn grpc_web_over_http1_is_served_with_the_same_auth_as_grpc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("principals.toml");
    std::fs::write(&auth_file, principals()).expect("auth file");
    let server = TestServer::start_in(&dir.path().join("data"), |config| {
        config.settings.auth_file = Some(auth_file);
    })
    .await;
    let admin = bearer(ADMIN_TOKEN);
    let reader = bearer(READER_TOKEN);
    let create_request = pb::CreateQueueRequest {
        queue_name: "web-1".into(),
        attributes: Some(attrs()),
    };

    // No credential: UNAUTHENTICATED (16), trailers-only, and nothing created.
    let refused = grpc_web(server.addr, "CreateQueue", &create_request, &[]).await;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.grpc_status(), 16, "{:?}", refused.grpc());
    // A credential without the grant: PERMISSION_DENIED (7), as over gRPC.
    let denied = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request,
        &[("authorization", &reader)],
    )
    .await;
    assert_eq!(denied.grpc_status(), 7, "{:?}", denied.grpc());

    let created = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request,
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(
        created.header("content-type"),
        Some("application/grpc-web+proto")
    );
    let (messages, trailers) = created.grpc();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let queue = pb::Queue::decode(&messages[0][..]).expect("a Queue");
    assert_eq!(queue.name, "web-1");

    let sent = grpc_web(
        server.addr,
        "SendMessage",
        &pb::SendMessageRequest {
            queue_name: "web-1".into(),
            body: b"from a browser".to_vec().into(),
            delay_seconds: None,
            ..Default::default()
        },
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(sent.grpc_status(), 0, "{:?}", sent.grpc());
    let message_id = pb::SendMessageResponse::decode(&sent.grpc().0[0][..])
        .expect("a SendMessageResponse")
        .message_id;

    // The native gRPC client sees what the gRPC-Web calls did.
    let mut client = server.client().await;
    let mut peek = Request::new(pb::PeekMessagesRequest {
        queue_name: "web-1".into(),
        max_messages: 16,
    });
    peek.metadata_mut()
        .insert("authorization", admin.parse().expect("metadata"));
    let peeked = client.peek_messages(peek).await.expect("peek").into_inner();
    assert_eq!(peeked.messages.len(), 1);
    assert_eq!(peeked.messages[0].message_id, message_id);
    assert_eq!(&peeked.messages[0].body[..], b"from a browser");

    // A server stream (ReceiveMessages) comes back as gRPC-Web frames too.
    let received = grpc_web(
        server.addr,
        "ReceiveMessages",
        &pb::ReceiveMessagesRequest {
            queue_name: "web-1".into(),
            max_messages: 16,
            wait_seconds: Some(0),
            visibility_timeout_seconds: None,
        },
        &[("authorization", &admin)],
    )
    .await;
    let (messages, trailers) = received.grpc();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let message = pb::ReceivedMessage::decode(&messages[0][..]).expect("a ReceivedMessage");
    assert_eq!(message.message_id, message_id);

    // A body over the method's limit is refused as over gRPC (INVALID_ARGUMENT, 3).
    let too_large = grpc_web(
        server.addr,
        "GetQueue",
        &pb::GetQueueRequest {
            queue_name: "x".repeat(100 * 1024),
        },
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(too_large.grpc_status(), 3, "{:?}", too_large.grpc());
    server.stop().await;
}

#[tokio::test]
async fn cors_allows_the_pages_own_origin_and_the_configured_ones_and_refuses_others() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    metrics.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_with(|config| {
        config.settings.cors_allowed_origins = Some(vec![ALLOWED_ORIGIN.to_string()]);
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics).expect("tokio listener"));
    })
    .await;
    let preflight = |origin: &'static str| async move {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        exchange(
            tcp,
            "OPTIONS",
            "/spool.v1.QueueService/CreateQueue",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type,x-grpc-web",
                ),
            ],
            b"",
        )
        .await
    };
    let allowed = preflight(ALLOWED_ORIGIN).await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(allowed.header("access-control-allow-methods"), Some("POST"));
    let allowed_headers = allowed
        .header("access-control-allow-headers")
        .expect("allowed headers");
    for name in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }

    let refused = preflight(REFUSED_ORIGIN).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let create_request = |name: &str| pb::CreateQueueRequest {
        queue_name: name.into(),
        attributes: Some(attrs()),
    };
    // A refused origin's call never reaches the service.
    let call = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request("web-refused"),
        &[("origin", REFUSED_ORIGIN)],
    )
    .await;
    assert_eq!(call.status, 403);
    assert_eq!(call.header("access-control-allow-origin"), None);
    let mut client = server.client().await;
    let status = client
        .get_queue(pb::GetQueueRequest {
            queue_name: "web-refused".into(),
        })
        .await
        .expect_err("not created");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // An allowed origin's call is served, and the page may read its status.
    let call = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request("web-allowed"),
        &[("origin", ALLOWED_ORIGIN)],
    )
    .await;
    assert_eq!(call.grpc_status(), 0);
    assert_eq!(
        call.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let exposed = call
        .header("access-control-expose-headers")
        .expect("exposed headers");
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"));

    // The page's own origin (the console's) needs no configuration: the request's host on
    // this server's scheme. The same host over https is another origin.
    let own = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request("web-own"),
        &[("origin", "http://spool.test")],
    )
    .await;
    assert_eq!(own.grpc_status(), 0);
    let other_scheme = grpc_web(
        server.addr,
        "CreateQueue",
        &create_request("web-own-2"),
        &[("origin", "https://spool.test")],
    )
    .await;
    assert_eq!(other_scheme.status, 403);

    // Native gRPC (HTTP/2, no Origin) is untouched.
    create(&mut client, "web-native", attrs()).await;

    // The refusals (a preflight, two calls) are counted. The endpoint renders at most once a
    // second: wait for a rendering that has them.
    let refused_origins = r#"spool_auth_refusals_total{reason="origin_not_allowed"}"#;
    let mut counted = None;
    for _ in 0..50 {
        let (_, text) = crate::common::http_get(metrics_addr, "/metrics").await;
        counted = crate::common::samples(&text).get(refused_origins).copied();
        if counted == Some(3.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counted, Some(3.0));
    server.stop().await;
}

#[tokio::test]
async fn the_console_is_served_with_its_content_types_cache_headers_and_csp() {
    let server = TestServer::start().await;
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        exchange(tcp, "GET", path, headers, b"").await
    };
    let root = get("/", &[]).await;
    assert_eq!(root.status, 308);
    assert_eq!(root.header("location"), Some("/console/"));

    for (path, file, content_type) in [
        ("/console/", "index.html", "text/html; charset=utf-8"),
        (
            "/console/console.js",
            "console.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/console.css",
            "console.css",
            "text/css; charset=utf-8",
        ),
        ("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
    ] {
        let page = get(path, &[]).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("content-type"), Some(content_type), "{path}");
        // What console/ built and committed, byte for byte.
        let built = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("console/dist")
                .join(file),
        )
        .expect("built file");
        assert_eq!(page.body, built, "{path}");
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        let csp = page.header("content-security-policy").expect("a CSP");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
    }
    let page = get("/console/", &[]).await;
    let etag = page.header("etag").expect("an ETag").to_string();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let again = exchange(tcp, "GET", "/console/", &[("if-none-match", &etag)], b"").await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(get("/console/nothing.js", &[]).await.status, 404);

    // HTTP/1.1 that is neither: an answer saying what the port serves, not a reset.
    let other = get("/spool.v1.QueueService/ListQueues", &[]).await;
    assert_eq!(other.status, 404);
    assert!(
        String::from_utf8_lossy(&other.body).contains("gRPC-Web"),
        "{:?}",
        String::from_utf8_lossy(&other.body)
    );
    server.stop().await;

    let quiet = TestServer::start_with(|config| config.settings.console = Some(false)).await;
    let tcp = TcpStream::connect(quiet.addr).await.expect("connect");
    assert_eq!(
        exchange(tcp, "GET", "/console/", &[], b"").await.status,
        404
    );
    quiet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_the_console_work_over_tls_with_http1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("web test CA");
    let files = TlsFiles::write(dir.path(), &ca.server());
    let auth_file = dir.path().join("principals.toml");
    std::fs::write(&auth_file, principals()).expect("auth file");
    let mut args = files.args(false);
    args.extend(["--auth-file".to_string(), auth_file.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ChildServer::start_with(&dir.path().join("data"), &args, &[]);

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    roots
        .add(
            tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes())
                .expect("CA"),
        )
        .expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What a browser offers when it speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = || async {
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        connector
            .connect(SERVER_NAME.try_into().expect("name"), tcp)
            .await
            .expect("TLS handshake")
    };

    let tls = connect().await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let page = exchange(tls, "GET", "/console/", &[], b"").await;
    assert_eq!(page.status, 200);

    let admin = bearer(ADMIN_TOKEN);
    let request = pb::CreateQueueRequest {
        queue_name: "web-tls".into(),
        attributes: Some(attrs()),
    };
    let refused = grpc_web_on(connect().await, "CreateQueue", &request, &[]).await;
    assert_eq!(refused.grpc_status(), 16);
    let created = grpc_web_on(
        connect().await,
        "CreateQueue",
        &request,
        &[("authorization", &admin), ("origin", "https://spool.test")],
    )
    .await;
    assert_eq!(created.grpc_status(), 0, "{:?}", created.grpc());
    // Over TLS the page's own origin is https://.
    assert_eq!(
        created.header("access-control-allow-origin"),
        Some("https://spool.test")
    );

    // Plaintext HTTP/1.1 to the TLS port is refused, as plaintext gRPC is.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut tcp = tcp;
    tcp.write_all(b"GET /console/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
    server.kill();
}

#[tokio::test]
async fn a_bad_cors_origin_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--cors-allowed-origins",
            "https://ok.example.com,console.example.com",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn spool");
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("spool exits")
        .expect("wait for spool");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        log.contains("\"console.example.com\" is not an origin")
            && log.contains("cors_allowed_origins"),
        "{log}"
    );
}
