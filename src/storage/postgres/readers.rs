//! A small pool of connections for reads: message bodies, and recovery at startup. Reads need
//! no lock and no ordering with the writer beyond what PostgreSQL's snapshots give: a body is
//! read only for a message whose insert has committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::{Client, Statement};

use super::connect::ConnectOptions;
use super::schema::quoted;
use crate::payload::Payload;
use crate::storage::StorageError;

/// Idle connections kept for reuse; more are opened when all are busy and closed afterwards.
const MAX_IDLE: usize = 4;
/// Longest a body read may take before it fails (and its receive with UNAVAILABLE).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection with the body query prepared on it.
pub struct Reader {
    pub client: Client,
    bodies: Statement,
}

pub struct ReaderPool {
    options: ConnectOptions,
    schema: String,
    idle: Mutex<Vec<Reader>>,
}

impl ReaderPool {
    pub fn new(options: ConnectOptions, schema: String) -> Self {
        Self {
            options,
            schema,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that still works, or a new one.
    pub async fn get(&self) -> Result<Reader, StorageError> {
        loop {
            let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match taken {
                Some(reader) if !reader.client.is_closed() => return Ok(reader),
                Some(_) => continue,
                None => break,
            }
        }
        let unavailable = |e: tokio_postgres::Error| {
            StorageError::Io(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                self.options.describe()
            ))
        };
        let client = self.options.connect().await.map_err(unavailable)?;
        let bodies = client
            .prepare(&format!(
                "SELECT id, body, meta, dead_letter_source, dead_letter_receive_count
                   FROM {}.messages WHERE id = ANY($1::int8[])",
                quoted(&self.schema)
            ))
            .await
            .map_err(unavailable)?;
        Ok(Reader { client, bodies })
    }

    /// Gives a connection back for reuse, unless it broke or enough are idle.
    pub fn put(&self, reader: Reader) {
        if reader.client.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(reader);
        }
    }

    /// The bodies of the messages in `ids` that still exist, in the order of `ids`.
    pub async fn read_bodies(&self, ids: &[u64]) -> Result<Vec<(u64, Payload)>, StorageError> {
        let reader = self.get().await?;
        let wanted: Vec<i64> = ids.iter().map(|id| *id as i64).collect();
        let read = tokio::time::timeout(
            READ_TIMEOUT,
            reader.client.query(&reader.bodies, &[&wanted]),
        )
        .await;
        let rows = match read {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                return Err(StorageError::Io(format!(
                    "reading message bodies failed: {error}"
                )));
            }
            // Dropped, not put back: its answer may still arrive on it.
            Err(_) => {
                return Err(StorageError::Io(format!(
                    "reading message bodies took longer than {READ_TIMEOUT:?}"
                )));
            }
        };
        self.put(reader);
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row
                .try_get(0)
                .map_err(|e| StorageError::Io(format!("reading message bodies failed: {e}")))?;
            let failed =
                |e: String| StorageError::Io(format!("reading message bodies failed: {e}"));
            let body: Vec<u8> = row.try_get(1).map_err(|e| failed(e.to_string()))?;
            let meta: Option<Vec<u8>> = row.try_get(2).map_err(|e| failed(e.to_string()))?;
            let source: Option<String> = row.try_get(3).map_err(|e| failed(e.to_string()))?;
            let receive_count: i32 = row.try_get(4).map_err(|e| failed(e.to_string()))?;
            let payload = Payload::stored(
                Bytes::from(body),
                meta.as_deref(),
                source,
                receive_count.max(0) as u32,
            )
            .map_err(failed)?;
            found.insert(id as u64, payload);
        }
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id).map(|body| (*id, body)))
            .collect())
    }
}
