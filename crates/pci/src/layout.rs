//! Where everything lives: the BAR layout, the virtio capability list and the PCI configuration
//! space that carries it.

use virtio_lm_spec::pci::{
    PciCap, PciNotifyCap, COMMON_CONFIG_LEN, PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_COMMON_CFG,
    VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
    VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

/// The BAR every region lives in.
pub const BAR: u8 = 0;
/// Common configuration region offset in the BAR.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status region offset.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device-specific configuration region offset.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Notification region offset.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Size of each region's window (one page).
pub const REGION_SIZE: u64 = 0x1000;
/// Size of the BAR.
pub const BAR_SIZE: u64 = 0x4000;
/// A queue's notify address is `NOTIFY_OFFSET + queue_notify_off * NOTIFY_OFF_MULTIPLIER`.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Length of the ISR region advertised in its capability.
pub const ISR_LEN: u32 = 1;
/// Length of the device-specific configuration region advertised in its capability (the core
/// does not report a config length; bytes past the device's config read 0).
pub const DEVICE_CFG_LEN: u32 = REGION_SIZE as u32;

/// Size of the PCI configuration space modelled.
pub const CONFIG_SPACE_LEN: usize = 256;
/// Offset of the capabilities pointer in the PCI configuration header.
pub const CAP_POINTER: usize = 0x34;
/// Offset of the first capability.
pub const FIRST_CAP: usize = 0x40;
/// PCI status register bit: the function has a capability list.
pub const PCI_STATUS_CAP_LIST: u16 = 0x10;
/// PCI revision id of a modern virtio function (spec: 1 or higher).
pub const VIRTIO_PCI_REVISION: u8 = 1;

/// One virtio vendor capability as it appears in configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioCap {
    /// `struct virtio_pci_cap` (common, ISR, device-specific configuration).
    Plain(PciCap),
    /// `struct virtio_pci_notify_cap`.
    Notify(PciNotifyCap),
}

impl VirtioCap {
    /// The capability header.
    pub fn header(&self) -> &PciCap {
        match self {
            VirtioCap::Plain(cap) => cap,
            VirtioCap::Notify(cap) => &cap.cap,
        }
    }

    /// The capability's bytes (16, or 20 for the notify capability).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            VirtioCap::Plain(cap) => cap.as_bytes().to_vec(),
            VirtioCap::Notify(cap) => cap.as_bytes().to_vec(),
        }
    }
}

fn cap(cfg_type: u8, offset: u64, length: u32, cap_len: u8) -> PciCap {
    PciCap {
        cap_vndr: PCI_CAP_ID_VNDR,
        cap_next: 0,
        cap_len,
        cfg_type,
        bar: BAR,
        id: 0,
        padding: [0; 2],
        offset: U32::new(offset as u32),
        length: U32::new(length),
    }
}

/// The virtio capabilities of a function with `num_queues` queues, in configuration-space
/// order: common, notify, ISR and device-specific configuration, all in BAR 0. `cap_next` holds
/// the configuration-space offset of the following capability (the first sits at
/// [`FIRST_CAP`]; 0 ends the list).
pub fn capabilities(num_queues: u16) -> Vec<VirtioCap> {
    let plain_len = core::mem::size_of::<PciCap>() as u8;
    let notify_len = core::mem::size_of::<PciNotifyCap>() as u8;
    // Every queue's notify address plus a 32-bit notification (NOTIFICATION_DATA) fits.
    let notify_length = u32::from(num_queues.max(1)) * NOTIFY_OFF_MULTIPLIER;
    let mut caps = vec![
        VirtioCap::Plain(cap(
            VIRTIO_PCI_CAP_COMMON_CFG,
            COMMON_OFFSET,
            COMMON_CONFIG_LEN as u32,
            plain_len,
        )),
        VirtioCap::Notify(PciNotifyCap {
            cap: cap(
                VIRTIO_PCI_CAP_NOTIFY_CFG,
                NOTIFY_OFFSET,
                notify_length,
                notify_len,
            ),
            notify_off_multiplier: U32::new(NOTIFY_OFF_MULTIPLIER),
        }),
        VirtioCap::Plain(cap(VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, ISR_LEN, plain_len)),
        VirtioCap::Plain(cap(
            VIRTIO_PCI_CAP_DEVICE_CFG,
            DEVICE_OFFSET,
            DEVICE_CFG_LEN,
            plain_len,
        )),
    ];
    let mut at = FIRST_CAP;
    let count = caps.len();
    for (i, cap) in caps.iter_mut().enumerate() {
        let header = match cap {
            VirtioCap::Plain(cap) => cap,
            VirtioCap::Notify(cap) => &mut cap.cap,
        };
        at += usize::from(header.cap_len);
        header.cap_next = if i + 1 < count { at as u8 } else { 0 };
    }
    caps
}

/// The PCI configuration space of the function: vendor 0x1af4, device 0x1040 + `device_type`,
/// revision 1, subsystem ids, the capability-list status bit, and `caps` (as
/// [`capabilities`] links them) placed one after another from [`FIRST_CAP`].
pub fn config_space(device_type: u32, caps: &[VirtioCap]) -> [u8; CONFIG_SPACE_LEN] {
    let mut space = [0u8; CONFIG_SPACE_LEN];
    let device_id = VIRTIO_PCI_DEVICE_ID_BASE.wrapping_add(device_type as u16);
    space[0x00..0x02].copy_from_slice(U16::new(VIRTIO_PCI_VENDOR_ID).as_bytes());
    space[0x02..0x04].copy_from_slice(U16::new(device_id).as_bytes());
    space[0x06..0x08].copy_from_slice(U16::new(PCI_STATUS_CAP_LIST).as_bytes());
    space[0x08] = VIRTIO_PCI_REVISION;
    // Class: "other" (0xff); virtio leaves the class to the device type.
    space[0x0b] = 0xff;
    space[0x2c..0x2e].copy_from_slice(U16::new(VIRTIO_PCI_VENDOR_ID).as_bytes());
    space[0x2e..0x30].copy_from_slice(U16::new(device_id).as_bytes());
    let mut at = FIRST_CAP;
    space[CAP_POINTER] = if caps.is_empty() { 0 } else { at as u8 };
    for cap in caps {
        let bytes = cap.to_bytes();
        let next = at + bytes.len();
        space[at..next].copy_from_slice(&bytes);
        at = next;
    }
    space
}

/// Length of `struct virtio_pci_cfg_cap`: the 16-byte header and `u8 pci_cfg_data[4]`.
pub const PCI_CFG_CAP_LEN: usize = 20;
/// Offset of `pci_cfg_data` in the PCI_CFG capability.
pub const PCI_CFG_DATA: usize = 16;

/// The bytes of a VIRTIO_PCI_CAP_PCI_CFG capability (`struct virtio_pci_cfg_cap`) with
/// `cap_next` 0: the alternative access to BAR 0 through configuration space. The driver writes
/// `bar`, `offset` and `length`, then reads or writes `pci_cfg_data`.
pub fn pci_cfg_cap() -> [u8; PCI_CFG_CAP_LEN] {
    let header = cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, PCI_CFG_CAP_LEN as u8);
    let mut bytes = [0u8; PCI_CFG_CAP_LEN];
    bytes[..PCI_CFG_DATA].copy_from_slice(header.as_bytes());
    bytes
}
