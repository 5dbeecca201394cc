//! Amazon SQS's JSON protocol (AWS JSON 1.0: `POST /`, `X-Amz-Target: AmazonSQS.<Action>`,
//! `Content-Type: application/x-amz-json-1.0`), what current AWS SDKs send.
//!
//! Each action becomes the `spool.v1` call it means; docs/compat.md lists where SQS and Spool
//! differ and what this edge answers then (what SQS would). Queue URLs are
//! `{scheme}://{Host}/{ACCOUNT_ID}/{queue}`: the host the client called, so a URL works from
//! where it was obtained; only its last segment names the queue.
//!
//! Errors are SQS's: status 400 (the caller's) or 5xx, a body `{"__type":
//! "com.amazonaws.sqs#<Code>","message":...}`, and the query protocol's code in
//! `x-amzn-query-error` (`<QueryCode>;Sender`), which the SDKs report as the error code.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use md5::{Digest as _, Md5};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::{Edge, hex, request_id, sqs_attributes};
use crate::auth::Caller;
use crate::metrics::Method;
use crate::pb;
use crate::pb::queue_service_server::QueueService;

/// The account id in queue URLs and ARNs: Spool has one namespace of queues.
pub const ACCOUNT_ID: &str = "000000000000";
/// The region in queue ARNs.
pub const REGION: &str = "us-east-1";
/// Entries of an SQS batch at most (Spool's own limit is 16).
pub const MAX_SQS_BATCH: usize = 10;
/// Messages of one ReceiveMessage at most.
pub const MAX_RECEIVE: u32 = 10;
/// SQS's longest long poll, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 20;
/// SQS's longest delay, in seconds.
pub const MAX_DELAY_SECONDS: u32 = 900;
/// An SQS-created queue's message size when CreateQueue does not say (SQS's default).
pub const DEFAULT_MAXIMUM_MESSAGE_SIZE: u32 = 262_144;
/// Characters of a batch entry id at most (SQS's).
const MAX_ENTRY_ID_LEN: usize = 80;

/// An SQS error answer.
#[derive(Debug)]
pub struct SqsError {
    pub(super) status: StatusCode,
    /// The JSON protocol's code (`__type` after the `#`).
    code: &'static str,
    /// The query protocol's code, which SDKs in query-compatible mode report.
    pub(super) query_code: &'static str,
    pub(super) message: String,
    /// The gRPC code of this outcome, for the metrics.
    pub(super) outcome: Code,
}

impl SqsError {
    pub(super) fn new(
        code: &'static str,
        query_code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            query_code,
            message: message.into(),
            outcome: Code::InvalidArgument,
        }
    }

    /// A refused signature or credential (403).
    pub fn forbidden(code: &'static str, message: String) -> Self {
        let mut error = Self::new(code, code, message);
        error.status = StatusCode::FORBIDDEN;
        error.outcome = Code::Unauthenticated;
        error
    }

    /// A request without a signature where one is needed.
    pub fn forbidden_missing(message: &str) -> Self {
        Self::forbidden("MissingAuthenticationToken", message.to_string())
    }

    /// A message attribute SQS would refuse.
    pub fn invalid_attribute(message: String) -> Self {
        Self::invalid(message)
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", "InvalidParameterValue", message)
    }

    pub(super) fn missing(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }

    pub(super) fn fault(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }

    fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = json!({
            "__type": format!("com.amazonaws.sqs#{}", self.code),
            "message": self.message,
        });
        let mut response = json_response(self.status, &body, request_id);
        if let Ok(value) =
            hyper::header::HeaderValue::from_str(&format!("{};{}", self.query_code, self.fault()))
        {
            response.headers_mut().insert("x-amzn-query-error", value);
        }
        response
    }
}

/// A gRPC status of the service, as SQS would say it.
impl From<Status> for SqsError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        let mut error = match status.code() {
            Code::NotFound => Self::new(
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue",
                "The specified queue does not exist.",
            ),
            Code::AlreadyExists => Self::new("QueueNameExists", "QueueAlreadyExists", message),
            Code::InvalidArgument if message.contains("receipt_handle") => {
                Self::new("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", message)
            }
            Code::InvalidArgument | Code::OutOfRange => Self::invalid(message),
            Code::FailedPrecondition => Self::new(
                "MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
                message,
            ),
            Code::Unauthenticated => {
                let mut error = Self::new("InvalidClientTokenId", "InvalidClientTokenId", message);
                error.status = StatusCode::FORBIDDEN;
                error
            }
            Code::PermissionDenied => {
                let mut error = Self::new("AccessDenied", "AccessDenied", message);
                error.status = StatusCode::FORBIDDEN;
                error
            }
            Code::ResourceExhausted => {
                let mut error = Self::new("OverLimit", "OverLimit", message);
                error.status = StatusCode::FORBIDDEN;
                error
            }
            Code::Unavailable => {
                let mut error = Self::new("ServiceUnavailable", "ServiceUnavailable", message);
                error.status = StatusCode::SERVICE_UNAVAILABLE;
                error
            }
            _ => {
                let mut error = Self::new("InternalError", "InternalError", message);
                error.status = StatusCode::INTERNAL_SERVER_ERROR;
                error
            }
        };
        if error.message.is_empty() {
            error.message = status.code().description().to_string();
        }
        error.outcome = status.code();
        error
    }
}

pub(super) type Answer = Result<Value, SqsError>;

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

/// Answers one SQS request of the JSON protocol; also returns the action and the outcome's
/// gRPC code, for the metrics.
pub async fn answer(
    edge: &Edge,
    request: Request<Incoming>,
) -> (Response<Full<Bytes>>, Method, Code) {
    let id = request_id();
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let action = target.strip_prefix("AmazonSQS.").unwrap_or_default();
    let method = Method::of_http_action("sqs", action);
    match handle(edge, request, &target).await {
        Ok(body) => (json_response(StatusCode::OK, &body, &id), method, Code::Ok),
        Err(error) => (error.response(&id), method, error.outcome),
    }
}

async fn handle(edge: &Edge, request: Request<Incoming>, target: &str) -> Answer {
    let Some(action) = target.strip_prefix("AmazonSQS.").map(str::to_string) else {
        return Err(SqsError::new(
            "UnknownOperationException",
            "InvalidAction",
            format!("X-Amz-Target {target:?} names no SQS action (AmazonSQS.<Action>)"),
        ));
    };
    if request.method() != hyper::Method::POST {
        return Err(SqsError::new(
            "InvalidAction",
            "InvalidAction",
            "SQS's JSON protocol is POST only",
        ));
    }
    let base = queue_url_base(&request, edge.secure);
    let (parts, body) = request.into_parts();
    let body = read_body(edge, body).await?;
    let caller = super::sigv4::authenticate(edge, &parts, &body)?;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            SqsError::new(
                "SerializationException",
                "MalformedQueryString",
                format!("the body is not JSON: {error}"),
            )
        })?
    };
    let Value::Object(input) = input else {
        return Err(SqsError::new(
            "SerializationException",
            "MalformedQueryString",
            "the body is not a JSON object",
        ));
    };
    let call = Call {
        edge,
        caller,
        input: &input,
        base,
    };
    dispatch(&call, &action).await
}

/// The request's body within the port's limits, refused as SQS refuses (413 when too large).
pub(super) async fn read_body(edge: &Edge, body: Incoming) -> Result<Bytes, SqsError> {
    edge.body(body).await.map_err(|error| {
        let mut sqs = SqsError::invalid(error.to_string());
        if matches!(error, super::BodyError::TooLarge) {
            sqs.status = StatusCode::PAYLOAD_TOO_LARGE;
        }
        sqs
    })
}

/// Runs `action` with `call`'s input (in the JSON protocol's shape: the query protocol's
/// codec converts to it) and returns its output in that shape.
pub(super) async fn dispatch(call: &Call<'_>, action: &str) -> Answer {
    match action {
        "CreateQueue" => call.create_queue().await,
        "GetQueueUrl" => call.get_queue_url().await,
        "ListQueues" => call.list_queues().await,
        "GetQueueAttributes" => call.get_queue_attributes().await,
        "SetQueueAttributes" => call.set_queue_attributes().await,
        "DeleteQueue" => call.delete_queue().await,
        "PurgeQueue" => call.purge_queue().await,
        "SendMessage" => call.send_message().await,
        "SendMessageBatch" => call.send_message_batch().await,
        "ReceiveMessage" => call.receive_message().await,
        "DeleteMessage" => call.delete_message().await,
        "DeleteMessageBatch" => call.delete_message_batch().await,
        "ChangeMessageVisibility" => call.change_message_visibility().await,
        "ChangeMessageVisibilityBatch" => call.change_message_visibility_batch().await,
        "ListDeadLetterSourceQueues" => call.list_dead_letter_source_queues().await,
        "StartMessageMoveTask" => call.start_message_move_task().await,
        other => Err(SqsError::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("Spool does not implement the SQS action {other} (see docs/compat.md)"),
        )),
    }
}

/// `{scheme}://{host}/{ACCOUNT_ID}/`, from the Host the client called.
pub(super) fn queue_url_base(request: &Request<Incoming>, secure: bool) -> String {
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{host}/{ACCOUNT_ID}/")
}

/// One request being answered.
pub(super) struct Call<'a> {
    pub(super) edge: &'a Edge,
    pub(super) caller: Caller,
    pub(super) input: &'a Map<String, Value>,
    /// Queue URLs are this and the name.
    pub(super) base: String,
}

impl Call<'_> {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        Edge::request(&self.caller, message)
    }

    fn url(&self, queue: &str) -> String {
        format!("{}{queue}", self.base)
    }

    fn string(&self, name: &str) -> Result<Option<&str>, SqsError> {
        match self.input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(SqsError::invalid(format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str, SqsError> {
        self.string(name)?.ok_or_else(|| SqsError::missing(name))
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, SqsError> {
        integer(self.input.get(name), name)
    }

    /// The queue a `QueueUrl` names: its last path segment.
    fn queue(&self) -> Result<String, SqsError> {
        let url = self.required("QueueUrl")?;
        queue_of_url(url)
    }

    async fn create_queue(&self) -> Answer {
        let name = self.required("QueueName")?.to_string();
        if name.ends_with(".fifo") {
            return Err(fifo_refused());
        }
        let given = attributes_map(self.input.get("Attributes"))?;
        let mut attributes = queue_attributes(&given)?;
        if attributes.max_message_size.is_none() {
            attributes.max_message_size = Some(DEFAULT_MAXIMUM_MESSAGE_SIZE);
        }
        let created = self
            .edge
            .service
            .create_queue(self.request(pb::CreateQueueRequest {
                queue_name: name.clone(),
                attributes: Some(attributes),
            }))
            .await;
        match created {
            Ok(_) => {}
            // SQS answers an existing queue's URL when the request sets no attributes.
            Err(status) if status.code() == Code::AlreadyExists && given.is_empty() => {}
            Err(status) => return Err(status.into()),
        }
        Ok(json!({ "QueueUrl": self.url(&name) }))
    }

    async fn get_queue_url(&self) -> Answer {
        let name = self.required("QueueName")?.to_string();
        self.edge
            .service
            .get_queue(self.request(pb::GetQueueRequest {
                queue_name: name.clone(),
            }))
            .await?;
        Ok(json!({ "QueueUrl": self.url(&name) }))
    }

    async fn list_queues(&self) -> Answer {
        let prefix = self
            .string("QueueNamePrefix")?
            .unwrap_or_default()
            .to_string();
        let page_size = match self.integer("MaxResults")? {
            None => 1000,
            Some(size @ 1..=1000) => size as u32,
            Some(size) => {
                return Err(SqsError::invalid(format!(
                    "MaxResults is {size}; it must be 1..=1000"
                )));
            }
        };
        let page_token = self.string("NextToken")?.unwrap_or_default().to_string();
        let page = self
            .edge
            .service
            .list_queues(self.request(pb::ListQueuesRequest {
                prefix,
                page_size,
                page_token,
            }))
            .await?
            .into_inner();
        let urls: Vec<Value> = page
            .queues
            .iter()
            .map(|queue| Value::String(self.url(&queue.name)))
            .collect();
        let mut answer = json!({ "QueueUrls": urls });
        if !page.next_page_token.is_empty() && self.input.contains_key("MaxResults") {
            answer["NextToken"] = Value::String(page.next_page_token);
        }
        Ok(answer)
    }

    async fn get_queue_attributes(&self) -> Answer {
        let name = self.queue()?;
        let wanted = names(self.input.get("AttributeNames"), "AttributeNames")?;
        let queue = self
            .edge
            .service
            .get_queue(self.request(pb::GetQueueRequest {
                queue_name: name.clone(),
            }))
            .await?
            .into_inner();
        let all = describe_queue(&queue);
        let mut shown = Map::new();
        for wanted in &wanted {
            if wanted == "All" {
                shown.extend(all.clone());
            } else if let Some(value) = all.get(wanted) {
                shown.insert(wanted.clone(), value.clone());
            } else if !KNOWN_QUEUE_ATTRIBUTES.contains(&wanted.as_str()) {
                return Err(SqsError::new(
                    "InvalidAttributeName",
                    "InvalidAttributeName",
                    format!("Unknown Attribute {wanted}."),
                ));
            }
        }
        if shown.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Attributes": shown }))
    }

    async fn set_queue_attributes(&self) -> Answer {
        let name = self.queue()?;
        let given = attributes_map(self.input.get("Attributes"))?;
        let attributes = queue_attributes(&given)?;
        self.edge
            .service
            .update_queue(self.request(pb::UpdateQueueRequest {
                queue_name: name,
                attributes: Some(attributes),
            }))
            .await?;
        Ok(json!({}))
    }

    async fn delete_queue(&self) -> Answer {
        let name = self.queue()?;
        self.edge
            .service
            .delete_queue(self.request(pb::DeleteQueueRequest { queue_name: name }))
            .await?;
        Ok(json!({}))
    }

    async fn purge_queue(&self) -> Answer {
        let name = self.queue()?;
        self.edge
            .service
            .purge_queue(self.request(pb::PurgeQueueRequest { queue_name: name }))
            .await?;
        Ok(json!({}))
    }

    async fn send_message(&self) -> Answer {
        let name = self.queue()?;
        let entry = outgoing(self.input, "")?;
        let sent = self
            .edge
            .service
            .send_message(self.request(pb::SendMessageRequest {
                queue_name: name,
                body: entry.body.clone().into_bytes().into(),
                delay_seconds: entry.delay_seconds,
                attributes: entry.attributes.clone(),
                deduplication_id: String::new(),
            }))
            .await?
            .into_inner();
        Ok(entry.answer(sent.message_id))
    }

    async fn send_message_batch(&self) -> Answer {
        let name = self.queue()?;
        let entries = batch_entries(self.input)?;
        let mut failed = Vec::new();
        let mut valid = Vec::new();
        for entry in entries {
            let id = entry_id(entry)?;
            match outgoing(entry, "") {
                Ok(message) => valid.push((id, message)),
                Err(error) => failed.push(batch_failure(&id, &error)),
            }
        }
        let mut successful = Vec::new();
        if !valid.is_empty() {
            let sent = self
                .edge
                .service
                .batch_send_messages(
                    self.request(pb::BatchSendMessagesRequest {
                        queue_name: name,
                        entries: valid
                            .iter()
                            .map(|(_, message)| pb::BatchSendEntry {
                                body: message.body.clone().into_bytes().into(),
                                delay_seconds: message.delay_seconds,
                                attributes: message.attributes.clone(),
                                deduplication_id: String::new(),
                            })
                            .collect(),
                    }),
                )
                .await;
            match sent {
                Ok(sent) => {
                    for ((id, message), message_id) in
                        valid.iter().zip(sent.into_inner().message_ids)
                    {
                        let mut answer = message.answer(message_id);
                        answer["Id"] = Value::String(id.clone());
                        successful.push(answer);
                    }
                }
                // A queue-wide refusal fails the request; one about the messages fails them all.
                Err(status) if status.code() == Code::InvalidArgument => {
                    let error = SqsError::from(status);
                    for (id, _) in &valid {
                        failed.push(batch_failure(id, &error));
                    }
                }
                Err(status) => return Err(status.into()),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn receive_message(&self) -> Answer {
        let name = self.queue()?;
        let max_messages = match self.integer("MaxNumberOfMessages")? {
            None => 1,
            Some(max @ 1..=10) => max as u32,
            Some(max) => {
                return Err(SqsError::invalid(format!(
                    "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be \
                     between 1 and {MAX_RECEIVE}, if provided."
                )));
            }
        };
        let wait_seconds = match self.integer("WaitTimeSeconds")? {
            None => None,
            Some(wait @ 0..=20) => Some(wait as u32),
            Some(wait) => {
                return Err(SqsError::invalid(format!(
                    "Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 \
                     and <= {MAX_WAIT_SECONDS}, if provided."
                )));
            }
        };
        let visibility_timeout_seconds = match self.integer("VisibilityTimeout")? {
            None => None,
            Some(visibility @ 0..=43_200) => Some(visibility as u32),
            Some(visibility) => {
                return Err(SqsError::invalid(format!(
                    "Value {visibility} for parameter VisibilityTimeout is invalid. Reason: Must \
                     be >= 0 and <= 43200, if provided."
                )));
            }
        };
        let mut system = names(self.input.get("AttributeNames"), "AttributeNames")?;
        system.extend(names(
            self.input.get("MessageSystemAttributeNames"),
            "MessageSystemAttributeNames",
        )?);
        let wanted_attributes = names(
            self.input.get("MessageAttributeNames"),
            "MessageAttributeNames",
        )?;
        // Spool's smallest visibility timeout is 1 s: SQS's 0 (visible again at once) is the
        // nearest it can do.
        let visibility_timeout_seconds = visibility_timeout_seconds.map(|v| v.max(1));
        let messages = self
            .edge
            .receive(
                &self.caller,
                pb::ReceiveMessagesRequest {
                    queue_name: name,
                    max_messages,
                    wait_seconds,
                    visibility_timeout_seconds,
                },
            )
            .await?;
        if messages.is_empty() {
            return Ok(json!({}));
        }
        let messages: Vec<Value> = messages
            .iter()
            .map(|message| received(message, &system, &wanted_attributes))
            .collect();
        Ok(json!({ "Messages": messages }))
    }

    async fn delete_message(&self) -> Answer {
        let name = self.queue()?;
        let receipt_handle = self.required("ReceiptHandle")?.to_string();
        let deleted = self
            .edge
            .service
            .delete_message(self.request(pb::DeleteMessageRequest {
                queue_name: name,
                receipt_handle,
            }))
            .await;
        match deleted {
            Ok(_) => Ok(json!({})),
            // SQS: a handle that is no longer the newest "succeeds, but the message will not
            // be deleted".
            Err(status) if status.code() == Code::FailedPrecondition => Ok(json!({})),
            Err(status) => Err(status.into()),
        }
    }

    async fn delete_message_batch(&self) -> Answer {
        let name = self.queue()?;
        let entries = batch_entries(self.input)?;
        let mut ids = Vec::with_capacity(entries.len());
        let mut handles = Vec::with_capacity(entries.len());
        for entry in entries {
            ids.push(entry_id(entry)?);
            handles.push(
                string_field(entry, "ReceiptHandle")?
                    .ok_or_else(|| SqsError::missing("ReceiptHandle"))?
                    .to_string(),
            );
        }
        let answer = self
            .edge
            .service
            .batch_delete_messages(self.request(pb::BatchDeleteMessagesRequest {
                queue_name: name,
                receipt_handles: handles.clone(),
            }))
            .await?
            .into_inner();
        let mut failed_at = BTreeMap::new();
        let mut used = vec![false; handles.len()];
        for failure in answer.failures {
            // Superseded handles "succeed" as on DeleteMessage.
            if failure.code == Code::FailedPrecondition as i32 {
                continue;
            }
            if let Some(index) = handles
                .iter()
                .enumerate()
                .position(|(i, h)| !used[i] && *h == failure.receipt_handle)
            {
                used[index] = true;
                let error = SqsError::from(Status::new(Code::from(failure.code), failure.message));
                failed_at.insert(index, batch_failure(&ids[index], &error));
            }
        }
        let successful: Vec<Value> = ids
            .iter()
            .enumerate()
            .filter(|(index, _)| !failed_at.contains_key(index))
            .map(|(_, id)| json!({ "Id": id }))
            .collect();
        let failed: Vec<Value> = failed_at.into_values().collect();
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn list_dead_letter_source_queues(&self) -> Answer {
        let name = self.queue()?;
        let sources = self
            .edge
            .service
            .list_dead_letter_source_queues(
                self.request(pb::ListDeadLetterSourceQueuesRequest { queue_name: name }),
            )
            .await?
            .into_inner();
        let urls: Vec<Value> = sources
            .queue_names
            .iter()
            .map(|queue| Value::String(self.url(queue)))
            .collect();
        // SQS spells this member in lower camel case.
        Ok(json!({ "queueUrls": urls }))
    }

    /// SQS's redrive: moves the messages of a dead-letter queue (`SourceArn`) back to the
    /// queues they came from, or to `DestinationArn`. Spool's RedriveMessages does it at once
    /// (each move durable before the answer); the task handle names what was done.
    async fn start_message_move_task(&self) -> Answer {
        let source = self.required("SourceArn")?;
        let queue = arn_queue(source)?;
        let destination = match self.string("DestinationArn")? {
            Some(arn) => arn_queue(arn)?,
            None => String::new(),
        };
        let moved = self
            .edge
            .service
            .redrive_messages(self.request(pb::RedriveMessagesRequest {
                queue_name: queue.clone(),
                destination_queue: destination,
                max_messages: 0,
            }))
            .await?
            .into_inner();
        Ok(json!({
            "TaskHandle": format!("spool-redrive:{queue}:{}", moved.redriven_messages),
        }))
    }

    async fn change_message_visibility(&self) -> Answer {
        let name = self.queue()?;
        let receipt_handle = self.required("ReceiptHandle")?.to_string();
        let visibility = visibility_timeout(self.input)?;
        self.edge
            .service
            .change_message_visibility(self.request(pb::ChangeMessageVisibilityRequest {
                queue_name: name,
                receipt_handle,
                visibility_timeout_seconds: visibility,
            }))
            .await?;
        Ok(json!({}))
    }

    async fn change_message_visibility_batch(&self) -> Answer {
        let name = self.queue()?;
        let entries = batch_entries(self.input)?;
        let mut ids = Vec::with_capacity(entries.len());
        let mut changes = Vec::with_capacity(entries.len());
        for entry in entries {
            ids.push(entry_id(entry)?);
            changes.push(pb::ChangeVisibilityEntry {
                receipt_handle: string_field(entry, "ReceiptHandle")?
                    .ok_or_else(|| SqsError::missing("ReceiptHandle"))?
                    .to_string(),
                visibility_timeout_seconds: visibility_timeout(entry)?,
            });
        }
        let answer = self
            .edge
            .service
            .batch_change_message_visibility(self.request(
                pb::BatchChangeMessageVisibilityRequest {
                    queue_name: name,
                    entries: changes,
                },
            ))
            .await?
            .into_inner();
        let successful: Vec<Value> = answer
            .changed
            .iter()
            .filter_map(|changed| ids.get(changed.index as usize))
            .map(|id| json!({ "Id": id }))
            .collect();
        let failed: Vec<Value> = answer
            .failures
            .into_iter()
            .filter_map(|failure| {
                let id = ids.get(failure.index as usize)?;
                let error = SqsError::from(Status::new(Code::from(failure.code), failure.message));
                Some(batch_failure(id, &error))
            })
            .collect();
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }
}

/// SQS's answer to a FIFO queue: Spool has no message groups.
fn fifo_refused() -> SqsError {
    SqsError::new(
        "InvalidAttributeName",
        "InvalidAttributeName",
        "FIFO queues (FifoQueue, a .fifo name) are not supported: Spool has no message groups \
         (see docs/compat.md)",
    )
}

/// The queue an SQS ARN names (`arn:aws:sqs:<region>:<account>:<queue>`).
fn arn_queue(arn: &str) -> Result<String, SqsError> {
    match arn.strip_prefix("arn:").map(|rest| rest.rsplit(':').next()) {
        Some(Some(queue)) if !queue.is_empty() => Ok(queue.to_string()),
        _ => Err(SqsError::invalid(format!("{arn:?} is not a queue ARN"))),
    }
}

/// The queue a queue URL names (its last path segment).
pub fn queue_of_url(url: &str) -> Result<String, SqsError> {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    // The path: after the scheme's `://` and the authority.
    let path = match url.split_once("://") {
        Some((_, rest)) => rest
            .split_once('/')
            .map(|(_, path)| path)
            .unwrap_or_default(),
        None => url,
    };
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if name.is_empty() || name.contains(':') {
        return Err(SqsError::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            format!("{url:?} is not a queue URL ({{endpoint}}/{ACCOUNT_ID}/{{queue}})"),
        ));
    }
    Ok(name.to_string())
}

fn integer(value: Option<&Value>, name: &str) -> Result<Option<i64>, SqsError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_i64()
            .map(Some)
            .ok_or_else(|| SqsError::invalid(format!("{name} must be an integer"))),
        // Attribute values and some SDKs' numbers come as strings.
        Some(Value::String(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| SqsError::invalid(format!("{name} must be an integer, not {text:?}"))),
        Some(_) => Err(SqsError::invalid(format!("{name} must be an integer"))),
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, SqsError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(SqsError::invalid(format!("{name} must be a string"))),
    }
}

/// A list of names (`AttributeNames`, ...).
fn names(value: Option<&Value>, field: &str) -> Result<Vec<String>, SqsError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| SqsError::invalid(format!("{field} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(SqsError::invalid(format!(
            "{field} must be a list of strings"
        ))),
    }
}

/// A string → string map (`Attributes`).
fn attributes_map(value: Option<&Value>) -> Result<BTreeMap<String, String>, SqsError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                Value::Number(number) => Ok((key.clone(), number.to_string())),
                _ => Err(SqsError::new(
                    "InvalidAttributeValue",
                    "InvalidAttributeValue",
                    format!("Invalid value for the parameter {key}."),
                )),
            })
            .collect(),
        Some(_) => Err(SqsError::invalid("Attributes must be a map of strings")),
    }
}

/// The queue attributes SQS names, whether or not Spool keeps them.
const KNOWN_QUEUE_ATTRIBUTES: &[&str] = &[
    "All",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "DelaySeconds",
    "QueueArn",
    "Policy",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// SQS queue attributes as Spool's; a name Spool does not keep is refused as SQS refuses
/// unknown ones, a value out of SQS's range as SQS does.
fn queue_attributes(given: &BTreeMap<String, String>) -> Result<pb::QueueAttributes, SqsError> {
    let mut attributes = pb::QueueAttributes::default();
    for (name, value) in given {
        let number = |low: u32, high: u32| -> Result<u32, SqsError> {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (low..=high).contains(n))
                .ok_or_else(|| {
                    SqsError::new(
                        "InvalidAttributeValue",
                        "InvalidAttributeValue",
                        format!(
                            "Invalid value for the parameter {name}: {value:?} (it must be \
                             {low}..={high})"
                        ),
                    )
                })
        };
        match name.as_str() {
            // Spool's shortest visibility timeout is 1 s.
            "VisibilityTimeout" => {
                attributes.visibility_timeout_seconds = Some(number(0, 43_200)?.max(1))
            }
            "MaximumMessageSize" => attributes.max_message_size = Some(number(1_024, 1_048_576)?),
            "MessageRetentionPeriod" => {
                attributes.message_retention_seconds = Some(number(60, 1_209_600)?)
            }
            "ReceiveMessageWaitTimeSeconds" => {
                attributes.polling_wait_seconds = Some(number(0, MAX_WAIT_SECONDS)?)
            }
            // A queue-wide delay Spool does not have: only SQS's default is taken.
            "DelaySeconds" => {
                if number(0, MAX_DELAY_SECONDS)? != 0 {
                    return Err(SqsError::new(
                        "InvalidAttributeValue",
                        "InvalidAttributeValue",
                        "DelaySeconds other than 0 is not supported on a queue: give \
                         DelaySeconds on each send (see docs/compat.md)",
                    ));
                }
            }
            "FifoQueue"
            | "ContentBasedDeduplication"
            | "DeduplicationScope"
            | "FifoThroughputLimit" => {
                if value != "false" {
                    return Err(fifo_refused());
                }
            }
            "RedrivePolicy" => attributes.dead_letter_policy = Some(redrive_policy(value)?),
            // Encryption at rest is the disk's; SQS's managed SSE flag is accepted as said.
            "SqsManagedSseEnabled" => {}
            _ => {
                return Err(SqsError::new(
                    "InvalidAttributeName",
                    "InvalidAttributeName",
                    format!("Unknown or unsupported Attribute {name} (see docs/compat.md)."),
                ));
            }
        }
    }
    Ok(attributes)
}

/// SQS's RedrivePolicy (`{"deadLetterTargetArn":"arn:...:<queue>","maxReceiveCount":n}`, the
/// count as a number or a string) as Spool's dead-letter policy; an empty value removes it.
fn redrive_policy(value: &str) -> Result<pb::DeadLetterPolicy, SqsError> {
    let refused = |why: &str| {
        SqsError::new(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            format!("Value {value} for parameter RedrivePolicy is invalid. Reason: {why}."),
        )
    };
    if value.trim().is_empty() {
        return Ok(pb::DeadLetterPolicy::default());
    }
    let policy: Value = serde_json::from_str(value).map_err(|_| refused("Invalid JSON"))?;
    let target = policy
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            refused("Redrive policy does not contain mandatory attribute: deadLetterTargetArn")
        })?;
    let queue = target
        .rsplit(':')
        .next()
        .filter(|name| !name.is_empty() && target.starts_with("arn:"))
        .ok_or_else(|| refused("Invalid value for deadLetterTargetArn"))?;
    let count = integer(policy.get("maxReceiveCount"), "maxReceiveCount")
        .ok()
        .flatten()
        .ok_or_else(|| {
            refused("Redrive policy does not contain mandatory attribute: maxReceiveCount")
        })?;
    if !(1..=1000).contains(&count) {
        return Err(refused("Invalid value for maxReceiveCount: 1..=1000"));
    }
    Ok(pb::DeadLetterPolicy {
        dead_letter_queue: queue.to_string(),
        max_receive_count: count as u32,
        ..Default::default()
    })
}

/// A queue's attributes as GetQueueAttributes shows them (all strings).
fn describe_queue(queue: &pb::Queue) -> Map<String, Value> {
    let attributes = queue.attributes.clone().unwrap_or_default();
    let stats = queue.stats.unwrap_or_default();
    let seconds = |time: &Option<prost_types::Timestamp>| {
        time.as_ref()
            .map(|t| t.seconds)
            .unwrap_or_default()
            .to_string()
    };
    let mut map = Map::new();
    let mut put = |name: &str, value: String| {
        map.insert(name.to_string(), Value::String(value));
    };
    put(
        "ApproximateNumberOfMessages",
        stats.active_messages.to_string(),
    );
    put(
        "ApproximateNumberOfMessagesNotVisible",
        stats.inactive_messages.to_string(),
    );
    put(
        "ApproximateNumberOfMessagesDelayed",
        stats.delayed_messages.to_string(),
    );
    put("CreatedTimestamp", seconds(&queue.create_time));
    put("LastModifiedTimestamp", seconds(&queue.update_time));
    put(
        "VisibilityTimeout",
        attributes
            .visibility_timeout_seconds
            .unwrap_or_default()
            .to_string(),
    );
    put(
        "MaximumMessageSize",
        attributes.max_message_size.unwrap_or_default().to_string(),
    );
    put(
        "MessageRetentionPeriod",
        attributes
            .message_retention_seconds
            .unwrap_or_default()
            .to_string(),
    );
    put(
        "ReceiveMessageWaitTimeSeconds",
        attributes
            .polling_wait_seconds
            .unwrap_or_default()
            .to_string(),
    );
    put("DelaySeconds", "0".to_string());
    put("QueueArn", arn(&queue.name));
    if let Some(policy) = attributes
        .dead_letter_policy
        .as_ref()
        .filter(|policy| !policy.dead_letter_queue.is_empty())
    {
        put(
            "RedrivePolicy",
            json!({
                "deadLetterTargetArn": arn(&policy.dead_letter_queue),
                "maxReceiveCount": policy.max_receive_count,
            })
            .to_string(),
        );
    }
    put("SqsManagedSseEnabled", "false".to_string());
    map
}

/// The entries of a batch request, checked as SQS checks them.
fn batch_entries(input: &Map<String, Value>) -> Result<Vec<&Map<String, Value>>, SqsError> {
    let entries = match input.get("Entries") {
        None | Some(Value::Null) => return Err(SqsError::missing("Entries")),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(SqsError::invalid("Entries must be a list")),
    };
    if entries.is_empty() {
        return Err(SqsError::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        ));
    }
    if entries.len() > MAX_SQS_BATCH {
        return Err(SqsError::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {MAX_SQS_BATCH}. You have sent {}.",
                entries.len()
            ),
        ));
    }
    let mut objects = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        let Value::Object(object) = entry else {
            return Err(SqsError::invalid("each entry must be an object"));
        };
        let id = entry_id(object)?;
        if !seen.insert(id.clone()) {
            return Err(SqsError::new(
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
        objects.push(object);
    }
    Ok(objects)
}

fn entry_id(entry: &Map<String, Value>) -> Result<String, SqsError> {
    let id = string_field(entry, "Id")?.ok_or_else(|| SqsError::missing("Id"))?;
    let valid = !id.is_empty()
        && id.len() <= MAX_ENTRY_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(SqsError::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            format!(
                "A batch entry id can only contain alphanumeric characters, hyphens and \
                 underscores. It can be at most {MAX_ENTRY_ID_LEN} letters long."
            ),
        ));
    }
    Ok(id.to_string())
}

fn batch_failure(id: &str, error: &SqsError) -> Value {
    json!({
        "Id": id,
        "SenderFault": !error.status.is_server_error(),
        "Code": error.query_code,
        "Message": error.message,
    })
}

fn visibility_timeout(object: &Map<String, Value>) -> Result<u32, SqsError> {
    match integer(object.get("VisibilityTimeout"), "VisibilityTimeout")? {
        None => Err(SqsError::missing("VisibilityTimeout")),
        Some(value @ 0..=43_200) => Ok(value as u32),
        Some(value) => Err(SqsError::invalid(format!(
            "Value {value} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and \
             <= 43200."
        ))),
    }
}

/// One message to send, as SendMessage or a batch entry gives it.
struct Outgoing {
    body: String,
    delay_seconds: Option<u32>,
    /// Its SQS message attributes in Spool's map (`sqs_attributes`).
    attributes: std::collections::HashMap<String, String>,
    /// MD5OfMessageAttributes, when it has attributes.
    attributes_md5: Option<String>,
}

impl Outgoing {
    fn answer(&self, message_id: String) -> Value {
        let mut answer = json!({
            "MessageId": message_id,
            "MD5OfMessageBody": md5_hex(self.body.as_bytes()),
        });
        if let Some(md5) = &self.attributes_md5 {
            answer["MD5OfMessageAttributes"] = Value::String(md5.clone());
        }
        answer
    }
}

fn outgoing(object: &Map<String, Value>, _prefix: &str) -> Result<Outgoing, SqsError> {
    let body =
        string_field(object, "MessageBody")?.ok_or_else(|| SqsError::missing("MessageBody"))?;
    if body.is_empty() {
        return Err(SqsError::missing("MessageBody"));
    }
    if let Some(c) = body.chars().find(|c| !valid_body_char(*c)) {
        return Err(SqsError::new(
            "InvalidMessageContents",
            "InvalidMessageContents",
            format!(
                "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | \
                 #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF (found U+{:04X})",
                c as u32
            ),
        ));
    }
    let delay_seconds = match integer(object.get("DelaySeconds"), "DelaySeconds")? {
        None => None,
        Some(delay @ 0..=900) => Some(delay as u32),
        Some(delay) => {
            return Err(SqsError::invalid(format!(
                "Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must \
                 be >= 0 and <= {MAX_DELAY_SECONDS}."
            )));
        }
    };
    for fifo_only in ["MessageGroupId", "MessageDeduplicationId"] {
        if object.contains_key(fifo_only) {
            return Err(SqsError::invalid(format!(
                "The request include parameter that is not valid for this queue type: \
                 {fifo_only} (Spool has no FIFO queues)"
            )));
        }
    }
    let attributes = sqs_attributes::parse(object.get("MessageAttributes"))?;
    Ok(Outgoing {
        body: body.to_string(),
        delay_seconds,
        attributes: sqs_attributes::to_map(&attributes),
        attributes_md5: sqs_attributes::md5_of(&attributes),
    })
}

/// The characters SQS allows in a message body.
fn valid_body_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{a}' | '\u{d}' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
}

fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn millis(time: &Option<prost_types::Timestamp>) -> i64 {
    time.as_ref()
        .map(|t| t.seconds * 1_000 + i64::from(t.nanos / 1_000_000))
        .unwrap_or_default()
}

/// A received message as ReceiveMessage answers it, with the system attributes asked for.
fn received(message: &pb::ReceivedMessage, system: &[String], wanted: &[String]) -> Value {
    let body = String::from_utf8_lossy(&message.body).into_owned();
    let mut answer = json!({
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt_handle,
        "MD5OfBody": md5_hex(body.as_bytes()),
        "Body": body,
    });
    let all = system.iter().any(|name| name == "All");
    let wants = |name: &str| all || system.iter().any(|wanted| wanted == name);
    let mut attributes = Map::new();
    if wants("SentTimestamp") {
        attributes.insert(
            "SentTimestamp".into(),
            Value::String(millis(&message.enqueue_time).to_string()),
        );
    }
    if wants("ApproximateReceiveCount") {
        attributes.insert(
            "ApproximateReceiveCount".into(),
            Value::String(message.dequeue_count.to_string()),
        );
    }
    if wants("ApproximateFirstReceiveTimestamp") {
        attributes.insert(
            "ApproximateFirstReceiveTimestamp".into(),
            Value::String(millis(&message.first_dequeue_time).to_string()),
        );
    }
    if wants("SenderId") {
        attributes.insert("SenderId".into(), Value::String(ACCOUNT_ID.into()));
    }
    if wants("DeadLetterQueueSourceArn") && !message.dead_letter_source_queue.is_empty() {
        attributes.insert(
            "DeadLetterQueueSourceArn".into(),
            Value::String(arn(&message.dead_letter_source_queue)),
        );
    }
    if !attributes.is_empty() {
        answer["Attributes"] = Value::Object(attributes);
    }
    let shown = sqs_attributes::select(sqs_attributes::from_map(&message.attributes), wanted);
    if let Some(md5) = sqs_attributes::md5_of(&shown) {
        answer["MessageAttributes"] = sqs_attributes::to_json(&shown);
        answer["MD5OfMessageAttributes"] = Value::String(md5);
    }
    answer
}

/// A queue's ARN.
fn arn(queue: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_of_a_url_is_its_last_segment() {
        let name = queue_of_url("http://127.0.0.1:9324/000000000000/orders").expect("url");
        assert_eq!(name, "orders");
        assert_eq!(
            queue_of_url("http://h/000000000000/orders/").expect("url"),
            "orders"
        );
        assert!(queue_of_url("http://h/").is_err());
    }

    #[test]
    fn md5_of_a_body_is_hex() {
        // RFC 1321's test vector.
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
