//! The Rust client (the `spool-client` crate) against a real server: every call, the long-poll stream,
//! the error enum, and retries (against a server that starts late, and against a scripted
//! server that answers UNAVAILABLE on cue).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use spool::pb;
use spool::pb::queue_service_server::{QueueService, QueueServiceServer};
use spool::server::{self, ServerConfig};
use spool_client::errors;
use spool_client::{
    BatchSendEntry, Client, ClientError, ClientOptions, QueueAttributes, ReceiveOptions,
    RetryPolicy,
};
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};

use crate::common::TestServer;

#[path = "../../examples/cmq_guide.rs"]
#[allow(dead_code)]
mod cmq_guide;

async fn client_of(server: &TestServer) -> Client {
    Client::connect(&server.endpoint(), ClientOptions::default())
        .await
        .expect("connect")
}

fn no_wait() -> ReceiveOptions {
    ReceiveOptions::default().max_messages(16).wait_seconds(0)
}

/// Asserts the variant (by name), the gRPC code and the CMQ code of an error.
fn assert_client_error(error: &ClientError, variant: &str, code: Code, cmq_code: i32) {
    assert!(
        format!("{error:?}").starts_with(variant),
        "expected {variant}, got {error:?}"
    );
    assert_eq!(error.code(), Some(code), "{error:?}");
    assert_eq!(error.cmq_code(), Some(cmq_code), "{error:?}");
    assert!(error.rpc().and_then(|rpc| rpc.reason.as_ref()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_calls_round_trip() {
    let server = TestServer::start().await;
    let client = client_of(&server).await;
    let attributes = QueueAttributes {
        visibility_timeout_seconds: Some(10),
        polling_wait_seconds: Some(5),
        ..Default::default()
    };
    let created = client
        .create_queue("orders", attributes.clone())
        .await
        .expect("create");
    assert_eq!(created.name, "orders");
    let a = created.attributes.clone().expect("attributes");
    assert_eq!(a.visibility_timeout_seconds, Some(10));
    assert_eq!(a.max_message_size, Some(65_536), "defaults are filled in");
    // Idempotent with the same attributes; QueueExists with others.
    let again = client
        .create_queue("orders", attributes)
        .await
        .expect("again");
    assert_eq!(again.create_time, created.create_time);
    let error = client
        .create_queue("orders", QueueAttributes::default())
        .await
        .expect_err("other attributes");
    assert_client_error(&error, "QueueExists", Code::AlreadyExists, 4460);
    assert!(error.to_string().starts_with("ALREADY_EXISTS: "), "{error}");

    let got = client.get_queue("orders").await.expect("get");
    assert_eq!(got.attributes, created.attributes);
    assert_eq!(got.stats, Some(pb::QueueStats::default()));

    let updated = client
        .update_queue(
            "orders",
            QueueAttributes {
                rewind_seconds: Some(600),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    let a = updated.attributes.expect("attributes");
    assert_eq!(a.rewind_seconds, Some(600));
    assert_eq!(a.visibility_timeout_seconds, Some(10), "others unchanged");

    for name in ["orders-b", "orders-c", "other"] {
        client
            .create_queue(name, QueueAttributes::default())
            .await
            .expect("create");
    }
    let page = client.list_queues("orders", 2, "").await.expect("list");
    let names: Vec<_> = page.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["orders", "orders-b"]);
    assert_eq!(page.total_count, 3);
    assert!(!page.next_page_token.is_empty());
    let rest = client
        .list_queues("orders", 2, &page.next_page_token)
        .await
        .expect("next page");
    assert_eq!(rest.queues.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let all: Vec<_> = client
        .list_all_queues("")
        .await
        .expect("all")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(all, ["orders", "orders-b", "orders-c", "other"]);

    client.delete_queue("orders").await.expect("delete");
    let error = client.get_queue("orders").await.expect_err("deleted");
    assert_client_error(&error, "QueueNotFound", Code::NotFound, 4440);
    assert_eq!(
        error.to_string(),
        "NOT_FOUND: queue \"orders\" does not exist (cmq_code 4440)"
    );
    // Not retried, so NOT_FOUND on the first attempt stays an error.
    let error = client.delete_queue("orders").await.expect_err("twice");
    assert!(matches!(error, ClientError::QueueNotFound(_)), "{error:?}");

    let error = client
        .create_queue("1bad", QueueAttributes::default())
        .await
        .expect_err("bad name");
    assert_client_error(&error, "InvalidArgument", Code::InvalidArgument, 4000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_calls_round_trip() {
    let server = TestServer::start().await;
    let client = client_of(&server).await;
    client
        .create_queue(
            "q",
            QueueAttributes {
                max_message_size: Some(1_024),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let binary: Vec<u8> = (0..=255u8).collect::<Vec<_>>()[..200].to_vec();
    let first = client
        .send_message("q", binary.clone())
        .await
        .expect("send");
    let batch = client
        .batch_send_messages("q", ["one", "two"])
        .await
        .expect("batch");
    assert_eq!(batch.len(), 2);
    let delayed = client
        .send_delayed_message("q", "later", 600)
        .await
        .expect("delayed");
    let entries = vec![
        BatchSendEntry {
            body: "also later".into(),
            delay_seconds: Some(600),
            ..Default::default()
        },
        BatchSendEntry {
            body: "now".into(),
            delay_seconds: None,
            ..Default::default()
        },
    ];
    let mixed = client
        .batch_send_entries("q", entries)
        .await
        .expect("entries");
    let stats = client
        .get_queue("q")
        .await
        .expect("get")
        .stats
        .expect("stats");
    assert_eq!((stats.active_messages, stats.delayed_messages), (4, 2));

    // The stream: every visible message, oldest first, then the end.
    let mut stream = client
        .receive_messages("q", no_wait())
        .await
        .expect("receive");
    let mut received = Vec::new();
    while let Some(message) = stream.next().await {
        received.push(message.expect("message"));
    }
    let ids: Vec<_> = received.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(
        ids,
        [
            first.clone(),
            batch[0].clone(),
            batch[1].clone(),
            mixed[1].clone()
        ]
    );
    assert!(!ids.contains(&delayed) && !ids.contains(&mixed[0]));
    assert_eq!(&received[0].body[..], &binary[..]);
    assert!(received.iter().all(|m| m.dequeue_count == 1));

    // One delete, then a batch with a handle that is not the newest any more.
    client
        .delete_message("q", &received[0].receipt_handle)
        .await
        .expect("delete");
    client
        .delete_message("q", &received[0].receipt_handle)
        .await
        .expect("deleting again is fine");
    let failures = client
        .batch_delete_messages("q", received[1..].iter().map(|m| m.receipt_handle.clone()))
        .await
        .expect("batch delete");
    assert!(failures.is_empty(), "{failures:?}");

    // A stale handle: the message was received again since.
    client.send_message("q", "again").await.expect("send");
    let short = ReceiveOptions::default()
        .wait_seconds(0)
        .visibility_timeout_seconds(1);
    let old = client.receive("q", short).await.expect("receive");
    assert_eq!(old.len(), 1);
    // Visible again after its 1 s; the wait covers a late timer.
    let wait = ReceiveOptions::default().wait_seconds(5);
    let new = client.receive("q", wait).await.expect("receive again");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].dequeue_count, 2);
    let error = client
        .delete_message("q", &old[0].receipt_handle)
        .await
        .expect_err("stale");
    assert_client_error(&error, "StaleReceipt", Code::FailedPrecondition, 4430);
    let failures = client
        .batch_delete_messages("q", [old[0].receipt_handle.clone()])
        .await
        .expect("batch delete");
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].code, failures[0].cmq_code),
        (Code::FailedPrecondition as i32, 4430)
    );

    // Too large, and bad options.
    let error = client
        .send_message("q", vec![b'x'; 1_025])
        .await
        .expect_err("too large");
    assert_client_error(&error, "TooLarge", Code::InvalidArgument, 4400);
    let error = client
        .receive_messages("q", ReceiveOptions::default().max_messages(17))
        .await
        .expect_err("17");
    assert_client_error(&error, "InvalidArgument", Code::InvalidArgument, 4000);
    let error = client
        .receive_messages("q", ReceiveOptions::default().wait_seconds(31))
        .await
        .expect_err("31 s");
    assert_client_error(&error, "InvalidArgument", Code::InvalidArgument, 4000);
    let error = client
        .receive_messages("nope", no_wait())
        .await
        .expect_err("no queue");
    assert_client_error(&error, "QueueNotFound", Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_long_polls_and_ends_empty_after_the_wait() {
    let server = TestServer::start().await;
    let client = client_of(&server).await;
    client
        .create_queue("q", QueueAttributes::default())
        .await
        .expect("create");

    let started = Instant::now();
    let nothing = client
        .receive("q", ReceiveOptions::default().wait_seconds(1))
        .await
        .expect("receive");
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A message sent while a poll waits is streamed to it at once.
    let mut stream = client
        .receive_messages(
            "q",
            ReceiveOptions::default().max_messages(16).wait_seconds(20),
        )
        .await
        .expect("poll");
    let sender = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send_message("q", "hello").await.expect("send");
    });
    let started = Instant::now();
    let message = stream
        .message()
        .await
        .expect("message")
        .expect("not the end");
    assert_eq!(&message.body[..], b"hello");
    assert!(stream.message().await.expect("end").is_none());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_and_capacity_errors_keep_their_codes() {
    let server = TestServer::start_with(|config| config.settings.max_queues = Some(2)).await;
    let client = client_of(&server).await;
    client
        .create_queue("plain", QueueAttributes::default())
        .await
        .expect("create");
    let error = client
        .rewind_queue("plain", SystemTime::now())
        .await
        .expect_err("rewind disabled");
    assert_client_error(&error, "RewindDisabled", Code::FailedPrecondition, 6050);

    client
        .create_queue(
            "r",
            QueueAttributes {
                rewind_seconds: Some(600),
                max_backlog: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let error = client
        .create_queue("third", QueueAttributes::default())
        .await
        .expect_err("max_queues");
    assert_client_error(&error, "TooManyQueues", Code::ResourceExhausted, 4450);

    let start = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        );
    client.send_message("r", "i am test").await.expect("send");
    let error = client
        .send_message("r", "one too many")
        .await
        .expect_err("backlog");
    assert_client_error(&error, "BacklogFull", Code::ResourceExhausted, 4410);
    let got = client.receive("r", no_wait()).await.expect("receive");
    assert_eq!(got.len(), 1);
    client
        .delete_message("r", &got[0].receipt_handle)
        .await
        .expect("delete");
    assert_eq!(client.rewind_queue("r", start).await.expect("rewind"), 1);
    let again = client.receive("r", no_wait()).await.expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].dequeue_count, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cmq_guide_example_runs() {
    let server = TestServer::start().await;
    cmq_guide::run(&server.endpoint())
        .await
        .expect("the example");
    let client = client_of(&server).await;
    assert!(client.list_all_queues("").await.expect("list").is_empty());
    server.stop().await;
}

#[test]
fn the_readme_shows_the_documented_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("```rust\n")
        .expect("a rust block in the README")
        + 8;
    let in_readme = &readme[start..start + readme[start..].find("```").expect("its end")];
    let source =
        std::fs::read_to_string(root.join("clients/rust/src/lib.rs")).expect("the client's lib.rs");
    let docs: String = source
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    let start = docs.find("```no_run\n").expect("the module example") + 10;
    let in_docs = &docs[start..start + docs[start..].find("```").expect("its end")];
    assert_eq!(
        in_readme, in_docs,
        "README.md and clients/rust/src/lib.rs differ"
    );
}

// ---- retries against a server that is not there yet ----

/// An address on which nothing listens (yet).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Starts a real server on `addr` after `delay`; returns its stop trigger and task.
fn start_later(
    addr: SocketAddr,
    delay: Duration,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<tempfile::TempDir>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        server::run(
            listener,
            async move {
                let _ = stopped.await;
            },
            ServerConfig::new(dir.path()),
        )
        .await
        .expect("server");
        dir
    });
    (stop, task)
}

fn patient() -> ClientOptions {
    ClientOptions::default()
        .connect_timeout(Duration::from_secs(1))
        .retry(
            RetryPolicy::default()
                .max_attempts(100)
                .initial_backoff(Duration::from_millis(20))
                .max_backoff(Duration::from_millis(100)),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_retry_until_a_late_server_is_up() {
    let addr = free_addr();
    let endpoint = format!("http://{addr}");
    // Lazy: the first call connects. Even a send is retried: its request never left.
    let lazy = Client::connect_lazy(&endpoint, patient()).expect("endpoint");
    let (stop, task) = start_later(addr, Duration::from_millis(400));
    let started = Instant::now();
    lazy.create_queue("q", QueueAttributes::default())
        .await
        .expect("create once the server is up");
    assert!(started.elapsed() >= Duration::from_millis(300));
    lazy.send_message("q", "hello").await.expect("send");
    assert_eq!(
        lazy.get_queue("q")
            .await
            .expect("get")
            .stats
            .expect("stats")
            .active_messages,
        1
    );
    let _ = stop.send(());
    drop(task.await.expect("server task"));

    // Eager: connect itself retries.
    let addr = free_addr();
    let (stop, task) = start_later(addr, Duration::from_millis(400));
    let eager = Client::connect(&format!("http://{addr}"), patient())
        .await
        .expect("connect once the server is up");
    eager
        .list_all_queues("")
        .await
        .expect("list (retried while the server recovers)");
    let _ = stop.send(());
    drop(task.await.expect("server task"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_with_a_clear_message() {
    let addr = free_addr();
    let endpoint = format!("http://{addr}");
    let once = ClientOptions::default().retry(RetryPolicy::none());
    let client = Client::connect_lazy(&endpoint, once.clone()).expect("endpoint");
    let error = client.get_queue("q").await.expect_err("nobody there");
    assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
    assert_eq!(
        (error.code(), error.cmq_code()),
        (Some(Code::Unavailable), None)
    );
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("UNAVAILABLE: cannot connect to {endpoint}: ")),
        "{text}"
    );
    let error = Client::connect(&endpoint, once).await.expect_err("eager");
    assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("cannot connect to"), "{error}");

    // The default policy retries a few times with backoff, then gives up.
    let client = Client::connect_lazy(&endpoint, ClientOptions::default()).expect("endpoint");
    let started = Instant::now();
    let error = client.list_all_queues("").await.expect_err("nobody there");
    assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
    let elapsed = started.elapsed();
    // 4 backoffs of at least 50, 100, 200 and 400 ms.
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");

    let error =
        Client::connect_lazy("ftp://localhost:1", ClientOptions::default()).expect_err("ftp");
    assert!(
        matches!(error, ClientError::InvalidEndpoint { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), None);
}

// ---- retries against a scripted server ----

/// A QueueService that answers each call with the next scripted failure, or a default success
/// when the script is empty, and records which calls it saw.
#[derive(Clone, Default)]
struct Scripted {
    failures: Arc<Mutex<VecDeque<Status>>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    /// The deduplication ids of the sends since the last script, in order.
    deduplication_ids: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn answer<T: Default>(&self, call: &'static str) -> Result<Response<T>, Status> {
        self.calls.lock().expect("lock").push(call);
        match self.failures.lock().expect("lock").pop_front() {
            Some(status) => Err(status),
            None => Ok(Response::new(T::default())),
        }
    }

    fn script(&self, failures: impl IntoIterator<Item = Status>) {
        self.calls.lock().expect("lock").clear();
        self.deduplication_ids.lock().expect("lock").clear();
        *self.failures.lock().expect("lock") = failures.into_iter().collect();
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("lock").clone()
    }

    fn deduplication_ids(&self) -> Vec<String> {
        self.deduplication_ids.lock().expect("lock").clone()
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl QueueService for Scripted {
    async fn create_queue(&self, _: Request<pb::CreateQueueRequest>) -> Answer<pb::Queue> {
        self.answer("CreateQueue")
    }
    async fn get_queue(&self, _: Request<pb::GetQueueRequest>) -> Answer<pb::Queue> {
        self.answer("GetQueue")
    }
    async fn update_queue(&self, _: Request<pb::UpdateQueueRequest>) -> Answer<pb::Queue> {
        self.answer("UpdateQueue")
    }
    async fn delete_queue(&self, _: Request<pb::DeleteQueueRequest>) -> Answer<()> {
        self.answer("DeleteQueue")
    }
    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Answer<pb::ListQueuesResponse> {
        self.answer("ListQueues")
    }
    async fn rewind_queue(
        &self,
        _: Request<pb::RewindQueueRequest>,
    ) -> Answer<pb::RewindQueueResponse> {
        self.answer("RewindQueue")
    }
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Answer<pb::SendMessageResponse> {
        self.deduplication_ids
            .lock()
            .expect("lock")
            .push(request.into_inner().deduplication_id);
        self.answer("SendMessage")
    }
    async fn batch_send_messages(
        &self,
        request: Request<pb::BatchSendMessagesRequest>,
    ) -> Answer<pb::BatchSendMessagesResponse> {
        self.deduplication_ids.lock().expect("lock").extend(
            request
                .into_inner()
                .entries
                .into_iter()
                .map(|entry| entry.deduplication_id),
        );
        self.answer("BatchSendMessages")
    }
    type ReceiveMessagesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ReceivedMessage, Status>>>;
    async fn receive_messages(
        &self,
        _: Request<pb::ReceiveMessagesRequest>,
    ) -> Answer<Self::ReceiveMessagesStream> {
        self.answer::<()>("ReceiveMessages")?;
        Ok(Response::new(tokio_stream::iter(vec![Ok(
            pb::ReceivedMessage::default(),
        )])))
    }
    async fn delete_message(&self, _: Request<pb::DeleteMessageRequest>) -> Answer<()> {
        self.answer("DeleteMessage")
    }
    async fn batch_delete_messages(
        &self,
        _: Request<pb::BatchDeleteMessagesRequest>,
    ) -> Answer<pb::BatchDeleteMessagesResponse> {
        self.answer("BatchDeleteMessages")
    }
    async fn change_message_visibility(
        &self,
        _: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> Answer<pb::ChangeMessageVisibilityResponse> {
        self.answer("ChangeMessageVisibility")
    }
    async fn batch_change_message_visibility(
        &self,
        _: Request<pb::BatchChangeMessageVisibilityRequest>,
    ) -> Answer<pb::BatchChangeMessageVisibilityResponse> {
        self.answer("BatchChangeMessageVisibility")
    }
    async fn purge_queue(
        &self,
        _: Request<pb::PurgeQueueRequest>,
    ) -> Answer<pb::PurgeQueueResponse> {
        self.answer("PurgeQueue")
    }
    async fn peek_messages(
        &self,
        _: Request<pb::PeekMessagesRequest>,
    ) -> Answer<pb::PeekMessagesResponse> {
        self.answer("PeekMessages")
    }
    async fn list_dead_letter_source_queues(
        &self,
        _: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> Answer<pb::ListDeadLetterSourceQueuesResponse> {
        self.answer("ListDeadLetterSourceQueues")
    }
    async fn redrive_messages(
        &self,
        _: Request<pb::RedriveMessagesRequest>,
    ) -> Answer<pb::RedriveMessagesResponse> {
        self.answer("RedriveMessages")
    }
    async fn create_topic(&self, _: Request<pb::CreateTopicRequest>) -> Answer<pb::Topic> {
        self.answer("CreateTopic")
    }
    async fn get_topic(&self, _: Request<pb::GetTopicRequest>) -> Answer<pb::Topic> {
        self.answer("GetTopic")
    }
    async fn update_topic(&self, _: Request<pb::UpdateTopicRequest>) -> Answer<pb::Topic> {
        self.answer("UpdateTopic")
    }
    async fn delete_topic(&self, _: Request<pb::DeleteTopicRequest>) -> Answer<()> {
        self.answer("DeleteTopic")
    }
    async fn list_topics(
        &self,
        _: Request<pb::ListTopicsRequest>,
    ) -> Answer<pb::ListTopicsResponse> {
        self.answer("ListTopics")
    }
    async fn subscribe(&self, _: Request<pb::SubscribeRequest>) -> Answer<pb::Subscription> {
        self.answer("Subscribe")
    }
    async fn unsubscribe(&self, _: Request<pb::UnsubscribeRequest>) -> Answer<()> {
        self.answer("Unsubscribe")
    }
    async fn list_subscriptions(
        &self,
        _: Request<pb::ListSubscriptionsRequest>,
    ) -> Answer<pb::ListSubscriptionsResponse> {
        self.answer("ListSubscriptions")
    }
    async fn publish_message(
        &self,
        _: Request<pb::PublishMessageRequest>,
    ) -> Answer<pb::PublishMessageResponse> {
        self.answer("PublishMessage")
    }
    async fn batch_publish_messages(
        &self,
        _: Request<pb::BatchPublishMessagesRequest>,
    ) -> Answer<pb::BatchPublishMessagesResponse> {
        self.answer("BatchPublishMessages")
    }

    type StreamMessagesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::StreamMessagesResponse, Status>>>;
    async fn stream_messages(
        &self,
        _: Request<tonic::Streaming<pb::StreamMessagesRequest>>,
    ) -> Answer<Self::StreamMessagesStream> {
        self.answer::<()>("StreamMessages")?;
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }
}

async fn start_scripted() -> (Scripted, Client, oneshot::Sender<()>) {
    let scripted = Scripted::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = QueueServiceServer::new(scripted.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("scripted server");
    });
    let options = ClientOptions::default().retry(
        RetryPolicy::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(1))
            .max_backoff(Duration::from_millis(5)),
    );
    let client = Client::connect(&format!("http://{addr}"), options)
        .await
        .expect("connect");
    (scripted, client, stop)
}

fn storage_failing() -> Status {
    errors::STORAGE_UNAVAILABLE.status("storage unavailable: disk I/O error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_calls_and_sends_are_retried_on_unavailable_and_rewinds_purges_and_redrives_are_not() {
    let (scripted, client, stop) = start_scripted().await;

    // Safe calls: retried until they succeed, within max_attempts.
    scripted.script([storage_failing(), storage_failing()]);
    client.get_queue("q").await.expect("third attempt succeeds");
    assert_eq!(scripted.calls(), ["GetQueue"; 3]);
    scripted.script([storage_failing(), storage_failing(), storage_failing()]);
    let error = client.get_queue("q").await.expect_err("out of attempts");
    assert_client_error(&error, "Unavailable", Code::Unavailable, 6000);
    assert_eq!(scripted.calls().len(), 3);
    scripted.script([storage_failing()]);
    client
        .create_queue("q", QueueAttributes::default())
        .await
        .expect("CreateQueue");
    assert_eq!(scripted.calls(), ["CreateQueue"; 2]);
    scripted.script([storage_failing()]);
    client
        .update_queue("q", QueueAttributes::default())
        .await
        .expect("UpdateQueue");
    assert_eq!(scripted.calls(), ["UpdateQueue"; 2]);
    scripted.script([storage_failing()]);
    client.list_queues("", 0, "").await.expect("ListQueues");
    assert_eq!(scripted.calls(), ["ListQueues"; 2]);
    scripted.script([storage_failing()]);
    client
        .delete_message("q", "h")
        .await
        .expect("DeleteMessage");
    assert_eq!(scripted.calls(), ["DeleteMessage"; 2]);
    scripted.script([storage_failing()]);
    client
        .batch_delete_messages("q", ["h".to_string()])
        .await
        .expect("BatchDeleteMessages");
    assert_eq!(scripted.calls(), ["BatchDeleteMessages"; 2]);
    // Opening a receive is retried (nothing was delivered yet).
    scripted.script([storage_failing()]);
    let got = client
        .receive("q", no_wait())
        .await
        .expect("ReceiveMessages");
    assert_eq!(got.len(), 1);
    assert_eq!(scripted.calls(), ["ReceiveMessages"; 2]);
    // Other codes are not retried.
    scripted.script([Status::internal("bug")]);
    let error = client.get_queue("q").await.expect_err("internal");
    assert!(matches!(error, ClientError::Other(_)), "{error:?}");
    assert_eq!(scripted.calls().len(), 1);

    // Sends are retried: each carries a deduplication id, the same on every attempt (a
    // retry of a send that was stored is a duplicate, which stores nothing).
    scripted.script([storage_failing()]);
    client.send_message("q", "x").await.expect("retried");
    assert_eq!(scripted.calls(), ["SendMessage"; 2]);
    let ids = scripted.deduplication_ids();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0].starts_with("spool-rs-") && ids[0] == ids[1],
        "{ids:?}"
    );
    scripted.script([storage_failing()]);
    client
        .batch_send_messages("q", ["x", "y"])
        .await
        .expect("retried");
    assert_eq!(scripted.calls(), ["BatchSendMessages"; 2]);
    let ids = scripted.deduplication_ids();
    assert_eq!(ids.len(), 4);
    assert!(ids[0] != ids[1] && ids[..2] == ids[2..], "{ids:?}");
    // Rewinds, purges and redrives: once the request may have been carried out, not retried.
    scripted.script([storage_failing()]);
    client
        .redrive_messages("q", None, 0)
        .await
        .expect_err("not retried");
    assert_eq!(scripted.calls(), ["RedriveMessages"]);
    scripted.script([storage_failing()]);
    client
        .rewind_queue("q", SystemTime::now())
        .await
        .expect_err("not retried");
    assert_eq!(scripted.calls(), ["RewindQueue"]);
    scripted.script([storage_failing()]);
    client.purge_queue("q").await.expect_err("not retried");
    assert_eq!(scripted.calls(), ["PurgeQueue"]);
    // Peeks and visibility changes are retried.
    scripted.script([storage_failing()]);
    client.peek_messages("q", 1).await.expect("retried");
    assert_eq!(scripted.calls(), ["PeekMessages"; 2]);
    scripted.script([storage_failing()]);
    client
        .change_message_visibility("q", "h", 10)
        .await
        .expect("retried");
    assert_eq!(scripted.calls(), ["ChangeMessageVisibility"; 2]);
    scripted.script([storage_failing()]);
    client
        .batch_change_message_visibility("q", [])
        .await
        .expect("retried");
    assert_eq!(scripted.calls(), ["BatchChangeMessageVisibility"; 2]);
    // ... but a server that is still starting did nothing: a send is retried then.
    scripted.script([errors::STARTING
        .status("the server is starting: its queues are being recovered from storage")]);
    client.send_message("q", "x").await.expect("retried");
    assert_eq!(scripted.calls(), ["SendMessage"; 2]);

    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_sends_are_retried_and_a_retried_delete_queue_that_finds_nothing_succeeds() {
    let (scripted, client, stop) = start_scripted().await;
    let opted_in = Client::connect(
        client.endpoint(),
        ClientOptions::default().retry(
            RetryPolicy::default()
                .initial_backoff(Duration::from_millis(1))
                .retry_non_idempotent(true),
        ),
    )
    .await
    .expect("connect");
    scripted.script([storage_failing()]);
    opted_in.send_message("q", "x").await.expect("retried");
    assert_eq!(scripted.calls(), ["SendMessage"; 2]);

    // The first attempt may have deleted the queue: NOT_FOUND on the retry is success.
    scripted.script([
        storage_failing(),
        errors::QUEUE_NOT_FOUND.status("queue \"q\" does not exist"),
    ]);
    client.delete_queue("q").await.expect("gone is deleted");
    assert_eq!(scripted.calls(), ["DeleteQueue"; 2]);
    // NOT_FOUND on the first attempt is an error.
    scripted.script([errors::QUEUE_NOT_FOUND.status("queue \"q\" does not exist")]);
    let error = client.delete_queue("q").await.expect_err("not found");
    assert!(matches!(error, ClientError::QueueNotFound(_)), "{error:?}");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_changes_purge_and_peek_round_trip() {
    let server = TestServer::start().await;
    let client = client_of(&server).await;
    client
        .create_queue("vis", QueueAttributes::default())
        .await
        .expect("create");
    client
        .batch_send_messages("vis", ["a", "b", "c"])
        .await
        .expect("send");
    let peeked = client.peek_messages("vis", 16).await.expect("peek");
    let bodies: Vec<&[u8]> = peeked.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [b"a", b"b", b"c"]);
    let got = client
        .receive("vis", no_wait().max_messages(2))
        .await
        .expect("receive");
    let extended = client
        .change_message_visibility("vis", &got[0].receipt_handle, 600)
        .await
        .expect("heartbeat");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    assert!(
        extended.seconds > now.as_secs() as i64 + 500,
        "{extended:?}"
    );
    let answer = client
        .batch_change_message_visibility(
            "vis",
            [
                spool_client::ChangeVisibilityEntry {
                    receipt_handle: got[1].receipt_handle.clone(),
                    visibility_timeout_seconds: 0,
                },
                spool_client::ChangeVisibilityEntry {
                    receipt_handle: "bad".into(),
                    visibility_timeout_seconds: 0,
                },
            ],
        )
        .await
        .expect("batch");
    assert_eq!(answer.changed.len(), 1);
    assert_eq!(answer.failures[0].index, 1);
    let stale = client
        .change_message_visibility("vis", &got[1].receipt_handle, 10)
        .await
        .expect_err("nacked: expired");
    assert_client_error(&stale, "StaleReceipt", Code::FailedPrecondition, 4430);
    assert_eq!(
        client.peek_messages("vis", 16).await.expect("peek").len(),
        2
    );
    assert_eq!(client.purge_queue("vis").await.expect("purge"), 3);
    assert!(
        client
            .peek_messages("vis", 16)
            .await
            .expect("peek")
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_deduplication_and_dead_letters_round_trip() {
    let server = TestServer::start().await;
    let client = client_of(&server).await;
    client
        .create_queue("cl-dlq", QueueAttributes::default())
        .await
        .expect("create the dead-letter queue");
    let attributes = QueueAttributes {
        visibility_timeout_seconds: Some(1),
        dead_letter_policy: Some(spool_client::DeadLetterPolicy {
            dead_letter_queue: "cl-dlq".into(),
            max_receive_count: 1,
            max_time_to_live_seconds: 0,
        }),
        ..Default::default()
    };
    client
        .create_queue("cl", attributes)
        .await
        .expect("create with a policy");
    assert_eq!(
        client
            .list_dead_letter_source_queues("cl-dlq")
            .await
            .expect("sources"),
        ["cl"]
    );
    let options = spool_client::SendOptions::default()
        .attribute("traceparent", "00-ab-cd-01")
        .deduplication_id("order-7");
    let id = client
        .send_message_with("cl", "order 7", options.clone())
        .await
        .expect("send");
    let again = client
        .send_message_with("cl", "order 7", options)
        .await
        .expect("send again");
    assert_eq!(again, id);
    let got = client.receive("cl", no_wait()).await.expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attributes["traceparent"], "00-ab-cd-01");
    server.clock.skip_ahead(Duration::from_secs(2));
    assert!(
        client
            .receive("cl", no_wait())
            .await
            .expect("moves it")
            .is_empty()
    );
    let mut dead = Vec::new();
    for _ in 0..500 {
        dead = client.peek_messages("cl-dlq", 1).await.expect("peek");
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (
            dead[0].message_id.as_str(),
            dead[0].dead_letter_source_queue.as_str(),
            dead[0].dead_letter_receive_count
        ),
        (id.as_str(), "cl", 1)
    );
    let redriven = client
        .redrive_messages("cl-dlq", None, 0)
        .await
        .expect("redrive");
    assert_eq!(redriven.redriven_messages, 1);
    let error = client.delete_queue("cl-dlq").await.expect_err("guarded");
    assert!(
        matches!(error, ClientError::DeadLetterTarget(_)),
        "{error:?}"
    );
    server.stop().await;
}
