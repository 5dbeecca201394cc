//! [`Client::consume`]: a consumer stream (StreamMessages) as a [`Stream`] of [`Delivery`]s,
//! each acknowledged (deleted) with [`Delivery::ack`]; acknowledgements are batched on the
//! stream.
//!
//! One task per consumer owns the call: it reads the server's responses (messages go to the
//! [`Consumer`], answers to acknowledgements to whoever awaits them) and sends the
//! acknowledgements that are waiting, up to 16 in one request, so acknowledging does not
//! depend on the [`Consumer`] being polled.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// An acknowledgement waiting to be sent: the handle, and who awaits its answer.
type Ack = (String, oneshot::Sender<Result<(), ClientError>>);

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
    acks: mpsc::UnboundedSender<Ack>,
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
        let (answer, answered) = oneshot::channel();
        let sent = self
            .acks
            .send((self.message.receipt_handle, answer))
            .is_ok();
        async move {
            if !sent {
                return Err(ended());
            }
            answered.await.unwrap_or_else(|_| Err(ended()))
        }
    }

    /// Gives the message up: it is not deleted, and comes back (to this consumer or another)
    /// when its visibility timeout ends, which also frees its slot. (Spool has no call that
    /// makes a message visible earlier yet; when it does, this will use it.)
    pub fn nack(self) {}
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
                answers: HashMap::new(),
                next_ack_id: 1,
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
    acks: mpsc::UnboundedSender<Ack>,
    acks_waiting: mpsc::UnboundedReceiver<Ack>,
    /// Acknowledgements sent and not answered, by `ack_id`: who awaits each handle's answer.
    answers: HashMap<u64, Vec<Ack>>,
    next_ack_id: u64,
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
                    if !self.send_acks(first) {
                        return;
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
                for (handle, answer) in self
                    .answers
                    .remove(&acknowledged.ack_id)
                    .unwrap_or_default()
                {
                    let result = match failures.remove(&handle) {
                        None => Ok(()),
                        Some(failure) => Err(ClientError::from(RpcError {
                            code: Code::from_i32(failure.code),
                            cmq_code: Some(failure.cmq_code),
                            reason: None,
                            message: failure.message,
                        })),
                    };
                    let _ = answer.send(result);
                }
                true
            }
            // A kind this client does not know: nothing to do with it.
            None => true,
        }
    }

    /// Sends `first` and the acknowledgements waiting behind it, 16 to a request; false when
    /// the call is over.
    fn send_acks(&mut self, first: Ack) -> bool {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.acks_waiting.try_recv() {
                Ok(ack) => batch.push(ack),
                Err(_) => break,
            }
        }
        let ack_id = self.next_ack_id;
        self.next_ack_id += 1;
        let request = pb::StreamMessagesRequest {
            kind: Some(RequestKind::Acknowledge(pb::StreamAcknowledge {
                ack_id,
                receipt_handles: batch.iter().map(|(handle, _)| handle.clone()).collect(),
            })),
        };
        self.answers.insert(ack_id, batch);
        self.requests.send(request).is_ok()
    }
}
