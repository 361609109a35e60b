//! Virtio over PCI: common configuration layout and capability constants.
//!
//! [`CommonConfig`] is the published 1.4 layout (offsets 0-63) extended with
//! this project's seed-001 queue state registers at 64 and 66, because every
//! 16-bit slot below 64 is already taken (spec-decisions §3, virtio 1.4 "Common configuration structure layout" (virtio-pci)).

use zerocopy::little_endian::{U16, U32, U64};

/// PCI vendor id of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern (non-transitional) device id = this base + virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// PCI capability id of vendor-specific capabilities, which virtio uses.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;

/// `cfg_type` of the common configuration capability.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type` of the notification capability.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type` of the ISR status capability.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type` of the device-specific configuration capability.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type` of the PCI configuration access capability.
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// ISR status bit 0: a virtqueue has a used-buffer notification.
pub const VIRTIO_PCI_ISR_QUEUE: u8 = 1;
/// ISR status bit 1: the configuration changed (also sent after NEEDS_RESET).
pub const VIRTIO_PCI_ISR_CONFIG: u8 = 2;

/// MSI-X vector value meaning "no vector".
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// Length of [`CommonConfig`] including the queue state registers.
pub const COMMON_CONFIG_LEN: usize = 68;
/// Length of the published 1.4 common configuration (no queue state).
pub const COMMON_CONFIG_LEN_V1_4: usize = 64;

/// Byte offsets of every [`CommonConfig`] field, for register decoding (the numbers are pinned
/// by this module's tests).
pub mod offset {
    use core::mem::offset_of;

    type C = super::CommonConfig;

    /// `le32 device_feature_select`.
    pub const DEVICE_FEATURE_SELECT: usize = offset_of!(C, device_feature_select);
    /// `le32 device_feature` (read-only).
    pub const DEVICE_FEATURE: usize = offset_of!(C, device_feature);
    /// `le32 driver_feature_select`.
    pub const DRIVER_FEATURE_SELECT: usize = offset_of!(C, driver_feature_select);
    /// `le32 driver_feature`.
    pub const DRIVER_FEATURE: usize = offset_of!(C, driver_feature);
    /// `le16 config_msix_vector`.
    pub const CONFIG_MSIX_VECTOR: usize = offset_of!(C, config_msix_vector);
    /// `le16 num_queues` (read-only, excludes admin queues).
    pub const NUM_QUEUES: usize = offset_of!(C, num_queues);
    /// `u8 device_status`.
    pub const DEVICE_STATUS: usize = offset_of!(C, device_status);
    /// `u8 config_generation` (read-only).
    pub const CONFIG_GENERATION: usize = offset_of!(C, config_generation);
    /// `le16 queue_select`.
    pub const QUEUE_SELECT: usize = offset_of!(C, queue_select);
    /// `le16 queue_size`.
    pub const QUEUE_SIZE: usize = offset_of!(C, queue_size);
    /// `le16 queue_msix_vector`.
    pub const QUEUE_MSIX_VECTOR: usize = offset_of!(C, queue_msix_vector);
    /// `le16 queue_enable`.
    pub const QUEUE_ENABLE: usize = offset_of!(C, queue_enable);
    /// `le16 queue_notify_off` (read-only).
    pub const QUEUE_NOTIFY_OFF: usize = offset_of!(C, queue_notify_off);
    /// `le64 queue_desc`.
    pub const QUEUE_DESC: usize = offset_of!(C, queue_desc);
    /// `le64 queue_driver`.
    pub const QUEUE_DRIVER: usize = offset_of!(C, queue_driver);
    /// `le64 queue_device`.
    pub const QUEUE_DEVICE: usize = offset_of!(C, queue_device);
    /// `le16 queue_notif_config_data` (read-only; NOTIF_CONFIG_DATA).
    pub const QUEUE_NOTIF_CONFIG_DATA: usize = offset_of!(C, queue_notif_config_data);
    /// `le16 queue_reset` (RING_RESET).
    pub const QUEUE_RESET: usize = offset_of!(C, queue_reset);
    /// `le16 admin_queue_index` (read-only; ADMIN_VQ).
    pub const ADMIN_QUEUE_INDEX: usize = offset_of!(C, admin_queue_index);
    /// `le16 admin_queue_num` (read-only; ADMIN_VQ).
    pub const ADMIN_QUEUE_NUM: usize = offset_of!(C, admin_queue_num);
    /// `le16 queue_avail_state` (ours; QUEUE_STATE, seeds profile).
    pub const QUEUE_AVAIL_STATE: usize = offset_of!(C, queue_avail_state);
    /// `le16 queue_used_state` (ours; QUEUE_STATE, seeds profile).
    pub const QUEUE_USED_STATE: usize = offset_of!(C, queue_used_state);
}

wire_struct! {
    /// `struct virtio_pci_common_cfg` plus the queue state registers (68 bytes).
    ///
    /// The little-endian field types have alignment 1, so `repr(C)` adds no
    /// padding and the `le64` fields land on the spec offsets.
    pub struct CommonConfig {
        /// Selects which 32-bit word `device_feature` shows.
        pub device_feature_select: U32,
        /// The selected word of the device's feature bits.
        pub device_feature: U32,
        /// Selects which 32-bit word `driver_feature` accesses.
        pub driver_feature_select: U32,
        /// The selected word of the driver's accepted feature bits.
        pub driver_feature: U32,
        /// MSI-X vector for configuration change notifications.
        pub config_msix_vector: U16,
        /// Number of (non-admin) virtqueues.
        pub num_queues: U16,
        /// The device status byte.
        pub device_status: u8,
        /// Changes whenever the device configuration changes.
        pub config_generation: u8,
        /// Selects the virtqueue the `queue_*` fields refer to.
        pub queue_select: U16,
        /// Size of the selected queue.
        pub queue_size: U16,
        /// MSI-X vector of the selected queue.
        pub queue_msix_vector: U16,
        /// 1 once the driver enables the selected queue.
        pub queue_enable: U16,
        /// Notification offset of the selected queue.
        pub queue_notify_off: U16,
        /// Descriptor area address of the selected queue.
        pub queue_desc: U64,
        /// Driver area address of the selected queue.
        pub queue_driver: U64,
        /// Device area address of the selected queue.
        pub queue_device: U64,
        /// Data the driver passes in notifications (NOTIF_CONFIG_DATA).
        pub queue_notif_config_data: U16,
        /// Per-queue reset (RING_RESET).
        pub queue_reset: U16,
        /// First admin queue index (ADMIN_VQ).
        pub admin_queue_index: U16,
        /// Number of admin queues (ADMIN_VQ).
        pub admin_queue_num: U16,
        /// Seed-001 available state of the selected queue (QUEUE_STATE).
        pub queue_avail_state: U16,
        /// Seed-001 used state of the selected queue (QUEUE_STATE, packed only).
        pub queue_used_state: U16,
    }
}

wire_struct! {
    /// `struct virtio_pci_cap`: the vendor-specific capability header (16 bytes).
    pub struct PciCap {
        /// [`PCI_CAP_ID_VNDR`].
        pub cap_vndr: u8,
        /// Offset of the next capability in config space.
        pub cap_next: u8,
        /// Length of this capability structure.
        pub cap_len: u8,
        /// One of the `VIRTIO_PCI_CAP_*_CFG` values.
        pub cfg_type: u8,
        /// BAR holding the structure.
        pub bar: u8,
        /// Distinguishes multiple capabilities of one type.
        pub id: u8,
        /// Padding.
        pub padding: [u8; 2],
        /// Offset of the structure within the BAR.
        pub offset: U32,
        /// Length of the structure within the BAR.
        pub length: U32,
    }
}

wire_struct! {
    /// `struct virtio_pci_notify_cap`: [`PciCap`] plus the notify offset
    /// multiplier (20 bytes).
    pub struct PciNotifyCap {
        /// The common capability header.
        pub cap: PciCap,
        /// A queue's notify address is `offset + queue_notify_off * multiplier`.
        pub notify_off_multiplier: U32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout_tests::assert_wire;
    use core::mem::{align_of, offset_of, size_of};
    use zerocopy::{FromBytes, IntoBytes};

    /// virtio 1.4 "Common configuration structure layout" (virtio-pci) table (offsets 0-62) plus spec-decisions §3 "`le16
    /// queue_avail_state` at common-config offset 64 and `le16
    /// queue_used_state` at 66": every field offset, both through
    /// `offset_of!` and the `offset` constants.
    #[test]
    fn common_config_offsets() {
        macro_rules! pin {
            ($field:ident, $konst:ident, $off:expr) => {
                assert_eq!(offset_of!(CommonConfig, $field), $off, stringify!($field));
                assert_eq!(offset::$konst, $off, stringify!($konst));
            };
        }
        pin!(device_feature_select, DEVICE_FEATURE_SELECT, 0);
        pin!(device_feature, DEVICE_FEATURE, 4);
        pin!(driver_feature_select, DRIVER_FEATURE_SELECT, 8);
        pin!(driver_feature, DRIVER_FEATURE, 12);
        pin!(config_msix_vector, CONFIG_MSIX_VECTOR, 16);
        pin!(num_queues, NUM_QUEUES, 18);
        pin!(device_status, DEVICE_STATUS, 20);
        pin!(config_generation, CONFIG_GENERATION, 21);
        pin!(queue_select, QUEUE_SELECT, 22);
        pin!(queue_size, QUEUE_SIZE, 24);
        pin!(queue_msix_vector, QUEUE_MSIX_VECTOR, 26);
        pin!(queue_enable, QUEUE_ENABLE, 28);
        pin!(queue_notify_off, QUEUE_NOTIFY_OFF, 30);
        pin!(queue_desc, QUEUE_DESC, 32);
        pin!(queue_driver, QUEUE_DRIVER, 40);
        pin!(queue_device, QUEUE_DEVICE, 48);
        pin!(queue_notif_config_data, QUEUE_NOTIF_CONFIG_DATA, 56);
        pin!(queue_reset, QUEUE_RESET, 58);
        pin!(admin_queue_index, ADMIN_QUEUE_INDEX, 60);
        pin!(admin_queue_num, ADMIN_QUEUE_NUM, 62);
        pin!(queue_avail_state, QUEUE_AVAIL_STATE, 64);
        pin!(queue_used_state, QUEUE_USED_STATE, 66);
    }

    /// 68 bytes, alignment 1: no padding anywhere; the published layout ends
    /// at 64 (virtio 1.4 "Common configuration structure layout" (virtio-pci) "64 | end").
    #[test]
    fn common_config_size() {
        assert_eq!(size_of::<CommonConfig>(), COMMON_CONFIG_LEN);
        assert_eq!(COMMON_CONFIG_LEN, 68);
        assert_eq!(align_of::<CommonConfig>(), 1);
        assert_eq!(COMMON_CONFIG_LEN_V1_4, offset::QUEUE_AVAIL_STATE);
    }

    /// Fields serialise little-endian at their offsets and read back.
    #[test]
    fn common_config_bytes() {
        let cfg = CommonConfig {
            device_feature: U32::new(0x1122_3344),
            num_queues: U16::new(0x1234),
            device_status: 0x0f,
            config_generation: 7,
            queue_desc: U64::new(0x0102_0304_0506_0708),
            admin_queue_num: U16::new(1),
            queue_used_state: U16::new(0x8001),
            ..CommonConfig::default()
        };
        let b = cfg.as_bytes();
        assert_eq!(b.len(), 68);
        assert_eq!(b[4..8], [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(b[18..20], [0x34, 0x12]);
        assert_eq!(b[20..22], [0x0f, 7]);
        assert_eq!(b[32..40], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b[62..64], [1, 0]);
        assert_eq!(b[66..68], [0x01, 0x80]);
        assert_eq!(CommonConfig::read_from_bytes(b).unwrap(), cfg);
        assert!(CommonConfig::read_from_bytes(&b[..64]).is_err());
    }

    /// PCI ids and capability constants per the virtio PCI transport.
    #[test]
    fn pci_constants() {
        assert_eq!(VIRTIO_PCI_VENDOR_ID, 0x1af4);
        assert_eq!(VIRTIO_PCI_DEVICE_ID_BASE, 0x1040);
        assert_eq!(VIRTIO_MSI_NO_VECTOR, 0xffff);
        assert_eq!(
            [
                VIRTIO_PCI_CAP_COMMON_CFG,
                VIRTIO_PCI_CAP_NOTIFY_CFG,
                VIRTIO_PCI_CAP_ISR_CFG,
                VIRTIO_PCI_CAP_DEVICE_CFG,
                VIRTIO_PCI_CAP_PCI_CFG
            ],
            [1, 2, 3, 4, 5]
        );
        assert_eq!((VIRTIO_PCI_ISR_QUEUE, VIRTIO_PCI_ISR_CONFIG), (1, 2));
    }

    /// `struct virtio_pci_cap` is 16 bytes with `offset` at 8 and `length`
    /// at 12; the notify capability appends a le32 multiplier at 16.
    #[test]
    fn capability_layout() {
        assert_layout!(PciCap, 16; cap_vndr @ 0, cap_next @ 1, cap_len @ 2, cfg_type @ 3,
            bar @ 4, id @ 5, padding @ 6, offset @ 8, length @ 12);
        assert_layout!(PciNotifyCap, 20; cap @ 0, notify_off_multiplier @ 16);
        let cap = PciCap {
            cap_vndr: PCI_CAP_ID_VNDR,
            cap_len: 16,
            cfg_type: VIRTIO_PCI_CAP_COMMON_CFG,
            offset: U32::new(0x1000),
            length: U32::new(COMMON_CONFIG_LEN as u32),
            ..PciCap::default()
        };
        assert_wire(
            &cap,
            &[9, 0, 16, 1, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 68, 0, 0, 0],
        );
    }
}
