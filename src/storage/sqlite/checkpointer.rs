//! Copies the WAL back into the database file off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so that one
//! commit (and every request in its group) waits for the database file's writes and sync. Here
//! a thread of its own runs passive checkpoints, which never block the writer; the automatic
//! one stays on with a higher threshold, as a backstop should this thread fall behind.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often a checkpoint is attempted; one with nothing to copy costs next to nothing.
const INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages after which the writer checkpoints by itself (SQLite's default is 1,000).
pub const BACKSTOP_PAGES: u32 = 20_000;

/// Runs until the returned sender is dropped.
pub fn spawn(path: PathBuf) -> std::io::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("spool-checkpoint".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "no background checkpoints; the writer will do them");
                    return;
                }
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::warn!(%error, "background checkpoint failed");
                }
            }
        })?;
    Ok(stop)
}
