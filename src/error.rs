//! The errors a queue operation can end with. Each is one entry of Spool's error table
//! (`spool_client::errors`: reason, gRPC code, CMQ error number); `grpc::status` turns it into a
//! `tonic::Status`.

use spool_client::errors::{self, ErrorCase};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A parameter is out of range or malformed; the text names the field and the limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// A body or a batch is larger than allowed; the text names the field and the limit.
    #[error("{0}")]
    TooLarge(String),
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("queue {0:?} already exists with other attributes")]
    QueueExists(String),
    /// The receipt handle is not the message's newest, or its visibility timeout has passed.
    #[error("{0}")]
    StaleReceipt(String),
    #[error("queue {name:?} is full: it holds {backlog} messages and its max_backlog is {max}")]
    BacklogFull {
        name: String,
        backlog: u64,
        max: u64,
    },
    /// The queue's byte quota has no room for the messages (`held` counts the bytes of
    /// commits under way into it too).
    #[error(
        "queue {name:?} is full: it holds {held} bytes, the messages add {adding}, and its \
         max_bytes is {max}"
    )]
    BytesFull {
        name: String,
        held: u64,
        adding: u64,
        max: u64,
    },
    #[error("the server holds {max} queues, its max_queues setting; delete one first")]
    TooManyQueues { max: usize },
    /// A server-wide limit on open receives refused or ended one (`--max-waiting-receives`,
    /// the response budget, a stalled client); the text names the limit.
    #[error("{0}")]
    ReceiveLimit(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    #[error("topic {topic:?} has no subscription {name:?}")]
    SubscriptionNotFound { topic: String, name: String },
    #[error("topic {0:?} already exists with other attributes")]
    TopicExists(String),
    #[error("subscription {name:?} of topic {topic:?} already exists with another queue or filter")]
    SubscriptionExists { topic: String, name: String },
    #[error("the server holds {max} topics; delete one first")]
    TooManyTopics { max: usize },
    #[error("topic {topic:?} has {max} subscriptions, the most a topic may have")]
    TooManySubscriptions { topic: String, max: usize },
    /// No or unknown credentials; the text says which, never the token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's grants do not allow the call; the text names the principal, the action and
    /// the queue.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("rewind is not enabled on queue {0:?}: set rewind_seconds > 0 first")]
    RewindDisabled(String),
    #[error(
        "queue {name:?} is the dead-letter queue of {sources:?}: change or remove their \
         dead_letter_policy first"
    )]
    DeadLetterTarget { name: String, sources: Vec<String> },
    /// Storage could not commit; nothing of the request was acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server is starting: its queues are being recovered from storage")]
    Starting,
}

impl QueueError {
    /// This error's entry in the error table: its reason, gRPC code and CMQ code.
    pub fn case(&self) -> &'static ErrorCase {
        match self {
            Self::InvalidArgument(_) => &errors::INVALID_ARGUMENT,
            Self::TooLarge(_) => &errors::TOO_LARGE,
            Self::QueueNotFound(_) => &errors::QUEUE_NOT_FOUND,
            Self::QueueExists(_) => &errors::QUEUE_EXISTS,
            Self::StaleReceipt(_) => &errors::RECEIPT_HANDLE_STALE,
            Self::BacklogFull { .. } | Self::BytesFull { .. } => &errors::BACKLOG_FULL,
            Self::TooManyQueues { .. } => &errors::TOO_MANY_QUEUES,
            Self::ReceiveLimit(_) => &errors::SERVER_BUSY,
            Self::TopicNotFound(_) | Self::SubscriptionNotFound { .. } => &errors::TOPIC_NOT_FOUND,
            Self::TopicExists(_) | Self::SubscriptionExists { .. } => &errors::TOPIC_EXISTS,
            Self::TooManyTopics { .. } | Self::TooManySubscriptions { .. } => {
                &errors::TOO_MANY_TOPICS
            }
            Self::RewindDisabled(_) => &errors::REWIND_DISABLED,
            Self::DeadLetterTarget { .. } => &errors::DEAD_LETTER_TARGET,
            Self::Unauthenticated(_) => &errors::UNAUTHENTICATED,
            Self::PermissionDenied(_) => &errors::PERMISSION_DENIED,
            Self::Storage(_) => &errors::STORAGE_UNAVAILABLE,
            Self::ShuttingDown => &errors::SHUTTING_DOWN,
            Self::Starting => &errors::STARTING,
        }
    }

    /// CMQ's error number for this case.
    pub fn cmq_code(&self) -> i32 {
        self.case().cmq_code
    }

    /// The machine-readable reason (google.rpc.ErrorInfo.reason).
    pub fn reason(&self) -> &'static str {
        self.case().reason
    }
}
