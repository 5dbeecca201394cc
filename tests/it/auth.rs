//! Authentication and grants against a real server: every RPC × every kind of principal (the
//! grant matrix), ListQueues filtered by grants, reflection behind a credential and health
//! open, refusals counted, the auth file reloaded in place, and no unauthenticated server on
//! an address other hosts can reach unless told.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use spool::pb;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::common::*;

/// The principals of the matrix: each a token and what its grants allow on the `m-*` queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// `send` on `m-*`.
    Sender,
    /// `receive` on `m-*`.
    Receiver,
    /// `admin` on `m-*`.
    Admin,
    /// Known, with grants on `z-*` only.
    Outsider,
    /// A token no principal has.
    Stranger,
    /// No credentials at all.
    Nobody,
}

const EVERYONE: [Who; 6] = [
    Who::Sender,
    Who::Receiver,
    Who::Admin,
    Who::Outsider,
    Who::Stranger,
    Who::Nobody,
];

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Self::Sender => Some("sender-token"),
            Self::Receiver => Some("receiver-token"),
            Self::Admin => Some("admin-token"),
            Self::Outsider => Some("outsider-token"),
            Self::Stranger => Some("no-such-token"),
            Self::Nobody => None,
        }
    }
}

/// Also used for setting queues up: admin and everything else on every queue.
const OPS_TOKEN: &str = "ops-token";

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn principals_file() -> String {
    let principal = |name: &str, token: &str, queues: &str, actions: &str| {
        format!(
            "[[principals]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n\
             [[principals.grants]]\nqueues = \"{queues}\"\nactions = [{actions}]\n\n",
            sha256_hex(token)
        )
    };
    [
        principal("sender", "sender-token", "m-*", "\"send\""),
        principal("receiver", "receiver-token", "m-*", "\"receive\""),
        principal("admin", "admin-token", "m-*", "\"admin\""),
        principal(
            "outsider",
            "outsider-token",
            "z-*",
            "\"send\", \"receive\", \"admin\"",
        ),
        principal("ops", OPS_TOKEN, "*", "\"send\", \"receive\", \"admin\""),
    ]
    .concat()
}

/// Every RPC of `spool.v1.QueueService`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    CreateQueue,
    GetQueue,
    UpdateQueue,
    DeleteQueue,
    ListQueues,
    RewindQueue,
    SendMessage,
    BatchSendMessages,
    ReceiveMessages,
    DeleteMessage,
    BatchDeleteMessages,
    ChangeMessageVisibility,
    BatchChangeMessageVisibility,
    PurgeQueue,
    PeekMessages,
    StreamMessages,
    ListDeadLetterSourceQueues,
    RedriveMessages,
    CreateTopic,
    GetTopic,
    UpdateTopic,
    DeleteTopic,
    ListTopics,
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
    PublishMessage,
    BatchPublishMessages,
}

const EVERY_RPC: [Rpc; 28] = [
    Rpc::CreateQueue,
    Rpc::GetQueue,
    Rpc::UpdateQueue,
    Rpc::DeleteQueue,
    Rpc::ListQueues,
    Rpc::RewindQueue,
    Rpc::SendMessage,
    Rpc::BatchSendMessages,
    Rpc::ReceiveMessages,
    Rpc::DeleteMessage,
    Rpc::BatchDeleteMessages,
    Rpc::ChangeMessageVisibility,
    Rpc::BatchChangeMessageVisibility,
    Rpc::PurgeQueue,
    Rpc::PeekMessages,
    Rpc::StreamMessages,
    Rpc::ListDeadLetterSourceQueues,
    Rpc::RedriveMessages,
    Rpc::CreateTopic,
    Rpc::GetTopic,
    Rpc::UpdateTopic,
    Rpc::DeleteTopic,
    Rpc::ListTopics,
    Rpc::Subscribe,
    Rpc::Unsubscribe,
    Rpc::ListSubscriptions,
    Rpc::PublishMessage,
    Rpc::BatchPublishMessages,
];

/// What the grants of the matrix allow: the code each principal gets for each RPC.
fn expected(rpc: Rpc, who: Who) -> Code {
    let action_of = |rpc| match rpc {
        Rpc::SendMessage
        | Rpc::BatchSendMessages
        | Rpc::PublishMessage
        | Rpc::BatchPublishMessages => Some(Who::Sender),
        Rpc::ReceiveMessages
        | Rpc::DeleteMessage
        | Rpc::BatchDeleteMessages
        | Rpc::ChangeMessageVisibility
        | Rpc::BatchChangeMessageVisibility
        | Rpc::PeekMessages
        | Rpc::StreamMessages => Some(Who::Receiver),
        Rpc::CreateQueue
        | Rpc::UpdateQueue
        | Rpc::DeleteQueue
        | Rpc::RewindQueue
        | Rpc::PurgeQueue
        | Rpc::RedriveMessages
        | Rpc::CreateTopic
        | Rpc::UpdateTopic
        | Rpc::DeleteTopic
        | Rpc::Subscribe
        | Rpc::Unsubscribe => Some(Who::Admin),
        // Any grant on the queue or topic (GetQueue, ListDeadLetterSourceQueues, GetTopic,
        // ListSubscriptions); none needed (ListQueues and ListTopics filter).
        Rpc::GetQueue
        | Rpc::ListDeadLetterSourceQueues
        | Rpc::ListQueues
        | Rpc::GetTopic
        | Rpc::ListSubscriptions
        | Rpc::ListTopics => None,
    };
    match (who, action_of(rpc)) {
        (Who::Stranger | Who::Nobody, _) => Code::Unauthenticated,
        (Who::Outsider, _) if matches!(rpc, Rpc::ListQueues | Rpc::ListTopics) => Code::Ok,
        (Who::Outsider, _) => Code::PermissionDenied,
        (_, None) => Code::Ok,
        (who, Some(allowed)) if who == allowed => Code::Ok,
        _ => Code::PermissionDenied,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The queue every call of the matrix names; it exists with a rewind window.
const QUEUE: &str = "m-q";
/// The topic the topic RPCs of the matrix name.
const TOPIC: &str = "m-t";

fn rewindable() -> pb::QueueAttributes {
    pb::QueueAttributes {
        rewind_seconds: Some(600),
        ..attrs()
    }
}

/// Makes `rpc` as `token` on `queue`; `receipt` is a live receipt handle for the deletes.
async fn call(
    client: &mut Client,
    rpc: Rpc,
    token: Option<&str>,
    queue: &str,
    receipt: &str,
) -> Result<(), Status> {
    let queue_name = queue.to_string();
    match rpc {
        Rpc::CreateQueue => {
            let message = pb::CreateQueueRequest {
                queue_name,
                attributes: Some(rewindable()),
            };
            client
                .create_queue(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::GetQueue => {
            let message = pb::GetQueueRequest { queue_name };
            client.get_queue(with_token(message, token)).await.map(drop)
        }
        Rpc::UpdateQueue => {
            let message = pb::UpdateQueueRequest {
                queue_name,
                attributes: Some(attrs()),
            };
            client
                .update_queue(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::DeleteQueue => {
            let message = pb::DeleteQueueRequest { queue_name };
            client
                .delete_queue(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::ListQueues => {
            let message = pb::ListQueuesRequest::default();
            client
                .list_queues(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::RewindQueue => {
            let message = pb::RewindQueueRequest {
                queue_name,
                start_time: Some(std::time::SystemTime::now().into()),
            };
            client
                .rewind_queue(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::SendMessage => {
            let message = pb::SendMessageRequest {
                queue_name,
                body: b"matrix".to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            };
            client
                .send_message(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::BatchSendMessages => {
            let message = pb::BatchSendMessagesRequest {
                queue_name,
                entries: vec![pb::BatchSendEntry {
                    body: b"matrix".to_vec().into(),
                    delay_seconds: None,
                    ..Default::default()
                }],
            };
            client
                .batch_send_messages(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::ReceiveMessages => {
            let message = pb::ReceiveMessagesRequest {
                queue_name,
                max_messages: 1,
                wait_seconds: Some(0),
                visibility_timeout_seconds: None,
            };
            let mut stream = client
                .receive_messages(with_token(message, token))
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Rpc::DeleteMessage => {
            let message = pb::DeleteMessageRequest {
                queue_name,
                receipt_handle: receipt.to_string(),
            };
            client
                .delete_message(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::BatchDeleteMessages => {
            let message = pb::BatchDeleteMessagesRequest {
                queue_name,
                receipt_handles: vec![receipt.to_string()],
            };
            let failures = client
                .batch_delete_messages(with_token(message, token))
                .await?
                .into_inner()
                .failures;
            assert!(failures.is_empty(), "{failures:?}");
            Ok(())
        }
        Rpc::ChangeMessageVisibility => {
            let message = pb::ChangeMessageVisibilityRequest {
                queue_name,
                receipt_handle: receipt.to_string(),
                visibility_timeout_seconds: 60,
            };
            client
                .change_message_visibility(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::BatchChangeMessageVisibility => {
            let message = pb::BatchChangeMessageVisibilityRequest {
                queue_name,
                entries: vec![pb::ChangeVisibilityEntry {
                    receipt_handle: receipt.to_string(),
                    visibility_timeout_seconds: 60,
                }],
            };
            let failures = client
                .batch_change_message_visibility(with_token(message, token))
                .await?
                .into_inner()
                .failures;
            assert!(failures.is_empty(), "{failures:?}");
            Ok(())
        }
        Rpc::PurgeQueue => {
            let message = pb::PurgeQueueRequest { queue_name };
            client
                .purge_queue(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::PeekMessages => {
            let message = pb::PeekMessagesRequest {
                queue_name,
                max_messages: 1,
            };
            client
                .peek_messages(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::StreamMessages => {
            // Half-closed after the start: an allowed stream ends OK at once (nothing to ack).
            let start = pb::StreamMessagesRequest {
                kind: Some(pb::stream_messages_request::Kind::Start(pb::StreamStart {
                    queue_name,
                    max_outstanding_messages: 0,
                    visibility_timeout_seconds: None,
                })),
            };
            let requests = tokio_stream::iter([start]);
            let mut stream = client
                .stream_messages(with_token(requests, token))
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Rpc::ListDeadLetterSourceQueues => {
            let message = pb::ListDeadLetterSourceQueuesRequest { queue_name };
            client
                .list_dead_letter_source_queues(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::RedriveMessages => {
            let message = pb::RedriveMessagesRequest {
                queue_name,
                destination_queue: String::new(),
                max_messages: 0,
            };
            client
                .redrive_messages(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::CreateTopic => {
            let message = pb::CreateTopicRequest {
                topic_name: queue_name,
                attributes: None,
            };
            client
                .create_topic(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::GetTopic => {
            let message = pb::GetTopicRequest {
                topic_name: queue_name,
            };
            client.get_topic(with_token(message, token)).await.map(drop)
        }
        Rpc::UpdateTopic => {
            let message = pb::UpdateTopicRequest {
                topic_name: queue_name,
                attributes: None,
            };
            client
                .update_topic(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::DeleteTopic => {
            let message = pb::DeleteTopicRequest {
                topic_name: queue_name,
            };
            client
                .delete_topic(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::ListTopics => {
            let message = pb::ListTopicsRequest::default();
            client
                .list_topics(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::Subscribe => {
            let message = pb::SubscribeRequest {
                topic_name: queue_name,
                subscription_name: "matrix".into(),
                queue_name: QUEUE.into(),
                ..Default::default()
            };
            client.subscribe(with_token(message, token)).await.map(drop)
        }
        Rpc::Unsubscribe => {
            let message = pb::UnsubscribeRequest {
                topic_name: queue_name,
                subscription_name: receipt.into(),
            };
            client
                .unsubscribe(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::ListSubscriptions => {
            let message = pb::ListSubscriptionsRequest {
                topic_name: queue_name,
                ..Default::default()
            };
            client
                .list_subscriptions(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::PublishMessage => {
            let message = pb::PublishMessageRequest {
                topic_name: queue_name,
                body: b"published"[..].into(),
                ..Default::default()
            };
            client
                .publish_message(with_token(message, token))
                .await
                .map(drop)
        }
        Rpc::BatchPublishMessages => {
            let message = pb::BatchPublishMessagesRequest {
                topic_name: queue_name,
                entries: vec![pb::BatchPublishEntry {
                    body: b"published"[..].into(),
                    ..Default::default()
                }],
            };
            client
                .batch_publish_messages(with_token(message, token))
                .await
                .map(drop)
        }
    }
}

/// A fresh receipt handle of a message in `queue`, sent and received by the ops principal.
async fn fresh_receipt(client: &mut Client, queue: &str) -> String {
    call(client, Rpc::SendMessage, Some(OPS_TOKEN), queue, "")
        .await
        .expect("send");
    let message = pb::ReceiveMessagesRequest {
        queue_name: queue.into(),
        max_messages: 1,
        wait_seconds: Some(0),
        visibility_timeout_seconds: None,
    };
    let mut stream = client
        .receive_messages(with_token(message, Some(OPS_TOKEN)))
        .await
        .expect("receive")
        .into_inner();
    stream
        .message()
        .await
        .expect("a message")
        .expect("one")
        .receipt_handle
}

async fn start_protected(dir: &std::path::Path) -> (TestServer, std::net::SocketAddr) {
    let auth_file = dir.join("principals.toml");
    std::fs::write(&auth_file, principals_file()).expect("auth file");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    metrics.set_nonblocking(true).expect("nonblocking");
    let server = TestServer::start_in(&dir.join("data"), |config| {
        config.settings.auth_file = Some(auth_file);
        config.metrics_listener =
            Some(tokio::net::TcpListener::from_std(metrics).expect("tokio listener"));
    })
    .await;
    (server, metrics_addr)
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: spool\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_principal_as_its_grants_say() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, metrics) = start_protected(dir.path()).await;
    let mut client = server.client().await;
    call(&mut client, Rpc::CreateQueue, Some(OPS_TOKEN), QUEUE, "")
        .await
        .expect("set up the queue");
    call(&mut client, Rpc::CreateTopic, Some(OPS_TOKEN), TOPIC, "")
        .await
        .expect("set up the topic");

    let mut answers = Vec::new();
    for rpc in EVERY_RPC {
        for who in EVERYONE {
            // The deletes get a live handle, and DeleteQueue a queue of its own, so that an
            // allowed call succeeds; refused ones must leave them alone.
            let mut queue = QUEUE.to_string();
            let mut receipt = "not-a-receipt-handle".to_string();
            match rpc {
                Rpc::DeleteMessage
                | Rpc::BatchDeleteMessages
                | Rpc::ChangeMessageVisibility
                | Rpc::BatchChangeMessageVisibility => {
                    receipt = fresh_receipt(&mut client, QUEUE).await;
                }
                Rpc::DeleteQueue => {
                    queue = "m-doomed".into();
                    call(&mut client, Rpc::CreateQueue, Some(OPS_TOKEN), &queue, "")
                        .await
                        .expect("create the doomed queue");
                }
                // The topic RPCs name the topic where the others name the queue.
                Rpc::DeleteTopic => {
                    queue = "m-doomed-topic".into();
                    call(&mut client, Rpc::CreateTopic, Some(OPS_TOKEN), &queue, "")
                        .await
                        .expect("create the doomed topic");
                }
                Rpc::Unsubscribe => {
                    queue = TOPIC.into();
                    // A subscription of its own each time, so an allowed call succeeds.
                    call(&mut client, Rpc::Subscribe, Some(OPS_TOKEN), &queue, "")
                        .await
                        .expect("subscribe");
                    receipt = "matrix".into();
                }
                Rpc::CreateTopic
                | Rpc::GetTopic
                | Rpc::UpdateTopic
                | Rpc::Subscribe
                | Rpc::ListSubscriptions
                | Rpc::PublishMessage
                | Rpc::BatchPublishMessages => queue = TOPIC.into(),
                _ => {}
            }
            let result = call(&mut client, rpc, who.token(), &queue, &receipt).await;
            let code = result.as_ref().err().map_or(Code::Ok, Status::code);
            answers.push(format!("{rpc:?} as {who:?}: {code:?}"));
            if code != expected(rpc, who) {
                answers.push(format!("  ^ expected {:?}: {result:?}", expected(rpc, who)));
                continue;
            }
            let Err(status) = result else { continue };
            // Spool's ErrorInfo on every refusal, with CMQ's numbers.
            match code {
                Code::Unauthenticated => {
                    let message = assert_error(&status, code, 4100);
                    assert!(!message.contains("no-such-token"), "{message}");
                }
                Code::PermissionDenied => {
                    let message = assert_error(&status, code, 4101);
                    assert!(message.contains(&format!("{queue:?}")), "{message}");
                }
                _ => panic!("{rpc:?} as {who:?}: {status:?}"),
            }
        }
    }
    assert!(
        !answers.iter().any(|line| line.contains("expected")),
        "{}",
        answers.join("\n")
    );

    // Refusals are counted by reason, and as calls by code.
    let text = scrape(metrics).await;
    let every = EVERY_RPC.len();
    for sample in [
        format!("spool_auth_refusals_total{{reason=\"no_credentials\"}} {every}"),
        format!("spool_auth_refusals_total{{reason=\"unknown_token\"}} {every}"),
        "spool_grpc_requests_total{method=\"SendMessage\",code=\"PERMISSION_DENIED\"} 3".into(),
        "spool_grpc_requests_total{method=\"PurgeQueue\",code=\"PERMISSION_DENIED\"} 3".into(),
    ] {
        assert!(text.contains(&sample), "no {sample} in:\n{text}");
    }
    let denied = EVERY_RPC
        .iter()
        .flat_map(|rpc| EVERYONE.iter().map(|who| expected(*rpc, *who)))
        .filter(|code| *code == Code::PermissionDenied)
        .count();
    assert!(
        text.contains(&format!(
            "spool_auth_refusals_total{{reason=\"not_granted\"}} {denied}"
        )),
        "{text}"
    );
    server.stop().await;
}

#[test]
fn the_matrix_covers_every_rpc_of_the_service() {
    let descriptors = prost_types::FileDescriptorSet::decode(spool::server::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let methods: BTreeSet<String> = descriptors
        .file
        .iter()
        .flat_map(|file| &file.service)
        .filter(|service| service.name() == "QueueService")
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_string())
        .collect();
    let covered: BTreeSet<String> = EVERY_RPC.iter().map(|rpc| format!("{rpc:?}")).collect();
    assert_eq!(
        methods, covered,
        "a new RPC needs its action (send, receive, admin) in the handlers and a row here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_never_tells_whether_the_queue_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _) = start_protected(dir.path()).await;
    let mut client = server.client().await;
    call(&mut client, Rpc::CreateQueue, Some(OPS_TOKEN), "m-here", "")
        .await
        .expect("create");
    let outsider = Who::Outsider.token();
    for rpc in [Rpc::GetQueue, Rpc::SendMessage, Rpc::DeleteQueue] {
        let existing = call(&mut client, rpc, outsider, "m-here", "")
            .await
            .expect_err("denied");
        let missing = call(&mut client, rpc, outsider, "m-gone", "")
            .await
            .expect_err("denied");
        assert_eq!(existing.code(), Code::PermissionDenied, "{existing:?}");
        assert_eq!(missing.code(), Code::PermissionDenied, "{missing:?}");
        assert_eq!(
            existing.message().replace("m-here", "NAME"),
            missing.message().replace("m-gone", "NAME"),
        );
    }
    // With a grant, a missing queue is simply not found.
    let missing = call(
        &mut client,
        Rpc::SendMessage,
        Who::Sender.token(),
        "m-gone",
        "",
    )
    .await
    .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_shows_only_granted_queues_with_consistent_totals_and_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _) = start_protected(dir.path()).await;
    let mut client = server.client().await;
    for name in ["a-first", "m-a", "m-b", "m-c", "n-between", "z-a", "z-b"] {
        call(&mut client, Rpc::CreateQueue, Some(OPS_TOKEN), name, "")
            .await
            .expect("create");
    }
    let pages = |token: &'static str, prefix: &'static str, page_size: u32| {
        let mut client = client.clone();
        async move {
            let mut names = Vec::new();
            let mut totals = BTreeSet::new();
            let mut page_token = String::new();
            loop {
                let message = pb::ListQueuesRequest {
                    prefix: prefix.into(),
                    page_size,
                    page_token: page_token.clone(),
                };
                let page = client
                    .list_queues(with_token(message, Some(token)))
                    .await
                    .expect("list")
                    .into_inner();
                totals.insert(page.total_count);
                names.extend(page.queues.into_iter().map(|queue| queue.name));
                if page.next_page_token.is_empty() {
                    return (names, totals);
                }
                page_token = page.next_page_token;
            }
        }
    };
    let (names, totals) = pages("sender-token", "", 1).await;
    assert_eq!(names, ["m-a", "m-b", "m-c"]);
    assert_eq!(totals, BTreeSet::from([3]));
    let (names, totals) = pages("outsider-token", "", 0).await;
    assert_eq!(names, ["z-a", "z-b"]);
    assert_eq!(totals, BTreeSet::from([2]));
    let (names, totals) = pages("receiver-token", "m-b", 0).await;
    assert_eq!(
        (names, totals),
        (vec!["m-b".to_string()], BTreeSet::from([1]))
    );
    let (names, totals) = pages("outsider-token", "m-", 0).await;
    assert_eq!((names.len(), totals), (0, BTreeSet::from([0])));
    let (names, totals) = pages(OPS_TOKEN, "", 2).await;
    assert_eq!(names.len(), 7);
    assert_eq!(totals, BTreeSet::from([7]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_open_and_reflection_needs_a_credential() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _) = start_protected(dir.path()).await;
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "spool.v1.QueueService".into(),
        })
        .await
        .expect("health without credentials");
    assert_eq!(health.into_inner().status, 1);

    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![list()]))
        .await
        .expect_err("reflection without credentials");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(with_token(
            tokio_stream::iter(vec![list()]),
            Who::Outsider.token(),
        ))
        .await
        .expect("reflection with a token")
        .into_inner();
    assert!(responses.message().await.expect("answer").is_some());
    server.stop().await;
}

fn one_principal(name: &str, token: &str) -> String {
    format!(
        "[[principals]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n\
         [[principals.grants]]\nqueues = \"*\"\nactions = [\"admin\"]\n",
        sha256_hex(token)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_file_is_reloaded_in_place_and_a_bad_one_keeps_the_previous() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("principals.toml");
    std::fs::write(&auth_file, one_principal("first", "token-one")).expect("write");
    let server = ChildServer::start_with(
        &dir.path().join("data"),
        &["--auth-file", auth_file.to_str().expect("utf-8")],
        &[],
    );
    let client = server.client().await;
    let list_as = |token: &'static str| {
        let mut client = client.clone();
        async move {
            let message = pb::ListQueuesRequest::default();
            client
                .list_queues(with_token(message, Some(token)))
                .await
                .map(drop)
                .map_err(|status| status.code())
        }
    };
    assert_eq!(list_as("token-one").await, Ok(()));
    assert_eq!(list_as("token-two").await, Err(Code::Unauthenticated));

    // A rotation: both tokens for a while, then only the new one.
    let both = format!(
        "[[principals]]\nname = \"first\"\ntoken_sha256 = [\"{}\", \"{}\"]\n",
        sha256_hex("token-one"),
        sha256_hex("token-two")
    );
    crate::certs::write_atomically(&auth_file, &both);
    let started = Instant::now();
    while list_as("token-two").await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(15), "not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list_as("token-one").await, Ok(()));
    crate::certs::write_atomically(&auth_file, &one_principal("first", "token-two"));
    let started = Instant::now();
    while list_as("token-one").await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(15), "not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.log_line("reloaded");

    // A file with a mistake is refused whole; the one in force stays.
    crate::certs::write_atomically(&auth_file, "[[principals]]\nname = \"first\"\n");
    let line = server.log_line("cannot reload");
    assert!(
        line.contains("neither token_sha256 nor client_cert_name"),
        "{line}"
    );
    assert_eq!(list_as("token-two").await, Ok(()));

    // Refusals are logged with the principal, never with the token.
    let message = pb::SendMessageRequest {
        queue_name: "q".into(),
        body: b"x".to_vec().into(),
        delay_seconds: None,
        ..Default::default()
    };
    let denied = client
        .clone()
        .send_message(with_token(message, Some("token-two")))
        .await
        .expect_err("admin only");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let line = server.log_line("not granted");
    assert!(line.contains("\"principal\":\"first\""), "{line}");
    assert_eq!(list_as("token-secret-3").await, Err(Code::Unauthenticated));
    let refusal = server.log_line("not authenticated");
    assert!(refusal.contains("unknown_token"), "{refusal}");
    assert!(!server.log_contains("token-secret-3"));
}

/// Runs `spool serve` with `args`; returns its exit code and stderr if it exits within 10 s,
/// else the gRPC port it announced (and stops it).
async fn serve(args: &[&str]) -> Result<u16, (Option<i32>, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env_remove("SPOOL_AUTH_FILE")
        .env_remove("SPOOL_ALLOW_UNAUTHENTICATED")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn spool");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut port = None;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = lines.next_line() => match line.expect("read stdout") {
                Some(line) => {
                    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON");
                    if let Some(addr) = event["grpc"].as_str() {
                        let addr: std::net::SocketAddr = addr.parse().expect("address");
                        port = Some(addr.port());
                    }
                    if event["event"] == "ready" {
                        let _ = child.kill().await;
                        return Ok(port.expect("a listening event first"));
                    }
                }
                None => {
                    let output = child.wait_with_output().await.expect("wait");
                    return Err((
                        output.status.code(),
                        String::from_utf8_lossy(&output.stderr).into_owned(),
                    ));
                }
            },
            () = &mut deadline => panic!("spool serve {args:?} neither exited nor became ready"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_are_served_only_with_auth_or_when_told() {
    let (code, stderr) = serve(&["--listen", "0.0.0.0:0"])
        .await
        .expect_err("refused without auth");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--auth-file") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
    serve(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"])
        .await
        .expect("serves when told");
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("principals.toml");
    std::fs::write(&auth_file, one_principal("ops", "t")).expect("write");
    serve(&[
        "--listen",
        "0.0.0.0:0",
        "--auth-file",
        auth_file.to_str().expect("utf-8"),
    ])
    .await
    .expect("serves with an auth file");
    // Loopback needs neither.
    serve(&["--listen", "127.0.0.1:0"]).await.expect("loopback");
    // A broken auth file stops the server at startup, naming the file.
    std::fs::write(&auth_file, "[[principals]]\nname = 3\n").expect("write");
    let (code, stderr) = serve(&["--auth-file", auth_file.to_str().expect("utf-8")])
        .await
        .expect_err("broken auth file");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("principals.toml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sends_its_token_and_says_when_one_is_needed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _) = start_protected(dir.path()).await;
    let run = |token: Option<&'static str>| {
        let endpoint = server.endpoint();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"));
            command
                .args(["queue", "create", "m-cli", "--endpoint", &endpoint])
                .env_remove("SPOOL_TOKEN")
                .stdin(Stdio::null());
            if let Some(token) = token {
                command.env("SPOOL_TOKEN", token);
            }
            command.output().await.expect("spool queue create")
        }
    };
    let refused = run(None).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("SPOOL_TOKEN"),
        "{stderr}"
    );
    let denied = run(Who::Sender.token()).await;
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("admin"),
        "{stderr}"
    );
    let created = run(Who::Admin.token()).await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    server.stop().await;
}
