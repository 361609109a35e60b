//! The fixed 16-byte section header, message type codes, flags and per-type length bounds.
//!
//! Every section on the wire is `header (16 bytes) | payload (length bytes) | le32 crc32c`,
//! the crc taken over header and payload (docs/stream-format.md).

use core::fmt;

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first four bytes of every section: a peer that is not speaking this protocol, or a stream
/// that lost its framing, is refused at the first header.
pub const MAGIC: [u8; 4] = *b"VLMS";

/// Size of [`SectionHeader`] on the wire.
pub const HEADER_LEN: usize = 16;

/// Size of the crc32c trailer that ends every section.
pub const CRC_LEN: usize = 4;

/// Guest page size the Memory section counts in.
pub const PAGE_SIZE: usize = 4096;

/// Most page data one Memory section carries (2048 pages); writers split larger ranges.
pub const MAX_MEMORY_DATA: usize = 8 << 20;

/// Most range descriptors one Memory section carries.
pub const MAX_MEMORY_RANGES: usize = 4096;

/// Most bytes of one device context (two of the device crate's 16 MiB fields).
pub const MAX_DEVICE_CONTEXT: usize = 32 << 20;

/// Most bytes of one vCPU state.
pub const MAX_VCPU_STATE: usize = 1 << 20;

/// Most bytes of the postcard-encoded VM configuration.
pub const MAX_CONFIG: usize = 256 << 10;

/// Most bytes of the text a Cancel or Error section carries.
pub const MAX_TEXT: usize = 4096;

/// Header flag: this Memory or DeviceContext section was taken after the source stopped (vCPUs
/// paused, devices in Freeze): it is final and replaces whatever pre-copy sent for the same pages
/// or device. Any other flag bit, or this one on another type, is refused.
pub const FLAG_FINAL: u16 = 1 << 0;

/// The section header, little-endian, unaligned (read straight from the byte stream).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SectionHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// A [`MessageType`] code.
    pub msg_type: U16,
    /// Flag bits ([`FLAG_FINAL`]); unknown bits are refused.
    pub flags: U16,
    /// Payload length in bytes, excluding this header and the crc trailer.
    pub length: U32,
    /// Index of this section in its direction of the stream, from 0: a dropped, repeated or
    /// reordered section is caught even when its own crc is right.
    pub sequence: U32,
}

const _: () = assert!(core::mem::size_of::<SectionHeader>() == HEADER_LEN);

impl SectionHeader {
    /// A header with [`MAGIC`] and the given fields.
    pub fn new(msg_type: MessageType, flags: u16, length: u32, sequence: u32) -> Self {
        SectionHeader {
            magic: MAGIC,
            msg_type: U16::new(msg_type.code()),
            flags: U16::new(flags),
            length: U32::new(length),
            sequence: U32::new(sequence),
        }
    }
}

/// The kinds of section, with their wire codes. Code 0 is never valid (zeroed memory is not a
/// section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Opens each direction: the protocol version.
    Start,
    /// The VM configuration the destination checks against its own before anything else.
    Config,
    /// Guest-physical page ranges, data or zero markers.
    Memory,
    /// One device's context (seed 004 format, opaque here).
    DeviceContext,
    /// vCPU state (opaque; the vm layer defines it).
    VcpuState,
    /// The source has sent everything.
    Complete,
    /// The destination validated and loaded everything; it is paused.
    Ready,
    /// The source gives the guest to the destination.
    Commit,
    /// The destination runs the guest.
    CommitAck,
    /// Either side abandons the migration before Commit.
    Cancel,
    /// Either side failed; the text says why.
    Error,
    /// Version 2: the source ends a pre-copy round (spec-decisions §19).
    RoundEnd,
    /// Version 2: the destination received everything before the RoundEnd it answers.
    RoundAck,
    /// One PCI function's own registers (v1.4 profile; spec-decisions §37).
    FunctionState,
}

impl MessageType {
    /// Every type, in code order.
    pub const ALL: [MessageType; 14] = [
        MessageType::Start,
        MessageType::Config,
        MessageType::Memory,
        MessageType::DeviceContext,
        MessageType::VcpuState,
        MessageType::Complete,
        MessageType::Ready,
        MessageType::Commit,
        MessageType::CommitAck,
        MessageType::Cancel,
        MessageType::Error,
        MessageType::RoundEnd,
        MessageType::RoundAck,
        MessageType::FunctionState,
    ];

    /// The wire code.
    pub const fn code(self) -> u16 {
        match self {
            MessageType::Start => 1,
            MessageType::Config => 2,
            MessageType::Memory => 3,
            MessageType::DeviceContext => 4,
            MessageType::VcpuState => 5,
            MessageType::Complete => 6,
            MessageType::Ready => 7,
            MessageType::Commit => 8,
            MessageType::CommitAck => 9,
            MessageType::Cancel => 10,
            MessageType::Error => 11,
            MessageType::RoundEnd => 12,
            MessageType::RoundAck => 13,
            MessageType::FunctionState => 14,
        }
    }

    /// The first protocol version that has this type: a reader refuses it from a peer that
    /// announced an older version (that peer cannot have meant it).
    pub const fn since_version(self) -> u32 {
        match self {
            MessageType::RoundEnd | MessageType::RoundAck | MessageType::FunctionState => 2,
            _ => 1,
        }
    }

    /// The type a wire code names, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        MessageType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The largest payload a section of this type may declare; a larger length is refused
    /// before anything is allocated or read for it.
    pub const fn max_payload(self) -> usize {
        match self {
            MessageType::Start => crate::message::START_LEN,
            MessageType::Config => MAX_CONFIG,
            MessageType::Memory => {
                crate::memory::MEMORY_HEADER_LEN
                    + MAX_MEMORY_RANGES * crate::memory::RANGE_HEADER_LEN
                    + MAX_MEMORY_DATA
            }
            MessageType::DeviceContext => 4 + MAX_DEVICE_CONTEXT,
            MessageType::VcpuState => 4 + MAX_VCPU_STATE,
            MessageType::Complete | MessageType::Ready | MessageType::Commit => 0,
            MessageType::CommitAck => crate::message::COMMIT_ACK_LEN,
            MessageType::Cancel => 4 + MAX_TEXT,
            MessageType::Error => MAX_TEXT,
            MessageType::RoundEnd => crate::message::ROUND_END_LEN,
            MessageType::RoundAck => crate::message::ROUND_ACK_LEN,
            MessageType::FunctionState => crate::function_state::MAX_FUNCTION_STATE,
        }
    }

    /// The flag bits a section of this type may carry.
    pub const fn allowed_flags(self) -> u16 {
        match self {
            MessageType::Memory | MessageType::DeviceContext => FLAG_FINAL,
            _ => 0,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Whether a Memory or DeviceContext section was taken while the guest ran or after it stopped
/// (the header's [`FLAG_FINAL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Taken while the source ran (pre-copy round, or a device context read in Active mode).
    #[default]
    PreCopy,
    /// Taken after the source paused its vCPUs and froze its devices.
    Final,
}

impl Phase {
    pub(crate) fn flags(self) -> u16 {
        match self {
            Phase::PreCopy => 0,
            Phase::Final => FLAG_FINAL,
        }
    }

    pub(crate) fn from_flags(flags: u16) -> Self {
        if flags & FLAG_FINAL != 0 {
            Phase::Final
        } else {
            Phase::PreCopy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are distinct, non-zero and map back to their type.
    #[test]
    fn type_codes_round_trip() {
        for t in MessageType::ALL {
            assert_ne!(t.code(), 0);
            assert_eq!(MessageType::from_code(t.code()), Some(t));
        }
        assert_eq!(MessageType::from_code(0), None);
        assert_eq!(MessageType::from_code(15), None);
    }

    /// The header is 16 bytes, little-endian, in the documented field order.
    #[test]
    fn header_layout() {
        let h = SectionHeader::new(MessageType::Memory, FLAG_FINAL, 0x0102_0304, 7);
        assert_eq!(
            h.as_bytes(),
            &[b'V', b'L', b'M', b'S', 3, 0, 1, 0, 4, 3, 2, 1, 7, 0, 0, 0]
        );
    }
}
