//! The v1.4 admin command fuzz body (`fuzz_v14_admin_command`, also the `admin_v14`
//! cargo-fuzz target) over random bytes and over structured command sequences: capability,
//! resource-object, device-parts and DEV_MODE_SET commands with plausible headers and parts.
//! It checks that nothing panics, that results fit the writable part, and that a refused
//! command (EINVAL, EAGAIN, ENOMEM, EBUSY, ENXIO, ENOSPC, EEXIST) changed nothing.

use proptest::prelude::*;
use virtio_lm_pci::admin::{
    fuzz_v14_admin_command, fuzz_v14_owner_ready, fuzz_v14_set_header, AdminCommand,
};
use virtio_lm_pci::testing::admin::fuzz_input_command;
use virtio_lm_spec::admin::group_type;
use virtio_lm_spec::parts::{part_type, DevPartsTypedData, Part, NET_CVQ_CFG};
use virtio_lm_spec::zerocopy::IntoBytes;

/// A part: mostly the common types with lengths that fit them, flags 0 or OPTIONAL.
fn part() -> impl Strategy<Value = Vec<u8>> {
    let types = prop_oneof![
        8 => part_type::DEV_FEATURES..=part_type::VQ_NOTIFY_CFG,
        1 => Just(NET_CVQ_CFG),
        1 => any::<u16>(),
    ];
    let value = prop_oneof![
        Just(vec![0x0f]),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<u8>(), 8..=8),
        prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 32..=32),
    ];
    (
        types,
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
        0u8..3,
        value,
    )
        .prop_map(|(t, flags, sel, value)| {
            let mut out = Vec::new();
            Part::new(t, flags & 1, [sel, 0, 0, 0, 0, 0, 0, 0], value).encode_into(&mut out);
            out
        })
}

/// Command data: typed data of an object (GET, METADATA_GET, object commands), a SET of
/// parts, a DEV_MODE_SET flags byte, or random bytes.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u32..5, 0u8..4)
            .prop_map(|(id, kind)| DevPartsTypedData::new(id, kind).as_bytes().to_vec()),
        prop::collection::vec(part(), 0..8).prop_map(|parts| {
            let mut data = fuzz_v14_set_header();
            data.extend(parts.concat());
            data
        }),
        prop_oneof![Just(0u8), Just(1u8), any::<u8>()].prop_map(|f| vec![f]),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    let ops = prop_oneof![8 => 0x7u16..=0x11, 2 => 0u16..2, 1 => any::<u16>()];
    let groups = prop_oneof![
        4 => Just(group_type::SRIOV),
        2 => Just(group_type::SELF),
        1 => any::<u16>()
    ];
    let members = prop_oneof![8 => 0u64..4, 1 => any::<u64>()];
    let writable = prop_oneof![Just(0u16), Just(8), Just(16), Just(4096), 0u16..600];
    (ops, groups, members, data(), writable).prop_map(|(op, group, member, data, writable)| {
        let readable = AdminCommand::new(op, group, member, data).to_bytes();
        fuzz_input_command(writable, &readable)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// virtio 1.4 "Administration Facilities": a command answered EINVAL does not change the
    /// device, and "Resource objects"/"Device parts": a refused command (EEXIST, ENXIO,
    /// ENOSPC, EBUSY, ENOMEM) has no side effect — over sequences of structured v1.4 commands
    /// against an owner with objects, a running and a stopped member.
    #[test]
    fn structured_v1_4_commands_keep_the_invariants(
        commands in prop::collection::vec(command(), 1..16)
    ) {
        fuzz_v14_admin_command(&commands.concat());
    }

    /// The v1.4 owner never panics and keeps its invariants on arbitrary command bytes.
    #[test]
    fn random_bytes_keep_the_v1_4_invariants(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzz_v14_admin_command(&bytes);
    }
}

/// The fuzz owner is built (objects created, member 2 stopped), so the inputs reach the
/// v1.4 commands instead of returning early.
#[test]
fn the_fuzz_owner_is_built() {
    assert!(fuzz_v14_owner_ready());
}
