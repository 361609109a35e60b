//! Restoring arbitrary queue states (seed 001 available/used state, in-flight chains).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_queue::fuzzing::state_restore(data));
