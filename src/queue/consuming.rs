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
//! A slot is taken when a message is handed out and freed when its acknowledgement or its nack
//! is answered, or when its visibility timeout passes unacknowledged (the message is the queue's
//! again). An extension moves that timeout, so the slot stays taken until the new one.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::receiving::{Delivered, ShutdownWatch};
use super::{
    DeleteResult, DeleteTarget, HandlePlace, QueueHandle, Receiving, StreamClaim, VisibilityResult,
    VisibilityTarget,
};
use crate::clock::Millis;
use crate::error::QueueError;
use crate::limits::MAX_BATCH;
use crate::receipt::ReceiptHandle;

/// Acknowledgements (nacks and extensions included) of one stream being committed at once; past
/// this the caller stops taking requests (see [`Consuming::takes_acknowledgements`]), so a client that sends them faster than
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
    /// A nack's or an extension's visibility changes are durable (or failed): one result per
    /// target, in order.
    VisibilityChanged {
        context: T,
        results: Vec<VisibilityResult>,
    },
}

/// What a consumer asks of messages it was handed: the three ways a message leaves its hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Delete them (an acknowledgement).
    Delete,
    /// Make them visible again after `delay_seconds` (0: at once), freeing their slots.
    Nack { delay_seconds: u32 },
    /// Keep them invisible for `visibility_timeout_seconds` from now, keeping their slots.
    Extend { visibility_timeout_seconds: u32 },
}

/// The queue's answer to a settlement, by kind.
enum Settled {
    Deleted(Vec<DeleteResult>),
    Nacked(Vec<VisibilityResult>),
    Extended(Vec<VisibilityResult>),
}

type Acknowledging<T> = BoxFuture<'static, (T, Vec<ReceiptHandle>, Settled)>;

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
    shut_down: ShutdownWatch,
    /// No more turns: the client half-closed, or the server is shutting down.
    closing: bool,
    /// An error was yielded: the stream is over.
    failed: bool,
}

// One per stream, held in place for the stream's life: boxing the large variant would cost an
// allocation per turn (per message, at batch 1) to save a few hundred bytes per stream.
#[allow(clippy::large_enum_variant)]
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
            shut_down: ShutdownWatch::new(shutdown),
            closing: false,
            failed: false,
        }
    }

    /// One turn of a consumer stream: a receive that waits in line with no deadline. Its
    /// stream watches shutdown itself (and drops the turn then), so the turn does not.
    fn claim_turn(&self, claim: StreamClaim) -> Turn {
        use tokio::sync::mpsc::error::TrySendError;
        let (respond_to, reply) = tokio::sync::oneshot::channel();
        let receiving = |queue: QueueHandle| {
            let storage = queue.storage.clone();
            Receiving::new(queue, storage, reply, None, None)
        };
        // Put in the mailbox at once when it has room (nearly always): no future to box.
        match self
            .mailbox
            .try_send(super::Command::StreamClaim { claim, respond_to })
        {
            Ok(()) => Turn::Receiving(receiving(self.clone())),
            Err(TrySendError::Closed(_)) => {
                Turn::Asking(std::future::ready(Err(self.gone())).boxed())
            }
            Err(TrySendError::Full(command)) => {
                let queue = self.clone();
                Turn::Asking(
                    async move {
                        queue
                            .mailbox
                            .send(command)
                            .await
                            .map_err(|_| queue.gone())?;
                        Ok(receiving(queue))
                    }
                    .boxed(),
                )
            }
        }
    }
}

impl<T: Send + 'static> Consuming<T> {
    /// Whether another acknowledgement may start now (see [`MAX_PENDING_ACKNOWLEDGEMENTS`]).
    pub fn takes_acknowledgements(&self) -> bool {
        !self.failed && self.acknowledging.len() < MAX_PENDING_ACKNOWLEDGEMENTS
    }

    /// Settles the messages of `handles` (their indexes in the client's request beside them)
    /// as `settlement` asks; the stream yields [`Event::Acknowledged`] (a delete) or
    /// [`Event::VisibilityChanged`] (a nack, an extension) with `context` once the changes are
    /// durable, after those of earlier settlements.
    pub fn settle(
        &mut self,
        context: T,
        settlement: Settlement,
        handles: Vec<(ReceiptHandle, usize)>,
    ) {
        let queue = self.queue.clone();
        let receipts = handles.iter().map(|(handle, _)| *handle).collect();
        self.acknowledging.push_back(
            async move {
                let count = handles.len();
                let settled = match settlement {
                    Settlement::Delete => {
                        let targets = handles
                            .into_iter()
                            .map(|(handle, index)| DeleteTarget {
                                handle,
                                index: Some(index),
                            })
                            .collect();
                        Settled::Deleted(if count == 0 {
                            Vec::new()
                        } else {
                            queue
                                .delete_messages(targets)
                                .await
                                .unwrap_or_else(|error| vec![Err(error); count])
                        })
                    }
                    Settlement::Nack {
                        delay_seconds: seconds,
                    }
                    | Settlement::Extend {
                        visibility_timeout_seconds: seconds,
                    } => {
                        let targets = handles
                            .into_iter()
                            .map(|(handle, index)| VisibilityTarget {
                                handle,
                                visibility_timeout_seconds: seconds,
                                place: HandlePlace::Listed(index),
                            })
                            .collect();
                        let results = if count == 0 {
                            Vec::new()
                        } else {
                            queue
                                .change_visibility(targets)
                                .await
                                .unwrap_or_else(|error| vec![Err(error); count])
                        };
                        if matches!(settlement, Settlement::Extend { .. }) {
                            Settled::Extended(results)
                        } else {
                            Settled::Nacked(results)
                        }
                    }
                };
                (context, receipts, settled)
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

    /// Updates the slots of the messages a settlement is done with, and says what to yield.
    /// An acknowledgement or a nack frees the slots of messages deleted (made visible), or that
    /// failed for good; one that failed because storage did leaves the message in flight, so it
    /// keeps its slot until settled again or visible again. An extension moves the slot's end
    /// to the message's new visibility time.
    fn settled(&mut self, context: T, handles: &[ReceiptHandle], settled: Settled) -> Event<T> {
        fn done<V>(result: &Result<V, QueueError>) -> bool {
            !matches!(
                result,
                Err(QueueError::Storage(_) | QueueError::ShuttingDown)
            )
        }
        let event = match settled {
            Settled::Deleted(results) => {
                for (handle, result) in handles.iter().zip(&results) {
                    if done(result) {
                        self.outstanding.remove(handle);
                    }
                }
                Event::Acknowledged { context, results }
            }
            Settled::Nacked(results) => {
                for (handle, result) in handles.iter().zip(&results) {
                    if done(result) {
                        self.outstanding.remove(handle);
                    }
                }
                Event::VisibilityChanged { context, results }
            }
            Settled::Extended(results) => {
                for (handle, result) in handles.iter().zip(&results) {
                    if let Ok(visible_at_ms) = result {
                        self.outstanding.extend(handle, *visible_at_ms);
                    }
                }
                Event::VisibilityChanged { context, results }
            }
        };
        self.reset_expiry();
        event
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
        if !this.closing && this.shut_down.poll(cx) {
            // Claimed messages not handed out go back now; acknowledgements under way are
            // still answered (their commits complete: storage is flushed after the streams end).
            this.close();
        }
        if let Poll::Ready(Some((context, handles, settled))) =
            this.acknowledging.poll_next_unpin(cx)
        {
            return Poll::Ready(Some(Ok(this.settled(context, &handles, settled))));
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
                    this.turn = this.queue.claim_turn(claim);
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
                        if this.shut_down.poll(cx) {
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

    /// Moves the end of an outstanding message's slot (an extension); a message not
    /// outstanding here (received elsewhere, or already visible again) is left alone.
    fn extend(&mut self, handle: &ReceiptHandle, visible_at_ms: Millis) {
        let key = (handle.message_id, handle.nonce);
        if let Some(at) = self.by_receive.get_mut(&key) {
            self.by_deadline.remove(&(*at, key.0, key.1));
            *at = visible_at_ms;
            self.by_deadline.insert((visible_at_ms, key.0, key.1));
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
