//! A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics` and nothing else. Scrapers send
//! one small request per connection, so this reads the request head, answers and closes.
//!
//! Bounded: at most `--metrics-max-connections` connections at once (more are closed as soon
//! as accepted), each with [`REQUEST_DEADLINE`] for the whole exchange (a client that never
//! reads its answer is dropped), and the text is rendered at most once per [`SNAPSHOT_TTL`] and
//! shared by every scrape in that time (before: each scrape rendered its own 6.3 MB with 10,000
//! queues, and 100 clients that never read held 1.49 GB).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole exchange (request in, answer out) of one connection: a scrape of 10,000 queues
/// is a few MB, seconds at worst.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a rendered text is served before it is rendered again: far below any scrape
/// interval, so values are fresh, while concurrent scrapers share one rendering.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// The last rendered text and when; one rendering at a time (the lock is held while rendering,
/// so concurrent scrapers wait for it and share it).
#[derive(Default)]
struct Snapshot {
    rendered: tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<String>)>>,
}

impl Snapshot {
    async fn get(
        &self,
        metrics: &Metrics,
        registry: Option<&Registry>,
        clock: &Clock,
    ) -> Arc<String> {
        let mut rendered = self.rendered.lock().await;
        if let Some((at, text)) = rendered.as_ref()
            && at.elapsed() < SNAPSHOT_TTL
        {
            return text.clone();
        }
        let (queues, body_cache_bytes) = match registry {
            Some(registry) => (registry.snapshot().await, registry.body_cache_bytes()),
            None => (Vec::new(), 0),
        };
        let mut text = metrics.render(&queues, body_cache_bytes, clock.now_ms());
        if let Some(registry) = registry {
            super::render_topics(&mut text, &registry.topics().snapshot());
        }
        let text = Arc::new(text);
        *rendered = Some((tokio::time::Instant::now(), text.clone()));
        text
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
    let snapshot = Arc::new(Snapshot::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if REFUSALS.allow("metrics_connections") {
                        tracing::warn!(
                            %peer,
                            max_connections,
                            "refused a metrics connection: metrics_max_connections are open"
                        );
                    }
                    continue;
                };
                let metrics = metrics.clone();
                let registry = registry.get().cloned();
                let clock = clock.clone();
                let snapshot = snapshot.clone();
                tokio::spawn(async move {
                    let answered = tokio::time::timeout(
                        REQUEST_DEADLINE,
                        answer(stream, &metrics, registry.as_deref(), &clock, &snapshot),
                    )
                    .await;
                    match answered {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::debug!(%error, "metrics request failed"),
                        Err(_) => tracing::debug!(%peer, "metrics request past its deadline"),
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    registry: Option<&Registry>,
    clock: &Clock,
    snapshot: &Snapshot,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let read = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buffer))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            snapshot.get(metrics, registry, clock).await,
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            Arc::new("not found: metrics are at /metrics\n".to_string()),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            Arc::new("only GET /metrics is served here\n".to_string()),
        ),
    };
    // The head, then the shared text itself: no copy of it per connection.
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
