//! The database layout, its checks at open, and recovery queries.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::attributes::{DeadLetterPolicy, QueueAttributes};
use crate::storage::{
    DeduplicationRecord, FilterType, LiveTotals, QueueRecord, Recovered, StorageError,
    StoredMessage, StoredState, SubscriptionRecord, SubscriptionTotals, TopicRecord, TopicTotals,
    decode_filter,
};

/// `PRAGMA application_id` of a Spool database ("SPOL"), so a foreign database is refused.
const APPLICATION_ID: i32 = 0x5350_4f4c;
/// `PRAGMA user_version`: the layout below. Version 1 had the index `messages_by_queue`;
/// version 2 had no `secrets` table and no tombstones (`deleted` = 2); version 3 had no message
/// attributes, deduplication ids nor dead-letter policies; version 4 had no topics; version 5
/// had no byte quotas; version 6 had no `size` column and no index by queue; version 7 keyed
/// `deduplication` by id. `prepare` migrates each.
const SCHEMA_VERSION: i32 = 8;

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
    -- 0: live; 1: deleted, kept for rewind; 2: tombstone of a deleted message, kept until
    -- visible_at_ms with an empty body (see StoredState).
    deleted INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
) STRICT;
-- No index on queue_id: every message is inserted once and deleted once, so an index would be
-- paid twice per message (about a quarter of each group commit). Nothing needs one: message ids
-- are the rowid and unique across queues, so the hot path finds rows by id; recovery reads the
-- whole table once in rowid order; and deleting a queue deletes the ids its actor holds.
-- High-water marks of ids, so an id is never handed out twice, even after its row is gone.
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, value) VALUES ('next_queue_id', 1), ('next_message_id', 1);
";

/// Added in version 3: secrets made with the database (the key that signs receipt handles).
const SECRETS: &str = "
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
";

/// Added in version 4: message attributes (`messages.meta`, a `payload::MessageMeta`, NULL for
/// a message with none) and where a dead-lettered message came from (`dead_letter_source` NULL
/// for others): after the body, which is fine for columns only read with it; the
/// deduplication ids of recent sends, and the queues' deduplication window and dead-letter
/// policy (`dead_letter_queue` NULL: no policy).
const VERSION_4: &str = "
ALTER TABLE messages ADD COLUMN meta BLOB;
ALTER TABLE messages ADD COLUMN dead_letter_source TEXT;
ALTER TABLE messages ADD COLUMN dead_letter_receive_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN deduplication_window_seconds INTEGER NOT NULL DEFAULT 300;
ALTER TABLE queues ADD COLUMN dead_letter_queue TEXT;
ALTER TABLE queues ADD COLUMN max_receive_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN max_time_to_live_seconds INTEGER NOT NULL DEFAULT 0;
-- A send's deduplication id, written in the transaction of its message; removed once the
-- queue's window has passed (or with the queue). Keyed by queue, so ids are per queue and a
-- queue's ids are one range of the key.
CREATE TABLE deduplication (
    queue_id INTEGER NOT NULL,
    deduplication_id TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    accepted_ms INTEGER NOT NULL,
    PRIMARY KEY (queue_id, deduplication_id)
) STRICT, WITHOUT ROWID;
";

/// Added in version 5: topics and their subscriptions. A subscription names its queue by id
/// (the incarnation; deleting the queue deletes its subscriptions in the same transaction) and
/// by name (for display); `filter` is a JSON array of filter tags or binding keys.
const VERSION_5: &str = "
CREATE TABLE topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    max_message_size INTEGER NOT NULL,
    -- 1: tags; 2: routing keys (see storage::FilterType).
    filter_type INTEGER NOT NULL,
    create_time_ms INTEGER NOT NULL,
    update_time_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE subscriptions (
    topic_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    queue_id INTEGER NOT NULL,
    queue_name TEXT NOT NULL,
    filter TEXT NOT NULL,
    create_time_ms INTEGER NOT NULL,
    PRIMARY KEY (topic_id, name)
) STRICT, WITHOUT ROWID;
";

/// Added in version 6: per-queue byte quotas (`max_bytes`, 0 for none: existing queues keep no
/// quota). The bytes a queue holds are not stored: recovery sums its messages' sizes, which
/// `length()` reads from each record's header without touching the blobs. And the topics' and
/// subscriptions' totals, raised in each publish's transaction (0 for existing ones: they were
/// not kept before).
const VERSION_6: &str = "
ALTER TABLE queues ADD COLUMN max_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN published_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE topics ADD COLUMN unrouted_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN delivered_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN filtered_out_messages INTEGER NOT NULL DEFAULT 0;
";

/// Added in version 7, for backlogs larger than memory (see `queue::window`): each message's
/// size (body and attributes, what counts toward `max_bytes`) in its own column, and two
/// indexes, so that a queue's actor reads only its window:
/// - `messages_by_queue` reads one queue's live messages in id order (a slice of its backlog),
///   counts them and sums their sizes without touching the rows (a covering index), and finds
///   its kept messages and tombstones (`deleted` > 0).
/// - `messages_hidden` holds only the rows that were ever delayed or received
///   (`visible_at_ms` past `enqueue_ms`), by the time they become visible, so recovery finds the
///   in-flight and delayed ones without a scan.
///
/// Both cost every insert and delete an index entry or two; the messages table had no index
/// before, for that reason, but a backlog that must not be read whole at startup needs them.
/// Existing rows get their size from their body and attributes in the migration (a one-time
/// rewrite of the table).
const VERSION_7: &str = "
ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET size = length(body) + coalesce(length(meta), 0);
CREATE INDEX messages_by_queue ON messages (queue_id, deleted, id, size);
CREATE INDEX messages_hidden ON messages (queue_id, visible_at_ms)
    WHERE deleted = 0 AND visible_at_ms > enqueue_ms;
";

/// Version 8: `deduplication` keyed by (queue, message id), in arrival order, rather than by
/// (queue, id). The ids are random (the clients make one per send), so under the old key each
/// insert landed on a random page of the table and read it back from the file; now inserts
/// are appends. Nothing looks a row up by id: the queues hold their ids in memory and read
/// the table only at startup. An id accepted again after its window has a row of each
/// acceptance until the older is removed; recovery keeps the newer (`queue::deduplication`).
const VERSION_8: &str = "
CREATE TABLE deduplication_by_arrival (
    queue_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    deduplication_id TEXT NOT NULL,
    accepted_ms INTEGER NOT NULL,
    PRIMARY KEY (queue_id, message_id)
) STRICT, WITHOUT ROWID;
INSERT INTO deduplication_by_arrival (queue_id, message_id, deduplication_id, accepted_ms)
    SELECT queue_id, message_id, deduplication_id, accepted_ms FROM deduplication;
DROP TABLE deduplication;
ALTER TABLE deduplication_by_arrival RENAME TO deduplication;
";

const RECEIPT_SECRET: &str = "receipt_key";

/// Refuses an existing file that is not a Spool database, opening it read-only so that nothing
/// in it changes. Only a file that is readable and not Spool's is called foreign; a file that
/// cannot be read says why.
pub fn check_existing(path: &Path) -> Result<(), StorageError> {
    let unreadable = |error: rusqlite::Error| describe_open_error(path, &error);
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(unreadable)?;
    let application_id: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(unreadable)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(unreadable)?;
    if application_id == 0 && tables == 0 {
        return Ok(()); // an empty database, e.g. left by a start that failed; ours to initialise
    }
    if application_id != APPLICATION_ID {
        return Err(StorageError::BadDataDir(format!(
            "{} is not a Spool database: its application_id is {application_id:#x}, not \
             Spool's {APPLICATION_ID:#x}",
            path.display()
        )));
    }
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(unreadable)?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::BadDataDir(format!(
            "{} was written by a newer Spool (schema {version}; this one knows {SCHEMA_VERSION})",
            path.display()
        )));
    }
    Ok(())
}

/// Says what is wrong with a database file SQLite could not use: read-only, a full disk, an I/O
/// failure, or (only for SQLite's own "not a database") a foreign file. SQLite's codes alone do
/// not tell a read-only mount from a missing file (a WAL database opened on a read-only file
/// system fails with "unable to open database file"), so the directory is probed with a small
/// write when the code leaves it open.
pub fn describe_open_error(path: &Path, error: &rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode;
    let shown = path.display();
    let why = match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("{shown} is not a Spool database: {error}"),
        Some(ErrorCode::DiskFull) => {
            format!("the disk holding {shown} is full ({error}): free space or move the data")
        }
        _ => match probe_writable(path) {
            Err(probe) => format!("cannot use {shown} ({error}): {probe}"),
            Ok(()) => format!("cannot use {shown}: {error}"),
        },
    };
    StorageError::BadDataDir(why)
}

/// Writes and removes a small file beside `database`; says what stops it, if anything.
fn probe_writable(database: &Path) -> Result<(), String> {
    use std::io::{ErrorKind, Write as _};
    let dir = database.parent().unwrap_or(Path::new("."));
    let probe = dir.join(".spool-write-probe");
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&[0u8; 4096])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|error| match error.kind() {
        ErrorKind::ReadOnlyFilesystem => {
            format!("its file system is mounted read-only ({error}); Spool must write the database")
        }
        ErrorKind::PermissionDenied => format!(
            "permission denied writing to {} ({error}); Spool needs write access to the \
             database file and its directory",
            dir.display()
        ),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            format!("the disk is full ({error}): free space or move the data")
        }
        _ => format!("writing to {} fails: {error}", dir.display()),
    })
}

/// The writer connection's page cache, in KiB (see `prepare`).
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Sets the connection up for durable group commits and creates the tables on first use.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer. FULL: the WAL is synced at every commit, so an
    // acknowledged write survives power loss (NORMAL would lose the last commits).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Truncate the WAL back to this size after checkpoints, so it does not stay at its peak.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // The writer's page cache (SQLite's default is 2 MiB): with the default, commits read
    // pages of the tables and indexes back from the file; a larger cache than this costs more
    // than it saves, as SQLite scans it at the end of each transaction (docs/benchmarks.md).
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // Checkpoints run on a thread of their own (see `checkpointer`); this is the backstop.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpointer::BACKSTOP_PAGES,
    )?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == 0 {
        return create(conn);
    }
    // Each step from the database's version up, in order; `check_existing` refused newer
    // versions before the file was opened for writing.
    for (from, migrate) in MIGRATIONS {
        if from >= version {
            migrate(conn)?;
        }
    }
    Ok(())
}

/// One schema change: a transaction that also raises `user_version` by one.
type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// The migration from each version to the next, oldest first.
const MIGRATIONS: [(i32, Migration); 7] = [
    (1, migrate_from_v1),
    (2, migrate_from_v2),
    (3, migrate_from_v3),
    (4, migrate_from_v4),
    (5, migrate_from_v5),
    (6, migrate_from_v6),
    (7, migrate_from_v7),
];

fn create(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(SECRETS)?;
    tx.execute_batch(VERSION_4)?;
    tx.execute_batch(VERSION_5)?;
    tx.execute_batch(VERSION_6)?;
    tx.execute_batch(VERSION_7)?;
    tx.execute_batch(VERSION_8)?;
    insert_receipt_secret(&tx)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Version 1 → 2: drops `messages_by_queue` (see `SCHEMA` for why there is none). One
/// transaction, so a crash leaves either version, each consistent.
fn migrate_from_v1(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("DROP INDEX IF EXISTS messages_by_queue")?;
    tx.pragma_update(None, "user_version", 2)?;
    tx.commit()?;
    tracing::info!("migrated the database from schema 1 to 2 (dropped messages_by_queue)");
    Ok(())
}

/// Version 2 → 3: adds the `secrets` table with a new receipt-handle key (handles issued by
/// version 2 were unsigned; they are refused from now on, and their messages are delivered again
/// after their visibility timeout). Tombstones (`deleted` = 2) need no change of layout, but a
/// version 2 server would take them for rewindable messages, hence the new version.
fn migrate_from_v2(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SECRETS)?;
    insert_receipt_secret(&tx)?;
    tx.pragma_update(None, "user_version", 3)?;
    tx.commit()?;
    tracing::info!("migrated the database from schema 2 to 3 (signed receipt handles)");
    Ok(())
}

/// Version 3 → 4: message attributes, deduplication ids, deduplication windows (300 s, the
/// default, for existing queues) and dead-letter policies (none). One transaction, like the
/// others: a crash leaves version 3 or version 4, each whole.
fn migrate_from_v3(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(VERSION_4)?;
    tx.pragma_update(None, "user_version", 4)?;
    tx.commit()?;
    tracing::info!(
        "migrated the database from schema 3 to 4 (message attributes, deduplication, \
         dead-letter policies)"
    );
    Ok(())
}

/// Version 4 → 5: topics and subscriptions (none yet). One transaction, like the others.
fn migrate_from_v4(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(VERSION_5)?;
    tx.pragma_update(None, "user_version", 5)?;
    tx.commit()?;
    tracing::info!("migrated the database from schema 4 to 5 (topics and subscriptions)");
    Ok(())
}

/// Version 5 → 6: per-queue byte quotas (none for existing queues) and topic totals kept
/// across restarts. One transaction, like the others.
fn migrate_from_v5(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(VERSION_6)?;
    tx.pragma_update(None, "user_version", 6)?;
    tx.commit()?;
    tracing::info!(
        "migrated the database from schema 5 to 6 (per-queue byte quotas, topic totals kept)"
    );
    Ok(())
}

/// Version 6 → 7: message sizes in a column, and the indexes by queue (see `VERSION_7`). One
/// transaction, like the others.
fn migrate_from_v6(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(VERSION_7)?;
    tx.pragma_update(None, "user_version", 7)?;
    tx.commit()?;
    tracing::info!(
        "migrated the database from schema 6 to 7 (message sizes, indexes by queue for backlogs \
         larger than memory)"
    );
    Ok(())
}

/// Version 7 → 8: `deduplication` keyed in arrival order (see [`VERSION_8`]). One
/// transaction, so a crash leaves either version, each consistent.
fn migrate_from_v7(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(VERSION_8)?;
    tx.pragma_update(None, "user_version", 8)?;
    tx.commit()?;
    tracing::info!(
        "migrated the database from schema 7 to 8 (deduplication ids kept in arrival order)"
    );
    Ok(())
}

fn insert_receipt_secret(conn: &Connection) -> rusqlite::Result<()> {
    let secret = crate::receipt::ReceiptKey::generate_secret();
    conn.execute(
        "INSERT INTO secrets (name, value) VALUES (?1, ?2)",
        rusqlite::params![RECEIPT_SECRET, &secret[..]],
    )?;
    Ok(())
}

/// The key that signs receipt handles.
fn receipt_secret(conn: &Connection) -> rusqlite::Result<[u8; crate::receipt::KEY_LEN]> {
    let value: Vec<u8> = conn.query_row(
        "SELECT value FROM secrets WHERE name = ?1",
        [RECEIPT_SECRET],
        |row| row.get(0),
    )?;
    value.try_into().map_err(|value: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("the receipt key has {} bytes, not 32", value.len()).into(),
        )
    })
}

/// Caps the database at `max_bytes` (at least its current size): SQLite refuses, with
/// SQLITE_FULL, a transaction that would need more pages.
pub fn cap_size(conn: &Connection, max_bytes: u64) -> rusqlite::Result<()> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let pages = (max_bytes / page_size.max(1) as u64).max(1);
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
}

/// The stored value of an id counter (`next_queue_id`, `next_message_id`).
pub fn stored_counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT value FROM counters WHERE name = ?1",
        [name],
        |row| row.get::<_, i64>(0),
    )
    .map(|value| value as u64)
}

/// Reads every queue with the metadata of its messages, oldest first.
pub fn recover(conn: &Connection) -> rusqlite::Result<Recovered> {
    let counter = |name: &str| stored_counter(conn, name);
    let mut recovered = Recovered {
        queues: Vec::new(),
        deduplication_ids: recover_deduplication_ids(conn)?,
        topics: recover_topics(conn)?,
        subscriptions: recover_subscriptions(conn)?,
        topic_totals: recover_topic_totals(conn)?,
        subscription_totals: recover_subscription_totals(conn)?,
        receipt_secret: receipt_secret(conn)?,
        next_queue_id: counter("next_queue_id")?,
        next_message_id: counter("next_message_id")?,
    };
    let mut queues = conn.prepare(
        "SELECT id, name, visibility_timeout_seconds, polling_wait_seconds, max_message_size,
                message_retention_seconds, rewind_seconds, max_backlog, create_time_ms, update_time_ms,
                deduplication_window_seconds, dead_letter_queue, max_receive_count,
                max_time_to_live_seconds, max_bytes
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
                    deduplication_window_seconds: row.get(10)?,
                    dead_letter_policy: match row.get::<_, Option<String>>(11)? {
                        Some(dead_letter_queue) => Some(DeadLetterPolicy {
                            dead_letter_queue,
                            max_receive_count: row.get(12)?,
                            max_time_to_live_seconds: row.get(13)?,
                        }),
                        None => None,
                    },
                    max_bytes: row.get::<_, i64>(14)? as u64,
                },
                create_time_ms: row.get(8)?,
                update_time_ms: row.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    recovered.queues = records;
    Ok(recovered)
}

/// Every topic, in id order.
fn recover_topics(conn: &Connection) -> rusqlite::Result<Vec<TopicRecord>> {
    let mut topics = conn.prepare(
        "SELECT id, name, max_message_size, filter_type, create_time_ms, update_time_ms
         FROM topics ORDER BY id",
    )?;
    topics
        .query_map([], |row| {
            let code: i64 = row.get(3)?;
            Ok(TopicRecord {
                id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                max_message_size: row.get(2)?,
                filter_type: FilterType::from_code(code)
                    .ok_or_else(|| corrupt(3, "filter_type"))?,
                create_time_ms: row.get(4)?,
                update_time_ms: row.get(5)?,
            })
        })?
        .collect()
}

/// Every subscription.
fn recover_subscriptions(conn: &Connection) -> rusqlite::Result<Vec<SubscriptionRecord>> {
    let mut subscriptions = conn.prepare(
        "SELECT topic_id, name, queue_id, queue_name, filter, create_time_ms
         FROM subscriptions ORDER BY topic_id, name",
    )?;
    subscriptions
        .query_map([], |row| {
            let filter: String = row.get(4)?;
            Ok(SubscriptionRecord {
                topic_id: row.get::<_, i64>(0)? as u64,
                name: row.get(1)?,
                queue_id: row.get::<_, i64>(2)? as u64,
                queue_name: row.get(3)?,
                filter: decode_filter(&filter).ok_or_else(|| corrupt(4, "filter"))?,
                create_time_ms: row.get(5)?,
            })
        })?
        .collect()
}

/// Every topic's totals, by id.
fn recover_topic_totals(conn: &Connection) -> rusqlite::Result<HashMap<u64, TopicTotals>> {
    let mut totals =
        conn.prepare("SELECT id, published_messages, unrouted_messages FROM topics")?;
    totals
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                TopicTotals {
                    published: row.get::<_, i64>(1)? as u64,
                    unrouted: row.get::<_, i64>(2)? as u64,
                },
            ))
        })?
        .collect()
}

/// Every subscription's totals, by topic id and name.
fn recover_subscription_totals(
    conn: &Connection,
) -> rusqlite::Result<HashMap<(u64, String), SubscriptionTotals>> {
    let mut totals = conn.prepare(
        "SELECT topic_id, name, delivered_messages, filtered_out_messages FROM subscriptions",
    )?;
    totals
        .query_map([], |row| {
            Ok((
                (row.get::<_, i64>(0)? as u64, row.get(1)?),
                SubscriptionTotals {
                    delivered: row.get::<_, i64>(2)? as u64,
                    filtered_out: row.get::<_, i64>(3)? as u64,
                },
            ))
        })?
        .collect()
}

fn corrupt(column: usize, name: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("the {name} column holds a value this version does not know").into(),
    )
}

/// Every stored deduplication id.
fn recover_deduplication_ids(conn: &Connection) -> rusqlite::Result<Vec<DeduplicationRecord>> {
    let mut ids = conn
        .prepare("SELECT queue_id, deduplication_id, message_id, accepted_ms FROM deduplication")?;
    ids.query_map([], |row| {
        Ok(DeduplicationRecord {
            queue_id: row.get::<_, i64>(0)? as u64,
            deduplication_id: row.get(1)?,
            message_id: row.get::<_, i64>(2)? as u64,
            accepted_ms: row.get(3)?,
        })
    })?
    .collect()
}

/// The recovery scan: every message's queue and metadata (not its body), in id order. The id is
/// the rowid, so this walks the table once with no sort and no index. The size (body and
/// attributes) comes from `length()` of blobs, which SQLite reads from the record header
/// without loading them.
/// A live queue's slice in id order, through `messages_by_queue`.
const READ_MESSAGES: &str = "SELECT id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms,
       receipt_nonce, deleted, size
FROM messages WHERE queue_id = ?1 AND deleted = 0 AND id > ?2 ORDER BY id LIMIT ?3";

/// A queue's in-flight and delayed messages, through `messages_hidden` (its `WHERE` implies the
/// index's, which is what lets SQLite use a partial index).
const READ_HIDDEN: &str = "SELECT id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms,
       receipt_nonce, deleted, size
FROM messages
WHERE queue_id = ?1 AND deleted = 0 AND visible_at_ms > enqueue_ms AND visible_at_ms > ?2";

/// A queue's kept messages and tombstones, through `messages_by_queue`.
const READ_DELETED: &str = "SELECT id, enqueue_ms, visible_at_ms, dequeue_count, first_dequeue_ms,
       receipt_nonce, deleted, size
FROM messages WHERE queue_id = ?1 AND deleted > 0";

/// A queue's live messages counted from `messages_by_queue` alone.
const COUNT_LIVE: &str =
    "SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE queue_id = ?1 AND deleted = 0";

/// The next queue id with rows after `?1`: one seek of `messages_by_queue` per queue.
const NEXT_QUEUE: &str =
    "SELECT queue_id FROM messages WHERE queue_id > ?1 ORDER BY queue_id LIMIT 1";

const MESSAGE_IDS: &str = "SELECT id FROM messages WHERE queue_id = ?1 LIMIT ?2";

fn stored_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: row.get::<_, i64>(0)? as u64,
        enqueue_ms: row.get(1)?,
        visible_at_ms: row.get(2)?,
        dequeue_count: row.get(3)?,
        first_dequeue_ms: row.get(4)?,
        receipt_nonce: row.get::<_, i64>(5)? as u64,
        state: {
            let code = row.get::<_, i64>(6)?;
            StoredState::from_code(code)
                .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(6, code))?
        },
        size: row.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

/// See `Storage::read_messages`.
pub fn read_messages(
    conn: &Connection,
    queue_id: u64,
    after_id: u64,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    let mut select = conn.prepare_cached(READ_MESSAGES)?;
    let rows = select.query_map(
        rusqlite::params![
            queue_id as i64,
            after_id.min(i64::MAX as u64) as i64,
            limit.min(i64::MAX as usize) as i64
        ],
        stored_message,
    )?;
    rows.collect()
}

/// See `Storage::read_held`: one read transaction, so both halves come from one snapshot.
pub fn read_held(
    conn: &Connection,
    queue_id: u64,
    now: crate::clock::Millis,
) -> rusqlite::Result<Vec<StoredMessage>> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let mut held: Vec<StoredMessage> = conn
            .prepare_cached(READ_HIDDEN)?
            .query_map(rusqlite::params![queue_id as i64, now], stored_message)?
            .collect::<rusqlite::Result<_>>()?;
        let mut deleted = conn.prepare_cached(READ_DELETED)?;
        for message in deleted.query_map([queue_id as i64], stored_message)? {
            held.push(message?);
        }
        Ok(held)
    })();
    conn.execute_batch("COMMIT")?;
    result
}

/// See `Storage::count_live`.
pub fn count_live(conn: &Connection, queue_id: u64) -> rusqlite::Result<LiveTotals> {
    conn.prepare_cached(COUNT_LIVE)?
        .query_row([queue_id as i64], |row| {
            Ok(LiveTotals {
                count: row.get::<_, i64>(0)?.max(0) as u64,
                bytes: row.get::<_, i64>(1)?.max(0) as u64,
            })
        })
}

/// See `Storage::queues_with_messages`.
pub fn queues_with_messages(conn: &Connection) -> rusqlite::Result<Vec<u64>> {
    let mut next = conn.prepare_cached(NEXT_QUEUE)?;
    let mut queues = Vec::new();
    let mut after = 0i64;
    while let Some(queue_id) = next
        .query_row([after], |row| row.get::<_, i64>(0))
        .optional()?
    {
        queues.push(queue_id as u64);
        after = queue_id;
    }
    Ok(queues)
}

/// See `Storage::message_ids`.
pub fn message_ids(conn: &Connection, queue_id: u64, limit: usize) -> rusqlite::Result<Vec<u64>> {
    conn.prepare_cached(MESSAGE_IDS)?
        .query_map(
            rusqlite::params![queue_id as i64, limit.min(i64::MAX as usize) as i64],
            |row| row.get::<_, i64>(0).map(|id| id as u64),
        )?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut explain = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        // Parameters left unbound: the plan does not depend on their values.
        let mut rows = explain.raw_query();
        let mut details: Vec<String> = Vec::new();
        while let Some(row) = rows.next().expect("plan rows") {
            details.push(row.get(3).expect("detail"));
        }
        details.join("; ")
    }

    /// A window's reads go through the indexes by queue: a slice seeks, the counts never touch
    /// the rows, the in-flight and delayed messages come from the partial index; none scans
    /// the table or sorts.
    #[test]
    fn window_reads_use_the_indexes_by_queue() {
        let conn = Connection::open_in_memory().expect("open");
        create(&conn).expect("create");
        let read = plan(&conn, READ_MESSAGES);
        assert!(
            read.starts_with("SEARCH messages USING INDEX messages_by_queue"),
            "{read}"
        );
        assert!(!read.contains("TEMP B-TREE"), "{read}");
        let count = plan(&conn, COUNT_LIVE);
        assert!(
            count.starts_with("SEARCH messages USING COVERING INDEX messages_by_queue"),
            "{count}"
        );
        let hidden = plan(&conn, READ_HIDDEN);
        assert!(hidden.contains("USING INDEX messages_hidden"), "{hidden}");
        let deleted = plan(&conn, READ_DELETED);
        assert!(deleted.contains("INDEX messages_by_queue"), "{deleted}");
        let next = plan(&conn, NEXT_QUEUE);
        assert!(next.contains("COVERING INDEX messages_by_queue"), "{next}");
    }

    /// Version 6 → 7 sizes every stored message from its body and attributes and indexes it:
    /// the counts and slices of a queue read the migrated rows.
    #[test]
    fn a_version_6_database_gains_sizes_and_indexes_by_queue() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("version 1's tables");
        conn.execute_batch(SECRETS).expect("secrets");
        insert_receipt_secret(&conn).expect("secret");
        conn.execute_batch(VERSION_4).expect("version 4's columns");
        conn.execute_batch(VERSION_5).expect("version 5's tables");
        conn.execute_batch(VERSION_6).expect("version 6's columns");
        conn.execute_batch(
            "INSERT INTO queues (id, name, visibility_timeout_seconds, polling_wait_seconds,
                 max_message_size, message_retention_seconds, rewind_seconds, max_backlog,
                 create_time_ms, update_time_ms)
                 VALUES (1, 'q', 30, 0, 65536, 345600, 0, 100, 1, 1);
             INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body, meta, deleted)
                 VALUES (1, 1, 5, 5, x'68690a0b', x'0a03', 0), (2, 1, 5, 5, x'6869', NULL, 0),
                        (3, 1, 5, 9000, x'6869', NULL, 0), (4, 1, 5, 5, x'68', NULL, 1);
             PRAGMA user_version = 6;",
        )
        .expect("make it version 6");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            count_live(&conn, 1).expect("count"),
            LiveTotals {
                count: 3,
                bytes: 10
            }
        );
        let slice = read_messages(&conn, 1, 1, 10).expect("slice");
        assert_eq!(slice.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(slice[0].size, 2);
        let held = read_held(&conn, 1, 100).expect("held");
        assert_eq!(held.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(held[1].state, StoredState::Kept);
        assert_eq!(queues_with_messages(&conn).expect("queues"), vec![1]);
        assert_eq!(message_ids(&conn, 1, 10).expect("ids").len(), 4);
    }

    #[test]
    fn a_version_7_database_keeps_its_deduplication_ids_in_arrival_order() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("version 1's tables");
        conn.execute_batch(SECRETS).expect("secrets");
        insert_receipt_secret(&conn).expect("secret");
        for version in [VERSION_4, VERSION_5, VERSION_6, VERSION_7] {
            conn.execute_batch(version)
                .expect("an earlier version's change");
        }
        conn.execute_batch(
            "INSERT INTO deduplication (queue_id, deduplication_id, message_id, accepted_ms)
                 VALUES (1, 'b', 7, 70), (1, 'a', 9, 90), (2, 'a', 8, 80);
             PRAGMA user_version = 7;",
        )
        .expect("make it version 7");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let mut ids = recover_deduplication_ids(&conn).expect("ids");
        ids.sort_by_key(|record| record.message_id);
        let ids: Vec<_> = ids
            .iter()
            .map(|r| {
                (
                    r.queue_id,
                    r.deduplication_id.as_str(),
                    r.message_id,
                    r.accepted_ms,
                )
            })
            .collect();
        assert_eq!(ids, [(1, "b", 7, 70), (2, "a", 8, 80), (1, "a", 9, 90)]);
        // A row per acceptance now: the same id accepted again is a row of its own.
        conn.execute(
            "INSERT INTO deduplication (queue_id, deduplication_id, message_id, accepted_ms)
                 VALUES (1, 'a', 10, 100)",
            [],
        )
        .expect("a second acceptance of an id");
    }

    #[test]
    fn a_version_1_database_loses_its_index() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("version 1's tables");
        conn.execute_batch(
            "CREATE INDEX messages_by_queue ON messages (queue_id, id); PRAGMA user_version = 1;",
        )
        .expect("make it version 1");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(receipt_secret(&conn).expect("a receipt key").len(), 32);
        // Version 1's index went in version 2; version 7 made its own two.
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
                 ORDER BY name",
            )
            .expect("indexes")
            .query_map([], |row| row.get(0))
            .expect("indexes")
            .collect::<Result<_, _>>()
            .expect("indexes");
        assert_eq!(indexes, vec!["messages_by_queue", "messages_hidden"]);
    }

    /// Version 3 → 4 keeps every queue and message, gives queues the default deduplication
    /// window and no dead-letter policy, and messages no attributes.
    #[test]
    fn a_version_3_database_gains_attributes_and_deduplication() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("tables");
        conn.execute_batch(SECRETS).expect("secrets");
        insert_receipt_secret(&conn).expect("secret");
        conn.execute_batch(
            "INSERT INTO queues VALUES (1, 'q', 30, 0, 65536, 345600, 0, 100, 5, 5);
             INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body)
                 VALUES (1, 1, 5, 5, x'6869');
             PRAGMA user_version = 3;",
        )
        .expect("make it version 3");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let recovered = recover(&conn).expect("recover");
        let attributes = &recovered.queues[0].attributes;
        assert_eq!(attributes.deduplication_window_seconds, 300);
        assert_eq!(attributes.dead_letter_policy, None);
        assert!(recovered.deduplication_ids.is_empty());
        let meta: Option<Vec<u8>> = conn
            .query_row("SELECT meta FROM messages WHERE id = 1", [], |row| {
                row.get(0)
            })
            .expect("meta");
        assert_eq!(meta, None);
    }

    #[test]
    fn a_version_4_database_gains_topics_and_keeps_its_queues() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("version 1's tables");
        conn.execute_batch(SECRETS).expect("secrets");
        insert_receipt_secret(&conn).expect("secret");
        conn.execute_batch(VERSION_4).expect("version 4's columns");
        conn.execute_batch(
            "INSERT INTO queues (id, name, visibility_timeout_seconds, polling_wait_seconds,
                 max_message_size, message_retention_seconds, rewind_seconds, max_backlog,
                 create_time_ms, update_time_ms)
                 VALUES (1, 'q', 30, 0, 65536, 345600, 0, 100, 1, 1);
             PRAGMA user_version = 4;",
        )
        .expect("make it version 4");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let recovered = recover(&conn).expect("recover");
        assert_eq!(recovered.queues.len(), 1);
        assert!(recovered.topics.is_empty() && recovered.subscriptions.is_empty());
        conn.execute_batch(
            "INSERT INTO topics (id, name, max_message_size, filter_type, create_time_ms,
                 update_time_ms) VALUES (3, 't', 1024, 2, 5, 6);
             INSERT INTO subscriptions (topic_id, name, queue_id, queue_name, filter,
                 create_time_ms) VALUES (3, 's', 1, 'q', '[\"a.#\"]', 7);",
        )
        .expect("topic rows");
        let recovered = recover(&conn).expect("recover");
        assert_eq!(recovered.topics[0].filter_type, FilterType::RoutingKeys);
        assert_eq!(recovered.subscriptions[0].filter, vec!["a.#".to_string()]);
    }

    /// Version 5 → 6 keeps every queue, with no byte quota; the recovery scan sizes each
    /// message by its body and attributes.
    #[test]
    fn a_version_5_database_gains_byte_quotas() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(SCHEMA).expect("version 1's tables");
        conn.execute_batch(SECRETS).expect("secrets");
        insert_receipt_secret(&conn).expect("secret");
        conn.execute_batch(VERSION_4).expect("version 4's columns");
        conn.execute_batch(VERSION_5).expect("version 5's tables");
        conn.execute_batch(
            "INSERT INTO queues (id, name, visibility_timeout_seconds, polling_wait_seconds,
                 max_message_size, message_retention_seconds, rewind_seconds, max_backlog,
                 create_time_ms, update_time_ms)
                 VALUES (1, 'q', 30, 0, 65536, 345600, 0, 100, 1, 1);
             INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body, meta)
                 VALUES (1, 1, 5, 5, x'68690a0b', x'0a03'), (2, 1, 5, 5, x'6869', NULL);
             PRAGMA user_version = 5;",
        )
        .expect("make it version 5");
        prepare(&conn).expect("prepare");
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let recovered = recover(&conn).expect("recover");
        assert_eq!(recovered.queues[0].attributes.max_bytes, 0);
        let sizes: Vec<u32> = read_messages(&conn, 1, 0, 10)
            .expect("slice")
            .iter()
            .map(|message| message.size)
            .collect();
        assert_eq!(sizes, vec![6, 2]);
    }
}
