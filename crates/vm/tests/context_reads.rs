//! Seed 004: DEV_CTX_READ in Active mode is a pre-copy read, and a migration may repeat it —
//! after a migration cancelled once its pre-copy read was done, the next one reads again in the
//! same mode. Each `read_contexts` must return a whole context (START_MARKER to END_MARKER),
//! not the empty end of the previous read's stream.

use virtio_lm_device::context::decode;
use virtio_lm_vm::testing::{run_for, start_machine};
use virtio_lm_vm::RingFormat;

/// Seed 004 ("the device context ... read by DEV_CTX_READ ... in any mode"): two Active-mode
/// reads in a row, the guest running between them, each a whole, decodable context per member.
#[test]
fn active_mode_context_reads_repeat_whole() {
    let (_image, _echo, _options, machine) =
        start_machine("vm-ctx-reads", "repeat", RingFormat::Split, 1);
    for round in 0..3 {
        run_for(&machine, 10);
        let contexts = machine.read_contexts().unwrap();
        assert_eq!(contexts.len(), 2, "round {round}");
        for (member, bytes) in contexts {
            decode(&bytes).unwrap_or_else(|e| panic!("round {round}, member {member}: {e}"));
        }
    }
}
