//! The set of queues: names to handles, and the lifecycle of their actors (create, recover,
//! delete). Lookups take a read lock for a moment; creating and deleting queues are serialised
//! by an async mutex held across their storage commit.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::attributes::{AttributesPatch, DeadLetterPolicy, QueueAttributes};
use crate::clock::{Clock, Millis};
use crate::error::QueueError;
use crate::queue::body_cache::BodyBudget;
use crate::queue::messages::MessageTable;
use crate::queue::window::WindowLimits;
use crate::queue::{Directory, QueueContext, QueueHandle, QueueInfo, RecoveredIds};
use crate::receipt::ReceiptKey;
use crate::storage::{QueueRecord, Recovered, Storage, StorageError, WriteOp, remove_queue_rows};
use crate::topic::{ClusterTopics, SubscribedQueue, Topics};

pub struct Registry {
    /// Shared with the queues (`QueueContext::directory`), which move messages to each other.
    queues: Directory,
    /// Each queue with a dead-letter policy → its dead-letter queue. Changed only under
    /// `lifecycle`, with the policies themselves, so that a queue named by a policy cannot be
    /// deleted and a policy cannot name a queue being deleted.
    dead_letter_targets: RwLock<BTreeMap<String, String>>,
    /// Cluster mode: each replica serves only the queues it owns, so a dead-letter policy's
    /// checks (its queue exists; a target is not deleted) ask PostgreSQL, and its moves go
    /// through `relays`.
    cluster: OnceLock<ClusterPart>,
    /// Cluster mode: what the actors find other queues by (their `QueueContext::directory`),
    /// separate from `queues`: a relay for each queue that a dead-letter move or a redrive of
    /// a queue here may move messages into, wherever its actor is (see
    /// [`QueueHandle::relay`]). Outside cluster mode it is `queues` itself.
    relays: Directory,
    /// Held while a queue is created or deleted, so two of them cannot interleave.
    lifecycle: tokio::sync::Mutex<()>,
    context: QueueContext,
    next_queue_id: AtomicU64,
    max_queues: usize,
    /// Signs and checks receipt handles, with the secret kept in storage.
    receipt_key: ReceiptKey,
    /// The actor tasks.
    tracker: TaskTracker,
    /// The topics, which deliver into these queues (see `topic`).
    topics: Arc<Topics>,
}

/// Cluster mode: what the registry asks the cluster about queues another replica may serve.
#[tonic::async_trait]
pub trait ClusterQueues: Send + Sync {
    /// The id of the queue `name`, wherever it is served; None if it does not exist.
    async fn queue_id(&self, name: &str) -> Result<Option<u64>, QueueError>;
    /// The queues whose dead-letter policy names `name`, in name order.
    async fn dead_letter_sources(&self, name: &str) -> Result<Vec<String>, QueueError>;
}

/// The registry's part in cluster mode.
struct ClusterPart {
    queues: Arc<dyn ClusterQueues>,
    /// Told the name of each queue a relay was handed moved messages for.
    moved_into: tokio::sync::mpsc::UnboundedSender<String>,
}

/// One page of ListQueues.
pub struct QueuePage {
    pub queues: Vec<QueueInfo>,
    /// The last name of this page when more follow.
    pub next_after: Option<String>,
    pub total_count: u64,
}

impl Registry {
    /// Recovers every stored queue and starts its actor. Blocking reads run off the async
    /// workers.
    pub async fn recover(
        storage: Arc<dyn Storage>,
        clock: Clock,
        max_queues: usize,
        body_cache_bytes: usize,
        window: WindowLimits,
    ) -> Result<Self, StorageError> {
        let reader = storage.clone();
        let recovery_clock = clock.clone();
        let limits = window.clone();
        let (recovered, tables) = tokio::task::spawn_blocking(move || {
            let recovered = reader.recover()?;
            let tables =
                recover_tables(&reader, &recovered.queues, recovery_clock.now_ms(), &limits)?;
            Ok::<_, StorageError>((recovered, tables))
        })
        .await
        .map_err(|e| StorageError::Io(format!("recovery task failed: {e}")))??;
        Ok(Self::start(
            storage,
            clock,
            max_queues,
            body_cache_bytes,
            window,
            recovered,
            tables,
        ))
    }

    /// Starts the actors of `recovered`'s queues with their tables.
    pub fn start(
        storage: Arc<dyn Storage>,
        clock: Clock,
        max_queues: usize,
        body_cache_bytes: usize,
        window: WindowLimits,
        recovered: Recovered,
        tables: HashMap<u64, MessageTable>,
    ) -> Self {
        let directory: Directory = Default::default();
        Self::start_with(
            storage,
            clock,
            max_queues,
            body_cache_bytes,
            window,
            recovered,
            tables,
            directory.clone(),
            directory,
        )
    }

    /// Cluster mode's start: no queue yet (they are taken over one by one, see
    /// [`Self::adopt`]), the id counters at the blocks this replica reserved, and the actors
    /// finding other queues through relays (see [`Self::enter_cluster_mode`]).
    pub fn start_replica(
        storage: Arc<dyn Storage>,
        clock: Clock,
        max_queues: usize,
        body_cache_bytes: usize,
        window: WindowLimits,
        recovered: Recovered,
    ) -> Self {
        Self::start_with(
            storage,
            clock,
            max_queues,
            body_cache_bytes,
            window,
            recovered,
            HashMap::new(),
            Directory::default(),
            Directory::default(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_with(
        storage: Arc<dyn Storage>,
        clock: Clock,
        max_queues: usize,
        body_cache_bytes: usize,
        window: WindowLimits,
        recovered: Recovered,
        mut tables: HashMap<u64, MessageTable>,
        directory: Directory,
        relays: Directory,
    ) -> Self {
        let queue_ids: std::collections::HashSet<u64> =
            recovered.queues.iter().map(|queue| queue.id).collect();
        let context = QueueContext {
            storage,
            clock,
            message_ids: Arc::new(AtomicU64::new(recovered.next_message_id)),
            body_budget: Arc::new(BodyBudget::new(body_cache_bytes)),
            window,
            directory: relays.clone(),
        };
        let tracker = TaskTracker::new();
        let mut deduplication_ids: HashMap<u64, RecoveredIds> = HashMap::new();
        for record in recovered.deduplication_ids {
            deduplication_ids.entry(record.queue_id).or_default().push((
                record.deduplication_id,
                record.message_id,
                record.accepted_ms,
            ));
        }
        let topics = Arc::new(Topics::recover(
            crate::topic::StoredTopics {
                topics: recovered.topics,
                subscriptions: recovered.subscriptions,
                topic_totals: recovered.topic_totals,
                subscription_totals: recovered.subscription_totals,
            },
            &queue_ids,
            context.storage.clone(),
            context.clock.clone(),
            context.message_ids.clone(),
            directory.clone(),
        ));
        let mut dead_letter_targets = BTreeMap::new();
        {
            let mut queues = directory.write().unwrap_or_else(|e| e.into_inner());
            for record in recovered.queues {
                let table = tables.remove(&record.id).unwrap_or_else(|| {
                    MessageTable::with_window(record.id, context.window.clone())
                });
                let ids = deduplication_ids.remove(&record.id).unwrap_or_default();
                let name = record.name.clone();
                if let Some(policy) = &record.attributes.dead_letter_policy {
                    dead_letter_targets.insert(name.clone(), policy.dead_letter_queue.clone());
                }
                let handle =
                    QueueHandle::spawn_recovered(record, table, ids, context.clone(), &tracker);
                queues.insert(name, handle);
            }
        }
        Self {
            queues: directory,
            dead_letter_targets: RwLock::new(dead_letter_targets),
            cluster: OnceLock::new(),
            relays,
            lifecycle: tokio::sync::Mutex::new(()),
            context,
            next_queue_id: AtomicU64::new(recovered.next_queue_id),
            max_queues,
            receipt_key: ReceiptKey::new(&recovered.receipt_secret),
            tracker,
            topics,
        }
    }

    /// Cluster mode: from now on other queues are found through `queues` (the cluster's view
    /// of them), and messages moved into them are announced on `moved_into` (see
    /// `cluster::adoption`).
    pub fn enter_cluster_mode(
        &self,
        queues: Arc<dyn ClusterQueues>,
        topics: Arc<dyn ClusterTopics>,
        moved_into: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        self.topics.enter_cluster_mode(topics, moved_into.clone());
        let _ = self.cluster.set(ClusterPart { queues, moved_into });
    }

    /// The queue `name` a subscription is to deliver into: served here, or (cluster mode)
    /// by any replica.
    pub async fn subscribed_queue(&self, name: &str) -> Result<SubscribedQueue, QueueError> {
        if let Ok(handle) = self.get(name) {
            return Ok(SubscribedQueue {
                name: name.to_string(),
                id: handle.id(),
            });
        }
        let Some(cluster) = self.cluster.get() else {
            return Err(QueueError::QueueNotFound(name.to_string()));
        };
        let id = cluster
            .queues
            .queue_id(name)
            .await?
            .ok_or_else(|| QueueError::QueueNotFound(name.to_string()))?;
        Ok(SubscribedQueue {
            name: name.to_string(),
            id,
        })
    }

    /// Cluster mode: makes sure the actors can move messages into the queue `name` (a relay
    /// with its current id). Err NOT_FOUND if it does not exist. Does nothing elsewhere.
    async fn relay_to(&self, name: &str) -> Result<(), QueueError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        let id = cluster
            .queues
            .queue_id(name)
            .await?
            .ok_or_else(|| QueueError::QueueNotFound(name.to_string()))?;
        let mut relays = self.relays.write().unwrap_or_else(|e| e.into_inner());
        // A queue deleted and made again has a new id: its relay is replaced.
        if relays.get(name).is_none_or(|relay| relay.id() != id) {
            relays.insert(
                name.to_string(),
                QueueHandle::relay(
                    name,
                    id,
                    self.context.storage.clone(),
                    self.context.clock.clone(),
                    cluster.moved_into.clone(),
                ),
            );
        }
        Ok(())
    }

    /// Cluster mode: before a redrive of `name`, relays to where its messages may go: the
    /// named destination, else the queues whose policy names it now (a message from a queue
    /// that no longer does is skipped, as one from a deleted queue is).
    pub async fn prepare_redrive(
        &self,
        name: &str,
        destination: Option<&str>,
    ) -> Result<(), QueueError> {
        if self.cluster.get().is_none() {
            return Ok(());
        }
        match destination {
            Some(destination) => self.relay_to(destination).await,
            None => {
                for source in self.dead_letter_sources(name).await? {
                    // A source deleted meanwhile: its messages are skipped.
                    let _ = self.relay_to(&source).await;
                }
                Ok(())
            }
        }
    }

    /// A queue here by its id (cluster mode: to hand it messages moved in by others).
    pub fn by_id(&self, id: u64) -> Option<QueueHandle> {
        self.read()
            .values()
            .find(|handle| handle.id() == id)
            .cloned()
    }

    /// Cluster mode: starts the actor of a queue this replica has just taken over, with its
    /// state recovered from storage. False (nothing started) if the name is here already.
    pub async fn adopt(
        &self,
        record: QueueRecord,
        table: MessageTable,
        deduplication_ids: RecoveredIds,
    ) -> bool {
        if let Some(policy) = &record.attributes.dead_letter_policy
            && let Err(error) = self.relay_to(&policy.dead_letter_queue).await
        {
            // Its messages are delivered as without a policy until the queue exists again.
            tracing::warn!(queue = %record.name, target = %policy.dead_letter_queue, %error, "the dead-letter queue of a queue taken over cannot be found");
        }
        let _guard = self.lifecycle.lock().await;
        if self.read().contains_key(&record.name) {
            return false;
        }
        let name = record.name.clone();
        let handle = QueueHandle::spawn_recovered(
            record,
            table,
            deduplication_ids,
            self.context.clone(),
            &self.tracker,
        );
        self.write().insert(name, handle);
        true
    }

    /// Cluster mode: takes a queue out of the set (it moves to another replica); the caller
    /// stops its actor with [`QueueHandle::hand_off`].
    pub async fn take(&self, name: &str) -> Option<QueueHandle> {
        let _guard = self.lifecycle.lock().await;
        self.write().remove(name)
    }

    /// Whether the queue `name` is served here.
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The names of the queues served here.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// How many queues exist.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn get(&self, name: &str) -> Result<QueueHandle, QueueError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::QueueNotFound(name.to_string()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, QueueHandle>> {
        // A poisoned lock means a panic while holding it; the map itself is still consistent
        // (inserts and removes are single calls), so keep serving.
        self.queues.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, QueueHandle>> {
        self.queues.write().unwrap_or_else(|e| e.into_inner())
    }

    fn targets(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, String>> {
        self.dead_letter_targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn set_target(&self, name: &str, policy: Option<&DeadLetterPolicy>) {
        let mut targets = self
            .dead_letter_targets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match policy {
            Some(policy) => targets.insert(name.to_string(), policy.dead_letter_queue.clone()),
            None => targets.remove(name),
        };
    }

    /// Checks what a dead-letter policy needs of other queues: its queue exists and is not the
    /// queue itself (cluster mode: wherever it is served, and the actors get a relay to it).
    /// Called under `lifecycle`.
    async fn check_dead_letter_queue(
        &self,
        name: &str,
        policy: Option<&DeadLetterPolicy>,
    ) -> Result<(), QueueError> {
        let Some(policy) = policy else {
            return Ok(());
        };
        let target = &policy.dead_letter_queue;
        if target == name {
            return Err(QueueError::InvalidArgument(format!(
                "attributes.dead_letter_policy.dead_letter_queue is {target:?}, the queue \
                 itself; name another queue"
            )));
        }
        let exists = if self.cluster.get().is_some() {
            match self.relay_to(target).await {
                Ok(()) => true,
                Err(QueueError::QueueNotFound(_)) => false,
                Err(error) => return Err(error),
            }
        } else {
            self.read().contains_key(target)
        };
        if !exists {
            return Err(QueueError::InvalidArgument(format!(
                "attributes.dead_letter_policy.dead_letter_queue names queue {target:?}, which \
                 does not exist; create it first"
            )));
        }
        Ok(())
    }

    /// The queues whose dead-letter policy names `name`, in name order (cluster mode: every
    /// replica's, as PostgreSQL has them).
    pub async fn dead_letter_sources(&self, name: &str) -> Result<Vec<String>, QueueError> {
        self.get(name)?;
        if let Some(cluster) = self.cluster.get() {
            return cluster.queues.dead_letter_sources(name).await;
        }
        Ok(self
            .targets()
            .iter()
            .filter(|(_, target)| *target == name)
            .map(|(source, _)| source.clone())
            .collect())
    }

    /// Changes a queue's attributes; a dead-letter policy among them is checked against the
    /// other queues first.
    pub async fn update(
        &self,
        name: &str,
        patch: AttributesPatch,
    ) -> Result<QueueInfo, QueueError> {
        let handle = self.get(name)?;
        let Some(policy) = &patch.dead_letter_policy else {
            return handle.update(patch).await;
        };
        let _guard = self.lifecycle.lock().await;
        self.check_dead_letter_queue(name, policy.as_ref()).await?;
        let info = handle.update(patch.clone()).await?;
        self.set_target(name, info.attributes.dead_letter_policy.as_ref());
        Ok(info)
    }

    /// Creates a queue, or returns it if it exists with the same attributes.
    pub async fn create(
        &self,
        name: &str,
        attributes: QueueAttributes,
    ) -> Result<QueueInfo, QueueError> {
        let _guard = self.lifecycle.lock().await;
        let existing = self.read().get(name).cloned();
        if let Some(handle) = existing {
            let info = handle.info().await?;
            return if info.attributes == attributes {
                Ok(info)
            } else {
                Err(QueueError::QueueExists(name.to_string()))
            };
        }
        if self.read().len() >= self.max_queues {
            return Err(QueueError::TooManyQueues {
                max: self.max_queues,
            });
        }
        self.check_dead_letter_queue(name, attributes.dead_letter_policy.as_ref())
            .await?;
        let now = self.context.clock.now_ms();
        let policy = attributes.dead_letter_policy.clone();
        let record = QueueRecord {
            id: self.next_queue_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            attributes,
            create_time_ms: now,
            update_time_ms: now,
        };
        let (done, committed) = oneshot::channel();
        self.context
            .storage
            .commit(WriteOp::CreateQueue(record.clone()), done);
        committed.await.unwrap_or(Err(StorageError::Closed))?;
        let record_id = record.id;
        let handle = QueueHandle::spawn(
            record,
            MessageTable::with_window(record_id, self.context.window.clone()),
            self.context.clone(),
            &self.tracker,
        );
        self.write().insert(name.to_string(), handle.clone());
        self.set_target(name, policy.as_ref());
        handle.info().await
    }

    /// Deletes a queue and its messages, and the topics' subscriptions into it (in the same
    /// transaction). Waits for publishes and subscribes under way to finish (see `topic`).
    pub async fn delete(&self, name: &str) -> Result<(), QueueError> {
        let _fanout = self.topics.gate().write().await;
        let _guard = self.lifecycle.lock().await;
        let handle = self.get(name)?;
        let sources = self.dead_letter_sources(name).await?;
        if !sources.is_empty() {
            return Err(QueueError::DeadLetterTarget {
                name: name.to_string(),
                sources,
            });
        }
        handle.drop_queue().await?;
        self.topics.queue_deleted(handle.id());
        self.write().remove(name);
        self.set_target(name, None);
        Ok(())
    }

    /// Queues whose name starts with `prefix` and that `visible` lets through (the caller's
    /// grants), in name order, after the name `after`. The total counts the visible ones
    /// only, so it agrees with the pages.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        page_size: usize,
        visible: impl Fn(&str) -> bool,
    ) -> Result<QueuePage, QueueError> {
        let (handles, total_count, more) = {
            let queues = self.read();
            let matching = queues
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .filter(|(name, _)| visible(name));
            let total_count = matching.clone().count() as u64;
            let mut page = matching
                .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after))
                .map(|(_, handle)| handle.clone());
            let handles: Vec<QueueHandle> = page.by_ref().take(page_size).collect();
            let more = page.next().is_some();
            (handles, total_count, more)
        };
        let queues = infos(&handles).await;
        let next_after = if more {
            handles.last().map(|h| h.name().to_string())
        } else {
            None
        };
        Ok(QueuePage {
            queues,
            next_after,
            total_count,
        })
    }

    /// Every queue's current state, in name order (for metrics).
    pub async fn snapshot(&self) -> Vec<QueueInfo> {
        infos(&self.handles()).await
    }

    /// Has every queue hand its pending receive bookkeeping to storage (before shutdown).
    pub async fn flush_all(&self) {
        for handle in self.handles() {
            // A queue deleted meanwhile has nothing left to write.
            let _ = handle.flush().await;
        }
    }

    /// The topics, which publish into these queues.
    pub fn topics(&self) -> &Arc<Topics> {
        &self.topics
    }

    pub fn receipt_key(&self) -> &ReceiptKey {
        &self.receipt_key
    }

    /// Memory the queues hold for bodies not received yet.
    pub fn body_cache_bytes(&self) -> usize {
        self.context.body_budget.used()
    }

    /// Every queue's handle, in name order; the lock is not held while they are used.
    fn handles(&self) -> Vec<QueueHandle> {
        self.read().values().cloned().collect()
    }
}

/// Recovers each queue's table: only its window of visible messages and what memory holds
/// whatever the backlog (see `queue::window::recover`), so that startup does not grow with the
/// backlog.
///
/// Rows of a queue that does not exist are removed, in slices, in the background. A large
/// queue's deletion removes its rows over several commits after the queue itself, so a stop in
/// between leaves some.
fn recover_tables(
    storage: &Arc<dyn Storage>,
    queues: &[QueueRecord],
    now: Millis,
    limits: &WindowLimits,
) -> Result<HashMap<u64, MessageTable>, StorageError> {
    let mut tables = HashMap::with_capacity(queues.len());
    for record in queues {
        let table = crate::queue::window::recover(&**storage, record.id, now, limits.clone())?;
        tables.insert(record.id, table);
    }
    let orphans: Vec<u64> = storage
        .queues_with_messages()?
        .into_iter()
        .filter(|queue_id| !tables.contains_key(queue_id))
        .collect();
    for queue_id in orphans {
        tracing::info!(
            queue_id,
            "stored messages of a deleted queue; skipped, and removed"
        );
        let storage = storage.clone();
        std::thread::spawn(move || remove_queue_rows(&*storage, queue_id));
    }
    Ok(tables)
}

/// The current state of these queues; a queue deleted meanwhile (its actor gone, the only way
/// `info` fails) is simply left out.
async fn infos(handles: &[QueueHandle]) -> Vec<QueueInfo> {
    let mut infos = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(info) = handle.info().await {
            infos.push(info);
        }
    }
    infos
}
