//! Discovering a virtio-pci function's regions from its PCI capability list.

use virtio_lm_spec::pci::{
    offset, PciCap, PciNotifyCap, COMMON_CONFIG_LEN_V1_4, PCI_CAP_ID_VNDR,
    VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG,
    VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};
use zerocopy::FromBytes;

use crate::error::PciError;
use crate::layout::{BAR, CAP_POINTER, PCI_STATUS_CAP_LIST};
use crate::transport::PciTransport;

/// One region of BAR 0 as a capability describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Offset in BAR 0.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// Where a function's virtio structures are, as its capability list says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regions {
    /// PCI device id (0x1040 + virtio device type).
    pub device_id: u16,
    /// Common configuration.
    pub common: Region,
    /// ISR status.
    pub isr: Region,
    /// Device-specific configuration, if the function has any.
    pub device: Option<Region>,
    /// Notification area.
    pub notify: Region,
    /// A queue's notify address is `notify.offset + queue_notify_off * notify_off_multiplier`.
    pub notify_off_multiplier: u32,
}

impl Regions {
    /// The virtio device type (device id − 0x1040).
    pub fn device_type(&self) -> u32 {
        u32::from(self.device_id - VIRTIO_PCI_DEVICE_ID_BASE)
    }

    /// Writes the 64 driver feature bits through the common configuration's select/value pair,
    /// low word first: what every driver does between DRIVER and FEATURES_OK, whether it
    /// negotiates afresh or re-initialises a migrated device with the features it had.
    pub fn write_driver_features(&self, transport: &dyn PciTransport, features: u64) {
        let at = |field: usize| self.common.offset + field as u64;
        for (select, word) in [(0u32, features as u32), (1, (features >> 32) as u32)] {
            transport.write(at(offset::DRIVER_FEATURE_SELECT), &select.to_le_bytes());
            transport.write(at(offset::DRIVER_FEATURE), &word.to_le_bytes());
        }
    }
}

fn read_u16(transport: &dyn PciTransport, offset: u16) -> u16 {
    let mut b = [0u8; 2];
    transport.config_read(offset, &mut b);
    u16::from_le_bytes(b)
}

/// Longest list walked: 256 bytes of configuration space hold at most 48 capabilities past the
/// header, so a longer walk is a loop.
const MAX_CAPS: usize = 48;

/// Reads the function's PCI configuration space and finds the virtio regions: the first
/// capability of each `cfg_type` whose BAR the transport reaches (BAR 0) wins, as the spec lets
/// a driver use the first one it supports.
pub fn discover(transport: &dyn PciTransport) -> Result<Regions, PciError> {
    if read_u16(transport, 0x00) != VIRTIO_PCI_VENDOR_ID {
        return Err(PciError::NotVirtio("vendor id is not 0x1af4"));
    }
    let device_id = read_u16(transport, 0x02);
    if !(VIRTIO_PCI_DEVICE_ID_BASE..=0x107f).contains(&device_id) {
        return Err(PciError::NotVirtio(
            "device id is not a modern virtio id (0x1040..=0x107f)",
        ));
    }
    if read_u16(transport, 0x06) & PCI_STATUS_CAP_LIST == 0 {
        return Err(PciError::NotVirtio("no capability list"));
    }
    let mut pointer = [0u8; 1];
    transport.config_read(CAP_POINTER as u16, &mut pointer);
    let mut at = pointer[0] & !3;
    let (mut common, mut isr, mut device, mut notify) = (None, None, None, None);
    let mut walked = 0;
    while at != 0 {
        walked += 1;
        if walked > MAX_CAPS || at < 0x40 {
            return Err(PciError::BadCapability(
                "capability list loops or points into the header",
            ));
        }
        let mut header = [0u8; 3];
        transport.config_read(u16::from(at), &mut header);
        let [id, next, len] = header;
        if id == PCI_CAP_ID_VNDR {
            if usize::from(len) < core::mem::size_of::<PciCap>() {
                return Err(PciError::BadCapability(
                    "vendor capability shorter than 16 bytes",
                ));
            }
            let mut raw = [0u8; core::mem::size_of::<PciNotifyCap>()];
            transport.config_read(u16::from(at), &mut raw);
            let (cap, _) = PciCap::read_from_prefix(&raw)
                .map_err(|_| PciError::BadCapability("unreadable capability"))?;
            let region = Region {
                offset: u64::from(cap.offset.get()),
                length: cap.length.get(),
            };
            if cap.bar == BAR {
                match cap.cfg_type {
                    VIRTIO_PCI_CAP_COMMON_CFG => {
                        common = common.or(Some(region));
                    }
                    VIRTIO_PCI_CAP_ISR_CFG => isr = isr.or(Some(region)),
                    VIRTIO_PCI_CAP_DEVICE_CFG => device = device.or(Some(region)),
                    VIRTIO_PCI_CAP_NOTIFY_CFG if notify.is_none() => {
                        if usize::from(len) < raw.len() {
                            return Err(PciError::BadCapability(
                                "notify capability shorter than 20 bytes",
                            ));
                        }
                        let cap = PciNotifyCap::read_from_bytes(&raw)
                            .map_err(|_| PciError::BadCapability("unreadable capability"))?;
                        notify = Some((region, cap.notify_off_multiplier.get()));
                    }
                    _ => {}
                }
            }
        }
        at = next & !3;
    }
    let common = common.ok_or(PciError::MissingCapability(VIRTIO_PCI_CAP_COMMON_CFG))?;
    if (common.length as usize) < COMMON_CONFIG_LEN_V1_4 {
        return Err(PciError::BadCapability(
            "common configuration shorter than 64 bytes",
        ));
    }
    let isr = isr.ok_or(PciError::MissingCapability(VIRTIO_PCI_CAP_ISR_CFG))?;
    let (notify, notify_off_multiplier) =
        notify.ok_or(PciError::MissingCapability(VIRTIO_PCI_CAP_NOTIFY_CFG))?;
    Ok(Regions {
        device_id,
        common,
        isr,
        device,
        notify,
        notify_off_multiplier,
    })
}
