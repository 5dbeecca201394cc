//! The one mapping from queue errors to gRPC statuses, with google.rpc.ErrorInfo details: each
//! error's entry in the error table (`spool_client::errors`) says the code, reason and CMQ code.

use tonic::{Code, Status};

use crate::error::QueueError;

/// The gRPC code of an error.
pub fn code_of(error: &QueueError) -> Code {
    error.case().grpc_code
}

impl From<QueueError> for Status {
    /// No side effects: logging and metrics of failed calls belong to the layers that see every
    /// call, not to this conversion (which also runs for errors that are never sent).
    fn from(error: QueueError) -> Self {
        error.case().status(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use spool_client::ClientError;

    use super::*;

    /// What the client makes of a status the server sends for `error`.
    fn through_the_client(error: QueueError) -> ClientError {
        ClientError::from(Status::from(error))
    }

    #[test]
    fn every_queue_error_reaches_the_client_with_its_codes_reason_and_message() {
        let errors = [
            QueueError::InvalidArgument("bad".into()),
            QueueError::TooLarge("big".into()),
            QueueError::QueueNotFound("q".into()),
            QueueError::QueueExists("q".into()),
            QueueError::StaleReceipt("old".into()),
            QueueError::RewindDisabled("q".into()),
            QueueError::BacklogFull {
                name: "q".into(),
                backlog: 1,
                max: 1,
            },
            QueueError::BytesFull {
                name: "q".into(),
                held: 1,
                adding: 1,
                max: 1,
            },
            QueueError::TooManyQueues { max: 1 },
            QueueError::ReceiveLimit("busy".into()),
            QueueError::TopicNotFound("t".into()),
            QueueError::SubscriptionNotFound {
                topic: "t".into(),
                name: "s".into(),
            },
            QueueError::TopicExists("t".into()),
            QueueError::SubscriptionExists {
                topic: "t".into(),
                name: "s".into(),
            },
            QueueError::TooManyTopics { max: 1 },
            QueueError::TooManySubscriptions {
                topic: "t".into(),
                max: 1,
            },
            QueueError::Unauthenticated("who".into()),
            QueueError::PermissionDenied("no".into()),
            QueueError::Storage("disk".into()),
            QueueError::ShuttingDown,
            QueueError::Starting,
        ];
        for error in errors {
            let client = through_the_client(error.clone());
            assert_eq!(client.code(), Some(code_of(&error)));
            assert_eq!(client.cmq_code(), Some(error.cmq_code()));
            let rpc = client.rpc().expect("rpc");
            assert_eq!(rpc.reason.as_deref(), Some(error.reason()));
            assert_eq!(rpc.message, error.to_string());
        }
    }

    #[test]
    fn displays_code_message_and_cmq_code() {
        let error = through_the_client(QueueError::QueueNotFound("nope".into()));
        assert_eq!(
            error.to_string(),
            "NOT_FOUND: queue \"nope\" does not exist (cmq_code 4440)"
        );
    }
}
