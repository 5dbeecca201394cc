//! `spool-client`: the Rust client of Spool, a durable message-queue service with the queue model
//! of Tencent Cloud CMQ, served over gRPC. Typed methods for every call of `spool.v1.QueueService`, long-poll
//! receives as a [`Stream`], retries with backoff where they are safe, and errors that keep
//! both the gRPC code and CMQ's error number.
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use spool_client::{Client, ClientError, ClientOptions, QueueAttributes, ReceiveOptions};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ClientError> {
//!     let client = Client::connect("http://127.0.0.1:50051", ClientOptions::default()).await?;
//!     let attributes = QueueAttributes {
//!         visibility_timeout_seconds: Some(10),
//!         ..Default::default()
//!     };
//!     client.create_queue("orders", attributes).await?;
//!     client.send_message("orders", "order 1").await?;
//!
//!     // Wait up to 3 s for messages, take up to 16.
//!     let options = ReceiveOptions::default().max_messages(16).wait_seconds(3);
//!     let mut messages = client.receive_messages("orders", options).await?;
//!     while let Some(message) = messages.next().await {
//!         let message = message?;
//!         println!("{}", String::from_utf8_lossy(&message.body));
//!         client.delete_message("orders", &message.receipt_handle).await?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! (The README's "Rust client" section shows the same program; a test keeps them equal.)
//!
//! A [`Client`] is cheap to clone: clones share one HTTP/2 connection, which carries many calls
//! at once. Which calls are retried, and why, is explained in [`retry`].
//!
//! # Layout
//!
//! - this module: [`Client`], its options and the long-poll [`MessageStream`].
//! - [`retry`]: which calls are retried on UNAVAILABLE, and the backoff.
//! - [`ClientError`] (in `error`): a failed call, one variant per case of the error table.
//! - [`errors`]: the error table itself (reason, gRPC code, CMQ code), shared with the server.
//! - [`limits`]: the API's ranges and defaults, shared with the server.
//! - [`pb`]: the generated protobuf types and client stubs (with the `server` feature, the
//!   server trait too); `codec` is the protobuf codec they use.
//!
//! The crate compiles none of the server: no SQLite, no queue actors.

mod codec;
mod consume;
mod error;
pub mod errors;
pub mod limits;
pub mod retry;

/// The generated protobuf types and gRPC stubs of `spool.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("spool.v1");
}

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

pub use self::consume::{ConsumeOptions, Consumer, Delivery};
pub use self::error::{ClientError, RpcError};
pub use self::errors::code_name;
pub use self::retry::RetryPolicy;
use self::retry::{Safety, jitter_seed, never_sent};
use crate::limits::{MAX_REQUEST_BYTES, POLLING_WAIT_SECONDS};
use crate::pb::queue_service_client::QueueServiceClient;
pub use crate::pb::{
    BatchChangeMessageVisibilityResponse, BatchSendEntry, ChangeVisibilityEntry,
    ChangeVisibilityFailure, ChangedVisibility, DeadLetterPolicy, DeleteFailure,
    ListQueuesResponse, PeekedMessage, Queue, QueueAttributes, QueueStats, ReceivedMessage,
    RedriveMessagesResponse,
};
pub use pb::{
    BatchPublishEntry, FilterType, ListSubscriptionsResponse, ListTopicsResponse,
    PublishMessageResponse, PublishedCopy, Subscription, Topic, TopicAttributes, TopicStats,
};

/// What a publish may say besides its body (see [`Client::publish_message_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    attributes: std::collections::HashMap<String, String>,
    tags: Vec<String>,
    routing_key: String,
    deduplication_id: Option<String>,
}

impl PublishOptions {
    /// Adds an attribute, delivered with every copy.
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Adds a tag (topics filtering by tags; at most 16).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The routing key (topics filtering by routing keys): dot-separated words.
    pub fn routing_key(self, key: impl Into<String>) -> Self {
        Self {
            routing_key: key.into(),
            ..self
        }
    }

    /// The publish's deduplication id, instead of one the client makes: each queue that
    /// accepted a copy with it within its deduplication window enqueues no second copy.
    pub fn deduplication_id(self, id: impl Into<String>) -> Self {
        Self {
            deduplication_id: Some(id.into()),
            ..self
        }
    }
}

/// What a send may say besides its body (see [`Client::send_message_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    delay_seconds: Option<u32>,
    attributes: std::collections::HashMap<String, String>,
    deduplication_id: Option<String>,
}

impl SendOptions {
    /// Seconds before the message becomes visible.
    pub fn delay_seconds(self, seconds: u32) -> Self {
        Self {
            delay_seconds: Some(seconds),
            ..self
        }
    }

    /// Adds an attribute (at most 16; keys of letters, digits, '-', '_' and '.').
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The send's deduplication id (1..=128 printable ASCII characters), instead of one the
    /// client makes: a send with an id the queue accepted within its deduplication window
    /// enqueues nothing and returns the first send's message id.
    pub fn deduplication_id(self, id: impl Into<String>) -> Self {
        Self {
            deduplication_id: Some(id.into()),
            ..self
        }
    }
}

/// A deduplication id for a send that has none of the caller's: 128 random bits, so two sends
/// never share one, while the retries of one send do (they reuse its request).
fn new_deduplication_id() -> String {
    let mut bytes = [0u8; 16];
    // Without the OS's randomness, time and a counter still tell sends apart.
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&now.to_le_bytes());
        bytes[8..].copy_from_slice(&count.to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("spool-rs-{hex}")
}

/// The endpoint of a server started with `spool serve` and no `--listen`.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// How long connecting may take, unless the options say otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call other than a receive may take (a receive adds its wait to it).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an HTTP/2 ping checks that the server is still there while calls are open, so a
/// long poll on a dead connection fails instead of hanging.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long the client waits for the answer to a ping before it drops the connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings: timeouts, keepalive, retries.
///
/// ```
/// use std::time::Duration;
/// use spool_client::{ClientOptions, RetryPolicy};
///
/// let options = ClientOptions::default()
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .keepalive(Some(Duration::from_secs(30)), Duration::from_secs(5))
///     .retry(RetryPolicy::default().max_attempts(8));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bounds each connection attempt, so an unreachable host fails (and is retried) quickly.
    connect_timeout: Duration,
    /// Bounds each call; sent to the server as `grpc-timeout`, so it stops working on calls
    /// nobody waits for any more.
    request_timeout: Duration,
    /// HTTP/2 keepalive ping interval while calls are open; `None` turns pings off.
    keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is considered dead.
    keepalive_timeout: Duration,
    /// Also ping while no call is open, to keep idle connections through NATs and proxies.
    keepalive_while_idle: bool,
    /// What is retried on UNAVAILABLE, and how.
    retry: RetryPolicy,
    /// PEM certificates of the CAs an https:// server's certificate must chain to; `None`:
    /// the system's trusted roots.
    tls_ca_pem: Option<Vec<u8>>,
    /// A client certificate and key, for servers that require one (mTLS).
    tls_identity: Option<TlsIdentity>,
    /// The name the server's certificate must carry, when it is not the endpoint's host (a
    /// server reached by IP address, or through a tunnel).
    tls_domain_name: Option<String>,
    /// Sent with every call as `authorization: Bearer <token>`.
    bearer_token: Option<Secret>,
}

/// A client certificate chain and its private key, in PEM; Debug does not show the key.
#[derive(Clone)]
struct TlsIdentity {
    certificate_pem: Vec<u8>,
    key_pem: Secret<Vec<u8>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field(
                "certificate_pem",
                &format_args!("{} bytes", self.certificate_pem.len()),
            )
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// A value that Debug output (logs, panics) never shows.
#[derive(Clone, PartialEq, Eq)]
struct Secret<T = String>(T);

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_while_idle: false,
            retry: RetryPolicy::default(),
            tls_ca_pem: None,
            tls_identity: None,
            tls_domain_name: None,
            bearer_token: None,
        }
    }
}

impl ClientOptions {
    /// How long one attempt to connect may take.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        Self {
            connect_timeout: timeout,
            ..self
        }
    }

    /// How long one attempt of a call may take. A receive may take its wait on top of that.
    pub fn request_timeout(self, timeout: Duration) -> Self {
        Self {
            request_timeout: timeout,
            ..self
        }
    }

    /// HTTP/2 keepalive: a ping every `interval` while calls are open (`None`: no pings), and
    /// the connection is dropped when an answer takes longer than `timeout`.
    pub fn keepalive(self, interval: Option<Duration>, timeout: Duration) -> Self {
        Self {
            keepalive_interval: interval,
            keepalive_timeout: timeout,
            ..self
        }
    }

    /// Also send keepalive pings while no call is open.
    pub fn keepalive_while_idle(self, enabled: bool) -> Self {
        Self {
            keepalive_while_idle: enabled,
            ..self
        }
    }

    /// What is retried on UNAVAILABLE, and how; see [`RetryPolicy`] and [`retry`].
    pub fn retry(self, policy: RetryPolicy) -> Self {
        Self {
            retry: policy,
            ..self
        }
    }

    /// For https:// endpoints: trust the CAs of this PEM (one or more certificates) instead
    /// of the system's roots, e.g. a private CA's `ca.crt`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use spool_client::{Client, ClientOptions};
    ///
    /// let options = ClientOptions::default()
    ///     .tls_ca_certificate(std::fs::read("ca.crt")?)
    ///     .tls_client_identity(std::fs::read("client.crt")?, std::fs::read("client.key")?)
    ///     .bearer_token(std::env::var("SPOOL_TOKEN")?);
    /// let client = Client::connect("https://spool.example.com:50051", options).await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_ca_certificate(self, pem: impl Into<Vec<u8>>) -> Self {
        Self {
            tls_ca_pem: Some(pem.into()),
            ..self
        }
    }

    /// For https:// endpoints whose server requires client certificates (mTLS): the PEM
    /// certificate (chain) and private key to present.
    pub fn tls_client_identity(
        self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            tls_identity: Some(TlsIdentity {
                certificate_pem: certificate_pem.into(),
                key_pem: Secret(key_pem.into()),
            }),
            ..self
        }
    }

    /// For https:// endpoints: the name the server's certificate must carry, when it is not
    /// the endpoint's host.
    pub fn tls_domain_name(self, name: impl Into<String>) -> Self {
        Self {
            tls_domain_name: Some(name.into()),
            ..self
        }
    }

    /// Sends `authorization: Bearer <token>` with every call: a token of a principal in the
    /// server's auth file. Use it over https:// only, or on a trusted network: plaintext
    /// shows it to anyone on the path.
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        Self {
            bearer_token: Some(Secret(token.into())),
            ..self
        }
    }

    /// Whether any TLS setting was given (they need an https:// endpoint).
    fn has_tls_settings(&self) -> bool {
        self.tls_ca_pem.is_some() || self.tls_identity.is_some() || self.tls_domain_name.is_some()
    }
}

/// Settings of one ReceiveMessages call; unset ones take the queue's values.
///
/// ```
/// use spool_client::ReceiveOptions;
///
/// // Up to 3 messages; wait up to 3 s when none is visible; keep them invisible for 60 s.
/// let options = ReceiveOptions::default()
///     .max_messages(3)
///     .wait_seconds(3)
///     .visibility_timeout_seconds(60);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to receive, 1..=16; 0 (the default) means 1.
    max_messages: u32,
    /// Seconds to wait when no message is visible, 0..=30; `None`: the queue's polling wait.
    wait_seconds: Option<u32>,
    /// Seconds the messages stay invisible, 1..=43200; `None`: the queue's visibility timeout.
    visibility_timeout_seconds: Option<u32>,
}

impl ReceiveOptions {
    /// Most messages to receive: 1..=16 (0 means 1). Fewer visible messages do not block.
    pub fn max_messages(self, max: u32) -> Self {
        Self {
            max_messages: max,
            ..self
        }
    }

    /// Seconds to wait when no message is visible: 0..=30. Unset, the queue's polling wait.
    pub fn wait_seconds(self, seconds: u32) -> Self {
        Self {
            wait_seconds: Some(seconds),
            ..self
        }
    }

    /// Seconds the received messages stay invisible: 1..=43200. Unset, the queue's.
    pub fn visibility_timeout_seconds(self, seconds: u32) -> Self {
        Self {
            visibility_timeout_seconds: Some(seconds),
            ..self
        }
    }
}

/// A connection to a Spool server, with a typed method per call.
#[derive(Clone, Debug)]
pub struct Client {
    grpc: QueueServiceClient<Channel>,
    /// The endpoint as given, for error messages.
    endpoint: String,
    options: ClientOptions,
    /// `Bearer <token>`, marked sensitive (never indexed by HPACK), when a token was given.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// What one attempt of a unary call is handed: a client of its own and the request.
type Grpc = QueueServiceClient<Channel>;

/// A call that failed for good, and how many attempts it took.
struct Failed {
    status: Status,
    attempts: u32,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`; `host:port` means `http://host:port`),
    /// retrying as [`ClientOptions::retry`] allows while the server cannot be reached.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), spool_client::ClientError> {
    /// use spool_client::{Client, ClientOptions};
    ///
    /// let client = Client::connect("http://127.0.0.1:50051", ClientOptions::default()).await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(endpoint: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let target = build_endpoint(endpoint, &options)?;
        let authorization = authorization(&options)?;
        let mut attempt = 1;
        let channel = loop {
            match target.connect().await {
                Ok(channel) => break channel,
                Err(error) if attempt < options.retry.attempt_limit() => {
                    tracing::debug!(%endpoint, attempt, error = %error_chain(&error), "cannot connect; retrying");
                    tokio::time::sleep(options.retry.backoff(attempt, jitter_seed())).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(ClientError::Unavailable(RpcError {
                        code: Code::Unavailable,
                        cmq_code: None,
                        reason: None,
                        message: format!("cannot connect to {endpoint}: {}", error_chain(&error)),
                    }));
                }
            }
        };
        Ok(Self::with_channel(
            endpoint,
            channel,
            options,
            authorization,
        ))
    }

    /// Like [`connect`](Self::connect), but connects on the first call (which retries while
    /// the server cannot be reached). Fails only if the endpoint is malformed.
    pub fn connect_lazy(endpoint: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let channel = build_endpoint(endpoint, &options)?.connect_lazy();
        let authorization = authorization(&options)?;
        Ok(Self::with_channel(
            endpoint,
            channel,
            options,
            authorization,
        ))
    }

    fn with_channel(
        endpoint: &str,
        channel: Channel,
        options: ClientOptions,
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Self {
        let grpc = QueueServiceClient::new(channel)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES);
        Self {
            grpc,
            endpoint: endpoint.to_string(),
            options,
            authorization,
        }
    }

    /// The endpoint this client talks to, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a queue; unset attributes take their defaults. Creating a queue that exists with
    /// the same attributes returns it; with other attributes it fails with
    /// [`ClientError::QueueExists`]. Retried on UNAVAILABLE.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use spool_client::QueueAttributes;
    ///
    /// let queue = client
    ///     .create_queue(
    ///         "QueueForTest",
    ///         QueueAttributes {
    ///             visibility_timeout_seconds: Some(10),
    ///             max_message_size: Some(65_536),
    ///             polling_wait_seconds: Some(10),
    ///             ..Default::default()
    ///         },
    ///     )
    ///     .await?;
    /// assert_eq!(queue.name, "QueueForTest");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_queue(
        &self,
        name: &str,
        attributes: QueueAttributes,
    ) -> Result<Queue, ClientError> {
        let request = pb::CreateQueueRequest {
            queue_name: name.to_string(),
            attributes: Some(attributes),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.create_queue(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// A queue's attributes and message counters. Retried on UNAVAILABLE.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// let queue = client.get_queue("QueueForTest").await?;
    /// let stats = queue.stats.unwrap_or_default();
    /// println!("{} visible, {} delayed", stats.active_messages, stats.delayed_messages);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_queue(&self, name: &str) -> Result<Queue, ClientError> {
        let request = pb::GetQueueRequest {
            queue_name: name.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.get_queue(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Changes the attributes that are set; the others keep their value. Returns the queue.
    /// Retried on UNAVAILABLE (the values are absolute, so applying them twice is harmless).
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use spool_client::QueueAttributes;
    ///
    /// // Turn rewind on: keep deleted messages for 12 hours.
    /// let attributes = QueueAttributes { rewind_seconds: Some(43_200), ..Default::default() };
    /// client.update_queue("QueueForTest", attributes).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_queue(
        &self,
        name: &str,
        attributes: QueueAttributes,
    ) -> Result<Queue, ClientError> {
        let request = pb::UpdateQueueRequest {
            queue_name: name.to_string(),
            attributes: Some(attributes),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.update_queue(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Deletes a queue and its messages. Retried on UNAVAILABLE; if a retry finds the queue
    /// gone, the call succeeds (the attempt that failed may have deleted it; see [`retry`]).
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use spool_client::ClientError;
    ///
    /// match client.delete_queue("QueueForTest").await {
    ///     Ok(()) | Err(ClientError::QueueNotFound(_)) => println!("gone"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_queue(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::DeleteQueueRequest {
            queue_name: name.to_string(),
        };
        let result = self
            .unary(
                Safety::Idempotent,
                request,
                self.options.request_timeout,
                |mut grpc: Grpc, request| async move { grpc.delete_queue(request).await },
            )
            .await;
        self.deleted(result, "queue", name)
    }

    /// One page of queues whose name starts with `prefix`, in name order: `page_size` 0 means
    /// 100; `page_token` is the previous page's `next_page_token` ("" for the first).
    /// Retried on UNAVAILABLE. [`list_all_queues`](Self::list_all_queues) reads every page.
    pub async fn list_queues(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<ListQueuesResponse, ClientError> {
        let request = pb::ListQueuesRequest {
            prefix: prefix.to_string(),
            page_size,
            page_token: page_token.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.list_queues(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Every queue whose name starts with `prefix` ("" for all), in name order, page by page.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// for queue in client.list_all_queues("Queue").await? {
    ///     println!("{}", queue.name);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_all_queues(&self, prefix: &str) -> Result<Vec<Queue>, ClientError> {
        let mut queues = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self.list_queues(prefix, 0, &page_token).await?;
            queues.extend(page.queues);
            if page.next_page_token.is_empty() || page.next_page_token == page_token {
                return Ok(queues);
            }
            page_token = page.next_page_token;
        }
    }

    /// Makes every deleted message enqueued at or after `start` receivable again, oldest
    /// first; returns how many came back. Needs a rewind window on the queue (else
    /// [`ClientError::RewindDisabled`]); `start` must lie within it.
    ///
    /// Not retried once the request may have reached the server (a second rewind would bring
    /// back what consumers deleted in between), unless
    /// [`RetryPolicy::retry_non_idempotent`] says so.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// // CMQ: rewindQueue(1488718862)
    /// let restored = client
    ///     .rewind_queue("QueueTest", UNIX_EPOCH + Duration::from_secs(1_488_718_862))
    ///     .await?;
    /// println!("{restored} messages are receivable again");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rewind_queue(&self, name: &str, start: SystemTime) -> Result<u64, ClientError> {
        let request = pb::RewindQueueRequest {
            queue_name: name.to_string(),
            start_time: Some(start.into()),
        };
        self.unary(
            Safety::NotIdempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.rewind_queue(request).await },
        )
        .await
        .map(|response| response.restored_messages)
        .map_err(|failed| self.error(failed.status))
    }

    /// Sends one message (any bytes); returns its id once it is stored durably.
    ///
    /// Retried on UNAVAILABLE: the send carries a deduplication id the client makes for it
    /// (see [`SendOptions::deduplication_id`] to give your own), the same on every attempt, so a
    /// retry of an attempt that was stored stores nothing and returns the same id (within the
    /// queue's `deduplication_window_seconds`).
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// let id = client.send_message("QueueForTest", "I am test message.").await?;
    /// let id = client.send_message("QueueForTest", vec![0u8, 1, 2]).await?;
    /// # let _ = id;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_message(
        &self,
        queue: &str,
        body: impl Into<Bytes>,
    ) -> Result<String, ClientError> {
        self.send_message_with(queue, body, SendOptions::default())
            .await
    }

    /// Sends one message with attributes, a delay or a deduplication id of the caller's.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use spool_client::SendOptions;
    ///
    /// let options = SendOptions::default()
    ///     .attribute("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .deduplication_id("order-1");
    /// client.send_message_with("orders", "order 1", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_message_with(
        &self,
        queue: &str,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<String, ClientError> {
        self.send(queue, body.into(), options).await
    }

    /// Sends one message that stays invisible for `delay_seconds` (CMQ's delayed message), e.g.
    /// to retry a failed job later. Retried as [`send_message`](Self::send_message) is.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// // Visible in 10 minutes.
    /// client.send_delayed_message("QueueForTest", "i am test", 600).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_delayed_message(
        &self,
        queue: &str,
        body: impl Into<Bytes>,
        delay_seconds: u32,
    ) -> Result<String, ClientError> {
        let options = SendOptions::default().delay_seconds(delay_seconds);
        self.send(queue, body.into(), options).await
    }

    async fn send(
        &self,
        queue: &str,
        body: Bytes,
        options: SendOptions,
    ) -> Result<String, ClientError> {
        let request = pb::SendMessageRequest {
            queue_name: queue.to_string(),
            body,
            delay_seconds: options.delay_seconds,
            attributes: options.attributes,
            deduplication_id: options
                .deduplication_id
                .unwrap_or_else(new_deduplication_id),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.send_message(request).await },
        )
        .await
        .map(|response| response.message_id)
        .map_err(|failed| self.error(failed.status))
    }

    /// Sends 1 to 16 messages, all or nothing; returns their ids in order. Retried as
    /// [`send_message`](Self::send_message) is.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// let bodies = (0..3).map(|i| format!("I am test message {i}."));
    /// let ids = client.batch_send_messages("QueueForTest", bodies).await?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_send_messages<B: Into<Bytes>>(
        &self,
        queue: &str,
        bodies: impl IntoIterator<Item = B>,
    ) -> Result<Vec<String>, ClientError> {
        let entries = bodies
            .into_iter()
            .map(|body| BatchSendEntry {
                body: body.into(),
                ..Default::default()
            })
            .collect();
        self.batch_send_entries(queue, entries).await
    }

    /// Sends 1 to 16 messages, each with its own delay, attributes and deduplication id, all or
    /// nothing. An entry without a deduplication id gets one of the client's (see
    /// [`send_message`](Self::send_message)).
    pub async fn batch_send_entries(
        &self,
        queue: &str,
        mut entries: Vec<BatchSendEntry>,
    ) -> Result<Vec<String>, ClientError> {
        for entry in &mut entries {
            if entry.deduplication_id.is_empty() {
                entry.deduplication_id = new_deduplication_id();
            }
        }
        let request = pb::BatchSendMessagesRequest {
            queue_name: queue.to_string(),
            entries,
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.batch_send_messages(request).await },
        )
        .await
        .map(|response| response.message_ids)
        .map_err(|failed| self.error(failed.status))
    }

    /// Long-polls for messages: a [`Stream`] of what is visible now (up to `max_messages`), or,
    /// when nothing is, of the first messages to arrive within the wait. It ends when the batch
    /// is delivered or the wait is over; an empty stream means no message (CMQ's 7000).
    /// Each message is invisible for the visibility timeout; delete it with its receipt handle
    /// before then, or it is delivered again.
    ///
    /// Errors of the request (no such queue, bad options) are returned before the stream.
    /// Opening the stream is retried on UNAVAILABLE; a stream that breaks is not (its messages
    /// may be in flight already; they come back after their visibility timeout).
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use futures_util::StreamExt as _;
    /// use spool_client::ReceiveOptions;
    ///
    /// let options = ReceiveOptions::default().max_messages(3).wait_seconds(3);
    /// let mut messages = client.receive_messages("QueueForTest", options).await?;
    /// while let Some(message) = messages.next().await {
    ///     let message = message?;
    ///     // ... handle it, then:
    ///     client.delete_message("QueueForTest", &message.receipt_handle).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn receive_messages(
        &self,
        queue: &str,
        options: ReceiveOptions,
    ) -> Result<MessageStream, ClientError> {
        let request = pb::ReceiveMessagesRequest {
            queue_name: queue.to_string(),
            max_messages: options.max_messages,
            wait_seconds: options.wait_seconds,
            visibility_timeout_seconds: options.visibility_timeout_seconds,
        };
        // The server ends the long poll just before the deadline it is given, so leave it the
        // whole wait (the queue's, when unset: at most the longest polling wait) on top.
        let wait = options.wait_seconds.unwrap_or(*POLLING_WAIT_SECONDS.end());
        let timeout = self.options.request_timeout + Duration::from_secs(u64::from(wait));
        self.unary(
            Safety::Idempotent,
            request,
            timeout,
            |mut grpc: Grpc, request| async move { grpc.receive_messages(request).await },
        )
        .await
        .map(|inner| MessageStream { inner })
        .map_err(|failed| self.error(failed.status))
    }

    /// Like [`receive_messages`](Self::receive_messages), collected: every message of one long
    /// poll, or none when nothing arrived within the wait.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use spool_client::ReceiveOptions;
    ///
    /// let options = ReceiveOptions::default().max_messages(3).wait_seconds(3);
    /// for message in client.receive("QueueForTest", options).await? {
    ///     println!("{} (received {} times)", message.message_id, message.dequeue_count);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn receive(
        &self,
        queue: &str,
        options: ReceiveOptions,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let mut stream = self.receive_messages(queue, options).await?;
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(messages)
    }

    /// Deletes a received message by its newest receipt handle, before its visibility timeout
    /// ends. A handle superseded by a later receive, or expired, fails with
    /// [`ClientError::StaleReceipt`]. Retried on UNAVAILABLE (deleting twice is harmless).
    pub async fn delete_message(
        &self,
        queue: &str,
        receipt_handle: &str,
    ) -> Result<(), ClientError> {
        let request = pb::DeleteMessageRequest {
            queue_name: queue.to_string(),
            receipt_handle: receipt_handle.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.delete_message(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Deletes 1 to 16 received messages; returns the handles that could not be deleted, with
    /// why (empty when all were). Retried on UNAVAILABLE.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client, received: Vec<spool_client::ReceivedMessage>) -> Result<(), spool_client::ClientError> {
    /// let handles = received.iter().map(|message| message.receipt_handle.clone());
    /// for failure in client.batch_delete_messages("QueueForTest", handles).await? {
    ///     eprintln!("{}: {} (cmq_code {})", failure.receipt_handle, failure.message, failure.cmq_code);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_delete_messages(
        &self,
        queue: &str,
        receipt_handles: impl IntoIterator<Item = String>,
    ) -> Result<Vec<DeleteFailure>, ClientError> {
        let request = pb::BatchDeleteMessagesRequest {
            queue_name: queue.to_string(),
            receipt_handles: receipt_handles.into_iter().collect(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.batch_delete_messages(request).await },
        )
        .await
        .map(|response| response.failures)
        .map_err(|failed| self.error(failed.status))
    }

    /// Changes when a received message becomes visible again: `visibility_timeout_seconds` from
    /// now (0..=43200), 0 making it visible at once (a nack), more extending the time to process
    /// it (a heartbeat). The receipt handle must be the newest and unexpired, as for
    /// [`Client::delete_message`]; it stays valid until the new `next_visible_time`, which is
    /// returned. Retried on UNAVAILABLE: a heartbeat sent twice extends from the later moment;
    /// a nack whose first attempt took effect may then fail with
    /// [`ClientError::StaleReceipt`] (the message was visible, or received again, already).
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client, message: spool_client::ReceivedMessage) -> Result<(), spool_client::ClientError> {
    /// // Still working: keep the message for 5 more minutes.
    /// client.change_message_visibility("QueueForTest", &message.receipt_handle, 300).await?;
    /// // Cannot handle it now: let another consumer have it at once.
    /// client.change_message_visibility("QueueForTest", &message.receipt_handle, 0).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn change_message_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        visibility_timeout_seconds: u32,
    ) -> Result<prost_types::Timestamp, ClientError> {
        let request = pb::ChangeMessageVisibilityRequest {
            queue_name: queue.to_string(),
            receipt_handle: receipt_handle.to_string(),
            visibility_timeout_seconds,
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.change_message_visibility(request).await },
        )
        .await
        // A Spool server always sets it; the default (the epoch) would only come from another.
        .map(|response| response.next_visible_time.unwrap_or_default())
        .map_err(|failed| self.error(failed.status))
    }

    /// Changes the visibility of 1 to 16 received messages, each entry as
    /// [`Client::change_message_visibility`] does: the answer lists the entries that changed
    /// (with their new `next_visible_time`) and those that did not (with why), each by its
    /// index. Retried on UNAVAILABLE, with the same caveat for nacks.
    pub async fn batch_change_message_visibility(
        &self,
        queue: &str,
        entries: impl IntoIterator<Item = ChangeVisibilityEntry>,
    ) -> Result<BatchChangeMessageVisibilityResponse, ClientError> {
        let request = pb::BatchChangeMessageVisibilityRequest {
            queue_name: queue.to_string(),
            entries: entries.into_iter().collect(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move {
                grpc.batch_change_message_visibility(request).await
            },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Removes every visible, delayed and in-flight message of a queue, as if each had been
    /// deleted (with a rewind window they stay rewindable: [`Client::rewind_queue`] undoes it);
    /// returns how many. Not retried unless the request was certainly not carried out (or
    /// [`RetryPolicy::retry_non_idempotent`] is on): a second purge would also remove what was
    /// sent in between.
    pub async fn purge_queue(&self, queue: &str) -> Result<u64, ClientError> {
        let request = pb::PurgeQueueRequest {
            queue_name: queue.to_string(),
        };
        self.unary(
            Safety::NotIdempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.purge_queue(request).await },
        )
        .await
        .map(|response| response.purged_messages)
        .map_err(|failed| self.error(failed.status))
    }

    /// Up to `max_messages` (1..=16; 0 means 1) visible messages, in the order a receive would
    /// get them, without receiving them: no receipt handle, nothing changes. Retried on
    /// UNAVAILABLE.
    pub async fn peek_messages(
        &self,
        queue: &str,
        max_messages: u32,
    ) -> Result<Vec<PeekedMessage>, ClientError> {
        let request = pb::PeekMessagesRequest {
            queue_name: queue.to_string(),
            max_messages,
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.peek_messages(request).await },
        )
        .await
        .map(|response| response.messages)
        .map_err(|failed| self.error(failed.status))
    }

    /// The queues whose dead-letter policy names `queue`, in name order. Retried on UNAVAILABLE.
    pub async fn list_dead_letter_source_queues(
        &self,
        queue: &str,
    ) -> Result<Vec<String>, ClientError> {
        let request = pb::ListDeadLetterSourceQueuesRequest {
            queue_name: queue.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move {
                grpc.list_dead_letter_source_queues(request).await
            },
        )
        .await
        .map(|response| response.queue_names)
        .map_err(|failed| self.error(failed.status))
    }

    /// Moves up to `max_messages` (0: all, up to 100,000) visible messages out of a
    /// dead-letter queue, oldest first: back to the queue each came from (`destination`
    /// None), or to `destination`. Returns how many moved, and how many stayed because their
    /// source queue no longer exists. Not retried unless the request was certainly not
    /// carried out (a second redrive would also move messages dead-lettered in between).
    pub async fn redrive_messages(
        &self,
        queue: &str,
        destination: Option<&str>,
        max_messages: u32,
    ) -> Result<RedriveMessagesResponse, ClientError> {
        let request = pb::RedriveMessagesRequest {
            queue_name: queue.to_string(),
            destination_queue: destination.unwrap_or_default().to_string(),
            max_messages,
        };
        self.unary(
            Safety::NotIdempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.redrive_messages(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Creates a topic; unset attributes take their defaults (filter type: tags). Creating a
    /// topic that exists with the same attributes returns it. Retried on UNAVAILABLE.
    pub async fn create_topic(
        &self,
        name: &str,
        attributes: TopicAttributes,
    ) -> Result<Topic, ClientError> {
        let request = pb::CreateTopicRequest {
            topic_name: name.to_string(),
            attributes: Some(attributes),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.create_topic(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// A topic's attributes and counters. Retried on UNAVAILABLE.
    pub async fn get_topic(&self, name: &str) -> Result<Topic, ClientError> {
        let request = pb::GetTopicRequest {
            topic_name: name.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.get_topic(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Changes the topic attributes that are set (max_message_size). Retried on UNAVAILABLE.
    pub async fn update_topic(
        &self,
        name: &str,
        attributes: TopicAttributes,
    ) -> Result<Topic, ClientError> {
        let request = pb::UpdateTopicRequest {
            topic_name: name.to_string(),
            attributes: Some(attributes),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.update_topic(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Deletes a topic and its subscriptions (not their queues). Retried on UNAVAILABLE; a
    /// retry that finds the topic gone counts as deleted.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::DeleteTopicRequest {
            topic_name: name.to_string(),
        };
        let result = self
            .unary(
                Safety::Idempotent,
                request,
                self.options.request_timeout,
                |mut grpc: Grpc, request| async move { grpc.delete_topic(request).await },
            )
            .await;
        self.deleted(result, "topic", name)
    }

    /// One page of topics whose name starts with `prefix`, as
    /// [`list_queues`](Self::list_queues). Retried on UNAVAILABLE.
    pub async fn list_topics(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<ListTopicsResponse, ClientError> {
        let request = pb::ListTopicsRequest {
            prefix: prefix.to_string(),
            page_size,
            page_token: page_token.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.list_topics(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Subscribes `queue` to `topic` as `subscription`, with filter tags or binding keys (by
    /// the topic's filter type; empty: every message). Retried on UNAVAILABLE (subscribing
    /// again with the same queue and filter returns the subscription).
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        queue: &str,
        filter_tags: Vec<String>,
        binding_keys: Vec<String>,
    ) -> Result<Subscription, ClientError> {
        let request = pb::SubscribeRequest {
            topic_name: topic.to_string(),
            subscription_name: subscription.to_string(),
            queue_name: queue.to_string(),
            filter_tags,
            binding_keys,
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.subscribe(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Removes a subscription. Retried on UNAVAILABLE; a retry that finds it gone counts as
    /// removed.
    pub async fn unsubscribe(&self, topic: &str, subscription: &str) -> Result<(), ClientError> {
        let request = pb::UnsubscribeRequest {
            topic_name: topic.to_string(),
            subscription_name: subscription.to_string(),
        };
        let result = self
            .unary(
                Safety::Idempotent,
                request,
                self.options.request_timeout,
                |mut grpc: Grpc, request| async move { grpc.unsubscribe(request).await },
            )
            .await;
        self.deleted(result, "subscription", subscription)
    }

    /// One page of a topic's subscriptions, in name order. Retried on UNAVAILABLE.
    pub async fn list_subscriptions(
        &self,
        topic: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<ListSubscriptionsResponse, ClientError> {
        let request = pb::ListSubscriptionsRequest {
            topic_name: topic.to_string(),
            page_size,
            page_token: page_token.to_string(),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.list_subscriptions(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Publishes one message to a topic: a copy in every subscribed queue whose filter it
    /// passes, all or none, once durable. Retried on UNAVAILABLE with a deduplication id of
    /// the client's (unless the options carry one), so a retry adds no second copy to a queue
    /// with deduplication on.
    pub async fn publish_message(
        &self,
        topic: &str,
        body: impl Into<Bytes>,
    ) -> Result<PublishMessageResponse, ClientError> {
        self.publish_message_with(topic, body, PublishOptions::default())
            .await
    }

    /// Publishes one message with attributes, tags or a routing key, and a deduplication id.
    pub async fn publish_message_with(
        &self,
        topic: &str,
        body: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<PublishMessageResponse, ClientError> {
        let request = pb::PublishMessageRequest {
            topic_name: topic.to_string(),
            body: body.into(),
            attributes: options.attributes,
            tags: options.tags,
            routing_key: options.routing_key,
            deduplication_id: options
                .deduplication_id
                .unwrap_or_else(new_deduplication_id),
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.publish_message(request).await },
        )
        .await
        .map_err(|failed| self.error(failed.status))
    }

    /// Publishes 1 to 16 messages to a topic, every copy of every entry in one transaction.
    /// An entry without a deduplication id gets one of the client's.
    pub async fn batch_publish_entries(
        &self,
        topic: &str,
        entries: Vec<BatchPublishEntry>,
    ) -> Result<Vec<PublishMessageResponse>, ClientError> {
        let entries = entries
            .into_iter()
            .map(|mut entry| {
                if entry.deduplication_id.is_empty() {
                    entry.deduplication_id = new_deduplication_id();
                }
                entry
            })
            .collect();
        let request = pb::BatchPublishMessagesRequest {
            topic_name: topic.to_string(),
            entries,
        };
        self.unary(
            Safety::Idempotent,
            request,
            self.options.request_timeout,
            |mut grpc: Grpc, request| async move { grpc.batch_publish_messages(request).await },
        )
        .await
        .map(|response| response.results)
        .map_err(|failed| self.error(failed.status))
    }

    /// Runs one call, retrying as the policy allows for `safety`.
    async fn unary<Req, Resp, Call, Fut>(
        &self,
        safety: Safety,
        request: Req,
        timeout: Duration,
        call: Call,
    ) -> Result<Resp, Failed>
    where
        Req: Clone,
        Call: Fn(Grpc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let policy = &self.options.retry;
        let mut attempt = 1;
        loop {
            let mut message = tonic::Request::new(request.clone());
            message.set_timeout(timeout);
            if let Some(authorization) = &self.authorization {
                message
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
            }
            match call(self.grpc.clone(), message).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if policy.should_retry(safety, attempt, &status) => {
                    let backoff = policy.backoff(attempt, jitter_seed());
                    tracing::debug!(
                        endpoint = %self.endpoint,
                        attempt,
                        ?backoff,
                        error = %status.message(),
                        "call unavailable; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                Err(status) => {
                    return Err(Failed {
                        status,
                        attempts: attempt,
                    });
                }
            }
        }
    }

    /// The outcome of a retried delete: a retry that finds the thing gone (NOT_FOUND after
    /// more than one attempt) means an earlier attempt deleted it, so it counts as deleted.
    fn deleted(
        &self,
        result: Result<(), Failed>,
        what: &str,
        name: &str,
    ) -> Result<(), ClientError> {
        match result {
            Ok(()) => Ok(()),
            Err(failed) if failed.attempts > 1 && failed.status.code() == Code::NotFound => {
                tracing::debug!(%name, "{what} gone after a retried delete; taking it as deleted");
                Ok(())
            }
            Err(failed) => Err(self.error(failed.status)),
        }
    }

    /// The error of a failed call; a connection that could not be made says where it tried.
    fn error(&self, status: Status) -> ClientError {
        let mut error = RpcError::from_status(&status);
        if status.code() == Code::Unavailable && never_sent(&status) {
            error.message = format!(
                "cannot connect to {}: {}",
                self.endpoint,
                status_chain(&status)
            );
        } else if std::error::Error::source(&status).is_some() {
            // A transport failure after connecting (a TLS alert, a closed connection): tonic's
            // own message ("transport error") says nothing; its causes do.
            error.message = status_chain(&status);
        }
        error.into()
    }
}

/// The messages of one long poll; see [`Client::receive_messages`].
///
/// A [`Stream`] of `Result<ReceivedMessage, ClientError>`; [`message`](Self::message) reads it
/// without `StreamExt`.
#[derive(Debug)]
pub struct MessageStream {
    inner: tonic::Streaming<ReceivedMessage>,
}

impl MessageStream {
    /// The next message, or `None` when the long poll is over.
    pub async fn message(&mut self) -> Result<Option<ReceivedMessage>, ClientError> {
        self.inner.message().await.map_err(ClientError::from)
    }
}

impl Stream for MessageStream {
    type Item = Result<ReceivedMessage, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|result| result.map_err(ClientError::from)))
    }
}

/// The `authorization` metadata of the options' bearer token.
fn authorization(
    options: &ClientOptions,
) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, ClientError> {
    let Some(Secret(token)) = &options.bearer_token else {
        return Ok(None);
    };
    let invalid = || ClientError::InvalidOptions {
        message: "the bearer token is empty or not printable ASCII, so it cannot travel in \
                  metadata"
            .into(),
    };
    let token = token.trim();
    // RFC 6750's token characters are all visible ASCII; anything else would be mangled or
    // refused on the way.
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(invalid());
    }
    let mut value = tonic::metadata::MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| invalid())?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// The TLS settings of an https:// endpoint: the options' CA (else the system's roots), client
/// identity and domain name.
fn tls_config(options: &ClientOptions) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    tls = match &options.tls_ca_pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    };
    if let Some(identity) = &options.tls_identity {
        tls = tls.identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.key_pem.0,
        ));
    }
    if let Some(name) = &options.tls_domain_name {
        tls = tls.domain_name(name.clone());
    }
    tls
}

/// Checks and completes an endpoint: `http://` is implied; `https://` uses the options' TLS
/// settings.
fn build_endpoint(endpoint: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let invalid = |message: String| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        message,
    };
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let target = Endpoint::from_shared(uri).map_err(|error| invalid(error_chain(&error)))?;
    if target.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host".into()));
    }
    let target =
        match target.uri().scheme_str() {
            Some("http") if options.has_tls_settings() => {
                return Err(ClientError::InvalidOptions {
                    message: format!(
                        "TLS settings (a CA, a client certificate, a domain name) are given for \
                     {endpoint}, which is plaintext: use https://"
                    ),
                });
            }
            Some("http") => target,
            Some("https") => target.tls_config(tls_config(options)).map_err(|error| {
                ClientError::InvalidOptions {
                    message: format!("TLS settings: {}", error_chain(&error)),
                }
            })?,
            _ => return Err(invalid("the scheme must be http:// or https://".into())),
        };
    let mut target = target
        .connect_timeout(options.connect_timeout)
        .keep_alive_while_idle(options.keepalive_while_idle)
        .tcp_nodelay(true);
    if let Some(interval) = options.keepalive_interval {
        target = target
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keepalive_timeout);
    }
    Ok(target)
}

/// An error and its sources, joined with ": " (tonic's transport errors say little at the top).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    with_causes(error.to_string(), error.source())
}

/// A status's message and the sources of the transport error behind it, if any.
fn status_chain(status: &Status) -> String {
    with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}

fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // tonic's own wrapper adds nothing but words.
        if !text.contains(&cause_text) && !cause.is::<tonic::transport::Error>() {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_completed() {
        let options = ClientOptions::default();
        let endpoint = build_endpoint("127.0.0.1:50051", &options).expect("host:port");
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:50051/");
        assert!(build_endpoint("http://localhost:1", &options).is_ok());
        assert!(build_endpoint("https://localhost:1", &options).is_ok());
        for bad in ["ftp://localhost:1", "http://", "http://a b"] {
            let error = build_endpoint(bad, &options).expect_err(bad);
            assert!(
                matches!(error, ClientError::InvalidEndpoint { .. }),
                "{bad}: {error:?}"
            );
            assert_eq!(error.code(), None);
        }
    }

    #[test]
    fn tls_settings_need_https_and_tokens_stay_out_of_debug_output() {
        let with_ca = ClientOptions::default().tls_ca_certificate(b"-----BEGIN".to_vec());
        let error = build_endpoint("http://localhost:1", &with_ca).expect_err("plaintext");
        assert!(
            matches!(&error, ClientError::InvalidOptions { message } if message.contains("https://")),
            "{error:?}"
        );
        assert!(build_endpoint("https://localhost:1", &with_ca).is_ok());

        let options = ClientOptions::default()
            .bearer_token("s3cret-token")
            .tls_client_identity(b"cert".to_vec(), b"PRIVATE KEY".to_vec());
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        let value = authorization(&options).expect("valid").expect("a token");
        assert_eq!(value.to_str().expect("ascii"), "Bearer s3cret-token");
        assert!(value.is_sensitive());
        for bad in ["", "  ", "line\nbreak", "naïve", "two words"] {
            let error = authorization(&ClientOptions::default().bearer_token(bad)).expect_err(bad);
            assert!(
                matches!(error, ClientError::InvalidOptions { .. }),
                "{error:?}"
            );
            assert!(!error.to_string().contains(bad) || bad.trim().is_empty());
        }
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        let text = status_chain(&status);
        assert!(text.contains("refused"), "{text}");
        assert_eq!(text.matches("refused").count(), 1, "{text}");
    }
}
