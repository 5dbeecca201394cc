//! Calls for a queue owned by another replica, sent on to it over gRPC: one channel per peer,
//! made on first use and kept; the caller's metadata (its `authorization` included) and its
//! remaining deadline go along, and the principal this replica authenticated, asserted with
//! the cluster's key (`auth::forwarded`).
//!
//! The owner authorizes the call itself, with its own auth file's grants for that principal,
//! so a forward grants nothing the caller does not have. Each hop marks the call
//! ([`HOPS_HEADER`]): a replica that receives a forward for a queue it does not own re-routes it
//! once at most, so calls never circle between replicas whose views of the owners disagree.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::queue_service_client::QueueServiceClient;

/// How many times a call has been forwarded. A client may set it too: that only keeps its call
/// from being forwarded, and every replica checks credentials anyway.
pub const HOPS_HEADER: &str = "spool-forwarded-hops";
/// A call is forwarded at most this many times: once to the owner as the first replica knows
/// it, once more if that one learnt of a move meanwhile.
pub const MAX_HOPS: u32 = 2;
/// How long connecting to a peer may take; a peer that does not answer is down or cut off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on peer channels, so a dead peer's connection is noticed between calls.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers of the incoming call that describe its own transport, not the caller's request:
/// the outgoing call sets its own.
const TRANSPORT_HEADERS: &[&str] = &[
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "content-type",
    "content-length",
    "te",
    "user-agent",
    "host",
    HOPS_HEADER,
    // Asserted afresh for each hop (its MAC names the target): never passed on.
    crate::auth::forwarded::IDENTITY_HEADER,
    super::adoption::ADOPT_HEADER,
];

/// The channels to the other replicas, by advertised address.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    /// A client for the replica at `address` (host:port), on its cached channel. The channel
    /// connects lazily and reconnects by itself.
    pub fn client(&self, address: &str) -> Result<QueueServiceClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(QueueServiceClient::new(channel.clone())
                .max_decoding_message_size(crate::limits::MAX_REQUEST_BYTES)
                .max_encoding_message_size(crate::limits::MAX_REQUEST_BYTES));
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                Status::unavailable(format!(
                    "the owner's address {address:?} is not usable: {e}"
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(QueueServiceClient::new(channel)
            .max_decoding_message_size(crate::limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(crate::limits::MAX_REQUEST_BYTES))
    }
}

/// How many hops `metadata`'s call has made.
pub fn hops(metadata: &MetadataMap) -> u32 {
    metadata
        .get(HOPS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The request to send on: the caller's metadata, one more hop, and what is left of its
/// deadline.
pub fn onward<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let hops = hops(metadata);
    let budget = crate::grpc::deadline::client_budget(metadata);
    let mut onward = MetadataMap::new();
    for entry in metadata.iter() {
        match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                if !TRANSPORT_HEADERS.contains(&key.as_str()) {
                    onward.append(key.clone(), value.clone());
                }
            }
            tonic::metadata::KeyAndValueRef::Binary(key, value) => {
                onward.append_bin(key.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = (hops + 1).to_string().parse() {
        onward.insert(HOPS_HEADER, value);
    }
    let mut request = Request::from_parts(onward, tonic::Extensions::default(), message);
    if let Some(budget) = budget {
        request.set_timeout(budget);
    }
    request
}

/// A forward's failure, as the caller should read it: the owner's own answers pass through as
/// they are; a failure of the connection to it (it died, or cannot be reached; such a status
/// carries its transport error as its source, which an answer of the peer never does) is a
/// retryable UNAVAILABLE that says so. A long poll on an owner that dies ends this way too.
pub fn unreachable(address: &str, status: Status) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    Status::unavailable(format!(
        "the queue's owner at {address} cannot be reached or went away ({}); retry the call",
        status.message()
    ))
}
