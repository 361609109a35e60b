//! Hostile admin commands against a v1.4 owner (virtio 1.4 "Device parts", "Resource
//! objects"; the framework's "MUST NOT fail a command only because of buffer length"): any
//! opcode, group, member, data and result size is answered, never a panic, and a status with
//! a result of the framework's shape.

use proptest::prelude::*;
use virtio_lm_pci::admin::AdminCommand;
use virtio_lm_pci::testing::*;
use virtio_lm_spec::admin::group_type;
use virtio_lm_spec::parts::{DevPartsObjData, DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET};
use virtio_lm_spec::zerocopy::IntoBytes;

/// A command: mostly the v1.4 opcodes and groups, with data that is often a valid object
/// header followed by random bytes.
fn command() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        prop_oneof![0u16..0x12, any::<u16>()],
        prop_oneof![
            Just(group_type::SELF),
            Just(group_type::SRIOV),
            any::<u16>()
        ],
        prop_oneof![0u64..4, any::<u64>()],
        any::<bool>(),
        0u32..8,
        prop::collection::vec(any::<u8>(), 0..96),
        0usize..600,
    )
        .prop_map(|(op, group, member, header, id, tail, writable)| {
            let mut data = if header {
                DevPartsObjData::new(id, DEV_PARTS_TYPE_GET).as_bytes()[..16].to_vec()
            } else {
                Vec::new()
            };
            data.extend_from_slice(&tail);
            (
                AdminCommand::new(op, group, member, data).to_bytes(),
                writable,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// 1.4: every command is answered within the writable part (status header first, used
    /// length at most the buffer), whatever it holds, with objects and stopped members around.
    #[test]
    fn hostile_commands_are_answered(commands in prop::collection::vec(command(), 1..24)) {
        let owner = v14_owner(2);
        {
            let mut client = v14_client(&owner);
            client.parts_object_create(1, 0, DEV_PARTS_TYPE_GET).unwrap();
            client.parts_object_create(2, 1, DEV_PARTS_TYPE_SET).unwrap();
            client.dev_mode_stopped(2, true).unwrap();
        }
        for (readable, writable) in commands {
            let written = owner.execute_direct(&readable, writable);
            prop_assert!(written.len() <= writable);
        }
    }
}
