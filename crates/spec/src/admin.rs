//! Administration command set: the merged framework (virtio 1.4 "Administration Facilities") and the seed-004
//! device-migration commands with this project's opcodes (spec-decisions §4).
//!
//! A command is one admin-queue buffer: [`AdminCmdHeader`] + command data
//! (device-readable), then [`AdminResultHeader`] + result (device-writable).

use zerocopy::little_endian::{U16, U32, U64};

use crate::context::FieldType;

/// Size of [`AdminCmdHeader`].
pub const ADMIN_CMD_HEADER_LEN: usize = 24;
/// Size of [`AdminResultHeader`].
pub const ADMIN_RESULT_HEADER_LEN: usize = 8;

pub mod opcode;

pub use opcode::{AdminOpcode, UnknownOpcode};

mod codes;

pub use codes::{
    qualifier, status, AdminStatus, ReservedQualifier, ReservedStatus, StatusQualifier,
};

/// Group types (`le16 group_type`).
pub mod group_type {
    /// The owner itself; member id 0.
    pub const SELF: u16 = 0x0000;
    /// SR-IOV: owner is the PF, members are VFs 1..=NumVFs.
    pub const SRIOV: u16 = 0x0001;
}

wire_struct! {
    /// The readable header of every command (24 bytes).
    pub struct AdminCmdHeader {
        /// One of [`opcode`].
        pub opcode: U16,
        /// One of [`group_type`].
        pub group_type: U16,
        /// Zero.
        pub reserved1: [u8; 12],
        /// 0 for [`group_type::SELF`], the VF number for SR-IOV.
        pub group_member_id: U64,
    }
}

impl AdminCmdHeader {
    /// A header from native values.
    pub const fn new(opcode: u16, group_type: u16, group_member_id: u64) -> Self {
        AdminCmdHeader {
            opcode: U16::new(opcode),
            group_type: U16::new(group_type),
            reserved1: [0; 12],
            group_member_id: U64::new(group_member_id),
        }
    }
}

wire_struct! {
    /// The writable header of every command (8 bytes).
    pub struct AdminResultHeader {
        /// One of [`status`].
        pub status: U16,
        /// One of [`qualifier`].
        pub status_qualifier: U16,
        /// Zero.
        pub reserved2: [u8; 4],
    }
}

impl AdminResultHeader {
    /// A header from native values.
    pub const fn new(status: u16, status_qualifier: u16) -> Self {
        AdminResultHeader {
            status: U16::new(status),
            status_qualifier: U16::new(status_qualifier),
            reserved2: [0; 4],
        }
    }
}

/// Seed-004 device mode of a member device (values are our assignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum DevMode {
    /// Normal operation.
    #[default]
    Active = 0,
    /// No new requests and no DMA; context may still change.
    Stop = 1,
    /// Context frozen; the only mode that accepts DEV_CTX_WRITE.
    Freeze = 2,
}

/// A mode byte other than Active/Stop/Freeze (answered EINVAL / Q_INVALID_FIELD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid device mode {0}")]
pub struct InvalidDevMode(pub u8);

impl TryFrom<u8> for DevMode {
    type Error = InvalidDevMode;

    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            0 => Ok(DevMode::Active),
            1 => Ok(DevMode::Stop),
            2 => Ok(DevMode::Freeze),
            other => Err(InvalidDevMode(other)),
        }
    }
}

impl From<DevMode> for u8 {
    fn from(m: DevMode) -> Self {
        m as u8
    }
}

wire_struct! {
    /// DEV_MODE_SET data and DEV_MODE_GET result: `u8 mode; u8 reserved[7]`.
    pub struct DevModeData {
        /// A [`DevMode`] value (unchecked on the wire).
        pub mode: u8,
        /// Zero; pads to the 64-bit multiple the framework requires.
        pub reserved: [u8; 7],
    }
}

impl DevModeData {
    /// The data for `mode`.
    pub const fn new(mode: DevMode) -> Self {
        DevModeData {
            mode: mode as u8,
            reserved: [0; 7],
        }
    }
}

wire_struct! {
    /// DEV_CTX_SIZE_GET result: `le32 size; le32 reserved`.
    pub struct DevCtxSizeResult {
        /// Estimated context bytes left to read in the current mode.
        pub size: U32,
        /// Zero.
        pub reserved: U32,
    }
}

impl DevCtxSizeResult {
    /// A result reporting `size` bytes.
    pub const fn new(size: u32) -> Self {
        DevCtxSizeResult {
            size: U32::new(size),
            reserved: U32::ZERO,
        }
    }
}

wire_struct! {
    /// DEV_CTX_READ result header (seed 004 v4 layout), followed by `u8 data[size]`.
    pub struct DevCtxReadResultHeader {
        /// Context bytes still to read after this response.
        pub remaining_ctx_size: U32,
        /// Bytes of context data in this response.
        pub size: U32,
    }
}

impl DevCtxReadResultHeader {
    /// A header from native values.
    pub const fn new(remaining_ctx_size: u32, size: u32) -> Self {
        DevCtxReadResultHeader {
            remaining_ctx_size: U32::new(remaining_ctx_size),
            size: U32::new(size),
        }
    }
}

wire_struct! {
    /// DEV_CTX_FIELDS_QUERY result header, followed by `count` [`DevCtxFieldInfo`].
    pub struct DevCtxFieldsQueryHeader {
        /// Number of entries that follow.
        pub count: U32,
        /// Zero.
        pub reserved: U32,
    }
}

impl DevCtxFieldsQueryHeader {
    /// A header announcing `count` entries.
    pub const fn new(count: u32) -> Self {
        DevCtxFieldsQueryHeader {
            count: U32::new(count),
            reserved: U32::ZERO,
        }
    }
}

wire_struct! {
    /// One DEV_CTX_FIELDS_QUERY entry: `le16 type; le16 flags; le32 length`.
    pub struct DevCtxFieldInfo {
        /// The [`FieldType`].
        pub field_type: U16,
        /// `FIELD_FLAG_*` bits the device uses for this type.
        pub flags: U16,
        /// Value length, or 0 for variable length.
        pub length: U32,
    }
}

impl DevCtxFieldInfo {
    /// An entry from native values.
    pub const fn new(field_type: FieldType, flags: u16, length: u32) -> Self {
        DevCtxFieldInfo {
            field_type: U16::new(field_type.0),
            flags: U16::new(flags),
            length: U32::new(length),
        }
    }

    /// The field type.
    pub const fn field_type(&self) -> FieldType {
        FieldType(self.field_type.get())
    }
}

#[cfg(test)]
mod tests;
