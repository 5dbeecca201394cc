//! Cluster mode's additions to the schema, made idempotently by every replica at open (no new
//! schema version: a single server ignores them, and an older Spool reads the schema as before).
//!
//! - `members`: each replica, the address others forward calls to it on, and its heartbeat
//!   (PostgreSQL's own clock, so replicas' clocks need not agree).
//! - `queues.owner`: the member that owns the queue, next to `queues.owner_epoch`, the fencing
//!   token that grows on every change of owner; NULL while a queue is handed off.
//! - `pending_adoptions`: messages moved into a queue whose owner has not taken them in yet
//!   (see `cluster::adoption`).
//! - the key replicas assert forwarded callers with: a row of `secrets`
//!   (`cluster::identity::FORWARD_SECRET`), made by the first replica.

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
-- Messages committed into a queue by another queue's owner (a dead-letter move, a redrive)
-- or by a publish on another replica, not yet taken in by the target queue's owner: one row
-- each, written in the move's or publish's own transaction, deleted by the owner in the
-- transaction that reads them for its actor.
CREATE TABLE IF NOT EXISTS {s}.pending_adoptions (
    queue_id bigint NOT NULL,
    message_id bigint NOT NULL,
    PRIMARY KEY (queue_id, message_id)
);
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

/// The cluster's forwarding key (see `auth::forwarded`): made by the first replica that asks,
/// read by the others; `ON CONFLICT DO NOTHING` keeps the first of concurrent first starts.
pub async fn forward_secret(
    client: &Client,
    schema: &str,
) -> Result<[u8; crate::auth::forwarded::KEY_LEN], StorageError> {
    use crate::auth::forwarded::{FORWARD_SECRET, ForwardKey, KEY_LEN};
    let q = quoted(schema);
    let io = |e: tokio_postgres::Error| {
        schema::describe(schema, "cannot read the cluster's forwarding key", &e)
    };
    let fresh = ForwardKey::generate_secret();
    client
        .execute(
            &format!(
                "INSERT INTO {q}.secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            &[&FORWARD_SECRET, &&fresh[..]],
        )
        .await
        .map_err(io)?;
    let stored: Vec<u8> = client
        .query_one(
            &format!("SELECT value FROM {q}.secrets WHERE name = $1"),
            &[&FORWARD_SECRET],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(io)?;
    let length = stored.len();
    stored.try_into().map_err(|_| {
        StorageError::Io(format!(
            "the cluster's forwarding key in {schema}.secrets has {length} bytes, not {KEY_LEN}"
        ))
    })
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

/// Cluster mode: up to `limit` messages moved into `queue_id` and not yet taken in by its
/// actor, as (message id, enqueue time, bytes of body and attributes): their entries are deleted in the same transaction,
/// which first checks that this replica still holds the queue at `epoch` (its row read `FOR
/// SHARE`, so a takeover waits for this transaction, and then recovers them from the rows
/// itself). None when it does not: nothing is taken.
pub async fn take_pending(
    client: &mut Client,
    schema: &str,
    queue_id: u64,
    epoch: i64,
    limit: usize,
) -> Result<Option<Vec<(u64, i64, u32)>>, tokio_postgres::Error> {
    let q = quoted(schema);
    let transaction = client.transaction().await?;
    let current = transaction
        .query_opt(
            &format!("SELECT owner_epoch FROM {q}.queues WHERE id = $1 FOR SHARE"),
            &[&(queue_id as i64)],
        )
        .await?
        .map(|row| row.try_get::<_, i64>(0))
        .transpose()?;
    if current != Some(epoch) {
        return Ok(None);
    }
    let rows = transaction
        .query(
            &format!(
                "WITH taken AS (
                   DELETE FROM {q}.pending_adoptions p
                    WHERE p.queue_id = $1 AND p.message_id IN (
                          SELECT message_id FROM {q}.pending_adoptions
                           WHERE queue_id = $1 LIMIT $2)
                RETURNING p.message_id)
                 SELECT m.id, m.enqueue_ms,
                        octet_length(m.body) + coalesce(octet_length(m.meta), 0)
                   FROM {q}.messages m JOIN taken t ON m.id = t.message_id
                  WHERE m.queue_id = $1 AND m.state = 0
                  ORDER BY m.id"
            ),
            &[&(queue_id as i64), &(limit as i64)],
        )
        .await?;
    let taken = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, i64>(0)? as u64,
                row.try_get::<_, i64>(1)?,
                row.try_get::<_, i32>(2)? as u32,
            ))
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    transaction.commit().await?;
    Ok(Some(taken))
}

/// Cluster mode: the queues with messages waiting to be taken in, and the entries of queues
/// that no longer exist removed (their rows went with the queue).
pub async fn pending_queues(
    client: &Client,
    schema: &str,
) -> Result<Vec<u64>, tokio_postgres::Error> {
    let q = quoted(schema);
    client
        .execute(
            &format!(
                "DELETE FROM {q}.pending_adoptions p
                  WHERE NOT EXISTS (SELECT 1 FROM {q}.queues q WHERE q.id = p.queue_id)"
            ),
            &[],
        )
        .await?;
    let rows = client
        .query(
            &format!("SELECT DISTINCT queue_id FROM {q}.pending_adoptions"),
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<_, i64>(0)? as u64))
        .collect()
}

/// Cluster mode, at a takeover: the entries of `queue_id` whose messages the new owner has
/// just recovered from the rows (`recovered`, sorted) are done; the others (moved in after
/// the recovery read them) stay for [`take_pending`].
pub async fn forget_recovered(
    client: &Client,
    schema: &str,
    queue_id: u64,
    recovered: &[u64],
) -> Result<(), tokio_postgres::Error> {
    let q = quoted(schema);
    let pending = client
        .query(
            &format!("SELECT message_id FROM {q}.pending_adoptions WHERE queue_id = $1"),
            &[&(queue_id as i64)],
        )
        .await?;
    let done: Vec<i64> = pending
        .iter()
        .filter_map(|row| row.try_get::<_, i64>(0).ok())
        .filter(|id| recovered.binary_search(&(*id as u64)).is_ok())
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    client
        .execute(
            &format!(
                "DELETE FROM {q}.pending_adoptions WHERE queue_id = $1 AND message_id = ANY($2)"
            ),
            &[&(queue_id as i64), &done],
        )
        .await?;
    Ok(())
}
