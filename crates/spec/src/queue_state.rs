//! Seed-001 virtqueue state encodings (spec-decisions §3) and the vhost-user
//! vring-base encoding of the same state (spec-decisions §6).
//!
//! Plain values: range checks against a queue size and the rules for when
//! state may be read or written live in the queue and device crates.
//!
//! Linux vDPA's C bitfield puts the wrap counter in bit 0; these encodings
//! put it in bit 15 (and 31), and must never be reinterpreted as vDPA's.

/// Mask of the 15-bit index part of a packed position.
pub const PACKED_INDEX_MASK: u16 = 0x7fff;
/// The wrap counter bit of a packed position.
pub const PACKED_WRAP_BIT: u16 = 0x8000;

/// Split available state: `le16 last_avail_idx`, the free-running index of
/// the next available ring entry the device will read.
///
/// Split queues have no used state: `used.idx` lives in guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SplitAvailState(pub u16);

impl SplitAvailState {
    /// `last_avail_idx`.
    pub const fn last_avail_idx(self) -> u16 {
        self.0
    }

    /// The 16-bit register / context encoding.
    pub const fn to_u16(self) -> u16 {
        self.0
    }

    /// From the 16-bit register / context encoding.
    pub const fn from_u16(v: u16) -> Self {
        SplitAvailState(v)
    }

    /// vhost-user `VHOST_USER_{GET,SET}_VRING_BASE` value: bits 0-15.
    pub const fn to_vring_base(self) -> u32 {
        self.0 as u32
    }

    /// From a vhost-user vring base; bits 16-31 carry nothing for split
    /// queues and are dropped, as vhost-user back-ends do.
    pub const fn from_vring_base(v: u32) -> Self {
        SplitAvailState(v as u16)
    }
}

/// A packed ring position: a 15-bit descriptor index plus a wrap counter,
/// encoded as `index | wrap_counter << 15`.
///
/// Used both for the available state (`last_avail_idx`,
/// `last_avail_wrap_counter`) and the used state (`used_idx`,
/// `used_wrap_counter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackedRingPosition {
    /// Descriptor ring slot, 0..=0x7fff (and below the queue size).
    pub index: u16,
    /// The wrap counter (`true` = 1).
    pub wrap_counter: bool,
}

impl PackedRingPosition {
    /// Slot 0 with the wrap counter at 1: both counters start at 1.
    pub const INITIAL: PackedRingPosition = PackedRingPosition {
        index: 0,
        wrap_counter: true,
    };

    /// A position from its parts.
    pub const fn new(index: u16, wrap_counter: bool) -> Self {
        PackedRingPosition {
            index,
            wrap_counter,
        }
    }

    /// The 16-bit encoding. Index bits above 14 are dropped; a caller that
    /// might hold such an index must validate it first.
    pub const fn to_u16(self) -> u16 {
        (self.index & PACKED_INDEX_MASK) | ((self.wrap_counter as u16) << 15)
    }

    /// From the 16-bit encoding; every value decodes.
    pub const fn from_u16(v: u16) -> Self {
        PackedRingPosition {
            index: v & PACKED_INDEX_MASK,
            wrap_counter: v & PACKED_WRAP_BIT != 0,
        }
    }
}

impl Default for PackedRingPosition {
    fn default() -> Self {
        PackedRingPosition::INITIAL
    }
}

/// The full state of a packed queue: available and used positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PackedQueueState {
    /// `last_avail_idx` / `last_avail_wrap_counter`: next descriptor the device reads.
    pub avail: PackedRingPosition,
    /// `used_idx` / `used_wrap_counter`: next slot the device writes.
    pub used: PackedRingPosition,
}

impl PackedQueueState {
    /// Both positions at slot 0 with wrap counters 1.
    pub const INITIAL: PackedQueueState = PackedQueueState {
        avail: PackedRingPosition::INITIAL,
        used: PackedRingPosition::INITIAL,
    };

    /// From the two 16-bit registers / context fields.
    pub const fn from_u16s(avail_state: u16, used_state: u16) -> Self {
        PackedQueueState {
            avail: PackedRingPosition::from_u16(avail_state),
            used: PackedRingPosition::from_u16(used_state),
        }
    }

    /// vhost-user vring base: bits 0-14 avail index, 15 avail wrap, 16-30
    /// used index, 31 used wrap.
    pub const fn to_vring_base(self) -> u32 {
        (self.avail.to_u16() as u32) | ((self.used.to_u16() as u32) << 16)
    }

    /// From a vhost-user vring base; every value decodes.
    pub const fn from_vring_base(v: u32) -> Self {
        PackedQueueState::from_u16s(v as u16, (v >> 16) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 001: "When VIRTIO_RING_F_PACKED is not negotiated, it contains:
    /// le16 last_avail_idx;" — all 16 bits are the index, free-running.
    #[test]
    fn split_is_last_avail_idx() {
        for v in [0u16, 255, 0x7fff, 0x8000, 0xffff] {
            let s = SplitAvailState::from_u16(v);
            assert_eq!(s.last_avail_idx(), v);
            assert_eq!(s.to_u16(), v);
        }
    }

    /// Seed 001: "le16 { last_avail_idx : 15; last_avail_wrap_counter : 1; }"
    /// — bit 15 carries the wrap counter, bits 0-14 the index.
    #[test]
    fn packed_wrap_counter_is_bit_15() {
        assert_eq!(PackedRingPosition::new(0, true).to_u16(), 0x8000);
        assert_eq!(PackedRingPosition::new(1, false).to_u16(), 0x0001);
        assert_eq!(PackedRingPosition::new(0x7fff, false).to_u16(), 0x7fff);
        assert_eq!(PackedRingPosition::new(0x7fff, true).to_u16(), 0xffff);
        assert_eq!(
            PackedRingPosition::from_u16(0x8005),
            PackedRingPosition::new(5, true)
        );
        // vDPA's bit-0 counter would read 0x0001 as wrap=1, index 0.
        assert_eq!(
            PackedRingPosition::from_u16(0x0001),
            PackedRingPosition::new(1, false)
        );
    }

    /// Seed 001: "le16 { used_idx : 15; used_wrap_counter : 1; }" — same
    /// encoding for the used state; pitfall 1 round-trips at 0, size-1 and
    /// 0x7fff with both counters, including non-power-of-2 sizes.
    #[test]
    fn packed_round_trip() {
        for size in [1u16, 3, 256, 1000, 0x8000] {
            for index in [0, size - 1, size / 2] {
                for wrap_counter in [false, true] {
                    let p = PackedRingPosition::new(index, wrap_counter);
                    assert_eq!(PackedRingPosition::from_u16(p.to_u16()), p);
                }
            }
        }
        for v in [0u16, 0x7fff, 0x8000, 0xffff] {
            assert_eq!(PackedRingPosition::from_u16(v).to_u16(), v);
        }
    }

    /// spec-decisions §3: "Wrap counters start at 1."
    #[test]
    fn initial_state() {
        assert_eq!(PackedRingPosition::INITIAL.to_u16(), 0x8000);
        assert_eq!(PackedRingPosition::default(), PackedRingPosition::INITIAL);
        assert_eq!(PackedQueueState::default(), PackedQueueState::INITIAL);
        assert_eq!(PackedQueueState::INITIAL.to_vring_base(), 0x8000_8000);
        assert_eq!(SplitAvailState::default().to_u16(), 0);
    }

    /// spec-decisions §6: vhost-user packed vring base "bits 0–14 avail idx, 15
    /// avail wrap, 16–30 used idx, 31 used wrap", with avail ≠ used.
    #[test]
    fn packed_vring_base() {
        let s = PackedQueueState {
            avail: PackedRingPosition::new(0x7fff, true),
            used: PackedRingPosition::new(3, false),
        };
        assert_eq!(s.to_vring_base(), 0x0003_ffff);
        assert_eq!(PackedQueueState::from_vring_base(0x0003_ffff), s);
        let s = PackedQueueState::from_u16s(0x0001, 0x8002);
        assert_eq!(s.to_vring_base(), 0x8002_0001);
        assert_eq!(s.used, PackedRingPosition::new(2, true));
        for v in [0u32, 0x8000_0000, 0x0000_8000, 0x7fff_7fff, u32::MAX] {
            assert_eq!(PackedQueueState::from_vring_base(v).to_vring_base(), v);
        }
    }

    /// spec-decisions §6: vhost-user split vring base "bits 0–15 next avail".
    #[test]
    fn split_vring_base() {
        for v in [0u16, 1, 0x7fff, 0xffff] {
            let s = SplitAvailState(v);
            assert_eq!(s.to_vring_base(), u32::from(v));
            assert_eq!(SplitAvailState::from_vring_base(s.to_vring_base()), s);
        }
        assert_eq!(SplitAvailState::from_vring_base(0x0001_0002).0, 2);
    }
}
