//! [`StreamReader`]: reads and validates sections from any [`std::io::Read`].

use std::io::{self, Read};

use zerocopy::FromBytes;

use crate::error::{Position, StreamError};
use crate::header::{MessageType, Phase, SectionHeader, CRC_LEN, HEADER_LEN, MAGIC};
use crate::memory::{self, MemoryChunkRef};
use crate::message::{self, Message};
use crate::version::{accepts, PROTOCOL_VERSION};

/// Reads sections, checks each completely (magic, type, flags, length bound, crc32c, sequence,
/// Start first and once, version, payload) and returns it typed. A section that fails any check
/// is refused with a [`StreamError`] naming it; nothing of it is returned.
///
/// The order of checks is fixed: the header's magic, type, flags and length bound come first,
/// so an oversized length is refused before anything is allocated or read for it; then the
/// payload and trailer are read and the crc compared before the sequence number and the payload
/// are interpreted, so a corrupted byte shows up as a crc mismatch, not as a bogus value.
///
/// Plain blocking std I/O: over a `TcpStream` the caller sets the read timeout, and a stall
/// becomes [`StreamError::Io`]. Each section takes at least two reads; wrap an unbuffered
/// source in a `BufReader` when sections are small.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    inner: R,
    own_version: u32,
    peer_version: Option<u32>,
    sequence: u32,
    offset: u64,
    buf: Vec<u8>,
    poisoned: bool,
}

impl<R: Read> StreamReader<R> {
    /// A reader for this build's [`PROTOCOL_VERSION`].
    pub fn new(inner: R) -> Self {
        Self::with_version(inner, PROTOCOL_VERSION)
    }

    /// A reader that speaks `own_version` and so accepts peers on it and the one before (see
    /// [`crate::accepts`]).
    pub fn with_version(inner: R, own_version: u32) -> Self {
        StreamReader {
            inner,
            own_version,
            peer_version: None,
            sequence: 0,
            offset: 0,
            buf: Vec::new(),
            poisoned: false,
        }
    }

    /// The version the peer's Start announced, once it was read and accepted.
    pub fn peer_version(&self) -> Option<u32> {
        self.peer_version
    }

    /// Where the next section starts.
    pub fn position(&self) -> Position {
        Position {
            section: self.sequence,
            offset: self.offset,
        }
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, mutably (e.g. to change a socket timeout).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Gives the inner reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the next section. Any error leaves the reader poisoned.
    pub fn read_message(&mut self) -> Result<Message, StreamError> {
        Ok(match self.read_section()? {
            Section::Memory(chunk) => Message::Memory(chunk.to_owned()),
            Section::Message(msg) => msg,
        })
    }

    /// Reads the next section as [`StreamReader::read_message`] does, with the page data of a
    /// Memory section borrowed from the reader's buffer (valid until the next read). Any error
    /// leaves the reader poisoned.
    pub fn read_section(&mut self) -> Result<Section<'_>, StreamError> {
        let at = self.position();
        if self.poisoned {
            return Err(StreamError::Poisoned { at });
        }
        let (msg_type, flags, len) = match self.read_raw(at) {
            Ok(raw) => raw,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        let payload = &self.buf[..len];
        let decoded = if msg_type == MessageType::Memory {
            memory::decode_ref(Phase::from_flags(flags), payload).map(Section::Memory)
        } else {
            message::decode(msg_type, flags, payload).map(Section::Message)
        };
        let section = match decoded {
            Ok(section) => section,
            Err(reason) => {
                self.poisoned = true;
                return Err(StreamError::Malformed {
                    at,
                    msg_type,
                    reason,
                });
            }
        };
        if let Section::Message(Message::Start { version }) = section {
            if !accepts(self.own_version, version) {
                self.poisoned = true;
                return Err(StreamError::UnsupportedVersion {
                    at,
                    peer: version,
                    own: self.own_version,
                });
            }
            self.peer_version = Some(version);
        }
        self.sequence = self.sequence.wrapping_add(1);
        Ok(section)
    }

    /// Reads one section into the buffer and checks everything but its payload; returns its
    /// type, flags and payload length.
    fn read_raw(&mut self, at: Position) -> Result<(MessageType, u16, usize), StreamError> {
        let mut raw = [0u8; HEADER_LEN];
        let got =
            fill(&mut self.inner, &mut raw).map_err(|source| StreamError::Io { at, source })?;
        self.offset += got as u64;
        if got == 0 {
            return Err(StreamError::Closed { at });
        }
        if got < HEADER_LEN {
            return Err(StreamError::Truncated {
                at,
                ended_at: self.offset,
            });
        }
        let header =
            SectionHeader::read_from_bytes(&raw[..]).map_err(|_| StreamError::Truncated {
                at,
                ended_at: self.offset,
            })?;
        if header.magic != MAGIC {
            return Err(StreamError::BadMagic {
                at,
                found: header.magic,
            });
        }
        let code = header.msg_type.get();
        let msg_type = MessageType::from_code(code).ok_or(StreamError::UnknownType { at, code })?;
        let flags = header.flags.get();
        if flags & !msg_type.allowed_flags() != 0 {
            return Err(StreamError::UnknownFlags {
                at,
                msg_type,
                flags,
            });
        }
        let length = header.length.get();
        let max = msg_type.max_payload();
        if length as usize > max {
            return Err(StreamError::Oversized {
                at,
                msg_type,
                length,
                max,
            });
        }

        let len = length as usize;
        // The buffer only grows (zero-filling 8 MiB per Memory section would cost more than
        // reading it); what a previous section left in it is overwritten by this one's bytes.
        if self.buf.len() < len + CRC_LEN {
            // A fresh zeroed allocation (calloc), not a fill loop.
            self.buf = vec![0; len + CRC_LEN];
        }
        let section = &mut self.buf[..len + CRC_LEN];
        let got =
            fill(&mut self.inner, section).map_err(|source| StreamError::Io { at, source })?;
        self.offset += got as u64;
        if got < len + CRC_LEN {
            return Err(StreamError::Truncated {
                at,
                ended_at: self.offset,
            });
        }
        let (payload, trailer) = self.buf[..len + CRC_LEN].split_at(len);
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&raw), payload);
        if computed != expected {
            return Err(StreamError::CrcMismatch {
                at,
                msg_type,
                expected,
                computed,
            });
        }
        let found = header.sequence.get();
        if found != at.section {
            return Err(StreamError::OutOfSequence {
                at,
                msg_type,
                found,
            });
        }
        match (self.peer_version, msg_type) {
            (None, MessageType::Start) => {}
            (None, found) => return Err(StreamError::ExpectedStart { at, found }),
            (Some(_), MessageType::Start) => return Err(StreamError::RepeatedStart { at }),
            // A type newer than either side's version is as unknown as an undefined code.
            (Some(peer), t) if t.since_version() > peer.min(self.own_version) => {
                return Err(StreamError::UnknownType { at, code })
            }
            (Some(_), _) => {}
        }
        Ok((msg_type, flags, len))
    }
}

/// One section as [`StreamReader::read_section`] returns it.
#[derive(Debug)]
pub enum Section<'a> {
    /// A Memory section, its page data borrowed from the reader.
    Memory(MemoryChunkRef<'a>),
    /// Any other section.
    Message(Message),
}

/// Reads until `buf` is full or the stream ends; returns how many bytes came.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            // A reader claiming more than it was given is not trusted past the buffer.
            Ok(n) => got = (got + n).min(buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::StreamWriter;

    /// An oversized length is refused before anything is allocated for it: after the refusal the
    /// payload buffer is still as small as the Start section left it, although the declared
    /// length (u32::MAX, or one over each type's limit) is followed by enough bytes to read on.
    #[test]
    fn oversized_length_allocates_nothing_for_the_payload() {
        for t in MessageType::ALL {
            for length in [t.max_payload() as u32 + 1, u32::MAX] {
                let mut wire = Vec::new();
                StreamWriter::new(&mut wire)
                    .write(&Message::Start {
                        version: PROTOCOL_VERSION,
                    })
                    .unwrap();
                let header = SectionHeader::new(t, 0, length, 1);
                wire.extend_from_slice(zerocopy::IntoBytes::as_bytes(&header));
                wire.resize(wire.len() + (1 << 20), 0);
                let mut r = StreamReader::new(&wire[..]);
                r.read_message().unwrap();
                let before = r.buf.capacity();
                assert!(before < 64, "Start left {before} bytes");
                let err = r.read_message().unwrap_err();
                assert!(matches!(err, StreamError::Oversized { .. }), "{t}: {err}");
                assert_eq!(r.buf.capacity(), before, "{t}");
                assert_eq!(
                    r.offset as usize,
                    28 + HEADER_LEN,
                    "{t}: read past the header"
                );
            }
        }
    }
}
