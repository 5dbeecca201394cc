//! What a load generator talks to: a [`Target`] makes queues, producers and consumers. Spool's
//! is here; the peers' (NATS JetStream, RabbitMQ, PostgreSQL) are beside this module, in
//! `nats`, `rabbitmq` and `postgres`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use spool_client::{
    Client, ClientError, ClientOptions, ConsumeOptions, Delivery, QueueAttributes, ReceiveOptions,
};

use super::ConsumeApi;

/// Why a bench run failed: a message for the user (peers' errors are all different types).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    /// Wraps any error, with what was being done.
    pub fn new(context: &str, error: impl std::fmt::Display) -> Self {
        Self(format!("{context}: {error}"))
    }
}

impl From<ClientError> for BenchError {
    fn from(error: ClientError) -> Self {
        Self(error.to_string())
    }
}

pub type BenchResult<T> = Result<T, BenchError>;

/// A queue service under test.
pub trait Target: Send + Sync + 'static {
    type Producer: Producer;
    type Consumer: Consumer;

    /// A short name for reports (`spool`, `nats`, ...).
    fn name(&self) -> &str;

    /// When this target acknowledges a send: what is on disk, and whether it was synced.
    fn durability(&self) -> String;

    /// The TCP port of the server, to find its process and read its memory.
    fn server_port(&self) -> Option<u16>;

    /// Creates the queues empty (deleting what a previous run left).
    fn setup(
        &self,
        queues: &[String],
        body_bytes: usize,
    ) -> impl Future<Output = BenchResult<()>> + Send;

    /// Deletes the queues.
    fn teardown(&self, queues: &[String]) -> impl Future<Output = BenchResult<()>> + Send;

    /// A producer on `queue`. `connection` numbers the connection to use: producers and
    /// consumers given the same number may share one.
    fn producer(
        &self,
        queue: &str,
        connection: usize,
    ) -> impl Future<Output = BenchResult<Self::Producer>> + Send;

    /// A consumer on `queue`; `connection` as for [`producer`](Self::producer).
    fn consumer(
        &self,
        queue: &str,
        connection: usize,
    ) -> impl Future<Output = BenchResult<Self::Consumer>> + Send;
}

/// Sends batches; returns once the target has acknowledged them.
pub trait Producer: Send + 'static {
    fn send(&mut self, bodies: Vec<Bytes>) -> impl Future<Output = BenchResult<()>> + Send;
}

/// Receives batches and acknowledges (deletes) them.
pub trait Consumer: Send + 'static {
    /// What acknowledges one message (a receipt handle, a delivery tag, a row id).
    type Token: Send + 'static;

    /// Up to `max` messages, waiting up to `wait` for the first; empty when none came.
    fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = BenchResult<Vec<(Bytes, Self::Token)>>> + Send;

    /// Acknowledges received messages, so they are never delivered again. It may return before
    /// the target confirms, as long as `finish` waits for every confirmation.
    fn ack(&mut self, tokens: Vec<Self::Token>) -> impl Future<Output = BenchResult<()>> + Send;

    /// Waits until every acknowledgement sent is confirmed.
    fn finish(&mut self) -> impl Future<Output = BenchResult<()>> + Send {
        async { Ok(()) }
    }
}

/// How long a received message stays invisible in a bench queue: longer than any run, so no
/// message is delivered twice.
pub const BENCH_VISIBILITY_SECONDS: u32 = 600;

/// Spool over gRPC, through [`spool_client::Client`].
pub struct SpoolTarget {
    endpoint: String,
    /// One client (one HTTP/2 connection) per connection number, made on first use.
    connections: Mutex<HashMap<usize, Client>>,
    /// How its consumers take messages.
    consume: ConsumeApi,
    /// The server at `endpoint` keeps its queues in PostgreSQL (`--postgres-url`), not SQLite:
    /// only the report's name and durability differ, the workload is the same.
    on_postgres: bool,
    /// The queues' deduplication window; None: the server's default.
    deduplication_window_seconds: Option<u32>,
}

impl SpoolTarget {
    /// A server on its embedded SQLite database.
    pub fn new(endpoint: &str, consume: ConsumeApi) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            connections: Mutex::new(HashMap::new()),
            consume,
            on_postgres: false,
            deduplication_window_seconds: None,
        }
    }

    /// Creates its queues with this deduplication window (None: the server's default).
    pub fn with_deduplication_window(self, seconds: Option<u32>) -> Self {
        Self {
            deduplication_window_seconds: seconds,
            ..self
        }
    }

    /// A server on PostgreSQL.
    pub fn on_postgres(endpoint: &str, consume: ConsumeApi) -> Self {
        Self {
            on_postgres: true,
            ..Self::new(endpoint, consume)
        }
    }

    /// The client for connection number `connection`.
    pub fn client(&self, connection: usize) -> BenchResult<Client> {
        let mut connections = self
            .connections
            .lock()
            .map_err(|_| BenchError("connection table poisoned".into()))?;
        if let Some(client) = connections.get(&connection) {
            return Ok(client.clone());
        }
        let client = Client::connect_lazy(&self.endpoint, ClientOptions::default())?;
        connections.insert(connection, client.clone());
        Ok(client)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Target for SpoolTarget {
    type Producer = SpoolProducer;
    type Consumer = SpoolConsumer;

    fn name(&self) -> &str {
        if self.on_postgres {
            "spool-postgres"
        } else {
            "spool"
        }
    }

    fn durability(&self) -> String {
        if self.on_postgres {
            "PostgreSQL, synchronous_commit on: a send is acknowledged after its group's \
             transaction commits"
                .into()
        } else {
            "SQLite WAL, synchronous=FULL: a send is acknowledged after its group commit is \
             fsynced"
                .into()
        }
    }

    fn server_port(&self) -> Option<u16> {
        let authority = self.endpoint.split("://").last()?;
        authority
            .split('/')
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    }

    async fn setup(&self, queues: &[String], body_bytes: usize) -> BenchResult<()> {
        let client = self.client(usize::MAX)?;
        let attributes = QueueAttributes {
            visibility_timeout_seconds: Some(BENCH_VISIBILITY_SECONDS),
            max_message_size: Some(body_bytes.clamp(1_024, 1_048_576) as u32),
            deduplication_window_seconds: self.deduplication_window_seconds,
            ..Default::default()
        };
        for queue in queues {
            client
                .delete_queue(queue)
                .await
                .or_else(|error| match error {
                    ClientError::QueueNotFound(_) => Ok(()),
                    error => Err(error),
                })?;
            client.create_queue(queue, attributes.clone()).await?;
        }
        Ok(())
    }

    async fn teardown(&self, queues: &[String]) -> BenchResult<()> {
        let client = self.client(usize::MAX)?;
        for queue in queues {
            client.delete_queue(queue).await?;
        }
        Ok(())
    }

    async fn producer(&self, queue: &str, connection: usize) -> BenchResult<SpoolProducer> {
        Ok(SpoolProducer {
            client: self.client(connection)?,
            queue: queue.to_string(),
        })
    }

    async fn consumer(&self, queue: &str, connection: usize) -> BenchResult<SpoolConsumer> {
        let client = self.client(connection)?;
        let stream = match self.consume {
            ConsumeApi::Receive => None,
            ConsumeApi::Stream => Some(StreamConsumer {
                consumer: client
                    .consume(
                        queue,
                        ConsumeOptions::default()
                            .max_outstanding_messages(STREAM_MAX_OUTSTANDING)
                            .visibility_timeout_seconds(BENCH_VISIBILITY_SECONDS),
                    )
                    .await?,
                answers: FuturesUnordered::new(),
            }),
        };
        Ok(SpoolConsumer {
            deletes: JoinSet::new(),
            client,
            queue: queue.to_string(),
            stream,
        })
    }
}

pub struct SpoolProducer {
    client: Client,
    queue: String,
}

impl Producer for SpoolProducer {
    async fn send(&mut self, mut bodies: Vec<Bytes>) -> BenchResult<()> {
        if bodies.len() == 1 {
            let body = bodies.pop().unwrap_or_default();
            self.client.send_message(&self.queue, body).await?;
        } else {
            self.client.batch_send_messages(&self.queue, bodies).await?;
        }
        Ok(())
    }
}

pub struct SpoolConsumer {
    client: Client,
    queue: String,
    /// Deletes sent and not yet confirmed. A consumer that waited for each durable delete
    /// before its next receive would measure the fsync latency, not the server: like the
    /// peers' consumers (which do not wait for their acks), it keeps a few in flight.
    deletes: JoinSet<BenchResult<()>>,
    /// With `--consume stream`: the consumer stream, instead of receives and deletes.
    stream: Option<StreamConsumer>,
}

/// A consumer stream and the answers to its acknowledgements not yet seen.
pub struct StreamConsumer {
    consumer: spool_client::Consumer,
    answers: FuturesUnordered<BoxFuture<'static, Result<(), ClientError>>>,
}

/// Messages a bench consumer stream may hold unacknowledged (the server's default).
const STREAM_MAX_OUTSTANDING: u32 = 100;

/// Delete batches a Spool consumer keeps in flight.
const DELETES_IN_FLIGHT: usize = 4;

/// What acknowledges one message: a receipt handle, or a delivery of a consumer stream.
pub enum SpoolToken {
    Handle(String),
    Delivery(Box<Delivery>),
}

impl StreamConsumer {
    /// Up to `max` deliveries: waits up to `wait` for the first, then takes what has arrived.
    async fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BenchResult<Vec<(Bytes, SpoolToken)>> {
        let mut received: Vec<Delivery> = Vec::with_capacity(max);
        let first = match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(BenchError("the consumer stream ended".into())),
            Ok(Some(first)) => first?,
        };
        received.push(first);
        while received.len() < max {
            match self.consumer.next().now_or_never() {
                Some(Some(delivery)) => received.push(delivery?),
                _ => break,
            }
        }
        Ok(received
            .into_iter()
            .map(|delivery| {
                (
                    delivery.message().body.clone(),
                    SpoolToken::Delivery(Box::new(delivery)),
                )
            })
            .collect())
    }

    /// Acknowledges on the stream; the answers are checked as they come and in `finish`.
    fn ack(&mut self, deliveries: Vec<Delivery>) -> BenchResult<()> {
        while let Some(Some(answer)) = self.answers.next().now_or_never() {
            answer?;
        }
        for delivery in deliveries {
            self.answers.push(delivery.ack().boxed());
        }
        Ok(())
    }

    async fn finish(&mut self) -> BenchResult<()> {
        while let Some(answer) = self.answers.next().await {
            answer?;
        }
        Ok(())
    }
}

impl Consumer for SpoolConsumer {
    type Token = SpoolToken;

    async fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BenchResult<Vec<(Bytes, SpoolToken)>> {
        if let Some(stream) = &mut self.stream {
            return stream.receive(max, wait).await;
        }
        let options = ReceiveOptions::default()
            .max_messages(max as u32)
            .wait_seconds(wait.as_secs() as u32);
        let messages = self.client.receive(&self.queue, options).await?;
        Ok(messages
            .into_iter()
            .map(|message| (message.body, SpoolToken::Handle(message.receipt_handle)))
            .collect())
    }

    async fn ack(&mut self, tokens: Vec<SpoolToken>) -> BenchResult<()> {
        let mut handles = Vec::with_capacity(tokens.len());
        let mut deliveries = Vec::new();
        for token in tokens {
            match token {
                SpoolToken::Handle(handle) => handles.push(handle),
                SpoolToken::Delivery(delivery) => deliveries.push(*delivery),
            }
        }
        if let Some(stream) = &mut self.stream {
            stream.ack(deliveries)?;
        }
        if handles.is_empty() {
            return Ok(());
        }
        while let Some(done) = self.deletes.try_join_next() {
            confirmed(done)?;
        }
        while self.deletes.len() >= DELETES_IN_FLIGHT {
            if let Some(done) = self.deletes.join_next().await {
                confirmed(done)?;
            }
        }
        let client = self.client.clone();
        let queue = self.queue.clone();
        self.deletes
            .spawn(async move { delete_all(&client, &queue, handles).await });
        Ok(())
    }

    async fn finish(&mut self) -> BenchResult<()> {
        while let Some(done) = self.deletes.join_next().await {
            confirmed(done)?;
        }
        if let Some(stream) = &mut self.stream {
            stream.finish().await?;
        }
        Ok(())
    }
}

fn confirmed(joined: Result<BenchResult<()>, tokio::task::JoinError>) -> BenchResult<()> {
    joined.map_err(|error| BenchError(format!("delete task failed: {error}")))?
}

async fn delete_all(client: &Client, queue: &str, mut handles: Vec<String>) -> BenchResult<()> {
    if handles.len() == 1 {
        let handle = handles.pop().unwrap_or_default();
        client.delete_message(queue, &handle).await?;
    } else if !handles.is_empty() {
        let failures = client.batch_delete_messages(queue, handles).await?;
        if let Some(failure) = failures.first() {
            return Err(BenchError(format!(
                "{} of a batch not deleted: {}",
                failures.len(),
                failure.message
            )));
        }
    }
    Ok(())
}
