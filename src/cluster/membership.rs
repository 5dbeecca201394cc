//! This replica as a member of the cluster: its row in `members` (id, advertised address,
//! heartbeat), the other live members as of the last heartbeat, and the lease the heartbeat
//! renews.
//!
//! A member whose heartbeat is older than the TTL is dead to the others, which then take its
//! queues over. The heartbeat's time is PostgreSQL's `now()`, so replicas' clocks need not agree.
//! The lease is the same TTL counted on this replica's monotonic clock from before the
//! heartbeat was sent, so it always ends before the others can count this member dead: past it,
//! this replica serves none of its queues (see `ownership`), even before it learns whether
//! they were taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// Rows of members silent this many TTLs are deleted by the next heartbeat of any member.
const FORGET_AFTER_TTLS: u32 = 360;

/// A live member, as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// host:port the other replicas forward calls to.
    pub address: String,
    /// Shutting down: its queues move away, and none are placed on it.
    pub leaving: bool,
}

pub struct Membership {
    /// Unique to this process: a restarted replica is a new member, so nothing of a previous
    /// life (its epochs) can be mistaken for its own.
    id: String,
    address: String,
    ttl: Duration,
    /// Live members as of the last heartbeat, this one included.
    live: RwLock<Vec<Member>>,
    /// Until when this replica may serve the queues it owns: the last heartbeat's send time
    /// plus the TTL. None before the first heartbeat.
    lease_until: Mutex<Option<Instant>>,
    /// Set at shutdown: the next heartbeat marks this member as leaving.
    leaving: AtomicBool,
}

impl Membership {
    pub fn new(address: String, ttl: Duration) -> Self {
        Self {
            id: new_member_id(),
            address,
            ttl,
            live: RwLock::default(),
            lease_until: Mutex::default(),
            leaving: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renews this member's row and reads the live members; on success the lease is renewed.
    pub async fn heartbeat(&self, client: &Client, schema: &str) -> Result<(), String> {
        let sent = Instant::now();
        let q = crate::storage::postgres::schema::quoted(schema);
        let leaving = self.leaving.load(Ordering::Relaxed);
        let ttl_seconds = self.ttl.as_secs_f64();
        let beat = async {
            client
                .execute(
                    &format!(
                        "INSERT INTO {q}.members (id, address, heartbeat_at, leaving)
                         VALUES ($1, $2, now(), $3)
                         ON CONFLICT (id) DO UPDATE
                            SET address = $2, heartbeat_at = now(), leaving = $3"
                    ),
                    &[&self.id, &self.address, &leaving],
                )
                .await?;
            client
                .execute(
                    &format!(
                        "DELETE FROM {q}.members
                          WHERE heartbeat_at < now() - make_interval(secs => $1)"
                    ),
                    &[&(ttl_seconds * f64::from(FORGET_AFTER_TTLS))],
                )
                .await?;
            client
                .query(
                    &format!(
                        "SELECT id, address, leaving FROM {q}.members
                          WHERE heartbeat_at > now() - make_interval(secs => $1)
                          ORDER BY id"
                    ),
                    &[&ttl_seconds],
                )
                .await
        };
        // A heartbeat that takes longer than the TTL is no heartbeat.
        let rows = match tokio::time::timeout(self.ttl, beat).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no answer within the member TTL ({:?})", self.ttl)),
        };
        let mut live = Vec::with_capacity(rows.len());
        for row in &rows {
            live.push(Member {
                id: row.try_get(0).map_err(|e| e.to_string())?,
                address: row.try_get(1).map_err(|e| e.to_string())?,
                leaving: row.try_get(2).map_err(|e| e.to_string())?,
            });
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        *self.lease_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent + self.ttl);
        Ok(())
    }

    /// Whether the lease holds: this replica may serve the queues it owns.
    pub fn lease_valid(&self) -> bool {
        self.lease_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether a heartbeat ever succeeded and the lease has ended since.
    pub fn lease_expired(&self) -> bool {
        self.lease_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() >= until)
    }

    /// Ends the lease at once (this replica has stopped serving its queues).
    pub fn forget_lease(&self) {
        *self.lease_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The live members as of the last heartbeat.
    pub fn live(&self) -> Vec<Member> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live member `id`, if it is one.
    pub fn member(&self, id: &str) -> Option<Member> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|member| member.id == id)
            .cloned()
    }

    /// The members queues are placed on: live and not leaving.
    pub fn placement(&self) -> Vec<String> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|member| !member.leaving)
            .map(|member| member.id.clone())
            .collect()
    }

    /// From the next heartbeat on, this member is leaving (graceful shutdown).
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }

    /// Deletes this member's row (the last thing a graceful shutdown does).
    pub async fn deregister(&self, client: &Client, schema: &str) {
        let q = crate::storage::postgres::schema::quoted(schema);
        let _ = client
            .execute(
                &format!("DELETE FROM {q}.members WHERE id = $1"),
                &[&self.id],
            )
            .await;
    }
}

/// A fresh member id: the host name (for the operator reading `members`) and random bits.
fn new_member_id() -> String {
    let mut random = [0u8; 8];
    // No randomness from the OS is a broken machine; the time still tells processes apart.
    if getrandom::fill(&mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or_default();
        random = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "spool".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(63)
        .collect();
    format!("{host}-{:016x}", u64::from_le_bytes(random))
}
