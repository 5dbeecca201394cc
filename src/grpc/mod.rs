//! The gRPC edge: the QueueService implementation, proto ⇄ domain conversion, error mapping.

pub mod codec;
mod convert;
mod deadline;
mod service;
pub mod status;

pub use service::QueueServiceImpl;
