//! Vacuums the `messages` table from Spool itself.
//!
//! Every message row is inserted, updated and deleted within its retention, so dead rows pile
//! up at the rate of the traffic. Autovacuum (tuned on the table at creation) reclaims them
//! when it is on, but it can be off, or slow to come to a busy table; then the table and its
//! indexes would grow for as long as traffic runs. So the backend runs a plain `VACUUM` (no
//! lock that blocks reads or writes) itself once enough rows changed, keeping the dead space
//! to about that many rows' worth whatever the server's settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::ConnectOptions;
use super::schema::quoted;

/// How often the count of changed rows is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Rows deleted or updated since the last vacuum that make the next one worth it: a vacuum of
/// a table whose live part is small costs a few milliseconds to a few hundred.
pub const VACUUM_AFTER_CHANGES: u64 = 20_000;

/// Starts the task; it ends when `stop` is cancelled.
pub fn spawn(
    options: ConnectOptions,
    schema: String,
    changes: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut client: Option<Client> = None;
        let statement = format!("VACUUM {}.messages", quoted(&schema));
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            if changes.load(Ordering::Relaxed) < VACUUM_AFTER_CHANGES {
                continue;
            }
            if client.as_ref().is_none_or(Client::is_closed) {
                client = match options.connect().await {
                    Ok(connected) => Some(connected),
                    Err(error) => {
                        tracing::warn!(%error, "cannot connect to vacuum the messages table");
                        continue;
                    }
                };
            }
            let Some(connected) = &client else { continue };
            let taken = changes.swap(0, Ordering::Relaxed);
            let started = std::time::Instant::now();
            tokio::select! {
                vacuumed = connected.batch_execute(&statement) => match vacuumed {
                    Ok(()) => tracing::debug!(changed_rows = taken, elapsed = ?started.elapsed(), "vacuumed the messages table"),
                    Err(error) => {
                        tracing::warn!(%error, "vacuuming the messages table failed");
                        changes.fetch_add(taken, Ordering::Relaxed);
                    }
                },
                () = stop.cancelled() => return,
            }
        }
    });
}
