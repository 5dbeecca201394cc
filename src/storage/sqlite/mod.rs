//! The embedded backend: one SQLite database in the data directory, WAL mode,
//! `synchronous=FULL` (a commit is on disk before it is acknowledged).
//!
//! One writer thread owns the only read-write connection and commits in groups (see `writer`);
//! bodies are read through a small pool of read-only connections on tokio's blocking threads.

mod checkpointer;
pub mod export;
mod readers;
mod schema;
mod writer;

use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::{
    BodiesReply, CommitObserver, CommitReply, LiveTotals, Recovered, Storage, StorageError,
    StoredMessage, WriteOp,
};
use crate::clock::Millis;
use crate::storage::WriterRequest;
use readers::ReaderPool;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "spool.db";
/// The side file that earlier versions lock (and only that). Locked here too, so that a server of
/// an earlier version still running on the directory keeps a new one out during an upgrade.
const OLD_LOCK_FILE: &str = "spool.lock";

pub struct SqliteStorage {
    /// To the writer thread. Unbounded: every write is owned by a request (or an actor step)
    /// that is itself bounded by the server's concurrency, and a bounded channel here would
    /// make a cycle with the actors' mailboxes.
    writer: mpsc::Sender<WriterRequest>,
    readers: ReaderPool,
    /// Dropping it stops the background checkpoints.
    _checkpointer: mpsc::Sender<()>,
}

impl SqliteStorage {
    /// Opens (or creates) the database in `dir`. A directory that cannot be used, or that holds a
    /// database that is not Spool's, is refused before anything in it is changed.
    ///
    /// `max_database_bytes` caps the database file: a commit that would grow it further fails
    /// (and its requests with UNAVAILABLE) as if the disk were full, while reads, receives and
    /// deletes go on.
    pub fn open(
        dir: &Path,
        max_database_bytes: Option<u64>,
        metrics: Arc<dyn CommitObserver>,
    ) -> Result<Self, StorageError> {
        let bad = |what: String| StorageError::BadDataDir(what);
        if dir.exists() && !dir.is_dir() {
            return Err(bad(format!(
                "data directory {} is not a directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            bad(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let db_path = dir.join(DATABASE_FILE);
        // Checked first, read-only, so that a foreign file is refused before anything (the
        // lock files) is created beside it; checking a database another server uses is harmless.
        if db_path.exists() {
            schema::check_existing(&db_path)?;
        }
        let old_lock = lock_file(&dir.join(OLD_LOCK_FILE), &db_path)?;
        let lock = lock_file(&db_path, &db_path)?;

        let conn = Connection::open_with_flags(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| schema::describe_open_error(&db_path, &e))?;
        schema::prepare(&conn).map_err(|e| schema::describe_open_error(&db_path, &e))?;
        if let Some(max_bytes) = max_database_bytes {
            schema::cap_size(&conn, max_bytes)
                .map_err(|e| bad(format!("cannot cap the size of {}: {e}", db_path.display())))?;
        }

        let readers = ReaderPool::new(db_path.clone());
        let writer = writer::spawn(conn, metrics, vec![lock, old_lock])?;
        let checkpointer = checkpointer::spawn(db_path)
            .map_err(|e| StorageError::Io(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            writer,
            readers,
            _checkpointer: checkpointer,
        })
    }

    fn send(&self, request: WriterRequest) {
        if let Err(mpsc::SendError(request)) = self.writer.send(request) {
            request.fail(StorageError::Closed);
        }
    }
}

/// Locks `path` with an exclusive `flock` (creating it empty if missing). On the database file
/// itself, this makes a second server refuse to start on it by whatever path it reaches the
/// file: another data directory holding a symlink or hard link to it, or a directory whose side
/// files were deleted. SQLite's own locks are POSIX record locks, which `flock` does not touch.
fn lock_file(path: &Path, database: &Path) -> Result<File, StorageError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::BadDataDir(describe_io_error(path, &e)))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::BadDataDir(format!(
            "{} is in use by another Spool server (its data directory is in use)",
            database.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StorageError::BadDataDir(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// What an I/O error on the database file means for the operator.
fn describe_io_error(path: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let path = path.display();
    match error.kind() {
        ErrorKind::ReadOnlyFilesystem => {
            format!("{path} cannot be written: its file system is mounted read-only ({error})")
        }
        ErrorKind::PermissionDenied => format!(
            "{path} cannot be written: permission denied ({error}); Spool needs write access to \
             the database file and its directory"
        ),
        ErrorKind::StorageFull => format!("the disk holding {path} is full ({error})"),
        _ => format!("cannot open {path}: {error}"),
    }
}

impl Storage for SqliteStorage {
    fn recover(&self) -> Result<Recovered, StorageError> {
        let conn = self.readers.connect()?;
        schema::recover(&conn).map_err(|e| StorageError::Io(format!("recovery failed: {e}")))
    }

    fn read_messages(
        &self,
        queue_id: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        self.readers
            .with(|conn| schema::read_messages(conn, queue_id, after_id, limit))
    }

    fn read_held(&self, queue_id: u64, now: Millis) -> Result<Vec<StoredMessage>, StorageError> {
        self.readers
            .with(|conn| schema::read_held(conn, queue_id, now))
    }

    fn count_live(&self, queue_id: u64) -> Result<LiveTotals, StorageError> {
        self.readers.with(|conn| schema::count_live(conn, queue_id))
    }

    fn queues_with_messages(&self) -> Result<Vec<u64>, StorageError> {
        self.readers.with(schema::queues_with_messages)
    }

    fn message_ids(&self, queue_id: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        self.readers
            .with(|conn| schema::message_ids(conn, queue_id, limit))
    }

    fn commit(&self, op: WriteOp, done: CommitReply) {
        self.send(WriterRequest::Write {
            op,
            done: Some(done),
        });
    }

    fn record(&self, op: WriteOp) {
        self.send(WriterRequest::Write { op, done: None });
    }

    fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply) {
        self.readers.read_bodies(ids, reply);
    }

    fn close(&self, done: oneshot::Sender<()>) {
        self.send(WriterRequest::Close(done));
    }
}
