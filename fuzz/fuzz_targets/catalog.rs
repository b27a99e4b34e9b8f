#![no_main]
//! Fuzz target: any text as a user catalog file (errors, never panics).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mailflow_enrich::fuzzing::catalog(data));
