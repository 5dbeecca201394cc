//! The one mapping from queue errors to gRPC statuses, with google.rpc.ErrorInfo details.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::QueueError;

/// google.rpc.ErrorInfo.domain of every Spool error.
pub const ERROR_DOMAIN: &str = "spool";

pub fn code_of(error: &QueueError) -> Code {
    match error {
        QueueError::InvalidArgument(_) | QueueError::TooLarge(_) => Code::InvalidArgument,
        QueueError::QueueNotFound(_) => Code::NotFound,
        QueueError::QueueExists(_) => Code::AlreadyExists,
        QueueError::StaleReceipt(_) | QueueError::RewindDisabled(_) => Code::FailedPrecondition,
        QueueError::BacklogFull { .. } | QueueError::TooManyQueues { .. } => {
            Code::ResourceExhausted
        }
        QueueError::Storage(_) | QueueError::ShuttingDown | QueueError::Starting => {
            Code::Unavailable
        }
    }
}

impl From<QueueError> for Status {
    fn from(error: QueueError) -> Self {
        let code = code_of(&error);
        // Client faults are routine; server-side failures need attention.
        match code {
            Code::Unavailable | Code::Internal => tracing::error!(%error, ?code, "request failed"),
            _ => tracing::info!(%error, ?code, "request refused"),
        }
        let metadata = HashMap::from([("cmq_code".to_string(), error.cmq_code().to_string())]);
        Status::with_error_details(
            code,
            error.to_string(),
            ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, metadata),
        )
    }
}
