//! Calls of `spool.v1.QueueService` through the server's gRPC stack: see
//! `spool::fuzzing::Handlers`.
#![no_main]

use std::sync::LazyLock;

static HANDLERS: LazyLock<spool::fuzzing::Handlers> = LazyLock::new(spool::fuzzing::Handlers::new);

libfuzzer_sys::fuzz_target!(|data: &[u8]| HANDLERS.run(data));
