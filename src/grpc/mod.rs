//! The gRPC edge: the QueueService implementation, proto ⇄ domain conversion, error mapping,
//! the health service, the auth layer, and the request size limit's answer.

pub mod auth;
mod consume_stream;
pub(crate) mod convert;
pub mod deadline;
pub mod health;
pub mod layer;
pub mod observe;
pub mod receive_stream;
mod service;
pub mod status;
mod topics;

pub use consume_stream::ConsumerRequests;
pub use service::QueueServiceImpl;
