//! Tencent CMQ's HTTP API v2 at `/v2/index.php`: `Action=...` with CMQ's parameter names, as
//! a form-encoded POST body or a GET query (both read; the body wins), answered in CMQ's JSON
//! (`code`, `message`, `requestId` and the action's fields, times in Unix seconds) with CMQ's
//! error codes: the `cmq_code` of each error in Spool's error table (4440 no such queue, 4460
//! exists with other attributes, 4430 stale receipt handle, ...), 7000 when a receive finds no
//! message, 6010 when some deletes of a batch failed. The topic actions are in
//! [`super::cmq_topics`].

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::{Edge, request_id};
use crate::auth::Caller;
use crate::metrics::Method;
use crate::pb;
use crate::pb::queue_service_server::QueueService;

/// CMQ's code of "no message" after the wait.
pub const NO_MESSAGE: i32 = 7000;
/// CMQ's code of a batch delete with failures (each failure has its own code).
pub const BATCH_DELETE_FAILED: i32 = 6010;
/// CMQ's code of a bad parameter.
pub const INVALID_PARAMETER: i32 = 4000;
/// CMQ's code of a refused signature or credential.
pub const AUTHENTICATION_FAILED: i32 = 4100;
/// Parameters of one request at most (a batch of 16 has about 25).
pub const MAX_PARAMETERS: usize = 256;

/// A CMQ error answer: its code and message.
#[derive(Debug)]
pub struct CmqError {
    pub(super) code: i32,
    pub(super) message: String,
    /// BatchDeleteMessage's `errorList`: each failed handle with its own code.
    pub(super) error_list: Option<Vec<Value>>,
}

impl CmqError {
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: INVALID_PARAMETER,
            message: message.into(),
            error_list: None,
        }
    }
}

impl From<Status> for CmqError {
    fn from(status: Status) -> Self {
        let client = spool_client::ClientError::from(status.clone());
        Self {
            code: client.cmq_code().unwrap_or(6000),
            message: status.message().to_string(),
            error_list: None,
        }
    }
}

pub(super) type Answer = Result<Map<String, Value>, CmqError>;

impl CmqError {
    /// The gRPC code of this outcome, for the metrics: the error table's for CMQ's code; OK
    /// for "no message" and a batch delete with failures, as the gRPC calls answer them.
    fn grpc_code(&self) -> Code {
        match self.code {
            NO_MESSAGE | BATCH_DELETE_FAILED => Code::Ok,
            code => spool_client::errors::ERROR_CASES
                .iter()
                .find(|case| case.cmq_code == code)
                .map_or(Code::Unknown, |case| case.grpc_code),
        }
    }
}

/// Answers one CMQ request: always HTTP 200, the outcome in `code`, as CMQ does. Also returns
/// the action and the outcome's gRPC code, for the metrics.
pub async fn answer(
    edge: &Edge,
    request: Request<Incoming>,
) -> (Response<Full<Bytes>>, Method, Code) {
    let id = request_id();
    let mut action = String::new();
    let outcome = handle(edge, request, &mut action).await;
    let method = Method::of_http_action("cmq", &action);
    let code = outcome
        .as_ref()
        .map_or_else(CmqError::grpc_code, |_| Code::Ok);
    let mut body = match outcome {
        Ok(fields) => {
            let mut body = Map::new();
            body.insert("code".into(), json!(0));
            body.insert("message".into(), json!(""));
            body.extend(fields);
            body
        }
        Err(error) => {
            let mut body = Map::new();
            body.insert("code".into(), json!(error.code));
            body.insert("message".into(), json!(error.message));
            if let Some(list) = error.error_list {
                body.insert("errorList".into(), Value::Array(list));
            }
            body
        }
    };
    body.insert("requestId".into(), json!(id));
    let mut response = Response::new(Full::new(Bytes::from(Value::Object(body).to_string())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    (response, method, code)
}

/// `action`: set to the request's Action once its parameters are read.
async fn handle(edge: &Edge, request: Request<Incoming>, action: &mut String) -> Answer {
    let mut params = BTreeMap::new();
    if let Some(query) = request.uri().query() {
        collect(&mut params, query.as_bytes())?;
    }
    let method = request.method().clone();
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = request.uri().path().to_string();
    if method != hyper::Method::GET && method != hyper::Method::POST {
        return Err(CmqError::invalid("CMQ requests are GET or POST"));
    }
    let body = edge
        .body(request.into_body())
        .await
        .map_err(|error| CmqError::invalid(error.to_string()))?;
    collect(&mut params, &body)?;
    action.clone_from(params.get("Action").unwrap_or(&String::new()));
    let caller = super::cmq_signature::authenticate(edge, method.as_str(), &host, &path, &params)
        .map_err(|message| CmqError {
        code: AUTHENTICATION_FAILED,
        message,
        error_list: None,
    })?;
    let call = Call {
        edge,
        caller,
        params: &params,
    };
    let action = params.get("Action").map(String::as_str).unwrap_or_default();
    match action {
        "CreateQueue" => call.create_queue().await,
        "ListQueue" => call.list_queue().await,
        "GetQueueAttributes" => call.get_queue_attributes().await,
        "SetQueueAttributes" => call.set_queue_attributes().await,
        "DeleteQueue" => call.delete_queue().await,
        "RewindQueue" => call.rewind_queue().await,
        "SendMessage" => call.send_message().await,
        "BatchSendMessage" => call.batch_send_message().await,
        "ReceiveMessage" => call.receive_message(false).await,
        "BatchReceiveMessage" => call.receive_message(true).await,
        "DeleteMessage" => call.delete_message().await,
        "BatchDeleteMessage" => call.batch_delete_message().await,
        "CreateTopic" => call.create_topic().await,
        "SetTopicAttributes" => call.set_topic_attributes().await,
        "GetTopicAttributes" => call.get_topic_attributes().await,
        "ListTopic" => call.list_topic().await,
        "DeleteTopic" => call.delete_topic().await,
        "PublishMessage" => call.publish_message().await,
        "BatchPublishMessage" => call.batch_publish_message().await,
        "Subscribe" => call.subscribe().await,
        "Unsubscribe" => call.unsubscribe().await,
        "GetSubscriptionAttributes" => call.get_subscription_attributes().await,
        "SetSubscriptionAttributes" => call.set_subscription_attributes().await,
        "ClearSubscriptionFilterTags" => call.clear_subscription_filter_tags().await,
        "ListSubscriptionByTopic" => call.list_subscription_by_topic().await,
        "" => Err(CmqError::invalid("the parameter Action is missing")),
        other => Err(CmqError::invalid(format!(
            "Action {other:?} is not one Spool serves (see docs/compat.md)"
        ))),
    }
}

/// Adds the form-encoded pairs of `text` to `params` (later ones win), bounded in number.
fn collect(params: &mut BTreeMap<String, String>, text: &[u8]) -> Result<(), CmqError> {
    for (key, value) in form_urlencoded::parse(text) {
        if params.len() >= MAX_PARAMETERS && !params.contains_key(key.as_ref()) {
            return Err(CmqError::invalid(format!(
                "the request has more than {MAX_PARAMETERS} parameters"
            )));
        }
        params.insert(key.into_owned(), value.into_owned());
    }
    Ok(())
}

/// One request being answered (the topic actions are in `cmq_topics`).
pub(super) struct Call<'a> {
    pub(super) edge: &'a Edge,
    pub(super) caller: Caller,
    pub(super) params: &'a BTreeMap<String, String>,
}

impl Call<'_> {
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        Edge::request(&self.caller, message)
    }

    pub(super) fn required(&self, name: &str) -> Result<String, CmqError> {
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| CmqError::invalid(format!("the parameter {name} is missing")))
    }

    pub(super) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CmqError> {
        match self.params.get(name) {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                CmqError::invalid(format!("the parameter {name} is {text:?}, not a number"))
            }),
        }
    }

    /// `name.1`, `name.2`, ... in order, stopping at the first gap.
    pub(super) fn numbered(&self, name: &str) -> Vec<String> {
        (1..)
            .map_while(|n| self.params.get(&format!("{name}.{n}")).cloned())
            .collect()
    }

    fn attributes(&self) -> Result<pb::QueueAttributes, CmqError> {
        // CMQ's SDKs send -1 for "not set" on maxMsgHeapNum.
        let max_backlog = match self.number::<i64>("maxMsgHeapNum")? {
            Some(n) if n > 0 => Some(n as u64),
            _ => None,
        };
        Ok(pb::QueueAttributes {
            visibility_timeout_seconds: self.number("visibilityTimeout")?,
            polling_wait_seconds: self.number("pollingWaitSeconds")?,
            max_message_size: self.number("maxMsgSize")?,
            message_retention_seconds: self.number("msgRetentionSeconds")?,
            rewind_seconds: self.number("rewindSeconds")?,
            max_backlog,
            ..Default::default()
        })
    }

    async fn create_queue(&self) -> Answer {
        let name = self.required("queueName")?;
        self.edge
            .service
            .create_queue(self.request(pb::CreateQueueRequest {
                queue_name: name.clone(),
                attributes: Some(self.attributes()?),
            }))
            .await?;
        Ok(fields([("queueId", json!(name))]))
    }

    /// A listing's `offset` (default 0) and `limit` (default 20, at most 1000).
    pub(super) fn offset_and_limit(&self) -> Result<(usize, usize), CmqError> {
        let offset: usize = self.number("offset")?.unwrap_or(0);
        let limit: usize = self.number("limit")?.unwrap_or(20);
        if !(1..=1000).contains(&limit) {
            return Err(CmqError::invalid(format!(
                "limit is {limit}; it must be 1..=1000"
            )));
        }
        Ok((offset, limit))
    }

    async fn list_queue(&self) -> Answer {
        let prefix = self.params.get("searchWord").cloned().unwrap_or_default();
        let (offset, limit) = self.offset_and_limit()?;
        let (queues, total) = names_by_offset(offset + limit, |page_token| {
            let request = self.request(pb::ListQueuesRequest {
                prefix: prefix.clone(),
                page_size: 1000,
                page_token,
            });
            async move {
                let page = self.edge.service.list_queues(request).await?.into_inner();
                let names = page.queues.into_iter().map(|queue| queue.name).collect();
                Ok((names, page.total_count, page.next_page_token))
            }
        })
        .await?;
        let list: Vec<Value> = queues
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|name| json!({ "queueId": name, "queueName": name }))
            .collect();
        Ok(fields([
            ("totalCount", json!(total)),
            ("queueList", json!(list)),
        ]))
    }

    async fn get_queue_attributes(&self) -> Answer {
        let name = self.required("queueName")?;
        let queue = self
            .edge
            .service
            .get_queue(self.request(pb::GetQueueRequest {
                queue_name: name.clone(),
            }))
            .await?
            .into_inner();
        let a = queue.attributes.unwrap_or_default();
        let stats = queue.stats.unwrap_or_default();
        Ok(fields([
            ("queueName", json!(queue.name)),
            ("maxMsgHeapNum", json!(a.max_backlog.unwrap_or_default())),
            (
                "pollingWaitSeconds",
                json!(a.polling_wait_seconds.unwrap_or_default()),
            ),
            (
                "visibilityTimeout",
                json!(a.visibility_timeout_seconds.unwrap_or_default()),
            ),
            ("maxMsgSize", json!(a.max_message_size.unwrap_or_default())),
            (
                "msgRetentionSeconds",
                json!(a.message_retention_seconds.unwrap_or_default()),
            ),
            ("rewindSeconds", json!(a.rewind_seconds.unwrap_or_default())),
            ("createTime", json!(seconds(&queue.create_time))),
            ("lastModifyTime", json!(seconds(&queue.update_time))),
            ("activeMsgNum", json!(stats.active_messages)),
            ("inactiveMsgNum", json!(stats.inactive_messages)),
            ("delayMsgNum", json!(stats.delayed_messages)),
            ("rewindMsgNum", json!(stats.rewindable_messages)),
            // The spelling CMQ's SDKs read.
            ("rewindmsgNum", json!(stats.rewindable_messages)),
            ("minMsgTime", json!(seconds(&stats.oldest_message_time))),
        ]))
    }

    async fn set_queue_attributes(&self) -> Answer {
        let name = self.required("queueName")?;
        self.edge
            .service
            .update_queue(self.request(pb::UpdateQueueRequest {
                queue_name: name,
                attributes: Some(self.attributes()?),
            }))
            .await?;
        Ok(Map::new())
    }

    async fn delete_queue(&self) -> Answer {
        let name = self.required("queueName")?;
        self.edge
            .service
            .delete_queue(self.request(pb::DeleteQueueRequest { queue_name: name }))
            .await?;
        Ok(Map::new())
    }

    async fn rewind_queue(&self) -> Answer {
        let name = self.required("queueName")?;
        let start: i64 = self
            .number("startConsumeTime")?
            .ok_or_else(|| CmqError::invalid("the parameter startConsumeTime is missing"))?;
        self.edge
            .service
            .rewind_queue(self.request(pb::RewindQueueRequest {
                queue_name: name,
                start_time: Some(prost_types::Timestamp {
                    seconds: start,
                    nanos: 0,
                }),
            }))
            .await?;
        Ok(Map::new())
    }

    async fn send_message(&self) -> Answer {
        let name = self.required("queueName")?;
        let body = self.required("msgBody")?;
        let sent = self
            .edge
            .service
            .send_message(self.request(pb::SendMessageRequest {
                queue_name: name,
                body: body.into_bytes().into(),
                delay_seconds: self.number("delaySeconds")?,
                ..Default::default()
            }))
            .await?
            .into_inner();
        Ok(fields([("msgId", json!(sent.message_id))]))
    }

    async fn batch_send_message(&self) -> Answer {
        let name = self.required("queueName")?;
        let bodies = self.numbered("msgBody");
        if bodies.is_empty() {
            return Err(CmqError::invalid("the parameter msgBody.1 is missing"));
        }
        let delay_seconds = self.number("delaySeconds")?;
        let sent = self
            .edge
            .service
            .batch_send_messages(
                self.request(pb::BatchSendMessagesRequest {
                    queue_name: name,
                    entries: bodies
                        .into_iter()
                        .map(|body| pb::BatchSendEntry {
                            body: body.into_bytes().into(),
                            delay_seconds,
                            ..Default::default()
                        })
                        .collect(),
                }),
            )
            .await?
            .into_inner();
        let list: Vec<Value> = sent
            .message_ids
            .into_iter()
            .map(|id| json!({ "msgId": id }))
            .collect();
        Ok(fields([("msgList", json!(list))]))
    }

    async fn receive_message(&self, batch: bool) -> Answer {
        let name = self.required("queueName")?;
        let max_messages = if batch {
            self.number("numOfMsg")?
                .ok_or_else(|| CmqError::invalid("the parameter numOfMsg is missing"))?
        } else {
            1
        };
        let messages = self
            .edge
            .receive(
                &self.caller,
                pb::ReceiveMessagesRequest {
                    queue_name: name,
                    max_messages,
                    wait_seconds: self.number("pollingWaitSeconds")?,
                    visibility_timeout_seconds: None,
                },
            )
            .await?;
        if messages.is_empty() {
            return Err(CmqError {
                code: NO_MESSAGE,
                message: "(10200)no message".into(),
                error_list: None,
            });
        }
        let mut infos: Vec<Map<String, Value>> = messages.iter().map(message_info).collect();
        if batch {
            Ok(fields([("msgInfoList", json!(infos))]))
        } else {
            Ok(infos.swap_remove(0))
        }
    }

    async fn delete_message(&self) -> Answer {
        let name = self.required("queueName")?;
        let receipt_handle = self.required("receiptHandle")?;
        self.edge
            .service
            .delete_message(self.request(pb::DeleteMessageRequest {
                queue_name: name,
                receipt_handle,
            }))
            .await?;
        Ok(Map::new())
    }

    async fn batch_delete_message(&self) -> Answer {
        let name = self.required("queueName")?;
        let handles = self.numbered("receiptHandle");
        if handles.is_empty() {
            return Err(CmqError::invalid(
                "the parameter receiptHandle.1 is missing",
            ));
        }
        let answer = self
            .edge
            .service
            .batch_delete_messages(self.request(pb::BatchDeleteMessagesRequest {
                queue_name: name,
                receipt_handles: handles,
            }))
            .await?
            .into_inner();
        if answer.failures.is_empty() {
            return Ok(Map::new());
        }
        let errors: Vec<Value> = answer
            .failures
            .iter()
            .map(|failure| {
                json!({
                    "code": failure.cmq_code,
                    "message": failure.message,
                    "receiptHandle": failure.receipt_handle,
                })
            })
            .collect();
        Err(CmqError {
            code: BATCH_DELETE_FAILED,
            message: format!(
                "{} of the messages could not be deleted (see errorList)",
                errors.len()
            ),
            error_list: Some(errors),
        })
    }
}

pub(super) fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

pub(super) fn seconds(time: &Option<prost_types::Timestamp>) -> i64 {
    time.as_ref().map(|t| t.seconds).unwrap_or_default()
}

/// A received message in CMQ's fields (times in Unix seconds; the body as text).
fn message_info(message: &pb::ReceivedMessage) -> Map<String, Value> {
    fields([
        ("msgBody", json!(String::from_utf8_lossy(&message.body))),
        ("msgId", json!(message.message_id)),
        ("receiptHandle", json!(message.receipt_handle)),
        ("enqueueTime", json!(seconds(&message.enqueue_time))),
        (
            "firstDequeueTime",
            json!(seconds(&message.first_dequeue_time)),
        ),
        (
            "nextVisibleTime",
            json!(seconds(&message.next_visible_time)),
        ),
        ("dequeueCount", json!(message.dequeue_count)),
    ])
}

/// CMQ pages by offset, Spool by name: reads Spool's pages (`page` answers one page's names,
/// the total count and the next page's token) until `wanted` names are read or none are left.
/// Answers the names read and the total count.
pub(super) async fn names_by_offset<F, Fut>(
    wanted: usize,
    mut page: F,
) -> Result<(Vec<String>, u64), Status>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<String>, u64, String), Status>>,
{
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let (more, total, next) = page(token).await?;
        names.extend(more);
        if next.is_empty() || names.len() >= wanted {
            return Ok((names, total));
        }
        token = next;
    }
}
