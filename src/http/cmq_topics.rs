//! CMQ's topic actions on `/v2/index.php` (CreateTopic ... ListSubscriptionByTopic), with
//! CMQ's parameter names (`topicName`, `filterType`, `msgTag.n`, `routingKey`,
//! `subscriptionName`, `protocol`, `endpoint`, `filterTag.n`, `bindingKey.n`, ...) and JSON
//! fields, over the gRPC topic RPCs.
//!
//! Spool's subscriptions deliver into Spool queues: CMQ's `protocol` `queue` with the queue's
//! name as the `endpoint`. CMQ's HTTP push (`protocol` `http`) is refused with CMQ's code of an
//! invalid parameter (4000); so are the push-only settings' unknown values. A topic holds no
//! messages (a publish is in every matching queue when it is answered), so a topic's and a
//! subscription's `msgCount` are 0.

use serde_json::{Map, Value, json};

use super::cmq::{Answer, Call, CmqError, fields, names_by_offset, seconds};
use crate::pb;
use crate::pb::queue_service_server::QueueService;

/// CMQ's `filterType` of a topic whose subscriptions filter by message tags.
pub const FILTER_TYPE_TAGS: u32 = 1;
/// CMQ's `filterType` of a topic whose subscriptions filter by binding keys.
pub const FILTER_TYPE_ROUTING_KEYS: u32 = 2;
/// The subscription protocol Spool serves: delivery into a queue.
pub const PROTOCOL_QUEUE: &str = "queue";
/// CMQ's push retry strategies; accepted and shown, meaningless for a queue endpoint.
const NOTIFY_STRATEGIES: [&str; 2] = ["BACKOFF_RETRY", "EXPONENTIAL_DECAY_RETRY"];
/// CMQ's push formats; a queue endpoint gets the body alone (CMQ's SIMPLIFIED).
const NOTIFY_CONTENT_FORMATS: [&str; 2] = ["JSON", "SIMPLIFIED"];
/// What GetSubscriptionAttributes shows for the push settings (CMQ's defaults for a queue).
const SHOWN_NOTIFY_STRATEGY: &str = "EXPONENTIAL_DECAY_RETRY";
const SHOWN_NOTIFY_CONTENT_FORMAT: &str = "SIMPLIFIED";

fn filter_type_pb(value: u32) -> Result<pb::FilterType, CmqError> {
    match value {
        FILTER_TYPE_TAGS => Ok(pb::FilterType::Tags),
        FILTER_TYPE_ROUTING_KEYS => Ok(pb::FilterType::RoutingKeys),
        other => Err(CmqError::invalid(format!(
            "filterType is {other}; it must be {FILTER_TYPE_TAGS} (message tags) or \
             {FILTER_TYPE_ROUTING_KEYS} (routing keys)"
        ))),
    }
}

fn filter_type_cmq(value: i32) -> u32 {
    match pb::FilterType::try_from(value) {
        Ok(pb::FilterType::RoutingKeys) => FILTER_TYPE_ROUTING_KEYS,
        _ => FILTER_TYPE_TAGS,
    }
}

impl Call<'_> {
    /// `maxMsgSize`, unless absent or CMQ's SDKs' "not set" (0 or less).
    fn topic_max_message_size(&self) -> Result<Option<u32>, CmqError> {
        match self.number::<i64>("maxMsgSize")? {
            Some(size) if size > 0 => u32::try_from(size)
                .map(Some)
                .map_err(|_| CmqError::invalid(format!("maxMsgSize is {size}; it is too large"))),
            _ => Ok(None),
        }
    }

    /// Checks a push setting CMQ's SDKs always send: one of CMQ's values, or absent.
    fn push_setting(&self, name: &str, allowed: &[&str]) -> Result<(), CmqError> {
        match self.params.get(name) {
            Some(value) if !value.is_empty() && !allowed.contains(&value.as_str()) => {
                Err(CmqError::invalid(format!(
                    "{name} is {value:?}; it must be one of {allowed:?}"
                )))
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn create_topic(&self) -> Answer {
        let name = self.required("topicName")?;
        let filter_type = match self.number::<u32>("filterType")? {
            None => pb::FilterType::Tags,
            Some(value) => filter_type_pb(value)?,
        };
        self.edge
            .service
            .create_topic(self.request(pb::CreateTopicRequest {
                topic_name: name.clone(),
                attributes: Some(pb::TopicAttributes {
                    max_message_size: self.topic_max_message_size()?,
                    filter_type: filter_type as i32,
                }),
            }))
            .await?;
        Ok(fields([("topicId", json!(name))]))
    }

    pub(super) async fn set_topic_attributes(&self) -> Answer {
        let name = self.required("topicName")?;
        self.edge
            .service
            .update_topic(self.request(pb::UpdateTopicRequest {
                topic_name: name,
                attributes: Some(pb::TopicAttributes {
                    max_message_size: self.topic_max_message_size()?,
                    filter_type: pb::FilterType::Unspecified as i32,
                }),
            }))
            .await?;
        Ok(Map::new())
    }

    pub(super) async fn get_topic_attributes(&self) -> Answer {
        let name = self.required("topicName")?;
        let topic = self
            .edge
            .service
            .get_topic(self.request(pb::GetTopicRequest { topic_name: name }))
            .await?
            .into_inner();
        let attributes = topic.attributes.unwrap_or_default();
        Ok(fields([
            ("topicName", json!(topic.name)),
            // A topic holds no messages: each publish is in its queues when answered.
            ("msgCount", json!(0)),
            (
                "maxMsgSize",
                json!(attributes.max_message_size.unwrap_or_default()),
            ),
            ("msgRetentionSeconds", json!(0)),
            ("createTime", json!(seconds(&topic.create_time))),
            ("lastModifyTime", json!(seconds(&topic.update_time))),
            ("filterType", json!(filter_type_cmq(attributes.filter_type))),
        ]))
    }

    pub(super) async fn list_topic(&self) -> Answer {
        let prefix = self.params.get("searchWord").cloned().unwrap_or_default();
        let (offset, limit) = self.offset_and_limit()?;
        let (names, total) = names_by_offset(offset + limit, |page_token| {
            let request = self.request(pb::ListTopicsRequest {
                prefix: prefix.clone(),
                page_size: 1000,
                page_token,
            });
            async move {
                let page = self.edge.service.list_topics(request).await?.into_inner();
                let names = page.topics.into_iter().map(|topic| topic.name).collect();
                Ok((names, page.total_count, page.next_page_token))
            }
        })
        .await?;
        let list: Vec<Value> = names
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|name| json!({ "topicId": name, "topicName": name }))
            .collect();
        Ok(fields([
            ("totalCount", json!(total)),
            ("topicList", json!(list)),
        ]))
    }

    pub(super) async fn delete_topic(&self) -> Answer {
        let name = self.required("topicName")?;
        self.edge
            .service
            .delete_topic(self.request(pb::DeleteTopicRequest { topic_name: name }))
            .await?;
        Ok(Map::new())
    }

    pub(super) async fn publish_message(&self) -> Answer {
        let name = self.required("topicName")?;
        let body = self.required("msgBody")?;
        let published = self
            .edge
            .service
            .publish_message(self.request(pb::PublishMessageRequest {
                topic_name: name,
                body: body.into_bytes().into(),
                tags: self.numbered("msgTag"),
                routing_key: self.params.get("routingKey").cloned().unwrap_or_default(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        Ok(fields([("msgId", json!(published.message_id))]))
    }

    pub(super) async fn batch_publish_message(&self) -> Answer {
        let name = self.required("topicName")?;
        let bodies = self.numbered("msgBody");
        if bodies.is_empty() {
            return Err(CmqError::invalid("the parameter msgBody.1 is missing"));
        }
        // CMQ's batch has one set of tags and one routing key for all its messages.
        let tags = self.numbered("msgTag");
        let routing_key = self.params.get("routingKey").cloned().unwrap_or_default();
        let published = self
            .edge
            .service
            .batch_publish_messages(
                self.request(pb::BatchPublishMessagesRequest {
                    topic_name: name,
                    entries: bodies
                        .into_iter()
                        .map(|body| pb::BatchPublishEntry {
                            body: body.into_bytes().into(),
                            tags: tags.clone(),
                            routing_key: routing_key.clone(),
                            ..Default::default()
                        })
                        .collect(),
                }),
            )
            .await?
            .into_inner();
        let list: Vec<Value> = published
            .results
            .into_iter()
            .map(|result| json!({ "msgId": result.message_id }))
            .collect();
        Ok(fields([("msgList", json!(list))]))
    }

    pub(super) async fn subscribe(&self) -> Answer {
        let topic = self.required("topicName")?;
        let name = self.required("subscriptionName")?;
        let protocol = self.required("protocol")?;
        if protocol != PROTOCOL_QUEUE {
            return Err(CmqError::invalid(format!(
                "protocol is {protocol:?}: Spool's subscriptions deliver into its queues, so the \
                 protocol is {PROTOCOL_QUEUE:?} and the endpoint a queue's name (HTTP push is \
                 not served)"
            )));
        }
        let queue = self.required("endpoint")?;
        self.push_setting("notifyStrategy", &NOTIFY_STRATEGIES)?;
        self.push_setting("notifyContentFormat", &NOTIFY_CONTENT_FORMATS)?;
        self.edge
            .service
            .subscribe(self.request(pb::SubscribeRequest {
                topic_name: topic,
                subscription_name: name.clone(),
                queue_name: queue,
                filter_tags: self.numbered("filterTag"),
                binding_keys: self.numbered("bindingKey"),
            }))
            .await?;
        Ok(fields([("subscriptionId", json!(name))]))
    }

    pub(super) async fn unsubscribe(&self) -> Answer {
        let topic = self.required("topicName")?;
        let name = self.required("subscriptionName")?;
        self.edge
            .service
            .unsubscribe(self.request(pb::UnsubscribeRequest {
                topic_name: topic,
                subscription_name: name,
            }))
            .await?;
        Ok(Map::new())
    }

    /// Every subscription of `topic` (at most 100: `topic::MAX_SUBSCRIPTIONS`).
    async fn subscriptions(&self, topic: &str) -> Result<Vec<pb::Subscription>, CmqError> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .edge
                .service
                .list_subscriptions(self.request(pb::ListSubscriptionsRequest {
                    topic_name: topic.to_string(),
                    page_size: 1000,
                    page_token: token,
                }))
                .await?
                .into_inner();
            all.extend(page.subscriptions);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    async fn subscription(&self) -> Result<pb::Subscription, CmqError> {
        let topic = self.required("topicName")?;
        let name = self.required("subscriptionName")?;
        self.subscriptions(&topic)
            .await?
            .into_iter()
            .find(|subscription| subscription.name == name)
            .ok_or_else(|| CmqError {
                code: spool_client::errors::TOPIC_NOT_FOUND.cmq_code,
                message: format!("topic {topic:?} has no subscription {name:?}"),
                error_list: None,
            })
    }

    pub(super) async fn get_subscription_attributes(&self) -> Answer {
        let subscription = self.subscription().await?;
        let created = seconds(&subscription.create_time);
        Ok(fields([
            ("topicOwner", json!("")),
            // Copies are in the queue once a publish is answered: nothing waits for delivery.
            ("msgCount", json!(0)),
            ("protocol", json!(PROTOCOL_QUEUE)),
            // The spelling CMQ's Python SDK reads.
            ("protocal", json!(PROTOCOL_QUEUE)),
            ("endpoint", json!(subscription.queue_name)),
            ("notifyStrategy", json!(SHOWN_NOTIFY_STRATEGY)),
            ("notifyContentFormat", json!(SHOWN_NOTIFY_CONTENT_FORMAT)),
            ("createTime", json!(created)),
            // A subscription never changes: Spool's filters are fixed at Subscribe.
            ("lastModifyTime", json!(created)),
            ("filterTag", json!(subscription.filter_tags)),
            // The spelling CMQ's Python SDK reads.
            ("filterTags", json!(subscription.filter_tags)),
            ("bindingKey", json!(subscription.binding_keys)),
        ]))
    }

    /// Spool cannot change a subscription's filter (Subscribe fixes it): a request that sets
    /// the filter the subscription has, or only the push settings, succeeds and changes
    /// nothing; one that sets another filter is refused (4000), saying to subscribe anew.
    pub(super) async fn set_subscription_attributes(&self) -> Answer {
        self.push_setting("notifyStrategy", &NOTIFY_STRATEGIES)?;
        self.push_setting("notifyContentFormat", &NOTIFY_CONTENT_FORMATS)?;
        let subscription = self.subscription().await?;
        let tags = self.numbered("filterTag");
        let keys = self.numbered("bindingKey");
        let changes_tags = !tags.is_empty() && tags != subscription.filter_tags;
        let changes_keys = !keys.is_empty() && keys != subscription.binding_keys;
        if changes_tags || changes_keys {
            return Err(unchangeable_filter());
        }
        Ok(Map::new())
    }

    /// Succeeds when the subscription has no filter tags; else refused as
    /// SetSubscriptionAttributes' filter changes are.
    pub(super) async fn clear_subscription_filter_tags(&self) -> Answer {
        if !self.subscription().await?.filter_tags.is_empty() {
            return Err(unchangeable_filter());
        }
        Ok(Map::new())
    }

    pub(super) async fn list_subscription_by_topic(&self) -> Answer {
        let topic = self.required("topicName")?;
        let search = self.params.get("searchWord").cloned().unwrap_or_default();
        let (offset, limit) = self.offset_and_limit()?;
        // CMQ matches the search word anywhere in the name. A topic has at most 100
        // subscriptions, so they are read whole and filtered here.
        let matching: Vec<pb::Subscription> = self
            .subscriptions(&topic)
            .await?
            .into_iter()
            .filter(|subscription| subscription.name.contains(&search))
            .collect();
        let total = matching.len();
        let list: Vec<Value> = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|subscription| {
                json!({
                    "subscriptionId": subscription.name,
                    "subscriptionName": subscription.name,
                    "protocol": PROTOCOL_QUEUE,
                    "endpoint": subscription.queue_name,
                })
            })
            .collect();
        Ok(fields([
            ("totalCount", json!(total)),
            ("subscriptionList", json!(list)),
        ]))
    }
}

fn unchangeable_filter() -> CmqError {
    CmqError::invalid(
        "a subscription's filterTag and bindingKey cannot change in Spool: Unsubscribe and \
         Subscribe again (see docs/compat.md)",
    )
}
