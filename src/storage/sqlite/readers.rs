//! Read-only connections for body reads, used on tokio's blocking threads. WAL mode lets them
//! read committed data while the writer commits.

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};

use crate::payload::Payload;
use crate::storage::{BodiesReply, StorageError};

/// Idle connections kept for reuse; more are opened when all are busy and closed afterwards.
const MAX_IDLE: usize = 8;

pub struct ReaderPool {
    path: PathBuf,
    idle: std::sync::Arc<Mutex<Vec<Connection>>>,
}

impl ReaderPool {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Default::default(),
        }
    }

    pub fn connect(&self) -> Result<Connection, StorageError> {
        open(&self.path)
    }

    /// Runs a blocking read on an idle connection (or a new one), giving it back afterwards.
    pub fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        let result =
            read(&conn).map_err(|e| StorageError::Io(format!("reading messages failed: {e}")));
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }

    pub fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply) {
        let path = self.path.clone();
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            let taken = idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match taken {
                Some(conn) => conn,
                None => match open(&path) {
                    Ok(conn) => conn,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        return;
                    }
                },
            };
            let result = read(&conn, &ids)
                .map_err(|e| StorageError::Io(format!("reading message bodies failed: {e}")));
            if let Ok(mut idle) = idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
            let _ = reply.send(result);
        });
    }
}

fn open(path: &PathBuf) -> Result<Connection, StorageError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StorageError::Io(format!("cannot open {}: {e}", path.display())))
}

fn read(conn: &Connection, ids: &[u64]) -> rusqlite::Result<Vec<(u64, Payload)>> {
    let mut select = conn.prepare_cached(
        "SELECT body, meta, dead_letter_source, dead_letter_receive_count FROM messages
         WHERE id = ?1",
    )?;
    let mut bodies = Vec::with_capacity(ids.len());
    // One read transaction, so the bodies come from one snapshot.
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        for &id in ids {
            let mut rows = select.query([id as i64])?;
            if let Some(row) = rows.next()? {
                let body: Vec<u8> = row.get(0)?;
                let meta: Option<Vec<u8>> = row.get(1)?;
                let payload =
                    Payload::stored(Bytes::from(body), meta.as_deref(), row.get(2)?, row.get(3)?)
                        .map_err(|why| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Blob,
                            why.into(),
                        )
                    })?;
                bodies.push((id, payload));
            }
        }
        Ok(())
    })();
    // A pooled connection must not keep a read transaction open: it would pin the WAL.
    conn.execute_batch("COMMIT")?;
    result.map(|()| bodies)
}
