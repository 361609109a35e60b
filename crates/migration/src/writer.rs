//! [`StreamWriter`]: frames messages into sections over any [`std::io::Write`].

use std::io::{self, Write};

use crate::error::WriteError;
use crate::header::{MessageType, Phase, SectionHeader, CRC_LEN, HEADER_LEN, PAGE_SIZE};
use crate::memory::{self, RangeRef};
use crate::message::{self, Message};
use zerocopy::IntoBytes;

/// Pieces at least this long go to the inner writer directly (page data, without a copy);
/// shorter ones are gathered so that a TcpStream does not see one tiny write per range header.
const DIRECT_WRITE: usize = PAGE_SIZE;
/// Gathered bytes are handed on once they reach this much.
const STAGING_FLUSH: usize = 64 << 10;

/// Writes messages as sections (header, payload, crc32c), numbering them from 0.
///
/// Plain blocking std I/O: over a `TcpStream`, the caller sets the write timeout; a timeout or any
/// other write error is returned and the writer refuses further writes (the peer would see a
/// cut section). Each message is handed to the inner writer completely before `write` returns;
/// call [`StreamWriter::flush`] when the inner writer buffers.
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    inner: W,
    sequence: u32,
    bytes: u64,
    staging: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> StreamWriter<W> {
    /// A writer whose first section will be number 0 (it should be a Start).
    pub fn new(inner: W) -> Self {
        StreamWriter {
            inner,
            sequence: 0,
            bytes: 0,
            staging: Vec::new(),
            poisoned: false,
        }
    }

    /// Sends one message as one section.
    pub fn write(&mut self, msg: &Message) -> Result<(), WriteError> {
        let ty = msg.msg_type();
        if let Message::Memory(chunk) = msg {
            let ranges: Vec<RangeRef<'_>> = chunk.ranges.iter().map(|r| r.as_ref()).collect();
            return self.write_memory_section(chunk.round, chunk.phase, &ranges);
        }
        let payload = message::encode_small(msg).map_err(|reason| self.invalid(ty, reason))?;
        self.section(ty, msg.flags(), payload.len(), |sink| sink.put(&payload))
    }

    /// Sends whole guest pages starting at `guest_addr`, straight from the caller's buffer:
    /// all-zero runs become zero markers, and as many Memory sections as the per-section limits
    /// need are written. Returns how many sections that took.
    pub fn write_memory(
        &mut self,
        round: u32,
        phase: Phase,
        guest_addr: u64,
        data: &[u8],
    ) -> Result<usize, WriteError> {
        if !data.len().is_multiple_of(PAGE_SIZE) {
            let reason = format!("{} bytes are not whole pages", data.len());
            return Err(self.invalid(MessageType::Memory, reason));
        }
        let sections = memory::pack_sections(memory::split_runs(guest_addr, data));
        for ranges in &sections {
            self.write_memory_section(round, phase, ranges)?;
        }
        Ok(sections.len())
    }

    fn write_memory_section(
        &mut self,
        round: u32,
        phase: Phase,
        ranges: &[RangeRef<'_>],
    ) -> Result<(), WriteError> {
        memory::check_ranges(ranges).map_err(|reason| self.invalid(MessageType::Memory, reason))?;
        let len = memory::payload_len(ranges);
        self.section(MessageType::Memory, phase.flags(), len, |sink| {
            memory::emit_payload(round, ranges, |piece| sink.put(piece))
        })
    }

    fn invalid(&self, msg_type: MessageType, reason: String) -> WriteError {
        WriteError::Invalid {
            section: self.sequence,
            msg_type,
            reason,
        }
    }

    fn section(
        &mut self,
        ty: MessageType,
        flags: u16,
        len: usize,
        body: impl FnOnce(&mut Sink<'_, W>) -> io::Result<()>,
    ) -> Result<(), WriteError> {
        let section = self.sequence;
        if self.poisoned {
            return Err(WriteError::Poisoned { section });
        }
        if len > ty.max_payload() {
            let reason = format!("{len} bytes of payload, limit {}", ty.max_payload());
            return Err(self.invalid(ty, reason));
        }
        let Some(next) = self.sequence.checked_add(1) else {
            return Err(self.invalid(ty, "sequence numbers exhausted".into()));
        };
        // len <= max_payload, which fits in u32 for every type.
        let header = SectionHeader::new(ty, flags, len as u32, section);
        self.staging.clear();
        let mut sink = Sink {
            inner: &mut self.inner,
            staging: &mut self.staging,
            crc: 0,
        };
        let result = sink
            .put(header.as_bytes())
            .and_then(|()| body(&mut sink))
            .and_then(|()| {
                let crc = sink.crc;
                sink.staging.extend_from_slice(&crc.to_le_bytes());
                sink.drain()
            });
        if let Err(source) = result {
            self.poisoned = true;
            return Err(WriteError::Io { section, source });
        }
        self.sequence = next;
        self.bytes += (HEADER_LEN + len + CRC_LEN) as u64;
        Ok(())
    }

    /// Flushes the inner writer.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.inner.flush().map_err(|source| WriteError::Io {
            section: self.sequence,
            source,
        })
    }

    /// Sections written so far (the next section's number).
    pub fn sections(&self) -> u32 {
        self.sequence
    }

    /// Wire bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably (e.g. to change a socket timeout).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Gives the inner writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Accumulates the crc of everything put, gathering small pieces.
struct Sink<'a, W: Write> {
    inner: &'a mut W,
    staging: &'a mut Vec<u8>,
    crc: u32,
}

impl<W: Write> Sink<'_, W> {
    fn put(&mut self, piece: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, piece);
        if piece.len() >= DIRECT_WRITE {
            self.drain()?;
            return self.inner.write_all(piece);
        }
        self.staging.extend_from_slice(piece);
        if self.staging.len() >= STAGING_FLUSH {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        if !self.staging.is_empty() {
            self.inner.write_all(self.staging)?;
            self.staging.clear();
        }
        Ok(())
    }
}
