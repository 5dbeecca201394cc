//! The client commands of the `spool` binary (`spool queue …`, `send`, `receive`, `delete`,
//! `rewind`): their flags, and running them with the client crate ([`spool_client`]).
//!
//! Output is JSON on stdout, one object per line (a queue, a message, an answer). Errors go to
//! stderr as `spool: CODE: message (cmq_code N)`, and the exit code is [`EXIT_FAILURE`]; clap's
//! own usage errors exit with 2.

mod output;
pub mod time;

use std::io::{Read as _, Write};
use std::time::SystemTime;

use clap::{Args, Subcommand};
use serde::Serialize;

use self::output::{DeletedJson, MessageJson, QueueJson, RewoundJson, SentJson};
use spool_client::{Client, ClientError, ClientOptions, QueueAttributes, ReceiveOptions};

pub use spool_client::DEFAULT_ENDPOINT;

/// The exit code of a command that failed (a call, or reading input, or writing output).
pub const EXIT_FAILURE: i32 = 1;

/// The client commands; `spool`'s own `Command` flattens them in.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Creates, shows, changes, deletes and lists queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Sends a message and prints its id.
    Send(SendArgs),
    /// Receives messages (a long poll) and prints one JSON object per message.
    Receive(ReceiveArgs),
    /// Deletes a received message by its receipt handle.
    Delete(DeleteArgs),
    /// Makes the deleted messages enqueued since a time receivable again.
    Rewind(RewindArgs),
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
    #[arg(long, value_name = "S")]
    visibility_timeout: Option<u32>,
    /// Seconds a receive waits for a message when it does not say (0..=30).
    #[arg(long, value_name = "S")]
    polling_wait: Option<u32>,
    /// Largest body in bytes (1024..=1048576).
    #[arg(long, value_name = "B")]
    max_message_size: Option<u32>,
    /// Seconds a message is kept after it was sent (60..=1296000).
    #[arg(long, value_name = "S")]
    retention: Option<u32>,
    /// Seconds back a rewind may go (0 = off, up to the retention).
    #[arg(long, value_name = "S")]
    rewind: Option<u32>,
    /// Most messages the queue holds (1..=1000000000).
    #[arg(long, value_name = "N")]
    max_backlog: Option<u64>,
}

impl From<&AttributeArgs> for QueueAttributes {
    fn from(args: &AttributeArgs) -> Self {
        Self {
            visibility_timeout_seconds: args.visibility_timeout,
            polling_wait_seconds: args.polling_wait,
            max_message_size: args.max_message_size,
            message_retention_seconds: args.retention,
            rewind_seconds: args.rewind,
            max_backlog: args.max_backlog,
        }
    }
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The queue.
    name: String,
    /// The message body; read from stdin (all of it, as bytes) when absent.
    body: Option<String>,
    /// Seconds before the message becomes visible.
    #[arg(long, value_name = "S")]
    delay: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The queue.
    name: String,
    /// Most messages to receive (1..=16).
    #[arg(long, value_name = "N", default_value_t = 1)]
    max: u32,
    /// Seconds to wait when no message is visible (0..=30); the queue's polling wait if absent.
    #[arg(long, value_name = "S")]
    wait: Option<u32>,
    /// Seconds the messages stay invisible; the queue's visibility timeout if absent.
    #[arg(long, value_name = "S")]
    visibility_timeout: Option<u32>,
    /// Delete each message once it is printed.
    #[arg(long)]
    delete: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The queue.
    name: String,
    /// The receipt handle of the message's newest receive.
    handle: String,
}

#[derive(Args, Debug)]
pub struct RewindArgs {
    /// The queue.
    name: String,
    /// Messages enqueued at or after this time come back: Unix seconds (1488718862) or
    /// RFC 3339 (2017-03-05T13:01:02Z, 2017-03-05T21:01:02+08:00).
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    to: SystemTime,
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
            }
            EXIT_FAILURE
        }
    }
}

async fn execute(
    endpoint: &str,
    command: ClientCommand,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    // Lazy: the first call connects, with the retries of the client's default policy.
    let client = Client::connect_lazy(endpoint, ClientOptions::default())?;
    match command {
        ClientCommand::Queue(command) => queue(&client, command, stdout).await,
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
            let message_id = match args.delay {
                Some(delay) => client.send_delayed_message(&args.name, body, delay).await?,
                None => client.send_message(&args.name, body).await?,
            };
            print(
                stdout,
                &SentJson {
                    message_id: &message_id,
                },
            )
        }
        ClientCommand::Receive(args) => receive(&client, args, stdout).await,
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
    }
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

/// One JSON object and a newline, flushed at once (a consumer reading a pipe sees each message
/// as it arrives).
fn print(stdout: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut *stdout, value).map_err(|error| CliError::Stdout(error.into()))?;
    stdout.write_all(b"\n").map_err(CliError::Stdout)?;
    stdout.flush().map_err(CliError::Stdout)
}
