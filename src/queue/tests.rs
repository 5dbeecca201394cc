//! The queue actor driven through its handle alone: no network, storage in memory
//! ([`MemoryStorage`]), and tokio's paused clock, so hours of queue time pass in a moment and
//! every timer fires exactly when the queue set it.
//!
//! Under a paused clock a runtime with nothing to do jumps to its next timer. So waiting on a
//! receive measures *when* the queue answered (read off `Instant::now()`), and whether
//! something has happened *yet* is asked by polling it once, never by awaiting it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, advance};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body_cache::BodyBudget;

use super::receiving::Delivered;
use super::{
    ConsumeSettings, Consuming, Counts, DeleteResult, DeleteTarget, Event, HandlePlace, Outgoing,
    QueueContext, QueueHandle, ReceiveRequest, Receiving, Settlement, VisibilityResult,
    VisibilityTarget,
};
use crate::attributes::QueueAttributes;
use crate::clock::{Clock, Millis};
use crate::error::QueueError;
use crate::payload::Payload;
use crate::receipt::ReceiptHandle;
use crate::storage::memory::MemoryStorage;
use crate::storage::{QueueRecord, Storage, StoredState, WriteOp};

const QUEUE_ID: u64 = 1;
/// Room for every body these tests send, so first receives find them in memory.
const BODY_BUDGET: usize = 16 << 20;
/// Timers fire on the paused clock exactly, but the queue's clock also follows the system's wall
/// clock when that is ahead (see `clock`): the real time a test takes may add this much.
const SLACK: Duration = Duration::from_millis(250);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// One queue's actor on in-memory storage, and what a test needs to restart it.
struct Harness {
    storage: Arc<MemoryStorage>,
    clock: Clock,
    body_budget: usize,
    queue: QueueHandle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(attributes: QueueAttributes) -> Self {
        Self::start_with_budget(attributes, BODY_BUDGET).await
    }

    async fn start_with_budget(attributes: QueueAttributes, body_budget: usize) -> Self {
        let storage = Arc::new(MemoryStorage::new());
        let clock = Clock::new();
        let now = clock.now_ms();
        let record = QueueRecord {
            id: QUEUE_ID,
            name: "q".into(),
            attributes,
            create_time_ms: now,
            update_time_ms: now,
        };
        let (done, created) = tokio::sync::oneshot::channel();
        storage.commit(WriteOp::CreateQueue(record.clone()), done);
        created.await.expect("reply").expect("queue created");
        Self::recover(storage, clock, body_budget)
    }

    /// Starts an actor on what storage holds, as the registry does at startup.
    fn recover(storage: Arc<MemoryStorage>, clock: Clock, body_budget: usize) -> Self {
        let recovered = storage.recover().expect("recover");
        let record = recovered
            .queues
            .into_iter()
            .find(|q| q.id == QUEUE_ID)
            .expect("the queue is stored");
        let now = clock.now_ms();
        let table = super::window::recover(
            &*storage,
            QUEUE_ID,
            now,
            super::window::WindowLimits::unbounded(),
        )
        .expect("recover the queue's messages");
        let context = QueueContext {
            storage: storage.clone(),
            clock: clock.clone(),
            message_ids: Arc::new(AtomicU64::new(recovered.next_message_id)),
            body_budget: Arc::new(BodyBudget::new(body_budget)),
            window: super::window::WindowLimits::unbounded(),
            directory: Default::default(),
        };
        let tracker = TaskTracker::new();
        let queue = QueueHandle::spawn(record, table, context, &tracker);
        Self {
            storage,
            clock,
            body_budget,
            queue,
            tracker,
            shutdown: CancellationToken::new(),
        }
    }

    /// Stops the actor (it ends when its last handle goes, having handed its receive
    /// bookkeeping to storage as a shutdown does) and starts a new one on the same storage.
    async fn restart(self) -> Self {
        self.queue.flush().await.expect("flush");
        let Self {
            storage,
            clock,
            body_budget,
            queue,
            tracker,
            ..
        } = self;
        drop(queue);
        tracker.close();
        tracker.wait().await;
        Self::recover(storage, clock, body_budget)
    }

    /// The message counts (the bytes are read with [`Self::bytes`]).
    async fn counts(&self) -> Counts {
        Counts {
            bytes: 0,
            ..self.queue.info().await.expect("info").counts
        }
    }

    async fn bytes(&self) -> u64 {
        self.queue.info().await.expect("info").counts.bytes
    }

    async fn send(&self, body: &str) -> u64 {
        self.send_delayed(body, 0).await
    }

    async fn send_delayed(&self, body: &str, delay_seconds: u32) -> u64 {
        let outgoing = Outgoing {
            payload: Payload::new(Bytes::copy_from_slice(body.as_bytes()), Default::default()),
            delay_seconds,
            deduplication_id: None,
        };
        self.queue.send(vec![outgoing]).await.expect("send")[0]
    }

    async fn start_receive(&self, max_messages: usize, wait_seconds: u32) -> Receiving {
        let request = ReceiveRequest {
            max_messages,
            wait_seconds: Some(wait_seconds),
            visibility_timeout_seconds: None,
        };
        self.queue
            .receive(request, None, self.shutdown.clone())
            .await
            .expect("receive")
    }

    /// Receives up to `max_messages`, waiting up to `wait_seconds` for the first.
    async fn receive(&self, max_messages: usize, wait_seconds: u32) -> Vec<Delivered> {
        drain(self.start_receive(max_messages, wait_seconds).await).await
    }

    async fn delete(&self, handles: &[ReceiptHandle]) -> Result<Vec<DeleteResult>, QueueError> {
        let targets = handles
            .iter()
            .enumerate()
            .map(|(index, &handle)| DeleteTarget {
                handle,
                index: Some(index),
            })
            .collect();
        self.queue.delete_messages(targets).await
    }

    /// Deletes by one handle; the error of that handle, or of the whole request.
    async fn delete_one(&self, handle: ReceiptHandle) -> DeleteResult {
        let mut results = self.delete(&[handle]).await?;
        results.remove(0)
    }

    /// Changes one message's visibility; the error of that handle, or of the whole request.
    async fn change_visibility(&self, handle: ReceiptHandle, seconds: u32) -> VisibilityResult {
        let target = VisibilityTarget {
            handle,
            visibility_timeout_seconds: seconds,
            place: HandlePlace::Single,
        };
        self.queue.change_visibility(vec![target]).await?.remove(0)
    }

    fn stored_states(&self) -> Vec<(u64, StoredState)> {
        self.storage
            .stored_messages(QUEUE_ID)
            .into_iter()
            .map(|m| (m.id, m.state))
            .collect()
    }
}

async fn drain(receiving: Receiving) -> Vec<Delivered> {
    receiving
        .map(|delivered| delivered.expect("delivered"))
        .collect()
        .await
}

fn bodies(delivered: &[Delivered]) -> Vec<&[u8]> {
    delivered.iter().map(|d| &d.payload.body[..]).collect()
}

fn counts(visible: u64, in_flight: u64, delayed: u64, rewindable: u64) -> Counts {
    Counts {
        visible,
        in_flight,
        delayed,
        rewindable,
        bytes: 0,
    }
}

fn attributes() -> QueueAttributes {
    QueueAttributes {
        visibility_timeout_seconds: 30,
        polling_wait_seconds: 0,
        ..QueueAttributes::default()
    }
}

/// Asserts that `actual` is `expected`, give or take the real time the test took (see SLACK).
#[track_caller]
fn assert_about(actual: Duration, expected: Duration) {
    assert!(
        actual + SLACK >= expected && actual <= expected + SLACK,
        "{actual:?}, expected {expected:?}"
    );
}

/// Polls `future` once: whether it has finished by now.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    future.now_or_never()
}

fn is_stale<T>(result: &Result<T, QueueError>) -> bool {
    matches!(result, Err(QueueError::StaleReceipt(_)))
}

/// What every test here rests on: the queue's wall clock moves with tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn the_queue_clock_follows_paused_time() {
    let clock = Clock::new();
    let before = clock.now_ms();
    advance(secs(3_600)).await;
    let moved: Millis = clock.now_ms() - before;
    assert!(
        (3_600_000..3_600_000 + SLACK.as_millis() as Millis).contains(&moved),
        "{moved}"
    );
    let at = clock.instant_at(clock.now_ms() + 5_000);
    assert_eq!(at - Instant::now(), secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_message_becomes_receivable_when_its_delay_ends() {
    let harness = Harness::start(attributes()).await;
    harness.send_delayed("later", 10).await;
    assert_eq!(harness.counts().await, counts(0, 0, 1, 0));
    assert!(harness.receive(16, 0).await.is_empty());
    advance(secs(9)).await;
    assert!(
        harness.receive(16, 0).await.is_empty(),
        "visible before its delay ended"
    );

    // A long poll parked now is woken by the delay's end, 1 s later, not by its own wait.
    let started = Instant::now();
    let got = harness.receive(16, 20).await;
    assert_about(started.elapsed(), secs(1));
    assert_eq!(bodies(&got), [b"later"]);
    assert_eq!(got[0].message.dequeue_count, 1);
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_message_comes_back_after_its_visibility_timeout() {
    let harness = Harness::start(attributes()).await;
    harness.send("m").await;
    let first = harness.receive(1, 0).await.remove(0).message;
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    advance(secs(29)).await;
    assert!(
        harness.receive(1, 0).await.is_empty(),
        "visible while in flight"
    );

    let started = Instant::now();
    let second = harness.receive(1, 20).await.remove(0).message;
    assert_about(started.elapsed(), secs(1));
    assert_eq!(second.id, first.id);
    assert_eq!(second.dequeue_count, 2);
    assert_eq!(second.first_dequeue_ms, first.first_dequeue_ms);
    assert_ne!(second.handle, first.handle);

    let older = harness.delete_one(first.handle).await;
    assert!(is_stale(&older), "{older:?}");
    harness
        .delete_one(second.handle)
        .await
        .expect("newest handle");
    assert_eq!(harness.counts().await, Counts::default());
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_ends_empty_when_its_wait_is_over() {
    let harness = Harness::start(QueueAttributes {
        polling_wait_seconds: 7,
        ..attributes()
    })
    .await;
    let started = Instant::now();
    assert!(harness.receive(16, 5).await.is_empty());
    assert_about(started.elapsed(), secs(5));

    // Without a wait of its own, a receive waits the queue's polling wait.
    let started = Instant::now();
    let request = ReceiveRequest {
        max_messages: 1,
        wait_seconds: None,
        visibility_timeout_seconds: None,
    };
    let receiving = harness
        .queue
        .receive(request, None, CancellationToken::new())
        .await
        .expect("receive");
    assert!(drain(receiving).await.is_empty());
    assert_about(started.elapsed(), secs(7));
    assert_eq!(
        harness
            .queue
            .info()
            .await
            .expect("info")
            .totals
            .empty_receives,
        2
    );
}

/// The caller's own deadline (its gRPC timeout) ends the poll before the queue's wait, and the
/// poll claims nothing afterwards: a message sent later stays for the next receiver.
#[tokio::test(start_paused = true)]
async fn a_long_poll_ends_at_the_callers_deadline_and_claims_nothing_after() {
    let harness = Harness::start(attributes()).await;
    let started = Instant::now();
    let request = ReceiveRequest {
        max_messages: 1,
        wait_seconds: Some(20),
        visibility_timeout_seconds: None,
    };
    let receiving = harness
        .queue
        .receive(request, Some(started + secs(2)), CancellationToken::new())
        .await
        .expect("receive");
    assert!(drain(receiving).await.is_empty());
    assert_eq!(started.elapsed(), secs(2));
    harness.send("for the next one").await;
    assert_eq!(harness.counts().await, counts(1, 0, 0, 0));
    assert_eq!(bodies(&harness.receive(1, 0).await), [b"for the next one"]);
}

#[tokio::test(start_paused = true)]
async fn parked_polls_are_served_first_come_first_served() {
    let harness = Harness::start(attributes()).await;
    let mut first = harness.start_receive(1, 20).await;
    let gone = harness.start_receive(1, 20).await;
    let mut second = harness.start_receive(1, 20).await;
    let mut third = harness.start_receive(1, 20).await;
    // A poll whose caller left takes no turn.
    drop(gone);

    harness.send("one").await;
    let got = first.next().await.expect("served").expect("delivered");
    assert_eq!(&got.payload.body[..], b"one");
    assert!(
        poll_once(&mut second.next()).is_none(),
        "served out of turn"
    );
    assert!(poll_once(&mut third.next()).is_none(), "served out of turn");

    harness.send("two").await;
    harness.send("three").await;
    let got = third.next().await.expect("served").expect("delivered");
    assert_eq!(&got.payload.body[..], b"three");
    let got = second.next().await.expect("served").expect("delivered");
    assert_eq!(&got.payload.body[..], b"two");
    assert_eq!(harness.counts().await, counts(0, 3, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn retention_ends_messages_received_or_not_and_removes_their_rows() {
    let harness = Harness::start(QueueAttributes {
        message_retention_seconds: 60,
        rewind_seconds: 60,
        visibility_timeout_seconds: 3_600,
        ..attributes()
    })
    .await;
    for body in ["visible", "in flight", "deleted"] {
        harness.send(body).await;
    }
    harness.send_delayed("delayed", 30).await;
    let got = harness.receive(2, 0).await;
    harness
        .delete_one(got[0].message.handle)
        .await
        .expect("delete");
    assert_eq!(harness.counts().await, counts(1, 1, 1, 1));
    assert_eq!(harness.stored_states().len(), 4);

    advance(secs(59)).await;
    assert_eq!(harness.counts().await, counts(2, 1, 0, 1));
    // Nothing asks the queue anything: its own timer ends them, and their rows go. (The short
    // sleep lets the runtime fire the timers that `advance` passed.)
    advance(secs(1) + SLACK).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        harness.stored_states().is_empty(),
        "rows left after retention"
    );
    let info = harness.queue.info().await.expect("info");
    assert_eq!(info.counts, Counts::default());
    assert_eq!(info.totals.expired, 3);
    assert!(harness.receive(16, 0).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn rewind_makes_messages_deleted_since_its_start_receivable_again_oldest_first() {
    let harness = Harness::start(QueueAttributes {
        rewind_seconds: 3_600,
        ..attributes()
    })
    .await;
    let receive_and_delete = || async {
        let got = harness.receive(16, 0).await;
        let handles: Vec<_> = got.iter().map(|d| d.message.handle).collect();
        let results = harness.delete(&handles).await.expect("delete");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        got.len()
    };
    harness.send("old-1").await;
    harness.send("old-2").await;
    assert_eq!(receive_and_delete().await, 2);
    advance(secs(10)).await;
    let good_moment = harness.clock.now_ms();
    advance(secs(10)).await;
    for body in ["new-1", "new-2", "new-3"] {
        harness.send(body).await;
    }
    assert_eq!(receive_and_delete().await, 3);
    assert_eq!(harness.counts().await, counts(0, 0, 0, 5));
    assert!(
        harness
            .stored_states()
            .iter()
            .all(|(_, state)| *state == StoredState::Kept)
    );

    assert_eq!(harness.queue.rewind(good_moment).await.expect("rewind"), 3);
    assert_eq!(harness.counts().await, counts(3, 0, 0, 2));
    let again = harness.receive(16, 0).await;
    assert_eq!(bodies(&again), [b"new-1", b"new-2", b"new-3"]);
    assert!(again.iter().all(|d| d.message.dequeue_count == 2));
    let live = harness
        .stored_states()
        .iter()
        .filter(|(_, state)| *state == StoredState::Live)
        .count();
    assert_eq!(live, 3);

    // Further back takes the older ones too, and wakes a poll that was waiting.
    let mut waiting = harness.start_receive(16, 20).await;
    let window_start = harness.clock.now_ms() - 3_599_000;
    assert_eq!(harness.queue.rewind(window_start).await.expect("rewind"), 2);
    let got = waiting.next().await.expect("woken").expect("delivered");
    assert_eq!(&got.payload.body[..], b"old-1");
}

/// A client that retries a delete whose commit has not finished must not hear OK before the
/// delete is durable: its retry waits for the same commit.
#[tokio::test(start_paused = true)]
async fn a_delete_retried_while_its_commit_is_in_flight_is_answered_after_the_commit() {
    let harness = Harness::start(attributes()).await;
    harness.send("m").await;
    let handle = harness.receive(1, 0).await.remove(0).message.handle;

    harness.storage.hold_writes();
    let handles = [handle];
    let mut delete = Box::pin(harness.delete(&handles));
    assert!(poll_once(&mut delete).is_none());
    let mut retry = Box::pin(harness.delete(&handles));
    assert!(poll_once(&mut retry).is_none());
    // The actor has taken both (it answers in order) and goes on serving meanwhile.
    assert_eq!(harness.counts().await, Counts::default());
    assert_eq!(harness.storage.held_writes(), 1, "one commit for both");
    assert!(poll_once(&mut delete).is_none(), "answered before durable");
    assert!(
        poll_once(&mut retry).is_none(),
        "retry answered before durable"
    );

    harness.storage.release_writes();
    assert!(delete.await.expect("delete")[0].is_ok());
    assert!(retry.await.expect("retry")[0].is_ok());
    assert!(harness.stored_states().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_acknowledges_nothing() {
    let harness = Harness::start(QueueAttributes {
        max_backlog: 1,
        ..attributes()
    })
    .await;
    harness.storage.fail_writes(true);
    let outgoing = Outgoing {
        payload: Payload::new(Bytes::from_static(b"lost"), Default::default()),
        delay_seconds: 0,
        deduplication_id: None,
    };
    let sent = harness.queue.send(vec![outgoing]).await;
    let error = sent.expect_err("a send whose commit failed");
    assert!(matches!(error, QueueError::Storage(_)), "{error:?}");
    assert_eq!(error.reason(), "STORAGE_UNAVAILABLE");
    assert_eq!(harness.counts().await, Counts::default());
    assert!(harness.receive(1, 0).await.is_empty());
    harness.storage.fail_writes(false);
    // The failed send holds no place in the backlog of 1.
    harness.send("kept").await;

    let handle = harness.receive(1, 0).await.remove(0).message.handle;
    harness.storage.fail_writes(true);
    let deleted = harness.delete(&[handle]).await;
    assert!(
        matches!(deleted, Err(QueueError::Storage(_))),
        "{deleted:?}"
    );
    // Back in flight under the same handle, which still deletes it once storage recovers.
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    harness.storage.fail_writes(false);
    harness.delete_one(handle).await.expect("delete");
    assert_eq!(harness.counts().await, Counts::default());
    assert!(harness.stored_states().is_empty());
}

/// A send beyond max_bytes is refused, naming it; a failed commit and a delete give room
/// back; the count is recovered from storage at a restart.
#[tokio::test(start_paused = true)]
async fn max_bytes_refuses_what_does_not_fit() {
    let harness = Harness::start(QueueAttributes {
        max_bytes: 10,
        ..attributes()
    })
    .await;
    let outgoing = |body: &'static str| Outgoing {
        payload: Payload::new(Bytes::from_static(body.as_bytes()), Default::default()),
        delay_seconds: 0,
        deduplication_id: None,
    };
    harness.send("12345").await;
    harness.send("1234").await;
    assert_eq!(harness.bytes().await, 9);
    let refused = harness.queue.send(vec![outgoing("12")]).await;
    assert!(
        matches!(
            &refused,
            Err(QueueError::BytesFull {
                held: 9,
                adding: 2,
                max: 10,
                ..
            })
        ),
        "{refused:?}"
    );
    let error = refused.expect_err("refused");
    assert_eq!(error.reason(), "BACKLOG_FULL");
    assert!(error.to_string().contains("max_bytes is 10"), "{error}");
    harness.storage.fail_writes(true);
    assert!(harness.queue.send(vec![outgoing("1")]).await.is_err());
    harness.storage.fail_writes(false);
    // The failed send gave its byte back.
    harness.send("1").await;
    assert_eq!(harness.bytes().await, 10);

    let harness = harness.restart().await;
    assert_eq!(harness.bytes().await, 10);
    assert!(harness.queue.send(vec![outgoing("1")]).await.is_err());
    let first = harness.receive(1, 0).await.remove(0);
    harness
        .delete_one(first.message.handle)
        .await
        .expect("delete");
    assert_eq!(harness.bytes().await, 5);
    harness.send("12345").await;
    assert_eq!(harness.bytes().await, 10);
}

/// Whatever a receive has claimed and not handed out is visible again the moment its stream is
/// dropped, in each state it can be in; handed-out messages stay in flight.
#[tokio::test(start_paused = true)]
async fn a_dropped_receive_gives_back_what_it_had_not_handed_out_at_once() {
    // No body cache: every receive reads its bodies, so it can be caught reading.
    let harness = Harness::start_with_budget(attributes(), 0).await;
    for body in ["a", "b"] {
        harness.send(body).await;
    }

    // Answered by the queue, not yet looked at.
    let answered = harness.start_receive(2, 0).await;
    assert_eq!(harness.counts().await, counts(0, 2, 0, 0));
    drop(answered);
    assert_eq!(harness.counts().await, counts(2, 0, 0, 0));

    // Reading its bodies from storage.
    harness.storage.hold_reads();
    let mut reading = harness.start_receive(2, 0).await;
    assert_eq!(harness.counts().await, counts(0, 2, 0, 0));
    assert!(poll_once(&mut reading.next()).is_none());
    assert_eq!(harness.storage.held_reads(), 1);
    drop(reading);
    assert_eq!(harness.counts().await, counts(2, 0, 0, 0));
    harness.storage.release_reads();

    // Handing out: one given, one not.
    let mut handing = harness.start_receive(2, 0).await;
    let given = handing.next().await.expect("one").expect("delivered");
    drop(handing);
    assert_eq!(harness.counts().await, counts(1, 1, 0, 0));
    let rest = harness.receive(2, 0).await;
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0].message.id, given.message.id);
    // Claimed by the same receives as the one handed out, and given back: they still count.
    assert_eq!(
        rest[0].message.dequeue_count,
        given.message.dequeue_count + 1
    );

    // Parked, its caller gone before a message came: the message is not claimed for it.
    let parked = harness.start_receive(2, 20).await;
    drop(parked);
    harness.send("c").await;
    assert_eq!(harness.counts().await, counts(1, 2, 0, 0));
    let got = harness.receive(2, 0).await;
    assert_eq!(bodies(&got), [b"c"]);
}

/// The handle of an older receive of a deleted message fails whether it comes before or after
/// the deleting one in a batch, and also on its own afterwards; the deleting one's retry works.
#[tokio::test(start_paused = true)]
async fn an_older_handle_of_a_deleted_message_fails_in_any_order() {
    let harness = Harness::start(attributes()).await;
    harness.send("x").await;
    harness.send("y").await;
    let older: Vec<_> = harness.receive(2, 0).await;
    advance(secs(31)).await;
    let newer: Vec<_> = harness.receive(2, 0).await;
    let handle = |delivered: &[Delivered], i: usize| delivered[i].message.handle;
    assert_eq!(handle(&older, 0).message_id, handle(&newer, 0).message_id);

    let results = harness
        .delete(&[handle(&newer, 0), handle(&older, 0)])
        .await
        .expect("delete");
    assert!(results[0].is_ok() && is_stale(&results[1]), "{results:?}");
    let results = harness
        .delete(&[handle(&older, 1), handle(&newer, 1)])
        .await
        .expect("delete");
    assert!(is_stale(&results[0]) && results[1].is_ok(), "{results:?}");

    for i in 0..2 {
        assert!(is_stale(&harness.delete_one(handle(&older, i)).await));
        harness.delete_one(handle(&newer, i)).await.expect("retry");
    }
    // Remembered as tombstones in storage too, so a restart gives the same answers.
    assert!(
        harness
            .stored_states()
            .iter()
            .all(|(_, state)| *state == StoredState::Tombstone)
    );
}

/// An actor started again on the same storage knows every message as it was, and every
/// receipt handle means what it meant: the in-flight one deletes, the deleting one's retry
/// succeeds, an older one fails.
#[tokio::test(start_paused = true)]
async fn a_restarted_queue_keeps_its_messages_and_the_meaning_of_their_handles() {
    let harness = Harness::start(attributes()).await;
    for body in [
        "deleted after",
        "left in flight",
        "deleted before",
        "visible",
    ] {
        harness.send(body).await;
    }
    let started = Instant::now();
    harness.send_delayed("delayed", 600).await;
    let got = harness.receive(3, 0).await;
    let (deleted_after, left) = (got[0].message.clone(), got[1].message.clone());
    let first_of_deleted = got[2].message.handle;
    // Received again (its first handle now older) and deleted: a tombstone.
    harness.queue.release_now(vec![first_of_deleted]);
    let again = harness.receive(1, 0).await.remove(0).message;
    assert_eq!(again.id, first_of_deleted.message_id);
    harness.delete_one(again.handle).await.expect("delete");
    let last_id = harness.send("last before restart").await;

    let harness = harness.restart().await;
    assert_eq!(harness.counts().await, counts(2, 2, 1, 0));
    assert!(is_stale(&harness.delete_one(first_of_deleted).await));
    harness.delete_one(again.handle).await.expect("retry");
    harness
        .delete_one(deleted_after.handle)
        .await
        .expect("in-flight handle");
    let visible = harness.receive(16, 0).await;
    assert_eq!(bodies(&visible), [&b"visible"[..], b"last before restart"]);
    assert_eq!(visible[0].message.dequeue_count, 1);
    let handles: Vec<_> = visible.iter().map(|d| d.message.handle).collect();
    harness.delete(&handles).await.expect("delete");

    // Timers are set again from storage: the one left in flight comes back when its visibility
    // timeout ends, as its second receive; the delay ends when it was due.
    let back = harness.receive(1, 40).await.remove(0).message;
    assert_about(started.elapsed(), secs(30));
    assert_eq!((back.id, back.dequeue_count), (left.id, 2));
    assert_eq!(back.first_dequeue_ms, left.first_dequeue_ms);
    harness.delete_one(back.handle).await.expect("delete");
    assert!(
        harness.send("after restart").await > last_id,
        "an id handed out again"
    );
    advance(started + secs(600) - SLACK - Instant::now()).await;
    assert_eq!(harness.counts().await, counts(1, 0, 1, 0));
    advance(SLACK * 2).await;
    assert_eq!(harness.counts().await, counts(2, 0, 0, 0));
    assert_eq!(bodies(&harness.receive(1, 0).await), [b"delayed"]);
}

/// A heartbeat keeps a message in flight past its first deadline, is answered only once durable,
/// and holds across a restart; its handle still deletes the message.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_extends_processing_time_durably() {
    let harness = Harness::start(attributes()).await;
    harness.send("slow work").await;
    let received = harness.receive(1, 0).await.remove(0).message;
    advance(secs(20)).await;

    harness.storage.hold_writes();
    let mut change = Box::pin(harness.change_visibility(received.handle, 60));
    assert!(poll_once(&mut change).is_none());
    // The actor has taken it (it answers in order) and goes on serving meanwhile.
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    // The change's commit (and maybe the receive's lazy record) waits.
    assert!(harness.storage.held_writes() >= 1);
    assert!(poll_once(&mut change).is_none(), "answered before durable");
    harness.storage.release_writes();
    let next_visible_ms = change.await.expect("changed");
    assert_about(
        Duration::from_millis((next_visible_ms - received.visible_at_ms) as u64),
        secs(50),
    );

    // Past the receive's own timeout: still in flight, after a restart too.
    advance(secs(30)).await;
    assert!(harness.receive(1, 0).await.is_empty());
    let harness = harness.restart().await;
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    // The same handle extends again and then deletes.
    harness
        .change_visibility(received.handle, 5)
        .await
        .expect("changed again");
    harness.delete_one(received.handle).await.expect("delete");
    assert!(harness.stored_states().is_empty());
}

/// A nack (0) makes the message visible at once: a waiting poll gets it, as its next receive.
/// The nacked handle has expired; an older or foreign handle changes nothing.
#[tokio::test(start_paused = true)]
async fn a_nack_hands_the_message_to_the_next_receiver_at_once() {
    let harness = Harness::start(attributes()).await;
    harness.send("retry me").await;
    let received = harness.receive(1, 0).await.remove(0).message;
    let mut waiting = harness.start_receive(1, 20).await;
    assert!(poll_once(&mut waiting.next()).is_none());
    let started = Instant::now();
    let next_visible_ms = harness
        .change_visibility(received.handle, 0)
        .await
        .expect("nack");
    assert!(next_visible_ms <= harness.clock.now_ms());
    let again = waiting.next().await.expect("woken").expect("delivered");
    assert_eq!(started.elapsed(), Duration::ZERO, "not at once");
    assert_eq!(
        (again.message.id, again.message.dequeue_count),
        (received.id, 2)
    );
    assert!(matches!(
        harness.change_visibility(received.handle, 30).await,
        Err(QueueError::StaleReceipt(_))
    ));
    let foreign = ReceiptHandle {
        queue_id: QUEUE_ID + 1,
        ..again.message.handle
    };
    assert!(matches!(
        harness.change_visibility(foreign, 30).await,
        Err(QueueError::InvalidArgument(m)) if m.contains("receipt_handle")
    ));
    // The nack is durable: after a restart the message is in flight under its second receive
    // (recorded when the queue flushed), not under the first.
    drop(waiting);
    let harness = harness.restart().await;
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    harness
        .delete_one(again.message.handle)
        .await
        .expect("the newest handle deletes");
}

#[tokio::test(start_paused = true)]
async fn a_visibility_change_whose_commit_fails_changes_nothing() {
    let harness = Harness::start(attributes()).await;
    harness.send("m").await;
    let started = Instant::now();
    let received = harness.receive(1, 0).await.remove(0).message;
    harness.storage.fail_writes(true);
    let changed = harness.change_visibility(received.handle, 0).await;
    assert!(
        matches!(changed, Err(QueueError::Storage(_))),
        "{changed:?}"
    );
    let extended = harness.change_visibility(received.handle, 600).await;
    assert!(
        matches!(extended, Err(QueueError::Storage(_))),
        "{extended:?}"
    );
    harness.storage.fail_writes(false);
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    // Back at its own timeout, not the failed 600 s.
    let back = harness.receive(1, 40).await.remove(0).message;
    assert_about(started.elapsed(), secs(30));
    assert_eq!(back.dequeue_count, 2);
}

/// A purge removes visible, delayed and in-flight messages as deletes through their newest
/// receives would, durably; a waiting poll stays parked and gets the next message sent.
#[tokio::test(start_paused = true)]
async fn a_purge_removes_everything_and_leaves_waiters_parked() {
    let harness = Harness::start(attributes()).await;
    harness.send("in flight").await;
    let received = harness.receive(1, 0).await.remove(0).message;
    harness.send("visible").await;
    harness.send_delayed("delayed", 60).await;
    assert_eq!(harness.counts().await, counts(1, 1, 1, 0));
    assert_eq!(harness.queue.purge().await.expect("purge"), 3);
    assert_eq!(harness.counts().await, Counts::default());
    assert_eq!(harness.queue.info().await.expect("info").totals.purged, 3);
    assert!(harness.stored_states().is_empty());

    // A poll parked on the empty queue stays parked through a purge.
    let mut waiting = harness.start_receive(1, 20).await;
    assert!(poll_once(&mut waiting.next()).is_none());
    harness.send_delayed("delayed too", 5).await;
    assert_eq!(harness.queue.purge().await.expect("purge"), 1);
    assert!(harness.stored_states().is_empty());
    let after_purge = poll_once(&mut waiting.next());
    assert!(after_purge.is_none(), "a waiter ended: {after_purge:?}");
    // The newest handle of a purged message deletes as a retry would.
    harness.delete_one(received.handle).await.expect("delete");
    // The purged delay does not come back when it ends (the wait of 20 s is not over yet).
    advance(secs(10)).await;
    assert_eq!(harness.counts().await, Counts::default());
    harness.send("after").await;
    let got = waiting.next().await.expect("woken").expect("delivered");
    assert_eq!(&got.payload.body[..], b"after");
    // It is in flight now, and in flight is purged too.
    assert_eq!(harness.queue.purge().await.expect("purge"), 1);
    assert_eq!(harness.queue.purge().await.expect("purge"), 0);
    assert_eq!(harness.queue.info().await.expect("info").totals.purged, 5);
}

#[tokio::test(start_paused = true)]
async fn a_purge_with_rewind_on_can_be_rewound() {
    let harness = Harness::start(QueueAttributes {
        rewind_seconds: 3_600,
        ..attributes()
    })
    .await;
    let before = harness.clock.now_ms();
    for body in ["a", "b", "c"] {
        harness.send(body).await;
    }
    harness.receive(1, 0).await;
    assert_eq!(harness.queue.purge().await.expect("purge"), 3);
    assert_eq!(harness.counts().await, counts(0, 0, 0, 3));
    let harness = harness.restart().await;
    assert_eq!(harness.counts().await, counts(0, 0, 0, 3));
    assert_eq!(harness.queue.rewind(before).await.expect("rewind"), 3);
    let got = harness.receive(16, 0).await;
    assert_eq!(bodies(&got), [b"a", b"b", b"c"]);
}

#[tokio::test(start_paused = true)]
async fn a_purge_whose_commit_fails_removes_nothing() {
    let harness = Harness::start(attributes()).await;
    harness.send("a").await;
    harness.send_delayed("b", 10).await;
    harness.storage.fail_writes(true);
    let purged = harness.queue.purge().await;
    assert!(matches!(purged, Err(QueueError::Storage(_))), "{purged:?}");
    harness.storage.fail_writes(false);
    assert_eq!(harness.counts().await, counts(1, 0, 1, 0));
    assert_eq!(harness.queue.info().await.expect("info").totals.purged, 0);
    assert_eq!(bodies(&harness.receive(1, 0).await), [b"a"]);
}

/// A peek shows what a receive would get, bodies included (from storage after a restart), and
/// changes nothing.
#[tokio::test(start_paused = true)]
async fn a_peek_changes_nothing() {
    let harness = Harness::start(attributes()).await;
    for body in ["1", "2", "3"] {
        harness.send(body).await;
    }
    harness.send_delayed("later", 60).await;
    let first = harness.receive(1, 0).await.remove(0).message;
    harness.queue.release_now(vec![first.handle]);
    let peeked = harness.queue.peek(16).await.expect("peek");
    assert_eq!(peeked[0].message.dequeue_count, 1);
    assert_eq!(peeked[0].message.first_dequeue_ms, first.first_dequeue_ms);
    assert_eq!(peeked[1].message.dequeue_count, 0);
    // After a restart no body is in memory: they come from storage.
    let harness = harness.restart().await;
    let peeked = harness.queue.peek(16).await.expect("peek");
    let peeked_bodies: Vec<&[u8]> = peeked.iter().map(|p| &p.payload.body[..]).collect();
    assert_eq!(peeked_bodies, [b"1", b"2", b"3"]);
    assert_eq!(harness.queue.peek(2).await.expect("peek").len(), 2);
    assert_eq!(harness.counts().await, counts(3, 0, 1, 0));
    let got = harness.receive(16, 0).await;
    assert_eq!(bodies(&got), [b"1", b"2", b"3"]);
    assert_eq!(
        got[0].message.dequeue_count, 1,
        "the released receive was not recorded"
    );
    assert!(harness.queue.peek(16).await.expect("peek").is_empty());
}

fn consume(harness: &Harness, max_outstanding: usize) -> Consuming<u32> {
    harness.queue.consume(
        ConsumeSettings {
            max_outstanding,
            visibility_timeout_seconds: None,
        },
        harness.shutdown.clone(),
    )
}

/// The next message a consumer stream pushes (panics on anything else).
async fn pushed(stream: &mut Consuming<u32>) -> Delivered {
    match stream.next().await {
        Some(Ok(Event::Message(delivered))) => delivered,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_stream_pushes_no_more_than_its_free_slots() {
    let harness = Harness::start(attributes()).await;
    for body in ["a", "b", "c", "d"] {
        harness.send(body).await;
    }
    let mut stream = consume(&harness, 2);
    let first = pushed(&mut stream).await;
    let second = pushed(&mut stream).await;
    assert_eq!(bodies(&[first.clone(), second.clone()]), [b"a", b"b"]);
    assert!(poll_once(&mut stream.next()).is_none(), "pushed a third");
    assert_eq!(harness.counts().await, counts(2, 2, 0, 0));

    // An acknowledgement is answered after its commit, per handle, and frees its slot.
    // Not the handle `second` was pushed with: it fails, and `second` keeps its slot.
    let stranger = ReceiptHandle {
        nonce: second.message.handle.nonce ^ 1,
        ..second.message.handle
    };
    stream.settle(
        41,
        Settlement::Delete,
        vec![(first.message.handle, 0), (stranger, 1)],
    );
    match stream.next().await {
        Some(Ok(Event::Acknowledged { context, results })) => {
            assert_eq!(context, 41);
            assert_eq!(results.len(), 2);
            assert!(results[0].is_ok(), "{results:?}");
            assert!(is_stale(&results[1]), "{results:?}");
        }
        other => panic!("expected the acknowledgement, got {other:?}"),
    }
    assert_eq!(&pushed(&mut stream).await.payload.body[..], b"c");
    assert!(
        poll_once(&mut stream.next()).is_none(),
        "pushed past its slots"
    );

    // Unacknowledged messages give their slots back when they are visible again.
    let started = Instant::now();
    let again = pushed(&mut stream).await;
    assert_about(started.elapsed(), secs(30));
    assert_eq!(&again.payload.body[..], b"b");
    assert_eq!(again.message.dequeue_count, 2);
}

#[tokio::test(start_paused = true)]
async fn consumer_streams_and_long_polls_take_turns_in_arrival_order() {
    let harness = Harness::start(attributes()).await;
    let mut stream = consume(&harness, 10);
    assert!(
        poll_once(&mut stream.next()).is_none(),
        "nothing to push yet"
    );
    let mut poll = harness.start_receive(1, 20).await;
    let mut other = consume(&harness, 10);
    assert!(
        poll_once(&mut other.next()).is_none(),
        "nothing to push yet"
    );

    // Longer than any long poll waits: a stream has no deadline.
    advance(secs(120)).await;
    assert!(poll_once(&mut stream.next()).is_none(), "a stream ended");
    assert!(poll_once(&mut other.next()).is_none(), "a stream ended");
    poll = {
        assert!(poll.next().await.is_none(), "the poll's wait is over");
        harness.start_receive(1, 20).await
    };

    for body in ["one", "two", "three", "four"] {
        harness.send(body).await;
    }
    // The first stream was first in line, then the second (the poll parked again after it),
    // then the poll; the first stream's next turn comes after them.
    assert_eq!(&pushed(&mut stream).await.payload.body[..], b"one");
    assert_eq!(&pushed(&mut other).await.payload.body[..], b"two");
    let got = poll.next().await.expect("served").expect("delivered");
    assert_eq!(&got.payload.body[..], b"three");
    assert_eq!(&pushed(&mut stream).await.payload.body[..], b"four");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_gives_back_what_it_claimed_and_had_not_pushed() {
    let harness = Harness::start(attributes()).await;
    for body in ["a", "b", "c"] {
        harness.send(body).await;
    }
    let mut stream = consume(&harness, 3);
    assert_eq!(&pushed(&mut stream).await.payload.body[..], b"a");
    drop(stream);
    // The pushed one stays in flight; the two claimed with it are visible again at once.
    assert_eq!(harness.counts().await, counts(2, 1, 0, 0));
    assert_eq!(bodies(&harness.receive(16, 0).await), [b"b", b"c"]);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_stream_nack_frees_the_slot_and_redelivers_at_once() {
    let harness = Harness::start(attributes()).await;
    harness.send("a").await;
    let mut stream = consume(&harness, 1);
    let first = pushed(&mut stream).await;
    assert!(
        poll_once(&mut stream.next()).is_none(),
        "pushed past its slot"
    );
    let stranger = ReceiptHandle {
        nonce: first.message.handle.nonce ^ 1,
        ..first.message.handle
    };
    let started = Instant::now();
    stream.settle(
        7,
        Settlement::Nack { delay_seconds: 0 },
        vec![(stranger, 0), (first.message.handle, 1)],
    );
    match stream.next().await {
        Some(Ok(Event::VisibilityChanged { context, results })) => {
            assert_eq!(context, 7);
            assert!(is_stale(&results[0]), "{results:?}");
            assert!(results[1].is_ok(), "{results:?}");
        }
        other => panic!("expected the nack's answer, got {other:?}"),
    }
    // Its slot is free and the message is visible again: it comes back now, not in 30 s.
    let again = pushed(&mut stream).await;
    assert!(started.elapsed() < secs(1), "{:?}", started.elapsed());
    assert_eq!(&again.payload.body[..], b"a");
    assert_eq!(again.message.dequeue_count, 2);

    // A nack with a delay frees the slot at once; the message comes back after the delay.
    stream.settle(
        8,
        Settlement::Nack { delay_seconds: 5 },
        vec![(again.message.handle, 0)],
    );
    assert!(matches!(
        stream.next().await,
        Some(Ok(Event::VisibilityChanged { context: 8, .. }))
    ));
    let started = Instant::now();
    let third = pushed(&mut stream).await;
    assert_about(started.elapsed(), secs(5));
    assert_eq!(third.message.dequeue_count, 3);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_stream_extension_keeps_the_slot_until_the_new_deadline() {
    let harness = Harness::start(attributes()).await;
    harness.send("a").await;
    let mut stream = consume(&harness, 1);
    let first = pushed(&mut stream).await;
    advance(secs(20)).await;
    stream.settle(
        9,
        Settlement::Extend {
            visibility_timeout_seconds: 60,
        },
        vec![(first.message.handle, 0)],
    );
    match stream.next().await {
        Some(Ok(Event::VisibilityChanged { context, results })) => {
            assert_eq!(context, 9);
            let at = results[0].as_ref().expect("extended");
            assert!(*at > first.message.visible_at_ms, "{results:?}");
        }
        other => panic!("expected the extension's answer, got {other:?}"),
    }
    // Past the original 30 s the message is still in flight and the slot still taken.
    advance(secs(30)).await;
    assert!(
        poll_once(&mut stream.next()).is_none(),
        "the slot was freed"
    );
    assert_eq!(harness.counts().await, counts(0, 1, 0, 0));
    // At the new deadline (60 s after the extension) the message is visible again, and the
    // slot free to take it.
    let started = Instant::now();
    let next = pushed(&mut stream).await;
    assert_about(started.elapsed(), secs(30));
    assert_eq!(&next.payload.body[..], b"a");
    assert_eq!(next.message.dequeue_count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_stream_ends_at_shutdown_and_after_its_client_half_closes() {
    let harness = Harness::start(attributes()).await;
    harness.send("a").await;
    let mut closing = consume(&harness, 1);
    let delivered = pushed(&mut closing).await;
    closing.settle(1, Settlement::Delete, vec![(delivered.message.handle, 0)]);
    closing.close();
    // Its acknowledgement is still answered, then it ends.
    assert!(matches!(
        closing.next().await,
        Some(Ok(Event::Acknowledged { context: 1, .. }))
    ));
    assert!(closing.next().await.is_none());

    let mut waiting = consume(&harness, 1);
    assert!(poll_once(&mut waiting.next()).is_none());
    harness.shutdown.cancel();
    assert!(waiting.next().await.is_none());
    harness.send("b").await;
    assert_eq!(harness.counts().await, counts(1, 0, 0, 0));
}

fn with_id(body: &'static str, deduplication_id: &str) -> Outgoing {
    Outgoing {
        payload: Payload::new(Bytes::from_static(body.as_bytes()), Default::default()),
        delay_seconds: 0,
        deduplication_id: Some(deduplication_id.into()),
    }
}

/// A duplicate of a send whose commit is still in flight is answered with its id, and only
/// once that commit is durable; it stores nothing of its own.
#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_send_being_committed_waits_for_it_and_gets_its_id() {
    let harness = Harness::start(attributes()).await;
    harness.storage.hold_writes();
    let mut first = Box::pin(harness.queue.send(vec![with_id("a", "x")]));
    assert!(poll_once(&mut first).is_none());
    let mut duplicate = Box::pin(harness.queue.send(vec![with_id("a again", "x")]));
    assert!(poll_once(&mut duplicate).is_none());
    assert_eq!(harness.counts().await, Counts::default());
    assert_eq!(
        harness.storage.held_writes(),
        1,
        "the duplicate writes nothing"
    );
    assert!(
        poll_once(&mut duplicate).is_none(),
        "answered before the first send is durable"
    );
    harness.storage.release_writes();
    let first = first.await.expect("send");
    assert_eq!(duplicate.await.expect("duplicate"), first);
    assert_eq!(harness.counts().await.visible, 1);
    assert_eq!(
        harness
            .queue
            .info()
            .await
            .expect("info")
            .totals
            .deduplicated,
        1
    );
}

/// When the first send's commit fails, its duplicate fails too (nothing was stored), and the id
/// is not remembered: the next send with it is new.
#[tokio::test(start_paused = true)]
async fn a_duplicate_of_a_send_whose_commit_failed_fails_too() {
    let harness = Harness::start(attributes()).await;
    harness.storage.hold_writes();
    let mut first = Box::pin(harness.queue.send(vec![with_id("a", "x")]));
    assert!(poll_once(&mut first).is_none());
    let mut duplicate = Box::pin(harness.queue.send(vec![with_id("a", "x")]));
    assert!(poll_once(&mut duplicate).is_none());
    harness.storage.fail_writes(true);
    harness.storage.release_writes();
    assert!(matches!(first.await, Err(QueueError::Storage(_))));
    assert!(matches!(duplicate.await, Err(QueueError::Storage(_))));
    harness.storage.fail_writes(false);
    let retried = harness
        .queue
        .send(vec![with_id("a", "x")])
        .await
        .expect("a new send");
    assert_eq!(harness.counts().await.visible, 1);
    let again = harness
        .queue
        .send(vec![with_id("a", "x")])
        .await
        .expect("its duplicate");
    assert_eq!(again, retried);
    assert_eq!(harness.counts().await.visible, 1);
}
