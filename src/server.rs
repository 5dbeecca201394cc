//! The server as a function: the caller binds the listener (tests bind 127.0.0.1:0) and picks
//! the shutdown trigger.
//!
//! Startup: open storage, recover every queue, then serve with health SERVING. The embedded
//! database is opened before anything listens; PostgreSQL is connected to in the background
//! (with backoff while it cannot be reached), the queue service NOT_SERVING meanwhile. Shutdown is
//! decide → tell → wait: the trigger fires, health turns NOT_SERVING, the server stops
//! accepting, open long polls end (empty, OK), in-flight calls finish, storage commits what is
//! left, and `run` returns.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::auth::forwarded::ForwardKeySlot;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::cluster::join::{ClusterSettings, DriverControls, QueueSettings, join};
use crate::cluster::routing::Routed;
use crate::config::Settings;
use crate::disk::{DiskGuard, DiskLimits};
use crate::grpc::QueueServiceImpl;
use crate::grpc::auth::Authenticated;
use crate::grpc::health::{self, HealthReporter};
use crate::grpc::layer::RequestSizeLimit;
use crate::grpc::observe::Observed;
use crate::grpc::receive_stream::ReceiveLimits;
use crate::limits::MAX_REQUEST_BYTES;
use crate::metrics::{self, Metrics};
use crate::net::{self, ConnectionLimits};
use crate::pb::queue_service_server::QueueServiceServer;
use crate::registry::Registry;
use crate::security::Security;
use crate::storage::postgres::{self, ConnectOptions, PostgresStorage};
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Storage, StorageError};

/// Encoded descriptors of Spool's API, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spool_descriptor.bin"));

/// Streams a client may reset before the server accepted them, before the connection is closed
/// with GOAWAY: h2's own default, stated so an upgrade cannot change it unnoticed.
pub const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Largest decoded header block of a request, in bytes: gRPC metadata is a few hundred bytes
/// (a bearer token, a timeout); hyper's default, stated.
pub const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// What `run` needs besides the listener: the settings, and the things that are not settings
/// but objects the caller provides.
#[derive(Debug)]
pub struct ServerConfig {
    /// The one settings struct of `spool serve` (flags, environment, file); `listen` and
    /// `metrics_listen` are for the caller, which binds the listeners.
    pub settings: Settings,
    /// The server's time; tests share one with the server to move it forward.
    pub clock: Clock,
    /// Where to serve Prometheus metrics (GET /metrics); None: nowhere.
    pub metrics_listener: Option<TcpListener>,
    /// Where to serve the SQS and CMQ HTTP APIs (`--http-listen`); None: nowhere.
    pub http_listener: Option<TcpListener>,
    /// Told once the queues are recovered and the queue service is SERVING.
    pub ready: Option<oneshot::Sender<()>>,
}

impl ServerConfig {
    /// A server on `data_dir` with every other setting at its default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self::from_settings(Settings::for_data_dir(data_dir))
    }

    pub fn from_settings(settings: Settings) -> Self {
        Self {
            settings,
            clock: Clock::new(),
            metrics_listener: None,
            http_listener: None,
            ready: None,
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
    /// A TLS or auth file that cannot be read or used; the text names it.
    #[error("{0}")]
    Security(String),
}

/// Runs Spool on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServerConfig,
) -> Result<(), ServerError> {
    let settings = &config.settings;
    net::raise_open_files_limit(settings.max_connections());
    let metrics = Arc::new(Metrics::default());
    // Before storage: a wrong TLS or auth file stops the server before it opens anything.
    let security = Security::load(settings).map_err(ServerError::Security)?;
    metrics.set_storage_backend(settings.storage_backend());
    let opener = match &settings.postgres_url {
        // The embedded database is opened before serving: a data directory that cannot be
        // used stops the process at once, before anything listens.
        None => {
            let data_dir = settings.data_dir();
            let max_database_bytes = settings.max_database_bytes;
            let storage_metrics = metrics.clone();
            let storage = tokio::task::spawn_blocking(move || {
                SqliteStorage::open(&data_dir, max_database_bytes, storage_metrics)
            })
            .await
            .map_err(|e| StorageError::Io(format!("storage open task failed: {e}")))??;
            tracing::info!(backend = "sqlite", data_dir = %settings.data_dir().display(), "storage");
            Opener::Ready(Arc::new(storage))
        }
        // PostgreSQL may come later than the server (it is another process, often another
        // machine): the server serves at once, NOT_SERVING, and connects in the background.
        Some(url) => {
            let options = ConnectOptions::parse(url, settings.postgres_password_file.as_deref())
                .map_err(|e| StorageError::Refused(e.to_string()))?;
            let schema = settings.postgres_schema();
            tracing::info!(
                backend = "postgres",
                target = %postgres::describe_target(&options, &schema),
                "storage"
            );
            if let Some(data_dir) = &settings.data_dir {
                tracing::info!(
                    data_dir = %data_dir.display(),
                    "data_dir is not used: the queues are kept in PostgreSQL"
                );
            }
            let listen_port = listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
            let cluster = settings
                .advertise_address
                .as_deref()
                .map(|address| ClusterSettings {
                    advertise_address: crate::config::advertised(address, listen_port),
                    member_ttl: settings.member_ttl(),
                });
            Opener::Postgres {
                options: Box::new(options),
                schema,
                cluster,
            }
        }
    };

    // Serve at once, so probes get answers while the queues are recovered: the queue service
    // is NOT_SERVING (and its calls UNAVAILABLE) until the registry is in place.
    let registry: Arc<OnceLock<Arc<Registry>>> = Arc::default();
    let cluster: Arc<OnceLock<Arc<Cluster>>> = Arc::default();
    let cluster_controls: Arc<Mutex<Option<DriverControls>>> = Arc::default();
    let forward_key = ForwardKeySlot::default();
    let storage_slot: Arc<Mutex<Option<Arc<dyn Storage>>>> = Arc::default();
    let (health, health_service) = health::health_service();
    health.set_not_serving::<QueueServiceServer<Routed>>();
    let stopping = CancellationToken::new();
    // Told when storage can no longer be trusted after recovery (PostgreSQL's lock lost).
    let (storage_lost, mut storage_lost_rx) = tokio::sync::mpsc::unbounded_channel();
    let recovery = tokio::spawn(recover(
        Recovery {
            opener,
            metrics: metrics.clone(),
            clock: config.clock.clone(),
            max_queues: settings.max_queues(),
            body_cache_bytes: settings.body_cache_bytes(),
            window: settings.window_limits(),
            stopping: stopping.clone(),
            storage_lost,
            cluster: cluster.clone(),
            cluster_controls: cluster_controls.clone(),
            forward_key: forward_key.clone(),
        },
        storage_slot.clone(),
        registry.clone(),
        config.ready,
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

    security.watch(&stopping, &metrics);
    // Observed outside the size limit, so it measures and logs the rewritten TOO_LARGE; the
    // auth layer between them, so a call is authenticated before its body is read, and its
    // refusals are measured too. Health stays open (probes); reflection needs a credential.
    let authenticated =
        |service| Authenticated::new(service, security.authenticator(), metrics.clone());
    let receive_limits = ReceiveLimits::new(
        settings.max_waiting_receives(),
        settings.max_response_buffer_bytes(),
        settings.stream_stall_timeout(),
        metrics.clone(),
    );
    let disk = Arc::new(DiskGuard::new(metrics.clone()));
    // The embedded database's disk is the server's to watch; PostgreSQL's is the database's
    // (its operator's monitoring, and its own errors, which fail commits as UNAVAILABLE).
    if settings.postgres_url.is_none() {
        tokio::spawn(disk.clone().watch(
            DiskLimits {
                dir: settings.data_dir(),
                min_free_bytes: settings.min_free_disk_bytes,
                max_database_bytes: settings.max_database_bytes,
            },
            stopping.clone(),
        ));
    }
    // One span per call for OpenTelemetry (src/otel), outside everything else so it sees the
    // call's final status and its log lines carry the trace id.
    let (exporter, export_task) = match &settings.otlp_endpoint {
        Some(url) => {
            let endpoint =
                crate::otel::export::Endpoint::parse(url).map_err(ServerError::Security)?;
            tracing::info!(endpoint = %url, "exporting a span per call (OTLP/HTTP, JSON)");
            let (exporter, task) = crate::otel::export::Exporter::start(endpoint);
            (Some(exporter), Some(task))
        }
        None => (None, None),
    };
    // One implementation for both ports: the HTTP APIs (src/http) call it in process, routed
    // (cluster mode: forwarded to a queue's owner) as gRPC calls are.
    let service_impl = Arc::new(Routed::new(
        QueueServiceImpl::new(registry.clone(), stopping.clone(), receive_limits, disk),
        cluster.clone(),
        registry.clone(),
    ));
    let queue_service = crate::otel::Traced::new(
        Observed::new(
            // Replicas forward calls to each other asserting their callers (src/cluster).
            authenticated(RequestSizeLimit::new(
                QueueServiceServer::from_arc(service_impl.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES)
                    .max_encoding_message_size(MAX_REQUEST_BYTES),
                settings.request_body_timeout(),
                metrics.clone(),
            ))
            .with_forwarded(forward_key.clone()),
            metrics.clone(),
        ),
        exporter,
    );

    // Decide → tell: readiness drops first, so load balancers stop sending new calls.
    let trigger = stopping.clone();
    let stop_health = health.clone();
    let shutdown_grace = settings.shutdown_grace();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        // Cluster mode: the queues move to the other replicas first, this one still serving
        // (and forwarding) meanwhile, so clients see at most a retryable UNAVAILABLE.
        let controls = cluster_controls
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        health.set_not_serving::<QueueServiceServer<Routed>>();
        if let Some(controls) = controls {
            controls.leaving.cancel();
            if tokio::time::timeout(shutdown_grace, controls.left)
                .await
                .is_err()
            {
                tracing::warn!(grace = ?shutdown_grace, "queues still being handed off after the shutdown grace; stopping anyway");
            }
        }
        trigger.cancel();
    });

    let local_addr = listener.local_addr().ok();
    tracing::info!(
        addr = %local_addr.map(|a| a.to_string()).unwrap_or_default(),
        backend = settings.storage_backend(),
        tls = security.tls.is_some(),
        auth = security.auth.is_some(),
        "listening"
    );
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
            settings.metrics_max_connections(),
            stopping.clone(),
        ));
    }
    if let Some(http_listener) = config.http_listener {
        tracing::info!(
            addr = %http_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "serving the SQS and CMQ HTTP APIs"
        );
        let edge = crate::http::Edge::new(
            service_impl.clone(),
            security.authenticator(),
            security.tls.is_some(),
            settings.request_body_timeout(),
        )
        .observed_by(metrics.clone());
        tokio::spawn(crate::http::serve(
            http_listener,
            crate::http::HttpPort {
                edge: Arc::new(edge),
                limits: ConnectionLimits {
                    max_connections: settings.max_connections(),
                    handshake_timeout: settings.handshake_timeout(),
                },
                counts: metrics.connections.clone(),
                tls: security.tls.as_ref().map(|tls| tls.configs.clone()),
                stopping: stopping.clone(),
            },
        ));
    }
    let mut builder = Server::builder()
        .max_concurrent_streams(settings.max_concurrent_streams())
        // Stated rather than left to hyper's defaults, so an upgrade cannot loosen them (the
        // tests in tests/it/abuse.rs hold them): rapid reset is answered with GOAWAY after
        // this many streams reset before the server took them (CVE-2023-44487), and a header
        // block may decode to at most this much (HPACK bombs, CONTINUATION floods).
        .http2_max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE)
        .http2_keepalive_interval(settings.http2_keepalive_interval())
        .http2_keepalive_timeout(settings.http2_keepalive_timeout());
    if let Some(age) = settings.max_connection_age() {
        builder = builder.max_connection_age(age);
    }
    // gRPC-Web, CORS and the console (src/web) in front of every service; HTTP/1.1 accepted
    // for them, on the same listener (so TLS and the connection limits hold for them too).
    let web = crate::web::WebLayer::new(
        settings.cors_origins().map_err(ServerError::Security)?,
        settings.console(),
        security.tls.is_some(),
        metrics.clone(),
    );
    let router = builder
        .accept_http1(true)
        .layer(web)
        .add_service(health_service)
        .add_service(Authenticated::new(
            reflection_v1,
            security.authenticator(),
            metrics.clone(),
        ))
        .add_service(Authenticated::new(
            reflection_v1alpha,
            security.authenticator(),
            metrics.clone(),
        ))
        .add_service(queue_service);
    // One accept loop for plaintext and TLS: the connection cap, the handshake and preface
    // timeout, and the back-off on accept errors hold for both (`net`).
    let limits = ConnectionLimits {
        max_connections: settings.max_connections(),
        handshake_timeout: settings.handshake_timeout(),
    };
    let counts = metrics.connections.clone();
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &security.tls {
            None => {
                let incoming = net::incoming(listener, limits, counts, stopping.clone(), {
                    |stream, _| std::future::ready(Some(stream))
                });
                Box::pin(
                    router
                        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned()),
                )
            }
            Some(tls) => {
                let configs = tls.configs.clone();
                let incoming = net::incoming(
                    listener,
                    limits,
                    counts,
                    stopping.clone(),
                    move |stream, peer| crate::tls::handshake(&configs, stream, peer),
                );
                Box::pin(
                    router
                        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned()),
                )
            }
        };
    tokio::pin!(serve);
    let shutdown_grace = settings.shutdown_grace();
    let grace_over = async {
        stopping.cancelled().await;
        tokio::time::sleep(shutdown_grace).await;
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
                    grace = ?shutdown_grace,
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
                    stop_health.set_not_serving::<QueueServiceServer<Routed>>();
                    stopping.cancel();
                }
            }
            Some(error) = storage_lost_rx.recv() => {
                // Serving on would risk two writers on one schema: stop instead.
                tracing::error!(%error, "storage lost; stopping");
                recovery_error.get_or_insert(error);
                stop_health.set_not_serving::<QueueServiceServer<Routed>>();
                stopping.cancel();
            }
        }
    }

    // Wait: everything acknowledged is committed already; this writes the lazy bookkeeping
    // (receive records the queues still hold, then whatever the writer has queued).
    if let Some(registry) = registry.get() {
        registry.flush_all().await;
    }
    let storage = storage_slot.lock().ok().and_then(|mut slot| slot.take());
    if let Some(storage) = storage {
        let (closed, flushed) = oneshot::channel();
        storage.close(closed);
        let _ = flushed.await;
    }
    // The calls are over: the last spans go out.
    if let Some(export_task) = export_task {
        export_task.close().await;
    }
    if let Some(error) = recovery_error {
        return Err(error.into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// How to get the storage: open already, or PostgreSQL to connect to.
enum Opener {
    Ready(Arc<dyn Storage>),
    Postgres {
        options: Box<ConnectOptions>,
        schema: String,
        /// Set in cluster mode.
        cluster: Option<ClusterSettings>,
    },
}

/// What the recovery task needs besides the slots it fills.
struct Recovery {
    opener: Opener,
    metrics: Arc<Metrics>,
    clock: Clock,
    max_queues: usize,
    body_cache_bytes: usize,
    /// `--queue-window` and `--total-window` (the embedded and single-server PostgreSQL
    /// modes; a cluster's replicas hold their queues whole, see `cluster`).
    window: crate::queue::window::WindowLimits,
    /// Ends the attempts to reach PostgreSQL when the server stops first.
    stopping: CancellationToken,
    storage_lost: tokio::sync::mpsc::UnboundedSender<StorageError>,
    /// Cluster mode: filled once this replica has joined.
    cluster: Arc<OnceLock<Arc<Cluster>>>,
    cluster_controls: Arc<Mutex<Option<DriverControls>>>,
    /// Cluster mode: the key the auth layer checks forwarded callers with, once joined.
    forward_key: ForwardKeySlot,
}

/// Opens the storage (for PostgreSQL, trying until it answers), reads every queue back from
/// it, then opens the queue service (health SERVING).
async fn recover(
    recovery: Recovery,
    storage_slot: Arc<Mutex<Option<Arc<dyn Storage>>>>,
    slot: Arc<OnceLock<Arc<Registry>>>,
    ready: Option<oneshot::Sender<()>>,
    health: HealthReporter,
) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let mut backoff = postgres::FIRST_BACKOFF;
    if let Opener::Postgres {
        options,
        schema,
        cluster: Some(cluster),
    } = &recovery.opener
    {
        return join_cluster(
            &recovery,
            options,
            schema,
            cluster,
            storage_slot,
            slot,
            ready,
            health,
        )
        .await;
    }
    let registry = loop {
        let storage = match &recovery.opener {
            Opener::Ready(storage) => storage.clone(),
            Opener::Postgres {
                options, schema, ..
            } => {
                let opened = tokio::select! {
                    opened = PostgresStorage::open(
                        (**options).clone(),
                        schema.clone(),
                        recovery.metrics.clone(),
                        None,
                    ) => opened,
                    () = recovery.stopping.cancelled() => return Ok(()),
                };
                match opened {
                    Ok(storage) => {
                        let lost = storage.lost();
                        let storage_lost = recovery.storage_lost.clone();
                        tokio::spawn(async move {
                            let _ = storage_lost.send(lost.wait().await);
                        });
                        tracing::info!(target = %postgres::describe_target(options, schema), "connected to PostgreSQL; the schema's lock is held");
                        Arc::new(storage)
                    }
                    Err(StorageError::Io(error)) => {
                        // Once per backoff step, with the reason.
                        tracing::warn!(%error, retry_in = ?backoff, "PostgreSQL is unreachable; the queue service stays NOT_SERVING");
                        if wait_or_stop(&recovery.stopping, &mut backoff).await {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        if let Ok(mut stored) = storage_slot.lock() {
            *stored = Some(storage.clone());
        }
        match Registry::recover(
            storage.clone(),
            recovery.clock.clone(),
            recovery.max_queues,
            recovery.body_cache_bytes,
            recovery.window.clone(),
        )
        .await
        {
            Ok(registry) => break registry,
            // PostgreSQL went away during recovery: start over with a new connection.
            Err(StorageError::Io(error)) if matches!(recovery.opener, Opener::Postgres { .. }) => {
                tracing::warn!(%error, retry_in = ?backoff, "recovery from PostgreSQL failed");
                let (closed, flushed) = oneshot::channel();
                storage.close(closed);
                let _ = flushed.await;
                if let Ok(mut stored) = storage_slot.lock() {
                    *stored = None;
                }
                if wait_or_stop(&recovery.stopping, &mut backoff).await {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    };
    let queues = registry.len();
    // Only this task fills the slot, once.
    let _ = slot.set(Arc::new(registry));
    health.set_serving::<QueueServiceServer<Routed>>();
    tracing::info!(queues, elapsed = ?started.elapsed(), "recovered; serving");
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    Ok(())
}

/// Cluster mode's start: joins (trying until PostgreSQL answers), then starts the heartbeat
/// and ownership task, which turns the queue service SERVING once this replica is a member.
#[allow(clippy::too_many_arguments)]
async fn join_cluster(
    recovery: &Recovery,
    options: &ConnectOptions,
    schema: &str,
    settings: &ClusterSettings,
    storage_slot: Arc<Mutex<Option<Arc<dyn Storage>>>>,
    slot: Arc<OnceLock<Arc<Registry>>>,
    ready: Option<oneshot::Sender<()>>,
    health: HealthReporter,
) -> Result<(), StorageError> {
    let mut backoff = postgres::FIRST_BACKOFF;
    let (joined, controls) = loop {
        let joining = join(
            options,
            schema,
            settings,
            recovery.metrics.clone(),
            QueueSettings {
                clock: recovery.clock.clone(),
                max_queues: recovery.max_queues,
                body_cache_bytes: recovery.body_cache_bytes,
            },
            health.clone(),
        );
        let joined = tokio::select! {
            joined = joining => joined,
            () = recovery.stopping.cancelled() => return Ok(()),
        };
        match joined {
            Ok(joined) => break joined,
            Err(StorageError::Io(error)) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot join the cluster yet; the queue service stays NOT_SERVING");
                if wait_or_stop(&recovery.stopping, &mut backoff).await {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    };
    let lost = joined.storage.lost();
    let storage_lost = recovery.storage_lost.clone();
    tokio::spawn(async move {
        let _ = storage_lost.send(lost.wait().await);
    });
    if let Ok(mut stored) = storage_slot.lock() {
        *stored = Some(joined.storage.clone());
    }
    let _ = recovery
        .forward_key
        .set(joined.cluster.forward_key().clone());
    tokio::spawn(crate::cluster::adoption::tell_owners(
        joined.cluster.clone(),
        joined.moved,
    ));
    let _ = recovery.cluster.set(joined.cluster);
    let _ = slot.set(joined.registry);
    if let Ok(mut stored) = recovery.cluster_controls.lock() {
        *stored = Some(controls);
    }
    // The driver says ready once this replica is a member and SERVING.
    let mut driver = joined.driver;
    driver.ready = ready;
    tokio::spawn(driver.run());
    Ok(())
}

/// Sleeps for `backoff` (then doubles it, up to the longest); true if the server stops first.
async fn wait_or_stop(stopping: &CancellationToken, backoff: &mut std::time::Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {
            *backoff = (*backoff * 2).min(postgres::MAX_BACKOFF);
            false
        }
        () = stopping.cancelled() => true,
    }
}
