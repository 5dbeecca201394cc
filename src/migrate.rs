//! `spool migrate`: moves a stopped server's embedded database into PostgreSQL.
//!
//! Every queue with its attributes and times, every message in whatever state it is (visible,
//! delayed, in flight with its visibility deadline and receipt nonce, kept for rewind,
//! tombstone), the receipt key (so receipt handles issued before the move stay valid) and the
//! id counters. The target must be empty; the import is one transaction, which compares what
//! it wrote with what it read before it commits, so a failed or refused migration leaves the
//! target as it was. The source is read under its lock, so no server can start on it meanwhile.

use std::collections::HashSet;
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::config::DEFAULT_POSTGRES_SCHEMA;
use crate::storage::StorageError;
use crate::storage::postgres::ConnectOptions;
use crate::storage::postgres::import::{ExportedMessage, Tally, Target};
use crate::storage::sqlite::export::Export;

/// Messages per INSERT of the import (and per hand-over from the reading thread): large
/// enough that round trips do not dominate, small enough to hold a few batches of 1 MiB
/// bodies in memory.
const IMPORT_BATCH: usize = 512;
/// Batches read ahead of the import, bounding memory whatever the source's size.
const READ_AHEAD_BATCHES: usize = 4;

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The data directory of a stopped Spool server (embedded database)
    #[arg(long, value_name = "DIR")]
    pub from_data_dir: PathBuf,
    /// The PostgreSQL to move it to: a libpq URL or key=value string (as --postgres-url of
    /// `spool serve`, TLS options included)
    #[arg(long, value_name = "URL", env = "SPOOL_POSTGRES_URL")]
    pub to_postgres_url: String,
    /// The schema to create there; it must be new or empty
    #[arg(long, value_name = "NAME", default_value = DEFAULT_POSTGRES_SCHEMA)]
    pub to_postgres_schema: String,
    /// File whose first line is the PostgreSQL password, when the URL has none (PGPASSWORD is
    /// read last)
    #[arg(long, value_name = "FILE")]
    pub to_postgres_password_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Options(String),
    #[error("verification failed, nothing was committed: {0}")]
    Mismatch(String),
}

/// What was moved.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub target: String,
    pub queues: usize,
    /// Topics and subscriptions moved (subscriptions of deleted queues are left behind).
    pub topics: usize,
    pub subscriptions: usize,
    pub messages: u64,
    pub live: u64,
    pub kept_for_rewind: u64,
    pub tombstones: u64,
    /// Rows of queues deleted before the stop, which a restart would have removed.
    pub skipped_rows_of_deleted_queues: u64,
    pub next_queue_id: u64,
    pub next_message_id: u64,
}

pub async fn run(args: MigrateArgs) -> Result<Summary, MigrateError> {
    let options = ConnectOptions::parse(
        &args.to_postgres_url,
        args.to_postgres_password_file.as_deref(),
    )
    .map_err(|e| MigrateError::Options(e.to_string()))?;
    // The source first: a directory in use by a server is refused before the target is touched.
    let dir = args.from_data_dir.clone();
    let (source, recovered) = tokio::task::spawn_blocking(move || {
        let source = Export::open(&dir)?;
        let recovered = source.recovered()?;
        Ok::<_, StorageError>((source, recovered))
    })
    .await
    .map_err(|e| StorageError::Io(format!("reading task failed: {e}")))??;
    let mut target = Target::open(&options, &args.to_postgres_schema).await?;
    let described = target.describe().to_string();
    let import = target.begin().await?;
    import.write_queues(&recovered).await?;

    let queues: HashSet<u64> = recovered.queues.iter().map(|q| q.id).collect();
    let subscriptions = recovered
        .subscriptions
        .iter()
        .filter(|s| queues.contains(&s.queue_id))
        .count();
    let (batches, mut received) = mpsc::channel::<Vec<ExportedMessage>>(READ_AHEAD_BATCHES);
    let reader = {
        tokio::task::spawn_blocking(move || {
            let mut tally = Tally::new();
            let mut skipped = 0u64;
            let mut batch = Vec::with_capacity(IMPORT_BATCH);
            source.messages(&mut |queue, message, body| {
                if !queues.contains(&queue) {
                    skipped += 1;
                    return Ok(());
                }
                *tally
                    .entry((queue, message.state.code() as i16))
                    .or_default() += 1;
                batch.push((queue, message, body));
                if batch.len() == IMPORT_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
                    batches
                        .blocking_send(full)
                        .map_err(|_| StorageError::Io("the import stopped".into()))?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                batches
                    .blocking_send(batch)
                    .map_err(|_| StorageError::Io("the import stopped".into()))?;
            }
            Ok::<_, StorageError>((tally, skipped))
        })
    };
    let mut written = Ok(());
    while let Some(batch) = received.recv().await {
        if let Err(error) = import.write_messages(&batch).await {
            written = Err(error);
            break;
        }
    }
    // Dropping the receiver ends the reader if the import failed.
    drop(received);
    let read = reader
        .await
        .map_err(|e| StorageError::Io(format!("reading task failed: {e}")))?;
    written?;
    let (read_tally, skipped) = read?;

    let (written_tally, written_queues) = import.tally().await?;
    if written_queues as usize != recovered.queues.len() {
        return Err(MigrateError::Mismatch(format!(
            "{} queues read, {written_queues} written",
            recovered.queues.len()
        )));
    }
    if written_tally != read_tally {
        return Err(MigrateError::Mismatch(format!(
            "messages per queue and state read {read_tally:?}, written {written_tally:?}"
        )));
    }
    import.commit().await?;

    let count = |code: i64| -> u64 {
        read_tally
            .iter()
            .filter(|((_, state), _)| i64::from(*state) == code)
            .map(|(_, n)| *n as u64)
            .sum()
    };
    use crate::storage::StoredState;
    let live = count(StoredState::Live.code());
    let kept_for_rewind = count(StoredState::Kept.code());
    let tombstones = count(StoredState::Tombstone.code());
    Ok(Summary {
        target: described,
        queues: recovered.queues.len(),
        topics: recovered.topics.len(),
        subscriptions,
        messages: live + kept_for_rewind + tombstones,
        live,
        kept_for_rewind,
        tombstones,
        skipped_rows_of_deleted_queues: skipped,
        next_queue_id: recovered.next_queue_id,
        next_message_id: recovered.next_message_id,
    })
}
