//! The storage of the durable relay: one log file, written and synced once per group of appends
//! (group commit) before any of them is acknowledged.
//!
//! It is the least any durable queue must do for a send or a delete to survive power loss: get
//! the bytes into a file and `fdatasync` it. No index, no checksum, no reads, no recovery. Behind
//! Spool's gRPC API (see `relay`), it gives the most a durable server of that API could reach on
//! the machine: what remains of the transport ceiling once every acknowledgement waits for a
//! sync.
//!
//! To be a ceiling, its sync is the cheapest there is: the file is zero-filled and synced before
//! the relay listens (as PostgreSQL prepares its WAL segments), so a sync writes data only, never
//! a new size or newly allocated blocks. On this project's machine that halves an `fdatasync` of
//! 16 KiB (0.17 against 0.40 ms when appending). The file is written as a ring: a run longer
//! than it wraps around, which only a measurement may do (a real log keeps records until they are
//! consumed, in more segments prepared the same way).

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::mpsc;

use tokio::sync::oneshot;
use tonic::Status;

/// The size of the zero-filled ring; longer than one group commit can ever be.
pub const RING_BYTES: u64 = 256 << 20;

type Append = (Vec<u8>, oneshot::Sender<Result<(), String>>);

pub struct AppendLog {
    appends: mpsc::Sender<Append>,
}

impl AppendLog {
    /// Creates the file at `path` (it must not exist), zero-fills it to `ring_bytes` and syncs
    /// it, then starts the thread that writes it.
    pub fn create(path: &Path, ring_bytes: u64) -> io::Result<Self> {
        let mut file = File::options().create_new(true).write(true).open(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut filled = 0;
        while filled < ring_bytes {
            let chunk = zeros.len().min((ring_bytes - filled) as usize);
            file.write_all(&zeros[..chunk])?;
            filled += chunk as u64;
        }
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let (appends, pending) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-log".into())
            .spawn(move || write_in_groups(&file, ring_bytes, &pending))?;
        Ok(Self { appends })
    }

    /// Appends `record`; returns once it is synced to disk.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), Status> {
        let (done, synced) = oneshot::channel();
        self.appends
            .send((record, done))
            .map_err(|_| Status::unavailable("the relay's log is closed"))?;
        match synced.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Status::unavailable(format!("the relay's log: {error}"))),
            Err(_) => Err(Status::unavailable("the relay's log is closed")),
        }
    }
}

/// Takes every append waiting, writes them with one write, syncs once, answers them all.
fn write_in_groups(file: &File, ring_bytes: u64, pending: &mpsc::Receiver<Append>) {
    let mut bytes = Vec::new();
    let mut waiting = Vec::new();
    let mut offset = 0u64;
    while let Ok(first) = pending.recv() {
        let mut next = Some(first);
        while let Some((record, done)) = next.take() {
            bytes.extend_from_slice(&record);
            waiting.push(done);
            next = pending.try_recv().ok();
        }
        if offset + bytes.len() as u64 > ring_bytes {
            offset = 0;
        }
        let written = file
            .write_all_at(&bytes, offset)
            .and_then(|()| file.sync_data())
            .map_err(|error| error.to_string());
        offset += bytes.len() as u64;
        bytes.clear();
        for done in waiting.drain(..) {
            let _ = done.send(written.clone());
        }
    }
}

/// A send's record: each body with its id and length.
pub fn sent(first_id: u64, bodies: &[bytes::Bytes]) -> Vec<u8> {
    let mut record = Vec::with_capacity(bodies.iter().map(|body| body.len() + 12).sum());
    for (id, body) in (first_id..).zip(bodies) {
        record.extend_from_slice(&id.to_le_bytes());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(body);
    }
    record
}

/// A delete's record: each receipt handle with its length.
pub fn deleted<'a>(handles: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut record = Vec::new();
    for handle in handles {
        record.extend_from_slice(&(handle.len() as u16).to_le_bytes());
        record.extend_from_slice(handle.as_bytes());
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_are_in_the_file_when_acknowledged_and_wrap_around_the_ring() {
        let dir = std::env::temp_dir().join(format!("append-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let body = [bytes::Bytes::from_static(b"ab")];
        let record_bytes = sent(7, &body).len() as u64;
        // Room for two records: the third goes back to the start.
        let log = AppendLog::create(&path, 2 * record_bytes + 1).expect("create");
        log.append(sent(7, &body)).await.expect("append");
        log.append(sent(8, &body)).await.expect("append");
        let written = std::fs::read(&path).expect("read");
        assert_eq!(
            written.len() as u64,
            2 * record_bytes + 1,
            "zero-filled once"
        );
        assert_eq!(&written[..record_bytes as usize], &sent(7, &body)[..]);

        log.append(sent(9, &body)).await.expect("append");
        let written = std::fs::read(&path).expect("read");
        assert_eq!(&written[..record_bytes as usize], &sent(9, &body)[..]);
        assert_eq!(
            &written[record_bytes as usize..2 * record_bytes as usize],
            &sent(8, &body)[..]
        );
        assert_eq!(deleted(["h1"]), [2, 0, b'h', b'1']);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
