//! Topics: a message published once goes, as its own copy, into every subscribed queue whose
//! filter it passes (CMQ's topic model; RabbitMQ's topic exchange and bindings).
//!
//! A topic holds no messages. Its subscriptions name queues, and a publish is one storage
//! transaction that inserts a copy into each matching queue: every copy or none, across any
//! crash. The queues' actors check and reserve their copies first (size, backlog, deduplication:
//! [`QueueHandle::stage`]), the one commit follows, and then each actor is told its copies are
//! in — the shape of a dead-letter move, which also commits once and then hands messages to
//! another queue's actor.
//!
//! A queue's deletion takes its subscriptions with it, in the transaction that deletes the
//! queue (as deleting a RabbitMQ queue removes its bindings): a topic never delivers into a
//! queue created again under the same name. Publishes and subscribes hold [`Topics::gate`]
//! shared; a queue's deletion holds it exclusively, so none of them interleaves with it.
//!
//! Cluster mode ([`ClusterTopics`]): every replica serves topics, reading them from PostgreSQL
//! on each call. A publish stages the copies of the queues served here as above, and checks
//! those of queues other replicas own against PostgreSQL; its one transaction writes them all,
//! with a `pending_adoptions` entry for each copy of another replica's queue, and reads every
//! queue's epoch under a share lock (`storage::postgres::fence`): a queue lost or deleted
//! meanwhile fails the whole publish. The other owners are then told, as for dead-letter moves
//! (`cluster::adoption`).

pub mod filter;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::QueueError;
use crate::payload::Payload;
use crate::queue::{Directory, Outgoing, QueueHandle, Staged};
use crate::storage::{
    FilterType, NewMessage, PublishCounts, QueueRecord, Storage, StorageError, SubscriptionRecord,
    TopicRecord, WriteOp,
};
pub use crate::storage::{SubscriptionTotals, TopicTotals};

/// Most topics one server holds: each costs memory and a line of metrics per subscription.
pub const MAX_TOPICS: usize = 1_000;
/// Most subscriptions one topic has (CMQ's limit): a publish stages a copy on each.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// The topics and subscriptions storage holds, with their totals (at startup; in cluster mode,
/// at each topic call).
pub struct StoredTopics {
    pub topics: Vec<TopicRecord>,
    pub subscriptions: Vec<SubscriptionRecord>,
    pub topic_totals: HashMap<u64, TopicTotals>,
    pub subscription_totals: HashMap<(u64, String), SubscriptionTotals>,
}

/// A topic at one moment.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub record: TopicRecord,
    pub subscriptions: usize,
    pub totals: TopicTotals,
}

/// A subscription at one moment.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub record: SubscriptionRecord,
    pub totals: SubscriptionTotals,
}

/// A topic's settings that UpdateTopic may change (the filter type is fixed at creation: the
/// subscriptions' filters are of its kind).
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicPatch {
    pub max_message_size: Option<u32>,
}

/// One message to publish, checked for its own form (body, attributes, deduplication id)
/// already; the topic checks its size and its tags or routing key.
#[derive(Clone, Debug)]
pub struct Publication {
    pub payload: Payload,
    pub tags: Vec<String>,
    pub routing_key: String,
    pub deduplication_id: Option<String>,
}

/// What one publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The publish's own id (from the server's message ids; no message has it).
    pub message_id: u64,
    /// One copy per subscription that took it, in subscription name order.
    pub copies: Vec<PublishedCopy>,
}

/// One queue's copy of a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedCopy {
    pub subscription: String,
    pub queue: String,
    /// The copy's id in its queue (an earlier copy's, when deduplicated there).
    pub message_id: u64,
}

/// The queue a subscription delivers into.
#[derive(Clone, Debug)]
pub struct SubscribedQueue {
    pub name: String,
    pub id: u64,
}

/// One page of ListTopics or ListSubscriptions.
pub struct Page<T> {
    pub items: Vec<T>,
    /// The last name of this page when more follow.
    pub next_after: Option<String>,
    pub total_count: u64,
}

struct TopicState {
    record: TopicRecord,
    subscriptions: BTreeMap<String, SubscriptionState>,
    totals: TopicTotals,
}

struct SubscriptionState {
    record: SubscriptionRecord,
    totals: SubscriptionTotals,
}

type SharedTopic = Arc<Mutex<TopicState>>;

/// Cluster mode: what the topics read from PostgreSQL. Any replica changes topics and
/// subscriptions, and the queues they deliver into are spread over the replicas, so every
/// topic call reads the topics again ([`Topics::sync`]), and a publish reads what it checks a
/// copy into another replica's queue against.
#[tonic::async_trait]
pub trait ClusterTopics: Send + Sync {
    /// Every topic and subscription as stored now, with their totals; or, given `name`, only
    /// that topic (if it exists) and its subscriptions.
    async fn topics(&self, name: Option<&str>) -> Result<StoredTopics, QueueError>;
    /// The queue `queue_id` as stored now with its backlog (messages not deleted); None if it
    /// no longer exists.
    async fn queue(&self, queue_id: u64) -> Result<Option<(QueueRecord, u64)>, QueueError>;
    /// The id `queue_id` stored for the deduplication id `deduplication_id` if accepted at or
    /// after `since_ms`.
    async fn earlier_copy(
        &self,
        queue_id: u64,
        deduplication_id: &str,
        since_ms: i64,
    ) -> Result<Option<u64>, QueueError>;
}

/// The topics' part in cluster mode.
struct ClusterPart {
    store: Arc<dyn ClusterTopics>,
    /// Told the name of each queue another replica owns that a publish put copies in, so that
    /// its owner takes them in now (see `cluster::adoption`).
    moved_into: tokio::sync::mpsc::UnboundedSender<String>,
}

/// One subscription's copies of a publish, as the publish commits them.
enum Copies {
    /// Checked and reserved by the queue's actor, here.
    Local(Staged),
    /// Cluster mode: into a queue another replica owns, checked here against the queue as
    /// PostgreSQL has it; its owner takes the rows in after the commit. `ids` are the copies'
    /// ids (an earlier message's for a deduplicated copy).
    Remote {
        queue_id: u64,
        rows: Vec<NewMessage>,
        ids: Vec<u64>,
    },
}

pub struct Topics {
    topics: RwLock<BTreeMap<String, SharedTopic>>,
    /// Held while topics and subscriptions are created or deleted, so two cannot interleave.
    lifecycle: tokio::sync::Mutex<()>,
    /// Ids of topics not handed out yet.
    next_topic_id: AtomicU64,
    storage: Arc<dyn Storage>,
    clock: Clock,
    /// The server's message ids, shared with the queues: a publish's id is one of them.
    message_ids: Arc<AtomicU64>,
    /// The queues, to stage copies on.
    directory: Directory,
    /// Publishes and subscribes hold it shared; a queue's deletion exclusively (see the module
    /// comment), so a queue is never deleted between a publish's staging and its commit.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Set in cluster mode (see [`ClusterTopics`]).
    cluster: OnceLock<ClusterPart>,
}

fn lock(topic: &SharedTopic) -> std::sync::MutexGuard<'_, TopicState> {
    // A panic while holding it leaves the state consistent (every change is one assignment).
    topic.lock().unwrap_or_else(|e| e.into_inner())
}

impl Topics {
    /// The topics storage held, with their totals. Subscriptions of queues not in `queue_ids`
    /// (left by an older version, or a migration) are dropped, in memory and in storage.
    pub fn recover(
        stored: StoredTopics,
        queue_ids: &std::collections::HashSet<u64>,
        storage: Arc<dyn Storage>,
        clock: Clock,
        message_ids: Arc<AtomicU64>,
        directory: Directory,
    ) -> Self {
        let StoredTopics {
            topics,
            subscriptions,
            topic_totals,
            mut subscription_totals,
        } = stored;
        let next_topic_id = topics.iter().map(|t| t.id + 1).max().unwrap_or(1);
        let mut by_id: BTreeMap<u64, TopicState> = topics
            .into_iter()
            .map(|record| {
                (
                    record.id,
                    TopicState {
                        totals: topic_totals.get(&record.id).copied().unwrap_or_default(),
                        record,
                        subscriptions: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for record in subscriptions {
            match by_id.get_mut(&record.topic_id) {
                Some(topic) if queue_ids.contains(&record.queue_id) => {
                    let totals = subscription_totals
                        .remove(&(record.topic_id, record.name.clone()))
                        .unwrap_or_default();
                    topic
                        .subscriptions
                        .insert(record.name.clone(), SubscriptionState { record, totals });
                }
                _ => storage.record(WriteOp::Unsubscribe {
                    topic_id: record.topic_id,
                    name: record.name,
                }),
            }
        }
        let topics = by_id
            .into_values()
            .map(|state| (state.record.name.clone(), Arc::new(Mutex::new(state))))
            .collect();
        Self {
            topics: RwLock::new(topics),
            lifecycle: tokio::sync::Mutex::new(()),
            next_topic_id: AtomicU64::new(next_topic_id),
            storage,
            clock,
            message_ids,
            directory,
            gate: Default::default(),
            cluster: OnceLock::new(),
        }
    }

    /// Cluster mode: from now on topics are read from `store` for each call, topic ids are
    /// drawn from this replica's block of message ids (so replicas never pick the same), and
    /// publishes may put copies into queues other replicas own, announced on `moved_into`.
    pub fn enter_cluster_mode(
        &self,
        store: Arc<dyn ClusterTopics>,
        moved_into: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let _ = self.cluster.set(ClusterPart { store, moved_into });
    }

    /// Cluster mode: reads the topics and subscriptions again, as another replica may have
    /// changed them, with their stored totals (every replica's committed publishes add to
    /// them in their transactions, so these count the whole cluster's). Given `name`, only
    /// that topic (the others are left as they are). Does nothing elsewhere.
    pub async fn sync(&self, name: Option<&str>) -> Result<(), QueueError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        let StoredTopics {
            topics: records,
            subscriptions,
            topic_totals,
            mut subscription_totals,
        } = cluster.store.topics(name).await?;
        let mut by_id: BTreeMap<u64, Vec<SubscriptionRecord>> = BTreeMap::new();
        for subscription in subscriptions {
            by_id
                .entry(subscription.topic_id)
                .or_default()
                .push(subscription);
        }
        let mut topics = self.write();
        let mut fresh = match name {
            Some(name) => {
                let mut others = std::mem::take(&mut *topics);
                let this = others.remove(name);
                *topics = this.map(|t| (name.to_string(), t)).into_iter().collect();
                others
            }
            None => BTreeMap::new(),
        };
        for record in records {
            let totals = topic_totals.get(&record.id).copied().unwrap_or_default();
            let subscriptions: BTreeMap<String, SubscriptionState> = by_id
                .remove(&record.id)
                .unwrap_or_default()
                .into_iter()
                .map(|subscription| {
                    let totals = subscription_totals
                        .remove(&(subscription.topic_id, subscription.name.clone()))
                        .unwrap_or_default();
                    (
                        subscription.name.clone(),
                        SubscriptionState {
                            record: subscription,
                            totals,
                        },
                    )
                })
                .collect();
            // The same topic keeps its shared state (a publish may hold it); a topic of the
            // same name made anew gets its own.
            let kept = topics
                .get(&record.name)
                .filter(|existing| lock(existing).record.id == record.id)
                .cloned();
            let name = record.name.clone();
            let topic = match kept {
                Some(topic) => {
                    {
                        let mut state = lock(&topic);
                        state.record = record;
                        state.subscriptions = subscriptions;
                        state.totals = totals;
                    }
                    topic
                }
                None => Arc::new(Mutex::new(TopicState {
                    subscriptions,
                    record,
                    totals,
                })),
            };
            fresh.insert(name, topic);
        }
        *topics = fresh;
        Ok(())
    }

    /// Held exclusively by a queue's deletion (see the module comment).
    pub fn gate(&self) -> &tokio::sync::RwLock<()> {
        &self.gate
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SharedTopic>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SharedTopic>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    fn topic(&self, name: &str) -> Result<SharedTopic, QueueError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::TopicNotFound(name.to_string()))
    }

    fn count(&self) -> usize {
        self.read().len()
    }

    async fn commit(&self, op: WriteOp) -> Result<(), StorageError> {
        let (done, committed) = oneshot::channel();
        self.storage.commit(op, done);
        committed.await.unwrap_or(Err(StorageError::Closed))
    }

    /// Creates a topic, or returns it if it exists with the same attributes.
    pub async fn create(
        &self,
        name: &str,
        max_message_size: u32,
        filter_type: FilterType,
    ) -> Result<TopicInfo, QueueError> {
        let _guard = self.lifecycle.lock().await;
        if let Ok(existing) = self.topic(name) {
            let info = info(&lock(&existing));
            let same = info.record.max_message_size == max_message_size
                && info.record.filter_type == filter_type;
            return if same {
                Ok(info)
            } else {
                Err(QueueError::TopicExists(name.to_string()))
            };
        }
        if self.count() >= MAX_TOPICS {
            return Err(QueueError::TooManyTopics { max: MAX_TOPICS });
        }
        let now = self.clock.now_ms();
        let record = TopicRecord {
            id: if self.cluster.get().is_some() {
                self.message_ids.fetch_add(1, Ordering::Relaxed)
            } else {
                self.next_topic_id.fetch_add(1, Ordering::Relaxed)
            },
            name: name.to_string(),
            max_message_size,
            filter_type,
            create_time_ms: now,
            update_time_ms: now,
        };
        self.commit(WriteOp::CreateTopic(record.clone())).await?;
        let state = TopicState {
            record,
            subscriptions: BTreeMap::new(),
            totals: TopicTotals::default(),
        };
        let info = info(&state);
        self.write()
            .insert(name.to_string(), Arc::new(Mutex::new(state)));
        Ok(info)
    }

    pub fn get(&self, name: &str) -> Result<TopicInfo, QueueError> {
        Ok(info(&lock(&self.topic(name)?)))
    }

    pub async fn update(&self, name: &str, patch: TopicPatch) -> Result<TopicInfo, QueueError> {
        let _guard = self.lifecycle.lock().await;
        let topic = self.topic(name)?;
        let mut record = lock(&topic).record.clone();
        if let Some(size) = patch.max_message_size {
            record.max_message_size = size;
        }
        record.update_time_ms = self.clock.now_ms();
        self.commit(WriteOp::UpdateTopic(record.clone())).await?;
        let mut state = lock(&topic);
        state.record = record;
        Ok(info(&state))
    }

    /// Deletes a topic and its subscriptions (not their queues, nor the copies in them).
    pub async fn delete(&self, name: &str) -> Result<(), QueueError> {
        let _guard = self.lifecycle.lock().await;
        let topic = self.topic(name)?;
        let topic_id = lock(&topic).record.id;
        self.commit(WriteOp::DeleteTopic { topic_id }).await?;
        self.write().remove(name);
        Ok(())
    }

    /// Topics whose name starts with `prefix` and that `visible` lets through, in name order,
    /// after `after`.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        page_size: usize,
        visible: impl Fn(&str) -> bool,
    ) -> Page<TopicInfo> {
        let topics = self.read();
        let matching = topics
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter(|(name, _)| visible(name));
        let total_count = matching.clone().count() as u64;
        let mut page = matching.filter(|(name, _)| after.is_none_or(|after| name.as_str() > after));
        let items: Vec<TopicInfo> = page
            .by_ref()
            .take(page_size)
            .map(|(_, topic)| info(&lock(topic)))
            .collect();
        let next_after = page
            .next()
            .and(items.last().map(|item| item.record.name.clone()));
        Page {
            items,
            next_after,
            total_count,
        }
    }

    /// Subscribes `queue` to `topic` under `name`, with `filter` (tags or binding keys, by the
    /// topic's filter type, checked by the caller against it via [`Topics::filter_type`]).
    /// Subscribing again with the same queue and filter returns the subscription.
    pub async fn subscribe(
        &self,
        topic_name: &str,
        name: &str,
        queue: &SubscribedQueue,
        filter: Vec<String>,
    ) -> Result<SubscriptionInfo, QueueError> {
        let _gate = self.gate.read().await;
        let _guard = self.lifecycle.lock().await;
        let topic = self.topic(topic_name)?;
        let exists = |state: &TopicState| {
            state.subscriptions.get(name).map(|existing| {
                let same = existing.record.queue_id == queue.id && existing.record.filter == filter;
                if same {
                    Ok(subscription_info(topic_name, existing))
                } else {
                    Err(QueueError::SubscriptionExists {
                        topic: topic_name.to_string(),
                        name: name.to_string(),
                    })
                }
            })
        };
        let record = {
            let state = lock(&topic);
            if let Some(answer) = exists(&state) {
                return answer;
            }
            if state.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(QueueError::TooManySubscriptions {
                    topic: topic_name.to_string(),
                    max: MAX_SUBSCRIPTIONS,
                });
            }
            SubscriptionRecord {
                topic_id: state.record.id,
                name: name.to_string(),
                queue_id: queue.id,
                queue_name: queue.name.clone(),
                filter,
                create_time_ms: self.clock.now_ms(),
            }
        };
        // The queue may have been deleted since the caller looked it up; under the gate it
        // cannot be deleted now, so checking here is enough. In cluster mode another replica
        // may delete it still: a publish then finds it gone and drops the subscription.
        let current = match self.cluster.get() {
            Some(cluster) => cluster
                .store
                .queue(queue.id)
                .await?
                .map(|(record, _)| record.id),
            None => self
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&queue.name)
                .map(QueueHandle::id),
        };
        if current != Some(queue.id) {
            return Err(QueueError::QueueNotFound(queue.name.clone()));
        }
        self.commit(WriteOp::Subscribe(record.clone())).await?;
        let state = SubscriptionState {
            record,
            totals: SubscriptionTotals::default(),
        };
        let info = subscription_info(topic_name, &state);
        lock(&topic).subscriptions.insert(name.to_string(), state);
        Ok(info)
    }

    /// The topic's filter type, to check a subscription's filter against.
    pub fn filter_type(&self, topic: &str) -> Result<FilterType, QueueError> {
        Ok(lock(&self.topic(topic)?).record.filter_type)
    }

    pub async fn unsubscribe(&self, topic_name: &str, name: &str) -> Result<(), QueueError> {
        let _guard = self.lifecycle.lock().await;
        let topic = self.topic(topic_name)?;
        let topic_id = {
            let state = lock(&topic);
            if !state.subscriptions.contains_key(name) {
                return Err(QueueError::SubscriptionNotFound {
                    topic: topic_name.to_string(),
                    name: name.to_string(),
                });
            }
            state.record.id
        };
        self.commit(WriteOp::Unsubscribe {
            topic_id,
            name: name.to_string(),
        })
        .await?;
        lock(&topic).subscriptions.remove(name);
        Ok(())
    }

    /// The topic's subscriptions in name order, after `after`.
    pub fn subscriptions(
        &self,
        topic_name: &str,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<Page<SubscriptionInfo>, QueueError> {
        let topic = self.topic(topic_name)?;
        let state = lock(&topic);
        let total_count = state.subscriptions.len() as u64;
        let mut page = state
            .subscriptions
            .iter()
            .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after));
        let items: Vec<SubscriptionInfo> = page
            .by_ref()
            .take(page_size)
            .map(|(_, s)| subscription_info(topic_name, s))
            .collect();
        let next_after = page
            .next()
            .and(items.last().map(|item| item.record.name.clone()));
        Ok(Page {
            items,
            next_after,
            total_count,
        })
    }

    /// Forgets the subscriptions into a deleted queue (their rows went with the queue).
    pub fn queue_deleted(&self, queue_id: u64) {
        for topic in self.read().values() {
            lock(topic)
                .subscriptions
                .retain(|_, s| s.record.queue_id != queue_id);
        }
    }

    /// Every topic's and subscription's state, in name order (for metrics).
    pub fn snapshot(&self) -> Vec<(TopicInfo, Vec<SubscriptionInfo>)> {
        self.read()
            .iter()
            .map(|(name, topic)| {
                let state = lock(topic);
                let subscriptions = state
                    .subscriptions
                    .values()
                    .map(|s| subscription_info(name, s))
                    .collect();
                (info(&state), subscriptions)
            })
            .collect()
    }

    /// Publishes `entries` to the topic: one copy of each into every subscribed queue whose
    /// filter it passes, all in one transaction; answers once that is durable. Runs as a task
    /// of its own, so that a caller that goes away cannot leave queues with reserved copies
    /// whose commit nobody reports.
    pub async fn publish(
        self: &Arc<Self>,
        topic_name: &str,
        entries: Vec<Publication>,
    ) -> Result<Vec<Published>, QueueError> {
        let topics = self.clone();
        let topic_name = topic_name.to_string();
        tokio::spawn(async move { topics.publish_now(&topic_name, entries).await })
            .await
            .unwrap_or_else(|error| {
                Err(QueueError::Storage(format!(
                    "the publish task failed: {error}"
                )))
            })
    }

    async fn publish_now(
        &self,
        topic_name: &str,
        entries: Vec<Publication>,
    ) -> Result<Vec<Published>, QueueError> {
        let topic = self.topic(topic_name)?;
        let _gate = self.gate.read().await;
        let single = entries.len() == 1;
        let field = |index: usize, name: &str| {
            if single {
                name.to_string()
            } else {
                format!("entries[{index}].{name}")
            }
        };
        // Which entries go to which subscription, decided under the topic's lock; and how many
        // each subscription's filter took, for its totals.
        let mut targets: Vec<(String, u64, String, Vec<usize>)> = Vec::new();
        let mut matched: Vec<(String, u64)> = Vec::new();
        let topic_id;
        {
            let state = lock(&topic);
            let record = &state.record;
            topic_id = record.id;
            for (index, entry) in entries.iter().enumerate() {
                check_entry(record, entry, index, &field)?;
            }
            for (name, subscription) in &state.subscriptions {
                let filter = &subscription.record.filter;
                let matching: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, entry)| match record.filter_type {
                        FilterType::Tags => filter::tags_match(filter, &entry.tags),
                        FilterType::RoutingKeys => {
                            filter::routing_key_matches(filter, &entry.routing_key)
                        }
                    })
                    .map(|(index, _)| index)
                    .collect();
                matched.push((name.clone(), matching.len() as u64));
                if !matching.is_empty() {
                    targets.push((
                        name.clone(),
                        subscription.record.queue_id,
                        subscription.record.queue_name.clone(),
                        matching,
                    ));
                }
            }
        }
        // Each queue checks and reserves its copies; a refusal fails the whole publish, and
        // the copies reserved so far are given back as `staged` is dropped.
        let mut staged: Vec<(Copies, usize)> = Vec::with_capacity(targets.len());
        let mut gone: Vec<String> = Vec::new();
        for (target, (subscription, queue_id, queue_name, matching)) in targets.iter().enumerate() {
            let local = self
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(queue_name)
                .filter(|handle| handle.id() == *queue_id)
                .cloned();
            let copies: Vec<Outgoing> = matching
                .iter()
                .map(|&index| Outgoing {
                    payload: entries[index].payload.copy_from_topic(topic_name),
                    delay_seconds: 0,
                    deduplication_id: entries[index].deduplication_id.clone(),
                })
                .collect();
            let copy = match (local, self.cluster.get()) {
                (Some(handle), _) => Copies::Local(
                    handle
                        .stage(copies)
                        .await
                        .map_err(|error| in_subscription(error, topic_name, subscription))?,
                ),
                (None, Some(cluster)) => {
                    match self.remote(cluster, *queue_id, copies).await {
                        Ok(Some(copy)) => copy,
                        // Deleted through another replica since it was subscribed.
                        Ok(None) => {
                            gone.push(subscription.clone());
                            continue;
                        }
                        Err(error) => return Err(in_subscription(error, topic_name, subscription)),
                    }
                }
                // Deleted queues take their subscriptions along (under the gate, so this is
                // only a guard).
                (None, None) => return Err(QueueError::QueueNotFound(queue_name.clone())),
            };
            staged.push((copy, target));
        }
        for name in gone {
            let topic_id = lock(&topic).record.id;
            self.storage.record(WriteOp::Unsubscribe { topic_id, name });
        }
        let first_id = self
            .message_ids
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let count = entries.len() as u64;
        let routed = (0..entries.len())
            .filter(|index| targets.iter().any(|target| target.3.contains(index)))
            .count() as u64;
        // A copy its queue deduplicated has no row, and is not delivered again.
        let mut delivered: HashMap<&str, u64> = HashMap::new();
        for (copy, target) in &staged {
            let rows = match copy {
                Copies::Local(copy) => copy.rows.len(),
                Copies::Remote { rows, .. } => rows.len(),
            };
            delivered.insert(&targets[*target].0, rows as u64);
        }
        let counts = PublishCounts {
            topic_id,
            topic: TopicTotals {
                published: count,
                unrouted: count - routed,
            },
            subscriptions: matched
                .into_iter()
                .map(|(name, matched)| {
                    let totals = SubscriptionTotals {
                        delivered: delivered.get(name.as_str()).copied().unwrap_or(0),
                        filtered_out: count - matched,
                    };
                    (name, totals)
                })
                .collect(),
        };
        let mut copies = Vec::with_capacity(staged.len());
        let mut remote_queue_ids = Vec::new();
        let mut pending = Vec::with_capacity(staged.len());
        for (copy, target) in staged {
            match copy {
                Copies::Local(copy) => {
                    if !copy.rows.is_empty() {
                        copies.push((copy.queue_id, copy.rows));
                    }
                    pending.push((Some((copy.commit, copy.answer)), Vec::new(), target));
                }
                Copies::Remote {
                    queue_id,
                    rows,
                    ids,
                } => {
                    if !rows.is_empty() {
                        remote_queue_ids.push(queue_id);
                        copies.push((queue_id, rows));
                    }
                    pending.push((None, ids, target));
                }
            }
        }
        let committed = self
            .commit(WriteOp::Publish {
                copies,
                remote_queue_ids: remote_queue_ids.clone(),
                last_publish_id: first_id + entries.len() as u64 - 1,
                counts: counts.clone(),
            })
            .await;
        let mut answers = Vec::with_capacity(pending.len());
        for (local, ids, target) in pending {
            let answer = local.map(|(commit, answer)| {
                let _ = commit.send(committed.clone());
                answer
            });
            answers.push((answer, ids, target));
        }
        committed?;
        if let Some(cluster) = self.cluster.get() {
            // Their owners take the copies in now, rather than at their next round.
            for (_, queue_id, queue_name, _) in &targets {
                if remote_queue_ids.contains(queue_id) {
                    let _ = cluster.moved_into.send(queue_name.clone());
                }
            }
        }
        let mut published: Vec<Published> = (0..entries.len() as u64)
            .map(|offset| Published {
                message_id: first_id + offset,
                copies: Vec::new(),
            })
            .collect();
        for (answer, ids, target) in answers {
            let ids = match answer {
                Some(answer) => answer
                    .await
                    .unwrap_or(Err(QueueError::Storage("a queue's actor ended".into())))?,
                None => ids,
            };
            let (subscription, _, queue_name, matching) = &targets[target];
            for (&index, id) in matching.iter().zip(ids) {
                published[index].copies.push(PublishedCopy {
                    subscription: subscription.clone(),
                    queue: queue_name.clone(),
                    message_id: id,
                });
            }
        }
        // What the commit added to the stored totals (subscriptions removed since match
        // nothing, there as here).
        let mut state = lock(&topic);
        if state.record.id == counts.topic_id {
            state.totals.published += counts.topic.published;
            state.totals.unrouted += counts.topic.unrouted;
            for (name, added) in &counts.subscriptions {
                if let Some(subscription) = state.subscriptions.get_mut(name) {
                    subscription.totals.delivered += added.delivered;
                    subscription.totals.filtered_out += added.filtered_out;
                }
            }
        }
        Ok(published)
    }

    /// Cluster mode: the copies for a queue another replica owns, checked against the queue
    /// as PostgreSQL has it: its max_message_size, its backlog cap (against the backlog stored
    /// now: sends committing meanwhile through its owner are not counted, so the cap may be
    /// passed by those) and its deduplication window (against the ids stored: a copy whose
    /// id was accepted within the window is not added again, and answers the earlier id).
    /// None if the queue no longer exists.
    async fn remote(
        &self,
        cluster: &ClusterPart,
        queue_id: u64,
        copies: Vec<Outgoing>,
    ) -> Result<Option<Copies>, QueueError> {
        let Some((record, backlog)) = cluster.store.queue(queue_id).await? else {
            return Ok(None);
        };
        let attributes = &record.attributes;
        let now = self.clock.now_ms();
        let since = now - i64::from(attributes.deduplication_window_seconds) * 1000;
        let mut rows = Vec::with_capacity(copies.len());
        let mut ids = Vec::with_capacity(copies.len());
        // Within one publish, copies with the same deduplication id are one message.
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for copy in copies {
            let size = copy.payload.body.len() + copy.payload.attributes_size();
            if size > attributes.max_message_size as usize {
                return Err(QueueError::TooLarge(format!(
                    "the copy is {size} bytes (body and attributes); queue {:?}'s \
                     max_message_size is {}",
                    record.name, attributes.max_message_size
                )));
            }
            if let Some(deduplication_id) = &copy.deduplication_id {
                if let Some(&id) = seen.get(deduplication_id) {
                    ids.push(id);
                    continue;
                }
                if let Some(id) = cluster
                    .store
                    .earlier_copy(queue_id, deduplication_id, since)
                    .await?
                {
                    ids.push(id);
                    continue;
                }
            }
            let id = self.message_ids.fetch_add(1, Ordering::Relaxed);
            if let Some(deduplication_id) = &copy.deduplication_id {
                seen.insert(deduplication_id.clone(), id);
            }
            ids.push(id);
            rows.push(NewMessage {
                id,
                payload: copy.payload,
                enqueue_ms: now,
                visible_at_ms: now,
                deduplication_id: copy.deduplication_id,
            });
        }
        if !rows.is_empty() && backlog + rows.len() as u64 > attributes.max_backlog {
            return Err(QueueError::BacklogFull {
                name: record.name.clone(),
                backlog,
                max: attributes.max_backlog,
            });
        }
        Ok(Some(Copies::Remote {
            queue_id,
            rows,
            ids,
        }))
    }
}

/// Checks one entry against the topic: its size, and its tags or routing key by the filter type.
fn check_entry(
    record: &TopicRecord,
    entry: &Publication,
    index: usize,
    field: &impl Fn(usize, &str) -> String,
) -> Result<(), QueueError> {
    let size = entry.payload.body.len() + entry.payload.attributes_size();
    if size > record.max_message_size as usize {
        return Err(QueueError::TooLarge(format!(
            "{} (with its attributes) is {size} bytes; the topic's max_message_size is {}",
            field(index, "body"),
            record.max_message_size
        )));
    }
    match record.filter_type {
        FilterType::Tags => {
            if !entry.routing_key.is_empty() {
                return Err(QueueError::InvalidArgument(format!(
                    "{} is set, but topic {:?} filters by tags: send tags instead",
                    field(index, "routing_key"),
                    record.name
                )));
            }
            filter::check_tags(&field(index, "tags"), &entry.tags)
        }
        FilterType::RoutingKeys => {
            if !entry.tags.is_empty() {
                return Err(QueueError::InvalidArgument(format!(
                    "{} are set, but topic {:?} filters by routing keys: send a routing_key \
                     instead",
                    field(index, "tags"),
                    record.name
                )));
            }
            if entry.routing_key.is_empty() {
                // Only subscriptions without binding keys take it.
                return Ok(());
            }
            filter::check_key(&field(index, "routing_key"), &entry.routing_key, false)
        }
    }
}

/// A queue's refusal of its copy, said as the publish's: which subscription, which queue.
fn in_subscription(error: QueueError, topic: &str, subscription: &str) -> QueueError {
    let context = |message: String| {
        format!("subscription {subscription:?} of topic {topic:?} refused the copy: {message}")
    };
    match error {
        QueueError::InvalidArgument(message) => QueueError::InvalidArgument(context(message)),
        QueueError::TooLarge(message) => QueueError::TooLarge(context(message)),
        other => other,
    }
}

fn info(state: &TopicState) -> TopicInfo {
    TopicInfo {
        record: state.record.clone(),
        subscriptions: state.subscriptions.len(),
        totals: state.totals,
    }
}

fn subscription_info(topic: &str, state: &SubscriptionState) -> SubscriptionInfo {
    SubscriptionInfo {
        topic: topic.to_string(),
        record: state.record.clone(),
        totals: state.totals,
    }
}
