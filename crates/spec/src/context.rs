//! Device context format (spec-decisions §5).
//!
//! A context is a sequence of fields, each an 8-byte [`ContextFieldHeader`]
//! followed by `length` value bytes padded to 8. Fixed-size values have
//! structs here; variable ones (feature words, config bytes, in-flight heads)
//! are described by their header structs and parsed by the device crate.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a [`ContextFieldHeader`].
pub const FIELD_HEADER_LEN: usize = 8;
/// Field values are padded to this many bytes.
pub const FIELD_ALIGN: usize = 8;
/// `flags` bit 0: a receiver that does not know the type may skip the field
/// (an unknown mandatory field is rejected).
pub const FIELD_FLAG_OPTIONAL: u16 = 1;
/// [`VqStateField::flags`] bit 0: a used-buffer notification is owed.
pub const VQ_STATE_F_NOTIFY_OWED: u16 = 1;

/// `length` rounded up to the 8-byte field alignment.
pub const fn padded_len(len: usize) -> usize {
    len.div_ceil(FIELD_ALIGN) * FIELD_ALIGN
}

/// A context field type (`le16 type`).
///
/// A newtype rather than an enum because unknown types must survive parsing:
/// the receiver decides, by [`FIELD_FLAG_OPTIONAL`], whether to skip them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FieldType(pub u16);

impl FieldType {
    /// Opens a complete context. No value.
    pub const START_MARKER: FieldType = FieldType(0x0000);
    /// Closes a complete context. No value.
    pub const END_MARKER: FieldType = FieldType(0x0001);
    /// Drop everything received since the last START_MARKER. No value.
    pub const DISCARD: FieldType = FieldType(0x0002);
    /// `le64 bits[]`: the device's offered features (verified, never applied).
    pub const DEVICE_FEATURES: FieldType = FieldType(0x0100);
    /// `le64 bits[]`: the driver's accepted features.
    pub const DRIVER_FEATURES: FieldType = FieldType(0x0101);
    /// `u8`: the device status byte.
    pub const DEVICE_STATUS: FieldType = FieldType(0x0102);
    /// `u8`: the configuration generation.
    pub const CONFIG_GENERATION: FieldType = FieldType(0x0103);
    /// Device-type configuration space bytes.
    pub const DEVICE_CONFIG: FieldType = FieldType(0x0104);
    /// [`PciCommonCfgField`].
    pub const PCI_COMMON_CFG: FieldType = FieldType(0x0105);
    /// [`VqConfigField`], one per queue.
    pub const VQ_CONFIG: FieldType = FieldType(0x0110);
    /// [`VqStateField`], one per queue.
    pub const VQ_STATE: FieldType = FieldType(0x0111);
    /// [`VqInflightHeader`] + `le16 heads[count]`, optional, one per queue.
    pub const VQ_INFLIGHT: FieldType = FieldType(0x0112);
    /// `u8`: block device writeback cache mode.
    pub const BLK_WRITEBACK: FieldType = FieldType(0x0200);
    /// Net receive mode (promiscuous, all-multicast, ...).
    pub const NET_RX_MODE: FieldType = FieldType(0x0300);
    /// Net MAC filter table.
    pub const NET_MAC_TABLE: FieldType = FieldType(0x0301);
    /// Net VLAN filter table.
    pub const NET_VLAN_TABLE: FieldType = FieldType(0x0302);
    /// Net active multiqueue pairs.
    pub const NET_MQ_PAIRS: FieldType = FieldType(0x0303);
    /// Net pending guest announcement.
    pub const NET_ANNOUNCE: FieldType = FieldType(0x0304);

    /// Every type with a name, in numeric order.
    pub const KNOWN: [FieldType; 18] = [
        FieldType::START_MARKER,
        FieldType::END_MARKER,
        FieldType::DISCARD,
        FieldType::DEVICE_FEATURES,
        FieldType::DRIVER_FEATURES,
        FieldType::DEVICE_STATUS,
        FieldType::CONFIG_GENERATION,
        FieldType::DEVICE_CONFIG,
        FieldType::PCI_COMMON_CFG,
        FieldType::VQ_CONFIG,
        FieldType::VQ_STATE,
        FieldType::VQ_INFLIGHT,
        FieldType::BLK_WRITEBACK,
        FieldType::NET_RX_MODE,
        FieldType::NET_MAC_TABLE,
        FieldType::NET_VLAN_TABLE,
        FieldType::NET_MQ_PAIRS,
        FieldType::NET_ANNOUNCE,
    ];

    /// The name in spec-decisions §5, e.g. `"VQ_STATE"`, or `None` for unknown types.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            FieldType::START_MARKER => "START_MARKER",
            FieldType::END_MARKER => "END_MARKER",
            FieldType::DISCARD => "DISCARD",
            FieldType::DEVICE_FEATURES => "DEVICE_FEATURES",
            FieldType::DRIVER_FEATURES => "DRIVER_FEATURES",
            FieldType::DEVICE_STATUS => "DEVICE_STATUS",
            FieldType::CONFIG_GENERATION => "CONFIG_GENERATION",
            FieldType::DEVICE_CONFIG => "DEVICE_CONFIG",
            FieldType::PCI_COMMON_CFG => "PCI_COMMON_CFG",
            FieldType::VQ_CONFIG => "VQ_CONFIG",
            FieldType::VQ_STATE => "VQ_STATE",
            FieldType::VQ_INFLIGHT => "VQ_INFLIGHT",
            FieldType::BLK_WRITEBACK => "BLK_WRITEBACK",
            FieldType::NET_RX_MODE => "NET_RX_MODE",
            FieldType::NET_MAC_TABLE => "NET_MAC_TABLE",
            FieldType::NET_VLAN_TABLE => "NET_VLAN_TABLE",
            FieldType::NET_MQ_PAIRS => "NET_MQ_PAIRS",
            FieldType::NET_ANNOUNCE => "NET_ANNOUNCE",
            _ => return None,
        })
    }

    /// True for the blk-specific range 0x0200-0x02FF.
    pub const fn is_blk_specific(self) -> bool {
        self.0 >> 8 == 0x02
    }

    /// True for the net-specific range 0x0300-0x03FF.
    pub const fn is_net_specific(self) -> bool {
        self.0 >> 8 == 0x03
    }

    /// The exact value length this type must carry, or `None` when it is
    /// variable or defined by the device type.
    pub const fn value_len(self) -> Option<usize> {
        match self {
            FieldType::START_MARKER | FieldType::END_MARKER | FieldType::DISCARD => Some(0),
            FieldType::DEVICE_STATUS | FieldType::CONFIG_GENERATION | FieldType::BLK_WRITEBACK => {
                Some(1)
            }
            FieldType::PCI_COMMON_CFG => Some(size_of::<PciCommonCfgField>()),
            FieldType::VQ_CONFIG => Some(size_of::<VqConfigField>()),
            FieldType::VQ_STATE => Some(size_of::<VqStateField>()),
            _ => None,
        }
    }
}

impl From<u16> for FieldType {
    fn from(v: u16) -> Self {
        FieldType(v)
    }
}

impl From<FieldType> for u16 {
    fn from(t: FieldType) -> Self {
        t.0
    }
}

impl fmt::Debug for FieldType {
    /// The type's name, or its number in hex (`0x0280`) for a type without one: error messages
    /// (and `virtio-lm inspect`) show this to people, who know field types by their numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "{:#06x}", self.0),
        }
    }
}

/// Field header: `le16 type; le16 flags; le32 length` (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct ContextFieldHeader {
    /// The [`FieldType`].
    pub field_type: U16,
    /// `FIELD_FLAG_*` bits.
    pub flags: U16,
    /// Value length in bytes, excluding padding.
    pub length: U32,
}

impl ContextFieldHeader {
    /// A header from native values.
    pub const fn new(field_type: FieldType, flags: u16, length: u32) -> Self {
        ContextFieldHeader {
            field_type: U16::new(field_type.0),
            flags: U16::new(flags),
            length: U32::new(length),
        }
    }

    /// The field type.
    pub const fn field_type(&self) -> FieldType {
        FieldType(self.field_type.get())
    }

    /// The raw flags.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// True when [`FIELD_FLAG_OPTIONAL`] is set.
    pub const fn is_optional(&self) -> bool {
        self.flags.get() & FIELD_FLAG_OPTIONAL != 0
    }

    /// Value length in bytes, excluding padding.
    pub const fn length(&self) -> u32 {
        self.length.get()
    }
}

/// PCI_COMMON_CFG value: `le16 config_msix_vector; le16 num_queues; le16
/// reserved[2]` (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct PciCommonCfgField {
    /// MSI-X vector for configuration changes.
    pub config_msix_vector: U16,
    /// Number of (non-admin) queues.
    pub num_queues: U16,
    /// Zero on send; keeps the value a multiple of 8 bytes.
    pub reserved: [U16; 2],
}

/// VQ_CONFIG value: one queue's transport configuration (32 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct VqConfigField {
    /// Queue index.
    pub index: U16,
    /// Queue size.
    pub size: U16,
    /// MSI-X vector.
    pub msix_vector: U16,
    /// 1 when the driver enabled the queue.
    pub enabled: U16,
    /// Descriptor area address.
    pub desc: U64,
    /// Driver area address.
    pub driver: U64,
    /// Device area address.
    pub device: U64,
}

/// VQ_STATE value: one queue's seed-001 state (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct VqStateField {
    /// Queue index.
    pub index: U16,
    /// Available state, encoded as in [`crate::queue_state`].
    pub avail_state: U16,
    /// Used state (packed only; 0 for split).
    pub used_state: U16,
    /// `VQ_STATE_F_*` bits.
    pub flags: U16,
}

/// VQ_INFLIGHT value header, followed by `le16 heads[count]` in the order the
/// device took them (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct VqInflightHeader {
    /// Queue index.
    pub index: U16,
    /// Number of heads that follow.
    pub count: U16,
    /// Zero on send; keeps the heads 8-byte aligned within the value.
    pub reserved: [U16; 2],
}

#[cfg(test)]
mod tests;
