//! One vring as the frontend programs it, and the vhost-user encoding of its base
//! (SET_VRING_BASE / GET_VRING_BASE, docs/spec-decisions.md §14).
//!
//! - Split: `num` is the next available-ring index the device reads (`last_avail_idx`); the used
//!   index lives in guest memory.
//! - Packed: bits 0–14 the next available (descriptor) index, bit 15 its wrap counter, bits
//!   16–30 the next used index, bit 31 its wrap counter. Each 16-bit half is exactly our queue
//!   state's packed encoding (seed 001, spec-decisions §3), so the halves map one to one.

use std::fs::File;
use std::sync::Arc;

use virtio_lm_queue::{QueueState, RingKind, Virtqueue};

use crate::inflight::QueueRegion;
use vm_memory::GuestAddress;

/// Ring addresses translated to guest-physical ones (SET_VRING_ADDR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAddresses {
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc: GuestAddress,
    /// Available ring (split) or driver event suppression (packed).
    pub driver: GuestAddress,
    /// Used ring (split) or device event suppression (packed).
    pub device: GuestAddress,
}

/// One vring's state on the backend side.
#[derive(Debug, Default)]
pub struct Vring {
    /// SET_VRING_NUM; 0 until set.
    pub size: u16,
    /// SET_VRING_ADDR, translated.
    pub addresses: Option<RingAddresses>,
    /// SET_VRING_BASE (raw vhost-user encoding); also what GET_VRING_BASE last returned.
    pub base: u32,
    /// SET_VRING_KICK.
    pub kick: Option<Arc<File>>,
    /// SET_VRING_CALL.
    pub call: Option<File>,
    /// SET_VRING_ERR.
    pub err: Option<File>,
    /// SET_VRING_ENABLE (enabled from the start without PROTOCOL_FEATURES).
    pub enabled: bool,
    /// The running queue: present from the start of the ring until GET_VRING_BASE.
    pub queue: Option<Virtqueue>,
    /// A kick (or a start) not processed yet.
    pub kicked: bool,
    /// Processing failed (malformed chain, ring outside memory): the ring is left alone until
    /// it is stopped and started again.
    pub broken: bool,
    /// The ring's in-flight record, while it runs with an in-flight area (INFLIGHT_SHMFD).
    pub region: Option<QueueRegion>,
}

impl Vring {
    /// Processing may take chains from this ring now.
    pub fn is_live(&self) -> bool {
        self.queue.is_some() && self.enabled && !self.broken
    }
}

/// Why a vring base was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("vring base {base:#x} is not valid for a {kind:?} ring of {size}")]
pub struct BaseError {
    /// The value.
    pub base: u32,
    /// The ring format.
    pub kind: RingKind,
    /// The queue size.
    pub size: u16,
}

/// The queue state a vring base stands for; `size` 0 means not known yet (only the parts that do
/// not depend on it are checked).
pub fn decode_base(kind: RingKind, base: u32, size: u16) -> Result<QueueState, BaseError> {
    let err = BaseError { base, kind, size };
    let mut state = QueueState::initial(kind);
    match kind {
        RingKind::Split => {
            state.avail_state = u16::try_from(base).map_err(|_| err)?;
            state.used_state = 0;
        }
        RingKind::Packed => {
            let (avail, used) = (base as u16, (base >> 16) as u16);
            let index_ok = |half: u16| size == 0 || (half & 0x7fff) < size;
            if !index_ok(avail) || !index_ok(used) {
                return Err(err);
            }
            state.avail_state = avail;
            state.used_state = used;
        }
    }
    Ok(state)
}

/// The vring base of a queue state (its in-flight list is not part of it: the ring is drained
/// before its base is read).
pub fn encode_base(kind: RingKind, state: &QueueState) -> u32 {
    match kind {
        RingKind::Split => u32::from(state.avail_state),
        RingKind::Packed => u32::from(state.avail_state) | (u32::from(state.used_state) << 16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec-decisions §14: packed base = avail index and wrap counter in bits 0–15, used index
    /// and wrap counter in bits 16–31; split base = last_avail_idx.
    #[test]
    fn base_encodings_round_trip() {
        let packed = 0x8005_0003u32;
        let state = decode_base(RingKind::Packed, packed, 8).unwrap();
        assert_eq!(state.avail_state, 0x0003);
        assert_eq!(state.used_state, 0x8005);
        assert_eq!(encode_base(RingKind::Packed, &state), packed);
        let split = decode_base(RingKind::Split, 0xfffe, 8).unwrap();
        assert_eq!(split.avail_state, 0xfffe);
        assert_eq!(encode_base(RingKind::Split, &split), 0xfffe);
    }

    /// A packed index at or beyond the queue size, or a split base wider than 16 bits, is
    /// refused.
    #[test]
    fn bases_beyond_the_ring_are_refused() {
        assert!(decode_base(RingKind::Packed, 8, 8).is_err());
        assert!(decode_base(RingKind::Packed, 8 << 16, 8).is_err());
        assert!(decode_base(RingKind::Packed, 0x8007_8007, 8).is_ok());
        assert!(decode_base(RingKind::Split, 0x1_0000, 8).is_err());
    }
}
