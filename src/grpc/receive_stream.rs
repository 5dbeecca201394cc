//! The response stream of ReceiveMessages, and the limits that keep what it holds bounded.
//!
//! A client that stops reading (its HTTP/2 window full, while it still answers pings) leaves
//! hyper unable to send; hyper then stops polling the stream, so nothing inside the stream can
//! notice. Three limits hold it:
//!
//! - **Open receives**: each call takes a slot of `--max-waiting-receives` for its lifetime
//!   (parked long polls and streams alike); with none free the call is RESOURCE_EXHAUSTED.
//! - **Response bytes**: a message handed to the network keeps its size in a server-wide budget
//!   (`--max-response-buffer-bytes`) until the stream is polled again (the client took it and
//!   made room) or dropped. A message that finds no room waits for it up to the stall timeout,
//!   then the stream ends RESOURCE_EXHAUSTED and its messages go back to visible.
//! - **Slow clients**: a receive that has waited on its client for [`RELEASE_UNSENT_AFTER`]
//!   gives back the messages it claimed and has not sent (their bodies freed) and ends after
//!   what it sent, so a stalled reader holds their bodies for seconds, not for the stall
//!   timeout. (A consumer stream keeps its turn's messages until the stall timeout.)
//! - **Stalls**: the server's watchdog (one task, which looks at every open stream each
//!   [`WATCH_INTERVAL`]; not a task per call, which cost every receive a spawn and a timer)
//!   ends the receive when the stream has waited on its client for
//!   `--stream-stall-timeout-seconds`: the [`Receiving`] is dropped, so the messages
//!   claimed and not handed out are visible again at once, not at their visibility timeout.
//!   The client, if it ever reads again, gets RESOURCE_EXHAUSTED after what was already sent.
//!   (The HTTP/2 stream itself stays until the client resets it or the connection closes: hyper
//!   offers no way to reset a stream it is not polling. What it still holds is at most one
//!   message, counted in the budget above.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use super::convert;
use crate::error::QueueError;
use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;
use crate::pb;
use crate::queue::Receiving;
use crate::queue::receiving::Delivered;
use crate::receipt::ReceiptKey;

/// How long a receive may wait on its client before the messages it claimed and has not sent
/// are given back (visible again, their bodies freed), the receive then ending after what it
/// sent: a client that cannot take one message in this time is not keeping up, and others can
/// take those messages meanwhile. (The stall timeout, later, ends the stream.) A receive is
/// "up to max_messages", so this changes no promise.
pub const RELEASE_UNSENT_AFTER: Duration = Duration::from_secs(2);

/// How often the watchdog looks at the open streams: a release or a stall is acted on at most
/// this long after its time (never before it).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The server-wide limits of receive streams; one per server, shared by every call.
pub struct ReceiveLimits {
    /// Slots of `--max-waiting-receives`.
    open: Arc<Semaphore>,
    max_open: usize,
    /// Bytes of `--max-response-buffer-bytes`.
    buffer: Arc<Semaphore>,
    /// `--stream-stall-timeout-seconds`.
    stall_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The open streams, for the watchdog.
    watched: Arc<Watched>,
}

/// The streams the watchdog looks at; each is forgotten once it has ended or been dropped.
#[derive(Default)]
struct Watched {
    streams: Mutex<Vec<Weak<dyn Watch>>>,
    /// Whether the watchdog task runs: it starts with the first stream, and ends when none is
    /// left to watch (an idle server has no timer ticking).
    running: AtomicBool,
}

impl ReceiveLimits {
    pub fn new(
        max_open: usize,
        buffer_bytes: usize,
        stall_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            open: Arc::new(Semaphore::new(max_open)),
            max_open,
            buffer: Arc::new(Semaphore::new(buffer_bytes.min(Semaphore::MAX_PERMITS))),
            stall_timeout,
            metrics,
            watched: Arc::default(),
        }
    }

    /// A slot for one receive, or RESOURCE_EXHAUSTED when `--max-waiting-receives` are open.
    pub fn open_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.open.clone().try_acquire_owned().map_err(|_| {
            self.metrics.limit_refused("max_waiting_receives");
            Status::from(QueueError::ReceiveLimit(format!(
                "the server has {} receives and consumer streams open, its \
                 --max-waiting-receives; retry later",
                self.max_open
            )))
        })
    }

    /// The response stream of `deliveries` (a receive, a consumer stream), holding `slot`
    /// until it is dropped.
    pub fn stream<D: Deliveries>(
        &self,
        deliveries: D,
        receipt_key: ReceiptKey,
        slot: OwnedSemaphorePermit,
    ) -> GuardedStream<D> {
        let shared = Arc::new(Shared {
            deliveries: Mutex::new(Some(deliveries)),
            // Until hyper polls it first: a client whose window is shut from the start never
            // lets it.
            waiting_on_client: Mutex::new(Some(Instant::now())),
            stalled: AtomicBool::new(false),
            released: AtomicBool::new(false),
            stall_timeout: self.stall_timeout,
            metrics: self.metrics.clone(),
        });
        let weak: Weak<dyn Watch> = Arc::downgrade(&shared) as Weak<dyn Watch>;
        let mut streams = lock(&self.watched.streams);
        streams.push(weak);
        // Under the lock, so a watchdog that has just found nothing to watch and is ending
        // (it clears the flag under the same lock) is followed by a new one.
        if !self.watched.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(watchdog(Arc::downgrade(&self.watched)));
        }
        drop(streams);
        GuardedStream {
            shared,
            receipt_key,
            ended: false,
            _slot: slot,
            held: None,
            buffer: self.buffer.clone(),
            waiting: None,
            stall_timeout: self.stall_timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// What a [`GuardedStream`] hands to the network: the queue-side stream of a receive
/// ([`Received`]) or of a consumer stream (`grpc::consume_stream::ConsumeStream`). Dropping it must
/// release what it claimed and has not handed out.
pub trait Deliveries: Send + 'static {
    /// What it yields, before conversion to protobuf.
    type Item: Send + Unpin + 'static;
    /// The response message of the call.
    type Message;
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Self::Item, Status>>>;
    /// The bytes an item holds while the network has it (at least 1).
    fn held_bytes(item: &Self::Item) -> usize;
    /// Makes the messages of an item that could not be handed out visible again at once.
    fn give_back(&self, item: &Self::Item);
    fn message(item: Self::Item, receipt_key: &ReceiptKey) -> Self::Message;
    /// Gives back what was claimed and not handed out, if it can do so and go on (the client
    /// has stopped reading for [`RELEASE_UNSENT_AFTER`]). By default it cannot: the stall
    /// timeout releases them.
    fn release_unsent(&mut self) {}
}

/// The messages of one ReceiveMessages call.
pub struct Received(pub Receiving);

impl Deliveries for Received {
    type Item = Delivered;
    type Message = pb::ReceivedMessage;

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivered, Status>>> {
        use futures_util::StreamExt as _;
        self.0
            .poll_next_unpin(cx)
            .map(|item| item.map(|result| result.map_err(Status::from)))
    }

    fn held_bytes(item: &Delivered) -> usize {
        item.payload.size().max(1)
    }

    fn give_back(&self, item: &Delivered) {
        self.0.give_back_delivered(item);
    }

    fn message(item: Delivered, receipt_key: &ReceiptKey) -> pb::ReceivedMessage {
        convert::received(&item.message, item.payload, receipt_key)
    }

    /// The receive ends after what was handed out; the rest is visible again and its bodies
    /// are freed.
    fn release_unsent(&mut self) {
        self.0.release_unsent();
    }
}

/// What the stream and its watchdog share.
struct Shared<D> {
    /// Taken (and dropped, releasing its messages) by the watchdog on a stall.
    deliveries: Mutex<Option<D>>,
    /// Since when the stream has handed out a message and not been polled again.
    waiting_on_client: Mutex<Option<Instant>>,
    /// Set by the watchdog when it ended the receive.
    stalled: AtomicBool,
    /// Set by the watchdog when it gave back what the receive had not sent (once).
    released: AtomicBool,
    stall_timeout: Duration,
    metrics: Arc<Metrics>,
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A message waiting for room in the response budget.
struct Waiting<T> {
    item: T,
    acquire: Acquire,
    give_up: Pin<Box<Sleep>>,
}

/// The response stream of ReceiveMessages and StreamMessages: the queue's deliveries in
/// protobuf, within the limits above. (Its outcome is measured by `grpc::observe`, from the
/// trailers.)
pub struct GuardedStream<D: Deliveries> {
    shared: Arc<Shared<D>>,
    receipt_key: ReceiptKey,
    /// Whether it has ended (an error is its last item).
    ended: bool,
    /// A slot of `--max-waiting-receives`, for the stream's lifetime.
    _slot: OwnedSemaphorePermit,
    /// The budget of the last message handed to the network, until the next poll.
    held: Option<OwnedSemaphorePermit>,
    buffer: Arc<Semaphore>,
    waiting: Option<Waiting<D::Item>>,
    stall_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// The response stream of ReceiveMessages.
pub type ReceiveStream = GuardedStream<Received>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic while swapping a value: the value is whole.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: Deliveries> GuardedStream<D> {
    fn end(&mut self, status: Status) -> Poll<Option<Result<D::Message, Status>>> {
        self.ended = true;
        // Dropping the deliveries releases what they still hold.
        drop(lock(&self.shared.deliveries).take());
        Poll::Ready(Some(Err(status)))
    }

    fn hand_out(
        &mut self,
        item: D::Item,
        permit: OwnedSemaphorePermit,
    ) -> Poll<Option<Result<D::Message, Status>>> {
        self.held = Some(permit);
        *lock(&self.shared.waiting_on_client) = Some(Instant::now());
        Poll::Ready(Some(Ok(D::message(item, &self.receipt_key))))
    }
}

impl<D: Deliveries> tokio_stream::Stream for GuardedStream<D> {
    type Item = Result<D::Message, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        // Polled again: the client took the last message (hyper had room to send it).
        this.held = None;
        *lock(&this.shared.waiting_on_client) = None;
        if this.shared.stalled.load(Ordering::Acquire) {
            return this.end(Status::from(QueueError::ReceiveLimit(format!(
                "the stream was ended: its client read nothing for {:?} \
                 (--stream-stall-timeout-seconds); its other messages were released",
                this.stall_timeout
            ))));
        }
        if let Some(waiting) = &mut this.waiting {
            match waiting.acquire.as_mut().poll(cx) {
                Poll::Ready(Ok(permit)) => {
                    let Some(waiting) = this.waiting.take() else {
                        unreachable!("matched Some above");
                    };
                    return this.hand_out(waiting.item, permit);
                }
                // The semaphore is never closed.
                Poll::Ready(Err(_)) | Poll::Pending => {}
            }
            if waiting.give_up.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(waiting) = this.waiting.take()
                && let Some(deliveries) = lock(&this.shared.deliveries).as_ref()
            {
                deliveries.give_back(&waiting.item);
            }
            this.metrics.limit_refused("response_buffer");
            if REFUSALS.allow("response_buffer") {
                tracing::warn!(
                    "ended a receive: the response buffer stayed full (clients not reading); \
                     see --max-response-buffer-bytes"
                );
            }
            return this.end(Status::from(QueueError::ReceiveLimit(
                "the server's response buffer is full (--max-response-buffer-bytes); the \
                 messages were released, retry later"
                    .into(),
            )));
        }
        let polled = {
            let mut deliveries = lock(&this.shared.deliveries);
            match deliveries.as_mut() {
                Some(deliveries) => deliveries.poll_item(cx),
                None => Poll::Ready(None),
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => {
                let size = u32::try_from(D::held_bytes(&item).max(1)).unwrap_or(u32::MAX);
                match this.buffer.clone().try_acquire_many_owned(size) {
                    Ok(permit) => this.hand_out(item, permit),
                    Err(_) => {
                        this.waiting = Some(Waiting {
                            item,
                            acquire: Box::pin(this.buffer.clone().acquire_many_owned(size)),
                            give_up: Box::pin(tokio::time::sleep(this.stall_timeout)),
                        });
                        // Registers the waker with the semaphore and the timer.
                        Pin::new(this).poll_next(cx)
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.ended = true;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

/// What the watchdog asks of an open stream.
trait Watch: Send + Sync {
    /// Acts on how long the stream has waited on its client at `now`: after
    /// [`RELEASE_UNSENT_AFTER`] (or the stall timeout, if shorter) gives back what the receive
    /// has not sent, and after the stall timeout ends the receive. False once the stream has
    /// ended (nothing more to watch).
    fn check(&self, now: Instant) -> bool;
}

impl<D: Deliveries> Watch for Shared<D> {
    fn check(&self, now: Instant) -> bool {
        let release_after = RELEASE_UNSENT_AFTER.min(self.stall_timeout);
        let since = *lock(&self.waiting_on_client);
        let waited = since.map(|since| now.saturating_duration_since(since));
        match waited {
            Some(waited) if waited >= self.stall_timeout => {
                let deliveries = lock(&self.deliveries).take();
                if deliveries.is_none() {
                    return false; // it ended by itself
                }
                self.stalled.store(true, Ordering::Release);
                drop(deliveries);
                self.metrics.limit_refused("stalled_stream");
                if REFUSALS.allow("stalled_stream") {
                    tracing::info!(
                        timeout = ?self.stall_timeout,
                        "ended a receive whose client read nothing; its messages were released"
                    );
                }
                return false;
            }
            Some(waited) if waited >= release_after => {
                if !self.released.swap(true, Ordering::AcqRel)
                    && let Some(deliveries) = lock(&self.deliveries).as_mut()
                {
                    deliveries.release_unsent();
                }
            }
            _ => {}
        }
        lock(&self.deliveries).is_some()
    }
}

/// Looks at every open stream each [`WATCH_INTERVAL`] (see [`Watch::check`]), forgetting those
/// that ended or were dropped; returns when none is left, or when the server's limits are gone.
async fn watchdog(watched: Weak<Watched>) {
    // The first look one interval after the start (nothing is due before): a watchdog that
    // found its first streams already over would end, and the next call start another.
    let mut ticks = tokio::time::interval_at(Instant::now() + WATCH_INTERVAL, WATCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checking = Vec::new();
    loop {
        ticks.tick().await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        // Checked outside the lock, so streams opening meanwhile never wait for a sweep.
        std::mem::swap(&mut checking, &mut *lock(&watched.streams));
        let now = Instant::now();
        checking.retain(|stream: &Weak<dyn Watch>| {
            stream.upgrade().is_some_and(|stream| stream.check(now))
        });
        let mut streams = lock(&watched.streams);
        streams.append(&mut checking);
        if streams.is_empty() {
            watched.running.store(false, Ordering::Release);
            return;
        }
    }
}
