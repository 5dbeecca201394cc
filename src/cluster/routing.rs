//! The QueueService every replica serves: it decides, call by call, whether this replica
//! answers (the queue's actor is here) or the queue's owner does (the call is forwarded), and
//! otherwise hands the call to the local service unchanged. Outside cluster mode every call is
//! local.
//!
//! ListQueues names no queue: it asks every live member for its page and merges them.
//! StreamMessages names its queue in its first request, which is read here before the stream is
//! served or forwarded.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures_util::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::adoption::ADOPT_HEADER;
use super::forwarding::{hops, onward, unreachable};
use super::{Cluster, Route};
use crate::attributes::validate_queue_name;
use crate::auth::Caller;
use crate::auth::forwarded::{FromReplica, IDENTITY_HEADER, method_path};
use crate::grpc::auth::caller;
use crate::grpc::{ConsumerRequests, QueueServiceImpl};
use crate::limits::DEFAULT_PAGE_SIZE;
use crate::pb;
use crate::pb::queue_service_client::QueueServiceClient;
use crate::pb::queue_service_server::QueueService;
use crate::registry::Registry;

type RpcResult<T> = Result<Response<T>, Status>;

/// The local service behind the router.
pub struct Routed {
    local: QueueServiceImpl,
    /// Set once this replica is a member (cluster mode only).
    cluster: Arc<OnceLock<Arc<Cluster>>>,
    /// The local queues, once recovered.
    registry: Arc<OnceLock<Arc<Registry>>>,
}

impl Routed {
    pub fn new(
        local: QueueServiceImpl,
        cluster: Arc<OnceLock<Arc<Cluster>>>,
        registry: Arc<OnceLock<Arc<Registry>>>,
    ) -> Self {
        Self {
            local,
            cluster,
            registry,
        }
    }

    /// Where the call for `queue` goes. A refusal is answered only to a caller the queue is
    /// visible to: to the others, the local service's checks answer (bad name, no grant), so
    /// a refusal tells nothing about whether the queue exists.
    async fn route<T>(&self, queue: &str, request: &Request<T>) -> Result<Route, Status> {
        if self.cluster.get().is_none() {
            return Ok(Route::Local);
        }
        let visible = caller(request)
            .and_then(|caller| caller.authorize_any(queue))
            .is_ok();
        self.route_by(queue, request.metadata(), visible).await
    }

    async fn route_by(
        &self,
        queue: &str,
        metadata: &MetadataMap,
        visible: bool,
    ) -> Result<Route, Status> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(Route::Local);
        };
        let served_here = self
            .registry
            .get()
            .is_some_and(|registry| registry.contains(queue));
        match cluster.route(queue, hops(metadata), served_here).await {
            Route::Refuse(error) => {
                if validate_queue_name(queue).is_err() || !visible {
                    return Ok(Route::Local);
                }
                Err(error.into())
            }
            route => Ok(route),
        }
    }

    /// The request a forward sends to `address` for a call of the handler `method`: the
    /// caller's metadata and deadline (see [`onward`]) and, for a caller this replica
    /// authenticated as a principal, that principal asserted for the owner (see
    /// `auth::forwarded`): so calls the owner could not authenticate itself (signed SQS and
    /// CMQ requests, client certificates) are forwarded too.
    fn forward<T>(
        &self,
        caller: Option<&Caller>,
        method: &str,
        address: &str,
        metadata: &MetadataMap,
        message: T,
    ) -> Request<T> {
        let mut request = onward(metadata, message);
        if let (Some(Caller::Principal(principal)), Some(cluster)) = (caller, self.cluster.get()) {
            let value = cluster
                .forward_key()
                .sign(&principal.name, &method_path(method), address);
            if let Ok(value) =
                value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
            {
                request.metadata_mut().insert(IDENTITY_HEADER, value);
            }
        }
        request
    }

    fn client(
        &self,
        address: &str,
    ) -> Result<QueueServiceClient<tonic::transport::Channel>, Status> {
        match self.cluster.get() {
            Some(cluster) => cluster.peers().client(address),
            None => Err(Status::internal("forwarding outside cluster mode")),
        }
    }
}

/// Routes a unary call: `$method` of the local service, or of the owner's.
macro_rules! routed {
    ($self:ident, $request:ident, $method:ident) => {{
        let queue = $request.get_ref().queue_name.clone();
        match $self.route(&queue, &$request).await? {
            Route::Local => $self.local.$method($request).await,
            Route::Forward(address) => {
                let mut client = $self.client(&address)?;
                let (metadata, extensions, message) = $request.into_parts();
                let onward = $self.forward(
                    extensions.get::<Caller>(),
                    stringify!($method),
                    &address,
                    &metadata,
                    message,
                );
                client
                    .$method(onward)
                    .await
                    .map(|response| Response::new(response.into_inner()))
                    .map_err(|status| unreachable(&address, status))
            }
            Route::Refuse(error) => Err(error.into()),
        }
    }};
}

/// A call of the topic API: served by whichever replica receives it. In cluster mode the
/// topics are read from PostgreSQL for each call, and a publish writes the copies of the
/// queues other replicas own in its own transaction, for their owners to take in (see
/// `topic::ClusterTopics` and `cluster::adoption`).
macro_rules! topic_call {
    ($self:ident, $request:ident, $method:ident) => {{ $self.local.$method($request).await }};
}

type ReceiveStream = Pin<Box<dyn Stream<Item = Result<pb::ReceivedMessage, Status>> + Send>>;
type ConsumeStream = Pin<Box<dyn Stream<Item = Result<pb::StreamMessagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl QueueService for Routed {
    async fn create_queue(&self, request: Request<pb::CreateQueueRequest>) -> RpcResult<pb::Queue> {
        routed!(self, request, create_queue)
    }

    /// Also how a replica tells the owner that messages were moved into the queue (see
    /// `cluster::adoption`): the owner takes them in before it answers.
    async fn get_queue(&self, request: Request<pb::GetQueueRequest>) -> RpcResult<pb::Queue> {
        if let Some(cluster) = self.cluster.get()
            && request.metadata().contains_key(ADOPT_HEADER)
            && request.extensions().get::<FromReplica>().is_some()
        {
            cluster
                .adoptions()
                .drain(&request.get_ref().queue_name)
                .await;
        }
        routed!(self, request, get_queue)
    }

    async fn update_queue(&self, request: Request<pb::UpdateQueueRequest>) -> RpcResult<pb::Queue> {
        routed!(self, request, update_queue)
    }

    async fn delete_queue(&self, request: Request<pb::DeleteQueueRequest>) -> RpcResult<()> {
        routed!(self, request, delete_queue)
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> RpcResult<pb::ListQueuesResponse> {
        let Some(cluster) = self.cluster.get() else {
            return self.local.list_queues(request).await;
        };
        // A forwarded list is this replica's part of another's answer.
        if hops(request.metadata()) > 0 {
            return self.local.list_queues(request).await;
        }
        let metadata: MetadataMap = request.metadata().clone();
        let message = request.get_ref().clone();
        let asker = request.extensions().get::<Caller>().cloned();
        let peers = cluster.other_members();
        let local = self.local.list_queues(request).await?.into_inner();
        let asks = peers.iter().map(|address| {
            let client = cluster.peers().client(address);
            let onward = self.forward(
                asker.as_ref(),
                "list_queues",
                address,
                &metadata,
                message.clone(),
            );
            async move {
                client?
                    .list_queues(onward)
                    .await
                    .map(Response::into_inner)
                    .map_err(|status| unreachable(address, status))
            }
        });
        let mut parts = vec![local];
        for part in futures_util::future::join_all(asks).await {
            parts.push(part?);
        }
        let page_size = match message.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            size => size,
        };
        Ok(Response::new(merge_pages(parts, page_size)))
    }

    async fn rewind_queue(
        &self,
        request: Request<pb::RewindQueueRequest>,
    ) -> RpcResult<pb::RewindQueueResponse> {
        routed!(self, request, rewind_queue)
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> RpcResult<pb::SendMessageResponse> {
        routed!(self, request, send_message)
    }

    async fn batch_send_messages(
        &self,
        request: Request<pb::BatchSendMessagesRequest>,
    ) -> RpcResult<pb::BatchSendMessagesResponse> {
        routed!(self, request, batch_send_messages)
    }

    type ReceiveMessagesStream = ReceiveStream;

    async fn receive_messages(
        &self,
        request: Request<pb::ReceiveMessagesRequest>,
    ) -> RpcResult<Self::ReceiveMessagesStream> {
        let queue = request.get_ref().queue_name.clone();
        match self.route(&queue, &request).await? {
            Route::Local => {
                let stream = self.local.receive_messages(request).await?.into_inner();
                let stream: ReceiveStream = Box::pin(stream);
                Ok(Response::new(stream))
            }
            Route::Forward(address) => {
                let mut client = self.client(&address)?;
                let (metadata, extensions, message) = request.into_parts();
                let onward = self.forward(
                    extensions.get::<Caller>(),
                    "receive_messages",
                    &address,
                    &metadata,
                    message,
                );
                let stream = client
                    .receive_messages(onward)
                    .await
                    .map_err(|status| unreachable(&address, status))?
                    .into_inner()
                    .map(move |item| item.map_err(|status| unreachable(&address, status)));
                let stream: ReceiveStream = Box::pin(stream);
                Ok(Response::new(stream))
            }
            Route::Refuse(error) => Err(error.into()),
        }
    }

    async fn delete_message(&self, request: Request<pb::DeleteMessageRequest>) -> RpcResult<()> {
        routed!(self, request, delete_message)
    }

    async fn batch_delete_messages(
        &self,
        request: Request<pb::BatchDeleteMessagesRequest>,
    ) -> RpcResult<pb::BatchDeleteMessagesResponse> {
        routed!(self, request, batch_delete_messages)
    }

    type StreamMessagesStream = ConsumeStream;

    /// The queue is named by the first request: it is read here, then the whole stream goes to
    /// the local service or to the owner.
    async fn stream_messages(
        &self,
        request: Request<Streaming<pb::StreamMessagesRequest>>,
    ) -> RpcResult<Self::StreamMessagesStream> {
        let caller = caller(&request)?;
        let metadata = request.metadata().clone();
        let mut requests = request.into_inner();
        let first = requests.message().await?;
        let queue = match first.as_ref().and_then(|first| first.kind.as_ref()) {
            Some(pb::stream_messages_request::Kind::Start(start)) => start.queue_name.clone(),
            _ => String::new(),
        };
        let requests: ConsumerRequests =
            Box::pin(futures_util::stream::iter(first.map(Ok)).chain(requests));
        let visible = caller.authorize_any(&queue).is_ok();
        let route = if queue.is_empty() {
            Route::Local
        } else {
            self.route_by(&queue, &metadata, visible).await?
        };
        match route {
            Route::Local => {
                let stream = self.local.consume(caller, requests).await?.into_inner();
                let stream: ConsumeStream = Box::pin(stream);
                Ok(Response::new(stream))
            }
            Route::Forward(address) => {
                let mut client = self.client(&address)?;
                // The client's requests go on as they come; an error reading them ends the
                // owner's side (half-close), as the client's going away would.
                let onward_requests = UntilError(requests);
                let onward = self.forward(
                    Some(&caller),
                    "stream_messages",
                    &address,
                    &metadata,
                    onward_requests,
                );
                let stream = client
                    .stream_messages(onward)
                    .await
                    .map_err(|status| unreachable(&address, status))?
                    .into_inner()
                    .map(move |item| item.map_err(|status| unreachable(&address, status)));
                let stream: ConsumeStream = Box::pin(stream);
                Ok(Response::new(stream))
            }
            Route::Refuse(error) => Err(error.into()),
        }
    }

    async fn change_message_visibility(
        &self,
        request: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> RpcResult<pb::ChangeMessageVisibilityResponse> {
        routed!(self, request, change_message_visibility)
    }

    async fn batch_change_message_visibility(
        &self,
        request: Request<pb::BatchChangeMessageVisibilityRequest>,
    ) -> RpcResult<pb::BatchChangeMessageVisibilityResponse> {
        routed!(self, request, batch_change_message_visibility)
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> RpcResult<pb::PurgeQueueResponse> {
        routed!(self, request, purge_queue)
    }

    async fn peek_messages(
        &self,
        request: Request<pb::PeekMessagesRequest>,
    ) -> RpcResult<pb::PeekMessagesResponse> {
        routed!(self, request, peek_messages)
    }

    async fn list_dead_letter_source_queues(
        &self,
        request: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> RpcResult<pb::ListDeadLetterSourceQueuesResponse> {
        routed!(self, request, list_dead_letter_source_queues)
    }

    /// Served by the owner of the queue messages move out of; the queues they move into take
    /// them in wherever they are served (see `cluster::adoption`).
    async fn redrive_messages(
        &self,
        request: Request<pb::RedriveMessagesRequest>,
    ) -> RpcResult<pb::RedriveMessagesResponse> {
        routed!(self, request, redrive_messages)
    }

    async fn create_topic(&self, request: Request<pb::CreateTopicRequest>) -> RpcResult<pb::Topic> {
        topic_call!(self, request, create_topic)
    }

    async fn get_topic(&self, request: Request<pb::GetTopicRequest>) -> RpcResult<pb::Topic> {
        topic_call!(self, request, get_topic)
    }

    async fn update_topic(&self, request: Request<pb::UpdateTopicRequest>) -> RpcResult<pb::Topic> {
        topic_call!(self, request, update_topic)
    }

    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> RpcResult<()> {
        topic_call!(self, request, delete_topic)
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> RpcResult<pb::ListTopicsResponse> {
        topic_call!(self, request, list_topics)
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> RpcResult<pb::Subscription> {
        topic_call!(self, request, subscribe)
    }

    async fn unsubscribe(&self, request: Request<pb::UnsubscribeRequest>) -> RpcResult<()> {
        topic_call!(self, request, unsubscribe)
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        topic_call!(self, request, list_subscriptions)
    }

    async fn publish_message(
        &self,
        request: Request<pb::PublishMessageRequest>,
    ) -> RpcResult<pb::PublishMessageResponse> {
        topic_call!(self, request, publish_message)
    }

    async fn batch_publish_messages(
        &self,
        request: Request<pb::BatchPublishMessagesRequest>,
    ) -> RpcResult<pb::BatchPublishMessagesResponse> {
        topic_call!(self, request, batch_publish_messages)
    }
}

/// The client's requests, ending at the first error (which ends the client's stream anyway).
struct UntilError(ConsumerRequests);

impl Stream for UntilError {
    type Item = pb::StreamMessagesRequest;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_next_unpin(cx)
            .map(|request| request.and_then(Result::ok))
    }
}

/// One page of ListQueues from every member's page (each member lists the queues it owns, so
/// the pages are disjoint): the first `page_size` names of them all, and a token if more
/// follow anywhere.
fn merge_pages(parts: Vec<pb::ListQueuesResponse>, page_size: usize) -> pb::ListQueuesResponse {
    let total_count = parts.iter().map(|part| part.total_count).sum();
    let more_elsewhere = parts.iter().any(|part| !part.next_page_token.is_empty());
    let mut queues: Vec<pb::Queue> = parts.into_iter().flat_map(|part| part.queues).collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    let more = more_elsewhere || queues.len() > page_size;
    queues.truncate(page_size);
    let next_page_token = if more {
        queues
            .last()
            .map(|queue| queue.name.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    pb::ListQueuesResponse {
        queues,
        next_page_token,
        total_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(names: &[&str], more: bool, total: u64) -> pb::ListQueuesResponse {
        pb::ListQueuesResponse {
            queues: names
                .iter()
                .map(|name| pb::Queue {
                    name: name.to_string(),
                    ..Default::default()
                })
                .collect(),
            next_page_token: if more {
                names.last().map(|n| n.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
            total_count: total,
        }
    }

    #[test]
    fn pages_merge_in_name_order_with_a_token_when_more_follow() {
        let merged = merge_pages(
            vec![page(&["a", "d"], false, 2), page(&["b", "c"], true, 5)],
            3,
        );
        let names: Vec<_> = merged.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(merged.next_page_token, "c");
        assert_eq!(merged.total_count, 7);
        let last = merge_pages(vec![page(&["a"], false, 1), page(&[], false, 0)], 3);
        assert_eq!(last.next_page_token, "");
        assert_eq!(last.queues.len(), 1);
    }
}
