//! The client commands of the `spool` binary (`spool queue …`, `send`, `receive`, `delete`,
//! `rewind`): their flags, and running them with the client crate ([`spool_client`]).
//!
//! Output is JSON on stdout, one object per line (a queue, a message, an answer). Errors go to
//! stderr as `spool: CODE: message (cmq_code N)`, and the exit code is [`EXIT_FAILURE`]; clap's
//! own usage errors exit with 2.

mod output;
pub mod time;
mod topics;

use std::io::{Read as _, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::builder::RangedI64ValueParser;
use clap::{Args, Subcommand};
use serde::Serialize;
use tonic::Code;

use self::output::{
    DeletedJson, MessageJson, PeekedJson, PurgedJson, QueueJson, RedrivenJson, RewoundJson,
    SentJson, SourcesJson, VisibilityJson,
};
use self::time::format_timestamp;
use crate::limits::{
    CHANGE_VISIBILITY_SECONDS, DEAD_LETTER_TIME_TO_LIVE_SECONDS, DEDUPLICATION_WINDOW_SECONDS,
    DEFAULT_MAX_OUTSTANDING_MESSAGES, MAX_BACKLOG, MAX_BATCH, MAX_BYTES, MAX_MESSAGE_SIZE,
    MAX_OUTSTANDING_MESSAGES, MAX_RECEIVE_COUNT, MAX_REDRIVE_MESSAGES, MESSAGE_RETENTION_SECONDS,
    POLLING_WAIT_SECONDS, VISIBILITY_TIMEOUT_SECONDS,
};
use spool_client::{
    Client, ClientError, ClientOptions, ConsumeOptions, DeadLetterPolicy, QueueAttributes,
    ReceiveOptions, SendOptions,
};

pub use spool_client::DEFAULT_ENDPOINT;

/// The exit code of a command that failed (a call, or reading input, or writing output).
pub const EXIT_FAILURE: i32 = 1;

/// The environment variable that names the server when no `--endpoint` is given.
pub const ENDPOINT_ENV: &str = "SPOOL_ENDPOINT";

/// The help of every `--endpoint` flag.
pub const ENDPOINT_HELP: &str = "The Spool server to talk to: http://host:port, https://host:port (TLS), or host:port \
    [env: SPOOL_ENDPOINT] [default: http://127.0.0.1:50051]";

/// The environment variables of the connection flags, read when the flag is not given.
pub const TOKEN_ENV: &str = "SPOOL_TOKEN";
pub const CA_CERT_ENV: &str = "SPOOL_CA_CERT";
pub const CLIENT_CERT_ENV: &str = "SPOOL_CLIENT_CERT";
pub const CLIENT_KEY_ENV: &str = "SPOOL_CLIENT_KEY";

/// How a client command reaches the server: `--endpoint` and the credentials; `spool serve`
/// has none of them. Global, so in `spool queue` they may follow the subcommand (`spool queue
/// get q --endpoint URL`) like every other client command's.
///
/// The environment variables are read by [`resolve_endpoint`] and [`client_options`], not by
/// clap's `env`: clap counts a value from the environment as a flag given, and then prints
/// `--endpoint <ENDPOINT>` in the usage line of every error, as if the flag were required; and
/// its `--help` would show the token's value.
#[derive(Args, Debug, Clone, Default)]
pub struct EndpointArg {
    #[arg(long, value_name = "URL", help = ENDPOINT_HELP, global = true)]
    pub endpoint: Option<String>,
    /// Bearer token of a principal in the server's auth file, sent as `authorization: Bearer
    /// <token>` [env: SPOOL_TOKEN]. Prefer the variable: a flag shows in the process list.
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for an https:// endpoint, instead of the system's roots
    /// [env: SPOOL_CA_CERT].
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS; with --client-key)
    /// [env: SPOOL_CLIENT_CERT].
    #[arg(long, value_name = "FILE", global = true)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert [env: SPOOL_CLIENT_KEY].
    #[arg(long, value_name = "FILE", global = true)]
    pub client_key: Option<PathBuf>,
}

/// The client options of a command: its credentials and TLS files (flags, else their
/// environment variables), read and checked. The error names the file or flag at fault.
pub fn client_options(args: &EndpointArg) -> Result<ClientOptions, String> {
    let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let path = |flag: &Option<PathBuf>, env: &str| {
        flag.clone().or_else(|| from_env(env).map(PathBuf::from))
    };
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|error| format!("cannot read the {what} {}: {error}", path.display()))
    };
    let mut options = ClientOptions::default();
    let token = args.token.clone().or_else(|| {
        std::env::var(TOKEN_ENV)
            .ok()
            .filter(|value| !value.is_empty())
    });
    if let Some(token) = token {
        options = options.bearer_token(token);
    }
    if let Some(ca) = path(&args.ca_cert, CA_CERT_ENV) {
        options = options.tls_ca_certificate(read(&ca, "CA certificate (--ca-cert)")?);
    }
    match (
        path(&args.client_cert, CLIENT_CERT_ENV),
        path(&args.client_key, CLIENT_KEY_ENV),
    ) {
        (Some(cert), Some(key)) => {
            options = options.tls_client_identity(
                read(&cert, "client certificate (--client-cert)")?,
                read(&key, "client key (--client-key)")?,
            );
        }
        (None, None) => {}
        _ => {
            return Err("--client-cert and --client-key go together: give both, or neither".into());
        }
    }
    Ok(options)
}

/// The server a client command talks to: its `--endpoint`, else the one given before the
/// command (`spool --endpoint URL send ...`), else SPOOL_ENDPOINT, else [`DEFAULT_ENDPOINT`].
pub fn resolve_endpoint(after_command: Option<&str>, before_command: Option<&str>) -> String {
    after_command
        .or(before_command)
        .map(str::to_string)
        .or_else(|| {
            std::env::var(ENDPOINT_ENV)
                .ok()
                .filter(|value| !value.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// A flag's parser that refuses values outside `range` with clap's message, which names the
/// flag and the range ("invalid value '0' for '--max <N>': 0 is not in 1..=16"). Parsing as a
/// signed integer lets a negative value reach the range check instead of clap's misleading
/// tip to write `-- -1`; flags that use it also set `allow_negative_numbers`.
fn u32_in(range: RangeInclusive<u32>) -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(i64::from(*range.start())..=i64::from(*range.end()))
}

/// [`u32_in`] for u64 flags (parsed as i64 too, for the same message on negative values).
fn u64_in(range: RangeInclusive<u64>) -> RangedI64ValueParser<u64> {
    let bound = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    RangedI64ValueParser::new().range(bound(*range.start())..=bound(*range.end()))
}

/// The client commands; `spool`'s own `Command` flattens them in.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Creates, shows, changes, deletes and lists queues.
    Queue(QueueArgs),
    /// Sends a message and prints its id.
    Send(SendArgs),
    /// Receives messages (a long poll) and prints one JSON object per message.
    Receive(ReceiveArgs),
    /// Deletes a received message by its receipt handle.
    Delete(DeleteArgs),
    /// Opens a consumer stream and prints one JSON object per message as it arrives, until the
    /// server ends the stream (or the command is interrupted).
    Consume(ConsumeArgs),
    /// Makes the deleted messages enqueued since a time receivable again.
    Rewind(RewindArgs),
    /// Prints up to --max visible messages (one JSON object each), in the order a receive would
    /// get them, without receiving them.
    Peek(PeekArgs),
    /// Changes when a received message becomes visible again, counted from now: more time to
    /// process it (a heartbeat), or 0 to make it visible at once.
    ChangeVisibility(ChangeVisibilityArgs),
    /// Makes a received message visible again at once, for the next receive (change-visibility
    /// with a timeout of 0).
    Nack(DeleteArgs),
    /// Moves visible messages out of a dead-letter queue, oldest first: back to the queue each
    /// was dead-lettered from, or to --to; prints how many moved.
    Redrive(RedriveArgs),
    /// Prints the queues whose dead-letter policy names a queue (one JSON object).
    DeadLetterSources(NameArg),
    /// Creates, shows, changes, deletes and lists topics (publish once, a copy in every
    /// subscribed queue).
    Topic(topics::TopicArgs),
    /// Subscribes a queue to a topic, with filter tags or binding keys.
    Subscribe(topics::SubscribeArgs),
    /// Removes a subscription from a topic.
    Unsubscribe(topics::SubscriptionArgs),
    /// Prints a topic's subscriptions (one JSON object per line), in name order.
    Subscriptions(topics::TopicNameArg),
    /// Publishes a message to a topic and prints its id and the copies it made.
    Publish(topics::PublishArgs),
}

#[derive(Args, Debug)]
pub struct RedriveArgs {
    /// The dead-letter queue.
    name: String,
    /// Move every message here instead of back to its source queue.
    #[arg(long, value_name = "QUEUE")]
    to: Option<String>,
    /// Most messages to move (1..=100000); all the visible ones (up to 100000) if absent.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = u32_in(1..=MAX_REDRIVE_MESSAGES))]
    max: Option<u32>,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// The queue.
    name: String,
    #[command(flatten)]
    endpoint: EndpointArg,
}

/// `spool queue`: its subcommand, and the connection flags for all of them.
#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub endpoint: EndpointArg,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Creates a queue (unset attributes take their defaults) and prints it. Creating it again
    /// with the same attributes succeeds; with others it fails with ALREADY_EXISTS.
    Create {
        /// 1 to 64 characters: a letter, then letters, digits, '-' or '_'.
        name: String,
        #[command(flatten)]
        attributes: AttributeArgs,
    },
    /// Prints a queue's attributes and message counters.
    Get { name: String },
    /// Changes the attributes given (the others keep their value) and prints the queue.
    Update {
        name: String,
        #[command(flatten)]
        attributes: AttributeArgs,
    },
    /// Deletes a queue and all its messages.
    Delete { name: String },
    /// Removes every visible, delayed and in-flight message of a queue (with a rewind window
    /// they stay rewindable) and prints how many.
    Purge { name: String },
    /// Prints every queue (one JSON object per line), in name order.
    List {
        /// Only queues whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

/// Queue attributes; each is optional.
#[derive(Args, Debug)]
pub struct AttributeArgs {
    /// Seconds a received message stays invisible before it is delivered again (1..=43200).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(VISIBILITY_TIMEOUT_SECONDS))]
    visibility_timeout: Option<u32>,
    /// Seconds a receive waits for a message when it does not say (0..=30).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(POLLING_WAIT_SECONDS))]
    polling_wait: Option<u32>,
    /// Largest body in bytes (1024..=1048576).
    #[arg(long, value_name = "B", allow_negative_numbers = true,
          value_parser = u32_in(MAX_MESSAGE_SIZE))]
    max_message_size: Option<u32>,
    /// Seconds a message is kept after it was sent (60..=1296000).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(MESSAGE_RETENTION_SECONDS))]
    retention: Option<u32>,
    /// Seconds back a rewind may go (0 = off, up to the retention: 0..=1296000).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(0..=*MESSAGE_RETENTION_SECONDS.end()))]
    rewind: Option<u32>,
    /// Most messages the queue holds (1..=1000000000).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = u64_in(MAX_BACKLOG))]
    max_backlog: Option<u64>,
    /// Most bytes the queue holds: bodies and attributes of its messages, rewindable ones too
    /// (0 = no quota, the default; up to 1125899906842624, 1 PiB).
    #[arg(long, value_name = "B", allow_negative_numbers = true,
          value_parser = u64_in(MAX_BYTES))]
    max_bytes: Option<u64>,
    /// Seconds a send's deduplication id is remembered (0 = deduplication off, up to 86400).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(DEDUPLICATION_WINDOW_SECONDS))]
    dedup_window: Option<u32>,
    /// Dead-letter queue: messages received --max-receive-count times (or older than
    /// --dead-letter-ttl) move there instead of being delivered again. An existing queue, not
    /// this one.
    #[arg(
        long,
        value_name = "QUEUE",
        requires = "max_receive_count",
        conflicts_with = "no_dead_letter_queue"
    )]
    dead_letter_queue: Option<String>,
    /// Receives before a message moves to the dead-letter queue (1..=1000).
    #[arg(long, value_name = "N", allow_negative_numbers = true, requires = "dead_letter_queue",
          value_parser = u32_in(MAX_RECEIVE_COUNT))]
    max_receive_count: Option<u32>,
    /// Seconds after its send at which an undeleted message moves to the dead-letter queue
    /// too (0 = off, else 300..=43200).
    #[arg(long, value_name = "S", allow_negative_numbers = true, requires = "dead_letter_queue",
          value_parser = u32_in(0..=*DEAD_LETTER_TIME_TO_LIVE_SECONDS.end()))]
    dead_letter_ttl: Option<u32>,
    /// Removes the queue's dead-letter policy (queue update).
    #[arg(long)]
    no_dead_letter_queue: bool,
}

impl From<&AttributeArgs> for QueueAttributes {
    fn from(args: &AttributeArgs) -> Self {
        let dead_letter_policy = match &args.dead_letter_queue {
            Some(queue) => Some(DeadLetterPolicy {
                dead_letter_queue: queue.clone(),
                max_receive_count: args.max_receive_count.unwrap_or_default(),
                max_time_to_live_seconds: args.dead_letter_ttl.unwrap_or_default(),
            }),
            // A policy that names no queue removes it.
            None if args.no_dead_letter_queue => Some(DeadLetterPolicy::default()),
            None => None,
        };
        Self {
            visibility_timeout_seconds: args.visibility_timeout,
            polling_wait_seconds: args.polling_wait,
            max_message_size: args.max_message_size,
            message_retention_seconds: args.retention,
            rewind_seconds: args.rewind,
            max_backlog: args.max_backlog,
            deduplication_window_seconds: args.dedup_window,
            dead_letter_policy,
            max_bytes: args.max_bytes,
        }
    }
}

/// A `--attr key=value` flag.
fn attribute_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The queue.
    name: String,
    /// The message body; read from stdin (all of it, as bytes) when absent.
    body: Option<String>,
    /// Seconds before the message becomes visible (0..=1296000, and less than the queue's
    /// retention).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(0..=*MESSAGE_RETENTION_SECONDS.end()))]
    delay: Option<u32>,
    /// A message attribute, key=value (repeat for more; at most 16).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = attribute_pair)]
    attributes: Vec<(String, String)>,
    /// The send's deduplication id (1..=128 printable ASCII characters): a send with an id the
    /// queue accepted within its deduplication window enqueues nothing and prints the first
    /// send's message id. Without it, the client makes one (so its own retries are safe).
    #[arg(long, value_name = "ID")]
    dedup_id: Option<String>,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The queue.
    name: String,
    /// Most messages to receive (1..=16).
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true,
          value_parser = u32_in(1..=MAX_BATCH as u32))]
    max: u32,
    /// Seconds to wait when no message is visible (0..=30); the queue's polling wait if absent.
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(POLLING_WAIT_SECONDS))]
    wait: Option<u32>,
    /// Seconds the messages stay invisible (1..=43200); the queue's visibility timeout if
    /// absent.
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(VISIBILITY_TIMEOUT_SECONDS))]
    visibility_timeout: Option<u32>,
    /// Delete each message once it is printed.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The queue.
    name: String,
    /// Most messages printed and not yet deleted (1..=1000). Without --delete, once this many
    /// are printed the next come when their visibility timeout brings them back.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_OUTSTANDING_MESSAGES as u32,
          allow_negative_numbers = true,
          value_parser = u32_in(1..=*MAX_OUTSTANDING_MESSAGES.end() as u32))]
    max_outstanding: u32,
    /// Seconds the messages stay invisible (1..=43200); the queue's visibility timeout if
    /// absent.
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(VISIBILITY_TIMEOUT_SECONDS))]
    visibility_timeout: Option<u32>,
    /// Delete (acknowledge) each message once it is printed.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The queue.
    name: String,
    /// The receipt handle of the message's newest receive.
    handle: String,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct RewindArgs {
    /// The queue.
    name: String,
    /// Messages enqueued at or after this time come back: Unix seconds (1488718862) or
    /// RFC 3339 (2017-03-05T13:01:02Z, 2017-03-05T21:01:02+08:00).
    #[arg(long, value_name = "TIME", value_parser = time::parse_time, allow_negative_numbers = true)]
    to: SystemTime,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct PeekArgs {
    /// The queue.
    name: String,
    /// Most messages to show (1..=16).
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true,
          value_parser = u32_in(1..=MAX_BATCH as u32))]
    max: u32,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct ChangeVisibilityArgs {
    /// The queue.
    name: String,
    /// The receipt handle of the message's newest receive.
    handle: String,
    /// Seconds from now until the message is visible again (0..=43200; 0 = at once).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = u32_in(CHANGE_VISIBILITY_SECONDS))]
    timeout: u32,
    #[command(flatten)]
    endpoint: EndpointArg,
}

impl ClientCommand {
    /// The `--endpoint` given after the command, if any (see [`resolve_endpoint`]).
    pub fn endpoint(&self) -> Option<&str> {
        self.connection().endpoint.as_deref()
    }

    /// The command's connection flags.
    pub fn connection(&self) -> &EndpointArg {
        match self {
            Self::Queue(args) => &args.endpoint,
            Self::Send(args) => &args.endpoint,
            Self::Receive(args) => &args.endpoint,
            Self::Delete(args) => &args.endpoint,
            Self::Consume(args) => &args.endpoint,
            Self::Rewind(args) => &args.endpoint,
            Self::Peek(args) => &args.endpoint,
            Self::ChangeVisibility(args) => &args.endpoint,
            Self::Nack(args) => &args.endpoint,
            Self::Redrive(args) => &args.endpoint,
            Self::DeadLetterSources(args) => &args.endpoint,
            Self::Topic(args) => &args.endpoint,
            Self::Subscribe(args) => &args.endpoint,
            Self::Unsubscribe(args) => &args.endpoint,
            Self::Subscriptions(args) => &args.endpoint,
            Self::Publish(args) => &args.endpoint,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("cannot read the body from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("cannot write the output: {0}")]
    Stdout(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A credential or TLS file that cannot be used; the text names it.
    #[error("{0}")]
    Options(String),
    /// Failures already reported on stderr, one by one.
    #[error("{0}")]
    Reported(String),
}

/// Runs a client command against `endpoint`; returns the process's exit code.
pub fn run(endpoint: &str, command: ClientCommand) -> i32 {
    let mut stdout = std::io::stdout().lock();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|runtime| runtime.block_on(execute(endpoint, command, &mut stdout)));
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("spool: {error}");
            if let CliError::Client(ClientError::Unavailable(_)) = error {
                eprintln!(
                    "spool: is a server running at {endpoint}? Set the endpoint with \
                     --endpoint or SPOOL_ENDPOINT."
                );
                if !endpoint.starts_with("https://") {
                    eprintln!(
                        "spool: if the server serves TLS, the endpoint is https://host:port."
                    );
                }
            } else if let CliError::Client(ClientError::Other(rpc)) = &error
                && rpc.code == Code::Cancelled
            {
                // The CLI cancels nothing: the server closed the connection, which is how a
                // TLS server answers a plaintext client or a missing client certificate.
                eprintln!(
                    "spool: the server closed the connection. If it serves TLS, the endpoint is \
                     https://host:port; if it requires client certificates, give --client-cert \
                     and --client-key."
                );
            } else if let CliError::Client(ClientError::Unauthenticated(_)) = error {
                eprintln!(
                    "spool: the server requires credentials: a principal's token (--token or \
                     SPOOL_TOKEN), or a client certificate (--client-cert, --client-key)."
                );
            } else if let CliError::Client(client_error) = &error
                && not_spool(client_error)
            {
                eprintln!(
                    "spool: is {endpoint} a Spool gRPC endpoint? It did not answer as one. \
                     Set the endpoint with --endpoint or SPOOL_ENDPOINT."
                );
            }
            EXIT_FAILURE
        }
    }
}

/// Whether a failure looks like the answer of something that is not a Spool server: an HTTP/1
/// server or another protocol (INTERNAL "h2 protocol error"), or another gRPC server
/// (UNIMPLEMENTED, UNKNOWN). Spool's own errors carry its ErrorInfo and never these codes.
fn not_spool(error: &ClientError) -> bool {
    let ClientError::Other(rpc) = error else {
        return false;
    };
    rpc.cmq_code.is_none()
        && matches!(
            rpc.code,
            Code::Internal | Code::Unknown | Code::Unimplemented
        )
}

async fn execute(
    endpoint: &str,
    command: ClientCommand,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    // Lazy: the first call connects, with the retries of the client's default policy.
    let options = client_options(command.connection()).map_err(CliError::Options)?;
    let client = Client::connect_lazy(endpoint, options)?;
    match command {
        ClientCommand::Queue(args) => queue(&client, args.command, stdout).await,
        ClientCommand::Send(args) => {
            let body = match args.body {
                Some(body) => body.into_bytes(),
                None => {
                    let mut body = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut body)
                        .map_err(CliError::Stdin)?;
                    body
                }
            };
            let mut options = SendOptions::default();
            if let Some(delay) = args.delay {
                options = options.delay_seconds(delay);
            }
            for (key, value) in args.attributes {
                options = options.attribute(key, value);
            }
            if let Some(id) = args.dedup_id {
                options = options.deduplication_id(id);
            }
            let message_id = client.send_message_with(&args.name, body, options).await?;
            print(
                stdout,
                &SentJson {
                    message_id: &message_id,
                },
            )
        }
        ClientCommand::Receive(args) => receive(&client, args, stdout).await,
        ClientCommand::Consume(args) => consume(&client, args, stdout).await,
        ClientCommand::Delete(args) => {
            client.delete_message(&args.name, &args.handle).await?;
            print(
                stdout,
                &DeletedJson {
                    queue_name: &args.name,
                    receipt_handle: Some(&args.handle),
                    deleted: true,
                },
            )
        }
        ClientCommand::Rewind(args) => {
            let restored_messages = client.rewind_queue(&args.name, args.to).await?;
            print(
                stdout,
                &RewoundJson {
                    queue_name: &args.name,
                    restored_messages,
                },
            )
        }
        ClientCommand::Peek(args) => {
            for message in client.peek_messages(&args.name, args.max).await? {
                print(stdout, &PeekedJson::from(&message))?;
            }
            Ok(())
        }
        ClientCommand::ChangeVisibility(args) => {
            change_visibility(&client, &args.name, &args.handle, args.timeout, stdout).await
        }
        ClientCommand::Nack(args) => {
            change_visibility(&client, &args.name, &args.handle, 0, stdout).await
        }
        ClientCommand::Redrive(args) => {
            let redriven = client
                .redrive_messages(&args.name, args.to.as_deref(), args.max.unwrap_or(0))
                .await?;
            print(
                stdout,
                &RedrivenJson {
                    queue_name: &args.name,
                    redriven_messages: redriven.redriven_messages,
                    skipped_messages: redriven.skipped_messages,
                },
            )
        }
        ClientCommand::Topic(args) => topics::topic(&client, args.command, stdout).await,
        ClientCommand::Subscribe(args) => topics::subscribe(&client, args, stdout).await,
        ClientCommand::Unsubscribe(args) => topics::unsubscribe(&client, args, stdout).await,
        ClientCommand::Subscriptions(args) => topics::subscriptions(&client, args, stdout).await,
        ClientCommand::Publish(args) => topics::publish(&client, args, stdout).await,
        ClientCommand::DeadLetterSources(args) => {
            let source_queues = client.list_dead_letter_source_queues(&args.name).await?;
            print(
                stdout,
                &SourcesJson {
                    queue_name: &args.name,
                    source_queues,
                },
            )
        }
    }
}

async fn change_visibility(
    client: &Client,
    name: &str,
    handle: &str,
    timeout: u32,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let next_visible = client
        .change_message_visibility(name, handle, timeout)
        .await?;
    print(
        stdout,
        &VisibilityJson {
            queue_name: name,
            receipt_handle: handle,
            next_visible_time: format_timestamp(&next_visible),
        },
    )
}

async fn queue(
    client: &Client,
    command: QueueCommand,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        QueueCommand::Create { name, attributes } => {
            let queue = client.create_queue(&name, (&attributes).into()).await?;
            print(stdout, &QueueJson::from(&queue))
        }
        QueueCommand::Get { name } => {
            let queue = client.get_queue(&name).await?;
            print(stdout, &QueueJson::from(&queue))
        }
        QueueCommand::Update { name, attributes } => {
            let queue = client.update_queue(&name, (&attributes).into()).await?;
            print(stdout, &QueueJson::from(&queue))
        }
        QueueCommand::Delete { name } => {
            client.delete_queue(&name).await?;
            print(
                stdout,
                &DeletedJson {
                    queue_name: &name,
                    receipt_handle: None,
                    deleted: true,
                },
            )
        }
        QueueCommand::Purge { name } => {
            let purged_messages = client.purge_queue(&name).await?;
            print(
                stdout,
                &PurgedJson {
                    queue_name: &name,
                    purged_messages,
                },
            )
        }
        QueueCommand::List { prefix } => {
            for queue in client.list_all_queues(&prefix).await? {
                print(stdout, &QueueJson::from(&queue))?;
            }
            Ok(())
        }
    }
}

/// Prints each message as it arrives; with `--delete`, deletes it once it is printed (never
/// before, so a message that could not be shown is not lost). A failed delete is reported and
/// the others go on; the command then fails.
async fn receive(
    client: &Client,
    args: ReceiveArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let mut options = ReceiveOptions::default().max_messages(args.max);
    if let Some(wait) = args.wait {
        options = options.wait_seconds(wait);
    }
    if let Some(visibility) = args.visibility_timeout {
        options = options.visibility_timeout_seconds(visibility);
    }
    let mut messages = client.receive_messages(&args.name, options).await?;
    let mut failed_deletes = 0;
    while let Some(message) = messages.message().await? {
        print(stdout, &MessageJson::from(&message))?;
        if args.delete
            && let Err(error) = client
                .delete_message(&args.name, &message.receipt_handle)
                .await
        {
            eprintln!(
                "spool: cannot delete message {}: {error}",
                message.message_id
            );
            failed_deletes += 1;
        }
    }
    if failed_deletes > 0 {
        return Err(CliError::Reported(format!(
            "{failed_deletes} received message(s) could not be deleted; they will be delivered again"
        )));
    }
    Ok(())
}

/// Prints each message as it arrives; with `--delete`, acknowledges it once it is printed (the
/// answers are awaited beside the stream). A failed acknowledgement is reported and the others
/// go on; the command then fails.
async fn consume(
    client: &Client,
    args: ConsumeArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    use futures_util::StreamExt as _;
    let mut options = ConsumeOptions::default().max_outstanding_messages(args.max_outstanding);
    if let Some(visibility) = args.visibility_timeout {
        options = options.visibility_timeout_seconds(visibility);
    }
    let mut consumer = client.consume(&args.name, options).await?;
    let mut answers = futures_util::stream::FuturesUnordered::new();
    let mut failed_deletes = 0;
    let mut report = |message_id: String, result: Result<(), ClientError>| {
        if let Err(error) = result {
            eprintln!("spool: cannot delete message {message_id}: {error}");
            failed_deletes += 1;
        }
    };
    loop {
        tokio::select! {
            delivery = consumer.next_delivery() => {
                let Some(delivery) = delivery? else { break };
                print(stdout, &MessageJson::from(delivery.message()))?;
                if args.delete {
                    let message_id = delivery.message().message_id.clone();
                    let answer = delivery.ack();
                    answers.push(async move { (message_id, answer.await) });
                } else {
                    // Neither deleted nor given back: it comes back after its visibility
                    // timeout (a nack would push it to this same consumer again at once).
                    drop(delivery);
                }
            }
            Some((message_id, result)) = answers.next(), if !answers.is_empty() => {
                report(message_id, result);
            }
        }
    }
    while let Some((message_id, result)) = answers.next().await {
        report(message_id, result);
    }
    if failed_deletes > 0 {
        return Err(CliError::Reported(format!(
            "{failed_deletes} consumed message(s) could not be deleted; they will be delivered again"
        )));
    }
    Ok(())
}

/// One JSON object and a newline, flushed at once (a consumer reading a pipe sees each message
/// as it arrives).
fn print(stdout: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut *stdout, value).map_err(|error| CliError::Stdout(error.into()))?;
    stdout.write_all(b"\n").map_err(CliError::Stdout)?;
    stdout.flush().map_err(CliError::Stdout)
}
