//! The `spool` binary: parses flags, sets up logging, binds, and calls `spool::server::run`.

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spool::config::{LogFormat, ServeArgs, Settings};
use spool::server::{self, ServerConfig};

/// Spool: a durable message-queue service with the queue model of Tencent Cloud CMQ, over gRPC.
#[derive(Parser)]
#[command(name = "spool", version)]
struct Cli {
    /// The server that client commands (queue, send, receive, delete, rewind) talk to.
    #[arg(long, global = true, env = "SPOOL_ENDPOINT", default_value = spool::cli::DEFAULT_ENDPOINT)]
    endpoint: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server. Settings come from --config (TOML), then SPOOL_* environment
    /// variables, then flags: a flag wins.
    Serve(ServeArgs),
    #[command(flatten)]
    Client(spool::cli::ClientCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Client(command) => std::process::exit(spool::cli::run(&cli.endpoint, command)),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    init_logging(&settings)?;
    tracing::info!(settings = ?settings, "effective configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?,
            ),
            None => None,
        };
        let config = ServerConfig {
            metrics_listener,
            ..ServerConfig::from_settings(&settings)
        };
        server::run(listener, shutdown_signal(), config)
            .await
            .context("spool server failed")
    })
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.log)
        .with_context(|| format!("log filter {:?} is not valid", settings.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format {
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
