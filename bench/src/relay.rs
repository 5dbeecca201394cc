//! The transport ceiling: a gRPC server of Spool's own `spool.v1.QueueService` (the same
//! generated code, codec and HTTP/2 stack) that stores nothing. A send's bodies go into an
//! in-memory list, a receive takes them back out (waiting for one like a long poll), a delete
//! is answered at once. No actor, no disk, no fsync.
//!
//! Driven by Spool's own client with the same workload, it measures what the gRPC calls alone
//! cost on this machine: the most any server behind this API could reach here. Spool's figure
//! over the relay's is the share of that ceiling Spool reaches; the rest is Spool's own work.
//!
//! With a log (`spool-bench --targets durable-relay`), it is the durable ceiling instead: every
//! send and delete is appended to a file and synced, with group commit, before it is answered
//! (see `append_log`). That is the least a durable queue must do, so it measures the most a
//! durable server of this API could reach here, and how much of the ceiling the sync alone
//! takes.
//!
//! It runs in a child process (`spool-bench --serve-relay`), so that, as with the real
//! server, client and server are separate processes sharing the machine's cores.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::Stream;
use spool_client::pb;
use spool_client::pb::queue_service_server::{QueueService, QueueServiceServer};
use tokio::sync::Notify;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::append_log::{self, AppendLog};

/// Serves the relay on `listen` (port 0: any free port) and prints `listening on ADDR` on
/// stdout once it accepts calls; runs until the process is killed. With `log` (a file that must
/// not exist), sends and deletes are answered once appended to it and synced.
pub async fn serve(listen: &str, log: Option<&Path>) -> anyhow::Result<()> {
    let relay = Relay {
        log: log
            .map(|path| {
                AppendLog::create(path, append_log::RING_BYTES)
                    .map(Arc::new)
                    .with_context(|| format!("create {}", path.display()))
            })
            .transpose()?,
        ..Relay::default()
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let address = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    println!("listening on {address}");
    std::io::stdout().flush()?;
    tonic::transport::Server::builder()
        .add_service(QueueServiceServer::new(relay))
        .serve_with_incoming(incoming)
        .await
        .context("serve the relay")
}

/// The bodies sent to one queue and not yet received.
#[derive(Default)]
struct Pending {
    bodies: Mutex<VecDeque<Bytes>>,
    /// Woken when bodies are added, for receives waiting on an empty list.
    arrived: Notify,
}

impl Pending {
    fn push(&self, bodies: impl IntoIterator<Item = Bytes>) {
        self.bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(bodies);
        self.arrived.notify_waiters();
    }

    fn take(&self, max: usize) -> Vec<Bytes> {
        let mut bodies = self
            .bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = max.min(bodies.len());
        bodies.drain(..count).collect()
    }

    /// Up to `max` bodies, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Vec<Bytes> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a push between the look and the wait still wakes us.
            let arrived = self.arrived.notified();
            let taken = self.take(max);
            if !taken.is_empty() {
                return taken;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Vec::new();
            }
        }
    }
}

#[derive(Default)]
struct Relay {
    queues: Mutex<HashMap<String, Arc<Pending>>>,
    next_id: AtomicU64,
    /// The durable relay's log; `None` for the transport ceiling.
    log: Option<Arc<AppendLog>>,
}

impl Relay {
    fn queue(&self, name: &str) -> Result<Arc<Pending>, Status> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("queue {name:?} does not exist")))
    }

    /// `count` fresh message ids.
    fn ids(&self, count: usize) -> std::ops::Range<u64> {
        let first = self.next_id.fetch_add(count as u64, Ordering::Relaxed);
        first..first + count as u64
    }

    /// Returns once `record()` is on disk, when the relay has a log.
    async fn persist(&self, record: impl FnOnce() -> Vec<u8>) -> Result<(), Status> {
        match &self.log {
            Some(log) => log.append(record()).await,
            None => Ok(()),
        }
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

type ReceiveStream = Pin<Box<dyn Stream<Item = Result<pb::ReceivedMessage, Status>> + Send>>;

#[tonic::async_trait]
impl QueueService for Relay {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let name = request.into_inner().queue_name;
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.clone())
            .or_default();
        Ok(Response::new(pb::Queue {
            name,
            create_time: Some(now()),
            update_time: Some(now()),
            ..Default::default()
        }))
    }

    async fn get_queue(
        &self,
        _request: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn update_queue(
        &self,
        _request: Request<pb::UpdateQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<()>, Status> {
        // Deleting a queue that is not there succeeds: a bench run starts by clearing its
        // queues, and the relay has no error details for the client to recognise NOT_FOUND by.
        let name = request.into_inner().queue_name;
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&name);
        Ok(Response::new(()))
    }

    async fn list_queues(
        &self,
        _request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn rewind_queue(
        &self,
        _request: Request<pb::RewindQueueRequest>,
    ) -> Result<Response<pb::RewindQueueResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn purge_queue(
        &self,
        _request: Request<pb::PurgeQueueRequest>,
    ) -> Result<Response<pb::PurgeQueueResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn peek_messages(
        &self,
        _request: Request<pb::PeekMessagesRequest>,
    ) -> Result<Response<pb::PeekMessagesResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn list_dead_letter_source_queues(
        &self,
        _request: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> Result<Response<pb::ListDeadLetterSourceQueuesResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn redrive_messages(
        &self,
        _request: Request<pb::RedriveMessagesRequest>,
    ) -> Result<Response<pb::RedriveMessagesResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn create_topic(
        &self,
        _request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::Topic>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn get_topic(
        &self,
        _request: Request<pb::GetTopicRequest>,
    ) -> Result<Response<pb::Topic>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn update_topic(
        &self,
        _request: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::Topic>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn delete_topic(
        &self,
        _request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn unsubscribe(
        &self,
        _request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn publish_message(
        &self,
        _request: Request<pb::PublishMessageRequest>,
    ) -> Result<Response<pb::PublishMessageResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn batch_publish_messages(
        &self,
        _request: Request<pb::BatchPublishMessagesRequest>,
    ) -> Result<Response<pb::BatchPublishMessagesResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn change_message_visibility(
        &self,
        _request: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> Result<Response<pb::ChangeMessageVisibilityResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn batch_change_message_visibility(
        &self,
        _request: Request<pb::BatchChangeMessageVisibilityRequest>,
    ) -> Result<Response<pb::BatchChangeMessageVisibilityResponse>, Status> {
        Err(Status::unimplemented("the relay only relays messages"))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue_name)?;
        let id = self.ids(1).start;
        let body = [request.body];
        self.persist(|| append_log::sent(id, &body)).await?;
        queue.push(body);
        Ok(Response::new(pb::SendMessageResponse {
            message_id: id.to_string(),
        }))
    }

    async fn batch_send_messages(
        &self,
        request: Request<pb::BatchSendMessagesRequest>,
    ) -> Result<Response<pb::BatchSendMessagesResponse>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue_name)?;
        let ids = self.ids(request.entries.len());
        let bodies: Vec<Bytes> = request
            .entries
            .into_iter()
            .map(|entry| entry.body)
            .collect();
        self.persist(|| append_log::sent(ids.start, &bodies))
            .await?;
        queue.push(bodies);
        Ok(Response::new(pb::BatchSendMessagesResponse {
            message_ids: ids.map(|id| id.to_string()).collect(),
        }))
    }

    type ReceiveMessagesStream = ReceiveStream;

    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> Result<Response<ReceiveStream>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue_name)?;
        let wait = Duration::from_secs(request.wait_seconds.unwrap_or(0).into());
        let bodies = queue
            .receive(request.max_messages.max(1) as usize, wait)
            .await;
        let ids = self.ids(bodies.len());
        let received: Vec<Result<pb::ReceivedMessage, Status>> = bodies
            .into_iter()
            .zip(ids)
            .map(|(body, id)| Ok(received(id, body)))
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            received,
        ))))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<()>, Status> {
        let handle = request.into_inner().receipt_handle;
        self.persist(|| append_log::deleted([handle.as_str()]))
            .await?;
        Ok(Response::new(()))
    }

    async fn batch_delete_messages(
        &self,
        request: Request<pb::BatchDeleteMessagesRequest>,
    ) -> Result<Response<pb::BatchDeleteMessagesResponse>, Status> {
        let handles = request.into_inner().receipt_handles;
        self.persist(|| append_log::deleted(handles.iter().map(String::as_str)))
            .await?;
        Ok(Response::new(pb::BatchDeleteMessagesResponse::default()))
    }

    type StreamMessagesStream = ConsumeStream;

    /// The consumer stream as cheaply as it can be served: pushes while fewer than
    /// `max_outstanding_messages` are unacknowledged, answers each acknowledgement once it is
    /// persisted (with a log), in order, with up to [`MAX_PENDING_ACKNOWLEDGEMENTS`] being
    /// persisted at once while it goes on pushing (as Spool's stream does). A task per stream
    /// feeds a channel.
    async fn stream_messages(
        &self,
        request: Request<tonic::Streaming<pb::StreamMessagesRequest>>,
    ) -> Result<Response<ConsumeStream>, Status> {
        use pb::stream_messages_request::Kind;
        let mut requests = request.into_inner();
        let Some(Kind::Start(start)) = requests.message().await?.and_then(|r| r.kind) else {
            return Err(Status::invalid_argument(
                "the first request must be a start",
            ));
        };
        let queue = self.queue(&start.queue_name)?;
        let max_outstanding = match start.max_outstanding_messages {
            0 => 100,
            max => max as usize,
        };
        let log = self.log.clone();
        let next_id = self.next_id.fetch_add(1 << 40, Ordering::Relaxed);
        let (responses, output) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut outstanding = 0usize;
            let mut ids = next_id..;
            // Acknowledgements being persisted, answered in order; as Spool's stream does, it
            // goes on pushing and reading meanwhile, up to as many at once as Spool allows.
            let mut acknowledging = futures_util::stream::FuturesOrdered::new();
            loop {
                let free = max_outstanding.saturating_sub(outstanding).min(16);
                let pushed = async {
                    if free == 0 {
                        std::future::pending::<Vec<Bytes>>().await
                    } else {
                        queue.receive(free, Duration::from_secs(3_600)).await
                    }
                };
                let reading = acknowledging.len() < MAX_PENDING_ACKNOWLEDGEMENTS;
                tokio::select! {
                    request = requests.message(), if reading => {
                        let Ok(Some(pb::StreamMessagesRequest {
                            kind: Some(Kind::Acknowledge(acknowledge)),
                        })) = request
                        else {
                            return;
                        };
                        let log = log.clone();
                        acknowledging.push_back(async move {
                            let handles = &acknowledge.receipt_handles;
                            if let Some(log) = &log {
                                let record = append_log::deleted(handles.iter().map(String::as_str));
                                log.append(record).await?;
                            }
                            Ok::<_, Status>((acknowledge.ack_id, handles.len()))
                        });
                    }
                    Some(persisted) = acknowledging.next() => {
                        let Ok((ack_id, count)) = persisted else {
                            return;
                        };
                        outstanding = outstanding.saturating_sub(count);
                        let answer = pb::stream_messages_response::Kind::Acknowledged(
                            pb::StreamAcknowledged { ack_id, failures: Vec::new() },
                        );
                        if responses.send(Ok(pb::StreamMessagesResponse { kind: Some(answer) })).await.is_err() {
                            return;
                        }
                    }
                    bodies = pushed => {
                        for body in bodies {
                            let id = ids.next().unwrap_or_default();
                            outstanding += 1;
                            let message = pb::stream_messages_response::Kind::Message(received(id, body));
                            if responses.send(Ok(pb::StreamMessagesResponse { kind: Some(message) })).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let output = futures_util::stream::unfold(output, |mut output| async move {
            output.recv().await.map(|response| (response, output))
        });
        Ok(Response::new(Box::pin(output)))
    }
}

/// Acknowledgements of one stream persisted at once, as Spool's
/// (`queue::consuming::MAX_PENDING_ACKNOWLEDGEMENTS`): beyond them the stream stops reading.
const MAX_PENDING_ACKNOWLEDGEMENTS: usize = 8;

type ConsumeStream = Pin<Box<dyn Stream<Item = Result<pb::StreamMessagesResponse, Status>> + Send>>;

/// A message as Spool fills it, of the same sizes (a receipt handle is 55 characters: 41 bytes
/// in base64url).
fn received(id: u64, body: Bytes) -> pb::ReceivedMessage {
    pb::ReceivedMessage {
        receipt_handle: format!("{id:055x}"),
        message_id: id.to_string(),
        body,
        enqueue_time: Some(now()),
        first_dequeue_time: Some(now()),
        next_visible_time: Some(now()),
        dequeue_count: 1,
        ..Default::default()
    }
}

/// A relay server in a child process of this binary, killed when dropped (and its log
/// removed).
pub struct RelayProcess {
    child: std::process::Child,
    endpoint: String,
    log_dir: Option<PathBuf>,
}

impl RelayProcess {
    /// The transport ceiling, or with `log_parent` the durable ceiling, its log in a new
    /// directory there (put it on the disk the server under test uses).
    pub fn start(log_parent: Option<&Path>) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.args(["--serve-relay", "127.0.0.1:0"]);
        let log_dir =
            log_parent.map(|parent| parent.join(format!("spool-relay-log-{}", std::process::id())));
        if let Some(dir) = &log_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            command.arg("--relay-log").arg(dir.join("log"));
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("start the relay process")?;
        let stdout = child.stdout.take().context("the relay's stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the relay said {line:?}, not its address"))?;
        Ok(Self {
            endpoint: format!("http://{address}"),
            child,
            log_dir,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.log_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
