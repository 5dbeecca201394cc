//! Messages one replica moves into a queue whose actor may be on another (dead-letter moves,
//! redrives) or publishes into it (a topic's copies, see `topic`), and how that queue's owner
//! takes them in.
//!
//! A move commits, in the moving queue's own fenced transaction, the rows' new queue and one
//! `pending_adoptions` entry per row (`storage::postgres::writer`): all or none, whatever
//! crashes. Then the target's owner is told (a relay, see `QueueHandle::relay`, hands the
//! name to [`tell_owners`]): locally, or by a GetQueue forwarded to the owner with
//! [`ADOPT_HEADER`] from this replica (its identity asserted with the cluster's key). The owner
//! takes the entries in a transaction that first reads its epoch `FOR SHARE` (a stale owner
//! takes nothing), deletes them and reads the rows' times, then hands the messages to its
//! actor ([`Adoptions::drain`]). A lost notice only delays them: every round the owner drains
//! each of its queues that has entries, and a takeover recovers the rows and forgets the
//! entries of the rows it read (the rest are drained after).
//!
//! Moved messages are visible at once in the target, as on a single server.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};

use super::Cluster;
use super::Route;
use crate::auth::forwarded::{IDENTITY_HEADER, REPLICA_PRINCIPAL, method_path};
use crate::pb;
use crate::queue::{Adopted, QueueHandle};
use crate::registry::Registry;
use crate::storage::postgres::ConnectOptions;
use crate::storage::postgres::cluster_tables::{pending_queues, take_pending};
use crate::storage::postgres::fence::Fence;

/// The metadata of the GetQueue that tells an owner messages were moved into the queue.
pub const ADOPT_HEADER: &str = "spool-adopt-moved";
/// Messages taken in per transaction.
const TAKE_LIMIT: usize = 10_000;
/// Transactions per drain of one queue; more waits for the next round.
const MAX_TAKES: usize = 100;

/// Takes in what other replicas moved into the queues served here.
pub struct Adoptions {
    registry: Arc<Registry>,
    fence: Arc<Fence>,
    options: ConnectOptions,
    schema: String,
    /// Its own connection (a drain is a transaction); one drain at a time.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Adoptions {
    pub fn new(
        registry: Arc<Registry>,
        fence: Arc<Fence>,
        options: ConnectOptions,
        schema: String,
    ) -> Self {
        Self {
            registry,
            fence,
            options,
            schema,
            client: tokio::sync::Mutex::default(),
        }
    }

    /// Takes in the messages moved into the queue `name`, if it is served here.
    pub async fn drain(self: &Arc<Self>, name: &str) {
        if let Ok(handle) = self.registry.get(name) {
            self.drain_queue(handle).await;
        }
    }

    /// Every round: drains each queue served here that has messages pending adoption.
    pub async fn drain_all(self: &Arc<Self>) {
        let queue_ids = {
            let mut slot = self.client.lock().await;
            let Some(client) = self.connected(&mut slot).await else {
                return;
            };
            match pending_queues(client, &self.schema).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the queues with moved messages");
                    *slot = None;
                    return;
                }
            }
        };
        for queue_id in queue_ids {
            if let Some(handle) = self.registry.by_id(queue_id) {
                self.drain_queue(handle).await;
            }
        }
    }

    /// Drains one queue in a task of its own, which runs to its end even if the caller stops
    /// waiting (a forwarded GetQueue whose caller went away, a round past its time limit):
    /// once a transaction deleting entries may have committed, its messages must reach the
    /// actor, or they would stay out of memory, undelivered, until the queue's next takeover.
    async fn drain_queue(self: &Arc<Self>, handle: QueueHandle) {
        let adoptions = self.clone();
        let drained = tokio::spawn(async move { adoptions.take_in(&handle).await }).await;
        if let Err(error) = drained {
            tracing::error!(%error, "taking in moved messages failed");
        }
    }

    async fn take_in(&self, handle: &QueueHandle) {
        let Some(epoch) = self.fence.held(handle.id()) else {
            return;
        };
        let mut slot = self.client.lock().await;
        let Some(client) = self.connected(&mut slot).await else {
            return;
        };
        for _ in 0..MAX_TAKES {
            match take_pending(client, &self.schema, handle.id(), epoch, TAKE_LIMIT).await {
                Ok(Some(taken)) => {
                    let count = taken.len();
                    if count > 0 {
                        tracing::debug!(queue = handle.name(), count, "took in moved messages");
                    }
                    // The mover, on another replica, reserved nothing in this queue's byte
                    // quota; the actor takes adopted bytes as reserved, so they are added here
                    // (possibly past `max_bytes`: docs/deploy.md says a cross-replica move is not
                    // held to it).
                    let bytes = taken.iter().map(|&(_, _, size)| u64::from(size)).sum();
                    handle.quota().add(bytes);
                    handle.adopt(
                        taken
                            .into_iter()
                            .map(|(id, enqueue_ms, size)| Adopted {
                                id,
                                enqueue_ms,
                                payload: None,
                                size,
                            })
                            .collect(),
                    );
                    if count < TAKE_LIMIT {
                        return;
                    }
                }
                // No longer this replica's: its new owner recovers the rows.
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(queue = handle.name(), %error, "cannot take in moved messages; trying again next round");
                    *slot = None;
                    return;
                }
            }
        }
    }

    async fn connected<'a>(&self, slot: &'a mut Option<Client>) -> Option<&'a mut Client> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            match self.options.connect().await {
                Ok(client) => *slot = Some(client),
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to PostgreSQL to take in moved messages");
                    return None;
                }
            }
        }
        slot.as_mut()
    }
}

/// Tells the owners of queues that messages were moved into them (the names come from the
/// relays), until the channel closes. Names told several times meanwhile are told once.
pub async fn tell_owners(cluster: Arc<Cluster>, mut moved_into: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = moved_into.recv().await {
        let mut names = BTreeSet::from([first]);
        while let Ok(name) = moved_into.try_recv() {
            names.insert(name);
        }
        for name in names {
            tell_owner(&cluster, &name).await;
        }
    }
}

async fn tell_owner(cluster: &Cluster, name: &str) {
    match cluster
        .route(name, 0, cluster.adoptions.registry.contains(name))
        .await
    {
        Route::Local => cluster.adoptions.drain(name).await,
        Route::Forward(address) => {
            let Ok(mut client) = cluster.peers().client(&address) else {
                return;
            };
            let mut request = Request::new(pb::GetQueueRequest {
                queue_name: name.to_string(),
            });
            let identity =
                cluster
                    .forward_key()
                    .sign(REPLICA_PRINCIPAL, &method_path("get_queue"), &address);
            if let (Ok(identity), Ok(adopt)) = (
                identity.parse::<MetadataValue<Ascii>>(),
                "1".parse::<MetadataValue<Ascii>>(),
            ) {
                request.metadata_mut().insert(IDENTITY_HEADER, identity);
                request.metadata_mut().insert(ADOPT_HEADER, adopt);
            }
            request.set_timeout(std::time::Duration::from_secs(5));
            // The owner's next round drains it anyway.
            if let Err(status) = client.get_queue(request).await {
                tracing::debug!(queue = name, %status, "could not tell a queue's owner of moved messages");
            }
        }
        // Moving, or its owner unknown: whoever owns it next drains it in its round.
        Route::Refuse(_) => {}
    }
}
