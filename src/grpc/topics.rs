//! The topic RPCs of `spool.v1.QueueService` (CreateTopic ... BatchPublishMessages): request
//! validation, grants, and protobuf conversion around `topic::Topics`. The service's trait
//! implementation (`service`) calls these, one line each.
//!
//! Topic names share queue names' rules and grants: a grant on a name or prefix covers the
//! topic of that name as it covers the queue. Publishing is `send` on the topic; creating,
//! changing, deleting topics and subscriptions is `admin` on the topic (and Subscribe needs
//! `admin` on the queue too: it changes what flows into it); reading needs any grant.

use std::sync::Arc;

use tonic::{Request, Response};

use super::auth::caller;
use super::convert::{self, timestamp};
use super::service::{QueueServiceImpl, RpcResult, batch_size, run_whole};
use crate::attributes::check_range;
use crate::auth::Action;
use crate::error::QueueError;
use crate::limits::{DEFAULT_PAGE_SIZE, MAX_MESSAGE_SIZE, MAX_PAGE_SIZE, MAX_QUEUE_NAME_LEN};
use crate::pb;
use crate::storage::FilterType;
use crate::topic::{
    Publication, Published, SubscriptionInfo, TopicInfo, TopicPatch, Topics, filter,
};

/// Checks a topic's (or subscription's) name with the field it came in named.
fn check_name(field: &str, name: &str) -> Result<(), QueueError> {
    spool_client::limits::check_queue_name(name)
        .map_err(|why| QueueError::InvalidArgument(why.replacen("queue_name", field, 1)))
}

fn page_size(requested: u32) -> Result<usize, QueueError> {
    match requested as usize {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => {
            check_range("page_size", size, &(1..=MAX_PAGE_SIZE))?;
            Ok(size)
        }
    }
}

fn page_token<'a>(token: &'a str, rpc: &str) -> Result<Option<&'a str>, QueueError> {
    if token.is_empty() {
        return Ok(None);
    }
    spool_client::limits::check_queue_name(token).map_err(|_| {
        QueueError::InvalidArgument(format!(
            "page_token is not a next_page_token returned by {rpc}"
        ))
    })?;
    Ok(Some(token))
}

fn filter_type(value: i32) -> Result<Option<FilterType>, QueueError> {
    match pb::FilterType::try_from(value) {
        Ok(pb::FilterType::Unspecified) => Ok(None),
        Ok(pb::FilterType::Tags) => Ok(Some(FilterType::Tags)),
        Ok(pb::FilterType::RoutingKeys) => Ok(Some(FilterType::RoutingKeys)),
        Err(_) => Err(QueueError::InvalidArgument(format!(
            "attributes.filter_type is {value}; it must be FILTER_TYPE_TAGS (1) or \
             FILTER_TYPE_ROUTING_KEYS (2)"
        ))),
    }
}

fn filter_type_pb(filter_type: FilterType) -> pb::FilterType {
    match filter_type {
        FilterType::Tags => pb::FilterType::Tags,
        FilterType::RoutingKeys => pb::FilterType::RoutingKeys,
    }
}

fn max_message_size(value: Option<u32>) -> Result<Option<u32>, QueueError> {
    if let Some(size) = value {
        check_range("attributes.max_message_size", size, &MAX_MESSAGE_SIZE)?;
    }
    Ok(value)
}

fn topic_pb(info: TopicInfo) -> pb::Topic {
    pb::Topic {
        name: info.record.name,
        attributes: Some(pb::TopicAttributes {
            max_message_size: Some(info.record.max_message_size),
            filter_type: filter_type_pb(info.record.filter_type) as i32,
        }),
        subscription_count: info.subscriptions as u32,
        stats: Some(pb::TopicStats {
            published_messages: info.totals.published,
            unrouted_messages: info.totals.unrouted,
        }),
        create_time: Some(timestamp(info.record.create_time_ms)),
        update_time: Some(timestamp(info.record.update_time_ms)),
    }
}

fn subscription_pb(info: SubscriptionInfo, filter_type: FilterType) -> pb::Subscription {
    let (filter_tags, binding_keys) = match filter_type {
        FilterType::Tags => (info.record.filter, Vec::new()),
        FilterType::RoutingKeys => (Vec::new(), info.record.filter),
    };
    pb::Subscription {
        name: info.record.name,
        topic_name: info.topic,
        queue_name: info.record.queue_name,
        filter_tags,
        binding_keys,
        create_time: Some(timestamp(info.record.create_time_ms)),
        delivered_messages: info.totals.delivered,
        filtered_out_messages: info.totals.filtered_out,
    }
}

fn published_pb(published: Published) -> pb::PublishMessageResponse {
    pb::PublishMessageResponse {
        message_id: published.message_id.to_string(),
        copies: published
            .copies
            .into_iter()
            .map(|copy| pb::PublishedCopy {
                subscription_name: copy.subscription,
                queue_name: copy.queue,
                message_id: copy.message_id.to_string(),
            })
            .collect(),
    }
}

/// One entry to publish, checked for its own form; `field` prefixes its fields in errors.
fn publication(
    field: &str,
    body: bytes::Bytes,
    attributes: std::collections::HashMap<String, String>,
    tags: Vec<String>,
    routing_key: String,
    deduplication_id: String,
) -> Result<Publication, QueueError> {
    let outgoing = convert::outgoing(field, body, None, attributes, deduplication_id)?;
    Ok(Publication {
        payload: outgoing.payload,
        tags,
        routing_key,
        deduplication_id: outgoing.deduplication_id,
    })
}

impl QueueServiceImpl {
    /// The topics, read again from PostgreSQL first in cluster mode (see `topic::ClusterTopics`).
    /// `name`: the topic the call is about (only it is read), None for every topic.
    async fn topics(&self, name: Option<&str>) -> Result<Arc<Topics>, QueueError> {
        let topics = self.registry_ref()?.topics().clone();
        topics.sync(name).await?;
        Ok(topics)
    }

    pub(super) async fn create_topic_rpc(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> RpcResult<pb::Topic> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        caller.authorize(Action::Admin, &request.topic_name)?;
        let attributes = request.attributes.unwrap_or_default();
        let size = max_message_size(attributes.max_message_size)?
            .unwrap_or(spool_client::limits::DEFAULT_MAX_MESSAGE_SIZE);
        let kind = filter_type(attributes.filter_type)?.unwrap_or(FilterType::Tags);
        let topics = self.topics(None).await?;
        let name = request.topic_name;
        let info = run_whole(async move { topics.create(&name, size, kind).await }).await?;
        Ok(Response::new(topic_pb(info)))
    }

    pub(super) async fn get_topic_rpc(
        &self,
        request: Request<pb::GetTopicRequest>,
    ) -> RpcResult<pb::Topic> {
        let name = &request.get_ref().topic_name;
        check_name("topic_name", name)?;
        caller(&request)?.authorize_any(name)?;
        Ok(Response::new(topic_pb(
            self.topics(Some(name)).await?.get(name)?,
        )))
    }

    pub(super) async fn update_topic_rpc(
        &self,
        request: Request<pb::UpdateTopicRequest>,
    ) -> RpcResult<pb::Topic> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        caller.authorize(Action::Admin, &request.topic_name)?;
        let attributes = request.attributes.unwrap_or_default();
        let topics = self.topics(Some(&request.topic_name)).await?;
        if let Some(kind) = filter_type(attributes.filter_type)? {
            let current = topics.filter_type(&request.topic_name)?;
            if kind != current {
                return Err(QueueError::InvalidArgument(format!(
                    "attributes.filter_type cannot change: topic {:?} filters by {} and its \
                     subscriptions' filters are of that kind; create another topic",
                    request.topic_name,
                    filter_type_pb(current).as_str_name()
                ))
                .into());
            }
        }
        let patch = TopicPatch {
            max_message_size: max_message_size(attributes.max_message_size)?,
        };
        let name = request.topic_name;
        let info = run_whole(async move { topics.update(&name, patch).await }).await?;
        Ok(Response::new(topic_pb(info)))
    }

    pub(super) async fn delete_topic_rpc(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> RpcResult<()> {
        let caller = caller(&request)?;
        let name = &request.get_ref().topic_name;
        check_name("topic_name", name)?;
        caller.authorize(Action::Admin, name)?;
        let topics = self.topics(Some(name)).await?;
        let name = name.clone();
        run_whole(async move { topics.delete(&name).await }).await?;
        Ok(Response::new(()))
    }

    pub(super) async fn list_topics_rpc(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> RpcResult<pb::ListTopicsResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        if request.prefix.len() > MAX_QUEUE_NAME_LEN {
            return Err(QueueError::InvalidArgument(format!(
                "prefix is {} bytes long; it must be at most {MAX_QUEUE_NAME_LEN}",
                request.prefix.len()
            ))
            .into());
        }
        let size = page_size(request.page_size)?;
        let after = page_token(&request.page_token, "ListTopics")?;
        let page = self
            .topics(None)
            .await?
            .list(&request.prefix, after, size, |name| caller.sees(name));
        Ok(Response::new(pb::ListTopicsResponse {
            topics: page.items.into_iter().map(topic_pb).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
            total_count: page.total_count,
        }))
    }

    pub(super) async fn subscribe_rpc(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> RpcResult<pb::Subscription> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        check_name("subscription_name", &request.subscription_name)?;
        check_name("queue_name", &request.queue_name)?;
        caller.authorize(Action::Admin, &request.topic_name)?;
        // A subscription is configuration of its queue as much as of the topic: what flows
        // into the queue changes.
        caller.authorize(Action::Admin, &request.queue_name)?;
        let topics = self.topics(Some(&request.topic_name)).await?;
        let kind = topics.filter_type(&request.topic_name)?;
        let filter = match kind {
            FilterType::Tags => {
                if !request.binding_keys.is_empty() {
                    return Err(QueueError::InvalidArgument(format!(
                        "binding_keys are set, but topic {:?} filters by tags: use filter_tags",
                        request.topic_name
                    ))
                    .into());
                }
                filter::check_tags("filter_tags", &request.filter_tags)?;
                request.filter_tags
            }
            FilterType::RoutingKeys => {
                if !request.filter_tags.is_empty() {
                    return Err(QueueError::InvalidArgument(format!(
                        "filter_tags are set, but topic {:?} filters by routing keys: use \
                         binding_keys",
                        request.topic_name
                    ))
                    .into());
                }
                filter::check_binding_keys("binding_keys", &request.binding_keys)?;
                request.binding_keys
            }
        };
        let queue = self
            .registry_ref()?
            .subscribed_queue(&request.queue_name)
            .await?;
        let (topic, subscription) = (request.topic_name, request.subscription_name);
        let info = run_whole(async move {
            topics
                .subscribe(&topic, &subscription, &queue, filter)
                .await
        })
        .await?;
        Ok(Response::new(subscription_pb(info, kind)))
    }

    pub(super) async fn unsubscribe_rpc(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> RpcResult<()> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        check_name("subscription_name", &request.subscription_name)?;
        caller.authorize(Action::Admin, &request.topic_name)?;
        let topics = self.topics(Some(&request.topic_name)).await?;
        let (topic, subscription) = (request.topic_name, request.subscription_name);
        run_whole(async move { topics.unsubscribe(&topic, &subscription).await }).await?;
        Ok(Response::new(()))
    }

    pub(super) async fn list_subscriptions_rpc(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        caller.authorize_any(&request.topic_name)?;
        let size = page_size(request.page_size)?;
        let after = page_token(&request.page_token, "ListSubscriptions")?;
        let topics = self.topics(Some(&request.topic_name)).await?;
        let kind = topics.filter_type(&request.topic_name)?;
        let page = topics.subscriptions(&request.topic_name, after, size)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: page
                .items
                .into_iter()
                .map(|info| subscription_pb(info, kind))
                .collect(),
            next_page_token: page.next_after.unwrap_or_default(),
            total_count: page.total_count,
        }))
    }

    pub(super) async fn publish_message_rpc(
        &self,
        request: Request<pb::PublishMessageRequest>,
    ) -> RpcResult<pb::PublishMessageResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        caller.authorize(Action::Send, &request.topic_name)?;
        self.disk_check()?;
        let entry = publication(
            "",
            request.body,
            request.attributes,
            request.tags,
            request.routing_key,
            request.deduplication_id,
        )?;
        let mut published = self
            .topics(Some(&request.topic_name))
            .await?
            .publish(&request.topic_name, vec![entry])
            .await?;
        let first = published.pop().map(published_pb).unwrap_or_default();
        Ok(Response::new(first))
    }

    pub(super) async fn batch_publish_messages_rpc(
        &self,
        request: Request<pb::BatchPublishMessagesRequest>,
    ) -> RpcResult<pb::BatchPublishMessagesResponse> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        check_name("topic_name", &request.topic_name)?;
        caller.authorize(Action::Send, &request.topic_name)?;
        self.disk_check()?;
        batch_size("entries", request.entries.len())?;
        let mut entries = Vec::with_capacity(request.entries.len());
        for (index, entry) in request.entries.into_iter().enumerate() {
            entries.push(publication(
                &format!("entries[{index}]."),
                entry.body,
                entry.attributes,
                entry.tags,
                entry.routing_key,
                entry.deduplication_id,
            )?);
        }
        let published = self
            .topics(Some(&request.topic_name))
            .await?
            .publish(&request.topic_name, entries)
            .await?;
        Ok(Response::new(pb::BatchPublishMessagesResponse {
            results: published.into_iter().map(published_pb).collect(),
        }))
    }
}
