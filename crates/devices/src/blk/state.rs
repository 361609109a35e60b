//! The blk-specific part of the device context (spec-notes §5, types 0x0200–0x02FF).
//!
//! [`VirtioDevice::save_state`](virtio_lm_device::VirtioDevice::save_state) returns, and
//! `validate_state`/`restore_state` take, a sequence of context fields in the §5 encoding, so
//! the context layer can splice them into a device context as they are:
//!
//! ```text
//! le16 type; le16 flags; le32 length; u8 value[length]; zero padding to a multiple of 8
//! ```
//!
//! | Type | Name | Value |
//! |---|---|---|
//! | 0x0200 | BLK_WRITEBACK (mandatory, exactly once) | `u8`: 0 writethrough, 1 writeback |
//!
//! Rules: every type must be in 0x0200–0x02FF; flags bits other than OPTIONAL (bit 0) must be
//! 0; an unknown type is skipped if OPTIONAL and rejected otherwise; a known type must have its
//! exact length, appear once, and carry a valid value; padding bytes must be 0; nothing may
//! follow the last field. An empty state is rejected (BLK_WRITEBACK is missing).

use virtio_lm_device::DeviceError;
use virtio_lm_spec::context::{padded_len, FieldType, FIELD_FLAG_OPTIONAL, FIELD_HEADER_LEN};

/// The device-specific state a blk device saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlkState {
    pub(crate) writeback: u8,
}

impl BlkState {
    /// Encodes the state as context fields.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIELD_HEADER_LEN + 8);
        push_field(&mut out, FieldType::BLK_WRITEBACK, 0, &[self.writeback]);
        out
    }

    /// Decodes and validates a state; nothing is applied.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DeviceError> {
        let bad = DeviceError::BadState;
        let mut writeback = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < FIELD_HEADER_LEN {
                return Err(bad("blk state: truncated field header"));
            }
            let field_type = FieldType(u16::from_le_bytes([rest[0], rest[1]]));
            let flags = u16::from_le_bytes([rest[2], rest[3]]);
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let body = &rest[FIELD_HEADER_LEN..];
            // Checked before padding is added, so `padded_len` cannot overflow.
            if body.len() < len || body.len() < padded_len(len) {
                return Err(bad("blk state: truncated field value"));
            }
            let padded = padded_len(len);
            let (value, padding) = body[..padded].split_at(len);
            if padding.iter().any(|&b| b != 0) {
                return Err(bad("blk state: non-zero padding"));
            }
            if !field_type.is_blk_specific() {
                return Err(bad("blk state: field type outside 0x0200-0x02FF"));
            }
            if flags & !FIELD_FLAG_OPTIONAL != 0 {
                return Err(bad("blk state: reserved field flags set"));
            }
            match field_type {
                FieldType::BLK_WRITEBACK => {
                    if writeback.is_some() {
                        return Err(bad("blk state: BLK_WRITEBACK appears twice"));
                    }
                    match value {
                        [v @ (0 | 1)] => writeback = Some(*v),
                        [_] => return Err(bad("blk state: BLK_WRITEBACK is not 0 or 1")),
                        _ => return Err(bad("blk state: BLK_WRITEBACK length is not 1")),
                    }
                }
                _ if flags & FIELD_FLAG_OPTIONAL != 0 => {}
                _ => return Err(bad("blk state: unknown mandatory field")),
            }
            rest = &body[padded..];
        }
        let writeback = writeback.ok_or(bad("blk state: BLK_WRITEBACK missing"))?;
        Ok(Self { writeback })
    }
}

/// Appends one field in the spec-notes §5 encoding.
pub(crate) fn push_field(out: &mut Vec<u8>, field_type: FieldType, flags: u16, value: &[u8]) {
    out.extend_from_slice(&field_type.0.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + padded_len(value.len()) - value.len(), 0);
}
