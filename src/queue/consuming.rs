//! One consumer stream, from the caller's side: messages pushed while the consumer has free
//! slots, and its acknowledgements answered once their deletes are durable.
//!
//! A stream is a long poll that comes back: each turn is a claim of up to [`MAX_BATCH`]
//! messages (never more than its free slots) that waits in the queue's line of waiters with no
//! deadline, and is handed out through a [`Receiving`], so claimed messages not yet handed out
//! go back to visible at once when the stream is dropped or closed, exactly as for
//! ReceiveMessages. After a turn the stream asks again at the back of the line, which keeps
//! several streams and the long polls of a queue served in arrival order.
//!
//! A slot is taken when a message is handed out and freed when its acknowledgement is answered,
//! or when its visibility timeout passes unacknowledged (the message is the queue's again, and
//! a consumer that let it go, a "nack" before visibility changes exist, gets its slot back).

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::receiving::Delivered;
use super::{DeleteResult, DeleteTarget, QueueHandle, Receiving, StreamClaim};
use crate::clock::Millis;
use crate::error::QueueError;
use crate::limits::MAX_BATCH;
use crate::receipt::ReceiptHandle;

/// Acknowledgements of one stream being committed at once; past this the caller stops taking
/// requests (see [`Consuming::takes_acknowledgements`]), so a client that sends them faster than
/// they commit is held back by the transport instead of queueing work on the server.
pub const MAX_PENDING_ACKNOWLEDGEMENTS: usize = 8;

/// A consumer's settings.
#[derive(Clone, Copy, Debug)]
pub struct ConsumeSettings {
    /// Messages handed out and not yet acknowledged (nor visible again), at most.
    pub max_outstanding: usize,
    /// None: the queue's visibility timeout.
    pub visibility_timeout_seconds: Option<u32>,
}

/// What a consumer stream yields.
#[derive(Debug)]
pub enum Event<T> {
    Message(Delivered),
    /// An acknowledgement's deletes are durable (or failed): one result per target, in order.
    Acknowledged {
        context: T,
        results: Vec<DeleteResult>,
    },
}

type Acknowledging<T> = BoxFuture<'static, (T, Vec<ReceiptHandle>, Vec<DeleteResult>)>;

/// A consumer stream on one queue. `T` is what the caller keeps with each acknowledgement to
/// answer it (the handles as the client wrote them, say). Ends (`None`) at shutdown, or once
/// [`close`](Self::close)d and every acknowledgement is answered; an error is its last item.
pub struct Consuming<T> {
    queue: QueueHandle,
    settings: ConsumeSettings,
    turn: Turn,
    outstanding: Outstanding,
    acknowledging: FuturesOrdered<Acknowledging<T>>,
    /// When the earliest outstanding message becomes visible again (its slot frees then).
    expiry: Option<Pin<Box<Sleep>>>,
    shutdown: CancellationToken,
    shut_down: Pin<Box<WaitForCancellationFutureOwned>>,
    /// No more turns: the client half-closed, or the server is shutting down.
    closing: bool,
    /// An error was yielded: the stream is over.
    failed: bool,
}

enum Turn {
    /// Not asking: the slots are full, or the stream is closing.
    Idle,
    /// Putting the claim in the queue's mailbox.
    Asking(BoxFuture<'static, Result<Receiving, QueueError>>),
    /// Waiting for, or handing out, the claim's messages.
    Receiving(Receiving),
}

impl QueueHandle {
    /// Opens a consumer stream on this queue (see [`Consuming`]); it asks for its first turn
    /// when first polled.
    pub fn consume<T: Send + 'static>(
        &self,
        settings: ConsumeSettings,
        shutdown: CancellationToken,
    ) -> Consuming<T> {
        Consuming {
            queue: self.clone(),
            settings,
            turn: Turn::Idle,
            outstanding: Outstanding::default(),
            acknowledging: FuturesOrdered::new(),
            expiry: None,
            shut_down: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            closing: false,
            failed: false,
        }
    }

    /// One turn of a consumer stream: a receive that waits in line with no deadline.
    async fn claim_turn(
        self,
        claim: StreamClaim,
        shutdown: CancellationToken,
    ) -> Result<Receiving, QueueError> {
        let (respond_to, reply) = tokio::sync::oneshot::channel();
        self.mailbox
            .send(super::Command::StreamClaim { claim, respond_to })
            .await
            .map_err(|_| self.gone())?;
        let storage = self.storage.clone();
        Ok(Receiving::new(self, storage, reply, None, shutdown))
    }
}

impl<T: Send + 'static> Consuming<T> {
    /// Whether another acknowledgement may start now (see [`MAX_PENDING_ACKNOWLEDGEMENTS`]).
    pub fn takes_acknowledgements(&self) -> bool {
        !self.failed && self.acknowledging.len() < MAX_PENDING_ACKNOWLEDGEMENTS
    }

    /// Deletes by `targets`; the stream yields [`Event::Acknowledged`] with `context` once the
    /// deletes are durable, after those of earlier acknowledgements.
    pub fn acknowledge(&mut self, context: T, targets: Vec<DeleteTarget>) {
        let queue = self.queue.clone();
        let handles = targets.iter().map(|target| target.handle).collect();
        self.acknowledging.push_back(
            async move {
                let count = targets.len();
                let results = if targets.is_empty() {
                    Vec::new()
                } else {
                    match queue.delete_messages(targets).await {
                        Ok(results) => results,
                        Err(error) => vec![Err(error); count],
                    }
                };
                (context, handles, results)
            }
            .boxed(),
        );
    }

    /// The client will acknowledge no more: no message is handed out after this (those claimed
    /// and not handed out go back now); the stream ends once its acknowledgements are answered.
    pub fn close(&mut self) {
        self.closing = true;
        self.turn = Turn::Idle;
    }

    fn free_slots(&self) -> usize {
        self.settings
            .max_outstanding
            .saturating_sub(self.outstanding.len())
    }

    /// Frees the slots of the messages an acknowledgement is done with: deleted, or failed for
    /// good. A delete that failed because storage did leaves the message in flight: it keeps
    /// its slot until acknowledged again or visible again.
    fn acknowledged(&mut self, handles: &[ReceiptHandle], results: &[DeleteResult]) {
        for (handle, result) in handles.iter().zip(results) {
            let done = !matches!(
                result,
                Err(QueueError::Storage(_) | QueueError::ShuttingDown)
            );
            if done {
                self.outstanding.remove(handle);
            }
        }
        self.reset_expiry();
    }

    fn reset_expiry(&mut self) {
        self.expiry = self
            .outstanding
            .earliest_ms()
            .map(|at| Box::pin(sleep_until(self.queue.clock.instant_at(at))));
    }

    fn fail(&mut self, error: QueueError) -> Poll<Option<Result<Event<T>, QueueError>>> {
        self.failed = true;
        self.turn = Turn::Idle;
        Poll::Ready(Some(Err(error)))
    }
}

impl<T: Send + 'static> Stream for Consuming<T> {
    type Item = Result<Event<T>, QueueError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if !this.closing && this.shut_down.as_mut().poll(cx).is_ready() {
            // Claimed messages not handed out go back now; acknowledgements under way are
            // still answered (their commits complete: storage is flushed after the streams end).
            this.close();
        }
        if let Poll::Ready(Some((context, handles, results))) =
            this.acknowledging.poll_next_unpin(cx)
        {
            this.acknowledged(&handles, &results);
            return Poll::Ready(Some(Ok(Event::Acknowledged { context, results })));
        }
        if let Some(expiry) = &mut this.expiry
            && expiry.as_mut().poll(cx).is_ready()
        {
            this.outstanding.expire(this.queue.clock.now_ms());
            this.reset_expiry();
            if let Some(expiry) = &mut this.expiry {
                // Registers the waker for the next one (it is in the future: not ready).
                let _ = expiry.as_mut().poll(cx);
            }
        }
        loop {
            if this.closing {
                return if this.acknowledging.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            }
            match &mut this.turn {
                Turn::Idle => {
                    let free = this.free_slots();
                    if free == 0 {
                        return Poll::Pending;
                    }
                    let claim = StreamClaim {
                        max_messages: free.min(MAX_BATCH),
                        visibility_timeout_seconds: this.settings.visibility_timeout_seconds,
                    };
                    let asking = this.queue.clone().claim_turn(claim, this.shutdown.clone());
                    this.turn = Turn::Asking(asking.boxed());
                }
                Turn::Asking(asking) => match asking.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(receiving)) => this.turn = Turn::Receiving(receiving),
                    Poll::Ready(Err(error)) => return this.fail(error),
                },
                Turn::Receiving(receiving) => match receiving.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(delivered))) => {
                        let message = &delivered.message;
                        let first = this.outstanding.is_empty();
                        this.outstanding
                            .insert(message.handle, message.visible_at_ms);
                        if first {
                            this.reset_expiry();
                            if let Some(expiry) = &mut this.expiry {
                                let _ = expiry.as_mut().poll(cx);
                            }
                        }
                        return Poll::Ready(Some(Ok(Event::Message(delivered))));
                    }
                    Poll::Ready(Some(Err(error))) => return this.fail(error),
                    // The turn is over: every message claimed was handed out (or the server
                    // is shutting down, which the next round sees).
                    Poll::Ready(None) => {
                        this.turn = Turn::Idle;
                        if this.shut_down.as_mut().poll(cx).is_ready() {
                            this.close();
                        }
                    }
                },
            }
        }
    }
}

/// The messages handed out on a stream and not acknowledged, by receive and by when they become
/// visible again. At most `max_outstanding` (1,000) entries.
#[derive(Default)]
struct Outstanding {
    /// (message id, receipt nonce), which name one receive, → when it is visible again.
    by_receive: HashMap<(u64, u64), Millis>,
    /// The same entries in deadline order.
    by_deadline: BTreeSet<(Millis, u64, u64)>,
}

impl Outstanding {
    fn len(&self) -> usize {
        self.by_receive.len()
    }

    fn is_empty(&self) -> bool {
        self.by_receive.is_empty()
    }

    fn insert(&mut self, handle: ReceiptHandle, visible_at_ms: Millis) {
        let key = (handle.message_id, handle.nonce);
        if self.by_receive.insert(key, visible_at_ms).is_none() {
            self.by_deadline.insert((visible_at_ms, key.0, key.1));
        }
    }

    fn remove(&mut self, handle: &ReceiptHandle) {
        let key = (handle.message_id, handle.nonce);
        if let Some(at) = self.by_receive.remove(&key) {
            self.by_deadline.remove(&(at, key.0, key.1));
        }
    }

    fn earliest_ms(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(at, ..)| *at)
    }

    /// Forgets the messages visible again by `now_ms`.
    fn expire(&mut self, now_ms: Millis) {
        while let Some(&(at, message_id, nonce)) = self.by_deadline.first() {
            if at > now_ms {
                break;
            }
            self.by_deadline.pop_first();
            self.by_receive.remove(&(message_id, nonce));
        }
    }
}
