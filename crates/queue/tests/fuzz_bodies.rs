//! Runs the fuzz target bodies (`virtio_lm_queue::fuzzing`) over generated input, so stable CI
//! exercises exactly the code the coverage-guided fuzzer in `fuzz/` runs.
//!
//! Hostile input (spec-decisions §7 pitfall 10, and the "hostile rings" list of the queue issue):
//! descriptor loops, overlong chains, nested or malformed indirect tables, addresses outside
//! guest memory, overflowing lengths, out-of-range indices and avail.idx jumps must give typed
//! errors, never a panic or a hang.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Chain parsing on both ring formats never panics and every accepted chain is sound.
    #[test]
    fn chain_parsing_survives_generated_input(data in prop::collection::vec(any::<u8>(), 0..8192)) {
        virtio_lm_queue::fuzzing::chain_parsing(&data);
    }

    /// Restoring arbitrary queue states either fails without changing the queue or reads back
    /// exactly what was restored.
    #[test]
    fn state_restore_survives_generated_input(data in prop::collection::vec(any::<u8>(), 0..8192)) {
        virtio_lm_queue::fuzzing::state_restore(&data);
    }
}
