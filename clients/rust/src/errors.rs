//! Spool's error table, defined once: for each case, the google.rpc.ErrorInfo `reason`, the gRPC
//! code and CMQ's error number. The server maps each of its errors to one entry (so the status it
//! sends comes from here), the client decodes statuses with the same entries, and a test of the
//! server checks the README's and the proto's tables against [`ERROR_CASES`].
//!
//! ```
//! use spool_client::errors::{self, ERROR_CASES};
//!
//! assert_eq!(errors::QUEUE_NOT_FOUND.cmq_code, 4440);
//! assert!(ERROR_CASES.iter().any(|case| case.reason == "RECEIPT_HANDLE_STALE"));
//! ```

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// google.rpc.ErrorInfo.domain of every error Spool reports; an ErrorInfo of another domain
/// did not come from Spool.
pub const ERROR_DOMAIN: &str = "spool";

/// The ErrorInfo metadata key that holds CMQ's error number, in decimal.
pub const CMQ_CODE_KEY: &str = "cmq_code";

/// One row of the error table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCase {
    /// google.rpc.ErrorInfo.reason: the case's name, for programs.
    pub reason: &'static str,
    /// The gRPC status code.
    pub grpc_code: Code,
    /// CMQ's error number (ErrorInfo metadata [`CMQ_CODE_KEY`]).
    pub cmq_code: i32,
    /// What happened, for people: the "Case" column of the README's table.
    pub meaning: &'static str,
}

impl ErrorCase {
    /// The entry with this reason, if Spool has one.
    pub fn by_reason(reason: &str) -> Option<&'static ErrorCase> {
        ERROR_CASES.iter().find(|case| case.reason == reason)
    }

    /// The first entry with this gRPC code and CMQ code. (Several cases can share a pair: the
    /// three UNAVAILABLE ones are all 6000.)
    pub fn by_codes(grpc_code: Code, cmq_code: i32) -> Option<&'static ErrorCase> {
        ERROR_CASES
            .iter()
            .find(|case| case.grpc_code == grpc_code && case.cmq_code == cmq_code)
    }

    /// The status Spool answers for this case: its gRPC code, `message`, and a
    /// google.rpc.ErrorInfo with the reason, [`ERROR_DOMAIN`] and the CMQ code.
    pub fn status(&self, message: impl Into<String>) -> Status {
        let metadata = HashMap::from([(CMQ_CODE_KEY.to_string(), self.cmq_code.to_string())]);
        Status::with_error_details(
            self.grpc_code,
            message,
            ErrorDetails::with_error_info(self.reason, ERROR_DOMAIN, metadata),
        )
    }
}

pub const INVALID_ARGUMENT: ErrorCase = ErrorCase {
    reason: "INVALID_ARGUMENT",
    grpc_code: Code::InvalidArgument,
    cmq_code: 4000,
    meaning: "bad parameter, request that is not valid protobuf, receipt handle forged or of another queue",
};
pub const TOO_LARGE: ErrorCase = ErrorCase {
    reason: "TOO_LARGE",
    grpc_code: Code::InvalidArgument,
    cmq_code: 4400,
    meaning: "body or batch too large, request above 16 MiB + 64 KiB",
};
pub const QUEUE_NOT_FOUND: ErrorCase = ErrorCase {
    reason: "QUEUE_NOT_FOUND",
    grpc_code: Code::NotFound,
    cmq_code: 4440,
    meaning: "queue does not exist",
};
pub const QUEUE_EXISTS: ErrorCase = ErrorCase {
    reason: "QUEUE_EXISTS",
    grpc_code: Code::AlreadyExists,
    cmq_code: 4460,
    meaning: "queue exists with other attributes",
};
pub const RECEIPT_HANDLE_STALE: ErrorCase = ErrorCase {
    reason: "RECEIPT_HANDLE_STALE",
    grpc_code: Code::FailedPrecondition,
    cmq_code: 4430,
    meaning: "receipt handle superseded or expired",
};
pub const REWIND_DISABLED: ErrorCase = ErrorCase {
    reason: "REWIND_DISABLED",
    grpc_code: Code::FailedPrecondition,
    cmq_code: 6050,
    meaning: "rewind not enabled on the queue",
};
/// A queue that some queue's dead-letter policy names cannot be deleted; the message names them.
pub const DEAD_LETTER_TARGET: ErrorCase = ErrorCase {
    reason: "DEAD_LETTER_TARGET",
    grpc_code: Code::FailedPrecondition,
    cmq_code: 4000,
    meaning: "queue is another queue's dead-letter queue (delete: change their policies first)",
};
pub const BACKLOG_FULL: ErrorCase = ErrorCase {
    reason: "BACKLOG_FULL",
    grpc_code: Code::ResourceExhausted,
    cmq_code: 4410,
    meaning: "backlog full (`max_backlog` or `max_bytes`)",
};
pub const TOO_MANY_QUEUES: ErrorCase = ErrorCase {
    reason: "TOO_MANY_QUEUES",
    grpc_code: Code::ResourceExhausted,
    cmq_code: 4450,
    meaning: "too many queues (`--max-queues`)",
};
/// A server-wide limit of docs/security.md ("Limits") on open receives: `--max-waiting-receives`
/// receives and consumer streams are open, the response budget stayed full, or the stream's
/// client read nothing for the stall timeout. CMQ's "too many requests" number; retry later.
pub const SERVER_BUSY: ErrorCase = ErrorCase {
    reason: "SERVER_BUSY",
    grpc_code: Code::ResourceExhausted,
    cmq_code: 4420,
    meaning: "the server's receive limits are reached (open receives, response buffer, stalled client); retry later",
};
/// Topics share CMQ's "resource does not exist" (4440) with queues; the reason tells them apart.
pub const TOPIC_NOT_FOUND: ErrorCase = ErrorCase {
    reason: "TOPIC_NOT_FOUND",
    grpc_code: Code::NotFound,
    cmq_code: 4440,
    meaning: "topic or subscription does not exist",
};
pub const TOPIC_EXISTS: ErrorCase = ErrorCase {
    reason: "TOPIC_EXISTS",
    grpc_code: Code::AlreadyExists,
    cmq_code: 4460,
    meaning: "topic or subscription exists with other attributes",
};
pub const TOO_MANY_TOPICS: ErrorCase = ErrorCase {
    reason: "TOO_MANY_TOPICS",
    grpc_code: Code::ResourceExhausted,
    cmq_code: 4450,
    meaning: "too many topics, or subscriptions on a topic",
};
/// CMQ's "authentication failed" (4100): the caller is not known, so no grant is even looked at.
pub const UNAUTHENTICATED: ErrorCase = ErrorCase {
    reason: "UNAUTHENTICATED",
    grpc_code: Code::Unauthenticated,
    cmq_code: 4100,
    meaning: "no credentials, or unknown ones (bearer token, client certificate)",
};
/// CMQ's "no permission" (4101). The message names the action and the queue, and says the same
/// whether or not the queue exists.
pub const PERMISSION_DENIED: ErrorCase = ErrorCase {
    reason: "PERMISSION_DENIED",
    grpc_code: Code::PermissionDenied,
    cmq_code: 4101,
    meaning: "the caller's grants do not allow this action on this queue",
};
pub const STORAGE_UNAVAILABLE: ErrorCase = ErrorCase {
    reason: "STORAGE_UNAVAILABLE",
    grpc_code: Code::Unavailable,
    cmq_code: 6000,
    meaning: "storage failing (safe to retry)",
};
pub const STARTING: ErrorCase = ErrorCase {
    reason: "STARTING",
    grpc_code: Code::Unavailable,
    cmq_code: 6000,
    meaning: "starting: recovering its queues (safe to retry)",
};
pub const SHUTTING_DOWN: ErrorCase = ErrorCase {
    reason: "SHUTTING_DOWN",
    grpc_code: Code::Unavailable,
    cmq_code: 6000,
    meaning: "shutting down (safe to retry)",
};

/// Every case, in the README's order.
pub const ERROR_CASES: [ErrorCase; 18] = [
    INVALID_ARGUMENT,
    TOO_LARGE,
    QUEUE_NOT_FOUND,
    QUEUE_EXISTS,
    RECEIPT_HANDLE_STALE,
    REWIND_DISABLED,
    DEAD_LETTER_TARGET,
    BACKLOG_FULL,
    TOO_MANY_QUEUES,
    SERVER_BUSY,
    TOPIC_NOT_FOUND,
    TOPIC_EXISTS,
    TOO_MANY_TOPICS,
    UNAUTHENTICATED,
    PERMISSION_DENIED,
    STORAGE_UNAVAILABLE,
    STARTING,
    SHUTTING_DOWN,
];

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
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn reasons_are_unique_and_every_pair_finds_its_first_case() {
        let reasons: HashSet<_> = ERROR_CASES.iter().map(|case| case.reason).collect();
        assert_eq!(reasons.len(), ERROR_CASES.len());
        for case in &ERROR_CASES {
            assert_eq!(ErrorCase::by_reason(case.reason), Some(case));
            let first = ErrorCase::by_codes(case.grpc_code, case.cmq_code).expect("found");
            assert_eq!(
                (first.grpc_code, first.cmq_code),
                (case.grpc_code, case.cmq_code)
            );
        }
        assert_eq!(ErrorCase::by_reason("NOPE"), None);
        assert_eq!(ErrorCase::by_codes(Code::NotFound, 4000), None);
    }
}
