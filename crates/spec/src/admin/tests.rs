use super::*;
use crate::layout_tests::assert_wire;
use core::mem::size_of;

/// virtio 1.4 "Administration Facilities" `struct virtio_admin_cmd`: "le16 opcode; le16 group_type; u8
/// reserved1[12]; le64 group_member_id;" — "device-readable part (24 bytes +
/// data)".
#[test]
fn cmd_header_layout() {
    assert_layout!(AdminCmdHeader, 24;
        opcode @ 0, group_type @ 2, reserved1 @ 4, group_member_id @ 16);
    assert_eq!(size_of::<AdminCmdHeader>(), ADMIN_CMD_HEADER_LEN);
}

/// virtio 1.4 "Administration Facilities": "le16 status; le16 status_qualifier; u8 reserved2[4];" —
/// "device-writable part (8 bytes + result)".
#[test]
fn result_header_layout() {
    assert_layout!(AdminResultHeader, 8; status @ 0, status_qualifier @ 2, reserved2 @ 4);
    assert_eq!(size_of::<AdminResultHeader>(), ADMIN_RESULT_HEADER_LEN);
}

/// Headers serialise little-endian with zeroed reserved bytes and read back.
#[test]
fn header_bytes() {
    let h = AdminCmdHeader::new(opcode::DEV_CTX_READ, group_type::SRIOV, 0x0102);
    let mut wire = [0u8; 24];
    wire[..4].copy_from_slice(&[0x16, 0x00, 0x01, 0x00]);
    wire[16..].copy_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_wire(&h, &wire);

    let r = AdminResultHeader::new(status::EINVAL, qualifier::Q_INVALID_MEMBER);
    assert_wire(&r, &[22, 0, 5, 0, 0, 0, 0, 0]);
}

/// virtio 1.4 "Administration Facilities": LIST_QUERY 0x0000, LIST_USE 0x0001; spec-decisions §4 assigns the
/// seed-004 commands 0x0013-0x0019 in the free range "0x0013–0x7FFF".
#[test]
fn opcodes() {
    assert_eq!(opcode::LIST_QUERY, 0x0);
    assert_eq!(opcode::LIST_USE, 0x1);
    assert_eq!(opcode::DEV_MODE_GET, 0x13);
    assert_eq!(opcode::DEV_MODE_SET, 0x14);
    assert_eq!(opcode::DEV_CTX_SIZE_GET, 0x15);
    assert_eq!(opcode::DEV_CTX_READ, 0x16);
    assert_eq!(opcode::DEV_CTX_WRITE, 0x17);
    assert_eq!(opcode::DEV_CTX_DISCARD, 0x18);
    assert_eq!(opcode::DEV_CTX_FIELDS_QUERY, 0x19);
    for op in opcode::DEVICE_MIGRATION {
        assert!(
            (0x0013..=0x7fff).contains(&op),
            "{op:#x} outside the free range"
        );
    }
    assert_eq!(opcode::v1_4::DEV_PARTS_METADATA_GET, 0xe);
    assert_eq!(opcode::v1_4::DEV_PARTS_GET, 0xf);
    assert_eq!(opcode::v1_4::DEV_PARTS_SET, 0x10);
    assert_eq!(opcode::v1_4::DEV_MODE_SET, 0x11);
}

/// Seed 004: "A device MUST either support all of, or none of" the migration
/// commands — the list holds seven distinct opcodes.
#[test]
fn device_migration_set_is_complete() {
    let mut ops = opcode::DEVICE_MIGRATION.to_vec();
    ops.sort_unstable();
    ops.dedup();
    assert_eq!(ops.len(), 7);
}

/// virtio 1.4 "Administration Facilities": group type 0 Self, 1 SR-IOV.
#[test]
fn group_types() {
    assert_eq!(group_type::SELF, 0);
    assert_eq!(group_type::SRIOV, 1);
}

/// virtio 1.4 "Administration Facilities" status table: 0 OK, 6 ENXIO, 11 EAGAIN, 12 ENOMEM, 16 EBUSY,
/// 22 EINVAL, 28 ENOSPC.
#[test]
fn status_codes() {
    use status::*;
    let codes = [OK, ENXIO, EAGAIN, ENOMEM, EBUSY, EINVAL, ENOSPC];
    assert_eq!(codes, [0, 6, 11, 12, 16, 22, 28]);
}

/// virtio 1.4 "Administration Facilities" qualifier table 0x00-0x07.
#[test]
fn qualifiers() {
    use qualifier::*;
    let command = [Q_OK, Q_INVALID_COMMAND, Q_INVALID_OPCODE, Q_INVALID_FIELD];
    assert_eq!(command, [0, 1, 2, 3]);
    let others = [Q_INVALID_GROUP, Q_INVALID_MEMBER, Q_NORESOURCE, Q_TRYAGAIN];
    assert_eq!(others, [4, 5, 6, 7]);
}

/// The typed codes carry the same numbers and names as the constants, and every other value
/// is reserved (a driver treats a reserved status as EINVAL, a reserved qualifier as
/// Q_INVALID_COMMAND).
#[test]
fn typed_codes_round_trip_and_refuse_reserved_values() {
    fn round_trip<T>(all: &[T], reserved: u16) -> Result<T, T::Error>
    where
        T: Copy + PartialEq + core::fmt::Debug + TryFrom<u16> + Into<u16>,
        T::Error: core::fmt::Debug,
    {
        for &code in all {
            assert_eq!(T::try_from(code.into()).unwrap(), code);
        }
        T::try_from(reserved)
    }
    assert_eq!(round_trip(AdminStatus::ALL, 1), Err(ReservedStatus(1)));
    assert_eq!(
        round_trip(StatusQualifier::ALL, 8),
        Err(ReservedQualifier(8))
    );
    assert_eq!((AdminStatus::ALL.len(), StatusQualifier::ALL.len()), (7, 8));
    assert_eq!(AdminStatus::Einval.name(), "EINVAL");
    assert_eq!(u16::from(AdminStatus::Enospc), status::ENOSPC);
    assert_eq!(StatusQualifier::NoResource.name(), "Q_NORESOURCE");
    assert_eq!(u16::from(StatusQualifier::TryAgain), qualifier::Q_TRYAGAIN);
}

/// Seed 004: "The device MUST fail the command VIRTIO_ADMIN_CMD_DEV_MODE_SET
/// when the mode is other than Active or Stop or Freeze"; spec-decisions §4:
/// Active = 0, Stop = 1, Freeze = 2.
#[test]
fn dev_mode_values() {
    for (v, m) in [
        (0, DevMode::Active),
        (1, DevMode::Stop),
        (2, DevMode::Freeze),
    ] {
        assert_eq!(DevMode::try_from(v), Ok(m));
        assert_eq!(u8::from(m), v);
    }
    for v in 3..=u8::MAX {
        assert_eq!(DevMode::try_from(v), Err(InvalidDevMode(v)));
    }
    assert_eq!(InvalidDevMode(7).to_string(), "invalid device mode 7");
}

/// spec-decisions §4: DEV_MODE data/result "`u8 mode; u8 reserved[7]`".
#[test]
fn dev_mode_data() {
    assert_layout!(DevModeData, 8; mode @ 0, reserved @ 1);
    assert_wire(
        &DevModeData::new(DevMode::Freeze),
        &[2, 0, 0, 0, 0, 0, 0, 0],
    );
}

/// spec-decisions §4: DEV_CTX_SIZE_GET result "`le32 size; le32 reserved`".
#[test]
fn dev_ctx_size_result() {
    assert_layout!(DevCtxSizeResult, 8; size @ 0, reserved @ 4);
    assert_wire(
        &DevCtxSizeResult::new(0x1234),
        &[0x34, 0x12, 0, 0, 0, 0, 0, 0],
    );
}

/// Seed 004 (v4): "struct virtio_admin_cmd_dev_ctx_rd_result { le32
/// remaining_ctx_size; le32 size; u8 data[]; }" — the v3 le64 and reserved
/// word are gone, so data starts at 8.
#[test]
fn dev_ctx_read_result_header() {
    assert_layout!(DevCtxReadResultHeader, 8; remaining_ctx_size @ 0, size @ 4);
    let h = DevCtxReadResultHeader::new(0x0102_0304, 0x10);
    assert_wire(&h, &[0x04, 0x03, 0x02, 0x01, 0x10, 0, 0, 0]);
}

/// spec-decisions §4: DEV_CTX_FIELDS_QUERY result "`le32 count; le32 reserved;
/// {le16 type; le16 flags; le32 length}[count]`".
#[test]
fn dev_ctx_fields_query() {
    assert_layout!(DevCtxFieldsQueryHeader, 8; count @ 0, reserved @ 4);
    assert_layout!(DevCtxFieldInfo, 8; field_type @ 0, flags @ 2, length @ 4);

    assert_wire(&DevCtxFieldsQueryHeader::new(3), &[3, 0, 0, 0, 0, 0, 0, 0]);
    let e = DevCtxFieldInfo::new(FieldType::VQ_CONFIG, 0, 32);
    let back = assert_wire(&e, &[0x10, 0x01, 0, 0, 32, 0, 0, 0]);
    assert_eq!(back.field_type(), FieldType::VQ_CONFIG);
}

/// Every implemented opcode decodes from its wire number and back; every other number,
/// the virtio 1.4 device-parts commands included, is an `UnknownOpcode` carrying the value.
#[test]
fn admin_opcode_round_trip() {
    let wire = [
        opcode::LIST_QUERY,
        opcode::LIST_USE,
        opcode::DEV_MODE_GET,
        opcode::DEV_MODE_SET,
        opcode::DEV_CTX_SIZE_GET,
        opcode::DEV_CTX_READ,
        opcode::DEV_CTX_WRITE,
        opcode::DEV_CTX_DISCARD,
        opcode::DEV_CTX_FIELDS_QUERY,
    ];
    for value in 0..=u16::MAX {
        match AdminOpcode::try_from(value) {
            Ok(op) => {
                assert!(wire.contains(&value), "{value:#x} decoded as {op:?}");
                assert_eq!(u16::from(op), value);
            }
            Err(e) => {
                assert!(!wire.contains(&value), "{value:#x} not decoded");
                assert_eq!(e, UnknownOpcode(value));
            }
        }
    }
    assert_eq!(AdminOpcode::try_from(0x0014), Ok(AdminOpcode::DevModeSet));
    assert_eq!(AdminOpcode::DevModeSet.name(), "DEV_MODE_SET");
    assert_eq!(
        AdminOpcode::try_from(opcode::v1_4::DEV_MODE_SET),
        Err(UnknownOpcode(0x0011))
    );
    let list: Vec<_> = AdminOpcode::ALL
        .into_iter()
        .filter(|o| o.is_list())
        .collect();
    assert_eq!(list, [AdminOpcode::ListQuery, AdminOpcode::ListUse]);
}
