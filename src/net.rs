//! Client connections: the one accept loop of the gRPC port, plaintext or TLS.
//!
//! Every connection takes a slot of `--max-connections` as it is accepted; with none free it is
//! closed at once (refused, not queued), so a flood of connections cannot exhaust the file
//! descriptors the database needs. A connection then has `--handshake-timeout-seconds` to finish
//! its TLS handshake (when TLS is on) and send the HTTP/2 preface (or as many bytes of an
//! HTTP/1.1 request, for gRPC-Web and the console): one that sends nothing is closed rather
//! than held forever. A failed accept (out of file descriptors: EMFILE, ENFILE) is
//! logged at WARN and retried after [`ACCEPT_ERROR_BACKOFF`], so the loop does not spin.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::limits::HTTP2_PREFACE_LEN;
use crate::logsafe::REFUSALS;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin; the
/// connection waits in the kernel's backlog meanwhile.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Connections handshaken and waiting for the gRPC server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// The connection limits of one listener.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// `--max-connections`: open connections at most.
    pub max_connections: usize,
    /// `--handshake-timeout-seconds`: time to the end of the HTTP/2 preface.
    pub handshake_timeout: Duration,
}

/// Counts of the accept loop, for metrics.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Connections closed at once because `--max-connections` were open.
    pub refused: AtomicU64,
    /// Connections closed because their handshake or preface did not come in time.
    pub handshake_timeouts: AtomicU64,
    /// Failed accepts (file descriptors exhausted, mostly).
    pub accept_errors: AtomicU64,
}

/// The connections on `listener`, each made ready by `ready` (the TLS handshake, or nothing),
/// until `stop`: the incoming stream of the gRPC server. Each connection's `ready` runs in its
/// own task, so a slow client delays no other.
pub fn incoming<IO, Ready, Fut>(
    listener: TcpListener,
    limits: ConnectionLimits,
    counts: Arc<ConnectionCounts>,
    stop: CancellationToken,
    ready: Ready,
) -> ReceiverStream<Result<Guarded<IO>, io::Error>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Ready: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Option<IO>> + Send + 'static,
{
    let (accepted, incoming) = mpsc::channel(ACCEPTED_BACKLOG);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => return,
                result = listener.accept() => match result {
                    Ok(connection) => connection,
                    Err(error) => {
                        counts.accept_errors.fetch_add(1, Ordering::Relaxed);
                        if REFUSALS.allow("accept_error") {
                            tracing::warn!(
                                %error,
                                backoff = ?ACCEPT_ERROR_BACKOFF,
                                "cannot accept a connection (out of file descriptors? see \
                                 docs/security.md, \"Limits\")"
                            );
                        }
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                if REFUSALS.allow("max_connections") {
                    tracing::warn!(
                        %peer,
                        max_connections = limits.max_connections,
                        "refused a connection: max_connections are open"
                    );
                }
                drop(stream);
                continue;
            };
            // Without it, Nagle holds each streamed message until the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
            let ready = ready(stream, peer);
            let accepted = accepted.clone();
            let counts = counts.clone();
            let timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, ready).await {
                    Ok(Some(io)) => {
                        let connection = Guarded {
                            io,
                            _slot: slot,
                            preface: Some(Box::pin(tokio::time::sleep_until(deadline))),
                            read: 0,
                        };
                        // The server is stopping when nobody takes it: the connection closes.
                        let _ = accepted.send(Ok(connection)).await;
                    }
                    Ok(None) => {}
                    Err(_) => {
                        counts.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                        if REFUSALS.allow("handshake_timeout") {
                            tracing::info!(%peer, ?timeout, "TLS handshake timed out");
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// A connection that holds its slot of `--max-connections` until it closes, and fails its reads
/// if the HTTP/2 preface has not come by the handshake deadline.
pub struct Guarded<IO> {
    io: IO,
    /// Released when the connection is dropped (closed).
    _slot: OwnedSemaphorePermit,
    /// Until [`HTTP2_PREFACE_LEN`] bytes have been read: the deadline for them.
    preface: Option<Pin<Box<Sleep>>>,
    /// Bytes read so far, up to [`HTTP2_PREFACE_LEN`].
    read: usize,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = &mut this.preface {
            this.read += buf.filled().len() - before;
            if this.read >= HTTP2_PREFACE_LEN {
                this.preface = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                if REFUSALS.allow("preface_timeout") {
                    tracing::info!("closed a connection that sent no HTTP/2 preface in time");
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface before the handshake timeout",
                )));
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connection's address (and, over TLS, its client certificate) for the auth layer, as
/// the inner stream reports them.
impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Raises the soft open-files limit to the hard one (Linux defaults the soft one to 1,024, too
/// few for `--max-connections`), and warns when it stays below what the server may need.
pub fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = limit.maximum,
            Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
        }
    }
    let needed = max_connections as u64 + crate::limits::RESERVED_FILE_DESCRIPTORS;
    if let Some(soft) = soft
        && soft < needed
    {
        tracing::warn!(
            open_files_limit = soft,
            max_connections,
            "the open-files limit (ulimit -n) is below max_connections + {}: connections may \
             fail to be accepted, and storage to open files, before max_connections is reached; \
             raise it or lower --max-connections",
            crate::limits::RESERVED_FILE_DESCRIPTORS
        );
    }
}
