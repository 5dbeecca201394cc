//! Who an SQS request comes from. Without an auth file, anyone (as on the gRPC port). With
//! one, requests must be signed (AWS Signature Version 4) by a principal's signing key; this
//! server does not verify SigV4 yet, so it refuses them rather than serve them unchecked.

use hyper::http::request::Parts;

use super::Edge;
use super::sqs::SqsError;
use crate::auth::Caller;

/// The caller of a request, or SQS's refusal.
pub fn authenticate(edge: &Edge, _parts: &Parts, _body: &[u8]) -> Result<Caller, SqsError> {
    match &edge.authenticator {
        None => Ok(Caller::Anyone),
        Some(_) => Err(SqsError::from(tonic::Status::unauthenticated(
            "SQS requests cannot be authenticated by this server yet: run the HTTP port without \
             --auth-file, on loopback (see docs/compat.md)",
        ))),
    }
}
