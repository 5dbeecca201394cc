//! `spool.v1.QueueService`: each RPC validates its request, calls the registry or a queue
//! handle, and converts the result. One tracing span per call, with the queue's name.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::convert;
use super::deadline::client_budget;
use crate::attributes::{QueueAttributes, check_range, validate_queue_name};
use crate::error::QueueError;
use crate::limits::{
    DEFAULT_PAGE_SIZE, MAX_BATCH, MAX_PAGE_SIZE, MAX_QUEUE_NAME_LEN, POLLING_WAIT_SECONDS,
    VISIBILITY_TIMEOUT_SECONDS,
};
use crate::metrics::{Method, Metrics};
use crate::pb;
use crate::pb::queue_service_server::QueueService;
use crate::queue::{Claimed, Outgoing, QueueHandle, ReceiveRequest};
use crate::receipt::{Indexed, ReceiptHandle};
use crate::registry::Registry;

pub struct QueueServiceImpl {
    /// Filled once the queues are recovered; until then calls are UNAVAILABLE.
    registry: Arc<OnceLock<Arc<Registry>>>,
    metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: open long polls end, empty and OK.
    shutdown: CancellationToken,
}

impl QueueServiceImpl {
    pub fn new(
        registry: Arc<OnceLock<Arc<Registry>>>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry,
            metrics,
            shutdown,
        }
    }

    fn observe<T>(&self, method: Method, started: Instant, result: &RpcResult<T>) {
        let code = match result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.observe_rpc(method, code, started.elapsed());
    }

    fn registry(&self) -> Result<&Arc<Registry>, QueueError> {
        self.registry.get().ok_or(QueueError::Starting)
    }

    fn queue(&self, name: &str) -> Result<QueueHandle, QueueError> {
        validate_queue_name(name)?;
        self.registry()?.get(name)
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn batch_size(field: &str, len: usize) -> Result<(), QueueError> {
    if len == 0 || len > MAX_BATCH {
        let error = format!("{field} has {len} items; it must have 1..={MAX_BATCH}");
        return Err(if len > MAX_BATCH {
            QueueError::TooLarge(error)
        } else {
            QueueError::InvalidArgument(error)
        });
    }
    Ok(())
}

fn non_empty_body(field: &str, body: &[u8]) -> Result<(), QueueError> {
    if body.is_empty() {
        return Err(QueueError::InvalidArgument(format!(
            "{field} is empty; a message body has 1..=max_message_size bytes"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl QueueService for QueueServiceImpl {
    #[tracing::instrument(name = "CreateQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn create_queue(&self, request: Request<pb::CreateQueueRequest>) -> RpcResult<pb::Queue> {
        let started = Instant::now();
        let result: RpcResult<pb::Queue> = async {
            let request = request.into_inner();
            validate_queue_name(&request.queue_name)?;
            let attributes =
                QueueAttributes::default().patched(&convert::patch(request.attributes))?;
            let info = self
                .registry()?
                .create(&request.queue_name, attributes)
                .await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        self.observe(Method::CREATE_QUEUE, started, &result);
        result
    }

    #[tracing::instrument(name = "GetQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn get_queue(&self, request: Request<pb::GetQueueRequest>) -> RpcResult<pb::Queue> {
        let started = Instant::now();
        let result: RpcResult<pb::Queue> = async {
            let info = self.queue(&request.get_ref().queue_name)?.info().await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        self.observe(Method::GET_QUEUE, started, &result);
        result
    }

    #[tracing::instrument(name = "UpdateQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn update_queue(&self, request: Request<pb::UpdateQueueRequest>) -> RpcResult<pb::Queue> {
        let started = Instant::now();
        let result: RpcResult<pb::Queue> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            let info = handle.update(convert::patch(request.attributes)).await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        self.observe(Method::UPDATE_QUEUE, started, &result);
        result
    }

    #[tracing::instrument(name = "DeleteQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn delete_queue(&self, request: Request<pb::DeleteQueueRequest>) -> RpcResult<()> {
        let started = Instant::now();
        let result: RpcResult<()> = async {
            let name = &request.get_ref().queue_name;
            validate_queue_name(name)?;
            self.registry()?.delete(name).await?;
            Ok(Response::new(()))
        }
        .await;
        self.observe(Method::DELETE_QUEUE, started, &result);
        result
    }

    #[tracing::instrument(name = "ListQueues", skip_all, fields(prefix = %request.get_ref().prefix))]
    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> RpcResult<pb::ListQueuesResponse> {
        let started = Instant::now();
        let result: RpcResult<pb::ListQueuesResponse> = async {
            let request = request.into_inner();
            if request.prefix.len() > MAX_QUEUE_NAME_LEN {
                return Err(QueueError::InvalidArgument(format!(
                    "prefix is {} bytes long; it must be at most {MAX_QUEUE_NAME_LEN}",
                    request.prefix.len()
                ))
                .into());
            }
            let page_size = match request.page_size as usize {
                0 => DEFAULT_PAGE_SIZE,
                size => {
                    check_range("page_size", size, &(1..=MAX_PAGE_SIZE))?;
                    size
                }
            };
            let after = if request.page_token.is_empty() {
                None
            } else {
                validate_queue_name(&request.page_token).map_err(|_| {
                    QueueError::InvalidArgument(
                        "page_token is not a next_page_token returned by ListQueues".into(),
                    )
                })?;
                Some(request.page_token.as_str())
            };
            let page = self
                .registry()?
                .list(&request.prefix, after, page_size)
                .await?;
            Ok(Response::new(pb::ListQueuesResponse {
                queues: page.queues.into_iter().map(convert::queue).collect(),
                next_page_token: page.next_after.unwrap_or_default(),
                total_count: page.total_count,
            }))
        }
        .await;
        self.observe(Method::LIST_QUEUES, started, &result);
        result
    }

    #[tracing::instrument(name = "RewindQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn rewind_queue(
        &self,
        request: Request<pb::RewindQueueRequest>,
    ) -> RpcResult<pb::RewindQueueResponse> {
        let started = Instant::now();
        let result: RpcResult<pb::RewindQueueResponse> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            let start_time = request
                .start_time
                .ok_or_else(|| QueueError::InvalidArgument("start_time is required".to_string()))?;
            let start_ms = convert::millis(&start_time, "start_time")?;
            let restored_messages = handle.rewind(start_ms).await?;
            Ok(Response::new(pb::RewindQueueResponse { restored_messages }))
        }
        .await;
        self.observe(Method::REWIND_QUEUE, started, &result);
        result
    }

    #[tracing::instrument(name = "SendMessage", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> RpcResult<pb::SendMessageResponse> {
        let started = Instant::now();
        let result: RpcResult<pb::SendMessageResponse> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            non_empty_body("body", &request.body)?;
            let ids = handle
                .send(vec![Outgoing {
                    body: request.body,
                    delay_seconds: request.delay_seconds.unwrap_or(0),
                }])
                .await?;
            Ok(Response::new(pb::SendMessageResponse {
                message_id: ids.first().map(u64::to_string).unwrap_or_default(),
            }))
        }
        .await;
        self.observe(Method::SEND_MESSAGE, started, &result);
        result
    }

    #[tracing::instrument(name = "BatchSendMessages", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn batch_send_messages(
        &self,
        request: Request<pb::BatchSendMessagesRequest>,
    ) -> RpcResult<pb::BatchSendMessagesResponse> {
        let started = Instant::now();
        let result: RpcResult<pb::BatchSendMessagesResponse> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            batch_size("entries", request.entries.len())?;
            let mut messages = Vec::with_capacity(request.entries.len());
            for (index, entry) in request.entries.into_iter().enumerate() {
                non_empty_body(&format!("entries[{index}].body"), &entry.body)?;
                messages.push(Outgoing {
                    body: entry.body,
                    delay_seconds: entry.delay_seconds.unwrap_or(0),
                });
            }
            let ids = handle.send(messages).await?;
            Ok(Response::new(pb::BatchSendMessagesResponse {
                message_ids: ids.iter().map(u64::to_string).collect(),
            }))
        }
        .await;
        self.observe(Method::BATCH_SEND_MESSAGES, started, &result);
        result
    }

    type ReceiveMessagesStream = ReceiveStream;

    #[tracing::instrument(name = "ReceiveMessages", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> RpcResult<Self::ReceiveMessagesStream> {
        let started = Instant::now();
        let result: RpcResult<Self::ReceiveMessagesStream> = async {
            let budget = client_budget(request.metadata());
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            let max_messages = match request.max_messages as usize {
                0 => 1,
                max => {
                    check_range("max_messages", max, &(1..=MAX_BATCH))?;
                    max
                }
            };
            if let Some(wait) = request.wait_seconds {
                check_range("wait_seconds", wait, &POLLING_WAIT_SECONDS)?;
            }
            if let Some(visibility) = request.visibility_timeout_seconds {
                check_range(
                    "visibility_timeout_seconds",
                    visibility,
                    &VISIBILITY_TIMEOUT_SECONDS,
                )?;
            }
            // Registering with the actor before returning keeps waiters in the order of arrival.
            let reply = handle
                .receive(ReceiveRequest {
                    max_messages,
                    wait_seconds: request.wait_seconds,
                    visibility_timeout_seconds: request.visibility_timeout_seconds,
                })
                .await?;
            let (stream, output) = mpsc::channel(MAX_BATCH);
            let delivery = Delivery {
                handle,
                registry: self.registry()?.clone(),
                metrics: self.metrics.clone(),
                started,
                stream,
                client_deadline: budget.map(|budget| Instant::now() + budget),
                shutdown: self.shutdown.clone(),
            };
            tokio::spawn(delivery.run(reply).in_current_span());
            let output: ReceiveStream = Box::pin(ReceiverStream::new(output).map(|item| *item));
            Ok(Response::new(output))
        }
        .await;
        // A stream that starts is measured when it ends (see Delivery).
        if let Err(status) = &result {
            self.metrics
                .observe_rpc(Method::RECEIVE_MESSAGES, status.code(), started.elapsed());
        }
        result
    }

    #[tracing::instrument(name = "DeleteMessage", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn delete_message(&self, request: Request<pb::DeleteMessageRequest>) -> RpcResult<()> {
        let started = Instant::now();
        let result: RpcResult<()> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            let receipt = ReceiptHandle::parse(&request.receipt_handle, &"receipt_handle")?;
            let mut results = handle.delete_messages(vec![receipt]).await?;
            results.pop().unwrap_or(Ok(()))?;
            Ok(Response::new(()))
        }
        .await;
        self.observe(Method::DELETE_MESSAGE, started, &result);
        result
    }

    #[tracing::instrument(name = "BatchDeleteMessages", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn batch_delete_messages(
        &self,
        request: Request<pb::BatchDeleteMessagesRequest>,
    ) -> RpcResult<pb::BatchDeleteMessagesResponse> {
        let started = Instant::now();
        let result: RpcResult<pb::BatchDeleteMessagesResponse> = async {
            let request = request.into_inner();
            let handle = self.queue(&request.queue_name)?;
            batch_size("receipt_handles", request.receipt_handles.len())?;
            let mut failures = Vec::new();
            let mut parsed = Vec::with_capacity(request.receipt_handles.len());
            let mut positions = Vec::with_capacity(request.receipt_handles.len());
            for (index, text) in request.receipt_handles.iter().enumerate() {
                match ReceiptHandle::parse(text, &Indexed("receipt_handles", index)) {
                    Ok(receipt) => {
                        parsed.push(receipt);
                        positions.push(index);
                    }
                    Err(error) => failures.push((index, error)),
                }
            }
            if !parsed.is_empty() {
                let results = handle.delete_messages(parsed).await?;
                for (index, result) in positions.into_iter().zip(results) {
                    if let Err(error) = result {
                        failures.push((index, error));
                    }
                }
            }
            failures.sort_by_key(|(index, _)| *index);
            let failures = failures
                .into_iter()
                .map(|(index, error)| pb::DeleteFailure {
                    receipt_handle: request.receipt_handles[index].clone(),
                    code: super::status::code_of(&error) as i32,
                    message: error.to_string(),
                    cmq_code: error.cmq_code(),
                })
                .collect();
            Ok(Response::new(pb::BatchDeleteMessagesResponse { failures }))
        }
        .await;
        self.observe(Method::BATCH_DELETE_MESSAGES, started, &result);
        result
    }
}

/// The life of one ReceiveMessages stream after the handler has returned: wait for the actor's
/// reply (or the client's deadline, the client leaving, shutdown), read the bodies and stream
/// the messages. Whatever cannot be delivered goes back to visible at once.
struct Delivery {
    handle: QueueHandle,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// When the call arrived, for its latency.
    started: Instant,
    stream: mpsc::Sender<StreamItem>,
    client_deadline: Option<Instant>,
    shutdown: CancellationToken,
}

/// One item of a ReceiveMessages stream, boxed: tokio's mpsc allocates its slots 32 at a time,
/// and an unboxed item (a message or a Status) is ~200 bytes, so every parked long poll held a
/// ~6 KiB block it never filled. Boxed, the block is 256 bytes.
type StreamItem = Box<Result<pb::ReceivedMessage, Status>>;

/// The response stream of ReceiveMessages.
pub type ReceiveStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReceivedMessage, Status>> + Send>>;

type Reply = oneshot::Receiver<Result<Vec<Claimed>, QueueError>>;

impl Delivery {
    async fn run(self, reply: Reply) {
        let metrics = self.metrics.clone();
        let started = self.started;
        let code = self.serve(reply).await;
        metrics.observe_rpc(Method::RECEIVE_MESSAGES, code, started.elapsed());
    }

    /// Returns the stream's outcome, for metrics.
    async fn serve(self, mut reply: Reply) -> Code {
        let deadline = self
            .client_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let outcome = tokio::select! {
            outcome = &mut reply => outcome,
            () = self.stream.closed() => {
                self.withdraw(reply).await;
                return Code::Cancelled;
            }
            () = sleep_until(deadline) => {
                self.withdraw(reply).await;
                return Code::Ok;
            }
            () = self.shutdown.cancelled() => {
                self.withdraw(reply).await;
                return Code::Ok;
            }
        };
        let error = match outcome {
            Ok(Ok(claimed)) if claimed.is_empty() => return Code::Ok, // no message: ends OK
            Ok(Ok(claimed)) => return self.deliver(claimed).await,
            Ok(Err(error)) => error,
            // The actor ended without answering: its queue was deleted.
            Err(_) => QueueError::QueueNotFound(self.handle.name().to_string()),
        };
        let status = Status::from(error);
        let code = status.code();
        let _ = self.stream.send(Box::new(Err(status))).await;
        code
    }

    /// Gives up waiting; if the actor answered meanwhile, its messages go back.
    async fn withdraw(&self, mut reply: Reply) {
        reply.close();
        if let Ok(Ok(claimed)) = reply.try_recv() {
            self.release(&claimed).await;
        }
    }

    async fn release(&self, claimed: &[Claimed]) {
        if !claimed.is_empty() {
            let handles = claimed.iter().map(|c| c.handle).collect();
            self.handle.release(handles).await;
        }
    }

    async fn deliver(self, mut claimed: Vec<Claimed>) -> Code {
        let mut bodies = match self.read_missing_bodies(&claimed).await {
            Ok(bodies) => bodies,
            Err(status) => {
                self.release(&claimed).await;
                let code = status.code();
                let _ = self.stream.send(Box::new(Err(status))).await;
                return code;
            }
        };
        for index in 0..claimed.len() {
            let message = &mut claimed[index];
            // A body that is gone belongs to a message that expired a moment ago: skip it.
            let Some(body) = message.body.take().or_else(|| bodies.remove(&message.id)) else {
                continue;
            };
            if self
                .stream
                .send(Box::new(Ok(convert::received(message, body))))
                .await
                .is_err()
            {
                self.release(&claimed[index..]).await;
                return Code::Cancelled;
            }
        }
        Code::Ok
    }

    /// Reads from storage the bodies the queue no longer had in memory (none, usually, for a
    /// message's first receive).
    async fn read_missing_bodies(
        &self,
        claimed: &[Claimed],
    ) -> Result<HashMap<u64, bytes::Bytes>, Status> {
        let missing: Vec<u64> = claimed
            .iter()
            .filter(|message| message.body.is_none())
            .map(|message| message.id)
            .collect();
        if missing.is_empty() {
            return Ok(HashMap::new());
        }
        let (read, bodies) = oneshot::channel();
        self.registry.storage().read_bodies(missing, read);
        match bodies.await {
            Ok(Ok(bodies)) => Ok(bodies.into_iter().collect()),
            Ok(Err(error)) => Err(QueueError::from(error).into()),
            Err(_) => Err(QueueError::ShuttingDown.into()),
        }
    }
}
