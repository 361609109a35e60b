//! Seed 004 hostile input: the admin command fuzz body (`fuzz_admin_command`) run over random
//! bytes and over structured command sequences (valid and mutated contexts included). It
//! checks that nothing panics, that results fit the writable part, and that a command answered
//! EINVAL (or EAGAIN, ENOMEM, EBUSY) changed nothing.

use std::sync::OnceLock;

use proptest::prelude::*;
use virtio_lm_pci::admin::{fuzz_admin_command, fuzz_template_context, AdminCommand};
use virtio_lm_pci::testing::admin::fuzz_input_command;
use virtio_lm_spec::admin::opcode;

fn template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(fuzz_template_context)
}

/// Command data: nothing, a mode byte, random bytes, or a (possibly cut or damaged) context.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        (0u8..5).prop_map(|m| vec![m, 0, 0, 0, 0, 0, 0, 0]),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(()).prop_map(|_| template().to_vec()),
        (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(cut, head)| {
            let t = template();
            let at = cut.index(t.len() + 1);
            if head {
                t[..at].to_vec()
            } else {
                t[at..].to_vec()
            }
        }),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, x)| {
            let mut t = template().to_vec();
            if !t.is_empty() {
                let i = at.index(t.len());
                t[i] ^= x | 1;
            }
            t
        }),
        any::<u64>().prop_map(|w| w.to_le_bytes().to_vec()),
    ]
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    // Mostly plausible commands (so validation passes and the commands run), some wild ones.
    let ops = prop_oneof![
        8 => opcode::DEV_MODE_GET..=opcode::DEV_CTX_FIELDS_QUERY,
        2 => Just(opcode::LIST_QUERY),
        1 => Just(opcode::LIST_USE),
        1 => Just(0x0011u16),
        1 => any::<u16>(),
    ];
    let groups = prop_oneof![8 => Just(1u16), 1 => Just(0u16), 1 => any::<u16>()];
    let members = prop_oneof![8 => 1u64..4, 1 => 0u64..6, 1 => any::<u64>()];
    let writable = prop_oneof![
        Just(0u16),
        Just(4),
        Just(8),
        Just(16),
        Just(24),
        Just(64),
        Just(4096),
        0u16..300
    ];
    (ops, groups, members, data(), writable, 0usize..40).prop_map(
        |(op, group, member, data, writable, cut)| {
            let mut readable = AdminCommand::new(op, group, member, data).to_bytes();
            // Now and then a readable part cut short (inside the header or the data).
            if cut < 4 {
                readable.truncate(cut * 7);
            }
            fuzz_input_command(writable, &readable)
        },
    )
}

/// A fuzz input of 1 to 11 structured commands.
fn commands() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(command(), 1..12).prop_map(|commands| commands.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Seed 004 framework: "If status is set to VIRTIO_ADMIN_STATUS_EINVAL, the device state
    /// MUST NOT change" and EAGAIN/ENOMEM "MUST NOT have any side effects" — over sequences of
    /// structured commands (all opcodes, groups, members, buffer sizes, contexts whole, cut and
    /// damaged) against an owner with three members.
    #[test]
    fn structured_commands_keep_the_invariants(input in commands()) {
        fuzz_admin_command(&input);
    }

    /// Seed 004 framework: the device never panics and keeps its invariants on arbitrary
    /// command bytes.
    #[test]
    fn random_bytes_keep_the_invariants(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzz_admin_command(&bytes);
    }
}

/// Seed 004: the fuzz template is a complete context ("field[0] ... START_MARKER", last entry
/// END_MARKER), so the structured inputs reach the context validation.
#[test]
fn template_is_a_complete_context() {
    let t = template();
    assert!(virtio_lm_device::context::decode(t).is_ok());
}
