//! Integration tests: each talks to a real Spool server over gRPC.

mod abuse;
mod attributes;
mod auth;
mod certs;
mod cli;
mod client;
mod common;
mod consume;
mod dead_letters;
mod deduplication;
mod durability;
mod edges;
mod error_table;
mod layering;
mod messages;
mod operations;
mod postgres;
mod queues;
mod receipts;
mod rewind;
mod streams;
mod tls;
mod version;
mod visibility;
mod walkthrough;
