//! `spool.v1.QueueService`: each RPC validates its request, checks that its caller may do it
//! on the queue it names, calls the registry or a queue handle, and converts the result. One
//! tracing span per call, with the queue's name.
//!
//! The grant is checked after the queue name is validated (a malformed name cannot exist, and
//! is not logged whole) and before the queue is looked up, so PERMISSION_DENIED says nothing
//! about whether the queue exists.

use std::sync::{Arc, OnceLock};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::consume_stream::{ConsumeStream, ConsumerRequests, StreamMessagesStream};
use super::convert;
use super::deadline::client_budget;
use super::receive_stream::{ReceiveLimits, ReceiveStream, Received};
use crate::attributes::{QueueAttributes, check_range, validate_queue_name};
use crate::auth::{Action, Caller};
use crate::disk::DiskGuard;
use crate::error::QueueError;
use crate::limits::{
    CHANGE_VISIBILITY_SECONDS, DEFAULT_MAX_OUTSTANDING_MESSAGES, DEFAULT_PAGE_SIZE, MAX_BATCH,
    MAX_OUTSTANDING_MESSAGES, MAX_PAGE_SIZE, MAX_QUEUE_NAME_LEN, MAX_REDRIVE_MESSAGES,
    POLLING_WAIT_SECONDS, VISIBILITY_TIMEOUT_SECONDS, check_queue_name,
};
use crate::logsafe::Shown;
use crate::otel::SendTrace;
use crate::pb;
use crate::pb::queue_service_server::QueueService;
use crate::queue::{
    ConsumeSettings, DeleteTarget, HandlePlace, QueueHandle, ReceiveRequest, VisibilityTarget,
};
use crate::receipt::{Indexed, IndexedField};
use crate::registry::Registry;

pub struct QueueServiceImpl {
    /// Filled once the queues are recovered; until then calls are UNAVAILABLE.
    registry: Arc<OnceLock<Arc<Registry>>>,
    /// Cancelled when the server shuts down: open long polls end, empty and OK.
    shutdown: CancellationToken,
    /// Open receives and the bytes their streams hold, bounded server-wide.
    receive_limits: ReceiveLimits,
    /// Refuses sends while the disk is short of space (`--min-free-disk-bytes`,
    /// `--max-database-bytes`).
    disk: Arc<DiskGuard>,
}

impl QueueServiceImpl {
    pub fn new(
        registry: Arc<OnceLock<Arc<Registry>>>,
        shutdown: CancellationToken,
        receive_limits: ReceiveLimits,
        disk: Arc<DiskGuard>,
    ) -> Self {
        Self {
            registry,
            shutdown,
            receive_limits,
            disk,
        }
    }

    fn registry(&self) -> Result<&Arc<Registry>, QueueError> {
        self.registry.get().ok_or(QueueError::Starting)
    }

    /// The registry, for the topic RPCs (`topics`).
    pub(super) fn registry_ref(&self) -> Result<&Arc<Registry>, QueueError> {
        self.registry()
    }

    /// Refuses writes while the disk is short of space (the topic RPCs' publishes too).
    pub(super) fn disk_check(&self) -> Result<(), QueueError> {
        self.disk.check()
    }

    /// The queue `name`, once the caller is known to be allowed `action` on it.
    fn queue(
        &self,
        caller: &Caller,
        action: Action,
        name: &str,
    ) -> Result<QueueHandle, QueueError> {
        validate_queue_name(name)?;
        caller.authorize(action, name)?;
        self.registry()?.get(name)
    }
}

pub(super) type RpcResult<T> = Result<Response<T>, Status>;

pub(super) fn batch_size(field: &str, len: usize) -> Result<(), QueueError> {
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

/// Runs a change that commits to storage and then updates memory (creating or deleting a queue,
/// a topic or a subscription) in a task of its own: a caller that goes away meanwhile (a closed
/// connection, a deadline passed) drops the handler's future, which must not cut the change off
/// between its commit and its update of memory, or memory would disagree with storage (a queue
/// stored but not served, and not creatable again) until a restart.
pub(super) async fn run_whole<T: Send + 'static>(
    change: impl Future<Output = Result<T, QueueError>> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::spawn(change).await.unwrap_or_else(|error| {
        Err(QueueError::Storage(format!(
            "the change's task failed: {error}"
        )))
    })
}

#[tonic::async_trait]
impl QueueService for QueueServiceImpl {
    #[tracing::instrument(name = "CreateQueue", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn create_queue(&self, request: Request<pb::CreateQueueRequest>) -> RpcResult<pb::Queue> {
        let result: RpcResult<pb::Queue> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            validate_queue_name(&request.queue_name)?;
            caller.authorize(Action::Admin, &request.queue_name)?;
            let attributes =
                QueueAttributes::default().patched(&convert::patch(request.attributes))?;
            let registry = self.registry()?.clone();
            let name = request.queue_name;
            let info = run_whole(async move { registry.create(&name, attributes).await }).await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "GetQueue", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn get_queue(&self, request: Request<pb::GetQueueRequest>) -> RpcResult<pb::Queue> {
        let result: RpcResult<pb::Queue> = async {
            let name = &request.get_ref().queue_name;
            validate_queue_name(name)?;
            caller(&request)?.authorize_any(name)?;
            let info = self.registry()?.get(name)?.info().await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "UpdateQueue", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn update_queue(&self, request: Request<pb::UpdateQueueRequest>) -> RpcResult<pb::Queue> {
        let result: RpcResult<pb::Queue> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            self.queue(&caller, Action::Admin, &request.queue_name)?;
            let registry = self.registry()?.clone();
            let (name, patch) = (request.queue_name, convert::patch(request.attributes));
            let info = run_whole(async move { registry.update(&name, patch).await }).await?;
            Ok(Response::new(convert::queue(info)))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "DeleteQueue", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn delete_queue(&self, request: Request<pb::DeleteQueueRequest>) -> RpcResult<()> {
        let result: RpcResult<()> = async {
            let name = &request.get_ref().queue_name;
            validate_queue_name(name)?;
            caller(&request)?.authorize(Action::Admin, name)?;
            let registry = self.registry()?.clone();
            let name = name.clone();
            run_whole(async move { registry.delete(&name).await }).await?;
            Ok(Response::new(()))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "ListQueues", skip_all, fields(prefix = %Shown(&request.get_ref().prefix)))]
    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> RpcResult<pb::ListQueuesResponse> {
        let result: RpcResult<pb::ListQueuesResponse> = async {
            let caller = caller(&request)?;
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
                .list(&request.prefix, after, page_size, |name| caller.sees(name))
                .await?;
            Ok(Response::new(pb::ListQueuesResponse {
                queues: page.queues.into_iter().map(convert::queue).collect(),
                next_page_token: page.next_after.unwrap_or_default(),
                total_count: page.total_count,
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "RewindQueue", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn rewind_queue(
        &self,
        request: Request<pb::RewindQueueRequest>,
    ) -> RpcResult<pb::RewindQueueResponse> {
        let result: RpcResult<pb::RewindQueueResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Admin, &request.queue_name)?;
            let start_time = request
                .start_time
                .ok_or_else(|| QueueError::InvalidArgument("start_time is required".to_string()))?;
            let start_ms = convert::millis(&start_time, "start_time")?;
            let restored_messages = handle.rewind(start_ms).await?;
            Ok(Response::new(pb::RewindQueueResponse { restored_messages }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "SendMessage", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> RpcResult<pb::SendMessageResponse> {
        let result: RpcResult<pb::SendMessageResponse> = async {
            let caller = caller(&request)?;
            let trace = request.extensions().get::<SendTrace>().copied();
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Send, &request.queue_name)?;
            self.disk.check()?;
            let mut message = convert::outgoing(
                "",
                request.body,
                request.delay_seconds,
                request.attributes,
                request.deduplication_id,
            )?;
            if let Some(trace) = trace {
                message.payload = message.payload.with_trace_parent(trace.header());
            }
            let ids = handle.send(vec![message]).await?;
            Ok(Response::new(pb::SendMessageResponse {
                message_id: ids.first().map(u64::to_string).unwrap_or_default(),
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "BatchSendMessages", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn batch_send_messages(
        &self,
        request: Request<pb::BatchSendMessagesRequest>,
    ) -> RpcResult<pb::BatchSendMessagesResponse> {
        let result: RpcResult<pb::BatchSendMessagesResponse> = async {
            let caller = caller(&request)?;
            let trace = request.extensions().get::<SendTrace>().copied();
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Send, &request.queue_name)?;
            self.disk.check()?;
            batch_size("entries", request.entries.len())?;
            let mut messages = Vec::with_capacity(request.entries.len());
            for (index, entry) in request.entries.into_iter().enumerate() {
                let mut message = convert::outgoing(
                    &format!("entries[{index}]."),
                    entry.body,
                    entry.delay_seconds,
                    entry.attributes,
                    entry.deduplication_id,
                )?;
                if let Some(trace) = trace {
                    message.payload = message.payload.with_trace_parent(trace.header());
                }
                messages.push(message);
            }
            let ids = handle.send(messages).await?;
            Ok(Response::new(pb::BatchSendMessagesResponse {
                message_ids: ids.iter().map(u64::to_string).collect(),
            }))
        }
        .await;
        result
    }

    type ReceiveMessagesStream = ReceiveMessagesStream;

    #[tracing::instrument(name = "ReceiveMessages", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> RpcResult<Self::ReceiveMessagesStream> {
        let result: RpcResult<Self::ReceiveMessagesStream> = async {
            let budget = client_budget(request.metadata());
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
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
            let slot = self.receive_limits.open_slot()?;
            // Registering with the actor before returning keeps waiters in the order of arrival.
            let receiving = handle
                .receive(
                    ReceiveRequest {
                        max_messages,
                        wait_seconds: request.wait_seconds,
                        visibility_timeout_seconds: request.visibility_timeout_seconds,
                    },
                    budget.map(|budget| Instant::now() + budget),
                    self.shutdown.clone(),
                )
                .await?;
            let receipt_key = self.registry()?.receipt_key().clone();
            let stream = self
                .receive_limits
                .stream(Received(receiving), receipt_key, slot);
            let output: ReceiveMessagesStream = Box::pin(stream);
            Ok(Response::new(output))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "DeleteMessage", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn delete_message(&self, request: Request<pb::DeleteMessageRequest>) -> RpcResult<()> {
        let result: RpcResult<()> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
            let registry = self.registry()?;
            let receipt = registry
                .receipt_key()
                .decode(&request.receipt_handle, &"receipt_handle")?;
            let target = DeleteTarget {
                handle: receipt,
                index: None,
            };
            let mut results = handle.delete_messages(vec![target]).await?;
            results.pop().unwrap_or(Ok(()))?;
            Ok(Response::new(()))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "BatchDeleteMessages", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn batch_delete_messages(
        &self,
        request: Request<pb::BatchDeleteMessagesRequest>,
    ) -> RpcResult<pb::BatchDeleteMessagesResponse> {
        let result: RpcResult<pb::BatchDeleteMessagesResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
            batch_size("receipt_handles", request.receipt_handles.len())?;
            let receipt_key = self.registry()?.receipt_key();
            let mut failures = Vec::new();
            let mut parsed = Vec::with_capacity(request.receipt_handles.len());
            let mut positions = Vec::with_capacity(request.receipt_handles.len());
            for (index, text) in request.receipt_handles.iter().enumerate() {
                match receipt_key.decode(text, &Indexed("receipt_handles", index)) {
                    Ok(handle) => {
                        parsed.push(DeleteTarget {
                            handle,
                            index: Some(index),
                        });
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
        result
    }

    type StreamMessagesStream = StreamMessagesStream;

    async fn stream_messages(
        &self,
        request: Request<tonic::Streaming<pb::StreamMessagesRequest>>,
    ) -> RpcResult<Self::StreamMessagesStream> {
        let caller = caller(&request)?;
        self.consume(caller, Box::pin(request.into_inner())).await
    }

    #[tracing::instrument(name = "ChangeMessageVisibility", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn change_message_visibility(
        &self,
        request: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> RpcResult<pb::ChangeMessageVisibilityResponse> {
        let result: RpcResult<pb::ChangeMessageVisibilityResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
            check_range(
                "visibility_timeout_seconds",
                request.visibility_timeout_seconds,
                &CHANGE_VISIBILITY_SECONDS,
            )?;
            let receipt = self
                .registry()?
                .receipt_key()
                .decode(&request.receipt_handle, &"receipt_handle")?;
            let target = VisibilityTarget {
                handle: receipt,
                visibility_timeout_seconds: request.visibility_timeout_seconds,
                place: HandlePlace::Single,
            };
            let mut results = handle.change_visibility(vec![target]).await?;
            // One target, one result: the actor answers every target it is given.
            let next_visible_ms = results.pop().unwrap_or_else(|| {
                Err(QueueError::Storage("the queue answered no result".into()))
            })?;
            Ok(Response::new(pb::ChangeMessageVisibilityResponse {
                next_visible_time: Some(convert::timestamp(next_visible_ms)),
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "BatchChangeMessageVisibility", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn batch_change_message_visibility(
        &self,
        request: Request<pb::BatchChangeMessageVisibilityRequest>,
    ) -> RpcResult<pb::BatchChangeMessageVisibilityResponse> {
        let result: RpcResult<pb::BatchChangeMessageVisibilityResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
            batch_size("entries", request.entries.len())?;
            // A timeout out of range is the request's fault, not one entry's: nothing changes.
            for (index, entry) in request.entries.iter().enumerate() {
                check_range(
                    &format!("entries[{index}].visibility_timeout_seconds"),
                    entry.visibility_timeout_seconds,
                    &CHANGE_VISIBILITY_SECONDS,
                )?;
            }
            let receipt_key = self.registry()?.receipt_key();
            let mut failures = Vec::new();
            let mut targets = Vec::with_capacity(request.entries.len());
            let mut indexes = Vec::with_capacity(request.entries.len());
            for (index, entry) in request.entries.iter().enumerate() {
                let field = IndexedField("entries", index, "receipt_handle");
                match receipt_key.decode(&entry.receipt_handle, &field) {
                    Ok(receipt) => {
                        indexes.push(index);
                        targets.push(VisibilityTarget {
                            handle: receipt,
                            visibility_timeout_seconds: entry.visibility_timeout_seconds,
                            place: HandlePlace::Entry(index),
                        });
                    }
                    Err(error) => failures.push((index, error)),
                }
            }
            let results = if targets.is_empty() {
                Vec::new()
            } else {
                handle.change_visibility(targets).await?
            };
            let (changed, failures) =
                convert::visibility_changes(indexes, results, failures, |index| {
                    request.entries[index].receipt_handle.clone()
                });
            Ok(Response::new(pb::BatchChangeMessageVisibilityResponse {
                changed,
                failures,
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "PurgeQueue", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> RpcResult<pb::PurgeQueueResponse> {
        let result: RpcResult<pb::PurgeQueueResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Admin, &request.queue_name)?;
            let purged_messages = handle.purge().await?;
            Ok(Response::new(pb::PurgeQueueResponse { purged_messages }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "PeekMessages", skip_all, fields(queue = %request.get_ref().queue_name))]
    async fn peek_messages(
        &self,
        request: Request<pb::PeekMessagesRequest>,
    ) -> RpcResult<pb::PeekMessagesResponse> {
        let result: RpcResult<pb::PeekMessagesResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Receive, &request.queue_name)?;
            let max_messages = match request.max_messages as usize {
                0 => 1,
                max => {
                    check_range("max_messages", max, &(1..=MAX_BATCH))?;
                    max
                }
            };
            let peeked = handle.peek(max_messages).await?;
            Ok(Response::new(pb::PeekMessagesResponse {
                messages: peeked.into_iter().map(convert::peeked).collect(),
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "ListDeadLetterSourceQueues", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn list_dead_letter_source_queues(
        &self,
        request: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> RpcResult<pb::ListDeadLetterSourceQueuesResponse> {
        let result: RpcResult<pb::ListDeadLetterSourceQueuesResponse> = async {
            let name = &request.get_ref().queue_name;
            validate_queue_name(name)?;
            caller(&request)?.authorize_any(name)?;
            let queue_names = self.registry()?.dead_letter_sources(name).await?;
            Ok(Response::new(pb::ListDeadLetterSourceQueuesResponse {
                queue_names,
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "RedriveMessages", skip_all, fields(queue = %Shown(&request.get_ref().queue_name)))]
    async fn redrive_messages(
        &self,
        request: Request<pb::RedriveMessagesRequest>,
    ) -> RpcResult<pb::RedriveMessagesResponse> {
        let result: RpcResult<pb::RedriveMessagesResponse> = async {
            let caller = caller(&request)?;
            let request = request.into_inner();
            let handle = self.queue(&caller, Action::Admin, &request.queue_name)?;
            let destination = if request.destination_queue.is_empty() {
                None
            } else {
                check_queue_name(&request.destination_queue).map_err(|why| {
                    QueueError::InvalidArgument(format!("destination_queue: {why}"))
                })?;
                // Moving messages into a queue is sending to it.
                caller.authorize(Action::Send, &request.destination_queue)?;
                Some(request.destination_queue)
            };
            let max_messages = match request.max_messages {
                0 => MAX_REDRIVE_MESSAGES,
                max => {
                    check_range("max_messages", max, &(1..=MAX_REDRIVE_MESSAGES))?;
                    max
                }
            };
            // Cluster mode: the queues it moves into may be served by other replicas.
            self.registry()?
                .prepare_redrive(&request.queue_name, destination.as_deref())
                .await?;
            let redriven = handle.redrive(destination, max_messages as usize).await?;
            Ok(Response::new(pb::RedriveMessagesResponse {
                redriven_messages: redriven.moved,
                skipped_messages: redriven.skipped,
            }))
        }
        .await;
        result
    }

    #[tracing::instrument(name = "CreateTopic", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn create_topic(&self, request: Request<pb::CreateTopicRequest>) -> RpcResult<pb::Topic> {
        self.create_topic_rpc(request).await
    }

    #[tracing::instrument(name = "GetTopic", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn get_topic(&self, request: Request<pb::GetTopicRequest>) -> RpcResult<pb::Topic> {
        self.get_topic_rpc(request).await
    }

    #[tracing::instrument(name = "UpdateTopic", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn update_topic(&self, request: Request<pb::UpdateTopicRequest>) -> RpcResult<pb::Topic> {
        self.update_topic_rpc(request).await
    }

    #[tracing::instrument(name = "DeleteTopic", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> RpcResult<()> {
        self.delete_topic_rpc(request).await
    }

    #[tracing::instrument(name = "ListTopics", skip_all, fields(prefix = %Shown(&request.get_ref().prefix)))]
    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> RpcResult<pb::ListTopicsResponse> {
        self.list_topics_rpc(request).await
    }

    #[tracing::instrument(name = "Subscribe", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> RpcResult<pb::Subscription> {
        self.subscribe_rpc(request).await
    }

    #[tracing::instrument(name = "Unsubscribe", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn unsubscribe(&self, request: Request<pb::UnsubscribeRequest>) -> RpcResult<()> {
        self.unsubscribe_rpc(request).await
    }

    #[tracing::instrument(name = "ListSubscriptions", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        self.list_subscriptions_rpc(request).await
    }

    #[tracing::instrument(name = "PublishMessage", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn publish_message(
        &self,
        request: Request<pb::PublishMessageRequest>,
    ) -> RpcResult<pb::PublishMessageResponse> {
        self.publish_message_rpc(request).await
    }

    #[tracing::instrument(name = "BatchPublishMessages", skip_all, fields(topic = %Shown(&request.get_ref().topic_name)))]
    async fn batch_publish_messages(
        &self,
        request: Request<pb::BatchPublishMessagesRequest>,
    ) -> RpcResult<pb::BatchPublishMessagesResponse> {
        self.batch_publish_messages_rpc(request).await
    }
}

impl QueueServiceImpl {
    /// StreamMessages on the client's requests (cluster mode hands them over after reading the
    /// first one itself, to find the queue).
    #[tracing::instrument(name = "StreamMessages", skip_all, fields(queue = tracing::field::Empty))]
    pub async fn consume(
        &self,
        caller: Caller,
        mut requests: ConsumerRequests,
    ) -> RpcResult<StreamMessagesStream> {
        let result: RpcResult<StreamMessagesStream> = async {
            // Nothing is claimed before the first request names the queue.
            let first = tokio::select! {
                first = futures_util::StreamExt::next(&mut requests) => first.transpose()?,
                () = self.shutdown.cancelled() => return Err(QueueError::ShuttingDown.into()),
            };
            let Some(pb::stream_messages_request::Kind::Start(start)) =
                first.and_then(|request| request.kind)
            else {
                return Err(QueueError::InvalidArgument(
                    "the first request of StreamMessages must be a `start`".into(),
                )
                .into());
            };
            validate_queue_name(&start.queue_name)?;
            tracing::Span::current().record("queue", start.queue_name.as_str());
            let handle = self.queue(&caller, Action::Receive, &start.queue_name)?;
            let max_outstanding = match start.max_outstanding_messages as usize {
                0 => DEFAULT_MAX_OUTSTANDING_MESSAGES,
                max => {
                    check_range(
                        "start.max_outstanding_messages",
                        max,
                        &MAX_OUTSTANDING_MESSAGES,
                    )?;
                    max
                }
            };
            if let Some(visibility) = start.visibility_timeout_seconds {
                check_range(
                    "start.visibility_timeout_seconds",
                    visibility,
                    &VISIBILITY_TIMEOUT_SECONDS,
                )?;
            }
            // A consumer stream is an open receive: it counts against --max-waiting-receives,
            // its messages against the response budget, and it is ended when its client
            // stops reading (`receive_stream`).
            let slot = self.receive_limits.open_slot()?;
            let receipt_key = self.registry()?.receipt_key().clone();
            let settings = ConsumeSettings {
                max_outstanding,
                visibility_timeout_seconds: start.visibility_timeout_seconds,
            };
            let stream = ConsumeStream::new(
                requests,
                handle,
                settings,
                self.shutdown.clone(),
                receipt_key.clone(),
            );
            let output: StreamMessagesStream =
                Box::pin(self.receive_limits.stream(stream, receipt_key, slot));
            Ok(Response::new(output))
        }
        .await;
        result
    }
}

type ReceiveMessagesStream = std::pin::Pin<Box<ReceiveStream>>;
