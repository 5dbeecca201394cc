//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1, served by hyper (the HTTP library
//! tonic already brings), one request per connection.
//!
//! Bounded, because any host that reaches the port can scrape it and the text grows with the
//! queues (6.3 MB with 10,000 of them; before these bounds, 100 clients that never read held
//! 1.49 GB and 300 concurrent scrapers slowed gRPC twentyfold):
//! - at most `--metrics-max-connections` connections at once; more are closed as soon as
//!   accepted, not queued;
//! - [`REQUEST_DEADLINE`] for the whole exchange of a connection, request head in and answer
//!   out: a client that sends its request slowly or never reads its answer is disconnected;
//! - the text is rendered at most once per [`SNAPSHOT_TTL`], and every scrape in that time is
//!   answered with the same bytes (shared, not copied): however many scrapers there are, one
//!   rendering is in memory, plus what the kernel's socket buffers hold.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The read buffer of a connection, which bounds a request head; a scrape's is a few hundred
/// bytes (hyper's smallest allowed).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// The whole exchange (request in, answer out) of one connection: a scrape of 10,000 queues
/// is a few MB, under a second on any network a scraper is on; Prometheus's own default
/// scrape timeout is this long.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a rendered text is served before it is rendered again: far below any scrape
/// interval, so values are fresh, while concurrent scrapers share one rendering.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// The kernel's send buffer of a metrics connection (Linux doubles it). Without it the kernel
/// grows it to 4 MB per connection, and a client that never reads holds that much kernel
/// memory and frees its slot at once; with it, such a client waits with its slot until the
/// deadline cuts it off. Plenty for a scraper that reads: it holds a millisecond's worth of a
/// fast network.
const SEND_BUFFER_BYTES: usize = 256 * 1024;
/// Prometheus's text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The last rendered text and when; one rendering at a time (the lock is held while rendering,
/// so concurrent scrapers wait for it and share it).
struct Snapshot {
    rendered: tokio::sync::Mutex<Option<(tokio::time::Instant, Bytes)>>,
    metrics: Arc<Metrics>,
    registry: Arc<OnceLock<Arc<Registry>>>,
    clock: Clock,
}

impl Snapshot {
    /// The text of a scrape: the one rendered within [`SNAPSHOT_TTL`], or a new one.
    async fn get(&self) -> Bytes {
        let mut rendered = self.rendered.lock().await;
        if let Some((at, text)) = rendered.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return text.clone();
        }
        let (queues, body_cache_bytes) = match self.registry.get() {
            Some(registry) => (registry.snapshot().await, registry.body_cache_bytes()),
            None => (Vec::new(), 0),
        };
        self.metrics.metrics_rendered();
        let mut text = self
            .metrics
            .render(&queues, body_cache_bytes, self.clock.now_ms());
        if let Some(registry) = self.registry.get() {
            super::render_topics(&mut text, &registry.topics().snapshot());
        }
        let text = Bytes::from(text);
        *rendered = Some((tokio::time::Instant::now(), text.clone()));
        text
    }

    /// The answer to one request.
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => (StatusCode::OK, TEXT_FORMAT, self.get().await),
            (&Method::GET, _) => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found: metrics are at /metrics\n"),
            ),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                Bytes::from_static(b"only GET /metrics is served here\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Serves until `stop` is cancelled. Until `registry` is filled (recovery), no queue is listed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<OnceLock<Arc<Registry>>>,
    clock: Clock,
    max_connections: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let snapshot = Arc::new(Snapshot {
        rendered: tokio::sync::Mutex::new(None),
        metrics,
        registry,
        clock,
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    snapshot.metrics.metrics_refused();
                    if REFUSALS.allow("metrics_connections") {
                        tracing::warn!(
                            %peer,
                            max_connections,
                            "refused a metrics connection: metrics_max_connections are open"
                        );
                    }
                    // Dropped: closed at once.
                    continue;
                };
                if let Err(error) =
                    socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER_BYTES)
                {
                    tracing::debug!(%peer, %error, "metrics connection: send buffer not set");
                }
                let snapshot = snapshot.clone();
                let snapshot_for_count = snapshot.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let snapshot = snapshot.clone();
                        async move { Ok::<_, Infallible>(snapshot.answer(request).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        // One request per connection: the deadline below is the request's.
                        .keep_alive(false)
                        .header_read_timeout(REQUEST_DEADLINE)
                        .max_buf_size(MAX_REQUEST_HEAD)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        served = tokio::time::timeout(REQUEST_DEADLINE, connection) => match served {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics request failed"),
                            Err(_) => {
                                snapshot_for_count.metrics.metrics_timed_out();
                                tracing::debug!(%peer, "metrics request past its deadline; disconnected");
                            }
                        },
                        () = stop.cancelled() => {}
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
