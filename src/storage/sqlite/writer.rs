//! The writer thread and its group commit.
//!
//! Durability costs one fsync per commit, whatever the commit holds. So the writer takes
//! everything that is waiting (from every queue), applies it in one transaction, syncs once and
//! then answers all of it: throughput grows with concurrency instead of being capped by the sync
//! latency. Blocking SQLite calls stay on this thread, never on tokio's workers.

use std::fs::File;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use rusqlite::{Connection, params};

use crate::storage::{
    CommitObserver, CommitReply, PublishCounts, StorageError, StoredState, WriteOp, WriterRequest,
};

/// Most requests applied in one transaction; bounds how long a commit holds its callers.
const MAX_GROUP: usize = 4_096;
/// Most messages written in one transaction, for the same reason: without it, the slices of a
/// large queue's deletion (see the queue actor) would be gathered back into one long commit.
const MAX_GROUP_MESSAGES: usize = 8_192;

/// Message ids are reserved on disk this many at a time. Writing the high-water mark in every
/// commit cost one more page in every commit's WAL write; now it is written once per block.
/// After a restart, ids continue after the reserved block, so an id is still never handed out
/// twice (a restart skips at most this many).
const MESSAGE_ID_BLOCK: u64 = 1 << 16;

/// Starts the writer thread. It owns `locks` (the flocks that keep other servers out) and
/// releases them when it closes, before it answers the close: a server started again in the
/// same process once `close` has been answered finds the database free, even while tasks of the
/// old one still hold a reference to its storage.
pub fn spawn(
    conn: Connection,
    metrics: Arc<dyn CommitObserver>,
    locks: Vec<File>,
) -> Result<mpsc::Sender<WriterRequest>, StorageError> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || run(conn, receiver, &*metrics, locks))
        .map_err(|e| StorageError::Io(format!("cannot start the writer thread: {e}")))?;
    Ok(sender)
}

fn run(
    conn: Connection,
    requests: mpsc::Receiver<WriterRequest>,
    metrics: &dyn CommitObserver,
    locks: Vec<File>,
) {
    let mut group: Vec<(WriteOp, Option<CommitReply>)> = Vec::new();
    // Unreadable, it is taken as 0: the first commit with a send then writes a new reservation.
    let mut reserved = super::schema::stored_counter(&conn, "next_message_id").unwrap_or(0);
    while let Ok(first) = requests.recv() {
        let mut close = None;
        let mut next = Some(first);
        let mut group_messages = 0;
        while let Some(request) = next.take() {
            match request {
                WriterRequest::Write { op, done } => {
                    group_messages += op.message_count();
                    group.push((op, done));
                }
                WriterRequest::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if group.len() < MAX_GROUP && group_messages < MAX_GROUP_MESSAGES {
                next = requests.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let started = Instant::now();
            let messages = group.iter().map(|(op, _)| op.message_count()).sum();
            let succeeded = commit_group(&conn, &mut group, &mut reserved);
            metrics.observe_commit(started.elapsed(), messages, succeeded);
        }
        if let Some(done) = close {
            // Later requests are refused: their senders hear that storage is closed.
            drop(requests);
            drop(conn);
            drop(locks);
            let _ = done.send(());
            return;
        }
    }
}

/// Applies the group in one transaction; if one operation fails, retries each on its own so
/// that one bad write does not fail the others. Returns whether the group commit succeeded.
fn commit_group(
    conn: &Connection,
    group: &mut Vec<(WriteOp, Option<CommitReply>)>,
    reserved: &mut u64,
) -> bool {
    let outcome = transaction(conn, group.iter().map(|(op, _)| op), reserved);
    match outcome {
        Ok(()) => {
            for (_, done) in group.drain(..) {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
            true
        }
        Err(error) if group.len() == 1 => {
            tracing::error!(%error, "storage commit failed");
            fail_all(group, &error);
            false
        }
        Err(error) => {
            tracing::warn!(%error, ops = group.len(), "group commit failed; retrying one by one");
            for (op, done) in group.drain(..) {
                let result = transaction(conn, std::iter::once(&op), reserved).map_err(|error| {
                    tracing::error!(%error, "storage commit failed");
                    commit_error(&error)
                });
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
            false
        }
    }
}

fn fail_all(group: &mut Vec<(WriteOp, Option<CommitReply>)>, error: &rusqlite::Error) {
    for (_, done) in group.drain(..) {
        if let Some(done) = done {
            let _ = done.send(Err(commit_error(error)));
        }
    }
}

fn commit_error(error: &rusqlite::Error) -> StorageError {
    StorageError::Io(format!("commit failed: {error}"))
}

/// Applies `ops` in one transaction. `reserved` is the message-id reservation on disk: raised
/// (by a block) in the same transaction when the ops use an id beyond it, and updated here only
/// once that transaction has committed.
fn transaction<'a>(
    conn: &Connection,
    ops: impl Iterator<Item = &'a WriteOp>,
    reserved: &mut u64,
) -> rusqlite::Result<()> {
    // Cached statements, not `execute_batch`: that parses the SQL again at every commit.
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let result = (|| {
        let mut next_queue_id = 0u64;
        let mut next_message_id = 0u64;
        for op in ops {
            apply(conn, op, &mut next_queue_id, &mut next_message_id)?;
        }
        raise_counter(conn, "next_queue_id", next_queue_id)?;
        let reservation = (next_message_id > *reserved).then(|| next_message_id + MESSAGE_ID_BLOCK);
        if let Some(reservation) = reservation {
            raise_counter(conn, "next_message_id", reservation)?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        if let Some(reservation) = reservation {
            *reserved = reservation;
        }
        Ok(())
    })();
    if result.is_err() {
        // The transaction may already be gone (a failed COMMIT rolls back on some errors).
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn raise_counter(conn: &Connection, name: &str, at_least: u64) -> rusqlite::Result<()> {
    if at_least > 0 {
        conn.prepare_cached("UPDATE counters SET value = max(value, ?2) WHERE name = ?1")?
            .execute(params![name, at_least as i64])?;
    }
    Ok(())
}

/// Adds a publish's counts to its topic's and subscriptions' totals (rows deleted meanwhile
/// match nothing).
fn count_publish(conn: &Connection, counts: &PublishCounts) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE topics SET published_messages = published_messages + ?2,
            unrouted_messages = unrouted_messages + ?3
         WHERE id = ?1",
    )?
    .execute(params![
        counts.topic_id as i64,
        counts.topic.published as i64,
        counts.topic.unrouted as i64,
    ])?;
    let mut subscription = conn.prepare_cached(
        "UPDATE subscriptions SET delivered_messages = delivered_messages + ?3,
            filtered_out_messages = filtered_out_messages + ?4
         WHERE topic_id = ?1 AND name = ?2",
    )?;
    for (name, totals) in &counts.subscriptions {
        subscription.execute(params![
            counts.topic_id as i64,
            name,
            totals.delivered as i64,
            totals.filtered_out as i64,
        ])?;
    }
    Ok(())
}

fn apply(
    conn: &Connection,
    op: &WriteOp,
    next_queue_id: &mut u64,
    next_message_id: &mut u64,
) -> rusqlite::Result<()> {
    match op {
        WriteOp::CreateQueue(queue) => {
            let a = &queue.attributes;
            conn.prepare_cached(
                "INSERT INTO queues (id, name, visibility_timeout_seconds, polling_wait_seconds,
                    max_message_size, message_retention_seconds, rewind_seconds, max_backlog,
                    create_time_ms, update_time_ms, deduplication_window_seconds,
                    dead_letter_queue, max_receive_count, max_time_to_live_seconds, max_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                queue.id as i64,
                queue.name,
                a.visibility_timeout_seconds,
                a.polling_wait_seconds,
                a.max_message_size,
                a.message_retention_seconds,
                a.rewind_seconds,
                a.max_backlog as i64,
                queue.create_time_ms,
                queue.update_time_ms,
                a.deduplication_window_seconds,
                a.dead_letter_policy
                    .as_ref()
                    .map(|p| p.dead_letter_queue.as_str()),
                a.dead_letter_policy
                    .as_ref()
                    .map_or(0, |p| p.max_receive_count),
                a.dead_letter_policy
                    .as_ref()
                    .map_or(0, |p| p.max_time_to_live_seconds),
                a.max_bytes as i64,
            ])?;
            *next_queue_id = (*next_queue_id).max(queue.id + 1);
        }
        WriteOp::UpdateQueue(queue) => {
            let a = &queue.attributes;
            conn.prepare_cached(
                "UPDATE queues SET visibility_timeout_seconds = ?2, polling_wait_seconds = ?3,
                    max_message_size = ?4, message_retention_seconds = ?5, rewind_seconds = ?6,
                    max_backlog = ?7, update_time_ms = ?8, deduplication_window_seconds = ?9,
                    dead_letter_queue = ?10, max_receive_count = ?11,
                    max_time_to_live_seconds = ?12, max_bytes = ?13
                 WHERE id = ?1",
            )?
            .execute(params![
                queue.id as i64,
                a.visibility_timeout_seconds,
                a.polling_wait_seconds,
                a.max_message_size,
                a.message_retention_seconds,
                a.rewind_seconds,
                a.max_backlog as i64,
                queue.update_time_ms,
                a.deduplication_window_seconds,
                a.dead_letter_policy
                    .as_ref()
                    .map(|p| p.dead_letter_queue.as_str()),
                a.dead_letter_policy
                    .as_ref()
                    .map_or(0, |p| p.max_receive_count),
                a.dead_letter_policy
                    .as_ref()
                    .map_or(0, |p| p.max_time_to_live_seconds),
                a.max_bytes as i64,
            ])?;
        }
        WriteOp::DeleteQueue {
            queue_id,
            message_ids,
        } => {
            // By id, not `WHERE queue_id = ?`: with no index on queue_id that would scan every
            // queue's rows (measured: 130-200 ms for a queue of 1,000 in a table of 1,000,000,
            // against about 33 ms by id). The queue_id test only guards the other queues.
            let mut delete =
                conn.prepare_cached("DELETE FROM messages WHERE id = ?1 AND queue_id = ?2")?;
            for id in message_ids {
                delete.execute(params![*id as i64, *queue_id as i64])?;
            }
            conn.prepare_cached("DELETE FROM queues WHERE id = ?1")?
                .execute([*queue_id as i64])?;
            conn.prepare_cached("DELETE FROM deduplication WHERE queue_id = ?1")?
                .execute([*queue_id as i64])?;
            // A queue's subscriptions go with it (see `topic`).
            conn.prepare_cached("DELETE FROM subscriptions WHERE queue_id = ?1")?
                .execute([*queue_id as i64])?;
        }
        WriteOp::InsertMessages { .. } | WriteOp::Publish { .. } => {
            let rows = op.inserted_messages().unwrap_or_default();
            let mut insert = conn.prepare_cached(
                "INSERT INTO messages (id, queue_id, enqueue_ms, visible_at_ms, body, meta, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // Taken from the statement cache only for a row that needs it (each take hashes the
            // statement's text, and most sends have no deduplication id).
            let mut remember = None;
            for (queue_id, message) in rows {
                insert.execute(params![
                    message.id as i64,
                    queue_id as i64,
                    message.enqueue_ms,
                    message.visible_at_ms,
                    &message.payload.body[..],
                    message.payload.encoded_meta(),
                    message.payload.size() as i64,
                ])?;
                if let Some(deduplication_id) = &message.deduplication_id {
                    let remember = match &mut remember {
                        Some(remember) => remember,
                        None => remember.insert(conn.prepare_cached(
                            // A row per acceptance, appended in message id order (see
                            // `schema::VERSION_8`); an id accepted again, after its window,
                            // has a row of each, and recovery keeps the newer.
                            "INSERT INTO deduplication (queue_id, deduplication_id, message_id,
                                accepted_ms)
                             VALUES (?1, ?2, ?3, ?4)",
                        )?),
                    };
                    remember.execute(params![
                        queue_id as i64,
                        deduplication_id,
                        message.id as i64,
                        message.enqueue_ms,
                    ])?;
                }
                *next_message_id = (*next_message_id).max(message.id + 1);
            }
            if let Some(id) = op.last_publish_id() {
                *next_message_id = (*next_message_id).max(id + 1);
            }
            if let Some(counts) = op.publish_counts() {
                count_publish(conn, counts)?;
            }
        }
        WriteOp::CreateTopic(topic) => {
            conn.prepare_cached(
                "INSERT INTO topics (id, name, max_message_size, filter_type, create_time_ms,
                    update_time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                topic.id as i64,
                topic.name,
                topic.max_message_size,
                topic.filter_type.code(),
                topic.create_time_ms,
                topic.update_time_ms,
            ])?;
        }
        WriteOp::UpdateTopic(topic) => {
            conn.prepare_cached(
                "UPDATE topics SET max_message_size = ?2, update_time_ms = ?3 WHERE id = ?1",
            )?
            .execute(params![
                topic.id as i64,
                topic.max_message_size,
                topic.update_time_ms,
            ])?;
        }
        WriteOp::DeleteTopic { topic_id } => {
            conn.prepare_cached("DELETE FROM subscriptions WHERE topic_id = ?1")?
                .execute([*topic_id as i64])?;
            conn.prepare_cached("DELETE FROM topics WHERE id = ?1")?
                .execute([*topic_id as i64])?;
        }
        WriteOp::Subscribe(subscription) => {
            conn.prepare_cached(
                "INSERT INTO subscriptions (topic_id, name, queue_id, queue_name, filter,
                    create_time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                subscription.topic_id as i64,
                subscription.name,
                subscription.queue_id as i64,
                subscription.queue_name,
                crate::storage::encode_filter(&subscription.filter),
                subscription.create_time_ms,
            ])?;
        }
        WriteOp::Unsubscribe { topic_id, name } => {
            conn.prepare_cached("DELETE FROM subscriptions WHERE topic_id = ?1 AND name = ?2")?
                .execute(params![*topic_id as i64, name])?;
        }
        WriteOp::RemoveMessages { ids, .. } => {
            let mut delete = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
            for id in ids {
                delete.execute([*id as i64])?;
            }
        }
        // Each statement is taken from the cache only when it has rows to write (a take hashes
        // its text); most deletes only remove.
        WriteOp::DeleteMessages(deleted) => {
            if !deleted.removed.is_empty() {
                let mut remove = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
                for id in &deleted.removed {
                    remove.execute([*id as i64])?;
                }
            }
            if deleted.kept.is_empty() && deleted.tombstones.is_empty() {
                return Ok(());
            }
            let mut keep = conn.prepare_cached(
                "UPDATE messages SET deleted = ?5, dequeue_count = ?2, first_dequeue_ms = ?3,
                    receipt_nonce = ?4
                 WHERE id = ?1",
            )?;
            for kept in &deleted.kept {
                keep.execute(params![
                    kept.id as i64,
                    kept.dequeue_count,
                    kept.first_dequeue_ms,
                    kept.receipt_nonce as i64,
                    StoredState::Kept.code(),
                ])?;
            }
            let mut tombstone = conn.prepare_cached(
                "UPDATE messages SET deleted = ?5, visible_at_ms = ?2, dequeue_count = ?3,
                    receipt_nonce = ?4, body = x'', meta = NULL, size = 0,
                    dead_letter_source = NULL
                 WHERE id = ?1",
            )?;
            for kept in &deleted.tombstones {
                tombstone.execute(params![
                    kept.id as i64,
                    deleted.tombstone_until_ms,
                    kept.dequeue_count,
                    kept.receipt_nonce as i64,
                    StoredState::Tombstone.code(),
                ])?;
            }
        }
        WriteOp::Restore {
            ids, visible_at_ms, ..
        } => {
            let mut restore = conn.prepare_cached(
                "UPDATE messages SET deleted = 0, visible_at_ms = ?2, receipt_nonce = 0
                 WHERE id = ?1",
            )?;
            for id in ids {
                restore.execute(params![*id as i64, visible_at_ms])?;
            }
        }
        WriteOp::RecordReceives { receives, .. } => {
            let mut update = conn.prepare_cached(
                "UPDATE messages SET visible_at_ms = ?2, dequeue_count = ?3,
                    first_dequeue_ms = ?4, receipt_nonce = ?5
                 WHERE id = ?1 AND deleted = 0",
            )?;
            for receive in receives {
                update.execute(params![
                    receive.id as i64,
                    receive.visible_at_ms,
                    receive.dequeue_count,
                    receive.first_dequeue_ms,
                    receive.receipt_nonce as i64,
                ])?;
            }
        }
        WriteOp::MoveMessages {
            from_queue_id,
            moves,
        } => {
            let mut move_one = conn.prepare_cached(
                "UPDATE messages SET queue_id = ?2, visible_at_ms = ?3, dequeue_count = 0,
                    first_dequeue_ms = 0, receipt_nonce = 0, dead_letter_source = ?4,
                    dead_letter_receive_count = ?5
                 WHERE id = ?1 AND queue_id = ?6 AND deleted = 0",
            )?;
            for moved in moves {
                move_one.execute(params![
                    moved.id as i64,
                    moved.to_queue_id as i64,
                    moved.visible_at_ms,
                    moved.dead_letter.as_ref().map(|d| &*d.source_queue),
                    moved.dead_letter.as_ref().map_or(0, |d| d.receive_count),
                    *from_queue_id as i64,
                ])?;
            }
        }
        WriteOp::ForgetDeduplicationIds {
            queue_id,
            message_ids,
            ..
        } => {
            // A row per acceptance, keyed by (queue, message id): see `schema::VERSION_8`.
            let mut forget = conn.prepare_cached(
                "DELETE FROM deduplication WHERE queue_id = ?1 AND message_id = ?2",
            )?;
            for message_id in message_ids {
                forget.execute(params![*queue_id as i64, *message_id as i64])?;
            }
        }
    }
    Ok(())
}
