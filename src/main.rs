//! The `spool` binary: parses flags, sets up logging, binds, and calls `spool::server::run`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spool::cli::ClientCommand;
use spool::config::{LogFormat, Settings};
use spool::server::{self, ServerConfig};

/// Spool: a durable message-queue service with the queue model of Tencent Cloud CMQ, over gRPC.
#[derive(Parser)]
// The version and the commit it was built from (build.rs), so a binary or an image says which
// source it is.
#[command(name = "spool", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SPOOL_GIT_COMMIT"), ")"))]
struct Cli {
    // Not global: `spool serve` has no endpoint, so its help must not offer one. It stays
    // here, before the command, for scripts that wrote `spool --endpoint URL send ...`.
    /// The server that client commands (queue, send, receive, delete, rewind) and bench talk
    /// to; each of them also takes --endpoint after its name [env: SPOOL_ENDPOINT]
    /// [default: http://127.0.0.1:50051].
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server. Settings come from --config (TOML), then SPOOL_* environment
    /// variables, then flags: a flag wins.
    // Boxed: the settings are much larger than the client commands' flags.
    Serve(Box<Settings>),
    /// Moves a stopped server's data directory (embedded database) into PostgreSQL: every
    /// queue, message (in whatever state), the receipt key and the id counters. The target
    /// schema must be new or empty; the counts are verified before the import commits.
    Migrate(spool::migrate::MigrateArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let before_command = cli.endpoint.as_deref();
    match cli.command {
        Command::Serve(args) => {
            if before_command.is_some() {
                Cli::command()
                    .error(
                        ErrorKind::ArgumentConflict,
                        "--endpoint is for client commands; `spool serve` listens on --listen",
                    )
                    .exit();
            }
            match serve(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report(&error);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => {
            if before_command.is_some() {
                Cli::command()
                    .error(
                        ErrorKind::ArgumentConflict,
                        "--endpoint is for client commands; `spool migrate` talks to no server",
                    )
                    .exit();
            }
            match migrate(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report(&error);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(command) => {
            let endpoint = spool::cli::resolve_endpoint(command.endpoint(), before_command);
            std::process::exit(spool::cli::run(&endpoint, command))
        }
    }
}

/// Prints a startup or server failure as its chain of causes on one line, `error: what: caused
/// by why: caused by ...`. Not anyhow's `Debug` (what returning the error from `main` prints):
/// with RUST_BACKTRACE=1, common in Rust shells, that adds a 20–30-frame backtrace to errors
/// such as a port in use, which are the operator's to fix and say all there is to say.
fn report(error: &anyhow::Error) {
    let mut line = format!("error: {error}");
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        // Some errors repeat their source in their own text ("gRPC transport failed: {0}").
        if !line.ends_with(&cause) {
            line.push_str(&format!(": caused by {cause}"));
        }
    }
    eprintln!("{line}");
}

fn serve(args: Settings) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    init_logging(&settings)?;
    log_settings(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = settings.listen();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?,
            ),
            None => None,
        };
        let http_listener = match settings.http_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve the HTTP APIs on {addr}"))?,
            ),
            None => None,
        };
        announce_listening(&listener, metrics_listener.as_ref(), http_listener.as_ref());
        let (ready, recovered) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if recovered.await.is_ok() {
                announce(&serde_json::json!({"event": "ready"}));
            }
        });
        let config = ServerConfig {
            metrics_listener,
            http_listener,
            ready: Some(ready),
            ..ServerConfig::from_settings(settings)
        };
        server::run(listener, shutdown_signal(), config)
            .await
            .context("spool server failed")
    })
}

/// Runs `spool migrate` and prints its summary as one JSON line on stdout.
fn migrate(args: spool::migrate::MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime
        .block_on(spool::migrate::run(args))
        .context("migration failed")?;
    announce(&serde_json::to_value(&summary).context("cannot render the summary")?);
    Ok(())
}

/// The machine-readable lines on stdout (the logs go to stderr), for supervisors and test
/// harnesses: `{"event":"listening","grpc":ADDR,"metrics":ADDR|null,"http":ADDR|null}` once bound (ports
/// chosen by the OS included), then `{"event":"ready"}` once the queues are recovered.
fn announce_listening(
    listener: &tokio::net::TcpListener,
    metrics: Option<&tokio::net::TcpListener>,
    http: Option<&tokio::net::TcpListener>,
) {
    let address = |listener: &tokio::net::TcpListener| {
        listener.local_addr().ok().map(|addr| addr.to_string())
    };
    announce(&serde_json::json!({
        "event": "listening",
        "grpc": address(listener),
        "metrics": metrics.and_then(address),
        "http": http.and_then(address),
    }));
}

fn announce(line: &serde_json::Value) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    // Nobody may be reading (stdout closed): the server runs on regardless.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let log = settings.log();
    let filter =
        EnvFilter::try_new(&log).with_context(|| format!("log filter {log:?} is not valid"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format() {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Logs the effective settings, secrets redacted: one `key = value` line each in the human
/// format, one JSON object in the JSON format. tracing's JSON formatter writes a field as a
/// string or a number, never as an object, so the object is the `settings` field's text.
fn log_settings(settings: &Settings) {
    let rendered = match settings.log_format() {
        LogFormat::Human => settings.to_redacted_lines().map(|lines| {
            for line in lines {
                tracing::info!("effective configuration: {line}");
            }
        }),
        LogFormat::Json => settings.to_redacted_json().map(|object| {
            tracing::info!(settings = %object, "effective configuration");
        }),
    };
    if let Err(error) = rendered {
        // Only a value JSON cannot hold (a data_dir that is not UTF-8) gets here.
        tracing::warn!(%error, data_dir = %settings.data_dir().display(), "cannot render the effective configuration");
    }
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
