//! Why a section was refused: one typed error per fault, each naming where in the stream it was.

use core::fmt;
use std::io;

use crate::header::MessageType;

/// Where a fault was found: the section's index in its direction of the stream (its expected
/// sequence number) and the stream byte offset at which that section's header starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// Index of the section, from 0 (the Start section).
    pub section: u32,
    /// Byte offset of the section's first header byte from the start of the stream.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "section {} at byte {}", self.section, self.offset)
    }
}

/// A section the reader refused, or an I/O failure while reading one. After any error the
/// stream has lost its framing: the reader refuses every later read with [`StreamError::Poisoned`]
/// and the caller abandons the connection (the engine then cancels; nothing was applied).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream ended cleanly between two sections.
    #[error("stream closed before {at}")]
    Closed {
        /// The section that never came.
        at: Position,
    },
    /// The stream ended inside a section.
    #[error("stream truncated in {at}: it ended at byte {ended_at}")]
    Truncated {
        /// The section that was cut.
        at: Position,
        /// Stream offset of the last byte received, plus one.
        ended_at: u64,
    },
    /// Reading failed (a read timeout set by the caller shows up here as `WouldBlock` or
    /// `TimedOut`).
    #[error("read failed in {at}: {source}")]
    Io {
        /// The section being read.
        at: Position,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The header does not start with the magic.
    #[error("bad magic {found:02x?} in {at}")]
    BadMagic {
        /// The section.
        at: Position,
        /// The four bytes found instead.
        found: [u8; 4],
    },
    /// The header names a type this version does not know.
    #[error("unknown section type {code} in {at}")]
    UnknownType {
        /// The section.
        at: Position,
        /// The type code found.
        code: u16,
    },
    /// The header carries flag bits the type does not allow.
    #[error("{msg_type} section with unknown flags {flags:#06x} in {at}")]
    UnknownFlags {
        /// The section.
        at: Position,
        /// Its type.
        msg_type: MessageType,
        /// The flags found.
        flags: u16,
    },
    /// The header declares a payload longer than the type allows; nothing was allocated or read
    /// for it.
    #[error("{msg_type} section declares {length} bytes, more than its limit {max}, in {at}")]
    Oversized {
        /// The section.
        at: Position,
        /// Its type.
        msg_type: MessageType,
        /// The declared length.
        length: u32,
        /// The type's limit.
        max: usize,
    },
    /// The crc32c over header and payload does not match the trailer.
    #[error("{msg_type} section crc mismatch in {at}: trailer {expected:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The section.
        at: Position,
        /// Its (declared) type.
        msg_type: MessageType,
        /// The crc the trailer carries.
        expected: u32,
        /// The crc of what arrived.
        computed: u32,
    },
    /// A well-formed section with the wrong sequence number: one was dropped, repeated or
    /// reordered.
    #[error("{msg_type} section carries sequence number {found} in {at}")]
    OutOfSequence {
        /// The section (its index is the expected sequence number).
        at: Position,
        /// Its type.
        msg_type: MessageType,
        /// The sequence number it carries.
        found: u32,
    },
    /// The first section is not Start.
    #[error("expected Start, found {found} in {at}")]
    ExpectedStart {
        /// The section.
        at: Position,
        /// What came instead.
        found: MessageType,
    },
    /// A second Start.
    #[error("Start repeated in {at}")]
    RepeatedStart {
        /// The section.
        at: Position,
    },
    /// The peer speaks a version this side does not accept (its own and the previous one).
    #[error("protocol version {peer} not accepted in {at}: this side speaks {own} and accepts {own} and {previous}", previous = own.saturating_sub(1))]
    UnsupportedVersion {
        /// The Start section.
        at: Position,
        /// The peer's version.
        peer: u32,
        /// This side's version.
        own: u32,
    },
    /// The payload does not decode as its type says.
    #[error("malformed {msg_type} payload in {at}: {reason}")]
    Malformed {
        /// The section.
        at: Position,
        /// Its type.
        msg_type: MessageType,
        /// What is wrong, with the values that show it.
        reason: String,
    },
    /// An earlier error left the stream without framing.
    #[error("stream unusable after an earlier error, at {at}")]
    Poisoned {
        /// The section that would have been read next.
        at: Position,
    },
}

impl StreamError {
    /// The section and byte offset the error names.
    pub fn position(&self) -> Position {
        match self {
            StreamError::Closed { at }
            | StreamError::Truncated { at, .. }
            | StreamError::Io { at, .. }
            | StreamError::BadMagic { at, .. }
            | StreamError::UnknownType { at, .. }
            | StreamError::UnknownFlags { at, .. }
            | StreamError::Oversized { at, .. }
            | StreamError::CrcMismatch { at, .. }
            | StreamError::OutOfSequence { at, .. }
            | StreamError::ExpectedStart { at, .. }
            | StreamError::RepeatedStart { at }
            | StreamError::UnsupportedVersion { at, .. }
            | StreamError::Malformed { at, .. }
            | StreamError::Poisoned { at } => *at,
        }
    }
}

/// A message the writer could not send.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing failed (a write timeout set by the caller shows up here).
    #[error("write failed in section {section}: {source}")]
    Io {
        /// Index of the section being written.
        section: u32,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The message breaks a rule of its type (its limit, page alignment, a range count...); a
    /// reader would refuse it, so it is not sent.
    #[error("cannot send {msg_type} section {section}: {reason}")]
    Invalid {
        /// Index the section would have had.
        section: u32,
        /// Its type.
        msg_type: MessageType,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed part-way: the peer would see a broken section.
    #[error("stream unusable after an earlier write error, at section {section}")]
    Poisoned {
        /// The section that would have been written next.
        section: u32,
    },
}
