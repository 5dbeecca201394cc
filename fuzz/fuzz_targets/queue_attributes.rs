//! See `spool::fuzzing::queue_name_and_attributes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spool::fuzzing::queue_name_and_attributes(data));
