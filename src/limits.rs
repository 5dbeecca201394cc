//! The limits of the server: the API's ranges and defaults, which the client crate owns
//! (`spool_client::limits`, re-exported here so there is one definition), and the server's own
//! settings.

pub use spool_client::limits::*;

/// Queues a server holds unless configured otherwise.
pub const DEFAULT_MAX_QUEUES: usize = 10_000;
