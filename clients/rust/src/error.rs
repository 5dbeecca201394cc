//! The client's error: one variant per case of Spool's error table, each keeping the gRPC code,
//! the CMQ code and the server's message.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::errors::{self, CMQ_CODE_KEY, ERROR_DOMAIN, ErrorCase, code_name};

/// A failed call, as the client saw it.
///
/// Every variant but [`ClientError::InvalidEndpoint`] holds the [`RpcError`] that the server (or
/// the transport) answered with: its gRPC code, CMQ code, reason and message. The variants name
/// the cases of Spool's error table, so callers match on what happened instead of on numbers:
///
/// ```
/// use spool_client::ClientError;
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
    /// The [`ClientOptions`](super::ClientOptions) cannot be used: a certificate or key that
    /// is not PEM, a token that cannot travel in metadata, TLS settings for an http:// endpoint.
    #[error("invalid client options: {message}")]
    InvalidOptions { message: String },
    /// A parameter is out of range or malformed ([`errors::INVALID_ARGUMENT`]).
    #[error("{0}")]
    InvalidArgument(RpcError),
    /// A body or a batch is larger than allowed ([`errors::TOO_LARGE`]).
    #[error("{0}")]
    TooLarge(RpcError),
    /// The queue does not exist ([`errors::QUEUE_NOT_FOUND`]).
    #[error("{0}")]
    QueueNotFound(RpcError),
    /// The queue exists with other attributes ([`errors::QUEUE_EXISTS`]).
    #[error("{0}")]
    QueueExists(RpcError),
    /// The receipt handle was superseded by a later receive, or its visibility timeout has
    /// passed ([`errors::RECEIPT_HANDLE_STALE`]).
    #[error("{0}")]
    StaleReceipt(RpcError),
    /// The queue has no rewind window ([`errors::REWIND_DISABLED`]).
    #[error("{0}")]
    RewindDisabled(RpcError),
    /// The queue is another queue's dead-letter queue, so it cannot be deleted
    /// ([`errors::DEAD_LETTER_TARGET`]).
    #[error("{0}")]
    DeadLetterTarget(RpcError),
    /// The queue holds `max_backlog` messages, or `max_bytes` bytes ([`errors::BACKLOG_FULL`]).
    #[error("{0}")]
    BacklogFull(RpcError),
    /// The server holds as many queues as it may ([`errors::TOO_MANY_QUEUES`]).
    #[error("{0}")]
    TooManyQueues(RpcError),
    /// A server-wide limit on open receives: too many receives and consumer streams open, the
    /// response buffer full, or this stream's reader stalled ([`errors::SERVER_BUSY`]). Retry
    /// later.
    #[error("{0}")]
    ServerBusy(RpcError),
    /// The topic, or the topic's subscription, does not exist ([`errors::TOPIC_NOT_FOUND`]).
    #[error("{0}")]
    TopicNotFound(RpcError),
    /// The topic or subscription exists with other attributes ([`errors::TOPIC_EXISTS`]).
    #[error("{0}")]
    TopicExists(RpcError),
    /// The server holds as many topics, or the topic as many subscriptions, as it may
    /// ([`errors::TOO_MANY_TOPICS`]).
    #[error("{0}")]
    TooManyTopics(RpcError),
    /// No credentials, or ones the server does not know: a missing or unknown bearer token or
    /// client certificate ([`errors::UNAUTHENTICATED`]).
    #[error("{0}")]
    Unauthenticated(RpcError),
    /// The caller is known, but its grants do not allow this action on this queue
    /// ([`errors::PERMISSION_DENIED`]).
    #[error("{0}")]
    PermissionDenied(RpcError),
    /// The server could not be reached, is starting or shutting down, or its storage is
    /// failing (UNAVAILABLE: [`errors::STARTING`], [`errors::SHUTTING_DOWN`],
    /// [`errors::STORAGE_UNAVAILABLE`], or no answer at all). Returned after the retries that
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
                .and_then(|info| info.metadata.get(CMQ_CODE_KEY))
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
            Self::InvalidEndpoint { .. } | Self::InvalidOptions { .. } => None,
            Self::InvalidArgument(rpc)
            | Self::TooLarge(rpc)
            | Self::QueueNotFound(rpc)
            | Self::QueueExists(rpc)
            | Self::StaleReceipt(rpc)
            | Self::RewindDisabled(rpc)
            | Self::DeadLetterTarget(rpc)
            | Self::BacklogFull(rpc)
            | Self::TooManyQueues(rpc)
            | Self::ServerBusy(rpc)
            | Self::TopicNotFound(rpc)
            | Self::TopicExists(rpc)
            | Self::TooManyTopics(rpc)
            | Self::Unauthenticated(rpc)
            | Self::PermissionDenied(rpc)
            | Self::Unavailable(rpc)
            | Self::Other(rpc) => Some(rpc),
        }
    }
}

impl From<RpcError> for ClientError {
    /// Names the case by its entry in the error table, found by gRPC code and CMQ code together;
    /// a pair that is not in the table is [`ClientError::Other`], except that every UNAVAILABLE
    /// is [`ClientError::Unavailable`].
    fn from(rpc: RpcError) -> Self {
        if rpc.code == Code::Unavailable {
            return Self::Unavailable(rpc);
        }
        // Topics share CMQ's codes with queues (4440, 4460, 4450): the reason tells them apart,
        // so it is asked first, and must agree with the gRPC code.
        let case = rpc
            .reason
            .as_deref()
            .and_then(ErrorCase::by_reason)
            .filter(|case| case.grpc_code == rpc.code)
            .or_else(|| {
                rpc.cmq_code
                    .and_then(|cmq_code| ErrorCase::by_codes(rpc.code, cmq_code))
            });
        match case {
            Some(&errors::INVALID_ARGUMENT) => Self::InvalidArgument(rpc),
            Some(&errors::TOO_LARGE) => Self::TooLarge(rpc),
            Some(&errors::QUEUE_NOT_FOUND) => Self::QueueNotFound(rpc),
            Some(&errors::QUEUE_EXISTS) => Self::QueueExists(rpc),
            Some(&errors::RECEIPT_HANDLE_STALE) => Self::StaleReceipt(rpc),
            Some(&errors::REWIND_DISABLED) => Self::RewindDisabled(rpc),
            Some(&errors::DEAD_LETTER_TARGET) => Self::DeadLetterTarget(rpc),
            Some(&errors::BACKLOG_FULL) => Self::BacklogFull(rpc),
            Some(&errors::TOO_MANY_QUEUES) => Self::TooManyQueues(rpc),
            Some(&errors::SERVER_BUSY) => Self::ServerBusy(rpc),
            Some(&errors::TOPIC_NOT_FOUND) => Self::TopicNotFound(rpc),
            Some(&errors::TOPIC_EXISTS) => Self::TopicExists(rpc),
            Some(&errors::TOO_MANY_TOPICS) => Self::TooManyTopics(rpc),
            Some(&errors::UNAUTHENTICATED) => Self::Unauthenticated(rpc),
            Some(&errors::PERMISSION_DENIED) => Self::PermissionDenied(rpc),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_of_the_table_has_its_variant_with_both_codes() {
        let variants = [
            (errors::INVALID_ARGUMENT, "InvalidArgument"),
            (errors::TOO_LARGE, "TooLarge"),
            (errors::QUEUE_NOT_FOUND, "QueueNotFound"),
            (errors::QUEUE_EXISTS, "QueueExists"),
            (errors::RECEIPT_HANDLE_STALE, "StaleReceipt"),
            (errors::REWIND_DISABLED, "RewindDisabled"),
            (errors::DEAD_LETTER_TARGET, "DeadLetterTarget"),
            (errors::BACKLOG_FULL, "BacklogFull"),
            (errors::TOO_MANY_QUEUES, "TooManyQueues"),
            (errors::SERVER_BUSY, "ServerBusy"),
            (errors::TOPIC_NOT_FOUND, "TopicNotFound"),
            (errors::TOPIC_EXISTS, "TopicExists"),
            (errors::TOO_MANY_TOPICS, "TooManyTopics"),
            (errors::UNAUTHENTICATED, "Unauthenticated"),
            (errors::PERMISSION_DENIED, "PermissionDenied"),
            (errors::STORAGE_UNAVAILABLE, "Unavailable"),
            (errors::STARTING, "Unavailable"),
            (errors::SHUTTING_DOWN, "Unavailable"),
        ];
        assert_eq!(variants.len(), errors::ERROR_CASES.len());
        for (case, variant) in variants {
            let error = ClientError::from(case.status("what happened"));
            assert!(format!("{error:?}").starts_with(variant), "{error:?}");
            assert_eq!(error.code(), Some(case.grpc_code));
            assert_eq!(error.cmq_code(), Some(case.cmq_code));
            let rpc = error.rpc().expect("rpc");
            assert_eq!(rpc.reason.as_deref(), Some(case.reason));
            assert_eq!(rpc.message, "what happened");
        }
    }

    #[test]
    fn displays_code_message_and_cmq_code() {
        let error =
            ClientError::from(errors::QUEUE_NOT_FOUND.status("queue \"nope\" does not exist"));
        assert_eq!(
            error.to_string(),
            format!(
                "NOT_FOUND: queue \"nope\" does not exist (cmq_code {})",
                errors::QUEUE_NOT_FOUND.cmq_code
            )
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
        let case = errors::QUEUE_NOT_FOUND;
        let status = Status::with_error_details(
            case.grpc_code,
            "elsewhere",
            tonic_types::ErrorDetails::with_error_info(
                case.reason,
                "example.com",
                std::collections::HashMap::from([(
                    CMQ_CODE_KEY.to_string(),
                    case.cmq_code.to_string(),
                )]),
            ),
        );
        let error = ClientError::from(status);
        assert!(matches!(error, ClientError::Other(_)), "{error:?}");
        assert_eq!(error.cmq_code(), None);
    }
}
