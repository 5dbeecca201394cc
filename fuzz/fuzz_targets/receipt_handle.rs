//! See `spool::fuzzing::receipt_handle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool::fuzzing::receipt_handle(data));
