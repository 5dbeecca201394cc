//! The database layout, its checks at open, and recovery queries.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use crate::attributes::QueueAttributes;
use crate::storage::{QueueRecord, Recovered, StorageError, StoredMessage};

/// `PRAGMA application_id` of a Spool database ("SPOL"), so a foreign database is refused.
const APPLICATION_ID: i32 = 0x5350_4f4c;
/// `PRAGMA user_version`: the layout below.
const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE queues (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    visibility_timeout_seconds INTEGER NOT NULL,
    polling_wait_seconds INTEGER NOT NULL,
    max_message_size INTEGER NOT NULL,
    message_retention_seconds INTEGER NOT NULL,
    rewind_seconds INTEGER NOT NULL,
    max_backlog INTEGER NOT NULL,
    create_time_ms INTEGER NOT NULL,
    update_time_ms INTEGER NOT NULL
) STRICT;
-- The body is the last column so reading the metadata of small rows stays on the row's page.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    queue_id INTEGER NOT NULL,
    enqueue_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    first_dequeue_ms INTEGER NOT NULL DEFAULT 0,
    receipt_nonce INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
) STRICT;
CREATE INDEX messages_by_queue ON messages (queue_id, id);
-- High-water marks of ids, so an id is never handed out twice, even after its row is gone.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, value) VALUES ('next_queue_id', 1), ('next_message_id', 1);
";

/// Refuses an existing file that is not a Spool database, opening it read-only so that nothing
/// in it changes.
pub fn check_existing(path: &Path) -> Result<(), StorageError> {
    let refuse = |why: String| {
        StorageError::BadDataDir(format!("{} is not a Spool database: {why}", path.display()))
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| refuse(e.to_string()))?;
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(|e| refuse(e.to_string()))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(|e| refuse(e.to_string()))?;
    if application_id == 0 && tables == 0 {
        return Ok(()); // an empty database, e.g. left by a start that failed; ours to initialise
    }
    if application_id != APPLICATION_ID {
        return Err(refuse(format!(
            "its application_id is {application_id:#x}, not Spool's {APPLICATION_ID:#x}"
        )));
    }
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| refuse(e.to_string()))?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::BadDataDir(format!(
            "{} was written by a newer Spool (schema {version}; this one knows {SCHEMA_VERSION})",
            path.display()
        )));
    }
    Ok(())
}

/// Sets the connection up for durable group commits and creates the tables on first use.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer. FULL: the WAL is synced at every commit, so an
    // acknowledged write survives power loss (NORMAL would lose the last commits).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Truncate the WAL back to this size after checkpoints, so it does not stay at its peak.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Checkpoints run on a thread of their own (see `checkpointer`); this is the backstop.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpointer::BACKSTOP_PAGES,
    )?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == 0 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

/// Caps the database at `max_bytes` (at least its current size): SQLite refuses, with
/// SQLITE_FULL, a transaction that would need more pages.
pub fn cap_size(conn: &Connection, max_bytes: u64) -> rusqlite::Result<()> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let pages = (max_bytes / page_size.max(1) as u64).max(1);
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
}

/// Reads every queue with the metadata of its messages, oldest first.
pub fn recover(conn: &Connection) -> rusqlite::Result<Recovered> {
    let counter = |name: &str| -> rusqlite::Result<u64> {
        conn.query_row(
            "SELECT value FROM counters WHERE name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .map(|v| v as u64)
    };
    let mut recovered = Recovered {
        next_queue_id: counter("next_queue_id")?,
        next_message_id: counter("next_message_id")?,
        ..Default::default()
    };
    let mut queues = conn.prepare(
        "SELECT id, name, visibility_timeout_seconds, polling_wait_seconds, max_message_size,
                message_retention_seconds, rewind_seconds, max_backlog, create_time_ms, update_time_ms
         FROM queues ORDER BY id",
    )?;
    let records = queues
        .query_map([], |row| {
            Ok(QueueRecord {
                id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                attributes: QueueAttributes {
                    visibility_timeout_seconds: row.get(2)?,
                    polling_wait_seconds: row.get(3)?,
                    max_message_size: row.get(4)?,
                    message_retention_seconds: row.get(5)?,
                    rewind_seconds: row.get(6)?,
                    max_backlog: row.get::<_, i64>(7)? as u64,
                },
                create_time_ms: row.get(8)?,
                update_time_ms: row.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    recovered.queues = records;
    Ok(recovered)
}

/// Visits the metadata of every message of a queue, oldest first.
pub fn recover_messages(
    conn: &Connection,
    queue_id: u64,
    visit: &mut dyn FnMut(StoredMessage),
) -> rusqlite::Result<()> {
    let mut messages = conn.prepare(
        "SELECT id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms, receipt_nonce, deleted
         FROM messages WHERE queue_id = ?1 ORDER BY id",
    )?;
    let mut rows = messages.query(params![queue_id as i64])?;
    while let Some(row) = rows.next()? {
        visit(StoredMessage {
            id: row.get::<_, i64>(0)? as u64,
            enqueue_ms: row.get(1)?,
            visible_at_ms: row.get(2)?,
            dequeue_count: row.get(3)?,
            first_dequeue_ms: row.get(4)?,
            receipt_nonce: row.get::<_, i64>(5)? as u64,
            deleted: row.get::<_, i64>(6)? != 0,
        });
    }
    Ok(())
}
