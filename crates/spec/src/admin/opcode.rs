//! Command opcodes (`le16 opcode`): the wire numbers, and [`AdminOpcode`], the commands this
//! project implements as a type, so dispatch matches on commands instead of raw integers.

use thiserror::Error;

/// Report the supported opcodes as a bitmap (merged).
pub const LIST_QUERY: u16 = 0x0000;
/// Declare the opcodes the driver will use (merged).
pub const LIST_USE: u16 = 0x0001;
/// Seed 004, our number: read the member's mode ([`DevModeData`](super::DevModeData)).
pub const DEV_MODE_GET: u16 = 0x0013;
/// Seed 004, our number: set the member's mode ([`DevModeData`](super::DevModeData)).
pub const DEV_MODE_SET: u16 = 0x0014;
/// Seed 004, our number: estimated context bytes left to read.
pub const DEV_CTX_SIZE_GET: u16 = 0x0015;
/// Seed 004, our number: read the next part of the device context.
pub const DEV_CTX_READ: u16 = 0x0016;
/// Seed 004, our number: write part of a device context (Freeze only).
pub const DEV_CTX_WRITE: u16 = 0x0017;
/// Seed 004, our number: drop a partially read or written context.
pub const DEV_CTX_DISCARD: u16 = 0x0018;
/// Seed 004, our number: list the context field types the device knows.
pub const DEV_CTX_FIELDS_QUERY: u16 = 0x0019;

/// The seven seed-004 commands, which a device supports all or none of.
pub const DEVICE_MIGRATION: [u16; 7] = [
    DEV_MODE_GET,
    DEV_MODE_SET,
    DEV_CTX_SIZE_GET,
    DEV_CTX_READ,
    DEV_CTX_WRITE,
    DEV_CTX_DISCARD,
    DEV_CTX_FIELDS_QUERY,
];

/// Merged virtio 1.4 device-parts opcodes, for the `v1.4` profile later.
pub mod v1_4 {
    /// VIRTIO_ADMIN_CMD_CAP_ID_LIST_QUERY (self group).
    pub const CAP_ID_LIST_QUERY: u16 = 0x0007;
    /// VIRTIO_ADMIN_CMD_DEVICE_CAP_GET (self group).
    pub const DEVICE_CAP_GET: u16 = 0x0008;
    /// VIRTIO_ADMIN_CMD_DRIVER_CAP_SET (self group).
    pub const DRIVER_CAP_SET: u16 = 0x0009;
    /// VIRTIO_ADMIN_CMD_RESOURCE_OBJ_CREATE.
    pub const RESOURCE_OBJ_CREATE: u16 = 0x000a;
    /// VIRTIO_ADMIN_CMD_RESOURCE_OBJ_MODIFY: the command text's number (the opcode table
    /// swaps MODIFY and QUERY; spec-decisions §17).
    pub const RESOURCE_OBJ_MODIFY: u16 = 0x000b;
    /// VIRTIO_ADMIN_CMD_RESOURCE_OBJ_QUERY (see [`RESOURCE_OBJ_MODIFY`]).
    pub const RESOURCE_OBJ_QUERY: u16 = 0x000c;
    /// VIRTIO_ADMIN_CMD_RESOURCE_OBJ_DESTROY.
    pub const RESOURCE_OBJ_DESTROY: u16 = 0x000d;
    /// VIRTIO_ADMIN_CMD_DEV_PARTS_METADATA_GET.
    pub const DEV_PARTS_METADATA_GET: u16 = 0x000e;
    /// VIRTIO_ADMIN_CMD_DEV_PARTS_GET.
    pub const DEV_PARTS_GET: u16 = 0x000f;
    /// VIRTIO_ADMIN_CMD_DEV_PARTS_SET.
    pub const DEV_PARTS_SET: u16 = 0x0010;
    /// VIRTIO_ADMIN_CMD_DEV_MODE_SET (`u8 flags`, bit 0 = stopped); not
    /// the seed-004 command of the same name.
    pub const DEV_MODE_SET: u16 = 0x0011;
}

/// An opcode this project implements (the merged list commands and the seven seed-004 commands).
///
/// Decoding a wire value with [`TryFrom<u16>`] is the only way to get one, so an unknown or
/// unimplemented opcode (the virtio 1.4 device-parts commands included) is an [`UnknownOpcode`]
/// that the device answers with EINVAL / Q_INVALID_OPCODE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum AdminOpcode {
    /// VIRTIO_ADMIN_CMD_LIST_QUERY.
    ListQuery = LIST_QUERY,
    /// VIRTIO_ADMIN_CMD_LIST_USE.
    ListUse = LIST_USE,
    /// Seed 004 DEV_MODE_GET.
    DevModeGet = DEV_MODE_GET,
    /// Seed 004 DEV_MODE_SET.
    DevModeSet = DEV_MODE_SET,
    /// Seed 004 DEV_CTX_SIZE_GET.
    DevCtxSizeGet = DEV_CTX_SIZE_GET,
    /// Seed 004 DEV_CTX_READ.
    DevCtxRead = DEV_CTX_READ,
    /// Seed 004 DEV_CTX_WRITE.
    DevCtxWrite = DEV_CTX_WRITE,
    /// Seed 004 DEV_CTX_DISCARD.
    DevCtxDiscard = DEV_CTX_DISCARD,
    /// Seed 004 DEV_CTX_FIELDS_QUERY.
    DevCtxFieldsQuery = DEV_CTX_FIELDS_QUERY,
}

/// A wire opcode that is not an [`AdminOpcode`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("unknown admin opcode {0:#06x}")]
pub struct UnknownOpcode(pub u16);

impl AdminOpcode {
    /// Every implemented opcode, in numeric order.
    pub const ALL: [AdminOpcode; 9] = [
        Self::ListQuery,
        Self::ListUse,
        Self::DevModeGet,
        Self::DevModeSet,
        Self::DevCtxSizeGet,
        Self::DevCtxRead,
        Self::DevCtxWrite,
        Self::DevCtxDiscard,
        Self::DevCtxFieldsQuery,
    ];

    /// The spec name without the `VIRTIO_ADMIN_CMD_` prefix (`"DEV_MODE_SET"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::ListQuery => "LIST_QUERY",
            Self::ListUse => "LIST_USE",
            Self::DevModeGet => "DEV_MODE_GET",
            Self::DevModeSet => "DEV_MODE_SET",
            Self::DevCtxSizeGet => "DEV_CTX_SIZE_GET",
            Self::DevCtxRead => "DEV_CTX_READ",
            Self::DevCtxWrite => "DEV_CTX_WRITE",
            Self::DevCtxDiscard => "DEV_CTX_DISCARD",
            Self::DevCtxFieldsQuery => "DEV_CTX_FIELDS_QUERY",
        }
    }

    /// The list commands, which address the group and not a member (`group_member_id` is 0).
    pub fn is_list(self) -> bool {
        matches!(self, Self::ListQuery | Self::ListUse)
    }
}

impl TryFrom<u16> for AdminOpcode {
    type Error = UnknownOpcode;

    fn try_from(value: u16) -> Result<Self, UnknownOpcode> {
        Self::ALL
            .into_iter()
            .find(|op| u16::from(*op) == value)
            .ok_or(UnknownOpcode(value))
    }
}

impl From<AdminOpcode> for u16 {
    fn from(op: AdminOpcode) -> u16 {
        op as u16
    }
}
