//! The PostgreSQL backend: the same queues in a database operators already run, back up and
//! replicate, with the same promises as the embedded one (an acknowledged write is committed
//! with `synchronous_commit` as the server has it, never lowered here).
//!
//! - [`connect`]: the connection string, the password's sources, TLS (rustls).
//! - [`schema`]: the tables, their version and checks, the server lock, recovery reads.
//! - [`writer`]: one writer task with one session (which holds the lock), group commit,
//!   reconnection.
//! - [`readers`]: a small pool of connections for body reads and recovery.
//! - [`vacuum`]: vacuums the messages table once enough rows changed, autovacuum or not.
//! - [`fence`], `cluster_tables`: cluster mode, where replicas share the schema: the owner
//!   epochs every write transaction checks, and the members table.
//!
//! Everything is async on tokio (tokio-postgres); the trait's blocking recovery calls, made on
//! a blocking thread, drive the async reads with the runtime's handle.

pub mod cluster_tables;
pub mod connect;
pub mod fence;
pub mod import;
mod readers;
pub mod schema;
mod vacuum;
mod writer;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    BodiesReply, CommitObserver, CommitReply, LiveTotals, Recovered, Storage, StorageError,
    StoredMessage, WriteOp,
};
use crate::clock::Millis;
pub use connect::ConnectOptions;
use readers::ReaderPool;
pub use writer::{FIRST_BACKOFF, MAX_BACKOFF};

/// `options` and `schema` as log lines and errors show them (never the password).
pub fn describe_target(options: &ConnectOptions, schema: &str) -> String {
    format!("{} schema {schema:?}", options.describe())
}

/// Raised when the backend can no longer be trusted to be the schema's only writer (the lock
/// was lost and another server holds it): the server must stop serving.
#[derive(Default)]
pub struct Lost {
    token: CancellationToken,
    error: Mutex<Option<StorageError>>,
}

impl Lost {
    fn signal(&self, error: StorageError) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(error);
        }
        self.token.cancel();
    }

    /// Completes once the backend is lost, with why.
    pub async fn wait(&self) -> StorageError {
        self.token.cancelled().await;
        self.error
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or(StorageError::Closed)
    }
}

pub struct PostgresStorage {
    /// To the writer task. Unbounded for the reason the SQLite writer's channel is.
    writer: mpsc::UnboundedSender<writer::Request>,
    /// Cluster mode: stamps each write with the epochs its queues are held at (see `fence`).
    fence: Option<Arc<fence::Fence>>,
    readers: Arc<ReaderPool>,
    schema: String,
    /// Recovery is blocking in the trait; it runs this runtime's async reads with `block_on`.
    runtime: tokio::runtime::Handle,
    lost: Arc<Lost>,
    /// Ends the vacuum task at close.
    vacuum_stop: CancellationToken,
}

impl PostgresStorage {
    /// Connects, takes the schema's lock, creates or checks the tables, and starts the writer.
    /// `Refused` when retrying cannot help (another server holds the schema, or it is not
    /// Spool's, or it is newer); `Io` when PostgreSQL cannot be reached.
    ///
    /// `fence`: cluster mode (see [`fence`]): the schema is shared with the other replicas, and
    /// every write is checked against the owner epochs the fence holds.
    pub async fn open(
        options: ConnectOptions,
        schema: String,
        metrics: Arc<dyn CommitObserver>,
        fence: Option<Arc<fence::Fence>>,
    ) -> Result<Self, StorageError> {
        schema::validate_schema_name(&schema).map_err(StorageError::Refused)?;
        let member = fence.as_ref().map(|fence| fence.member().to_string());
        let session = writer::open_session(&options, &schema, member.as_deref()).await?;
        let lost = Arc::new(Lost::default());
        let readers = Arc::new(ReaderPool::new(options.clone(), schema.clone()));
        let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let vacuum_stop = CancellationToken::new();
        vacuum::spawn(
            options.clone(),
            schema.clone(),
            changes.clone(),
            vacuum_stop.clone(),
        );
        let writer = writer::spawn(
            session,
            options,
            schema.clone(),
            metrics,
            lost.clone(),
            changes,
            fence.clone(),
        );
        Ok(Self {
            writer,
            fence,
            readers,
            schema,
            runtime: tokio::runtime::Handle::current(),
            lost,
            vacuum_stop,
        })
    }

    /// Tells when the backend is lost for good (see [`Lost`]).
    pub fn lost(&self) -> Arc<Lost> {
        self.lost.clone()
    }

    /// Hands `op` to the writer, stamped with the epochs its queues are held at now: a write
    /// is judged by the epoch of the actor that made it, whatever this replica holds by the
    /// time it commits.
    fn write(&self, op: WriteOp, done: Option<CommitReply>) {
        let stamp = self
            .fence
            .as_ref()
            .map(|fence| fence.stamp(&op))
            .unwrap_or_default();
        self.send(writer::Request::Write(writer::Queued { op, stamp, done }));
    }

    fn send(&self, request: writer::Request) {
        if let Err(mpsc::error::SendError(request)) = self.writer.send(request) {
            request.fail(StorageError::Closed);
        }
    }

    /// Cluster mode's takeover: visits the stored messages of one queue (metadata, not bodies),
    /// oldest first, through its index.
    pub async fn recover_queue(
        &self,
        queue_id: u64,
        visit: &mut (dyn FnMut(StoredMessage) + Send),
    ) -> Result<(), StorageError> {
        let mut reader = self.readers.get().await?;
        schema::recover_messages_where(
            &mut reader.client,
            &self.schema,
            Some(queue_id),
            &mut |_, stored| visit(stored),
        )
        .await
        .map_err(Self::recovery_error)?;
        self.readers.put(reader);
        Ok(())
    }

    fn read_error(what: String) -> StorageError {
        StorageError::Io(format!("reading messages failed: {what}"))
    }

    fn recovery_error(what: String) -> StorageError {
        StorageError::Io(format!("recovery failed: {what}"))
    }
}

impl Storage for PostgresStorage {
    fn recover(&self) -> Result<Recovered, StorageError> {
        self.runtime.block_on(async {
            let reader = self.readers.get().await?;
            let recovered = schema::recover(&reader.client, &self.schema)
                .await
                .map_err(Self::recovery_error)?;
            self.readers.put(reader);
            Ok(recovered)
        })
    }

    fn read_messages(
        &self,
        queue_id: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        self.runtime.block_on(async {
            let reader = self.readers.get().await?;
            let messages =
                schema::read_messages(&reader.client, &self.schema, queue_id, after_id, limit)
                    .await
                    .map_err(Self::read_error)?;
            self.readers.put(reader);
            Ok(messages)
        })
    }

    fn read_held(&self, queue_id: u64, now: Millis) -> Result<Vec<StoredMessage>, StorageError> {
        self.runtime.block_on(async {
            let mut reader = self.readers.get().await?;
            let messages = schema::read_held(&mut reader.client, &self.schema, queue_id, now)
                .await
                .map_err(Self::read_error)?;
            self.readers.put(reader);
            Ok(messages)
        })
    }

    fn count_live(&self, queue_id: u64) -> Result<LiveTotals, StorageError> {
        self.runtime.block_on(async {
            let reader = self.readers.get().await?;
            let totals = schema::count_live(&reader.client, &self.schema, queue_id)
                .await
                .map_err(Self::read_error)?;
            self.readers.put(reader);
            Ok(totals)
        })
    }

    fn queues_with_messages(&self) -> Result<Vec<u64>, StorageError> {
        self.runtime.block_on(async {
            let reader = self.readers.get().await?;
            let queues = schema::queues_with_messages(&reader.client, &self.schema)
                .await
                .map_err(Self::read_error)?;
            self.readers.put(reader);
            Ok(queues)
        })
    }

    fn message_ids(&self, queue_id: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        self.runtime.block_on(async {
            let reader = self.readers.get().await?;
            let ids = schema::message_ids(&reader.client, &self.schema, queue_id, limit)
                .await
                .map_err(Self::read_error)?;
            self.readers.put(reader);
            Ok(ids)
        })
    }

    fn commit(&self, op: WriteOp, done: CommitReply) {
        self.write(op, Some(done));
    }

    fn record(&self, op: WriteOp) {
        self.write(op, None);
    }

    fn read_bodies(&self, ids: Vec<u64>, reply: BodiesReply) {
        let readers = self.readers.clone();
        self.runtime.spawn(async move {
            let _ = reply.send(readers.read_bodies(&ids).await);
        });
    }

    fn close(&self, done: oneshot::Sender<()>) {
        self.vacuum_stop.cancel();
        self.send(writer::Request::Close(done));
    }
}
