//! Cluster mode's additions to the schema, made idempotently by every replica at open (no new
//! schema version: a single server ignores them, and an older Spool reads the schema as before).
//!
//! - `members`: each replica, the address others forward calls to it on, and its heartbeat
//!   (PostgreSQL's own clock, so replicas' clocks need not agree).
//! - `queues.owner`: the member that owns the queue, next to `queues.owner_epoch`, the fencing
//!   token that grows on every change of owner; NULL while a queue is handed off.

use tokio_postgres::Client;

use super::schema::{self, quoted};
use crate::storage::StorageError;

/// Second key of the transaction lock that serialises the replicas' first `prepare` (concurrent
/// `CREATE TABLE IF NOT EXISTS` of one table can fail on PostgreSQL's catalog).
const PREPARE_LOCK: i32 = 0x434c_5354;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS {s}.members (
    id text PRIMARY KEY,
    address text NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    -- Set by a replica that is shutting down: placement leaves it out, so its queues move.
    leaving boolean NOT NULL DEFAULT false
);
ALTER TABLE {s}.queues ADD COLUMN IF NOT EXISTS owner text;
";

/// Creates the cluster's tables and columns if they are missing.
pub async fn prepare(client: &Client, schema: &str) -> Result<(), StorageError> {
    let io = |e: tokio_postgres::Error| describe(schema, &e);
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({PREPARE_LOCK}, hashtext('{schema}')); {} COMMIT;",
        CREATE.replace("{s}", &quoted(schema))
    );
    if let Err(error) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(io(error));
    }
    Ok(())
}

fn describe(schema: &str, error: &tokio_postgres::Error) -> StorageError {
    schema::describe(schema, "cannot prepare the cluster's tables", error)
}

/// Message ids a replica reserves at startup: ids are handed out in memory, so each replica
/// takes a range of its own from `counters`. 2^40 per start: at a million messages a second
/// that is twelve days of one process's sends (past it, sends fail until a restart reserves a
/// new block), and the 63-bit id space holds eight million starts.
pub const MESSAGE_ID_BLOCK: u64 = 1 << 40;
/// Queue ids a replica reserves at startup, likewise.
pub const QUEUE_ID_BLOCK: u64 = 1 << 20;

/// The id ranges reserved for one replica: `[start, end)` of queue ids and of message ids.
#[derive(Debug, Clone, Copy)]
pub struct IdBlocks {
    pub queue_ids: (u64, u64),
    pub message_ids: (u64, u64),
}

/// Reserves this replica's id ranges: each counter is raised by a block in one statement, so
/// no two replicas' ranges overlap (and a single server started later continues above them).
pub async fn reserve_id_blocks(client: &Client, schema: &str) -> Result<IdBlocks, StorageError> {
    let q = quoted(schema);
    let reserve = async |name: &str, block: u64| -> Result<(u64, u64), StorageError> {
        let row = client
            .query_one(
                &format!(
                    "UPDATE {q}.counters SET value = value + $2 WHERE name = $1 RETURNING value"
                ),
                &[&name, &(block as i64)],
            )
            .await
            .map_err(|e| schema::describe(schema, "cannot reserve ids", &e))?;
        let end: i64 = row
            .try_get(0)
            .map_err(|e| schema::describe(schema, "cannot reserve ids", &e))?;
        let end = end as u64;
        Ok((end - block, end))
    };
    let queue_ids = reserve("next_queue_id", QUEUE_ID_BLOCK).await?;
    let message_ids = reserve("next_message_id", MESSAGE_ID_BLOCK).await?;
    Ok(IdBlocks {
        queue_ids,
        message_ids,
    })
}
