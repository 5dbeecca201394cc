//! A producer and a consumer that log every acknowledged operation, and the checker over those
//! logs: nothing acknowledged is lost, nothing whose delete was acknowledged comes back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spool::pb;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};

use crate::common::connect;

/// Every call of the workload gives up after this (the replica it talks to may be paused).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The consumer's visibility timeout: short, so what a dead owner had handed out comes back
/// soon.
pub const VISIBILITY_SECONDS: u32 = 3;

/// What the workload saw.
#[derive(Default)]
pub struct Log {
    /// Body → when its send was acknowledged.
    pub sent: HashMap<String, Instant>,
    /// Body → when its delete was acknowledged (the first time).
    pub deleted: HashMap<String, Instant>,
    /// (body, when the receive that returned it was sent), every delivery.
    pub received: Vec<(String, Instant)>,
    /// When a receive that returned messages completed.
    pub receives_done: Vec<Instant>,
    /// Every error, by code.
    pub errors: Vec<(Instant, Code, String)>,
    /// Bodies whose delete ended without a definite answer (a timeout, UNAVAILABLE): it may or
    /// may not have been applied.
    pub delete_unknown: HashSet<String>,
}

pub type Shared = Arc<Mutex<Log>>;

fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn log_error(log: &Shared, status: &Status) {
    log.lock().expect("log").errors.push((
        Instant::now(),
        status.code(),
        status.message().to_string(),
    ));
}

/// Sends `tag-0`, `tag-1`, ... to `queue` through `endpoint` until `stop`.
pub fn producer(
    endpoint: String,
    queue: &'static str,
    tag: &'static str,
    log: Shared,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = connect(&endpoint).await;
        let mut index = 0u64;
        while !stop.is_cancelled() {
            let body = format!("{tag}-{index}");
            index += 1;
            let sent = client
                .send_message(timed(pb::SendMessageRequest {
                    queue_name: queue.into(),
                    body: body.clone().into_bytes().into(),
                    delay_seconds: None,
                    ..Default::default()
                }))
                .await;
            match sent {
                Ok(_) => {
                    log.lock().expect("log").sent.insert(body, Instant::now());
                }
                Err(status) => {
                    log_error(&log, &status);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Receives from `queue` through `endpoint` and deletes what it gets, until `stop`.
pub fn consumer(
    endpoint: String,
    queue: &'static str,
    log: Shared,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = connect(&endpoint).await;
        while !stop.is_cancelled() {
            let started = Instant::now();
            let received = async {
                let mut stream = client
                    .receive_messages(timed(pb::ReceiveMessagesRequest {
                        queue_name: queue.into(),
                        max_messages: 8,
                        wait_seconds: Some(1),
                        visibility_timeout_seconds: Some(VISIBILITY_SECONDS),
                    }))
                    .await?
                    .into_inner();
                let mut messages = Vec::new();
                while let Some(message) = stream.message().await? {
                    messages.push(message);
                }
                Ok::<_, Status>(messages)
            }
            .await;
            let messages = match received {
                Ok(messages) => messages,
                Err(status) => {
                    log_error(&log, &status);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !messages.is_empty() {
                let mut log = log.lock().expect("log");
                log.receives_done.push(Instant::now());
                for message in &messages {
                    let body = String::from_utf8_lossy(&message.body).to_string();
                    log.received.push((body, started));
                }
            }
            for message in messages {
                let body = String::from_utf8_lossy(&message.body).to_string();
                let deleted = client
                    .delete_message(timed(pb::DeleteMessageRequest {
                        queue_name: queue.into(),
                        receipt_handle: message.receipt_handle,
                    }))
                    .await;
                match deleted {
                    Ok(_) => {
                        log.lock()
                            .expect("log")
                            .deleted
                            .entry(body)
                            .or_insert_with(Instant::now);
                    }
                    Err(status) => {
                        log_error(&log, &status);
                        // Its outcome is unknown: a timeout, or the owner's connection or its
                        // commit cut off (UNAVAILABLE, as when a PostgreSQL session breaks
                        // during a commit). The owner may have applied it.
                        if matches!(
                            status.code(),
                            Code::DeadlineExceeded
                                | Code::Cancelled
                                | Code::Unknown
                                | Code::Unavailable
                        ) {
                            log.lock().expect("log").delete_unknown.insert(body);
                        }
                    }
                }
            }
        }
    })
}

/// Whether `body` is settled: its delete was acknowledged, or its delete's outcome is
/// unknown (a timeout, or UNAVAILABLE: the owner may have applied it before it died).
fn settled(log: &Log, body: &str) -> bool {
    log.deleted.contains_key(body) || log.delete_unknown.contains(body)
}

/// Waits until every acknowledged send is settled (the consumer still running), up to
/// `limit`.
pub async fn drain(log: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        {
            let log = log.lock().expect("log");
            if log.sent.keys().all(|body| settled(&log, body)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checker: every acknowledged send was delivered, and delivered again until a delete of it
/// was acknowledged (or failed with its outcome unknown); no message was delivered by a receive
/// sent after its delete was acknowledged.
pub fn check(log: &Shared) {
    let log = log.lock().expect("log");
    let delivered: HashSet<&String> = log.received.iter().map(|(body, _)| body).collect();
    let lost: Vec<&String> = log
        .sent
        .keys()
        .filter(|body| !delivered.contains(body))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged sends were never delivered (of {}): {:?}",
        lost.len(),
        log.sent.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    let unsettled: Vec<&String> = log
        .sent
        .keys()
        .filter(|body| !settled(&log, body))
        .collect();
    assert!(
        unsettled.is_empty(),
        "{} acknowledged sends were delivered but never again after a failed delete: {:?}",
        unsettled.len(),
        unsettled.iter().take(10).collect::<Vec<_>>()
    );
    let resurrected: Vec<&String> = log
        .received
        .iter()
        .filter(|(body, started)| {
            log.deleted
                .get(body)
                .is_some_and(|deleted| started > deleted)
        })
        .map(|(body, _)| body)
        .collect();
    assert!(
        resurrected.is_empty(),
        "messages delivered again after their delete was acknowledged: {resurrected:?}"
    );
}

/// The first moment after `since` at which a receive returned messages.
pub fn first_receive_after(log: &Shared, since: Instant) -> Option<Instant> {
    log.lock()
        .expect("log")
        .receives_done
        .iter()
        .copied()
        .filter(|done| *done > since)
        .min()
}

/// The first acknowledged send after `since`.
pub fn first_send_after(log: &Shared, since: Instant) -> Option<Instant> {
    log.lock()
        .expect("log")
        .sent
        .values()
        .copied()
        .filter(|acked| *acked > since)
        .min()
}
