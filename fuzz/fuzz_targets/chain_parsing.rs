//! Descriptor-chain parsing on split and packed rings under a hostile driver.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_queue::fuzzing::chain_parsing(data));
