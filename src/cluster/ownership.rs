//! Which queues this replica owns, and their moves: takeover, hand-off, loss.
//!
//! PostgreSQL is the only arbiter. A queue's row names its owner and the owner's epoch; every
//! change of owner is one `UPDATE` that raises the epoch, guarded by the epoch it saw (so two
//! replicas cannot both win), and it waits for the old owner's write transactions in flight,
//! which hold the row `FOR SHARE` (see `storage::postgres::fence`). After that, the old owner
//! can commit nothing more for the queue, and the new one reads its state from PostgreSQL.
//!
//! Each round ([`Ownership::reconcile`], after every heartbeat) reads every queue's owner, which
//! is also the directory calls are routed by, and for each queue:
//! - placed here (rendezvous over the live members not leaving) and its owner released it, is
//!   dead, or is this replica's former self: take it over;
//! - owned here but placed elsewhere (a member joined, or this one is leaving): hand it off:
//!   stop the actor after it answered what it had in flight, then release the row;
//! - owned here by the actor but no longer by the row (another replica took it while this one
//!   was cut off or paused): stop the actor, without writing anything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio_postgres::Client;

use super::adoption::Adoptions;
use super::membership::Membership;
use super::placement::place;
use crate::clock::Clock;
use crate::error::QueueError;
use crate::queue::QueueHandle;
use crate::queue::messages::MessageTable;
use crate::registry::ClusterQueues;
use crate::registry::Registry;
use crate::storage::QueueRecord;
use crate::storage::postgres::PostgresStorage;
use crate::storage::postgres::cluster_tables::forget_recovered;
use crate::storage::postgres::fence::Fence;
use crate::storage::postgres::schema::{QUEUE_COLUMNS, queue_record_at, quoted, read_topics};
use crate::topic::{ClusterTopics, StoredTopics};

/// Longest a directory miss waits for PostgreSQL before the call goes by placement alone.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A queue as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub id: u64,
    /// None while the queue is handed off.
    pub owner: Option<String>,
    pub epoch: i64,
}

pub struct Ownership {
    membership: Arc<Membership>,
    registry: Arc<Registry>,
    storage: Arc<PostgresStorage>,
    fence: Arc<Fence>,
    /// Takes in messages other replicas moved into the queues here.
    adoptions: Arc<Adoptions>,
    clock: Clock,
    schema: String,
    /// Every queue's owner as of the last round: where calls for it are routed.
    directory: RwLock<HashMap<String, Owned>>,
    /// A connection for [`Self::look_up`]: queues created since the last round.
    lookups: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// Queues whose actor was stopped without a hand-off (lost, or the lease ended) and has
    /// not finished yet: none is taken over again until it has, so that no write of its
    /// former life is handed to the writer under the new epoch (see `fence::Stamp`).
    stopping: Arc<std::sync::Mutex<HashSet<u64>>>,
    options: crate::storage::postgres::ConnectOptions,
}

impl Ownership {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        membership: Arc<Membership>,
        registry: Arc<Registry>,
        storage: Arc<PostgresStorage>,
        fence: Arc<Fence>,
        adoptions: Arc<Adoptions>,
        clock: Clock,
        schema: String,
        options: crate::storage::postgres::ConnectOptions,
    ) -> Self {
        Self {
            adoptions,
            lookups: tokio::sync::Mutex::default(),
            stopping: Arc::default(),
            options,
            membership,
            registry,
            storage,
            fence,
            clock,
            schema,
            directory: RwLock::default(),
        }
    }

    /// The queue `name` as of the last round; None if it did not exist then.
    pub fn owner_of(&self, name: &str) -> Option<Owned> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The queue `name` as PostgreSQL has it now, for a name the last round did not see (a
    /// queue created since, through another replica); None if it does not exist, or if
    /// PostgreSQL cannot tell (the caller then goes by placement).
    pub async fn look_up(&self, name: &str) -> Option<Owned> {
        let client = self.lookup_client().await?;
        let q = quoted(&self.schema);
        let row = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            client.query_opt(
                &format!("SELECT id, owner, owner_epoch FROM {q}.queues WHERE name = $1"),
                &[&name],
            ),
        )
        .await
        .ok()?
        .ok()??;
        let owned = Owned {
            id: row.try_get::<_, i64>(0).ok()? as u64,
            owner: row.try_get(1).ok()?,
            epoch: row.try_get(2).ok()?,
        };
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), owned.clone());
        Some(owned)
    }

    /// The connection for lookups, connected again if it was lost; None if PostgreSQL does not
    /// answer in time.
    async fn lookup_client(&self) -> Option<Arc<Client>> {
        let mut slot = self.lookups.lock().await;
        match slot.as_ref() {
            Some(client) if !client.is_closed() => Some(client.clone()),
            _ => {
                let connected = tokio::time::timeout(LOOKUP_TIMEOUT, self.options.connect())
                    .await
                    .ok()?
                    .ok()?;
                let client = Arc::new(connected);
                *slot = Some(client.clone());
                Some(client)
            }
        }
    }

    fn me(&self) -> &str {
        self.membership.id()
    }

    /// One round: reads every queue's owner, then takes over, hands off or drops queues as
    /// their placement and their rows say.
    pub async fn reconcile(&self, client: &Client) -> Result<(), String> {
        let q = quoted(&self.schema);
        let rows = client
            .query(
                &format!("SELECT id, name, owner, owner_epoch FROM {q}.queues"),
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut directory = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0).map_err(|e| e.to_string())?;
            let name: String = row.try_get(1).map_err(|e| e.to_string())?;
            directory.insert(
                name,
                Owned {
                    id: id as u64,
                    owner: row.try_get(2).map_err(|e| e.to_string())?,
                    epoch: row.try_get(3).map_err(|e| e.to_string())?,
                },
            );
        }
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = directory.clone();
        if !self.membership.lease_valid() {
            return Ok(());
        }
        // Queues served here that no longer exist (deleted through another replica while the
        // directory was stale) or whose row names another owner: stop them.
        for name in self.registry.names() {
            let Some(owned) = directory.get(&name) else {
                // A queue created here a moment ago may not be in this read yet; its fence
                // entry says it is ours.
                continue;
            };
            let ours = owned.owner.as_deref() == Some(self.me())
                && self.fence.held(owned.id) == Some(owned.epoch);
            if !ours {
                self.drop_local(&name, owned.id).await;
            }
        }
        let placement = self.membership.placement();
        for (name, owned) in &directory {
            let target = place(name, placement.iter().map(String::as_str));
            let local = self.registry.contains(name);
            if local {
                if target.is_some_and(|target| target != self.me()) {
                    self.hand_off(client, name, owned.id).await;
                }
                continue;
            }
            if target != Some(self.me())
                || self.fence.held(owned.id).is_some()
                || self.is_stopping(owned.id)
            {
                continue;
            }
            let claimable = match owned.owner.as_deref() {
                None => true,
                // A former life of this replica's actor (lost while cut off): take it again,
                // with a new epoch.
                Some(owner) if owner == self.me() => true,
                Some(owner) => self.membership.member(owner).is_none(),
            };
            if claimable {
                self.take_over(client, name, owned).await;
            }
        }
        Ok(())
    }

    /// Claims the queue with a new epoch (waiting for its old owner's transactions in flight),
    /// recovers its state from PostgreSQL, and starts its actor here.
    async fn take_over(&self, client: &Client, name: &str, seen: &Owned) {
        let started = Instant::now();
        let q = quoted(&self.schema);
        let claimed = client
            .query_opt(
                &format!(
                    "UPDATE {q}.queues SET owner = $3, owner_epoch = owner_epoch + 1
                      WHERE id = $1 AND owner_epoch = $2
                  RETURNING owner_epoch, {QUEUE_COLUMNS}"
                ),
                &[&(seen.id as i64), &seen.epoch, &self.me()],
            )
            .await;
        let row = match claimed {
            Ok(Some(row)) => row,
            // Another replica moved it first; the next round sees where.
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(queue = name, %error, "cannot claim a queue; trying again next round");
                return;
            }
        };
        let (epoch, record) = match (row.try_get::<_, i64>(0), queue_record_at(&row, 1)) {
            (Ok(epoch), Ok(record)) => (epoch, record),
            (Err(error), _) => {
                tracing::error!(queue = name, %error, "a claimed queue's row cannot be read");
                return;
            }
            (_, Err(error)) => {
                tracing::error!(queue = name, %error, "a claimed queue's row cannot be read");
                return;
            }
        };
        self.fence.hold(record.id, epoch);
        let now = self.clock.now_ms();
        let mut table = MessageTable::new(record.id);
        let mut messages = 0u64;
        // Their ids, for the messages moved in by other replicas that are pending adoption:
        // those recovered here are in the table already (see `cluster::adoption`).
        let mut recovered_ids = Vec::new();
        let recovered = self
            .storage
            .recover_queue(record.id, &mut |stored| {
                messages += 1;
                recovered_ids.push(stored.id);
                table.recover(&stored, now);
            })
            .await;
        if let Err(error) = recovered {
            // Still ours in the row: the next round takes it again, with a new epoch.
            self.fence.release(record.id);
            tracing::warn!(queue = name, %error, "cannot recover a claimed queue; trying again next round");
            return;
        }
        recovered_ids.sort_unstable();
        if let Err(error) = forget_recovered(client, &self.schema, record.id, &recovered_ids).await
        {
            self.fence.release(record.id);
            tracing::warn!(queue = name, %error, "cannot read a claimed queue's pending adoptions; trying again next round");
            return;
        }
        drop(recovered_ids);
        // The queue's deduplication window holds across owners as across restarts: the ids
        // accepted under earlier epochs are read with the queue (expired ones are dropped by
        // the actor).
        let ids = match client
            .query(
                &format!(
                    "SELECT deduplication_id, message_id, accepted_ms
                       FROM {q}.deduplication WHERE queue_id = $1"
                ),
                &[&(record.id as i64)],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter_map(|row| {
                    Some((
                        row.try_get::<_, String>(0).ok()?,
                        row.try_get::<_, i64>(1).ok()? as u64,
                        row.try_get::<_, i64>(2).ok()?,
                    ))
                })
                .collect(),
            Err(error) => {
                self.fence.release(record.id);
                tracing::warn!(queue = name, %error, "cannot read a claimed queue's deduplication ids; trying again next round");
                return;
            }
        };
        if self.registry.adopt(record, table, ids).await {
            tracing::info!(
                queue = name,
                epoch,
                messages,
                elapsed = ?started.elapsed(),
                "took the queue over"
            );
            // Moved in after the recovery read the rows.
            self.adoptions.drain(name).await;
        } else {
            self.fence.release(seen.id);
        }
    }

    /// Moves a queue away: its actor answers what it has in flight and stops, then the row is
    /// released (owner NULL, epoch + 1) for the queue's new place to take it.
    async fn hand_off(&self, client: &Client, name: &str, queue_id: u64) {
        let started = Instant::now();
        let Some(handle) = self.registry.take(name).await else {
            return;
        };
        handle.hand_off().await;
        let Some(epoch) = self.fence.release(queue_id) else {
            return;
        };
        let q = quoted(&self.schema);
        let released = client
            .execute(
                &format!(
                    "UPDATE {q}.queues SET owner = NULL, owner_epoch = owner_epoch + 1
                      WHERE id = $1 AND owner_epoch = $2"
                ),
                &[&(queue_id as i64), &epoch],
            )
            .await;
        match released {
            Ok(_) => {
                tracing::info!(queue = name, elapsed = ?started.elapsed(), "handed the queue off")
            }
            // The row still names this replica: whoever the queue is placed on takes it once
            // this member is dead or gone; nothing is lost meanwhile, only time.
            Err(error) => tracing::warn!(queue = name, %error, "cannot release a queue handed off"),
        }
    }

    /// Stops serving a queue this replica no longer owns (or can no longer be sure it owns),
    /// without writing anything: any write of it would be fenced off anyway.
    async fn drop_local(&self, name: &str, queue_id: u64) {
        self.fence.release(queue_id);
        if let Some(handle) = self.registry.take(name).await {
            tracing::warn!(
                queue = name,
                "no longer the queue's owner; stopped serving it"
            );
            // Its commits in flight fail on the fence; nobody waits for them here.
            self.stop_in_background(handle);
        }
    }

    /// Stops a queue's actor without waiting for it (see `stopping`).
    fn stop_in_background(&self, handle: QueueHandle) {
        let queue_id = handle.id();
        let stopping = self.stopping.clone();
        lock(&stopping).insert(queue_id);
        tokio::spawn(async move {
            handle.hand_off().await;
            lock(&stopping).remove(&queue_id);
        });
    }

    fn is_stopping(&self, queue_id: u64) -> bool {
        lock(&self.stopping).contains(&queue_id)
    }

    /// A write of `queue_id` was fenced off: stop its actor now rather than at the next round.
    pub async fn lost(&self, queue_id: u64) {
        let name = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, owned)| owned.id == queue_id)
            .map(|(name, _)| name.clone());
        if let Some(name) = name {
            self.drop_local(&name, queue_id).await;
        }
    }

    /// Stops serving every queue (the lease ended: their epochs are assumed lost).
    pub async fn drop_all(&self) {
        let ids: HashMap<String, u64> = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, owned)| (name.clone(), owned.id))
            .collect();
        for name in self.registry.names() {
            let queue_id = ids.get(&name).copied();
            if let Some(queue_id) = queue_id {
                self.drop_local(&name, queue_id).await;
            } else if let Some(handle) = self.registry.take(&name).await {
                self.stop_in_background(handle);
            }
        }
        for (queue_id, _) in self.fence.all_held() {
            self.fence.release(queue_id);
        }
    }

    /// Graceful shutdown: hands every queue off (this member is marked leaving already, so no
    /// replica places a queue here meanwhile).
    pub async fn hand_off_all(&self, client: &Client) {
        let held: HashMap<u64, i64> = self.fence.all_held().into_iter().collect();
        let ids: Vec<(String, u64)> = self
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, owned)| held.contains_key(&owned.id))
            .map(|(name, owned)| (name.clone(), owned.id))
            .collect();
        for (name, queue_id) in ids {
            self.hand_off(client, &name, queue_id).await;
        }
    }
}

/// The registry's questions about queues other replicas may serve, answered from the
/// directory or PostgreSQL.
#[tonic::async_trait]
impl ClusterQueues for Ownership {
    async fn queue_id(&self, name: &str) -> Result<Option<u64>, QueueError> {
        if let Some(owned) = self.owner_of(name) {
            return Ok(Some(owned.id));
        }
        Ok(self.look_up(name).await.map(|owned| owned.id))
    }

    async fn dead_letter_sources(&self, name: &str) -> Result<Vec<String>, QueueError> {
        let unavailable = |what: String| {
            QueueError::Storage(format!(
                "cannot read which queues dead-letter into {name:?}: {what}; retry the call"
            ))
        };
        let client = self
            .lookup_client()
            .await
            .ok_or_else(|| unavailable("PostgreSQL does not answer".into()))?;
        let q = quoted(&self.schema);
        let rows = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            client.query(
                &format!("SELECT name FROM {q}.queues WHERE dead_letter_queue = $1 ORDER BY name"),
                &[&name],
            ),
        )
        .await
        .map_err(|_| unavailable("PostgreSQL took too long".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(|e| unavailable(e.to_string())))
            .collect()
    }
}

/// What the topics read from PostgreSQL in cluster mode (see `topic::ClusterTopics`).
#[tonic::async_trait]
impl ClusterTopics for Ownership {
    async fn topics(&self, name: Option<&str>) -> Result<StoredTopics, QueueError> {
        let client = self.lookup_client().await.ok_or_else(|| {
            unavailable(
                "cannot read the topics",
                "PostgreSQL does not answer".into(),
            )
        })?;
        let (topics, subscriptions, topic_totals, subscription_totals) =
            tokio::time::timeout(LOOKUP_TIMEOUT, read_topics(&*client, &self.schema, name))
                .await
                .map_err(|_| {
                    unavailable("cannot read the topics", "PostgreSQL took too long".into())
                })?
                .map_err(|error| unavailable("cannot read the topics", error))?;
        Ok(StoredTopics {
            topics,
            subscriptions,
            topic_totals,
            subscription_totals,
        })
    }

    async fn queue(&self, queue_id: u64) -> Result<Option<(QueueRecord, u64)>, QueueError> {
        let what = "cannot read a subscribed queue";
        let client = self
            .lookup_client()
            .await
            .ok_or_else(|| unavailable(what, "PostgreSQL does not answer".into()))?;
        let q = quoted(&self.schema);
        let row = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            client.query_opt(
                &format!(
                    "SELECT {QUEUE_COLUMNS},
                            (SELECT count(*) FROM {q}.messages m
                              WHERE m.queue_id = queues.id AND m.state = 0)
                       FROM {q}.queues WHERE id = $1"
                ),
                &[&(queue_id as i64)],
            ),
        )
        .await
        .map_err(|_| unavailable(what, "PostgreSQL took too long".into()))?
        .map_err(|error| unavailable(what, error.to_string()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = queue_record_at(&row, 0).map_err(|error| unavailable(what, error))?;
        let backlog: i64 = row
            .try_get(row.len() - 1)
            .map_err(|error| unavailable(what, error.to_string()))?;
        Ok(Some((record, backlog.max(0) as u64)))
    }

    async fn earlier_copy(
        &self,
        queue_id: u64,
        deduplication_id: &str,
        since_ms: i64,
    ) -> Result<Option<u64>, QueueError> {
        let what = "cannot read a subscribed queue's deduplication ids";
        let client = self
            .lookup_client()
            .await
            .ok_or_else(|| unavailable(what, "PostgreSQL does not answer".into()))?;
        let q = quoted(&self.schema);
        let row = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            client.query_opt(
                &format!(
                    "SELECT message_id FROM {q}.deduplication
                      WHERE queue_id = $1 AND deduplication_id = $2 AND accepted_ms >= $3"
                ),
                &[&(queue_id as i64), &deduplication_id, &since_ms],
            ),
        )
        .await
        .map_err(|_| unavailable(what, "PostgreSQL took too long".into()))?
        .map_err(|error| unavailable(what, error.to_string()))?;
        row.map(|row| row.try_get::<_, i64>(0).map(|id| id as u64))
            .transpose()
            .map_err(|error| unavailable(what, error.to_string()))
    }
}

/// A read of the cluster's state that failed: the call can be retried.
fn unavailable(what: &str, why: String) -> QueueError {
    QueueError::Storage(format!("{what}: {why}; retry the call"))
}

fn lock(stopping: &std::sync::Mutex<HashSet<u64>>) -> std::sync::MutexGuard<'_, HashSet<u64>> {
    // Inserts and removes are single calls: a poisoned set is still consistent.
    stopping.lock().unwrap_or_else(|e| e.into_inner())
}
