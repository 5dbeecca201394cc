//! Cluster mode, tested with several real `spool serve` processes on 127.0.0.1 sharing one
//! real PostgreSQL: calls through non-owners, an owner killed, paused, or stopped gracefully,
//! and PostgreSQL itself going away.
//!
//! A binary of its own, so it runs beside the integration suite. Each test makes a database of
//! its own on the PostgreSQL at 127.0.0.1:5432 (`SPOOL_TEST_PGHOST`, `SPOOL_TEST_PGPORT`,
//! `SPOOL_TEST_PGUSER` to change it) and drops it afterwards. Without a PostgreSQL there the
//! tests say so and pass, except under CI=true, where they fail.

#[path = "../it/common.rs"]
mod common;

mod checker;
mod dead_letters;
mod failover;
mod handoff;
mod harness;
mod identity;
mod outage;
mod routing;
mod topics;
