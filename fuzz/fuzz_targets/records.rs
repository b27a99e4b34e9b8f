#![no_main]
//! Fuzz target: see `mailflow_parser::fuzzing::records` for the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mailflow_parser::fuzzing::records(data));
