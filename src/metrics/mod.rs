//! Prometheus metrics: what the server counts, and the text it serves at /metrics.
//!
//! RPC and storage metrics are atomics updated where things happen. Queue gauges are read from
//! the queue actors at scrape time, from the same snapshot GetQueue returns, so the two agree.

mod histogram;
pub mod http;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;

pub use histogram::Histogram;
use histogram::{COUNTS, LATENCY_SECONDS};

use crate::net::ConnectionCounts;
use crate::queue::QueueInfo;

include!(concat!(env!("OUT_DIR"), "/rpc_methods.rs"));

/// The `method` label of calls to a path that is no RPC of the API (answered UNIMPLEMENTED).
pub const UNKNOWN_METHOD: &str = "unknown";

/// The HTTP port's actions (`--http-listen`), counted in the same families as the RPCs under
/// `method="<protocol>.<Action>"`: the dashboards' per-method panels and the alerts on error
/// codes cover them, and a panel that names gRPC methods (`method=~"SendMessage|..."`) does not
/// mix them in. SQS's JSON and query protocols share the `sqs.` labels (the same actions).
/// Actions not listed here are counted as [`UNKNOWN_METHOD`], so the label set stays fixed.
pub const HTTP_METHODS: [&str; 41] = [
    "sqs.CreateQueue",
    "sqs.GetQueueUrl",
    "sqs.ListQueues",
    "sqs.GetQueueAttributes",
    "sqs.SetQueueAttributes",
    "sqs.DeleteQueue",
    "sqs.PurgeQueue",
    "sqs.SendMessage",
    "sqs.SendMessageBatch",
    "sqs.ReceiveMessage",
    "sqs.DeleteMessage",
    "sqs.DeleteMessageBatch",
    "sqs.ChangeMessageVisibility",
    "sqs.ChangeMessageVisibilityBatch",
    "sqs.ListDeadLetterSourceQueues",
    "sqs.StartMessageMoveTask",
    "cmq.CreateQueue",
    "cmq.ListQueue",
    "cmq.GetQueueAttributes",
    "cmq.SetQueueAttributes",
    "cmq.DeleteQueue",
    "cmq.RewindQueue",
    "cmq.SendMessage",
    "cmq.BatchSendMessage",
    "cmq.ReceiveMessage",
    "cmq.BatchReceiveMessage",
    "cmq.DeleteMessage",
    "cmq.BatchDeleteMessage",
    "cmq.CreateTopic",
    "cmq.SetTopicAttributes",
    "cmq.GetTopicAttributes",
    "cmq.ListTopic",
    "cmq.DeleteTopic",
    "cmq.PublishMessage",
    "cmq.BatchPublishMessage",
    "cmq.Subscribe",
    "cmq.Unsubscribe",
    "cmq.GetSubscriptionAttributes",
    "cmq.SetSubscriptionAttributes",
    "cmq.ClearSubscriptionFilterTags",
    "cmq.ListSubscriptionByTopic",
];

/// The `method` labels: every RPC of the proto (see build.rs), the HTTP port's actions
/// ([`HTTP_METHODS`]), then [`UNKNOWN_METHOD`].
fn method_labels() -> impl Iterator<Item = &'static str> {
    RPC_METHODS
        .iter()
        .map(|(_, name)| *name)
        .chain(HTTP_METHODS)
        .chain([UNKNOWN_METHOD])
}

/// The `reason` labels of `spool_auth_refusals_total`: UNAUTHENTICATED (no credentials, a
/// malformed authorization header, an unknown token or certificate, a forwarded identity that
/// does not verify or names an unknown principal) and PERMISSION_DENIED.
pub const AUTH_REFUSAL_REASONS: [&str; 8] = [
    "no_credentials",
    "malformed_authorization",
    "unknown_token",
    "unknown_certificate",
    "bad_forward",
    "unknown_forwarded_principal",
    "not_granted",
    // A browser call from an origin not in --cors-allowed-origins (src/web), answered 403.
    "origin_not_allowed",
];

/// The `file` labels of `spool_reload_failures_total`: the files watched for changes.
pub const RELOADED_FILES: [&str; 2] = ["auth", "tls"];

/// The `limit` labels of `spool_limit_refusals_total`: what a limit of docs/security.md
/// ("Limits") refused or ended. The connection limits have their own counters (`net`).
pub const LIMITS: [&str; 5] = [
    "max_waiting_receives",
    "stalled_stream",
    "response_buffer",
    "request_body_timeout",
    "disk",
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
    /// Per [`AUTH_REFUSAL_REASONS`] entry: calls refused for it.
    auth_refusals: [AtomicU64; AUTH_REFUSAL_REASONS.len()],
    /// Per [`RELOADED_FILES`] entry: changes that could not be applied (the old stayed).
    reload_failures: [AtomicU64; RELOADED_FILES.len()],
    /// Which storage backend the server runs on ("sqlite", "postgres"), set once at startup,
    /// so dashboards can tell deployments apart.
    storage_backend: std::sync::OnceLock<&'static str>,
    /// Per [`LIMITS`] entry: calls refused or streams ended by that limit.
    limit_refusals: [AtomicU64; LIMITS.len()],
    /// The accept loop's counts (refused connections, handshake timeouts, accept errors).
    pub connections: Arc<ConnectionCounts>,
    /// Texts rendered by the metrics endpoint: with its shared snapshot, at most one a
    /// second however many scrapers there are.
    metrics_renders: AtomicU64,
    /// Metrics connections closed as soon as accepted (`--metrics-max-connections`).
    metrics_refused: AtomicU64,
    /// Metrics connections cut off at their deadline (a slow client, one that never reads).
    metrics_timeouts: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: method_labels()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            latency: method_labels()
                .map(|_| Histogram::new(LATENCY_SECONDS))
                .collect(),
            commit_seconds: Histogram::new(LATENCY_SECONDS),
            commit_messages: Histogram::new(COUNTS),
            commit_failures: AtomicU64::new(0),
            auth_refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            reload_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            storage_backend: std::sync::OnceLock::new(),
            limit_refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            connections: Arc::default(),
            metrics_renders: AtomicU64::new(0),
            metrics_refused: AtomicU64::new(0),
            metrics_timeouts: AtomicU64::new(0),
        }
    }
}

/// Names the call a measurement belongs to: an index into the labels of [`method_labels`]
/// ([`RPC_METHODS`], then [`HTTP_METHODS`], then [`UNKNOWN_METHOD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method(usize);

impl Method {
    const UNKNOWN: Self = Self(RPC_METHODS.len() + HTTP_METHODS.len());

    /// The RPC a request's path names.
    pub fn of_path(path: &str) -> Self {
        RPC_METHODS
            .iter()
            .position(|(rpc_path, _)| *rpc_path == path)
            .map_or(Self::UNKNOWN, Self)
    }

    /// An action of the HTTP port: `protocol` "sqs" or "cmq", and the action's name as the
    /// request gave it (one that is not in [`HTTP_METHODS`] is [`UNKNOWN_METHOD`]).
    pub fn of_http_action(protocol: &str, action: &str) -> Self {
        HTTP_METHODS
            .iter()
            .position(|label| {
                label
                    .split_once('.')
                    .is_some_and(|(p, a)| p == protocol && a == action)
            })
            .map_or(Self::UNKNOWN, |index| Self(RPC_METHODS.len() + index))
    }

    pub fn name(self) -> &'static str {
        if let Some((_, name)) = RPC_METHODS.get(self.0) {
            return name;
        }
        HTTP_METHODS
            .get(self.0 - RPC_METHODS.len())
            .copied()
            .unwrap_or(UNKNOWN_METHOD)
    }
}

impl Metrics {
    pub fn observe_rpc(&self, method: Method, code: Code, elapsed: Duration) {
        let code = (code as usize).min(CODES - 1);
        self.requests[method.0][code].fetch_add(1, Ordering::Relaxed);
        self.latency[method.0].observe(elapsed.as_secs_f64());
    }

    /// Counts a refused call; `reason` is one of [`AUTH_REFUSAL_REASONS`] (others are not
    /// counted: the label set stays fixed).
    pub fn auth_refused(&self, reason: &str) {
        if let Some(index) = AUTH_REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.auth_refusals[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a change of a watched file that could not be applied; `file` is one of
    /// [`RELOADED_FILES`].
    pub fn reload_failed(&self, file: &str) {
        if let Some(index) = RELOADED_FILES.iter().position(|f| *f == file) {
            self.reload_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the storage backend in use (the first call wins).
    pub fn set_storage_backend(&self, backend: &'static str) {
        let _ = self.storage_backend.set(backend);
    }

    /// Counts a rendering of the metrics text.
    pub fn metrics_rendered(&self) {
        self.metrics_renders.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a metrics connection refused at the cap.
    pub fn metrics_refused(&self) {
        self.metrics_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a metrics connection cut off at its deadline.
    pub fn metrics_timed_out(&self) {
        self.metrics_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call refused (or a stream ended) by a limit; `limit` is one of [`LIMITS`].
    pub fn limit_refused(&self, limit: &str) {
        if let Some(index) = LIMITS.iter().position(|l| *l == limit) {
            self.limit_refusals[index].fetch_add(1, Ordering::Relaxed);
        }
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
            "Calls by method and status code: gRPC methods, and the HTTP port's actions as \
             sqs.<Action> and cmq.<Action> with the gRPC code of their outcome.",
        );
        for (method, codes) in method_labels().zip(&self.requests) {
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
            "Time from a call's request to its response (to the stream's end for ReceiveMessages; \
             for the HTTP port's actions, to the answer's body).",
        );
        for (method, histogram) in method_labels().zip(&self.latency) {
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
        header(
            &mut out,
            "spool_auth_refusals_total",
            "counter",
            "Calls refused: UNAUTHENTICATED (no_credentials, malformed_authorization, \
             unknown_token, unknown_certificate, bad_forward, unknown_forwarded_principal), \
             PERMISSION_DENIED (not_granted), or HTTP 403 \
             to a browser's page of another origin (origin_not_allowed).",
        );
        for (reason, count) in AUTH_REFUSAL_REASONS.iter().zip(&self.auth_refusals) {
            let _ = writeln!(
                out,
                "spool_auth_refusals_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "spool_reload_failures_total",
            "counter",
            "Changes of a watched file (auth file, TLS certificate and key) that could not be \
             applied; the previous version stayed in force.",
        );
        for (file, count) in RELOADED_FILES.iter().zip(&self.reload_failures) {
            let _ = writeln!(
                out,
                "spool_reload_failures_total{{file=\"{file}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        if let Some(backend) = self.storage_backend.get() {
            header(
                &mut out,
                "spool_storage_backend",
                "gauge",
                "The storage backend in use (1 for the backend named by the label).",
            );
            let _ = writeln!(out, "spool_storage_backend{{backend=\"{backend}\"}} 1");
        }
        header(
            &mut out,
            "spool_limit_refusals_total",
            "counter",
            "Calls refused or streams ended by a limit of docs/security.md: max_waiting_receives, \
             stalled_stream (a client that read nothing), response_buffer, request_body_timeout, \
             disk (free space or max_database_bytes).",
        );
        for (limit, count) in LIMITS.iter().zip(&self.limit_refusals) {
            let _ = writeln!(
                out,
                "spool_limit_refusals_total{{limit=\"{limit}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        for (name, help, count) in [
            (
                "spool_connections_refused_total",
                "Connections closed as soon as accepted because --max-connections were open.",
                &self.connections.refused,
            ),
            (
                "spool_connection_handshake_timeouts_total",
                "Connections closed because their TLS handshake did not finish in time.",
                &self.connections.handshake_timeouts,
            ),
            (
                "spool_accept_errors_total",
                "Failed accepts on the gRPC port (mostly: out of file descriptors).",
                &self.connections.accept_errors,
            ),
            (
                "spool_metrics_renders_total",
                "Texts rendered by this endpoint (scrapes within a second share one).",
                &self.metrics_renders,
            ),
            (
                "spool_metrics_connections_refused_total",
                "Metrics connections closed as soon as accepted because \
                 --metrics-max-connections were open.",
                &self.metrics_refused,
            ),
            (
                "spool_metrics_request_timeouts_total",
                "Metrics connections cut off at their 10 s deadline (slow or non-reading clients).",
                &self.metrics_timeouts,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", count.load(Ordering::Relaxed));
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
    let series: [(&str, &str, &str, Value); 18] = [
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
            "spool_queue_bytes",
            "gauge",
            "Bytes of the bodies and attributes of the visible, in-flight, delayed and \
             rewindable messages (the API's QueueStats.backlog_bytes; what max_bytes limits).",
            |q, _| q.counts.bytes.to_string(),
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
            "spool_queue_messages_purged_total",
            "counter",
            "Messages removed by PurgeQueue (acknowledged) since the server started.",
            |q, _| q.totals.purged.to_string(),
        ),
        (
            "spool_queue_messages_dead_lettered_total",
            "counter",
            "Messages moved to the queue's dead-letter queue since the server started.",
            |q, _| q.totals.dead_lettered.to_string(),
        ),
        (
            "spool_queue_messages_redriven_total",
            "counter",
            "Messages moved out of the queue by RedriveMessages since the server started.",
            |q, _| q.totals.redriven.to_string(),
        ),
        (
            "spool_queue_sends_deduplicated_total",
            "counter",
            "Sends (batch entries) that enqueued nothing, their deduplication id accepted \
             before, since the server started.",
            |q, _| q.totals.deduplicated.to_string(),
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
        (
            "spool_queue_max_bytes",
            "gauge",
            "The queue's max_bytes attribute (0: no quota).",
            |q, _| q.attributes.max_bytes.to_string(),
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

/// The topics' counters: per topic, publishes and those no subscription took; per
/// subscription, copies delivered and publishes filtered out (kept across restarts).
pub fn render_topics(
    out: &mut String,
    topics: &[(crate::topic::TopicInfo, Vec<crate::topic::SubscriptionInfo>)],
) {
    header(
        out,
        "spool_topic_messages_published_total",
        "counter",
        "Publishes acknowledged on the topic since it was created (kept across restarts).",
    );
    for (topic, _) in topics {
        let _ = writeln!(
            out,
            "spool_topic_messages_published_total{{topic=\"{}\"}} {}",
            topic.record.name, topic.totals.published
        );
    }
    header(
        out,
        "spool_topic_messages_unrouted_total",
        "counter",
        "Acknowledged publishes no subscription took, since the topic was created.",
    );
    for (topic, _) in topics {
        let _ = writeln!(
            out,
            "spool_topic_messages_unrouted_total{{topic=\"{}\"}} {}",
            topic.record.name, topic.totals.unrouted
        );
    }
    type Value = fn(&crate::topic::SubscriptionInfo) -> u64;
    let series: [(&str, &str, Value); 2] = [
        (
            "spool_subscription_messages_delivered_total",
            "Copies a subscription put in its queue since it was created.",
            |s| s.totals.delivered,
        ),
        (
            "spool_subscription_messages_filtered_out_total",
            "Publishes a subscription's filter kept out since it was created.",
            |s| s.totals.filtered_out,
        ),
    ];
    for (name, help, value) in series {
        header(out, name, "counter", help);
        for (_, subscriptions) in topics {
            for subscription in subscriptions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",subscription=\"{}\",queue=\"{}\"}} {}",
                    subscription.topic,
                    subscription.record.name,
                    subscription.record.queue_name,
                    value(subscription)
                );
            }
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
