//! A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics` and nothing else. Scrapers send
//! one small request per connection, so this reads the request head, answers and closes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `stop` is cancelled. Until `registry` is filled (recovery), no queue is listed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<OnceLock<Arc<Registry>>>,
    clock: Clock,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let metrics = metrics.clone();
                let registry = registry.get().cloned();
                let clock = clock.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, &metrics, registry.as_deref(), &clock).await
                    {
                        tracing::debug!(%error, "metrics request failed");
                    }
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
        (Some(b"GET"), Some(b"/metrics")) => {
            let (queues, body_cache_bytes) = match registry {
                Some(registry) => (registry.snapshot().await, registry.body_cache_bytes()),
                None => (Vec::new(), 0),
            };
            let now = clock.now_ms();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(&queues, body_cache_bytes, now),
            )
        }
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
