//! The client's error: one variant per case of Spool's error table, each keeping the gRPC code,
//! the CMQ code and the server's message.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::grpc::status::ERROR_DOMAIN;

/// A failed call, as the client saw it.
///
/// Every variant but [`ClientError::InvalidEndpoint`] holds the [`RpcError`] that the server (or
/// the transport) answered with: its gRPC code, CMQ code, reason and message. The variants name
/// the cases of Spool's error table, so callers match on what happened instead of on numbers:
///
/// ```
/// use spool::client::ClientError;
///
/// fn describe(error: &ClientError) -> &'static str {
///     match error {
///         ClientError::QueueNotFound(_) => "no such queue",
///         ClientError::StaleReceipt(_) => "too late: the message will be delivered again",
///         ClientError::Unavailable(_) => "try again later",
///         _ => "something else",
///     }
/// }
/// ```
///
/// [`ClientError::code`] and [`ClientError::cmq_code`] give the numbers when they are needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint given to [`Client::connect`](super::Client::connect) is not usable.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
    /// A parameter is out of range or malformed (INVALID_ARGUMENT, CMQ 4000).
    #[error("{0}")]
    InvalidArgument(RpcError),
    /// A body or a batch is larger than allowed (INVALID_ARGUMENT, CMQ 4400).
    #[error("{0}")]
    TooLarge(RpcError),
    /// The queue does not exist (NOT_FOUND, CMQ 4440).
    #[error("{0}")]
    QueueNotFound(RpcError),
    /// The queue exists with other attributes (ALREADY_EXISTS, CMQ 4460).
    #[error("{0}")]
    QueueExists(RpcError),
    /// The receipt handle was superseded by a later receive, or its visibility timeout has
    /// passed (FAILED_PRECONDITION, CMQ 4430).
    #[error("{0}")]
    StaleReceipt(RpcError),
    /// The queue has no rewind window (FAILED_PRECONDITION, CMQ 6050).
    #[error("{0}")]
    RewindDisabled(RpcError),
    /// The queue holds `max_backlog` messages (RESOURCE_EXHAUSTED, CMQ 4410).
    #[error("{0}")]
    BacklogFull(RpcError),
    /// The server holds as many queues as it may (RESOURCE_EXHAUSTED, CMQ 4450).
    #[error("{0}")]
    TooManyQueues(RpcError),
    /// The server could not be reached, is starting or shutting down, or its storage is
    /// failing (UNAVAILABLE; CMQ 6000 when the server said so). Returned after the retries that
    /// the call allows (see [`retry`](super::retry)).
    #[error("{0}")]
    Unavailable(RpcError),
    /// Any other status: a deadline, a cancellation, an answer from something that is not
    /// Spool (a proxy), or a server newer than this client.
    #[error("{0}")]
    Other(RpcError),
}

/// A non-OK gRPC status, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The gRPC status code.
    pub code: Code,
    /// CMQ's error number, from the `cmq_code` metadata of the status's google.rpc.ErrorInfo;
    /// `None` when the status has none (the transport failed, or it did not come from Spool).
    pub cmq_code: Option<i32>,
    /// google.rpc.ErrorInfo.reason (`QUEUE_NOT_FOUND`, ...), when the status has one.
    pub reason: Option<String>,
    /// The status message: what went wrong, for people.
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)?;
        if let Some(cmq_code) = self.cmq_code {
            write!(f, " (cmq_code {cmq_code})")?;
        }
        Ok(())
    }
}

impl RpcError {
    /// Decodes a status, with the ErrorInfo detail that Spool puts on every error.
    pub fn from_status(status: &Status) -> Self {
        let details = status.get_error_details();
        let info = details
            .error_info()
            .filter(|info| info.domain == ERROR_DOMAIN);
        Self {
            code: status.code(),
            cmq_code: info
                .and_then(|info| info.metadata.get("cmq_code"))
                .and_then(|code| code.parse().ok()),
            reason: info.map(|info| info.reason.clone()),
            message: status.message().to_string(),
        }
    }
}

impl ClientError {
    /// The gRPC code, unless the call was never made.
    pub fn code(&self) -> Option<Code> {
        self.rpc().map(|rpc| rpc.code)
    }

    /// CMQ's error number, when the server gave one.
    pub fn cmq_code(&self) -> Option<i32> {
        self.rpc().and_then(|rpc| rpc.cmq_code)
    }

    /// The decoded status, unless the call was never made.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            Self::InvalidEndpoint { .. } => None,
            Self::InvalidArgument(rpc)
            | Self::TooLarge(rpc)
            | Self::QueueNotFound(rpc)
            | Self::QueueExists(rpc)
            | Self::StaleReceipt(rpc)
            | Self::RewindDisabled(rpc)
            | Self::BacklogFull(rpc)
            | Self::TooManyQueues(rpc)
            | Self::Unavailable(rpc)
            | Self::Other(rpc) => Some(rpc),
        }
    }
}

impl From<RpcError> for ClientError {
    /// Names the case by gRPC code and CMQ code together; a pair that is not in Spool's table
    /// is [`ClientError::Other`], except that every UNAVAILABLE is [`ClientError::Unavailable`].
    fn from(rpc: RpcError) -> Self {
        match (rpc.code, rpc.cmq_code) {
            (Code::InvalidArgument, Some(4000)) => Self::InvalidArgument(rpc),
            (Code::InvalidArgument, Some(4400)) => Self::TooLarge(rpc),
            (Code::NotFound, Some(4440)) => Self::QueueNotFound(rpc),
            (Code::AlreadyExists, Some(4460)) => Self::QueueExists(rpc),
            (Code::FailedPrecondition, Some(4430)) => Self::StaleReceipt(rpc),
            (Code::FailedPrecondition, Some(6050)) => Self::RewindDisabled(rpc),
            (Code::ResourceExhausted, Some(4410)) => Self::BacklogFull(rpc),
            (Code::ResourceExhausted, Some(4450)) => Self::TooManyQueues(rpc),
            (Code::Unavailable, _) => Self::Unavailable(rpc),
            _ => Self::Other(rpc),
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        RpcError::from_status(&status).into()
    }
}

impl From<&Status> for ClientError {
    fn from(status: &Status) -> Self {
        RpcError::from_status(status).into()
    }
}

/// The canonical name of a gRPC code, as grpc-status documentation and other clients spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QueueError;

    fn through_the_server(error: QueueError) -> ClientError {
        ClientError::from(Status::from(error))
    }

    #[test]
    fn every_queue_error_has_its_own_variant_with_both_codes() {
        let cases = [
            (QueueError::InvalidArgument("bad".into()), "InvalidArgument"),
            (QueueError::TooLarge("big".into()), "TooLarge"),
            (QueueError::QueueNotFound("q".into()), "QueueNotFound"),
            (QueueError::QueueExists("q".into()), "QueueExists"),
            (QueueError::StaleReceipt("old".into()), "StaleReceipt"),
            (QueueError::RewindDisabled("q".into()), "RewindDisabled"),
            (
                QueueError::BacklogFull {
                    name: "q".into(),
                    backlog: 1,
                    max: 1,
                },
                "BacklogFull",
            ),
            (QueueError::TooManyQueues { max: 1 }, "TooManyQueues"),
            (QueueError::Storage("disk".into()), "Unavailable"),
            (QueueError::ShuttingDown, "Unavailable"),
        ];
        for (error, variant) in cases {
            let expected_code = crate::grpc::status::code_of(&error);
            let client = through_the_server(error.clone());
            assert!(format!("{client:?}").starts_with(variant), "{client:?}");
            assert_eq!(client.code(), Some(expected_code));
            assert_eq!(client.cmq_code(), Some(error.cmq_code()));
            let rpc = client.rpc().expect("rpc");
            assert_eq!(rpc.reason.as_deref(), Some(error.reason()));
            assert_eq!(rpc.message, error.to_string());
        }
    }

    #[test]
    fn displays_code_message_and_cmq_code() {
        let error = through_the_server(QueueError::QueueNotFound("nope".into()));
        assert_eq!(
            error.to_string(),
            "NOT_FOUND: queue \"nope\" does not exist (cmq_code 4440)"
        );
    }

    #[test]
    fn a_status_without_details_is_other_or_unavailable() {
        let error = ClientError::from(Status::not_found("no route"));
        assert!(matches!(error, ClientError::Other(_)), "{error:?}");
        assert_eq!(error.cmq_code(), None);
        assert_eq!(error.to_string(), "NOT_FOUND: no route");

        let error = ClientError::from(Status::unavailable("connection refused"));
        assert!(matches!(error, ClientError::Unavailable(_)), "{error:?}");
        assert_eq!(error.code(), Some(Code::Unavailable));
    }

    #[test]
    fn ignores_error_info_of_another_domain() {
        let status = Status::with_error_details(
            Code::NotFound,
            "elsewhere",
            tonic_types::ErrorDetails::with_error_info(
                "QUEUE_NOT_FOUND",
                "example.com",
                std::collections::HashMap::from([("cmq_code".to_string(), "4440".to_string())]),
            ),
        );
        let error = ClientError::from(status);
        assert!(matches!(error, ClientError::Other(_)), "{error:?}");
        assert_eq!(error.cmq_code(), None);
    }
}
