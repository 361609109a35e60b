use super::*;
use crate::layout_tests::assert_wire;
use core::mem::size_of;

/// spec-decisions §5: "each `le16 type; le16 flags; le32 length; u8
/// value[length]` (8-byte header ...)".
#[test]
fn field_header_layout() {
    assert_layout!(ContextFieldHeader, 8; field_type @ 0, flags @ 2, length @ 4);
    assert_eq!(size_of::<ContextFieldHeader>(), FIELD_HEADER_LEN);
}

/// A header serialises little-endian and reads back; flags bit 0 is OPTIONAL.
#[test]
fn field_header_bytes() {
    let h = ContextFieldHeader::new(FieldType::VQ_INFLIGHT, FIELD_FLAG_OPTIONAL, 0x0102_0304);
    let back = assert_wire(&h, &[0x12, 0x01, 0x01, 0x00, 0x04, 0x03, 0x02, 0x01]);
    assert_eq!(back.field_type(), FieldType::VQ_INFLIGHT);
    assert!(back.is_optional());
    assert_eq!((back.flags(), back.length()), (1, 0x0102_0304));
    assert!(!ContextFieldHeader::new(FieldType::VQ_STATE, 0, 8).is_optional());
}

/// spec-decisions §5 type table, every number; seed 004 names
/// "VIRTIO_DEV_CTX_START_MARKER, VIRTIO_DEV_CTX_END_MARKER and
/// VIRTIO_DEV_CTX_DISCARD" (their values are our assignment).
#[test]
fn field_type_values() {
    let expected: [(FieldType, u16, &str); 18] = [
        (FieldType::START_MARKER, 0x0000, "START_MARKER"),
        (FieldType::END_MARKER, 0x0001, "END_MARKER"),
        (FieldType::DISCARD, 0x0002, "DISCARD"),
        (FieldType::DEVICE_FEATURES, 0x0100, "DEVICE_FEATURES"),
        (FieldType::DRIVER_FEATURES, 0x0101, "DRIVER_FEATURES"),
        (FieldType::DEVICE_STATUS, 0x0102, "DEVICE_STATUS"),
        (FieldType::CONFIG_GENERATION, 0x0103, "CONFIG_GENERATION"),
        (FieldType::DEVICE_CONFIG, 0x0104, "DEVICE_CONFIG"),
        (FieldType::PCI_COMMON_CFG, 0x0105, "PCI_COMMON_CFG"),
        (FieldType::VQ_CONFIG, 0x0110, "VQ_CONFIG"),
        (FieldType::VQ_STATE, 0x0111, "VQ_STATE"),
        (FieldType::VQ_INFLIGHT, 0x0112, "VQ_INFLIGHT"),
        (FieldType::BLK_WRITEBACK, 0x0200, "BLK_WRITEBACK"),
        (FieldType::NET_RX_MODE, 0x0300, "NET_RX_MODE"),
        (FieldType::NET_MAC_TABLE, 0x0301, "NET_MAC_TABLE"),
        (FieldType::NET_VLAN_TABLE, 0x0302, "NET_VLAN_TABLE"),
        (FieldType::NET_MQ_PAIRS, 0x0303, "NET_MQ_PAIRS"),
        (FieldType::NET_ANNOUNCE, 0x0304, "NET_ANNOUNCE"),
    ];
    for (i, (t, v, name)) in expected.into_iter().enumerate() {
        assert_eq!(t.0, v);
        assert_eq!(t.name(), Some(name));
        assert_eq!(FieldType::KNOWN[i], t);
        assert_eq!(format!("{t:?}"), name);
    }
    assert_eq!(FieldType(0x0420).name(), None);
    assert_eq!(format!("{:?}", FieldType(0x0420)), "0x0420");
    assert_eq!(u16::from(FieldType::from(0x0111)), 0x0111);
}

/// spec-decisions §5: "0x0200–0x02FF blk-specific", "0x0300–0x03FF net-specific".
#[test]
fn device_specific_ranges() {
    assert!(FieldType::BLK_WRITEBACK.is_blk_specific());
    assert!(FieldType(0x02ff).is_blk_specific());
    assert!(!FieldType(0x0300).is_blk_specific());
    assert!(FieldType::NET_ANNOUNCE.is_net_specific());
    assert!(FieldType(0x03ff).is_net_specific());
    assert!(!FieldType::VQ_STATE.is_net_specific());
}

/// Fixed value lengths follow the §5 value column; variable ones are `None`.
#[test]
fn value_lengths() {
    assert_eq!(FieldType::START_MARKER.value_len(), Some(0));
    assert_eq!(FieldType::DISCARD.value_len(), Some(0));
    assert_eq!(FieldType::DEVICE_STATUS.value_len(), Some(1));
    assert_eq!(FieldType::CONFIG_GENERATION.value_len(), Some(1));
    assert_eq!(FieldType::BLK_WRITEBACK.value_len(), Some(1));
    assert_eq!(FieldType::PCI_COMMON_CFG.value_len(), Some(8));
    assert_eq!(FieldType::VQ_CONFIG.value_len(), Some(32));
    assert_eq!(FieldType::VQ_STATE.value_len(), Some(8));
    assert_eq!(FieldType::DEVICE_FEATURES.value_len(), None);
    assert_eq!(FieldType::VQ_INFLIGHT.value_len(), None);
    assert_eq!(FieldType::NET_MAC_TABLE.value_len(), None);
}

/// spec-decisions §5: "value padded to 8 bytes; length excludes padding".
#[test]
fn padding() {
    for (len, padded) in [(0, 0), (1, 8), (8, 8), (9, 16), (32, 32)] {
        assert_eq!(padded_len(len), padded, "length {len}");
    }
    const _: () = assert!(padded_len(7) == 8);
}

/// spec-decisions §5: PCI_COMMON_CFG "`le16 config_msix_vector; le16
/// num_queues; le16 reserved[2]`".
#[test]
fn pci_common_cfg_field_layout() {
    assert_layout!(PciCommonCfgField, 8; config_msix_vector @ 0, num_queues @ 2, reserved @ 4);
}

/// spec-decisions §5: VQ_CONFIG "`le16 index; le16 size; le16 msix_vector; le16
/// enabled; le64 desc; le64 driver; le64 device`".
#[test]
fn vq_config_field_layout() {
    assert_layout!(VqConfigField, 32;
        index @ 0, size @ 2, msix_vector @ 4, enabled @ 6, desc @ 8, driver @ 16, device @ 24);
}

/// spec-decisions §5: VQ_STATE "`le16 index; le16 avail_state; le16 used_state;
/// le16 flags` (... flags bit 0 = a used-buffer notification is owed)".
#[test]
fn vq_state_field_layout() {
    assert_layout!(VqStateField, 8; index @ 0, avail_state @ 2, used_state @ 4, flags @ 6);
    assert_eq!(VQ_STATE_F_NOTIFY_OWED, 1);
}

/// spec-decisions §5: VQ_INFLIGHT "`le16 index; le16 count; le16 reserved[2];
/// le16 heads[count]`" — an 8-byte header before the heads.
#[test]
fn vq_inflight_header_layout() {
    assert_layout!(VqInflightHeader, 8; index @ 0, count @ 2, reserved @ 4);
}

/// Value structs serialise little-endian at their offsets and read back.
#[test]
fn value_struct_bytes() {
    let c = VqConfigField {
        index: U16::new(1),
        size: U16::new(0x0100),
        msix_vector: U16::new(0xffff),
        enabled: U16::new(1),
        desc: U64::new(0x1122_3344_5566_7788),
        driver: U64::new(0x2000),
        device: U64::new(0x3000),
    };
    let mut wire = [0u8; 32];
    wire[..8].copy_from_slice(&[1, 0, 0x00, 0x01, 0xff, 0xff, 1, 0]);
    wire[8..16].copy_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    wire[16..18].copy_from_slice(&[0x00, 0x20]);
    wire[24..26].copy_from_slice(&[0x00, 0x30]);
    assert_wire(&c, &wire);

    let s = VqStateField {
        index: U16::new(2),
        avail_state: U16::new(0x8005),
        used_state: U16::new(0x0004),
        flags: U16::new(VQ_STATE_F_NOTIFY_OWED),
    };
    assert_wire(&s, &[2, 0, 0x05, 0x80, 0x04, 0x00, 1, 0]);

    let p = PciCommonCfgField {
        config_msix_vector: U16::new(0x1234),
        num_queues: U16::new(3),
        reserved: [U16::ZERO; 2],
    };
    assert_wire(&p, &[0x34, 0x12, 3, 0, 0, 0, 0, 0]);

    let i = VqInflightHeader {
        index: U16::new(0x0102),
        count: U16::new(3),
        reserved: [U16::ZERO; 2],
    };
    assert_wire(&i, &[0x02, 0x01, 3, 0, 0, 0, 0, 0]);
}
