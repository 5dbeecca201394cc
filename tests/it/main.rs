//! Integration tests: each talks to a real Spool server over gRPC.

mod cli;
mod client;
mod common;
mod durability;
mod edges;
mod error_table;
mod messages;
mod operations;
mod postgres;
mod queues;
mod receipts;
mod rewind;
mod streams;
mod walkthrough;
