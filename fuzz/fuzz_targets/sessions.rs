#![no_main]
//! Fuzz target: see `mailflow_enrich::fuzzing::sessions` for the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mailflow_enrich::fuzzing::sessions(data));
