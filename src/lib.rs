//! # Spool
//!
//! A durable message-queue service with the queue model of Tencent Cloud CMQ, served over gRPC.
//!
//! # Layout
//!
//! This crate is the server and the `spool` binary. The Rust client, the generated protobuf
//! types (server trait included), the error table and the API's limits are the `spool-client`
//! crate (`clients/rust`), which this one builds on; the load generator and the peers it is
//! compared with are the `spool-bench` crate (`bench/`). The modules, roughly top to bottom; no
//! two of them depend on each other, directly or through others (`tests/it/layering.rs` checks):
//!
//! - [`server`]: `run(listener, shutdown, config)`: opens storage, recovers, serves, drains.
//! - `grpc`: the `spool.v1.QueueService` handlers, proto ⇄ domain conversion, the error
//!   mapping (`status`), and the layers around the service: `observe` (every call measured and
//!   logged from its wire outcome), `layer` (the request size limit), `health`, `codec`-level
//!   decoding errors.
//! - `registry`: queue names to handles; creates, recovers and deletes queue actors; holds the
//!   receipt-handle key.
//! - `queue`: one actor task per queue owning its state; `QueueHandle` talks to it, and
//!   `Receiving` is one receive as a stream (the receive protocol). `queue::messages` is the
//!   pure scheduling state (visible, delayed, in flight, kept, tombstones).
//! - `storage`: the `Storage` trait (durable commits, lazy writes, body reads, recovery) and its
//!   backends, embedded SQLite and PostgreSQL (each with one writer and group commit); it reports
//!   commits through `CommitObserver`.
//! - `payload`: a message's body and attributes as stored and delivered.
//! - `attributes`, `limits`: queue attributes and their validation; the server's limits (the
//!   API's ranges are `spool_client::limits`, re-exported). `receipt`: signed receipt handles.
//!   [`clock`]: wall-clock time read off the monotonic clock. `error`: `QueueError`, each case
//!   one entry of the error table (`spool_client::errors`).
//! - `security`: TLS and authentication as the settings ask: `tls` (the rustls acceptor whose
//!   certificate reloads in place), `auth` (principals from the auth file, their grants, the
//!   names of client certificates), `reload` (files re-read when they change). The gRPC side
//!   is `grpc::auth`, the layer that authenticates each call.
//! - `http`: the HTTP/1.1 port (`--http-listen`) speaking the wire APIs of other SDKs, Amazon
//!   SQS's JSON protocol and Tencent CMQ's HTTP API v2, over the gRPC service implementation.
//! - `web`: the gRPC port's face for browsers: gRPC-Web (tonic-web) with CORS, and the web
//!   console's files (built in `console/`, embedded).
//! - `cluster`: cluster mode, replicas sharing one PostgreSQL schema: `membership` (the
//!   members table, heartbeat, lease), `placement` (rendezvous hashing), `ownership`
//!   (takeovers, hand-offs, the directory of owners), `forwarding` and `routing` (calls for
//!   queues owned elsewhere sent to their owner). The fence every commit checks is the
//!   PostgreSQL writer's (`storage::postgres::fence`).
//! - [`config`]: the one `Settings` struct of `spool serve` (flags, environment, TOML file).
//! - `otel`: a span per API call for OpenTelemetry (W3C `traceparent` in, OTLP/HTTP JSON out
//!   with `--otlp-endpoint`), and the trace id on the call's log lines.
//! - `metrics`: Prometheus counters and histograms, and the /metrics endpoint.
//! - [`migrate`]: `spool migrate`, a stopped server's embedded database moved into PostgreSQL.
//! - [`cli`]: the client commands of the `spool` binary (`queue`, `send`, `receive`, ...), on
//!   `spool_client::Client`.
//!
//! Only what the binary and the tests need is public: [`server`], [`config`], [`clock`],
//! [`cli`], [`migrate`] and [`pb`].

mod attributes;
mod auth;
pub mod cli;
pub mod clock;
mod cluster;
pub mod config;
mod disk;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
mod limits;
mod logsafe;
mod metrics;
pub mod migrate;
mod net;
mod otel;
mod payload;
mod queue;
mod receipt;
mod registry;
mod reload;
mod security;
pub mod server;
mod storage;
mod tls;
mod topic;
mod web;

/// The generated protobuf types and gRPC stubs of `spool.v1`, server trait included: the client
/// crate's, so the server and its clients share one set of types.
pub use spool_client::pb;

/// How the server reaches PostgreSQL (URL, password, TLS): public so tests can check a
/// connection's TLS verification directly.
pub use storage::postgres::ConnectOptions as PostgresConnectOptions;

/// What one body kept in memory costs beyond its bytes (see `--body-cache-bytes`): the metric
/// `spool_body_cache_bytes` counts it.
pub use queue::body_cache::ENTRY_OVERHEAD as BODY_CACHE_ENTRY_OVERHEAD;
