//! # Spool
//!
//! A durable message-queue service with the queue model of Tencent Cloud CMQ, served over gRPC.
//!
//! # Layout
//!
//! This crate is the server and the `spool` binary. The Rust client, the generated protobuf
//! types, the error table and the API's limits are the `spool-client` crate (`clients/rust`),
//! which this one builds on; the load generator is the `spool-bench` crate (`bench/`).
//!
//! - [`server`]: `run(listener, shutdown, config)`: opens storage, recovers, serves, drains.
//! - [`grpc`]: the `spool.v1.QueueService` handlers, proto ⇄ domain conversion, error mapping.
//! - [`registry`]: queue names to handles; creates, recovers and deletes queue actors.
//! - [`queue`]: one actor task per queue owning its state; [`queue::QueueHandle`] talks to it.
//!   [`queue::messages`] is the pure scheduling state (visible, delayed, in flight, kept).
//! - [`storage`]: the [`storage::Storage`] trait and its backends, embedded SQLite and
//!   PostgreSQL (each with one writer and group commit).
//! - [`attributes`], [`limits`]: queue attributes and their validation; the server's limits (the
//!   API's ranges and defaults are `spool_client::limits`, re-exported).
//! - [`receipt`]: receipt handles. [`clock`]: wall-clock time read off the monotonic clock.
//! - [`error`]: [`error::QueueError`], each case one entry of the error table
//!   (`spool_client::errors`: reason, gRPC code, CMQ code).
//! - [`cli`]: the client commands of the `spool` binary (`queue`, `send`, `receive`, ...), on
//!   `spool_client::Client`.
//! - [`pb`]: the generated types and stubs, server trait included (the client crate's).
//! - [`config`]: settings of `spool serve` from a TOML file, the environment and flags.
//! - [`metrics`]: Prometheus counters and histograms, and the /metrics endpoint.
//! - [`migrate`]: `spool migrate`, a stopped server's embedded database moved into PostgreSQL.

pub mod attributes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod migrate;
pub mod queue;
pub mod receipt;
pub mod registry;
pub mod server;
pub mod storage;

/// The generated protobuf types and gRPC stubs of `spool.v1`, server trait included: the client
/// crate's, so the server and its clients share one set of types.
pub use spool_client::pb;
