//! # Spool
//!
//! A durable message-queue service with the queue model of Tencent Cloud CMQ, served over gRPC.
//!
//! # Layout
//!
//! - [`server`]: `run(listener, shutdown, config)`: opens storage, recovers, serves, drains.
//! - [`grpc`]: the `spool.v1.QueueService` handlers, proto ⇄ domain conversion, error mapping.
//! - [`registry`]: queue names to handles; creates, recovers and deletes queue actors.
//! - [`queue`]: one actor task per queue owning its state; [`queue::QueueHandle`] talks to it.
//!   [`queue::messages`] is the pure scheduling state (visible, delayed, in flight, kept).
//! - [`storage`]: the [`storage::Storage`] trait and its embedded SQLite backend (group commit).
//! - [`attributes`], [`limits`]: queue attributes, names and every range and default.
//! - [`receipt`]: receipt handles. [`clock`]: wall-clock time read off the monotonic clock.
//! - [`error`]: [`error::QueueError`], one gRPC code and one CMQ code per case.
//! - [`client`]: the Rust client ([`client::Client`]): typed calls, long-poll streams, retries.
//! - [`cli`]: the client commands of the `spool` binary (`queue`, `send`, `receive`, ...).
//! - [`bench`]: `spool bench`, the load generator (steady, fill-then-drain, long-poll idle, echo);
//!   the peers it compares with are in the `spool-bench` crate under `bench/`.
//! - [`config`]: settings of `spool serve` from a TOML file, the environment and flags.
//! - [`metrics`]: Prometheus counters and histograms, and the /metrics endpoint.

pub mod attributes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod queue;
pub mod receipt;
pub mod registry;
pub mod server;
pub mod storage;

/// The generated protobuf types and gRPC stubs of `spool.v1`, server trait included: the client
/// crate's, so the server and its clients share one set of types.
pub use spool_client::pb;
