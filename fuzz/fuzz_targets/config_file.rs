//! See `spool::fuzzing::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool::fuzzing::config_file(data));
