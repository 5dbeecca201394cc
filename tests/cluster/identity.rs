//! Forwarded identity: a replica forwards the principal it authenticated, asserted with the
//! cluster's key (src/auth/forwarded.rs), so callers the owner cannot authenticate itself (a
//! signed SQS or CMQ request on the HTTP port) reach queues of other replicas; the owner still
//! authorizes with its own grants; a forged, altered or replayed assertion is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use spool::pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::common::ChildServer;
use crate::harness::{Database, client_of, owner_address, replica, split};

const SIGNING_KEY_ID: &str = "AKIDAPP";
const SIGNING_SECRET: &str = "an-sqs-secret-of-the-app-0123456789";

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` of now (UTC), as SigV4's X-Amz-Date.
fn amz_date() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// One SQS JSON call to the HTTP port at `addr`, signed with SigV4 as an AWS SDK signs it;
/// the answer's status and JSON body.
async fn sqs(addr: std::net::SocketAddr, action: &str, input: Value) -> (u16, Value) {
    let body = input.to_string();
    let host = addr.to_string();
    let date = amz_date();
    let day = &date[..8];
    let target = format!("AmazonSQS.{action}");
    let content_type = "application/x-amz-json-1.0";
    let canonical = format!(
        "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{date}\n\
         x-amz-target:{target}\n\ncontent-type;host;x-amz-date;x-amz-target\n{}",
        sha256_hex(body.as_bytes())
    );
    let scope = format!("{day}/us-east-1/sqs/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac(format!("AWS4{SIGNING_SECRET}").as_bytes(), day.as_bytes());
    for part in ["us-east-1", "sqs", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nX-Amz-Target: \
         {target}\r\nX-Amz-Date: {date}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential={SIGNING_KEY_ID}/{scope}, SignedHeaders=content-type;host;x-amz-date;\
         x-amz-target, Signature={signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP port");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

/// One CMQ call (API v2, GET) to the HTTP port at `addr`, signed with HmacSHA256 as CMQ's
/// SDKs sign it; the answer's JSON body.
async fn cmq(addr: std::net::SocketAddr, params: &[(&str, &str)]) -> Value {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let host = addr.to_string();
    let nonce = NONCE
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    let mut signed: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("SecretId".to_string(), SIGNING_KEY_ID.to_string()),
            ("Nonce".to_string(), nonce),
            ("Timestamp".to_string(), timestamp),
            ("SignatureMethod".to_string(), "HmacSHA256".to_string()),
        ])
        .collect();
    signed.sort();
    let text: Vec<String> = signed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let to_sign = format!("GET{host}/v2/index.php?{}", text.join("&"));
    let signature = base64::engine::general_purpose::STANDARD
        .encode(hmac(SIGNING_SECRET.as_bytes(), to_sign.as_bytes()));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in &signed {
        query.append_pair(key, value);
    }
    query.append_pair("Signature", &signature);
    let request = format!(
        "GET /v2/index.php?{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        query.finish()
    );
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP port");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&answer).to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON answer: {text}"))
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Three replicas with the same auth file and their HTTP ports.
fn replicas_with_auth(dir: &std::path::Path, url: &str) -> Vec<ChildServer> {
    let auth = dir.join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principals]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\n\
             [[principals.grants]]\nqueues = \"*\"\nactions = [\"send\", \"receive\", \"admin\"]\n\n\
             [[principals]]\nname = \"sender\"\ntoken_sha256 = \"{}\"\n\
             [[principals.grants]]\nqueues = \"a-*\"\nactions = [\"send\"]\n\n\
             [[principals]]\nname = \"app\"\nsigning_key_id = \"{SIGNING_KEY_ID}\"\n\
             signing_secret = \"{SIGNING_SECRET}\"\n\
             [[principals.grants]]\nqueues = \"a-*\"\nactions = [\"send\", \"receive\"]\n",
            sha256_hex(b"admin-token"),
            sha256_hex(b"sender-token"),
        ),
    )
    .expect("auth file");
    let auth = auth.to_str().expect("utf-8").to_string();
    let replicas = (0..3)
        .map(|index| {
            replica(
                &dir.join(format!("replica-{index}")),
                url,
                &["--auth-file", &auth, "--http-listen", "127.0.0.1:0"],
            )
        })
        .collect();
    // Every replica has seen the others (see `harness::replicas`).
    std::thread::sleep(Duration::from_millis(1_500));
    replicas
}

async fn create(replica: &ChildServer, name: &str) {
    client_of(replica)
        .await
        .create_queue(with_token(
            pb::CreateQueueRequest {
                queue_name: name.into(),
                attributes: None,
            },
            "admin-token",
        ))
        .await
        .expect("create");
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_sqs_and_cmq_calls_reach_a_queue_another_replica_owns() {
    let Some(database) = Database::create("identity_sqs").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas_with_auth(dir.path(), &database.url());
    create(&replicas[0], "a-orders").await;
    create(&replicas[0], "b-billing").await;
    let db = database.client().await;
    let owner = owner_address(&db, "a-orders").await;
    let (_, others) = split(&replicas, &owner);
    let http = others[0].http.expect("the HTTP port");
    let url = format!("http://{http}/000000000000/a-orders");

    let (status, sent) = sqs(
        http,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "signed, through a non-owner"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert!(sent["MessageId"].is_string(), "{sent}");
    // Received through the third replica, also a non-owner, and deleted there.
    let third = others[1].http.expect("the HTTP port");
    let (status, received) = sqs(
        third,
        "ReceiveMessage",
        json!({"QueueUrl": url, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 5}),
    )
    .await;
    assert_eq!(status, 200, "{received}");
    let message = &received["Messages"][0];
    assert_eq!(message["Body"], "signed, through a non-owner", "{received}");
    let (status, deleted) = sqs(
        third,
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": message["ReceiptHandle"]}),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");

    // The same through CMQ's API: sent through one non-owner, received through the other.
    let sent = cmq(
        http,
        &[
            ("Action", "SendMessage"),
            ("queueName", "a-orders"),
            ("msgBody", "cmq, through a non-owner"),
        ],
    )
    .await;
    assert_eq!(sent["code"], 0, "{sent}");
    let received = cmq(
        third,
        &[
            ("Action", "ReceiveMessage"),
            ("queueName", "a-orders"),
            ("pollingWaitSeconds", "5"),
        ],
    )
    .await;
    assert_eq!(received["code"], 0, "{received}");
    assert_eq!(
        received["msgBody"], "cmq, through a non-owner",
        "{received}"
    );

    // The owner authorizes with its own grants: the app has none on b-*, wherever b-billing is.
    let billing = owner_address(&db, "b-billing").await;
    let (_, not_owners) = split(&replicas, &billing);
    let (status, refused) = sqs(
        not_owners[0].http.expect("the HTTP port"),
        "SendMessage",
        json!({"QueueUrl": format!("http://{http}/000000000000/b-billing"), "MessageBody": "x"}),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.to_string().contains("AccessDenied"), "{refused}");

    // A bearer caller through a non-owner, with its grants: it may send, not receive.
    let mut client = client_of(others[0]).await;
    client
        .send_message(with_token(
            pb::SendMessageRequest {
                queue_name: "a-orders".into(),
                body: b"bearer".to_vec().into(),
                ..Default::default()
            },
            "sender-token",
        ))
        .await
        .expect("the sender may send to a-*");
    let refused = client
        .peek_messages(with_token(
            pb::PeekMessagesRequest {
                queue_name: "a-orders".into(),
                max_messages: 1,
            },
            "sender-token",
        ))
        .await
        .expect_err("the sender may not receive");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

/// The value a replica would assert: made here with the key from the database (anyone who can
/// read the database is trusted, as a replica is).
fn assertion(secret: &[u8], principal: &str, path: &str, target: &str, nonce: &str) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let name = URL_SAFE_NO_PAD.encode(principal);
    let tag = hmac(
        secret,
        format!("spool-forward-v1\n{at}\n{nonce}\n{name}\n{path}\n{target}").as_bytes(),
    );
    format!("v1.{at}.{nonce}.{name}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn asserted<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "spool-forwarded-identity",
        MetadataValue::try_from(value).expect("ascii"),
    );
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_altered_and_replayed_forward_identities_are_refused() {
    let Some(database) = Database::create("identity_forged").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = replicas_with_auth(dir.path(), &database.url());
    create(&replicas[0], "a-jobs").await;
    let db = database.client().await;
    let owner_addr = owner_address(&db, "a-jobs").await;
    let (owner, others) = split(&replicas, &owner_addr);
    let secret: Vec<u8> = db
        .query_one(
            "SELECT value FROM spool.secrets WHERE name = 'cluster_forward_key'",
            &[],
        )
        .await
        .expect("the forwarding key is in the database")
        .get(0);
    assert_eq!(secret.len(), 32);
    let send_path = "/spool.v1.QueueService/SendMessage";
    let send = || pb::SendMessageRequest {
        queue_name: "a-jobs".into(),
        body: b"x".to_vec().into(),
        ..Default::default()
    };
    let mut to_owner = client_of(owner).await;

    // A genuine assertion for the owner and this method: accepted once, for the principal
    // it names, with that principal's grants.
    let genuine = assertion(&secret, "sender", send_path, &owner_addr, "0001");
    to_owner
        .send_message(asserted(send(), &genuine))
        .await
        .expect("a genuine assertion");
    let replayed = to_owner
        .send_message(asserted(send(), &genuine))
        .await
        .expect_err("replayed");
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");
    assert!(replayed.message().contains("replayed"), "{replayed:?}");
    let receive_path = "/spool.v1.QueueService/PeekMessages";
    let peek = pb::PeekMessagesRequest {
        queue_name: "a-jobs".into(),
        max_messages: 1,
    };
    let denied = to_owner
        .peek_messages(asserted(
            peek.clone(),
            &assertion(&secret, "sender", receive_path, &owner_addr, "0002"),
        ))
        .await
        .expect_err("the sender may not receive");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // Made for another replica, or another method: refused.
    let elsewhere = assertion(
        &secret,
        "admin",
        receive_path,
        &others[0].addr.to_string(),
        "0003",
    );
    let refused = to_owner
        .peek_messages(asserted(peek.clone(), &elsewhere))
        .await
        .expect_err("made for another replica");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let other_method = assertion(&secret, "admin", send_path, &owner_addr, "0004");
    let refused = to_owner
        .peek_messages(asserted(peek.clone(), &other_method))
        .await
        .expect_err("made for another method");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Forged (another key), or the principal's name changed: refused, even with a valid
    // bearer token beside it, and through a non-owner too (the header is not passed on).
    let forged = assertion(&[9u8; 32], "admin", receive_path, &owner_addr, "0005");
    let refused = to_owner
        .peek_messages(asserted(peek.clone(), &forged))
        .await
        .expect_err("forged");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let sender = URL_SAFE_NO_PAD.encode("sender");
    let admin = URL_SAFE_NO_PAD.encode("admin");
    let altered =
        assertion(&secret, "sender", receive_path, &owner_addr, "0006").replace(&sender, &admin);
    let mut with_token_too = asserted(peek.clone(), &altered);
    with_token_too.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from("Bearer sender-token").expect("ascii"),
    );
    let refused = to_owner
        .peek_messages(with_token_too)
        .await
        .expect_err("altered");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut through = client_of(others[0]).await;
    let mut smuggled = asserted(
        peek.clone(),
        &assertion(&secret, "admin", receive_path, &owner_addr, "0007"),
    );
    smuggled.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from("Bearer sender-token").expect("ascii"),
    );
    let refused = through
        .peek_messages(smuggled)
        .await
        .expect_err("a client's header is checked where it arrives");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The calls that were accepted left one message.
    let peeked = to_owner
        .peek_messages(with_token(peek, "admin-token"))
        .await
        .expect("peek")
        .into_inner();
    assert_eq!(peeked.messages.len(), 1);
}
