//! Prometheus metrics: what the server counts, and the text it serves at /metrics.
//!
//! RPC and storage metrics are atomics updated where things happen. Queue gauges are read from
//! the queue actors at scrape time, from the same snapshot GetQueue returns, so the two agree.

mod histogram;
pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;

pub use histogram::Histogram;
use histogram::{COUNTS, LATENCY_SECONDS};

use crate::queue::QueueInfo;

/// The RPCs of spool.v1.QueueService, as metric labels.
pub const METHODS: [&str; 11] = [
    "CreateQueue",
    "GetQueue",
    "UpdateQueue",
    "DeleteQueue",
    "ListQueues",
    "RewindQueue",
    "SendMessage",
    "BatchSendMessages",
    "ReceiveMessages",
    "DeleteMessage",
    "BatchDeleteMessages",
];

/// gRPC status codes 0..=16.
const CODES: usize = 17;

pub struct Metrics {
    /// [method][code] → calls.
    requests: Vec<[AtomicU64; CODES]>,
    /// Per method: time from request to response (to the stream's end for ReceiveMessages).
    latency: Vec<Histogram>,
    commit_seconds: Histogram,
    commit_messages: Histogram,
    commit_failures: AtomicU64,
    /// Which storage backend the server runs on ("sqlite", "postgres"), set once at startup,
    /// so dashboards can tell deployments apart.
    storage_backend: std::sync::OnceLock<&'static str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: METHODS
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency: METHODS
                .iter()
                .map(|_| Histogram::new(LATENCY_SECONDS))
                .collect(),
            commit_seconds: Histogram::new(LATENCY_SECONDS),
            commit_messages: Histogram::new(COUNTS),
            commit_failures: AtomicU64::new(0),
            storage_backend: std::sync::OnceLock::new(),
        }
    }
}

/// Names the RPC a measurement belongs to; an index into [`METHODS`].
#[derive(Clone, Copy, Debug)]
pub struct Method(usize);

impl Method {
    pub const CREATE_QUEUE: Self = Self(0);
    pub const GET_QUEUE: Self = Self(1);
    pub const UPDATE_QUEUE: Self = Self(2);
    pub const DELETE_QUEUE: Self = Self(3);
    pub const LIST_QUEUES: Self = Self(4);
    pub const REWIND_QUEUE: Self = Self(5);
    pub const SEND_MESSAGE: Self = Self(6);
    pub const BATCH_SEND_MESSAGES: Self = Self(7);
    pub const RECEIVE_MESSAGES: Self = Self(8);
    pub const DELETE_MESSAGE: Self = Self(9);
    pub const BATCH_DELETE_MESSAGES: Self = Self(10);
}

impl Metrics {
    pub fn observe_rpc(&self, method: Method, code: Code, elapsed: Duration) {
        let code = (code as usize).min(CODES - 1);
        self.requests[method.0][code].fetch_add(1, Ordering::Relaxed);
        self.latency[method.0].observe(elapsed.as_secs_f64());
    }

    /// Records the storage backend in use (the first call wins).
    pub fn set_storage_backend(&self, backend: &'static str) {
        let _ = self.storage_backend.set(backend);
    }

    /// The Prometheus text exposition of everything, with the queues' current state.
    pub fn render(&self, queues: &[QueueInfo], body_cache_bytes: usize, now_ms: i64) -> String {
        let mut out = String::with_capacity(16 * 1024 + queues.len() * 1024);
        render_queues(&mut out, queues, now_ms);
        header(
            &mut out,
            "spool_body_cache_bytes",
            "gauge",
            "Memory held by the bodies of messages not received yet (at most --body-cache-bytes).",
        );
        let _ = writeln!(out, "spool_body_cache_bytes {body_cache_bytes}");

        header(
            &mut out,
            "spool_grpc_requests_total",
            "counter",
            "gRPC calls by method and status code.",
        );
        for (method, codes) in METHODS.iter().zip(&self.requests) {
            for (code, count) in codes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "spool_grpc_requests_total{{method=\"{method}\",code=\"{}\"}} {count}",
                        code_name(code)
                    );
                }
            }
        }
        header(
            &mut out,
            "spool_grpc_request_duration_seconds",
            "histogram",
            "Time from a call's request to its response (to the stream's end for ReceiveMessages).",
        );
        for (method, histogram) in METHODS.iter().zip(&self.latency) {
            histogram.render(
                &mut out,
                "spool_grpc_request_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
        header(
            &mut out,
            "spool_storage_commit_duration_seconds",
            "histogram",
            "Time to write and sync one group commit.",
        );
        self.commit_seconds
            .render(&mut out, "spool_storage_commit_duration_seconds", "");
        header(
            &mut out,
            "spool_storage_commit_messages",
            "histogram",
            "Messages written (inserted, deleted, updated) per group commit.",
        );
        self.commit_messages
            .render(&mut out, "spool_storage_commit_messages", "");
        header(
            &mut out,
            "spool_storage_commit_failures_total",
            "counter",
            "Group commits that failed (their requests got UNAVAILABLE).",
        );
        let _ = writeln!(
            out,
            "spool_storage_commit_failures_total {}",
            self.commit_failures.load(Ordering::Relaxed)
        );
        if let Some(backend) = self.storage_backend.get() {
            header(
                &mut out,
                "spool_storage_backend",
                "gauge",
                "The storage backend in use (1 for the backend named by the label).",
            );
            let _ = writeln!(out, "spool_storage_backend{{backend=\"{backend}\"}} 1");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_queues(out: &mut String, queues: &[QueueInfo], now_ms: i64) {
    type Value = fn(&QueueInfo, i64) -> String;
    let series: [(&str, &str, &str, Value); 12] = [
        (
            "spool_queue_visible_messages",
            "gauge",
            "Messages visible now (the API's QueueStats.active_messages).",
            |q, _| q.counts.visible.to_string(),
        ),
        (
            "spool_queue_in_flight_messages",
            "gauge",
            "Messages in flight: received, not yet deleted nor visible again (the API's \
             QueueStats.inactive_messages).",
            |q, _| q.counts.in_flight.to_string(),
        ),
        (
            "spool_queue_delayed_messages",
            "gauge",
            "Messages whose delay has not ended.",
            |q, _| q.counts.delayed.to_string(),
        ),
        (
            "spool_queue_rewindable_messages",
            "gauge",
            "Deleted messages kept for rewind.",
            |q, _| q.counts.rewindable.to_string(),
        ),
        (
            "spool_queue_oldest_message_age_seconds",
            "gauge",
            "Age of the oldest undeleted message (0 when none).",
            |q, now| {
                let age_ms = q
                    .oldest_message_ms
                    .map_or(0, |oldest| (now - oldest).max(0));
                (age_ms as f64 / 1_000.0).to_string()
            },
        ),
        (
            "spool_queue_waiting_polls",
            "gauge",
            "Long polls waiting for a message.",
            |q, _| q.waiting_polls.to_string(),
        ),
        (
            "spool_queue_messages_sent_total",
            "counter",
            "Messages sent (acknowledged) since the server started.",
            |q, _| q.totals.sent.to_string(),
        ),
        (
            "spool_queue_messages_received_total",
            "counter",
            "Message deliveries since the server started.",
            |q, _| q.totals.received.to_string(),
        ),
        (
            "spool_queue_messages_deleted_total",
            "counter",
            "Messages deleted (acknowledged) since the server started.",
            |q, _| q.totals.deleted.to_string(),
        ),
        (
            "spool_queue_messages_expired_total",
            "counter",
            "Undeleted messages whose retention ended since the server started.",
            |q, _| q.totals.expired.to_string(),
        ),
        (
            "spool_queue_empty_receives_total",
            "counter",
            "Receives that ended with no message since the server started.",
            |q, _| q.totals.empty_receives.to_string(),
        ),
        (
            "spool_queue_max_backlog",
            "gauge",
            "The queue's max_backlog attribute.",
            |q, _| q.attributes.max_backlog.to_string(),
        ),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for queue in queues {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\"}} {}",
                queue.name,
                value(queue, now_ms)
            );
        }
    }
}

fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; CODES] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES[code.min(CODES - 1)]
}

impl crate::storage::CommitObserver for Metrics {
    fn observe_commit(&self, elapsed: Duration, messages: usize, succeeded: bool) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.commit_messages.observe(messages as f64);
        if !succeeded {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
