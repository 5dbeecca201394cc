//! Spool through its SQS JSON API (`spool serve --http-listen`), driven with plain HTTP/1.1
//! requests (no AWS SDK: what is measured is the server's HTTP/JSON edge, not a client
//! library): SendMessageBatch, ReceiveMessage and DeleteMessageBatch, at most 10 messages each
//! (SQS's batch size). Each producer and consumer has its own keep-alive connection (HTTP/1.1
//! has one request at a time per connection).
//!
//! Bodies are binary; SQS's are text: the 16-byte stamp is sent as 32 hex digits and the rest
//! (ASCII filler) as it is, so each message is 16 bytes longer on the wire than over gRPC.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::load::{BenchError, BenchResult, Consumer, Producer, Target};

/// How long a received message stays invisible: longer than a run.
const VISIBILITY_SECONDS: u32 = 600;
/// SQS's batch size.
const SQS_BATCH: usize = 10;

pub struct SqsTarget {
    /// host:port of the HTTP port.
    address: String,
}

impl SqsTarget {
    /// `endpoint`: `http://host:port` of `--http-listen`.
    pub fn new(endpoint: &str) -> Self {
        Self {
            address: endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
        }
    }

    async fn connect(&self) -> BenchResult<Connection> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| BenchError::new(&format!("connect to {}", self.address), e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::new("HTTP/1.1 handshake", e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            host: self.address.clone(),
        })
    }

    fn url(&self, queue: &str) -> String {
        format!("http://{}/000000000000/{queue}", self.address)
    }
}

/// One keep-alive connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// One SQS action; its JSON answer, or the error it answered.
    async fn call(&mut self, action: &str, input: Value) -> BenchResult<Value> {
        let request = hyper::Request::post("/")
            .header("host", &self.host)
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .header("content-type", "application/x-amz-json-1.0")
            .body(Full::new(Bytes::from(input.to_string())))
            .map_err(|e| BenchError::new(action, e))?;
        self.sender
            .ready()
            .await
            .map_err(|e| BenchError::new(action, e))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| BenchError::new(action, e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::new(action, e))?
            .to_bytes();
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| BenchError::new(action, e))?;
        if !status.is_success() {
            return Err(BenchError(format!("{action}: {status} {answer}")));
        }
        Ok(answer)
    }
}

/// A body as an SQS message body (see the module's doc).
fn encode(body: &[u8]) -> String {
    let (stamp, rest) = body.split_at(body.len().min(16));
    let mut text: String = stamp.iter().map(|b| format!("{b:02x}")).collect();
    text.push_str(&String::from_utf8_lossy(rest));
    text
}

fn decode(text: &str) -> Bytes {
    let hex = text.get(..32).unwrap_or_default();
    let mut body: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    body.extend_from_slice(text.get(32..).unwrap_or_default().as_bytes());
    Bytes::from(body)
}

impl Target for SqsTarget {
    type Producer = SqsProducer;
    type Consumer = SqsConsumer;

    fn name(&self) -> &str {
        "spool-sqs"
    }

    fn durability(&self) -> String {
        "the same server as spool (SQLite WAL, synchronous=FULL), through its SQS JSON API over \
         HTTP/1.1: a send is acknowledged after its group commit is fsynced"
            .into()
    }

    fn server_port(&self) -> Option<u16> {
        self.address.rsplit(':').next()?.parse().ok()
    }

    async fn setup(&self, queues: &[String], body_bytes: usize) -> BenchResult<()> {
        let mut connection = self.connect().await?;
        for queue in queues {
            // A queue left by a previous run: deleted first, whether or not it is there.
            let _ = connection
                .call("DeleteQueue", json!({ "QueueUrl": self.url(queue) }))
                .await;
            connection
                .call(
                    "CreateQueue",
                    json!({
                        "QueueName": queue,
                        "Attributes": {
                            "VisibilityTimeout": VISIBILITY_SECONDS.to_string(),
                            "MaximumMessageSize": (body_bytes + 16).clamp(1_024, 1_048_576).to_string(),
                        },
                    }),
                )
                .await?;
        }
        Ok(())
    }

    async fn teardown(&self, queues: &[String]) -> BenchResult<()> {
        let mut connection = self.connect().await?;
        for queue in queues {
            connection
                .call("DeleteQueue", json!({ "QueueUrl": self.url(queue) }))
                .await?;
        }
        Ok(())
    }

    async fn producer(&self, queue: &str, _connection: usize) -> BenchResult<SqsProducer> {
        Ok(SqsProducer {
            connection: self.connect().await?,
            url: self.url(queue),
        })
    }

    async fn consumer(&self, queue: &str, _connection: usize) -> BenchResult<SqsConsumer> {
        Ok(SqsConsumer {
            connection: self.connect().await?,
            url: self.url(queue),
        })
    }
}

pub struct SqsProducer {
    connection: Connection,
    url: String,
}

impl Producer for SqsProducer {
    async fn send(&mut self, bodies: Vec<Bytes>) -> BenchResult<()> {
        for chunk in bodies.chunks(SQS_BATCH) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| json!({ "Id": i.to_string(), "MessageBody": encode(body) }))
                .collect();
            let answer = self
                .connection
                .call(
                    "SendMessageBatch",
                    json!({ "QueueUrl": self.url, "Entries": entries }),
                )
                .await?;
            if answer["Failed"]
                .as_array()
                .is_some_and(|failed| !failed.is_empty())
            {
                return Err(BenchError(format!("SendMessageBatch: {answer}")));
            }
        }
        Ok(())
    }
}

pub struct SqsConsumer {
    connection: Connection,
    url: String,
}

impl Consumer for SqsConsumer {
    type Token = String;

    async fn receive(&mut self, max: usize, wait: Duration) -> BenchResult<Vec<(Bytes, String)>> {
        let answer = self
            .connection
            .call(
                "ReceiveMessage",
                json!({
                    "QueueUrl": self.url,
                    "MaxNumberOfMessages": max.clamp(1, SQS_BATCH),
                    "WaitTimeSeconds": wait.as_secs().clamp(0, 20),
                }),
            )
            .await?;
        Ok(answer["Messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|message| {
                        (
                            decode(message["Body"].as_str().unwrap_or_default()),
                            message["ReceiptHandle"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ack(&mut self, tokens: Vec<String>) -> BenchResult<()> {
        for chunk in tokens.chunks(SQS_BATCH) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| json!({ "Id": i.to_string(), "ReceiptHandle": handle }))
                .collect();
            let answer = self
                .connection
                .call(
                    "DeleteMessageBatch",
                    json!({ "QueueUrl": self.url, "Entries": entries }),
                )
                .await?;
            if answer["Failed"]
                .as_array()
                .is_some_and(|failed| !failed.is_empty())
            {
                return Err(BenchError(format!("DeleteMessageBatch: {answer}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_survive_the_text_encoding() {
        let mut body = vec![0u8, 1, 2, 255, 128, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
        body.extend_from_slice(b"xxxx");
        assert_eq!(decode(&encode(&body)), Bytes::from(body));
    }
}
