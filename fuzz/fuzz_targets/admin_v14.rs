//! virtio 1.4 admin commands (capabilities, resource objects, device parts, DEV_MODE_SET) of
//! a v1.4 owner (spec-decisions §17, §28).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_pci::admin::fuzz_v14_admin_command(data));
