//! Virtio 1.4 device parts and their prerequisites: capabilities, resource objects, the
//! device-parts commands and part types (spec-decisions §16 and §17). Opcodes are in
//! [`crate::admin::opcode::v1_4`].
//!
//! A part on the wire is a [`DevPartHdr`] followed by `length` value bytes. Device-type part
//! types live in 0x0200–0x05FF and mean different things per device type: net's
//! [`NET_CVQ_CFG`] carries control-queue commands, and blk's [`BLK_WRITEBACK`] and
//! [`BLK_CAPACITY`] are this project's optional extension (spec-decisions §17), as is net's
//! [`NET_ANNOUNCE_PENDING`] (§28).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VIRTIO_ADMIN_STATUS_EEXIST`: used by the resource-object rules but missing from the status
/// table; the Linux errno, as other implementations use (spec-decisions §17).
pub const STATUS_EEXIST: u16 = 17;

/// Capability id of the device-parts capability ([`DevPartsCap`]).
pub const DEV_PARTS_CAP: u16 = 0x0000;

/// Resource object type of a device-parts object ([`DevPartsObj`]).
pub const RESOURCE_OBJ_DEV_PARTS: u16 = 0x0000;
/// A device-parts object for DEV_PARTS_METADATA_GET and DEV_PARTS_GET.
pub const DEV_PARTS_TYPE_GET: u8 = 0;
/// A device-parts object for DEV_PARTS_SET.
pub const DEV_PARTS_TYPE_SET: u8 = 1;

/// DEV_PARTS_METADATA_GET `type`: the total size of all parts.
pub const METADATA_TYPE_SIZE: u8 = 0;
/// DEV_PARTS_METADATA_GET `type`: the number of part headers.
pub const METADATA_TYPE_COUNT: u8 = 1;
/// DEV_PARTS_METADATA_GET `type`: the part headers.
pub const METADATA_TYPE_LIST: u8 = 2;

/// DEV_PARTS_GET `type`: the parts whose headers follow the command data.
pub const GET_TYPE_SELECTED: u8 = 0;
/// DEV_PARTS_GET `type`: every part.
pub const GET_TYPE_ALL: u8 = 1;

/// DEV_MODE_SET `flags` value that stops the device (bit 0, `..._DEV_MODE_F_STOPPED`).
pub const DEV_MODE_FLAGS_STOPPED: u8 = 1 << 0;

/// Part flag `VIRTIO_DEV_PART_F_OPTIONAL` (bit 0) as a mask.
pub const PART_F_OPTIONAL: u8 = 1 << 0;

/// Part types common to every device type.
pub mod part_type {
    /// `VIRTIO_DEV_PART_DEV_FEATURES`: `le64 feature_bits[]`; verified on SET, never applied.
    pub const DEV_FEATURES: u16 = 0x100;
    /// `VIRTIO_DEV_PART_DRV_FEATURES`: `le64 feature_bits[]`.
    pub const DRV_FEATURES: u16 = 0x101;
    /// `VIRTIO_DEV_PART_PCI_COMMON_CFG`: one field of the common configuration, selected by
    /// its offset.
    pub const PCI_COMMON_CFG: u16 = 0x102;
    /// `VIRTIO_DEV_PART_DEVICE_STATUS`: `u8 device_status`.
    pub const DEVICE_STATUS: u16 = 0x103;
    /// `VIRTIO_DEV_PART_VQ_CFG`: [`super::VqCfg`], selected by queue index.
    pub const VQ_CFG: u16 = 0x104;
    /// `VIRTIO_DEV_PART_VQ_NOTIFY_CFG`: [`super::VqNotifyCfg`], selected by queue index.
    pub const VQ_NOTIFY_CFG: u16 = 0x105;
}

/// Net `VIRTIO_NET_DEV_PART_CVQ_CFG_PART`: one control-queue command's data, selected by
/// `u8 class; u8 command` ([`DevPartHdr::cvq_selector`]).
pub const NET_CVQ_CFG: u16 = 0x200;
/// Project extension for blk (spec-decisions §17): `u8 writeback`, always OPTIONAL.
pub const BLK_WRITEBACK: u16 = 0x200;
/// Project extension for blk (spec-decisions §17): `le64 capacity`, always OPTIONAL; validated
/// on SET, never applied.
pub const BLK_CAPACITY: u16 = 0x201;
/// Project extension for net (spec-decisions §28): `u8 pending`, 1 while an announcement
/// waits for the driver's ANNOUNCE_ACK; always OPTIONAL. At the top of net's range, away from
/// the types the spec assigns upwards from 0x200.
pub const NET_ANNOUNCE_PENDING: u16 = 0x5ff;

/// The position of a common part type in the required order (DEV_FEATURES first); device-type
/// parts come after every common part, in type order.
pub fn order_rank(part_type: u16) -> u32 {
    match part_type {
        part_type::DEV_FEATURES => 0,
        part_type::DRV_FEATURES => 1,
        part_type::PCI_COMMON_CFG => 2,
        part_type::DEVICE_STATUS => 3,
        part_type::VQ_CFG => 4,
        part_type::VQ_NOTIFY_CFG => 5,
        other => 6 + u32::from(other),
    }
}

/// `struct virtio_dev_parts_cap` (DEVICE_CAP_GET / DRIVER_CAP_SET of [`DEV_PARTS_CAP`]).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DevPartsCap {
    /// How many GET objects may exist at once.
    pub get_parts_resource_objects_limit: u8,
    /// How many SET objects may exist at once.
    pub set_parts_resource_objects_limit: u8,
}

/// `struct virtio_admin_cmd_cap_get_data` and the head of `cap_set_data`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct CapIdData {
    /// The capability id.
    pub id: U16,
    /// Zero.
    pub reserved: [u8; 6],
}

impl CapIdData {
    /// The data naming capability `id`.
    pub const fn new(id: u16) -> Self {
        Self {
            id: U16::new(id),
            reserved: [0; 6],
        }
    }
}

/// `struct virtio_admin_cmd_resource_obj_cmd_hdr` (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct ResourceObjHdr {
    /// The resource object type ([`RESOURCE_OBJ_DEV_PARTS`]).
    pub obj_type: U16,
    /// Zero.
    pub reserved: [u8; 2],
    /// The driver-chosen object id, below the capability's limit.
    pub id: U32,
}

impl ResourceObjHdr {
    /// A device-parts object header for object `id`.
    pub const fn dev_parts(id: u32) -> Self {
        Self {
            obj_type: U16::new(RESOURCE_OBJ_DEV_PARTS),
            reserved: [0; 2],
            id: U32::new(id),
        }
    }
}

/// RESOURCE_OBJ_CREATE / MODIFY data of a device-parts object: header, `le64 flags`, then
/// `struct virtio_resource_obj_dev_parts`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DevPartsObjData {
    /// The object.
    pub hdr: ResourceObjHdr,
    /// Zero.
    pub flags: U64,
    /// The object-specific data.
    pub obj: DevPartsObj,
}

/// `struct virtio_resource_obj_dev_parts`: what RESOURCE_OBJ_QUERY returns.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DevPartsObj {
    /// [`DEV_PARTS_TYPE_GET`] or [`DEV_PARTS_TYPE_SET`].
    pub obj_type: u8,
    /// Zero.
    pub reserved: [u8; 7],
}

impl DevPartsObjData {
    /// The data creating (or modifying) device-parts object `id` of `obj_type`.
    pub const fn new(id: u32, obj_type: u8) -> Self {
        Self {
            hdr: ResourceObjHdr::dev_parts(id),
            flags: U64::new(0),
            obj: DevPartsObj {
                obj_type,
                reserved: [0; 7],
            },
        }
    }
}

/// DEV_PARTS_METADATA_GET data and the head of DEV_PARTS_GET data: object header, `u8 type`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DevPartsTypedData {
    /// The device-parts object.
    pub hdr: ResourceObjHdr,
    /// A `METADATA_TYPE_*` or `GET_TYPE_*` value.
    pub kind: u8,
    /// Zero.
    pub reserved: [u8; 7],
}

impl DevPartsTypedData {
    /// The data for object `id` and request `kind`.
    pub const fn new(id: u32, kind: u8) -> Self {
        Self {
            hdr: ResourceObjHdr::dev_parts(id),
            kind,
            reserved: [0; 7],
        }
    }
}

/// The 8-byte head of every DEV_PARTS_METADATA_GET result: a size or a count.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct MetadataHead {
    /// The size (SIZE) or the number of headers (COUNT, LIST).
    pub value: U32,
    /// Zero.
    pub reserved: U32,
}

/// `struct virtio_dev_part_hdr` (16 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct DevPartHdr {
    /// The part type.
    pub part_type: U16,
    /// [`PART_F_OPTIONAL`]; other bits zero.
    pub flags: u8,
    /// Zero.
    pub reserved: u8,
    /// PCI_COMMON_CFG: `le32 offset; le32 reserved`; VQ parts: `le16 index; u8 reserved[6]`;
    /// device-type parts: raw.
    pub selector: [u8; 8],
    /// Bytes of value following the header.
    pub length: U32,
}

impl DevPartHdr {
    /// A header with a raw selector.
    pub fn new(part_type: u16, flags: u8, selector: [u8; 8], length: u32) -> Self {
        Self {
            part_type: U16::new(part_type),
            flags,
            reserved: 0,
            selector,
            length: U32::new(length),
        }
    }

    /// The selector of a PCI_COMMON_CFG part for the field at `offset`.
    pub fn offset_selector(offset: u32) -> [u8; 8] {
        let mut s = [0; 8];
        s[..4].copy_from_slice(&offset.to_le_bytes());
        s
    }

    /// The selector of a VQ_CFG or VQ_NOTIFY_CFG part for queue `index`.
    pub fn vq_selector(index: u16) -> [u8; 8] {
        let mut s = [0; 8];
        s[..2].copy_from_slice(&index.to_le_bytes());
        s
    }

    /// The selector of net's CVQ part for control command (`class`, `command`).
    pub fn cvq_selector(class: u8, command: u8) -> [u8; 8] {
        [class, command, 0, 0, 0, 0, 0, 0]
    }

    /// The part type.
    pub fn part_type(&self) -> u16 {
        self.part_type.get()
    }

    /// The value length.
    pub fn length(&self) -> u32 {
        self.length.get()
    }

    /// Whether the part is flagged OPTIONAL.
    pub fn is_optional(&self) -> bool {
        self.flags & PART_F_OPTIONAL != 0
    }
}

/// `struct virtio_dev_part_vq_cfg` (32 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct VqCfg {
    /// `queue_size`.
    pub queue_size: U16,
    /// `queue_msix_vector`.
    pub vector: U16,
    /// `queue_enable`.
    pub enabled: U16,
    /// Zero.
    pub reserved: U16,
    /// `queue_desc`.
    pub queue_desc: U64,
    /// `queue_driver`.
    pub queue_driver: U64,
    /// `queue_device`.
    pub queue_device: U64,
}

/// `struct virtio_dev_part_vq_notify_data` (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct VqNotifyCfg {
    /// `queue_notify_off`.
    pub queue_notify_off: U16,
    /// `queue_notif_config_data`.
    pub queue_notif_config_data: U16,
    /// Zero.
    pub reserved: [u8; 4],
}

/// One part: header and value, as a decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The header (`length` is the value's length).
    pub hdr: DevPartHdr,
    /// The value.
    pub value: Vec<u8>,
}

impl Part {
    /// A part of `part_type` with `flags`, `selector` and `value`.
    pub fn new(part_type: u16, flags: u8, selector: [u8; 8], value: Vec<u8>) -> Self {
        let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
        Self {
            hdr: DevPartHdr::new(part_type, flags, selector, length),
            value,
        }
    }

    /// Appends header and value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.hdr.as_bytes());
        out.extend_from_slice(&self.value);
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        size_of::<DevPartHdr>() + self.value.len()
    }
}

/// Why a parts buffer did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartsDecodeError {
    /// A header or value runs past the end of the buffer.
    #[error("part {index} runs past the end of the buffer")]
    Truncated {
        /// Position of the part in the buffer.
        index: usize,
    },
}

/// Splits `buf` into parts (header, then `length` bytes); trailing bytes shorter than a
/// header are refused, as is a value running past the end.
pub fn decode_parts(buf: &[u8]) -> Result<Vec<Part>, PartsDecodeError> {
    let mut parts = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let index = parts.len();
        let (hdr, tail) = DevPartHdr::read_from_prefix(rest)
            .map_err(|_| PartsDecodeError::Truncated { index })?;
        let len = usize::try_from(hdr.length()).unwrap_or(usize::MAX);
        let value = tail
            .get(..len)
            .ok_or(PartsDecodeError::Truncated { index })?;
        parts.push(Part {
            hdr,
            value: value.to_vec(),
        });
        rest = &tail[len..];
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layouts of virtio 1.4 "Device parts" and "Resource objects" structures.
    #[test]
    fn layouts() {
        assert_layout!(DevPartHdr, 16; part_type @ 0, flags @ 2, reserved @ 3, selector @ 4, length @ 12);
        assert_layout!(VqCfg, 32; queue_size @ 0, vector @ 2, enabled @ 4, queue_desc @ 8, queue_driver @ 16, queue_device @ 24);
        assert_layout!(VqNotifyCfg, 8; queue_notify_off @ 0, queue_notif_config_data @ 2);
        assert_layout!(ResourceObjHdr, 8; obj_type @ 0, id @ 4);
        assert_layout!(DevPartsObjData, 24; hdr @ 0, flags @ 8, obj @ 16);
        assert_layout!(DevPartsTypedData, 16; hdr @ 0, kind @ 8);
        assert_layout!(CapIdData, 8; id @ 0);
        assert_layout!(DevPartsCap, 2; get_parts_resource_objects_limit @ 0, set_parts_resource_objects_limit @ 1);
    }

    /// Parts round-trip; a value past the end is refused.
    #[test]
    fn parts_round_trip_and_truncation() {
        let parts = vec![
            Part::new(part_type::DEVICE_STATUS, 0, [0; 8], vec![0x0f]),
            Part::new(
                NET_CVQ_CFG,
                0,
                DevPartHdr::cvq_selector(1, 1),
                vec![1, 2, 3, 4, 5, 6],
            ),
        ];
        let mut buf = Vec::new();
        for p in &parts {
            p.encode_into(&mut buf);
        }
        assert_eq!(decode_parts(&buf).unwrap(), parts);
        assert_eq!(
            decode_parts(&buf[..buf.len() - 1]),
            Err(PartsDecodeError::Truncated { index: 1 })
        );
        assert_eq!(
            decode_parts(&buf[..3]),
            Err(PartsDecodeError::Truncated { index: 0 })
        );
    }

    /// The required order: DEV_FEATURES, DRV_FEATURES, PCI_COMMON_CFG, DEVICE_STATUS, VQ_CFG,
    /// VQ_NOTIFY_CFG, then device-type parts.
    #[test]
    fn order_ranks_follow_the_table() {
        let order = [0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x200, 0x201];
        assert!(order
            .windows(2)
            .all(|w| order_rank(w[0]) < order_rank(w[1])));
    }
}
