#![no_main]
//! Fuzz target: see `mailflow_enrich::fuzzing::diagnose` for the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mailflow_enrich::fuzzing::diagnose(data));
