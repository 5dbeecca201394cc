//! Reading a stopped server's database whole, bodies included, for `spool migrate`.

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{DATABASE_FILE, OLD_LOCK_FILE, lock_file, schema};
use crate::storage::{ExportedPayload, Recovered, StorageError, StoredMessage, StoredState};

/// A data directory opened for export: its database brought to the current schema (as a start
/// of this version would), and locked, so no server can start on it while it is read.
pub struct Export {
    conn: Connection,
    _locks: Vec<File>,
}

impl Export {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db_path = dir.join(DATABASE_FILE);
        if !db_path.is_file() {
            return Err(StorageError::BadDataDir(format!(
                "{} holds no Spool database ({DATABASE_FILE})",
                dir.display()
            )));
        }
        schema::check_existing(&db_path)?;
        let old_lock = lock_file(&dir.join(OLD_LOCK_FILE), &db_path)?;
        let lock = lock_file(&db_path, &db_path)?;
        let conn = Connection::open_with_flags(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| schema::describe_open_error(&db_path, &e))?;
        schema::prepare(&conn).map_err(|e| schema::describe_open_error(&db_path, &e))?;
        Ok(Self {
            conn,
            _locks: vec![lock, old_lock],
        })
    }

    /// The queues, the receipt key and the id counters.
    pub fn recovered(&self) -> Result<Recovered, StorageError> {
        schema::recover(&self.conn).map_err(|e| StorageError::Io(format!("reading queues: {e}")))
    }

    /// Every message with its queue id, body and the columns stored with it, in id order.
    pub fn messages(
        &self,
        visit: &mut dyn FnMut(u64, StoredMessage, ExportedPayload) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let io = |e: rusqlite::Error| StorageError::Io(format!("reading messages: {e}"));
        let mut statement = self
            .conn
            .prepare(
                "SELECT queue_id, id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms,
                        receipt_nonce, deleted, body, meta, dead_letter_source,
                        dead_letter_receive_count,
                        length(body) + coalesce(length(meta), 0)
                   FROM messages ORDER BY id",
            )
            .map_err(io)?;
        let mut rows = statement.query([]).map_err(io)?;
        while let Some(row) = rows.next().map_err(io)? {
            let code: i64 = row.get(7).map_err(io)?;
            let state = StoredState::from_code(code).ok_or_else(|| {
                StorageError::Io(format!("a message has the unknown state {code}"))
            })?;
            let message = StoredMessage {
                id: row.get::<_, i64>(1).map_err(io)? as u64,
                enqueue_ms: row.get(2).map_err(io)?,
                visible_at_ms: row.get(3).map_err(io)?,
                dequeue_count: row.get(4).map_err(io)?,
                first_dequeue_ms: row.get(5).map_err(io)?,
                receipt_nonce: row.get::<_, i64>(6).map_err(io)? as u64,
                state,
                size: row
                    .get::<_, i64>(12)
                    .map_err(io)?
                    .clamp(0, i64::from(u32::MAX)) as u32,
            };
            let payload = ExportedPayload {
                body: row.get(8).map_err(io)?,
                meta: row.get(9).map_err(io)?,
                dead_letter_source: row.get(10).map_err(io)?,
                dead_letter_receive_count: row.get(11).map_err(io)?,
            };
            visit(row.get::<_, i64>(0).map_err(io)? as u64, message, payload)?;
        }
        Ok(())
    }
}
