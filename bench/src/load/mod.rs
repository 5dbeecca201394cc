//! The load generator: workloads bounded in messages and time, against 127.0.0.1 only. Four
//! workloads ([`Mode`]): steady (produce and consume at once), fill-then-drain (a backlog, then
//! draining it), long-poll idle (parked receives woken by a trickle of sends) and the gRPC echo
//! baseline (the transport alone). It reports messages/s, send-ack and end-to-end latencies from
//! HDR histograms, and the server's resident memory when it can read it.
//!
//! Spool is driven through its client crate ([`SpoolTarget`]); the peers (NATS JetStream,
//! RabbitMQ, PostgreSQL) implement [`Target`] beside this module and run the same workloads
//! through [`run_target`].

pub mod stats;
pub mod target;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use spool_client::limits::{MAX_BATCH, MAX_MESSAGE_SIZE, check_queue_name};

pub use self::stats::{Figures, Spread};
pub use self::target::{BenchError, BenchResult, Consumer, Producer, SpoolTarget, Target};

/// The longest a run may be given, so a mistyped flag cannot run for hours.
pub const MAX_RUN_SECONDS: u64 = 900;
/// The most messages a run may send.
pub const MAX_MESSAGES: u64 = 10_000_000;
/// The most repetitions of a workload in one invocation.
pub const MAX_RUNS: usize = 10;
/// The most parked long polls in the idle workload.
pub const MAX_WAITERS: usize = 50_000;
/// The most producers or consumers.
pub const MAX_WORKERS: usize = 1_024;

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Producers and consumers at once, until every message sent is consumed.
    Steady,
    /// Send a backlog of --messages with no consumer, then drain it; each phase timed.
    FillDrain,
    /// --waiters long polls parked, and a trickle of --messages single sends at --rate/s:
    /// wake-up latency and server memory per waiting stream (Spool only).
    Idle,
    /// The transport alone: --producers callers of the gRPC health check, --messages calls
    /// (Spool only).
    Echo,
}

/// Which API Spool's consumers (and the relays') take messages through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsumeApi {
    /// ReceiveMessages, then DeleteMessage / BatchDeleteMessages: one call of each per batch.
    #[default]
    Receive,
    /// StreamMessages: one stream per consumer, messages pushed, acknowledgements on the stream.
    Stream,
}

/// The workload's flags of `spool-bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "steady")]
    pub mode: Mode,
    /// Concurrent producers (each with its own connection).
    #[arg(long, short = 'P', default_value_t = 4)]
    pub producers: usize,
    /// Concurrent consumers (each with its own connection).
    #[arg(long, short = 'C', default_value_t = 4)]
    pub consumers: usize,
    /// Queues; producer and consumer i use queue i mod Q.
    #[arg(long, short = 'Q', default_value_t = 1)]
    pub queues: usize,
    /// Messages to send in all (idle: the trickle's sends; echo: calls).
    #[arg(long, short = 'N', default_value_t = 100_000)]
    pub messages: u64,
    /// Body size in bytes (at least 16: a body carries its send time).
    #[arg(long, short = 'S', default_value_t = 256)]
    pub size: usize,
    /// Messages per send, receive and delete call (1..=16).
    #[arg(long, short = 'B', default_value_t = 16)]
    pub batch: usize,
    /// Offered load in messages/s over all producers (default: as fast as acks come back;
    /// idle: 100/s).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Long polls parked in the idle workload.
    #[arg(long, short = 'W', default_value_t = 1_000)]
    pub waiters: usize,
    /// How Spool's consumers (and the relays') take messages; the peers keep their own way.
    /// With `stream`, the idle workload parks consumer streams instead of long polls.
    #[arg(long, value_enum, default_value = "receive")]
    pub consume: ConsumeApi,
    /// Stop each run after this many seconds even if not every message was sent or consumed.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Repeat the workload; each figure is reported as median, min and max over the runs.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Prefix of the queues the bench creates (and deletes).
    #[arg(long, default_value = "bench")]
    pub queue_prefix: String,
    /// Spool only: the bench queues' `deduplication_window_seconds` (default: the server's,
    /// 300 s). The client gives every send a deduplication id, which the server stores for
    /// the window; 0 measures sends without that cost (ids neither checked nor stored).
    #[arg(long)]
    pub deduplication_window_seconds: Option<u32>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One workload's parameters, as checked from [`BenchArgs`].
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub mode: Mode,
    pub producers: usize,
    pub consumers: usize,
    pub queues: usize,
    pub messages: u64,
    pub body_bytes: usize,
    pub batch: usize,
    pub rate: Option<f64>,
    pub waiters: usize,
    pub consume: ConsumeApi,
    pub max_seconds: u64,
    #[serde(skip)]
    pub max_duration: Duration,
    pub queue_prefix: String,
    pub deduplication_window_seconds: Option<u32>,
}

impl Workload {
    /// The names of the queues this workload creates.
    pub fn queue_names(&self) -> Vec<String> {
        (0..self.queues)
            .map(|i| format!("{}-{i}", self.queue_prefix))
            .collect()
    }
}

impl TryFrom<&BenchArgs> for Workload {
    type Error = BenchError;

    fn try_from(args: &BenchArgs) -> Result<Self, BenchError> {
        let max_body = *MAX_MESSAGE_SIZE.end() as usize;
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(BenchError(format!("--{what}")))
            }
        };
        check(
            (1..=MAX_WORKERS).contains(&args.producers),
            &format!("producers must be 1..={MAX_WORKERS}"),
        )?;
        check(
            (1..=MAX_WORKERS).contains(&args.consumers),
            &format!("consumers must be 1..={MAX_WORKERS}"),
        )?;
        check(
            (1..=1_000).contains(&args.queues),
            "queues must be 1..=1000",
        )?;
        check(
            (1..=MAX_MESSAGES).contains(&args.messages),
            &format!("messages must be 1..={MAX_MESSAGES}"),
        )?;
        check(
            (workload::MIN_BODY_BYTES..=max_body).contains(&args.size),
            &format!("size must be {}..={max_body}", workload::MIN_BODY_BYTES),
        )?;
        check(
            (1..=MAX_BATCH).contains(&args.batch),
            &format!("batch must be 1..={MAX_BATCH}"),
        )?;
        check(
            args.rate.is_none_or(|rate| rate.is_finite() && rate > 0.0),
            "rate must be positive",
        )?;
        check(
            (1..=MAX_WAITERS).contains(&args.waiters),
            &format!("waiters must be 1..={MAX_WAITERS}"),
        )?;
        check(
            (1..=MAX_RUN_SECONDS).contains(&args.max_seconds),
            &format!("max-seconds must be 1..={MAX_RUN_SECONDS}"),
        )?;
        check(
            (1..=MAX_RUNS).contains(&args.runs),
            &format!("runs must be 1..={MAX_RUNS}"),
        )?;
        check(
            check_queue_name(&format!("{}-0", args.queue_prefix)).is_ok(),
            "queue-prefix must start a valid queue name",
        )?;
        Ok(Self {
            mode: args.mode,
            producers: args.producers,
            consumers: args.consumers,
            queues: args.queues,
            messages: args.messages,
            body_bytes: args.size,
            batch: args.batch,
            rate: args.rate,
            waiters: args.waiters,
            consume: args.consume,
            max_seconds: args.max_seconds,
            max_duration: Duration::from_secs(args.max_seconds),
            queue_prefix: args.queue_prefix.clone(),
            deduplication_window_seconds: args.deduplication_window_seconds,
        })
    }
}

/// What one target did in one workload, over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    /// When the target acknowledges a send (what is on disk, and synced or not).
    pub durability: String,
    pub workload: Workload,
    /// Each figure's median, min and max over the runs.
    pub figures: BTreeMap<String, Spread>,
    /// Each run's figures.
    pub runs: Vec<Figures>,
}

/// Refuses endpoints other than the loopback address: a load generator must not hit a
/// server someone else depends on by mistake.
pub fn check_local(endpoint: &str) -> BenchResult<()> {
    let authority = endpoint.split("://").last().unwrap_or(endpoint);
    let authority = authority.split('/').next().unwrap_or(authority);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host);
    if matches!(host, "127.0.0.1" | "localhost") {
        Ok(())
    } else {
        Err(BenchError(format!(
            "spool-bench targets 127.0.0.1 only, not {endpoint:?}"
        )))
    }
}

/// Runs `workload` on `target` (steady or fill-drain) `runs` times.
pub async fn run_target<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    runs: usize,
) -> BenchResult<Report> {
    let mut figures = Vec::new();
    for _ in 0..runs {
        figures.push(match workload.mode {
            Mode::Steady => workload::steady(target.clone(), workload).await?,
            Mode::FillDrain => workload::fill_drain(target.clone(), workload).await?,
            Mode::Idle | Mode::Echo => {
                return Err(BenchError(format!(
                    "{:?} runs against Spool only",
                    workload.mode
                )));
            }
        });
    }
    Ok(report(&*target, workload, figures))
}

/// Runs `workload` on the Spool server at `endpoint` `runs` times (every mode).
pub async fn run_spool(endpoint: &str, workload: &Workload, runs: usize) -> BenchResult<Report> {
    let target = SpoolTarget::new(endpoint, workload.consume)
        .with_deduplication_window(workload.deduplication_window_seconds);
    run_spool_target(target, workload, runs).await
}

/// [`run_spool`] against a given Spool server (SQLite or PostgreSQL behind it).
pub async fn run_spool_target(
    target: SpoolTarget,
    workload: &Workload,
    runs: usize,
) -> BenchResult<Report> {
    check_local(target.endpoint())?;
    let target = Arc::new(target);
    match workload.mode {
        Mode::Steady | Mode::FillDrain => run_target(target, workload, runs).await,
        Mode::Idle | Mode::Echo => {
            let mut figures = Vec::new();
            for _ in 0..runs {
                figures.push(match workload.mode {
                    Mode::Idle => workload::idle(target.clone(), workload).await?,
                    _ => workload::echo(target.clone(), workload).await?,
                });
            }
            let mut report = report(&*target, workload, figures);
            if workload.mode == Mode::Echo {
                report.target = "grpc-echo".into();
                report.durability = "none: a gRPC health check on Spool's server".into();
            }
            Ok(report)
        }
    }
}

fn report<T: Target>(target: &T, workload: &Workload, runs: Vec<Figures>) -> Report {
    Report {
        target: target.name().to_string(),
        durability: target.durability(),
        workload: workload.clone(),
        figures: stats::summarize(&runs),
        runs,
    }
}

/// The report as text: one line per figure, median [min – max].
pub fn render_text(report: &Report) -> String {
    let w = &report.workload;
    let mut text = format!(
        "{} {}: {} producers, {} consumers, {} queue(s), {} messages of {} B, batch {}{}{}, {} run(s)\n",
        report.target,
        w.mode
            .to_possible_value()
            .map(|value| value.get_name().to_string())
            .unwrap_or_default(),
        w.producers,
        w.consumers,
        w.queues,
        w.messages,
        w.body_bytes,
        w.batch,
        w.rate
            .map(|rate| format!(", offered {rate} msg/s"))
            .unwrap_or_default(),
        match (w.mode, w.consume) {
            (Mode::Idle, ConsumeApi::Receive) => format!(", {} waiters", w.waiters),
            (Mode::Idle, ConsumeApi::Stream) => format!(", {} waiting consumer streams", w.waiters),
            (_, ConsumeApi::Stream) => ", consumers on StreamMessages".into(),
            (_, ConsumeApi::Receive) => String::new(),
        },
        report.runs.len(),
    );
    text.push_str(&format!("  durability: {}\n", report.durability));
    for (name, spread) in &report.figures {
        if report.runs.len() > 1 {
            text.push_str(&format!(
                "  {name:<28} {:>14} [{} – {}]\n",
                spread.median, spread.min, spread.max
            ));
        } else {
            text.push_str(&format!("  {name:<28} {:>14}\n", spread.median));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(check_local("http://127.0.0.1:50051").is_ok());
        assert!(check_local("localhost:50051").is_ok());
        assert!(check_local("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_local("http://10.0.0.1:50051").is_err());
        assert!(check_local("http://example.com").is_err());
    }
}
