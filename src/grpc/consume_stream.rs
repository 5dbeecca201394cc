//! The response stream of StreamMessages: a queue's [`Consuming`] in protobuf, fed with the
//! client's acknowledgements, nacks and extensions, each answered in the words of the unary call
//! it stands for (BatchDeleteMessages, BatchChangeMessageVisibility).

use std::task::{Context, Poll};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert;
use super::receive_stream::{Deliveries, GuardedStream};
use super::service::batch_size;
use crate::attributes::check_range;
use crate::error::QueueError;
use crate::limits::{CHANGE_VISIBILITY_SECONDS, MAX_REQUEST_BYTES, VISIBILITY_TIMEOUT_SECONDS};
use crate::pb;
use crate::queue::receiving::Delivered;
use crate::queue::{
    ConsumeSettings, Consuming, DeleteResult, Event, QueueHandle, Settlement, VisibilityResult,
};
use crate::receipt::{Indexed, ReceiptKey};

/// The response stream of StreamMessages. Polling it polls the client's requests too, so it
/// needs no task of its own; dropping it (the client went away) drops the [`Consuming`], which
/// gives back whatever was claimed for it and not pushed.
pub struct ConsumeStream {
    /// The client's requests after the first; `None` once it half-closed.
    requests: Option<ConsumerRequests>,
    consuming: Consuming<Answering>,
    /// The queue, to give back a message the response budget had no room for.
    queue: QueueHandle,
    receipt_key: ReceiptKey,
    /// Whether it has ended (an error is its last item).
    ended: bool,
}

pub type StreamMessagesStream = std::pin::Pin<Box<GuardedStream<ConsumeStream>>>;

/// What a consumer stream yields before it is protobuf: a message is converted (and its
/// receipt handle signed) only once the response budget has room for it.
pub enum ConsumeItem {
    Message(Delivered),
    Answer(pb::StreamMessagesResponse),
}

/// The client's requests of a StreamMessages call.
pub type ConsumerRequests = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<pb::StreamMessagesRequest, Status>> + Send>,
>;

/// What answering one acknowledgement, nack or extension needs besides the queue's results.
struct Answering {
    /// The request's `ack_id`, `nack_id` or `extend_id`.
    id: u64,
    settlement: Settlement,
    /// The handles as the client wrote them.
    receipt_handles: Vec<String>,
    /// The index in `receipt_handles` of each handle handed to the queue, in order.
    positions: Vec<usize>,
    /// Handles that could not be decoded, by index.
    failures: Vec<(usize, QueueError)>,
}

impl ConsumeStream {
    /// A consumer stream on `queue`, reading `requests` (those after the `start`).
    pub fn new(
        requests: ConsumerRequests,
        queue: QueueHandle,
        settings: ConsumeSettings,
        shutdown: CancellationToken,
        receipt_key: ReceiptKey,
    ) -> Self {
        Self {
            requests: Some(requests),
            consuming: queue.consume(settings, shutdown),
            queue,
            receipt_key,
            ended: false,
        }
    }

    /// Takes one request after the first; an error ends the stream.
    fn take(&mut self, request: pb::StreamMessagesRequest) -> Result<(), QueueError> {
        use pb::stream_messages_request::Kind;
        let (id, settlement, receipt_handles, name) = match request.kind {
            Some(Kind::Acknowledge(acknowledge)) => (
                acknowledge.ack_id,
                Settlement::Delete,
                acknowledge.receipt_handles,
                "acknowledge",
            ),
            Some(Kind::Nack(nack)) => {
                check_range(
                    "nack.delay_seconds",
                    nack.delay_seconds,
                    &CHANGE_VISIBILITY_SECONDS,
                )?;
                let settlement = Settlement::Nack {
                    delay_seconds: nack.delay_seconds,
                };
                (nack.nack_id, settlement, nack.receipt_handles, "nack")
            }
            Some(Kind::Extend(extend)) => {
                check_range(
                    "extend.visibility_timeout_seconds",
                    extend.visibility_timeout_seconds,
                    &VISIBILITY_TIMEOUT_SECONDS,
                )?;
                let settlement = Settlement::Extend {
                    visibility_timeout_seconds: extend.visibility_timeout_seconds,
                };
                (
                    extend.extend_id,
                    settlement,
                    extend.receipt_handles,
                    "extend",
                )
            }
            Some(Kind::Start(_)) => {
                return Err(QueueError::InvalidArgument(
                    "`start` comes only in the first request of a stream".into(),
                ));
            }
            None => {
                return Err(QueueError::InvalidArgument(
                    "a request of StreamMessages after the first must be an `acknowledge`, a \
                     `nack` or an `extend`"
                        .into(),
                ));
            }
        };
        batch_size(&format!("{name}.receipt_handles"), receipt_handles.len())?;
        let mut handles = Vec::with_capacity(receipt_handles.len());
        let mut positions = Vec::with_capacity(receipt_handles.len());
        let mut failures = Vec::new();
        for (index, text) in receipt_handles.iter().enumerate() {
            match self
                .receipt_key
                .decode(text, &Indexed("receipt_handles", index))
            {
                Ok(handle) => {
                    handles.push((handle, index));
                    positions.push(index);
                }
                Err(error) => failures.push((index, error)),
            }
        }
        let context = Answering {
            id,
            settlement,
            receipt_handles,
            positions,
            failures,
        };
        self.consuming.settle(context, settlement, handles);
        Ok(())
    }

    /// The answer to an acknowledgement, as BatchDeleteMessages reports failures.
    fn acknowledged(context: Answering, results: Vec<DeleteResult>) -> pb::StreamMessagesResponse {
        let Answering {
            id,
            mut receipt_handles,
            positions,
            mut failures,
            ..
        } = context;
        for (index, result) in positions.into_iter().zip(results) {
            if let Err(error) = result {
                failures.push((index, error));
            }
        }
        failures.sort_by_key(|(index, _)| *index);
        let failures = failures
            .into_iter()
            .map(|(index, error)| pb::DeleteFailure {
                receipt_handle: std::mem::take(&mut receipt_handles[index]),
                code: super::status::code_of(&error) as i32,
                message: error.to_string(),
                cmq_code: error.cmq_code(),
            })
            .collect();
        pb::StreamMessagesResponse {
            kind: Some(pb::stream_messages_response::Kind::Acknowledged(
                pb::StreamAcknowledged {
                    ack_id: id,
                    failures,
                },
            )),
        }
    }

    /// The answer to a nack or an extension, as BatchChangeMessageVisibility reports it.
    fn visibility_changed(
        context: Answering,
        results: Vec<VisibilityResult>,
    ) -> pb::StreamMessagesResponse {
        use pb::stream_messages_response::Kind;
        let Answering {
            id,
            settlement,
            mut receipt_handles,
            positions,
            failures,
        } = context;
        let (changed, failures) =
            convert::visibility_changes(positions, results, failures, |index| {
                std::mem::take(&mut receipt_handles[index])
            });
        let answer = pb::StreamVisibilityChanged {
            request_id: id,
            changed,
            failures,
        };
        let kind = match settlement {
            Settlement::Extend { .. } => Kind::Extended(answer),
            Settlement::Nack { .. } | Settlement::Delete => Kind::Nacked(answer),
        };
        pb::StreamMessagesResponse { kind: Some(kind) }
    }

    fn end(&mut self, status: Status) -> Poll<Option<Result<ConsumeItem, Status>>> {
        self.ended = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl Deliveries for ConsumeStream {
    type Item = ConsumeItem;
    type Message = pb::StreamMessagesResponse;

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ConsumeItem, Status>>> {
        let this = self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            // Requests are read only while the queue takes acknowledgements: a client that sends
            // them faster than they commit waits on the transport's flow control.
            if this.consuming.takes_acknowledgements()
                && let Some(requests) = &mut this.requests
            {
                match requests.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(request))) => {
                        if let Err(error) = this.take(request) {
                            return this.end(error.into());
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(status))) if status.code() == tonic::Code::OutOfRange => {
                        // tonic's length check (see `grpc::layer`), in Spool's words.
                        let too_large = QueueError::TooLarge(format!(
                            "a request is larger than {MAX_REQUEST_BYTES} bytes"
                        ));
                        return this.end(too_large.into());
                    }
                    Poll::Ready(Some(Err(status))) => return this.end(status),
                    Poll::Ready(None) => {
                        this.requests = None;
                        this.consuming.close();
                    }
                    Poll::Pending => {}
                }
            }
            return match this.consuming.poll_next_unpin(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(Event::Message(delivered)))) => {
                    Poll::Ready(Some(Ok(ConsumeItem::Message(delivered))))
                }
                Poll::Ready(Some(Ok(Event::Acknowledged { context, results }))) => {
                    Poll::Ready(Some(Ok(ConsumeItem::Answer(Self::acknowledged(
                        context, results,
                    )))))
                }
                Poll::Ready(Some(Ok(Event::VisibilityChanged { context, results }))) => {
                    Poll::Ready(Some(Ok(ConsumeItem::Answer(Self::visibility_changed(
                        context, results,
                    )))))
                }
                Poll::Ready(Some(Err(error))) => this.end(error.into()),
                Poll::Ready(None) => {
                    this.ended = true;
                    Poll::Ready(None)
                }
            };
        }
    }

    fn held_bytes(item: &ConsumeItem) -> usize {
        match item {
            ConsumeItem::Message(delivered) => delivered.payload.size().max(1),
            ConsumeItem::Answer(_) => 1,
        }
    }

    fn give_back(&self, item: &ConsumeItem) {
        if let ConsumeItem::Message(delivered) = item {
            self.queue.release_now(vec![delivered.message.handle]);
        }
    }

    fn message(item: ConsumeItem, receipt_key: &ReceiptKey) -> pb::StreamMessagesResponse {
        match item {
            ConsumeItem::Message(delivered) => pb::StreamMessagesResponse {
                kind: Some(pb::stream_messages_response::Kind::Message(
                    convert::received(&delivered.message, delivered.payload, receipt_key),
                )),
            },
            ConsumeItem::Answer(response) => response,
        }
    }
}
