//! The `spool` binary: parses flags, sets up logging, binds, and calls `spool::server::run`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use spool::limits::DEFAULT_MAX_QUEUES;
use spool::server::{self, ServerConfig};

/// Spool: a durable message-queue service with the queue model of Tencent Cloud CMQ, over gRPC.
#[derive(Parser)]
#[command(name = "spool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to serve the gRPC API on (use 0.0.0.0:50051 to accept other hosts).
    #[arg(long, env = "SPOOL_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Directory of the embedded database; created if missing. Only one server may use it.
    #[arg(long, env = "SPOOL_DATA_DIR", default_value = "./spool-data")]
    data_dir: PathBuf,

    /// Most queues the server holds; creating more fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SPOOL_MAX_QUEUES", default_value_t = DEFAULT_MAX_QUEUES)]
    max_queues: usize,

    /// Largest size of the database file, in bytes (default: as large as the disk allows).
    /// Beyond it, sends fail with UNAVAILABLE as on a full disk; receives and deletes go on.
    #[arg(long, env = "SPOOL_MAX_DATABASE_BYTES")]
    max_database_bytes: Option<u64>,

    /// Seconds that shutdown (SIGTERM, SIGINT) waits for open calls before closing them.
    #[arg(long, env = "SPOOL_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    shutdown_grace_seconds: u64,

    /// Log format.
    #[arg(long, env = "SPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. "info", "spool=debug,info").
    #[arg(long, env = "SPOOL_LOG", default_value = "info")]
    log: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let config = ServerConfig {
            data_dir: args.data_dir,
            max_queues: args.max_queues,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            max_database_bytes: args.max_database_bytes,
            ..ServerConfig::new(PathBuf::new())
        };
        server::run(listener, shutdown_signal(), config)
            .await
            .context("spool server failed")
    })
}

fn init_logging(args: &ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid log filter", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
