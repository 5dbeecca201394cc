//! `spool-bench`: Spool's load generator. It runs a workload against Spool and the queues users
//! would pick instead (NATS JetStream, RabbitMQ, PostgreSQL), one after the other in the same
//! run, with each peer's figures as ratios to Spool's, and measures the ceilings of the API
//! (the relays). `spool-bench storage ...` runs the durable-send measurements of
//! docs/storage.md. It lives outside the `spool` package so the server's build never compiles
//! the load generator or these clients; it talks to Spool through the `spool-client` crate.
//! Every target must be on 127.0.0.1.
//!
//!   cargo run --release -p spool-bench -- --targets spool -N 100000
//!   cargo run --release -p spool-bench -- --targets spool,nats,rabbitmq,postgres -N 100000
//!
//! # Layout
//!
//! - `load`: the workloads, their figures and reports, and Spool as a [`load::Target`].
//! - `nats`, `rabbitmq`, `postgres`: the peers as targets.
//! - `sqs`: the same server through its SQS JSON API (`--http-listen`), as a target.
//! - `relay`, `append_log`: the transport and durable ceilings (a relay serving Spool's API).
//! - `storage`: `spool-bench storage`, the durable-send figures of docs/storage.md.
//! - `topics`: `spool-bench topics`, the cost of a publish per subscribed queue.

mod append_log;
mod load;
mod nats;
mod postgres;
mod rabbitmq;
mod relay;
mod sqs;
mod storage;
mod topics;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::load::{
    BenchArgs, BenchError, BenchResult, Mode, Report, Workload, check_local, render_text,
    run_spool, run_spool_target, run_target,
};
use crate::storage::StorageCommand;

/// The queues this run compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetName {
    Spool,
    /// A second `spool serve`, on PostgreSQL (`--postgres-url`), at --spool-postgres.
    SpoolPostgres,
    Nats,
    Rabbitmq,
    Postgres,
    /// The same `spool serve` as `spool`, through its SQS JSON API (`--http-listen`) at
    /// --spool-sqs: the cost of the HTTP/JSON edge. Batches of at most 10 (SQS's).
    SpoolSqs,
    /// The transport ceiling: Spool's gRPC API served by a relay that stores nothing.
    Relay,
    /// The durable ceiling: the relay, answering sends and deletes once appended to a file and
    /// synced (group commit). The most a durable server of this API could reach here.
    DurableRelay,
}

/// Runs one workload against Spool and its peers, and prints each report and the ratios.
#[derive(Parser)]
#[command(name = "spool-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// The targets, in the order they run; ratios are Spool's figure over the peer's.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "spool,nats,rabbitmq,postgres"
    )]
    targets: Vec<TargetName>,
    /// A running `spool serve`.
    #[arg(long, env = "SPOOL_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    spool: String,
    /// A running `spool serve --postgres-url ...`, for the spool-postgres target.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    spool_postgres: String,
    /// The HTTP port (`--http-listen`) of the `spool` target's server, for spool-sqs.
    #[arg(long, default_value = "http://127.0.0.1:9324")]
    spool_sqs: String,
    /// NATS with JetStream enabled.
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats: String,
    /// RabbitMQ (AMQP 0-9-1).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq: String,
    /// PostgreSQL, as a tokio-postgres connection string.
    #[arg(long, default_value = "host=127.0.0.1 user=postgres dbname=test")]
    postgres: String,
    /// Serve the relay (the transport ceiling) on this address instead of benchmarking; the
    /// `relay` target starts it in a child process with this flag.
    #[arg(long, hide = true, value_name = "ADDR")]
    serve_relay: Option<String>,
    /// With --serve-relay: the durable relay's log file (it must not exist).
    #[arg(long, hide = true, value_name = "FILE", requires = "serve_relay")]
    relay_log: Option<std::path::PathBuf>,
    /// Where the durable relay writes its log: a directory on the disk Spool's data is on.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    relay_log_dir: std::path::PathBuf,
    #[command(flatten)]
    bench: BenchArgs,
}

/// Measurements other than the workloads.
#[derive(Subcommand)]
enum Tool {
    /// The durable-send measurements of docs/storage.md, against a running `spool serve`.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Publishes to topics with 1, 4 and 16 subscribed queues: the cost per copy.
    Topics(topics::TopicsArgs),
}

#[tokio::main]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("spool-bench: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.tool {
        Some(Tool::Storage(command)) => return storage::run(command).await,
        Some(Tool::Topics(args)) => return topics::run(args).await,
        None => {}
    }
    if let Some(listen) = &cli.serve_relay {
        return relay::serve(listen, cli.relay_log.as_deref()).await;
    }
    let workload = Workload::try_from(&cli.bench)?;
    check_local(&cli.spool)?;
    check_local(&cli.nats)?;
    check_local(&cli.rabbitmq)?;
    let postgres_host = cli
        .postgres
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("host="))
        .unwrap_or("");
    if postgres_host != "127.0.0.1" && postgres_host != "localhost" {
        bail!("the PostgreSQL connection string must say host=127.0.0.1");
    }
    let runs = cli.bench.runs;
    let mut reports = Vec::new();
    for target in &cli.targets {
        let result = match target {
            TargetName::Spool => run_spool(&cli.spool, &workload, runs).await,
            TargetName::SpoolPostgres => {
                let target = load::SpoolTarget::on_postgres(&cli.spool_postgres, workload.consume)
                    .with_deduplication_window(workload.deduplication_window_seconds);
                run_spool_target(target, &workload, runs).await
            }
            _ if matches!(workload.mode, Mode::Idle | Mode::Echo) => {
                eprintln!(
                    "spool-bench: {target:?} skipped: {:?} is Spool-only",
                    workload.mode
                );
                continue;
            }
            TargetName::SpoolSqs => {
                check_local(&cli.spool_sqs)?;
                run_target(
                    Arc::new(sqs::SqsTarget::new(&cli.spool_sqs)),
                    &workload,
                    runs,
                )
                .await
            }
            TargetName::Nats => {
                run_target(Arc::new(nats::NatsTarget::new(&cli.nats)), &workload, runs).await
            }
            TargetName::Rabbitmq => {
                let target = Arc::new(rabbitmq::RabbitTarget::new(&cli.rabbitmq));
                run_target(target, &workload, runs).await
            }
            TargetName::Relay => run_relay(&workload, runs, None).await,
            TargetName::DurableRelay => run_relay(&workload, runs, Some(&cli.relay_log_dir)).await,
            TargetName::Postgres => {
                let target = Arc::new(postgres::PostgresTarget::new(&cli.postgres));
                run_target(target, &workload, runs).await
            }
        };
        let report = result.with_context(|| format!("{target:?}"))?;
        if !cli.bench.json {
            print!("{}", render_text(&report));
        }
        reports.push(report);
    }
    let ratios = ratios(&reports);
    if cli.bench.json {
        let json = serde_json::json!({ "reports": reports, "ratios_spool_over_peer": ratios });
        println!("{json}");
    } else if !ratios.is_empty() {
        println!("Spool ÷ peer (medians; >1 means Spool's figure is higher):");
        for (peer, figures) in &ratios {
            let line: Vec<String> = figures
                .iter()
                .map(|(name, ratio)| format!("{name} {ratio:.2}"))
                .collect();
            println!("  {peer}: {}", line.join(", "));
        }
    }
    Ok(())
}

/// Runs the workload against the relay (see [`relay`]) in a child process: the transport
/// ceiling, or with `log_parent` the durable ceiling.
async fn run_relay(
    workload: &Workload,
    runs: usize,
    log_parent: Option<&std::path::Path>,
) -> BenchResult<Report> {
    let relay = relay::RelayProcess::start(log_parent)
        .map_err(|error| BenchError::new("relay", format!("{error:#}")))?;
    let mut report = run_spool(relay.endpoint(), workload, runs).await?;
    if log_parent.is_some() {
        report.target = "durable-relay".into();
        report.durability = "the durable ceiling: Spool's gRPC API relaying bodies in memory; \
                             each send and delete appended to a file and fdatasynced (group \
                             commit) before it is answered"
            .into();
    } else {
        report.target = "grpc-relay".into();
        report.durability = "none: the transport ceiling, Spool's gRPC API relaying bodies in \
                             memory (no storage, no fsync)"
            .into();
    }
    Ok(report)
}

/// For each peer: Spool's median over the peer's, for each figure both have.
fn ratios(reports: &[Report]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let Some(spool) = reports.iter().find(|report| report.target == "spool") else {
        return BTreeMap::new();
    };
    reports
        .iter()
        .filter(|report| report.target != "spool")
        .map(|peer| {
            let figures = spool
                .figures
                .iter()
                .filter(|(name, _)| name.contains("per_s") || name.contains("_ms_"))
                .filter_map(|(name, ours)| {
                    let theirs = peer.figures.get(name)?.median;
                    (theirs > 0.0)
                        .then(|| (name.clone(), (ours.median / theirs * 100.0).round() / 100.0))
                })
                .collect();
            (peer.target.clone(), figures)
        })
        .collect()
}
