//! Cluster mode: several replicas of `spool serve` share one PostgreSQL schema. Each queue has
//! one owner at a time, which runs its actor; every replica accepts every call and forwards the
//! calls for queues it does not own to their owner. PostgreSQL's transactions are the only
//! arbiter: no consensus of Spool's own, and no lease outside the database is trusted for
//! safety.
//!
//! - [`membership`]: this replica's row in `members` (advertised address, heartbeat) and its
//!   lease.
//! - [`placement`]: which live member a queue belongs on (rendezvous hashing).
//! - [`ownership`]: takeovers (epoch + 1, state recovered from PostgreSQL), hand-offs, losses;
//!   the directory of owners calls are routed by.
//! - [`forwarding`]: the gRPC channels to the peers, and what a forwarded call carries (the
//!   caller's principal asserted with the cluster's key: `auth::forwarded`).
//! - [`adoption`]: messages moved into a queue another replica owns (dead-letter moves,
//!   redrives), taken in by its owner.
//! - [`routing`]: the QueueService in front of the local one that decides, call by call, to
//!   serve here or to forward.
//!
//! Safety comes from the fence (`storage::postgres::fence`): every write transaction of an owner
//! checks its epoch under a share lock that a takeover's `UPDATE` waits for.

pub mod adoption;
pub mod forwarding;
pub mod join;
pub mod membership;
pub mod ownership;
pub mod placement;
pub mod routing;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::auth::forwarded::ForwardKey;
use crate::error::QueueError;
use crate::grpc::health::HealthReporter;
use crate::pb::queue_service_server::QueueServiceServer;
use crate::storage::postgres::ConnectOptions;
use adoption::Adoptions;
use forwarding::{MAX_HOPS, Peers};
use membership::Membership;
use ownership::Ownership;
use routing::Routed;

/// Longest pause between two rounds of heartbeat and ownership; shorter for short TTLs (a
/// quarter of it), so a member renews its lease several times within one TTL.
const MAX_ROUND: Duration = Duration::from_millis(1_000);
/// How long a call for a queue between two owners waits for the new one before it is answered
/// UNAVAILABLE; a graceful hand-off takes about one round.
const MOVE_WAIT: Duration = Duration::from_secs(2);
/// How often such a call reads the queue's owner again meanwhile.
const MOVE_POLL: Duration = Duration::from_millis(100);
/// The replicas' own session settings on the cluster connection: a takeover waits this long
/// at most for the old owner's transactions in flight, then tries again next round.
const LOCK_TIMEOUT_MS: u64 = 5_000;

/// Where a call for a queue goes.
pub enum Route {
    /// Served by this replica (the queue is here, or nobody owns the name yet and it is placed
    /// here).
    Local,
    /// Forwarded to the owner at this address.
    Forward(String),
    /// Answered here with this error (retryable UNAVAILABLE).
    Refuse(QueueError),
}

/// One look at where a queue is.
enum Found {
    Route(Route),
    /// Between two owners (handed off, or its owner dead and not yet replaced).
    Moving,
}

/// This replica's part in the cluster.
pub struct Cluster {
    membership: Arc<Membership>,
    ownership: Arc<Ownership>,
    peers: Peers,
    /// Asserts the callers of forwarded calls, and checks the assertions of forwards here.
    forward_key: Arc<ForwardKey>,
    /// Takes in messages moved into the queues here by other replicas.
    adoptions: Arc<Adoptions>,
}

impl Cluster {
    pub fn new(
        membership: Arc<Membership>,
        ownership: Arc<Ownership>,
        forward_key: Arc<ForwardKey>,
        adoptions: Arc<Adoptions>,
    ) -> Self {
        Self {
            membership,
            ownership,
            peers: Peers::default(),
            forward_key,
            adoptions,
        }
    }

    pub fn adoptions(&self) -> &Arc<Adoptions> {
        &self.adoptions
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn forward_key(&self) -> &Arc<ForwardKey> {
        &self.forward_key
    }

    /// Where a call for `queue` that has made `hops` hops goes. A queue that is moving (handed
    /// off, or its owner dead and not yet replaced) is waited for a moment, reading its owner
    /// from PostgreSQL again, so that a graceful hand-off costs callers a pause rather than an
    /// error.
    pub async fn route(&self, queue: &str, hops: u32, served_here: bool) -> Route {
        let deadline = tokio::time::Instant::now() + MOVE_WAIT;
        let mut fresh = false;
        loop {
            match self.find(queue, hops, served_here, fresh).await {
                Found::Route(route) => return route,
                Found::Moving if tokio::time::Instant::now() >= deadline => {
                    return Route::Refuse(moving(queue));
                }
                Found::Moving => {}
            }
            tokio::time::sleep(MOVE_POLL).await;
            fresh = true;
        }
    }

    /// Where `queue` is, from the directory, or from PostgreSQL when the directory does not know
    /// it or `fresh` is asked for.
    async fn find(&self, queue: &str, hops: u32, served_here: bool, fresh: bool) -> Found {
        if !self.membership.lease_valid() {
            return Found::Route(Route::Refuse(QueueError::Storage(
                "this replica has lost its membership of the cluster (PostgreSQL unreachable \
                 for longer than the member TTL); retry the call on another replica"
                    .into(),
            )));
        }
        if served_here {
            return Found::Route(Route::Local);
        }
        let forward = |address: String| {
            if hops < MAX_HOPS {
                Found::Route(Route::Forward(address))
            } else {
                Found::Moving
            }
        };
        let owned = match self.ownership.owner_of(queue) {
            Some(owned) if !fresh => Some(owned),
            _ => self.ownership.look_up(queue).await,
        };
        match owned {
            Some(owned) => match owned.owner.as_deref() {
                // Claimed by this replica, its state being recovered (or to be claimed again).
                Some(owner) if owner == self.membership.id() => Found::Moving,
                Some(owner) => match self.membership.member(owner) {
                    Some(member) => forward(member.address),
                    // Its owner is dead; the queue is about to be taken over.
                    None => Found::Moving,
                },
                None => Found::Moving,
            },
            // Not in PostgreSQL: the replica the name is placed on answers (NOT_FOUND), and
            // creates it there.
            None => {
                let placement = self.membership.placement();
                Found::Route(
                    match placement::place(queue, placement.iter().map(String::as_str)) {
                        Some(target) if target != self.membership.id() && hops < MAX_HOPS => {
                            match self.membership.member(target) {
                                Some(member) => Route::Forward(member.address),
                                None => Route::Local,
                            }
                        }
                        _ => Route::Local,
                    },
                )
            }
        }
    }

    /// The addresses of the other live members (for calls every replica answers part of).
    pub fn other_members(&self) -> Vec<String> {
        self.membership
            .live()
            .into_iter()
            .filter(|member| member.id != self.membership.id())
            .map(|member| member.address)
            .collect()
    }
}

fn moving(queue: &str) -> QueueError {
    QueueError::Storage(format!(
        "queue {queue:?} is moving between replicas; retry the call"
    ))
}

/// What the cluster's task needs.
pub struct Driver {
    pub membership: Arc<Membership>,
    pub ownership: Arc<Ownership>,
    /// Drained every round, so a lost notice of moved messages only delays them.
    pub adoptions: Arc<Adoptions>,
    pub options: ConnectOptions,
    pub schema: String,
    /// Queues whose writes were fenced off (from the storage's fence).
    pub lost: mpsc::UnboundedReceiver<u64>,
    pub health: HealthReporter,
    /// Cancelled at shutdown: the task hands every queue off, deregisters, and ends.
    pub stopping: CancellationToken,
    /// Told once the hand-off at shutdown is done.
    pub left: tokio::sync::oneshot::Sender<()>,
    /// Told the first time the replica is SERVING.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Driver {
    /// Heartbeats and ownership rounds until shutdown; then the graceful leave.
    pub async fn run(mut self) {
        let round = (self.membership.ttl() / 4).min(MAX_ROUND);
        let mut client: Option<Arc<Client>> = None;
        // The ownership round, in a task of its own: one that outlives its time limit is left
        // to finish rather than cancelled (a takeover or hand-off cut off between its steps
        // would strand its queue: claimed in PostgreSQL with no actor anywhere), and the next
        // round waits for it.
        let mut round_task: Option<tokio::task::JoinHandle<Result<(), String>>> = None;
        let mut serving = false;
        loop {
            // The lease ended (PostgreSQL unreachable, or this process was paused): whatever
            // this replica owned may be another's by now. Stop serving it all before anything
            // else, and say so.
            if self.membership.lease_expired() {
                tracing::error!(
                    "no heartbeat reached PostgreSQL within the member TTL; this replica stops \
                     serving its queues until it can again"
                );
                self.ownership.drop_all().await;
                self.membership.forget_lease();
                self.set_serving(&mut serving, false);
            }
            if client.as_ref().is_none_or(|client| client.is_closed()) {
                client = self.connect().await.map(Arc::new);
            }
            if let Some(connected) = &client {
                match self.membership.heartbeat(connected, &self.schema).await {
                    Ok(()) => {
                        // Bounded, so a stalled PostgreSQL cannot hold the lease check above.
                        let round_limit = self.membership.ttl();
                        let mut task = match round_task.take() {
                            Some(unfinished) if !unfinished.is_finished() => unfinished,
                            _ => {
                                let ownership = self.ownership.clone();
                                let connected = connected.clone();
                                tokio::spawn(async move { ownership.reconcile(&connected).await })
                            }
                        };
                        match tokio::time::timeout(round_limit, &mut task).await {
                            Ok(Ok(Ok(()))) => {}
                            Ok(Ok(Err(error))) => tracing::warn!(%error, "ownership round failed"),
                            Ok(Err(error)) => tracing::error!(%error, "ownership round failed"),
                            Err(_) => {
                                tracing::warn!(limit = ?round_limit, "ownership round took too long; it goes on, and the next waits for it");
                                round_task = Some(task);
                                client = None;
                            }
                        }
                        if self.membership.lease_valid()
                            && tokio::time::timeout(round_limit, self.adoptions.drain_all())
                                .await
                                .is_err()
                        {
                            tracing::warn!(limit = ?round_limit, "taking in moved messages took too long");
                        }
                        let valid = self.membership.lease_valid();
                        self.set_serving(&mut serving, valid);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "heartbeat failed");
                        client = None;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(round) => {}
                Some(queue_id) = self.lost.recv() => self.ownership.lost(queue_id).await,
                () = self.stopping.cancelled() => break,
            }
        }
        if let Some(unfinished) = round_task {
            // Hand-offs must not race a takeover still under way.
            let _ = tokio::time::timeout(self.membership.ttl(), unfinished).await;
        }
        self.leave(client).await;
    }

    /// Graceful leave: marked leaving (placement skips this member), every queue handed off,
    /// the row deleted.
    async fn leave(self, client: Option<Arc<Client>>) {
        let started = std::time::Instant::now();
        self.membership.leave();
        let client = match client {
            Some(client) if !client.is_closed() => Some(client),
            _ => self.connect().await.map(Arc::new),
        };
        if let Some(client) = client {
            if self
                .membership
                .heartbeat(&client, &self.schema)
                .await
                .is_ok()
            {
                self.ownership.hand_off_all(&client).await;
            }
            self.membership.deregister(&client, &self.schema).await;
        }
        tracing::info!(elapsed = ?started.elapsed(), "left the cluster");
        let _ = self.left.send(());
    }

    async fn connect(&self) -> Option<Client> {
        // Bounded by half the TTL: a connection attempt that hangs (a partition) must not keep
        // the loop from noticing that the lease ended.
        let attempt = tokio::time::timeout(self.membership.ttl() / 2, self.options.connect()).await;
        let Ok(connected) = attempt else {
            tracing::warn!("connecting to PostgreSQL for the cluster's heartbeat timed out");
            return None;
        };
        match connected {
            Ok(client) => {
                let settings = format!("SET lock_timeout = {LOCK_TIMEOUT_MS}");
                if let Err(error) = client.batch_execute(&settings).await {
                    tracing::warn!(%error, "cannot set up the cluster's PostgreSQL session");
                    return None;
                }
                Some(client)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot connect to PostgreSQL for the cluster's heartbeat");
                None
            }
        }
    }

    fn set_serving(&mut self, serving: &mut bool, now: bool) {
        // At shutdown the server has said NOT_SERVING; a round ending meanwhile must not undo it.
        if *serving == now || self.stopping.is_cancelled() {
            return;
        }
        *serving = now;
        if now {
            tracing::info!(
                member = self.membership.id(),
                "a member of the cluster; serving"
            );
            self.health.set_serving::<QueueServiceServer<Routed>>();
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
        } else {
            self.health.set_not_serving::<QueueServiceServer<Routed>>();
        }
    }
}
