//! The server as a function: the caller binds the listener (tests bind 127.0.0.1:0) and picks
//! the shutdown trigger.
//!
//! Startup: open storage, recover every queue, then serve with health SERVING. Shutdown is
//! decide → tell → wait: the trigger fires, health turns NOT_SERVING, the server stops
//! accepting, open long polls end (empty, OK), in-flight calls finish, storage commits what is
//! left, and `run` returns.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::clock::Clock;
use crate::config::{self, Settings};
use crate::grpc::QueueServiceImpl;
use crate::grpc::health::{self, HealthReporter};
use crate::grpc::layer::RequestSizeLimit;
use crate::limits::{DEFAULT_MAX_QUEUES, MAX_REQUEST_BYTES};
use crate::metrics::{self, Metrics};
use crate::pb::queue_service_server::QueueServiceServer;
use crate::registry::Registry;
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Storage, StorageError};

/// Encoded descriptors of Spool's API, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spool_descriptor.bin"));

/// How long shutdown waits for open calls before giving up on them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `run` needs besides the listener.
#[derive(Debug)]
pub struct ServerConfig {
    /// Where the embedded database lives.
    pub data_dir: PathBuf,
    /// Most queues the server holds.
    pub max_queues: usize,
    /// Memory for bodies of messages not received yet, shared by all queues.
    pub body_cache_bytes: usize,
    /// Longest wait for open calls at shutdown.
    pub shutdown_grace: Duration,
    /// The server's time; tests share one with the server to move it forward.
    pub clock: Clock,
    /// Largest size of the database file; None: as large as the disk allows.
    pub max_database_bytes: Option<u64>,
    /// Where to serve Prometheus metrics (GET /metrics); None: nowhere.
    pub metrics_listener: Option<TcpListener>,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Pings to each connection, so dead peers and their long polls are noticed.
    pub http2_keepalive_interval: Option<Duration>,
    pub http2_keepalive_timeout: Option<Duration>,
    /// Connections older than this are closed gracefully so clients rebalance.
    pub max_connection_age: Option<Duration>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            max_queues: DEFAULT_MAX_QUEUES,
            body_cache_bytes: config::DEFAULT_BODY_CACHE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            clock: Clock::new(),
            max_database_bytes: None,
            metrics_listener: None,
            max_concurrent_streams: config::DEFAULT_MAX_CONCURRENT_STREAMS,
            http2_keepalive_interval: Some(Duration::from_secs(
                config::DEFAULT_HTTP2_KEEPALIVE_INTERVAL_SECONDS,
            )),
            http2_keepalive_timeout: Some(Duration::from_secs(
                config::DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_SECONDS,
            )),
            max_connection_age: None,
        }
    }

    /// The server part of the effective settings (the caller binds the listeners).
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_queues: settings.max_queues,
            body_cache_bytes: settings.body_cache_bytes,
            shutdown_grace: settings.shutdown_grace(),
            max_database_bytes: settings.max_database_bytes,
            max_concurrent_streams: settings.max_concurrent_streams,
            http2_keepalive_interval: settings.http2_keepalive_interval(),
            http2_keepalive_timeout: settings.http2_keepalive_timeout(),
            max_connection_age: settings.max_connection_age(),
            ..Self::new(&settings.data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Runs Spool on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServerConfig,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::default());
    let data_dir = config.data_dir.clone();
    let max_database_bytes = config.max_database_bytes;
    let storage_metrics = metrics.clone();
    let storage = tokio::task::spawn_blocking(move || {
        SqliteStorage::open(&data_dir, max_database_bytes, storage_metrics)
    })
    .await
    .map_err(|e| StorageError::Io(format!("storage open task failed: {e}")))??;
    let storage: Arc<dyn Storage> = Arc::new(storage);

    // Serve at once, so probes get answers while the queues are recovered: the queue service
    // is NOT_SERVING (and its calls UNAVAILABLE) until the registry is in place.
    let registry: Arc<OnceLock<Arc<Registry>>> = Arc::default();
    let (health, health_service) = health::health_service();
    health.set_not_serving::<QueueServiceServer<QueueServiceImpl>>();
    let recovery = tokio::spawn(recover(
        storage.clone(),
        config.clock.clone(),
        config.max_queues,
        config.body_cache_bytes,
        registry.clone(),
        health.clone(),
    ));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let stopping = CancellationToken::new();
    let queue_service = RequestSizeLimit::new(
        QueueServiceServer::new(QueueServiceImpl::new(
            registry.clone(),
            metrics.clone(),
            stopping.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES),
    );

    // Decide → tell: readiness drops first, so load balancers stop sending new calls.
    let trigger = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        health.set_not_serving::<QueueServiceServer<QueueServiceImpl>>();
        trigger.cancel();
    });

    let local_addr = listener.local_addr().ok();
    tracing::info!(
        addr = %local_addr.map(|a| a.to_string()).unwrap_or_default(),
        data_dir = %config.data_dir.display(),
        "listening"
    );
    // The builder's tcp_nodelay does not reach a listener we bind ourselves; without it, Nagle
    // holds each streamed message until the client's delayed ACK (~40 ms per ReceiveMessages).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Some(metrics_listener) = config.metrics_listener {
        tracing::info!(
            addr = %metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "serving metrics at /metrics"
        );
        tokio::spawn(metrics::http::serve(
            metrics_listener,
            metrics.clone(),
            registry.clone(),
            config.clock.clone(),
            stopping.clone(),
        ));
    }
    let mut builder = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(config.http2_keepalive_interval)
        .http2_keepalive_timeout(config.http2_keepalive_timeout);
    if let Some(age) = config.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let serve = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(queue_service)
        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned());
    tokio::pin!(serve);
    let grace_over = async {
        stopping.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(grace_over);
    tokio::pin!(recovery);
    let mut recovering = true;
    let mut recovery_error = None;
    loop {
        tokio::select! {
            served = &mut serve => {
                served?;
                break;
            }
            () = &mut grace_over => {
                tracing::warn!(
                    grace = ?config.shutdown_grace,
                    "calls still open after the shutdown grace; closing them"
                );
                break;
            }
            joined = &mut recovery, if recovering => {
                recovering = false;
                let outcome = joined
                    .map_err(|e| StorageError::Io(format!("recovery task failed: {e}")))
                    .and_then(|recovered| recovered);
                if let Err(error) = outcome {
                    tracing::error!(%error, "recovery failed; stopping");
                    recovery_error = Some(error);
                    stopping.cancel();
                }
            }
        }
    }

    // Wait: everything acknowledged is committed already; this writes the lazy bookkeeping
    // (receive records the queues still hold, then whatever the writer has queued).
    if let Some(registry) = registry.get() {
        registry.flush_all().await;
    }
    let (closed, flushed) = oneshot::channel();
    storage.close(closed);
    let _ = flushed.await;
    if let Some(error) = recovery_error {
        return Err(error.into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reads every queue back from storage, then opens the queue service (health SERVING).
async fn recover(
    storage: Arc<dyn Storage>,
    clock: Clock,
    max_queues: usize,
    body_cache_bytes: usize,
    slot: Arc<OnceLock<Arc<Registry>>>,
    health: HealthReporter,
) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let registry = Registry::recover(storage, clock, max_queues, body_cache_bytes).await?;
    let queues = registry.len();
    // Only this task fills the slot, once.
    let _ = slot.set(Arc::new(registry));
    health.set_serving::<QueueServiceServer<QueueServiceImpl>>();
    tracing::info!(queues, elapsed = ?started.elapsed(), "recovered; serving");
    Ok(())
}
