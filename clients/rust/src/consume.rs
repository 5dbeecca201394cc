//! [`Client::consume`]: a consumer stream (StreamMessages) as a [`Stream`] of [`Delivery`]s,
//! each acknowledged (deleted) with [`Delivery::ack`], given back with [`Delivery::nack`], or
//! kept longer with [`Delivery::extend`]; all three are batched on the stream.
//!
//! One task per consumer owns the call: it reads the server's responses (messages go to the
//! [`Consumer`], answers to whoever awaits them) and sends the requests that are waiting, up to
//! 16 handles of one kind in a request, so settling a message does not depend on the
//! [`Consumer`] being polled.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use crate::limits::MAX_BATCH;
use crate::pb::stream_messages_request::Kind as RequestKind;
use crate::pb::stream_messages_response::Kind as ResponseKind;
use crate::{Client, ClientError, ReceivedMessage, RpcError, pb};

/// Settings of a consumer stream.
///
/// ```
/// use spool_client::ConsumeOptions;
///
/// // At most 10 messages unacknowledged at a time, each invisible to others for 60 s.
/// let options = ConsumeOptions::default()
///     .max_outstanding_messages(10)
///     .visibility_timeout_seconds(60);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// 1..=1000; 0 (the default) means the server's default, 100.
    max_outstanding_messages: u32,
    /// 1..=43200; `None`: the queue's visibility timeout.
    visibility_timeout_seconds: Option<u32>,
}

impl ConsumeOptions {
    /// Most messages delivered and not yet acknowledged (nor visible again): 1..=1000.
    pub fn max_outstanding_messages(self, max: u32) -> Self {
        Self {
            max_outstanding_messages: max,
            ..self
        }
    }

    /// Seconds each delivered message stays invisible to other consumers: 1..=43200. Unset,
    /// the queue's.
    pub fn visibility_timeout_seconds(self, seconds: u32) -> Self {
        Self {
            visibility_timeout_seconds: Some(seconds),
            ..self
        }
    }
}

/// What a delivery asks of the server; requests of one kind and timeout are batched together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ack,
    /// Visible again after these seconds.
    Nack(u32),
    /// Invisible for these seconds from now.
    Extend(u32),
}

/// What the server answers for one handle: for a visibility change, the new
/// `next_visible_time`.
type Answer = Result<Option<prost_types::Timestamp>, ClientError>;

/// A request waiting to be sent, or to be answered: its kind, the handle, and who awaits the
/// answer.
#[derive(Debug)]
struct Pending {
    kind: Kind,
    handle: String,
    answer: oneshot::Sender<Answer>,
}

/// The messages of a consumer stream; see [`Client::consume`]. Dropping it ends the stream:
/// messages delivered and not acknowledged come back after their visibility timeout.
#[derive(Debug)]
pub struct Consumer {
    deliveries: mpsc::UnboundedReceiver<Result<Delivery, ClientError>>,
}

/// One delivered message, to [`ack`](Self::ack) once handled (or [`nack`](Self::nack)).
#[derive(Debug)]
pub struct Delivery {
    message: ReceivedMessage,
    acks: mpsc::UnboundedSender<Pending>,
}

impl Delivery {
    pub fn message(&self) -> &ReceivedMessage {
        &self.message
    }

    pub fn into_message(self) -> ReceivedMessage {
        self.message
    }

    /// Deletes the message: the acknowledgement goes out on the stream now (with others waiting,
    /// up to 16 in a request), and its slot frees once the server answers. The future resolves
    /// with the server's answer, after the delete is durable; dropping it does not cancel the
    /// acknowledgement. Fails as [`Client::delete_message`] does (a handle expired:
    /// [`ClientError::StaleReceipt`]), or when the consumer has ended.
    pub fn ack(self) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let answered = self.request(Kind::Ack);
        async move { answered.await.map(|_| ()) }
    }

    /// Gives the message up: it becomes visible again at once and is delivered again (to this
    /// consumer or another, its `dequeue_count` one higher). The nack goes out on the stream now
    /// (with others waiting, up to 16 in a request); its slot frees once the server answers,
    /// after the change is durable. Fails as [`Client::change_message_visibility`] does (a
    /// handle expired: [`ClientError::StaleReceipt`]). To let the message come back only after
    /// its visibility timeout instead, drop the delivery.
    pub fn nack(self) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        self.nack_after(Duration::ZERO)
    }

    /// As [`nack`](Self::nack), but the message becomes visible again only after `delay`
    /// (whole seconds, rounded up; at most 12 hours). Its slot frees at once all the same.
    pub fn nack_after(
        self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let answered = self.request(Kind::Nack(whole_seconds(delay)));
        async move { answered.await.map(|_| ()) }
    }

    /// Gives the consumer more time (a heartbeat): the message stays invisible to others for
    /// `visibility_timeout` from now (whole seconds, rounded up: 1 s to 12 hours), and keeps its
    /// slot until then. Resolves with the new `next_visible_time`, once the change is durable;
    /// the receipt handle is unchanged and still deletes the message. Fails as
    /// [`Client::change_message_visibility`] does.
    pub fn extend(
        &self,
        visibility_timeout: Duration,
    ) -> impl Future<Output = Result<prost_types::Timestamp, ClientError>> + Send + use<> {
        let answered = self.request(Kind::Extend(whole_seconds(visibility_timeout)));
        async move { answered.await.map(Option::unwrap_or_default) }
    }

    /// Queues a request about this message for the call's task; resolves with its answer.
    fn request(&self, kind: Kind) -> impl Future<Output = Answer> + Send + use<> {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .acks
            .send(Pending {
                kind,
                handle: self.message.receipt_handle.clone(),
                answer,
            })
            .is_ok();
        async move {
            if !sent {
                return Err(ended());
            }
            answered.await.unwrap_or_else(|_| Err(ended()))
        }
    }
}

/// Seconds for the server, rounded up (a delay is at least what was asked), saturating.
fn whole_seconds(duration: Duration) -> u32 {
    let rounded = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(rounded).unwrap_or(u32::MAX)
}

fn ended() -> ClientError {
    ClientError::Other(RpcError {
        code: Code::Cancelled,
        cmq_code: None,
        reason: None,
        message: "the consumer stream has ended; the message comes back after its visibility \
                  timeout"
            .into(),
    })
}

impl Stream for Consumer {
    type Item = Result<Delivery, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.deliveries.poll_recv(cx)
    }
}

impl Consumer {
    /// The next delivery, or `None` when the stream has ended (the server shut down).
    pub async fn next_delivery(&mut self) -> Result<Option<Delivery>, ClientError> {
        self.deliveries.recv().await.transpose()
    }
}

impl Client {
    /// Opens a consumer stream on `queue`: messages are pushed as they become visible while
    /// fewer than `max_outstanding_messages` are unacknowledged. Fails at once if the queue
    /// does not exist or the settings are out of range. The stream has no deadline; it ends
    /// (`None`) when the server shuts down, and with an error if the connection fails. Not
    /// retried: open it again.
    ///
    /// ```no_run
    /// # async fn example(client: spool_client::Client) -> Result<(), spool_client::ClientError> {
    /// use futures_util::StreamExt as _;
    /// use spool_client::ConsumeOptions;
    ///
    /// let mut consumer = client.consume("QueueForTest", ConsumeOptions::default()).await?;
    /// while let Some(delivery) = consumer.next().await {
    ///     let delivery = delivery?;
    ///     println!("{:?}", delivery.message().body);
    ///     delivery.ack().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Consumer, ClientError> {
        // Unbounded, so sending an acknowledgement never waits while the server's answers wait
        // to be read; there is at most one request per delivery outstanding.
        let (requests, outgoing) = mpsc::unbounded_channel();
        let start = pb::StreamMessagesRequest {
            kind: Some(RequestKind::Start(pb::StreamStart {
                queue_name: queue.to_string(),
                max_outstanding_messages: options.max_outstanding_messages,
                visibility_timeout_seconds: options.visibility_timeout_seconds,
            })),
        };
        requests.send(start).map_err(|_| ended())?;
        let outgoing = futures_util::stream::unfold(outgoing, |mut outgoing| async move {
            outgoing.recv().await.map(|request| (request, outgoing))
        });
        let mut call = tonic::Request::new(outgoing);
        if let Some(authorization) = &self.authorization {
            call.metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let responses = self
            .grpc
            .clone()
            .stream_messages(call)
            .await
            .map_err(|status| self.error(status))?
            .into_inner();
        let (deliveries, delivered) = mpsc::unbounded_channel();
        let (acks, acks_waiting) = mpsc::unbounded_channel();
        tokio::spawn(
            Call {
                responses,
                requests,
                deliveries,
                acks,
                acks_waiting,
                held: None,
                answers: HashMap::new(),
                next_request_id: 1,
            }
            .run(),
        );
        Ok(Consumer {
            deliveries: delivered,
        })
    }
}

/// The task that owns one consumer stream's call.
struct Call {
    responses: tonic::Streaming<pb::StreamMessagesResponse>,
    requests: mpsc::UnboundedSender<pb::StreamMessagesRequest>,
    /// Unbounded, but the server pushes at most `max_outstanding_messages` unacknowledged.
    deliveries: mpsc::UnboundedSender<Result<Delivery, ClientError>>,
    /// Handed to each delivery.
    acks: mpsc::UnboundedSender<Pending>,
    acks_waiting: mpsc::UnboundedReceiver<Pending>,
    /// A request taken from `acks_waiting` that did not fit the last batch (another kind).
    held: Option<Pending>,
    /// Requests sent and not answered, by their id (`ack_id`, `nack_id`, `extend_id`: one
    /// count for all three): who awaits each handle's answer.
    answers: HashMap<u64, Vec<Pending>>,
    next_request_id: u64,
}

impl Call {
    async fn run(mut self) {
        loop {
            tokio::select! {
                response = self.responses.message() => match response {
                    Ok(Some(response)) => {
                        if !self.take(response) {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = self.deliveries.send(Err(ClientError::from(status)));
                        return;
                    }
                },
                Some(first) = self.acks_waiting.recv() => {
                    let mut next = Some(first);
                    while let Some(first) = next {
                        if !self.send_batch(first) {
                            return;
                        }
                        next = self.held.take();
                    }
                }
                // The consumer was dropped: end the call (dropping it cancels it).
                () = self.deliveries.closed() => return,
            }
        }
    }

    /// Handles one response; false when the consumer is gone.
    fn take(&mut self, response: pb::StreamMessagesResponse) -> bool {
        match response.kind {
            Some(ResponseKind::Message(message)) => self
                .deliveries
                .send(Ok(Delivery {
                    message,
                    acks: self.acks.clone(),
                }))
                .is_ok(),
            Some(ResponseKind::Acknowledged(acknowledged)) => {
                let mut failures: HashMap<String, pb::DeleteFailure> = acknowledged
                    .failures
                    .into_iter()
                    .map(|failure| (failure.receipt_handle.clone(), failure))
                    .collect();
                for pending in self
                    .answers
                    .remove(&acknowledged.ack_id)
                    .unwrap_or_default()
                {
                    let result = match failures.remove(&pending.handle) {
                        None => Ok(None),
                        Some(failure) => {
                            Err(failed(failure.code, failure.cmq_code, failure.message))
                        }
                    };
                    let _ = pending.answer.send(result);
                }
                true
            }
            Some(ResponseKind::Nacked(changed) | ResponseKind::Extended(changed)) => {
                let batch = self.answers.remove(&changed.request_id).unwrap_or_default();
                let mut answers: Vec<Option<Answer>> = batch.iter().map(|_| None).collect();
                for entry in changed.changed {
                    if let Some(answer) = answers.get_mut(entry.index as usize) {
                        *answer = Some(Ok(Some(entry.next_visible_time.unwrap_or_default())));
                    }
                }
                for failure in changed.failures {
                    if let Some(answer) = answers.get_mut(failure.index as usize) {
                        *answer =
                            Some(Err(failed(failure.code, failure.cmq_code, failure.message)));
                    }
                }
                for (pending, answer) in batch.into_iter().zip(answers) {
                    // A server answers every handle; one it left out is reported, not hung.
                    let answer = answer.unwrap_or_else(|| {
                        Err(failed(
                            Code::Internal as i32,
                            0,
                            "the server's answer left this receipt handle out".into(),
                        ))
                    });
                    let _ = pending.answer.send(answer);
                }
                true
            }
            // A kind this client does not know: nothing to do with it.
            None => true,
        }
    }

    /// Sends `first` and the requests of its kind waiting behind it, 16 to a request (one of
    /// another kind is held for the next); false when the call is over.
    fn send_batch(&mut self, first: Pending) -> bool {
        let kind = first.kind;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.acks_waiting.try_recv() {
                Ok(pending) if pending.kind == kind => batch.push(pending),
                Ok(pending) => {
                    self.held = Some(pending);
                    break;
                }
                Err(_) => break,
            }
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let receipt_handles = batch.iter().map(|pending| pending.handle.clone()).collect();
        let kind = match kind {
            Kind::Ack => RequestKind::Acknowledge(pb::StreamAcknowledge {
                ack_id: id,
                receipt_handles,
            }),
            Kind::Nack(delay_seconds) => RequestKind::Nack(pb::StreamNack {
                nack_id: id,
                receipt_handles,
                delay_seconds,
            }),
            Kind::Extend(visibility_timeout_seconds) => RequestKind::Extend(pb::StreamExtend {
                extend_id: id,
                receipt_handles,
                visibility_timeout_seconds,
            }),
        };
        self.answers.insert(id, batch);
        self.requests
            .send(pb::StreamMessagesRequest { kind: Some(kind) })
            .is_ok()
    }
}

/// A per-handle failure of an answer, as the error the unary call would have returned.
fn failed(code: i32, cmq_code: i32, message: String) -> ClientError {
    ClientError::from(RpcError {
        code: Code::from_i32(code),
        cmq_code: Some(cmq_code),
        reason: None,
        message,
    })
}
