//! The gRPC edge: the QueueService implementation, proto ⇄ domain conversion, error mapping.

mod convert;
mod deadline;
mod service;
pub mod status;

pub use service::QueueServiceImpl;
