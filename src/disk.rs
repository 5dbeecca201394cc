//! The disk guard: sends are refused (UNAVAILABLE, reason STORAGE_UNAVAILABLE, as on a full
//! disk) while the filesystem of the data directory is short of free space, or while the data
//! directory's files (the database, its WAL and shm, everything Spool writes there) reach
//! `--max-database-bytes`. Receives, deletes and administration go on, so consumers can drain
//! the queues and free space.
//!
//! A task measures once per [`DISK_CHECK_INTERVAL`]; between two checks sends may write what
//! they write in that time (about 150 MB at the fastest measured), far below the watermark.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::QueueError;
use crate::limits::{MIN_FREE_DISK_BYTES_CAP, MIN_FREE_DISK_FRACTION};
use crate::metrics::Metrics;

/// How often free space and Spool's own bytes are measured.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether sends are refused now, and why.
pub struct DiskGuard {
    /// `Some(why)` while sends are refused.
    refusing: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

/// What the guard watches.
#[derive(Clone, Debug)]
pub struct DiskLimits {
    /// The data directory: its filesystem and its files.
    pub dir: PathBuf,
    /// `--min-free-disk-bytes`: `None` for the default (min(1 GiB, 5%)), `Some(0)` for off.
    pub min_free_bytes: Option<u64>,
    /// `--max-database-bytes`: Spool's files in all, at most.
    pub max_database_bytes: Option<u64>,
}

impl DiskGuard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            refusing: Mutex::new(None),
            metrics,
        }
    }

    /// Ok, or the refusal of a send.
    pub fn check(&self) -> Result<(), QueueError> {
        let refusing = self.refusing.lock().unwrap_or_else(|e| e.into_inner());
        match refusing.as_ref() {
            None => Ok(()),
            Some(why) => {
                self.metrics.limit_refused("disk");
                Err(QueueError::Storage(why.clone()))
            }
        }
    }

    /// Measures now, then every [`DISK_CHECK_INTERVAL`] until `stop`.
    pub async fn watch(self: Arc<Self>, limits: DiskLimits, stop: CancellationToken) {
        loop {
            let measured = {
                let limits = limits.clone();
                tokio::task::spawn_blocking(move || refusal(&limits)).await
            };
            if let Ok(now) = measured {
                self.set(now);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(DISK_CHECK_INTERVAL) => {}
            }
        }
    }

    fn set(&self, now: Option<String>) {
        let mut refusing = self.refusing.lock().unwrap_or_else(|e| e.into_inner());
        match (&*refusing, &now) {
            (None, Some(why)) => tracing::warn!(reason = %why, "refusing sends"),
            (Some(_), None) => tracing::info!("accepting sends again: the disk has room"),
            _ => {}
        }
        *refusing = now;
    }
}

/// Why sends must be refused now, if they must.
pub fn refusal(limits: &DiskLimits) -> Option<String> {
    if let Some(max) = limits.max_database_bytes {
        let used = bytes_in(&limits.dir);
        if used >= max {
            return Some(format!(
                "the data directory's files take {used} bytes, at or over max_database_bytes \
                 ({max}); delete messages or raise the limit"
            ));
        }
    }
    let stats = rustix::fs::statvfs(&limits.dir).ok()?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let total = stats.f_blocks.saturating_mul(stats.f_frsize);
    let min_free = limits
        .min_free_bytes
        .unwrap_or_else(|| default_min_free(total));
    (min_free > 0 && free < min_free).then(|| {
        format!(
            "the disk holding {} has {free} bytes free, below min_free_disk_bytes ({min_free}); \
             free space or delete messages",
            limits.dir.display()
        )
    })
}

/// The default watermark of a filesystem of `total` bytes: the smaller of 1 GiB and 5%.
/// Proportionate on a small volume (a 10 GiB PersistentVolume keeps 512 MiB), and bounded on a
/// large shared disk, where 5% would refuse sends with tens of gigabytes still free.
pub fn default_min_free(total: u64) -> u64 {
    MIN_FREE_DISK_BYTES_CAP.min((total as f64 * MIN_FREE_DISK_FRACTION) as u64)
}

/// Bytes of the regular files directly in `dir` (the database, its WAL and shm, lock files).
fn bytes_in(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|metadata| metadata.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_watermark_is_the_smaller_of_1_gib_and_5_percent() {
        assert_eq!(default_min_free(10 * 1024 * 1024 * 1024), 512 * 1024 * 1024);
        assert_eq!(
            default_min_free(1_000 * 1024 * 1024 * 1024),
            MIN_FREE_DISK_BYTES_CAP
        );
    }

    #[test]
    fn spool_files_count_against_max_database_bytes_wal_included() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("spool.db"), vec![0u8; 4096]).expect("db");
        std::fs::write(dir.path().join("spool.db-wal"), vec![0u8; 8192]).expect("wal");
        let limits = |max| DiskLimits {
            dir: dir.path().to_path_buf(),
            min_free_bytes: Some(0),
            max_database_bytes: Some(max),
        };
        // 4 KiB of database alone would pass; with the WAL, 12 KiB do not.
        assert!(refusal(&limits(12 * 1024 + 1)).is_none());
        let why = refusal(&limits(12 * 1024)).expect("refused");
        assert!(why.contains("12288 bytes"), "{why}");
        // A watermark no disk meets.
        let low = DiskLimits {
            dir: dir.path().to_path_buf(),
            min_free_bytes: Some(u64::MAX),
            max_database_bytes: None,
        };
        assert!(refusal(&low).expect("refused").contains("free"));
    }
}
