//! See `spool::fuzzing::auth_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool::fuzzing::auth_file(data));
