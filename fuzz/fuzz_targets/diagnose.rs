#![no_main]
//! Fuzz target: outside text through the diagnosis matcher (no panic on any field value).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mailflow_enrich::fuzzing::diagnose(data));
