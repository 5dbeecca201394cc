//! One receive, from the caller's side: the messages a queue claims for it, as a stream.
//!
//! This is the whole receive protocol outside the actor: wait for the actor's answer (or the
//! caller's deadline, or shutdown), read the bodies the queue no longer had in memory, and hand
//! the messages out one by one. Whatever was claimed and not handed out goes back to visible at
//! once when the stream is dropped, however early: the gRPC edge only maps it to protobuf, and a
//! client that disconnects at any moment (before the answer, between two messages) leaves no
//! message claimed for it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::messages::Claimed;
use super::{Command, QueueHandle};
use crate::error::QueueError;
use crate::payload::Payload;
use crate::storage::{Storage, StorageError};

/// The actor's answer to a receive.
pub(crate) type Reply = oneshot::Receiver<Result<Vec<Claimed>, QueueError>>;
type BodiesRead = oneshot::Receiver<Result<Vec<(u64, Payload)>, StorageError>>;

/// A received message with its body and attributes.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub message: Claimed,
    pub payload: Payload,
}

/// The messages of one receive. Ends (`None`) when they are all out, when the wait ends with
/// none, at the caller's deadline or at shutdown; an error is its last item.
pub struct Receiving {
    queue: QueueHandle,
    storage: Arc<dyn Storage>,
    state: State,
    /// The caller's own deadline (its grpc-timeout, less a margin), if any.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Ends a wait at shutdown; `None` for a consumer stream's turn, whose stream watches
    /// shutdown itself (and drops the turn).
    shutdown: Option<ShutdownWatch>,
}

enum State {
    /// Waiting for the actor: messages visible, or the wait over.
    Waiting(Reply),
    /// Reading from storage the bodies that `claimed` lacks.
    Reading {
        claimed: VecDeque<Claimed>,
        read: BodiesRead,
    },
    /// Handing out `claimed`, bodies in `bodies` where the message had none.
    Handing {
        claimed: VecDeque<Claimed>,
        bodies: HashMap<u64, Payload>,
    },
    Done,
}

impl Receiving {
    pub(crate) fn new(
        queue: QueueHandle,
        storage: Arc<dyn Storage>,
        reply: Reply,
        deadline: Option<Instant>,
        shutdown: Option<CancellationToken>,
    ) -> Self {
        Self {
            queue,
            storage,
            state: State::Waiting(reply),
            deadline: deadline.map(|at| Box::pin(sleep_until(at))),
            shutdown: shutdown.map(ShutdownWatch::new),
        }
    }

    /// Starts reading the bodies the claimed messages lack, or hands them out at once.
    fn claimed(&mut self, claimed: Vec<Claimed>) {
        let missing: Vec<u64> = claimed
            .iter()
            .filter(|message| message.body.is_none())
            .map(|message| message.id)
            .collect();
        let claimed = VecDeque::from(claimed);
        self.state = if missing.is_empty() {
            State::Handing {
                claimed,
                bodies: HashMap::new(),
            }
        } else {
            let (reply, read) = oneshot::channel();
            self.storage.read_bodies(missing, reply);
            State::Reading { claimed, read }
        };
    }

    /// Gives back what was claimed and not handed out; the stream is over.
    fn give_back(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Waiting(mut reply) => {
                // Closing first means the actor can no longer answer; an answer that came in
                // before is taken back here.
                reply.close();
                if let Ok(Ok(claimed)) = reply.try_recv() {
                    self.queue
                        .release_now(claimed.iter().map(|c| c.handle).collect());
                }
            }
            State::Reading { claimed, .. } | State::Handing { claimed, .. } => {
                self.queue
                    .release_now(claimed.iter().map(|c| c.handle).collect());
            }
            State::Done => {}
        }
    }

    /// Gives back at once what was claimed and not handed out (visible again, its bodies freed)
    /// and ends the receive after what was handed out: the caller's client stopped taking
    /// messages, and others can take these meanwhile.
    pub fn release_unsent(&mut self) {
        self.give_back();
    }

    /// Makes a message this stream handed out visible again at once: the caller could not pass
    /// it on (the server's response buffer stayed full).
    pub fn give_back_delivered(&self, delivered: &Delivered) {
        self.queue.release_now(vec![delivered.message.handle]);
    }

    fn fail(&mut self, error: QueueError) -> Poll<Option<Result<Delivered, QueueError>>> {
        self.give_back();
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Receiving {
    type Item = Result<Delivered, QueueError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Waiting(reply) => {
                    match Pin::new(reply).poll(cx) {
                        Poll::Ready(Ok(Ok(claimed))) if claimed.is_empty() => {
                            this.state = State::Done;
                            return Poll::Ready(None); // no message: the stream ends OK
                        }
                        Poll::Ready(Ok(Ok(claimed))) => {
                            this.claimed(claimed);
                            continue;
                        }
                        Poll::Ready(Ok(Err(error))) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(error)));
                        }
                        // The actor ended without answering: its queue was deleted (or moved).
                        Poll::Ready(Err(_)) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(this.queue.gone())));
                        }
                        Poll::Pending => {}
                    }
                    // Only a wait can be cut short; messages already claimed are handed out.
                    let deadline_passed = this
                        .deadline
                        .as_mut()
                        .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                    let shutting_down = this
                        .shutdown
                        .as_mut()
                        .is_some_and(|shutdown| shutdown.poll(cx));
                    if deadline_passed || shutting_down {
                        this.give_back();
                        return Poll::Ready(None);
                    }
                    return Poll::Pending;
                }
                State::Reading { read, .. } => {
                    let bodies = match Pin::new(read).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Ok(bodies))) => bodies.into_iter().collect(),
                        Poll::Ready(Ok(Err(error))) => return this.fail(error.into()),
                        Poll::Ready(Err(_)) => return this.fail(QueueError::ShuttingDown),
                    };
                    let State::Reading { claimed, .. } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched State::Reading above");
                    };
                    this.state = State::Handing { claimed, bodies };
                }
                State::Handing { claimed, bodies } => {
                    let Some(mut message) = claimed.pop_front() else {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    };
                    // A body that is gone belongs to a message that expired a moment ago.
                    let Some(body) = message.body.take().or_else(|| bodies.remove(&message.id))
                    else {
                        continue;
                    };
                    return Poll::Ready(Some(Ok(Delivered {
                        message,
                        payload: body,
                    })));
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Shutdown, as seen by a stream that is polled many times: whether it has begun, and a wake-up
/// when it does.
///
/// Polling a cancellation token's wait takes the lock of the token's waiter list, and the
/// server's token is shared by every receive and consumer stream: polled on each message, it
/// was a lock every stream took on every poll. Here the wait is made and polled only when first
/// needed and when the task polling it changes; otherwise a poll is one atomic load.
pub(crate) struct ShutdownWatch {
    token: CancellationToken,
    /// The wait, registered with the waker in `waker`; made at the first poll.
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    waker: Option<std::task::Waker>,
}

impl ShutdownWatch {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self {
            token,
            wait: None,
            waker: None,
        }
    }

    /// Whether shutdown has begun; if not, the task polling is woken when it does.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if self.token.is_cancelled() {
            return true;
        }
        if self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return false;
        }
        let token = &self.token;
        let ready = self
            .wait
            .get_or_insert_with(|| Box::pin(token.clone().cancelled_owned()))
            .as_mut()
            .poll(cx)
            .is_ready();
        self.waker = Some(cx.waker().clone());
        ready
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl QueueHandle {
    /// Makes messages claimed for a receiver that has gone visible again, without waiting (it
    /// runs in `Drop`). With the mailbox full, a task delivers the command.
    pub(crate) fn release_now(&self, handles: Vec<crate::receipt::ReceiptHandle>) {
        if handles.is_empty() {
            return;
        }
        match self.mailbox.try_send(Command::Release { handles }) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(command)) => {
                let mailbox = self.mailbox.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = mailbox.send(command).await;
                    });
                }
            }
            // The actor has ended: the queue is gone, and its messages with it.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
