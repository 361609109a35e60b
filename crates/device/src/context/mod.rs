//! Device context (spec-decisions §5, seed 004): the format a device's complete state travels in
//! during live migration, its typed model, and saving and restoring a [`crate::DeviceCore`].
//!
//! - [`mod@format`]: the field framing, a streaming [`ContextWriter`] and a [`ContextReader`].
//! - [`DeviceContext`] with [`encode`] and [`decode`] (markers, DISCARD, order rules).
//! - [`mod@persist`]: a device type's own state, typed ([`Persist`]), and the object-safe seam
//!   that carries it through [`crate::VirtioDevice`] (decoding is validation; restoring a
//!   [`ValidatedState`] cannot fail). Device types get [`DeviceField`] values, never framing.
//! - [`crate::DeviceCore::save_context`], [`crate::DeviceCore::validate_context`] and
//!   [`crate::DeviceCore::restore_context`]. Their code is in `core/context.rs`, a child
//!   module of `core` so it can reach the core's private state without widening it.
//!
//! # VQ_INFLIGHT_CHAINS (0x0113), our extension
//!
//! spec-decisions §5 gives VQ_INFLIGHT (optional): `le16 index; le16 count; le16 reserved[2];
//! le16 heads[count]`. Heads are not enough: in a packed ring the device's used descriptors
//! overwrite ring slots of chains that are still in flight, so a destination cannot re-read
//! those chains from the ring. [`VQ_INFLIGHT_CHAINS`] therefore carries the chains themselves:
//! the same 8-byte header, then per chain `le16 id; le16 ring_slots; le16 nsegs; le16 reserved`
//! and `nsegs` times `le64 addr; le32 len; le32 flags` (bit 0 [`SEGMENT_F_WRITABLE`]). It is
//! mandatory (a receiver that cannot use it must refuse the context rather than lose the
//! requests). The encoder writes both fields for a queue with chains in flight (VQ_INFLIGHT for
//! receivers that only know spec-decisions §5); the decoder requires both to list the same ids in
//! the same order when both are present, and refuses heads without chains.
//!
//! # Byte-level decisions
//!
//! Padding must be present but may hold anything; reserved fields are ignored on receipt and
//! zero on send. Values are bounded ([`MAX_FIELD_LEN`], [`MAX_DEVICE_CONFIG_LEN`]) before
//! anything is allocated for them. Decoding never panics and never reads past the buffer.

pub(crate) mod checks;
mod decode;
mod error;
pub mod format;
mod model;
pub mod persist;
mod positions;

use virtio_lm_spec::context::FieldType;

pub use decode::decode;
pub use error::ContextError;
pub use format::{parse_fields, ContextReader, ContextWriter, Field, ValueWriter, MAX_FIELD_LEN};
pub use model::{
    encode, encode_into, is_device_specific, DeviceContext, DeviceField, QueueContext, VqConfig,
    VIRTIO_MSI_NO_VECTOR,
};
pub use persist::{Persist, StateFields, ValidatedState};

/// VQ_INFLIGHT_CHAINS (0x0113), mandatory when present: the in-flight chains of one queue with
/// their buffers (see the module documentation). Our extension to spec-decisions §5, kept here and
/// not in `virtio_lm_spec` because it is not part of the notes' table.
pub const VQ_INFLIGHT_CHAINS: FieldType = FieldType(0x0113);

/// VQ_INFLIGHT_CHAINS segment flag bit 0: the buffer is device-writable.
pub const SEGMENT_F_WRITABLE: u32 = 1;

/// Largest DEVICE_CONFIG value accepted (a device-type configuration space is far smaller).
pub const MAX_DEVICE_CONFIG_LEN: usize = 4096;

/// Fuzzing entry point (for a cargo-fuzz target): decodes `data` and, if it is a valid context,
/// checks that it re-encodes and decodes to the same context.
///
/// # Panics
///
/// When the round trip breaks: that is the finding. Never for malformed input.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let fields = parse_fields(data);
    let Ok(ctx) = decode(data) else {
        return;
    };
    assert!(fields.is_ok(), "a decodable context has valid framing");
    let bytes = match encode(&ctx) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded context must re-encode: {e}"),
    };
    match decode(&bytes) {
        Ok(again) => assert_eq!(again, ctx, "decode(encode(ctx)) != ctx"),
        Err(e) => panic!("a re-encoded context must decode: {e}"),
    }
    match encode(&ctx) {
        Ok(twice) => assert_eq!(twice, bytes, "encoding is deterministic"),
        Err(e) => panic!("a decoded context must re-encode: {e}"),
    }
}
