//! A replica's start in cluster mode: storage opened with the fence, its own id ranges
//! reserved, no queue of its own yet (they come with the ownership rounds), the heartbeat task
//! ready to run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::adoption::Adoptions;
use super::membership::Membership;
use super::ownership::Ownership;
use super::{Cluster, Driver};
use crate::auth::forwarded::ForwardKey;
use crate::clock::Clock;
use crate::grpc::health::HealthReporter;
use crate::registry::Registry;
use crate::storage::postgres::cluster_tables::{forward_secret, reserve_id_blocks};
use crate::storage::postgres::fence::Fence;
use crate::storage::postgres::{ConnectOptions, PostgresStorage};
use crate::storage::{CommitObserver, Storage, StorageError};

/// What cluster mode takes from the settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// host:port the other replicas forward calls to.
    pub advertise_address: String,
    pub member_ttl: Duration,
}

/// What the server needs, once joined.
pub struct Joined {
    pub storage: Arc<PostgresStorage>,
    pub registry: Arc<Registry>,
    pub cluster: Arc<Cluster>,
    /// To be spawned: heartbeats and ownership rounds until shutdown.
    pub driver: Driver,
    /// The names of queues messages were moved into, for `adoption::tell_owners`.
    pub moved: mpsc::UnboundedReceiver<String>,
}

/// What the registry is made with.
pub struct QueueSettings {
    pub clock: Clock,
    pub max_queues: usize,
    pub body_cache_bytes: usize,
}

/// Opens the storage as a member of the cluster and prepares this replica's part.
pub async fn join(
    options: &ConnectOptions,
    schema: &str,
    settings: &ClusterSettings,
    metrics: Arc<dyn CommitObserver>,
    queues: QueueSettings,
    health: HealthReporter,
) -> Result<(Joined, DriverControls), StorageError> {
    let membership = Arc::new(Membership::new(
        settings.advertise_address.clone(),
        settings.member_ttl,
    ));
    let (lost_sender, lost) = mpsc::unbounded_channel();
    let fence = Arc::new(Fence::new(membership.id().to_string(), lost_sender));
    let storage = Arc::new(
        PostgresStorage::open(
            options.clone(),
            schema.to_string(),
            metrics,
            Some(fence.clone()),
        )
        .await?,
    );
    let client = options.connect().await.map_err(|e| {
        StorageError::Io(format!(
            "cannot connect to PostgreSQL at {}: {e}",
            options.describe()
        ))
    })?;
    let blocks = reserve_id_blocks(&client, schema).await?;
    let forward_key = Arc::new(ForwardKey::new(
        forward_secret(&client, schema).await?,
        settings.advertise_address.clone(),
    ));
    drop(client);
    fence.set_id_ends(blocks.queue_ids.1, blocks.message_ids.1);
    // The receipt key and the queues' rows; the queues themselves are taken over one by one.
    let reader = storage.clone();
    let mut recovered = tokio::task::spawn_blocking(move || reader.recover())
        .await
        .map_err(|e| StorageError::Io(format!("recovery task failed: {e}")))??;
    recovered.queues.clear();
    recovered.next_queue_id = blocks.queue_ids.0;
    recovered.next_message_id = blocks.message_ids.0;
    let registry = Arc::new(Registry::start_replica(
        storage.clone(),
        queues.clock.clone(),
        queues.max_queues,
        queues.body_cache_bytes,
        // A takeover reads a queue whole (see `ownership`): no window in cluster mode yet.
        crate::queue::window::WindowLimits::unbounded(),
        recovered,
    ));
    let adoptions = Arc::new(Adoptions::new(
        registry.clone(),
        fence.clone(),
        options.clone(),
        schema.to_string(),
    ));
    let ownership = Arc::new(Ownership::new(
        membership.clone(),
        registry.clone(),
        storage.clone(),
        fence,
        adoptions.clone(),
        queues.clock,
        schema.to_string(),
        options.clone(),
    ));
    let (moved_into, moved) = mpsc::unbounded_channel();
    registry.enter_cluster_mode(ownership.clone(), ownership.clone(), moved_into);
    tracing::info!(
        member = membership.id(),
        address = %settings.advertise_address,
        ttl = ?settings.member_ttl,
        "joining the cluster"
    );
    let leaving = tokio_util::sync::CancellationToken::new();
    let (left_sender, left) = tokio::sync::oneshot::channel();
    let driver = Driver {
        membership: membership.clone(),
        ownership: ownership.clone(),
        adoptions: adoptions.clone(),
        options: options.clone(),
        schema: schema.to_string(),
        lost,
        health,
        stopping: leaving.clone(),
        left: left_sender,
        ready: None,
    };
    Ok((
        Joined {
            storage,
            registry,
            cluster: Arc::new(Cluster::new(membership, ownership, forward_key, adoptions)),
            driver,
            moved,
        },
        DriverControls { leaving, left },
    ))
}

/// How the server ends the replica's part at shutdown.
pub struct DriverControls {
    /// Cancelled at shutdown: the driver hands every queue off and leaves.
    pub leaving: tokio_util::sync::CancellationToken,
    /// Told once it has.
    pub left: tokio::sync::oneshot::Receiver<()>,
}
