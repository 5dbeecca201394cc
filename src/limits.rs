//! The limits of the server: the API's ranges and defaults, which the client crate owns
//! (`spool_client::limits`, re-exported here so there is one definition), and the server's own
//! settings.

pub use spool_client::limits::*;

/// Queues a server holds unless configured otherwise.
pub const DEFAULT_MAX_QUEUES: usize = 10_000;

// ---- Limits that hold under abuse (docs/security.md, "Limits"). Each bounds something a
// client can make the server hold: memory, tasks, file descriptors, disk, log volume. ----

/// Client connections open at once. Each costs a file descriptor and a few tens of KiB (its
/// HTTP/2 state and buffers); 4,096 leave room under the usual hard open-files limits
/// (65,536 and up) for the database's files and the metrics endpoint.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// File descriptors kept free of client connections: the database, its WAL and shm, the
/// readers' connections, the metrics endpoint, watched files.
pub const RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// Seconds a connection has to finish its TLS handshake and send the 24-byte HTTP/2 preface.
/// A real client does both in a few round trips; an idle socket held open costs ~15 KB and a
/// file descriptor, so it is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECONDS: u64 = 10;
/// Length of the HTTP/2 client connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").
pub const HTTP2_PREFACE_LEN: usize = 24;

/// Seconds a call has to send its whole request body (a consumer stream: each request on it).
/// The largest request (16 MiB) takes 30 s at 4.5 Mbit/s; a body that stalls would otherwise
/// hold its partial message forever.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_SECONDS: u64 = 30;

/// Seconds a ReceiveMessages stream may wait on a client that takes nothing (its HTTP/2
/// window stays full) before its unsent messages are released for other receivers. Longer
/// than any pause of a live client (a GC, a slow handler between two messages of a stream).
pub const DEFAULT_STREAM_STALL_TIMEOUT_SECONDS: u64 = 20;

/// Bytes of received messages handed to the network layer and not yet taken by their clients,
/// in all streams: what stalled readers can make the server hold. 256 MiB is 16 full receives
/// of the largest bodies; ordinary traffic holds a few messages per stream for microseconds.
pub const DEFAULT_MAX_RESPONSE_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// ReceiveMessages calls open at once in all (parked long polls and streams). Each holds a
/// task, an HTTP/2 stream and a place in its queue's waiters.
pub const DEFAULT_MAX_WAITING_RECEIVES: usize = 10_000;

/// Free space below which sends are refused, when not configured: the smaller of this and
/// [`MIN_FREE_DISK_FRACTION`] of the filesystem, so the database can still checkpoint, and the
/// host (and its logs) keep working.
pub const MIN_FREE_DISK_BYTES_CAP: u64 = 1024 * 1024 * 1024;
/// The share of the filesystem kept free, when not configured (5%).
pub const MIN_FREE_DISK_FRACTION: f64 = 0.05;

/// Connections to the metrics endpoint at once. Prometheus scrapes with one or two.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 64;
