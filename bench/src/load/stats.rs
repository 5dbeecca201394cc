//! What a bench run measures: latency histograms (HDR), figures summed over runs (median, min,
//! max), the resident memory of the server process (read from /proc), and the progress line.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency a histogram holds, in microseconds; longer ones are clamped to it.
const HISTOGRAM_MAX_MICROS: u64 = 120_000_000;
/// Significant digits kept by the histograms: 0.1 % resolution at every scale.
const HISTOGRAM_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (1 ≤ low, 2·low ≤ high, digits ≤ 5).
        let histogram =
            Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, HISTOGRAM_DIGITS).expect("bounds");
        Self(histogram)
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, HISTOGRAM_MAX_MICROS);
        // In bounds by the clamp above.
        let _ = self.0.record(micros);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0..=1), in milliseconds; `None` when nothing was recorded.
    pub fn millis(&self, quantile: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.0.value_at_quantile(quantile) as f64 / 1_000.0)
    }
}

/// The figures of one run, by name (e.g. `send_ack_ms_p99`).
pub type Figures = BTreeMap<String, f64>;

/// Adds the p50/p99/p99.9 (or a subset) of `latencies` to `figures` as `{name}_ms_p50`, ...
pub fn add_latencies(figures: &mut Figures, name: &str, latencies: &Latencies, quantiles: &[f64]) {
    for &quantile in quantiles {
        if let Some(millis) = latencies.millis(quantile) {
            let label = match (quantile * 1_000.0).round() as u32 {
                500 => "p50".to_string(),
                990 => "p99".to_string(),
                999 => "p99.9".to_string(),
                _ => format!("p{}", quantile * 100.0),
            };
            figures.insert(format!("{name}_ms_{label}"), round(millis, 3));
        }
    }
}

/// A figure over several runs.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Each figure's median, min and max over the runs that have it.
pub fn summarize(runs: &[Figures]) -> BTreeMap<String, Spread> {
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (name, value) in run {
            values.entry(name.clone()).or_default().push(*value);
        }
    }
    values
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(f64::total_cmp);
            let middle = values.len() / 2;
            let median = if values.len() % 2 == 1 {
                values[middle]
            } else {
                (values[middle - 1] + values[middle]) / 2.0
            };
            let spread = Spread {
                median: round(median, 3),
                min: values[0],
                max: values[values.len() - 1],
            };
            (name, spread)
        })
        .collect()
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The resident memory of process `pid` in bytes (Linux: VmRSS in /proc/PID/status).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user and system, all threads) process `pid` has used so far, in seconds, from
/// /proc/PID/stat (Linux). With `children`, also that of its children, live or exited: a server
/// that works in child processes (PostgreSQL's backends) is counted whole.
pub fn cpu_seconds(pid: u32, children: bool) -> Option<f64> {
    let (own, mut total) = process_ticks(pid)?;
    if !children {
        return Some(ticks_to_seconds(own));
    }
    for child in process_ids()? {
        if child != pid && parent_of(child) == Some(pid) {
            total += process_ticks(child).map_or(0, |(_, with_exited)| with_exited);
        }
    }
    Some(ticks_to_seconds(total))
}

fn ticks_to_seconds(ticks: u64) -> f64 {
    // Linux reports CPU times in USER_HZ ticks, which its ABI fixes at 100 per second.
    ticks as f64 / 100.0
}

/// The fields of /proc/PID/stat after the command name (which is in parentheses and may hold
/// spaces): field 4 of the file is the first of these.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is a letter; the numbers follow.
    Some(
        after_name
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.first().map(|&ppid| ppid as u32)
}

/// (utime + stime, the same plus the exited children it waited for), in ticks.
fn process_ticks(pid: u32) -> Option<(u64, u64)> {
    let fields = stat_fields(pid)?;
    // Fields 14-17 of the file: utime, stime, cutime, cstime; this list starts at field 4.
    let time = |field: usize| fields.get(field - 4).copied();
    let own = time(14)? + time(15)?;
    Some((own, own + time(16)? + time(17)?))
}

/// A process's CPU time over part of a run, per message: what a figure costs the server (or
/// the load generator), which stays comparable when the machine's speed does not (a shared
/// VM's throughput varies by ±10% from run to run; its CPU time per message much less).
pub struct CpuMeter {
    pid: u32,
    children: bool,
    started: f64,
}

impl CpuMeter {
    /// The server's process and its children. `None` when it cannot be found or read.
    pub fn server(pid: Option<u32>) -> Option<Self> {
        Self::start(pid?, true)
    }

    /// This process, the load generator, without its children (the relay is one).
    pub fn client() -> Option<Self> {
        Self::start(std::process::id(), false)
    }

    fn start(pid: u32, children: bool) -> Option<Self> {
        Some(Self {
            pid,
            children,
            started: cpu_seconds(pid, children)?,
        })
    }

    /// Microseconds of CPU per message since the meter started.
    pub fn micros_per_message(&self, messages: u64) -> Option<f64> {
        let used = cpu_seconds(self.pid, self.children)? - self.started;
        (messages > 0).then(|| round(used * 1e6 / messages as f64, 1))
    }
}

/// The ids of the processes running now, from the numeric entries of /proc.
fn process_ids() -> Option<impl Iterator<Item = u32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok()),
    )
}

/// The process listening on 127.0.0.1:`port` (or on any address with that port), found through
/// /proc/net/tcp{,6} and the processes' open sockets. `None` when it cannot be read (another
/// user's process, not Linux).
pub fn listening_pid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for pid in process_ids()? {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes
                    .iter()
                    .any(|inode| target.as_os_str() == inode.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Counts the messages done so far, for the progress line.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
}

impl Progress {
    pub fn add(&self, messages: u64) {
        self.done.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Draws a progress bar on stderr (when it is a terminal) once the phase has run for
    /// [`PROGRESS_AFTER`], until the returned guard is dropped.
    pub fn show(&self, label: String, total: u64, deadline: Instant) -> ProgressGuard {
        if !std::io::stderr().is_terminal() {
            return ProgressGuard(None);
        }
        let progress = self.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            tokio::time::sleep(PROGRESS_AFTER).await;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let done = progress.done();
                let by_count = done as f64 / total.max(1) as f64;
                let by_time = started.elapsed().as_secs_f64()
                    / deadline
                        .saturating_duration_since(started)
                        .as_secs_f64()
                        .max(1e-3);
                let fraction = by_count.max(by_time).min(1.0);
                let filled = (fraction * 30.0) as usize;
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprint!(
                    "\r{label} [{}{}] {:>3.0}% {done}/{total} msgs, {rate:.0} msg/s, {:.0} s ",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    fraction * 100.0,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        });
        ProgressGuard(Some(task))
    }
}

/// How long a phase runs before it gets a progress bar: short runs print nothing.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(3);

/// Stops the progress bar and clears its line.
pub struct ProgressGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_time_of_a_process_grows_as_it_works_and_counts_children_on_request() {
        let me = std::process::id();
        let before = cpu_seconds(me, false).expect("own /proc/PID/stat");
        // Busy for at least 50 ms of CPU (ticks are 10 ms).
        let busy = std::time::Instant::now();
        let mut spin = 0u64;
        while busy.elapsed() < std::time::Duration::from_millis(80) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = cpu_seconds(me, false).expect("own /proc/PID/stat");
        assert!(after - before >= 0.03, "{before} -> {after}");
        let with_children = cpu_seconds(me, true).expect("with children");
        assert!(with_children >= after, "{with_children} < {after}");
        assert_eq!(cpu_seconds(u32::MAX, false), None, "no such process");
    }

    #[test]
    fn summary_is_median_min_max() {
        let runs: Vec<Figures> = [3.0, 1.0, 2.0]
            .iter()
            .map(|v| Figures::from([("x".to_string(), *v)]))
            .collect();
        let summary = summarize(&runs);
        assert_eq!(
            summary["x"],
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
    }

    #[test]
    fn latencies_in_millis() {
        let mut latencies = Latencies::new();
        for micros in 1..=1000 {
            latencies.record(Duration::from_micros(micros));
        }
        let p50 = latencies.millis(0.5).unwrap_or_default();
        assert!((0.49..=0.51).contains(&p50), "{p50}");
        assert_eq!(Latencies::new().millis(0.5), None);
    }
}
