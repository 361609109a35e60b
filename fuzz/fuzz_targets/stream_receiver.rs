//! The destination's migration-stream receiver: arbitrary bytes (raw, or with the framing
//! repaired so payload decoders are reached) never panic, every refusal names a section inside
//! the input, and what is accepted round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtio_lm_migration::fuzzing::stream_receiver(data));
