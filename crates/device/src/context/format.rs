//! The field format (spec-decisions §5): each field is `le16 type; le16 flags; le32 length;
//! u8 value[length]`, an 8-byte header and a value padded with zeros to a multiple of 8 bytes;
//! `length` excludes the padding.
//!
//! Receiving: padding bytes may hold anything (they are never interpreted), but they must be
//! present, and nothing is ever read past the buffer. A length over [`MAX_FIELD_LEN`] is refused
//! before anything is allocated for it.

use virtio_lm_spec::context::{
    padded_len, ContextFieldHeader, FieldType, FIELD_FLAG_OPTIONAL, FIELD_HEADER_LEN,
};
use virtio_lm_spec::zerocopy::{FromBytes, IntoBytes};

use super::error::ContextError;

/// Largest value length accepted or written (16 MiB): far above any real context, small enough
/// that a hostile length cannot make a receiver reserve much memory.
pub const MAX_FIELD_LEN: usize = 16 << 20;

/// One field as found in a buffer. The value borrows the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// Byte offset of the field header in the buffer.
    pub offset: usize,
    /// The type.
    pub field_type: FieldType,
    /// The flags ([`FIELD_FLAG_OPTIONAL`] in bit 0).
    pub flags: u16,
    /// The value, without padding.
    pub value: &'a [u8],
}

impl Field<'_> {
    /// True when a receiver that does not know the type may skip the field.
    pub fn is_optional(&self) -> bool {
        self.flags & FIELD_FLAG_OPTIONAL != 0
    }
}

/// Iterates over the fields of a buffer, checking only the framing. Yields at most one error,
/// then ends.
#[derive(Clone, Debug)]
pub struct ContextReader<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> ContextReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            offset: 0,
            failed: false,
        }
    }

    /// Offset of the next field (the length of the buffer once every field was read).
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn read(&mut self) -> Result<Field<'a>, ContextError> {
        let offset = self.offset;
        let rest = self.buf.get(offset..).unwrap_or_default();
        let Ok((header, after)) = ContextFieldHeader::read_from_prefix(rest) else {
            return Err(ContextError::TruncatedHeader {
                offset,
                remaining: rest.len(),
            });
        };
        let field_type = header.field_type();
        let length = header.length();
        let len = usize::try_from(length)
            .ok()
            .filter(|&l| l <= MAX_FIELD_LEN)
            .ok_or(ContextError::LengthOverflow {
                offset,
                field_type,
                length: u64::from(length),
                max: MAX_FIELD_LEN,
            })?;
        let needed = padded_len(len);
        let value = after
            .get(..needed)
            .and_then(|padded| padded.get(..len))
            .ok_or(ContextError::TruncatedValue {
                offset,
                field_type,
                needed,
                remaining: after.len(),
            })?;
        self.offset = offset + FIELD_HEADER_LEN + needed;
        Ok(Field {
            offset,
            field_type,
            flags: header.flags(),
            value,
        })
    }
}

impl<'a> Iterator for ContextReader<'a> {
    type Item = Result<Field<'a>, ContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let field = self.read();
        self.failed = field.is_err();
        Some(field)
    }
}

/// Splits `buf` into fields (framing only: no marker or order rules).
pub fn parse_fields(buf: &[u8]) -> Result<Vec<Field<'_>>, ContextError> {
    ContextReader::new(buf).collect()
}

/// Builds a context in one growing buffer; values are written in place, so encoding allocates
/// nothing but the output.
#[derive(Clone, Debug, Default)]
pub struct ContextWriter {
    buf: Vec<u8>,
}

impl ContextWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that appends to `buf` (to reuse its allocation).
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    /// Writes a START_MARKER.
    pub fn start_marker(&mut self) {
        self.empty(FieldType::START_MARKER);
    }

    /// Writes an END_MARKER.
    pub fn end_marker(&mut self) {
        self.empty(FieldType::END_MARKER);
    }

    /// Writes a DISCARD: the receiver drops what it got since the last START_MARKER.
    pub fn discard(&mut self) {
        self.empty(FieldType::DISCARD);
    }

    fn empty(&mut self, field_type: FieldType) {
        let header = ContextFieldHeader::new(field_type, 0, 0);
        self.buf.extend_from_slice(header.as_bytes());
    }

    /// Writes a field with `value`. Fails (writing nothing) if the value is longer than
    /// [`MAX_FIELD_LEN`].
    pub fn field(
        &mut self,
        field_type: FieldType,
        flags: u16,
        value: &[u8],
    ) -> Result<(), ContextError> {
        self.field_with(field_type, flags, |v| v.put(value))
    }

    /// Writes a field whose value `fill` appends in place. Fails (writing nothing) if the value
    /// is longer than [`MAX_FIELD_LEN`].
    pub fn field_with(
        &mut self,
        field_type: FieldType,
        flags: u16,
        fill: impl FnOnce(&mut ValueWriter<'_>),
    ) -> Result<(), ContextError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FIELD_HEADER_LEN]);
        fill(&mut ValueWriter { buf: &mut self.buf });
        let len = self.buf.len() - start - FIELD_HEADER_LEN;
        let length = u32::try_from(len).ok().filter(|_| len <= MAX_FIELD_LEN);
        let (Some(length), Some(slot)) = (length, self.buf.get_mut(start..start + 8)) else {
            self.buf.truncate(start);
            return Err(ContextError::Unencodable {
                field_type,
                reason: "value longer than MAX_FIELD_LEN",
            });
        };
        slot.copy_from_slice(ContextFieldHeader::new(field_type, flags, length).as_bytes());
        self.buf
            .resize(start + FIELD_HEADER_LEN + padded_len(len), 0);
        Ok(())
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The finished buffer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Appends one field's value (little-endian numbers).
pub struct ValueWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl ValueWriter<'_> {
    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a `u8`.
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends an `le16`.
    pub fn put_u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    /// Appends an `le32`.
    pub fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    /// Appends an `le64`.
    pub fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

/// Reads little-endian numbers from a value, front to back; every read checks the bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueCursor<'a> {
    rest: &'a [u8],
}

impl<'a> ValueCursor<'a> {
    pub(crate) fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
}
