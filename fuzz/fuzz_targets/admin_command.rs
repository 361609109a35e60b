//! Admin command decoding and dispatch (seed 004 commands, spec-decisions §4 and §6).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_pci::admin::fuzz_admin_command(data));
