//! `struct virtio_admin_cmd` on the wire: the device-readable part (header and command data)
//! parsed into an [`AdminCommand`], the device-writable part (status header and result) built
//! from an [`AdminResult`].
//!
//! Buffer rules (virtio 1.4 "Administration Facilities", spec-decisions §6): a readable part shorter than expected reads as if
//! the missing bytes were 0, a longer one has its excess ignored; the result is truncated to
//! the writable part, and what is written is padded with zeros to a multiple of 8 bytes (the
//! device initialises a writable part that is a multiple of 64 bits) as far as the buffer
//! goes. The used length is the number of bytes written. No length ever fails a command.

use virtio_lm_spec::admin::{
    qualifier, status, AdminCmdHeader, AdminOpcode, AdminResultHeader, AdminStatus,
    StatusQualifier, ADMIN_CMD_HEADER_LEN, ADMIN_RESULT_HEADER_LEN,
};
use zerocopy::{FromBytes, IntoBytes};

/// Largest command data a device accepts in one command (DEV_CTX_WRITE, LIST_USE): 4 MiB,
/// far above a device context, small enough that a hostile buffer cannot make the device
/// reserve much memory. A DEV_CTX_WRITE carrying more fails with ENOMEM.
pub const MAX_COMMAND_DATA: usize = 4 << 20;

/// A decoded command: the header fields and the command-specific data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminCommand {
    /// `opcode`.
    pub opcode: u16,
    /// `group_type`.
    pub group_type: u16,
    /// `group_member_id`.
    pub group_member_id: u64,
    /// `command_specific_data`: the readable bytes after the 24-byte header (at most
    /// [`MAX_COMMAND_DATA`]).
    pub data: Vec<u8>,
    /// The readable part held more than [`MAX_COMMAND_DATA`] bytes of data (the excess was
    /// not read).
    pub data_overflow: bool,
}

impl AdminCommand {
    /// A command from native values.
    pub fn new(opcode: u16, group_type: u16, group_member_id: u64, data: Vec<u8>) -> Self {
        Self {
            opcode,
            group_type,
            group_member_id,
            data,
            data_overflow: false,
        }
    }

    /// Parses a device-readable part: a header shorter than 24 bytes reads as if padded with
    /// zeros; the data is everything after it, up to [`MAX_COMMAND_DATA`] bytes.
    pub fn parse(readable: &[u8]) -> Self {
        let mut header = [0u8; ADMIN_CMD_HEADER_LEN];
        let n = readable.len().min(ADMIN_CMD_HEADER_LEN);
        header[..n].copy_from_slice(&readable[..n]);
        let (opcode, group_type, group_member_id) = match AdminCmdHeader::read_from_bytes(&header) {
            Ok(h) => (h.opcode.get(), h.group_type.get(), h.group_member_id.get()),
            Err(_) => (0, 0, 0),
        };
        let data = readable.get(ADMIN_CMD_HEADER_LEN..).unwrap_or_default();
        Self {
            opcode,
            group_type,
            group_member_id,
            data: data[..data.len().min(MAX_COMMAND_DATA)].to_vec(),
            data_overflow: data.len() > MAX_COMMAND_DATA,
        }
    }

    /// The device-readable part: header, then data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = AdminCmdHeader::new(self.opcode, self.group_type, self.group_member_id);
        let mut bytes = Vec::with_capacity(ADMIN_CMD_HEADER_LEN + self.data.len());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&self.data);
        bytes
    }

    /// The data read as a fixed-size value: missing bytes read as 0, excess is ignored.
    pub(crate) fn data_as<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = self.data.len().min(N);
        out[..n].copy_from_slice(&self.data[..n]);
        out
    }
}

/// A command's outcome: status, qualifier and result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminResult {
    /// `status` (an errno value, [`status`]).
    pub status: u16,
    /// `status_qualifier` ([`qualifier`]).
    pub qualifier: u16,
    /// `command_specific_result`.
    pub result: Vec<u8>,
}

impl AdminResult {
    /// Success with `result`.
    pub fn ok(result: Vec<u8>) -> Self {
        Self {
            status: status::OK,
            qualifier: qualifier::Q_OK,
            result,
        }
    }

    /// A failure: `status` and `qualifier`, no result.
    pub fn error(status: u16, qualifier: u16) -> Self {
        Self {
            status,
            qualifier,
            result: Vec::new(),
        }
    }

    /// Whether the status is OK.
    pub fn is_ok(&self) -> bool {
        self.status == status::OK
    }

    /// The bytes written into a device-writable part of `writable_len` bytes: the status
    /// header and result, truncated to the buffer, zero-padded to a multiple of 8 within it.
    pub fn encode(&self, writable_len: usize) -> Vec<u8> {
        let header = AdminResultHeader::new(self.status, self.qualifier);
        let full = ADMIN_RESULT_HEADER_LEN + self.result.len();
        let padded = full.div_ceil(8) * 8;
        let len = padded.min(writable_len);
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&self.result);
        bytes.resize(padded, 0);
        bytes.truncate(len);
        bytes
    }

    /// Parses what a device wrote (`written`: the used length's worth of the writable part);
    /// missing fields read as 0 (spec: the driver treats data outside the used length as 0).
    pub fn decode(written: &[u8]) -> Self {
        let mut header = [0u8; ADMIN_RESULT_HEADER_LEN];
        let n = written.len().min(ADMIN_RESULT_HEADER_LEN);
        header[..n].copy_from_slice(&written[..n]);
        let (status, qualifier) = match AdminResultHeader::read_from_bytes(&header) {
            Ok(h) => (h.status.get(), h.status_qualifier.get()),
            Err(_) => (0, 0),
        };
        Self {
            status,
            qualifier,
            result: written
                .get(ADMIN_RESULT_HEADER_LEN..)
                .unwrap_or_default()
                .to_vec(),
        }
    }
}

/// The spec name of an opcode (`"DEV_MODE_SET"`), or `"unknown opcode"`.
pub fn opcode_name(op: u16) -> &'static str {
    AdminOpcode::try_from(op).map_or("unknown opcode", AdminOpcode::name)
}

/// The name of a `status` value (`"EINVAL"`); a reserved value is named as the driver must
/// treat it.
pub fn status_name(value: u16) -> &'static str {
    AdminStatus::try_from(value).map_or("reserved (treated as EINVAL)", AdminStatus::name)
}

/// The name of a `status_qualifier` value; a reserved value is named as the driver must treat
/// it.
pub fn qualifier_name(value: u16) -> &'static str {
    StatusQualifier::try_from(value).map_or(
        "reserved (treated as Q_INVALID_COMMAND)",
        StatusQualifier::name,
    )
}
