//! Amazon SQS's older query protocol: form-encoded `Action=<Action>&Version=2012-11-05&...` (a
//! POST body, or a GET query), answered in XML, as AWS SDKs sent before SQS moved to JSON
//! (botocore until 1.31, the AWS CLI v1 of that time, many other SDKs' older releases).
//!
//! A codec, not a second implementation: the request's parameters become the JSON protocol's
//! input (`Attribute.1.Name`/`Attribute.1.Value` → `"Attributes": {name: value}`,
//! `SendMessageBatchRequestEntry.2.Id` → `"Entries"[1]["Id"]`, ...), the action runs as
//! [`sqs::dispatch`] runs it for JSON, and its output becomes SQS's XML
//! (`<ReceiveMessageResponse><ReceiveMessageResult><Message>...`). Errors are SQS's XML errors
//! (`<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue
//! </Code>...`), with the query protocol's codes the JSON protocol sends in
//! `x-amzn-query-error`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};
use tonic::Code;

use super::sqs::{self, Answer, Call, SqsError};
use super::{Edge, request_id};
use crate::metrics::Method;

/// Parameters of one request at most: a batch of 10 entries, each with 10 message attributes
/// of 3 parameters, has about 400.
pub const MAX_QUERY_PARAMETERS: usize = 2048;
/// The largest `N` of a list or map member (`AttributeName.N`): SQS's lists are short.
const MAX_INDEX: usize = 1000;
/// The XML namespace of SQS's answers.
const NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// Whether `request` speaks the query protocol: a form-encoded POST, or `Action=` in the URL.
pub fn is_query(request: &Request<Incoming>) -> bool {
    let form = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let action_in_url = request
        .uri()
        .query()
        .is_some_and(|query| form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "Action"));
    (request.method() == hyper::Method::POST && form) || action_in_url
}

/// Answers one request of the query protocol; also returns the action and the outcome's gRPC
/// code, for the metrics.
pub async fn answer(
    edge: &Edge,
    request: Request<Incoming>,
) -> (Response<Full<Bytes>>, Method, Code) {
    let id = request_id();
    let mut action = String::new();
    let outcome = handle(edge, request, &mut action).await;
    let method = Method::of_http_action("sqs", &action);
    match outcome {
        Ok(output) => {
            let body = document(&action, &output, &id);
            (xml_response(StatusCode::OK, body, &id), method, Code::Ok)
        }
        Err(error) => {
            let body = error_document(&error, &id);
            let outcome = error.outcome;
            (xml_response(error.status, body, &id), method, outcome)
        }
    }
}

async fn handle(edge: &Edge, request: Request<Incoming>, action: &mut String) -> Answer {
    let method = request.method().clone();
    if method != hyper::Method::GET && method != hyper::Method::POST {
        return Err(SqsError::new(
            "InvalidAction",
            "InvalidAction",
            "SQS's query protocol is GET or POST",
        ));
    }
    let base = sqs::queue_url_base(&request, edge.secure);
    let (parts, body) = request.into_parts();
    let body = sqs::read_body(edge, body).await?;
    let caller = super::sigv4::authenticate(edge, &parts, &body)?;
    let mut params = BTreeMap::new();
    if let Some(query) = parts.uri.query() {
        collect(&mut params, query.as_bytes())?;
    }
    collect(&mut params, &body)?;
    action.clone_from(params.get("Action").unwrap_or(&String::new()));
    if action.is_empty() {
        return Err(SqsError::new(
            "MissingAction",
            "MissingAction",
            "The request must contain the parameter Action.",
        ));
    }
    let mut input = decode(&params)?;
    // Older SDKs address a queue by posting to its URL rather than naming it in QueueUrl.
    let path = parts.uri.path().trim_matches('/');
    if !input.contains_key("QueueUrl") && path.split('/').count() == 2 {
        let queue = path.rsplit('/').next().unwrap_or_default();
        input.insert("QueueUrl".into(), Value::String(format!("{base}{queue}")));
    }
    let call = Call {
        edge,
        caller,
        input: &input,
        base,
    };
    sqs::dispatch(&call, action).await
}

/// Adds the form-encoded pairs of `text` to `params` (later ones win), bounded in number.
fn collect(params: &mut BTreeMap<String, String>, text: &[u8]) -> Result<(), SqsError> {
    for (key, value) in form_urlencoded::parse(text) {
        if params.len() >= MAX_QUERY_PARAMETERS && !params.contains_key(key.as_ref()) {
            return Err(malformed(format!(
                "the request has more than {MAX_QUERY_PARAMETERS} parameters"
            )));
        }
        params.insert(key.into_owned(), value.into_owned());
    }
    Ok(())
}

fn malformed(message: String) -> SqsError {
    SqsError::new("MalformedQueryString", "MalformedQueryString", message)
}

/// A parameter name's dotted parts, as a tree: `Attribute.1.Name=x` is
/// `Attribute → 1 → Name → "x"`.
enum Node {
    Leaf(String),
    Tree(BTreeMap<String, Node>),
}

/// How the query protocol spells a member of the JSON protocol's input that is not a plain
/// value: flattened lists (`AttributeName.N`) and maps (`Attribute.N.Name`, `.Value`).
enum Shape {
    List(&'static str),
    Map {
        member: &'static str,
        key: &'static str,
        value: &'static str,
    },
}

/// The query protocol's name of each list and map member (SQS's service model's
/// `locationName`s) and the JSON protocol's.
fn shape_of(query_name: &str) -> Option<Shape> {
    let map = |member, key, value| Some(Shape::Map { member, key, value });
    match query_name {
        "AttributeName" => Some(Shape::List("AttributeNames")),
        "MessageAttributeName" => Some(Shape::List("MessageAttributeNames")),
        "MessageSystemAttributeName" => Some(Shape::List("MessageSystemAttributeNames")),
        "SendMessageBatchRequestEntry"
        | "DeleteMessageBatchRequestEntry"
        | "ChangeMessageVisibilityBatchRequestEntry" => Some(Shape::List("Entries")),
        "StringListValue" => Some(Shape::List("StringListValues")),
        "BinaryListValue" => Some(Shape::List("BinaryListValues")),
        "Attribute" => map("Attributes", "Name", "Value"),
        "MessageAttribute" => map("MessageAttributes", "Name", "Value"),
        "MessageSystemAttribute" => map("MessageSystemAttributes", "Name", "Value"),
        "Tag" => map("tags", "Key", "Value"),
        _ => None,
    }
}

/// The JSON protocol's input for the query protocol's parameters.
fn decode(params: &BTreeMap<String, String>) -> Result<Map<String, Value>, SqsError> {
    let mut root = BTreeMap::new();
    for (name, value) in params {
        insert(&mut root, name, value.clone())?;
    }
    structure(root)
}

fn insert(tree: &mut BTreeMap<String, Node>, name: &str, value: String) -> Result<(), SqsError> {
    let conflict = || malformed(format!("the parameter {name} conflicts with another"));
    match name.split_once('.') {
        None => match tree.insert(name.to_string(), Node::Leaf(value)) {
            Some(Node::Tree(_)) => Err(conflict()),
            _ => Ok(()),
        },
        Some((head, rest)) => {
            let node = tree
                .entry(head.to_string())
                .or_insert_with(|| Node::Tree(BTreeMap::new()));
            match node {
                Node::Tree(children) => insert(children, rest, value),
                Node::Leaf(_) => Err(conflict()),
            }
        }
    }
}

fn structure(tree: BTreeMap<String, Node>) -> Result<Map<String, Value>, SqsError> {
    let mut out = Map::new();
    for (name, node) in tree {
        match shape_of(&name) {
            Some(Shape::List(member)) => {
                let items = indexed(&name, node)?
                    .into_iter()
                    .map(value)
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(member.into(), Value::Array(items));
            }
            Some(Shape::Map {
                member,
                key,
                value: value_name,
            }) => {
                let mut map = Map::new();
                for entry in indexed(&name, node)? {
                    let Node::Tree(mut fields) = entry else {
                        return Err(malformed(format!(
                            "{name}.N must have .{key} and .{value_name}"
                        )));
                    };
                    let Some(Node::Leaf(entry_key)) = fields.remove(key) else {
                        return Err(SqsError::missing(&format!("{name}.N.{key}")));
                    };
                    let entry_value = match fields.remove(value_name) {
                        Some(node) => value(node)?,
                        None => Value::Null,
                    };
                    map.insert(entry_key, entry_value);
                }
                out.insert(member.into(), Value::Object(map));
            }
            None => {
                out.insert(name, value(node)?);
            }
        }
    }
    Ok(out)
}

fn value(node: Node) -> Result<Value, SqsError> {
    match node {
        Node::Leaf(text) => Ok(Value::String(text)),
        Node::Tree(children) => structure(children).map(Value::Object),
    }
}

/// The members `name.1`, `name.2`, ... in order of N.
fn indexed(name: &str, node: Node) -> Result<Vec<Node>, SqsError> {
    let Node::Tree(children) = node else {
        return Err(malformed(format!(
            "{name} is a list: {name}.1, {name}.2, ..."
        )));
    };
    let mut numbered = Vec::with_capacity(children.len());
    for (index, child) in children {
        match index.parse::<usize>() {
            Ok(n) if (1..=MAX_INDEX).contains(&n) => numbered.push((n, child)),
            _ => {
                return Err(malformed(format!(
                    "{name}.{index}: a member's number is 1..={MAX_INDEX}"
                )));
            }
        }
    }
    numbered.sort_by_key(|(n, _)| *n);
    Ok(numbered.into_iter().map(|(_, child)| child).collect())
}

/// `<{Action}Response><{Action}Result>output</...><ResponseMetadata>...`.
fn document(action: &str, output: &Value, request_id: &str) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(&format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>"
    ));
    if let Value::Object(members) = output {
        for (name, member) in members {
            element(&mut out, action, name, member);
        }
    }
    out.push_str(&format!(
        "</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </{action}Response>",
        escape(request_id)
    ));
    out
}

/// The element name of one item of a flattened list (the service model's member
/// `locationName`), by the JSON protocol's member name.
fn item_name(action: &str, member: &str) -> String {
    match member {
        "QueueUrls" | "queueUrls" => "QueueUrl".into(),
        "Messages" => "Message".into(),
        "Successful" => format!("{action}ResultEntry"),
        "Failed" => "BatchResultErrorEntry".into(),
        "StringListValues" => "StringListValue".into(),
        "BinaryListValues" => "BinaryListValue".into(),
        other => other.into(),
    }
}

/// The element name of one entry of a flattened map, by the JSON protocol's member name.
fn entry_name(member: &str) -> Option<&'static str> {
    match member {
        "Attributes" => Some("Attribute"),
        "MessageAttributes" => Some("MessageAttribute"),
        _ => None,
    }
}

fn element(out: &mut String, action: &str, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            let item = item_name(action, name);
            for each in items {
                element(out, action, &item, each);
            }
        }
        Value::Object(members) => match entry_name(name) {
            Some(entry) => {
                for (key, each) in members {
                    out.push_str(&format!("<{entry}><Name>{}</Name>", escape(key)));
                    element(out, action, "Value", each);
                    out.push_str(&format!("</{entry}>"));
                }
            }
            None => {
                out.push_str(&format!("<{name}>"));
                for (key, each) in members {
                    element(out, action, key, each);
                }
                out.push_str(&format!("</{name}>"));
            }
        },
        Value::String(text) => out.push_str(&format!("<{name}>{}</{name}>", escape(text))),
        Value::Number(number) => out.push_str(&format!("<{name}>{number}</{name}>")),
        Value::Bool(flag) => out.push_str(&format!("<{name}>{flag}</{name}>")),
    }
}

fn error_document(error: &SqsError, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{}</Type>\
         <Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{}</RequestId>\
         </ErrorResponse>",
        error.fault(),
        escape(error.query_code),
        escape(&error.message),
        escape(request_id)
    )
}

/// Text as XML character data: markup escaped, and a carriage return as a reference (a
/// parser would turn a literal one into a line feed, and bodies may carry it).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flattened_lists_and_maps_become_the_json_protocols_input() {
        let input = decode(&params(&[
            ("Action", "SendMessageBatch"),
            ("QueueUrl", "http://h/000000000000/q"),
            ("SendMessageBatchRequestEntry.2.Id", "b"),
            ("SendMessageBatchRequestEntry.2.MessageBody", "two"),
            ("SendMessageBatchRequestEntry.10.Id", "c"),
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            ("SendMessageBatchRequestEntry.1.MessageBody", "one"),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
                "n",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
                "Number",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
                "7",
            ),
            ("AttributeName.2", "B"),
            ("AttributeName.1", "A"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "5"),
        ]))
        .expect("decoded");
        assert_eq!(
            Value::Object(input),
            json!({
                "Action": "SendMessageBatch",
                "QueueUrl": "http://h/000000000000/q",
                "AttributeNames": ["A", "B"],
                "Attributes": {"VisibilityTimeout": "5"},
                "Entries": [
                    {"Id": "a", "MessageBody": "one", "MessageAttributes":
                        {"n": {"DataType": "Number", "StringValue": "7"}}},
                    {"Id": "b", "MessageBody": "two"},
                    {"Id": "c"},
                ],
            })
        );
    }

    #[test]
    fn malformed_names_are_refused_not_guessed() {
        for bad in [
            vec![("AttributeName.x", "A")],
            vec![("AttributeName.0", "A")],
            vec![("AttributeName.1001", "A")],
            vec![("QueueUrl", "u"), ("QueueUrl.1", "v")],
            vec![("Attribute.1.Value", "5")],
        ] {
            let refused = decode(&params(&bad)).expect_err("refused");
            assert!(
                refused.query_code == "MalformedQueryString"
                    || refused.query_code == "MissingParameter",
                "{bad:?}: {}",
                refused.query_code
            );
        }
    }

    #[test]
    fn output_becomes_sqss_xml() {
        let output = json!({
            "Messages": [{
                "MessageId": "1",
                "Body": "a<b>&\r\n",
                "Attributes": {"SentTimestamp": "5"},
                "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "7"}},
            }],
        });
        let xml = document("ReceiveMessage", &output, "rid");
        assert!(xml.starts_with(
            "<?xml version=\"1.0\"?><ReceiveMessageResponse \
             xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"><ReceiveMessageResult><Message>"
        ));
        assert!(xml.contains("<Attribute><Name>SentTimestamp</Name><Value>5</Value></Attribute>"));
        assert!(xml.contains(
            "<MessageAttribute><Name>n</Name><Value><DataType>Number</DataType>\
             <StringValue>7</StringValue></Value></MessageAttribute>"
        ));
        assert!(xml.contains("<Body>a&lt;b&gt;&amp;&#xD;\n</Body>"));
        assert!(xml.ends_with(
            "</ReceiveMessageResult><ResponseMetadata><RequestId>rid</RequestId>\
             </ResponseMetadata></ReceiveMessageResponse>"
        ));
        let batch =
            json!({"Successful": [{"Id": "a"}], "Failed": [{"Id": "b", "SenderFault": true}]});
        let xml = document("DeleteMessageBatch", &batch, "r");
        assert!(
            xml.contains(
                "<DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>"
            )
        );
        assert!(xml.contains(
            "<BatchResultErrorEntry><Id>b</Id><SenderFault>true</SenderFault></BatchResultErrorEntry>"
        ));
    }
}
