//! Replicas and their databases.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::common::{ChildServer, Client, connect};

/// The member TTL of the tests' replicas: short (3 s), so deaths are noticed in seconds;
/// `SPOOL_CLUSTER_TEST_TTL` sets another, e.g. the default 10 to measure failover as deployed.
pub fn ttl_seconds() -> u64 {
    std::env::var("SPOOL_CLUSTER_TEST_TTL")
        .ok()
        .and_then(|ttl| ttl.parse().ok())
        .unwrap_or(3)
}

fn pg_host() -> String {
    std::env::var("SPOOL_TEST_PGHOST").unwrap_or_else(|_| "127.0.0.1".into())
}

fn pg_port() -> String {
    std::env::var("SPOOL_TEST_PGPORT").unwrap_or_else(|_| "5432".into())
}

fn pg_user() -> String {
    std::env::var("SPOOL_TEST_PGUSER").unwrap_or_else(|_| "postgres".into())
}

/// A database of one test's own, dropped when it goes.
pub struct Database {
    pub name: String,
}

impl Database {
    /// A new database, or None (the test is skipped) when no PostgreSQL answers and this is
    /// not CI.
    pub async fn create(test: &str) -> Option<Self> {
        let admin = admin_url("postgres");
        let client = match tokio_postgres::connect(&admin, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(error) => {
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("cluster tests need PostgreSQL at {admin} (CI=true): {error}");
                }
                eprintln!(
                    "SKIPPED cluster test {test}: no PostgreSQL answers at {admin} ({error}); CI runs it"
                );
                return None;
            }
        };
        let name = format!("spool_cluster_{}_{test}", std::process::id());
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&statement)
                .await
                .expect("create the test's database");
        }
        Some(Self { name })
    }

    /// The libpq URL of this database.
    pub fn url(&self) -> String {
        admin_url(&self.name)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect to the test's database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop is not async: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin_url("postgres"), NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn admin_url(database: &str) -> String {
    format!(
        "host={} port={} user={} dbname={database}",
        pg_host(),
        pg_port(),
        pg_user()
    )
}

/// One replica of the cluster on `url`.
pub fn replica(dir: &Path, url: &str, extra: &[&str]) -> ChildServer {
    let mut args = vec![
        "--postgres-url",
        url,
        "--advertise-address",
        "127.0.0.1",
        "--member-ttl-seconds",
    ];
    let ttl = ttl_seconds().to_string();
    args.push(&ttl);
    args.extend_from_slice(extra);
    ChildServer::start_with(dir, &args, &[])
}

/// `count` replicas on `url`, each with a directory of its own under `dir`, once each has seen
/// the others: a replica is ready once it is a member, but the earlier ones learn of it only at
/// their next round (a quarter of the TTL), and until then they place queues without it, which
/// would move them (one retryable UNAVAILABLE) right after.
pub fn replicas(dir: &Path, url: &str, count: usize) -> Vec<ChildServer> {
    let replicas = (0..count)
        .map(|index| {
            let data_dir = dir.join(format!("replica-{index}"));
            replica(&data_dir, url, &[])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(ttl_seconds().min(4) * 1_000 / 2));
    replicas
}

/// The gRPC address of the queue's owner, as PostgreSQL records it (waiting for one).
pub async fn owner_address(database: &tokio_postgres::Client, queue: &str) -> String {
    for _ in 0..200 {
        let row = database
            .query_opt(
                "SELECT m.address FROM spool.queues q JOIN spool.members m ON m.id = q.owner
                  WHERE q.name = $1",
                &[&queue],
            )
            .await
            .expect("owner query");
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("queue {queue} has no owner");
}

/// The queue's owner epoch.
pub async fn epoch(database: &tokio_postgres::Client, queue: &str) -> i64 {
    database
        .query_one(
            "SELECT owner_epoch FROM spool.queues WHERE name = $1",
            &[&queue],
        )
        .await
        .expect("epoch query")
        .get(0)
}

/// The replica listening on `address`, and the others.
pub fn split<'a>(
    replicas: &'a [ChildServer],
    address: &str,
) -> (&'a ChildServer, Vec<&'a ChildServer>) {
    let owner = replicas
        .iter()
        .find(|replica| replica.addr.to_string() == address)
        .expect("the owner is one of the replicas");
    let others = replicas
        .iter()
        .filter(|replica| replica.addr.to_string() != address)
        .collect();
    (owner, others)
}

/// A client of `replica`.
pub async fn client_of(replica: &ChildServer) -> Client {
    connect(&replica.endpoint()).await
}
