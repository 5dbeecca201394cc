//! The errors a queue operation can end with. Each has exactly one gRPC code, one reason and one
//! CMQ error number (see `grpc::status` for the mapping to `tonic::Status`).

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
    #[error("the server holds {max} queues, its max_queues setting; delete one first")]
    TooManyQueues { max: usize },
    #[error("rewind is not enabled on queue {0:?}: set rewind_seconds > 0 first")]
    RewindDisabled(String),
    /// Storage could not commit; nothing of the request was acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server is starting: its queues are being recovered from storage")]
    Starting,
}

impl QueueError {
    /// CMQ's error number for this case.
    pub fn cmq_code(&self) -> i32 {
        match self {
            Self::InvalidArgument(_) => 4000,
            Self::TooLarge(_) => 4400,
            Self::QueueNotFound(_) => 4440,
            Self::QueueExists(_) => 4460,
            Self::StaleReceipt(_) => 4430,
            Self::BacklogFull { .. } => 4410,
            Self::TooManyQueues { .. } => 4450,
            Self::RewindDisabled(_) => 6050,
            Self::Storage(_) | Self::ShuttingDown | Self::Starting => 6000,
        }
    }

    /// The machine-readable reason (google.rpc.ErrorInfo.reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::TooLarge(_) => "TOO_LARGE",
            Self::QueueNotFound(_) => "QUEUE_NOT_FOUND",
            Self::QueueExists(_) => "QUEUE_EXISTS",
            Self::StaleReceipt(_) => "RECEIPT_HANDLE_STALE",
            Self::BacklogFull { .. } => "BACKLOG_FULL",
            Self::TooManyQueues { .. } => "TOO_MANY_QUEUES",
            Self::RewindDisabled(_) => "REWIND_DISABLED",
            Self::Storage(_) => "STORAGE_UNAVAILABLE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Starting => "STARTING",
        }
    }
}
