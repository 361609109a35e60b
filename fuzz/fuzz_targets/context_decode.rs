//! Device-context decoding (spec-decisions §5 field format): arbitrary bytes never panic, and what
//! decodes re-encodes to the same context.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_device::context::fuzz_decode(data));
