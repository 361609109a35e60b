//! Virtqueue ring flags, sizes, offsets and layouts (split and packed).
//!
//! Sizes and offsets are in bytes from the start of the respective area
//! (descriptor table, driver area, device area). Queue sizes are `u16`
//! because no ring holds more than [`MAX_QUEUE_SIZE`] entries.

pub mod packed;
pub mod split;

pub use packed::{PackedDescriptor, PackedEventSuppression};
pub use split::{AvailRingHeader, SplitDescriptor, UsedElem, UsedRingHeader};

/// Descriptor continues via the `next` field (split) or the next slot (packed).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Buffer holds a table of indirect descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Packed ring: AVAIL flag (bit 7), equal to the driver wrap counter when the
/// driver makes a descriptor available.
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// Packed ring: USED flag (bit 15), equal to AVAIL once the device has used it.
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;

/// Split ring `avail.flags`: the driver asks for no used-buffer notification.
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Split ring `used.flags`: the device asks for no available-buffer notification.
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// Packed event suppression `flags`: notifications enabled.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Packed event suppression `flags`: notifications disabled.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Packed event suppression `flags`: notify only at `desc` (needs EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// The bits of packed event suppression `flags` that carry the mode (0-1);
/// bits 2-15 are reserved.
pub const RING_EVENT_FLAGS_MASK: u16 = 3;

/// Largest queue size, split or packed (2^15).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Split descriptor table alignment in bytes.
pub const SPLIT_DESC_ALIGN: u64 = 16;
/// Split available ring (driver area) alignment in bytes.
pub const SPLIT_AVAIL_ALIGN: u64 = 2;
/// Split used ring (device area) alignment in bytes.
pub const SPLIT_USED_ALIGN: u64 = 4;
/// Packed descriptor ring alignment in bytes.
pub const PACKED_DESC_ALIGN: u64 = 16;
/// Packed event suppression structures (driver and device area) alignment.
pub const PACKED_EVENT_ALIGN: u64 = 4;

/// Size of one split or packed descriptor.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Size of the packed driver or device event suppression area.
pub const PACKED_EVENT_SIZE: usize = 4;

/// Bytes of a split descriptor table with `n` entries: `16 * n`.
pub const fn split_desc_table_size(n: u16) -> usize {
    DESCRIPTOR_SIZE * n as usize
}

/// Bytes of a split available ring with `n` entries: `4 + 2n`, plus 2 for
/// `used_event` when EVENT_IDX is negotiated.
pub const fn split_avail_ring_size(n: u16, event_idx: bool) -> usize {
    4 + 2 * n as usize + if event_idx { 2 } else { 0 }
}

/// Bytes of a split used ring with `n` entries: `4 + 8n`, plus 2 for
/// `avail_event` when EVENT_IDX is negotiated.
pub const fn split_used_ring_size(n: u16, event_idx: bool) -> usize {
    4 + 8 * n as usize + if event_idx { 2 } else { 0 }
}

/// Bytes of a packed descriptor ring with `n` entries: `16 * n`.
pub const fn packed_desc_ring_size(n: u16) -> usize {
    DESCRIPTOR_SIZE * n as usize
}

/// Offset of descriptor `i` in a split table or packed ring: `16 * i`.
pub const fn desc_offset(i: u16) -> usize {
    DESCRIPTOR_SIZE * i as usize
}

/// Offset of `avail.ring[i]` in the split driver area: `4 + 2i`.
pub const fn split_avail_entry_offset(i: u16) -> usize {
    4 + 2 * i as usize
}

/// Offset of `used_event` in a split driver area of `n` entries: `4 + 2n`.
pub const fn split_used_event_offset(n: u16) -> usize {
    4 + 2 * n as usize
}

/// Offset of `used.ring[i]` in the split device area: `4 + 8i`.
pub const fn split_used_elem_offset(i: u16) -> usize {
    4 + 8 * i as usize
}

/// Offset of `avail_event` in a split device area of `n` entries: `4 + 8n`.
pub const fn split_avail_event_offset(n: u16) -> usize {
    4 + 8 * n as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring as r;

    /// virtio 1.4 virtqueue chapters flag values agree with Linux's `VRING_*` constants (which
    /// give the packed AVAIL/USED flags as bit numbers 7 and 15).
    #[test]
    fn flags_match_virtio_bindings() {
        for (ours, linux) in [
            (VIRTQ_DESC_F_NEXT, r::VRING_DESC_F_NEXT),
            (VIRTQ_DESC_F_WRITE, r::VRING_DESC_F_WRITE),
            (VIRTQ_DESC_F_INDIRECT, r::VRING_DESC_F_INDIRECT),
            (VIRTQ_DESC_F_AVAIL, 1 << r::VRING_PACKED_DESC_F_AVAIL),
            (VIRTQ_DESC_F_USED, 1 << r::VRING_PACKED_DESC_F_USED),
            (VIRTQ_AVAIL_F_NO_INTERRUPT, r::VRING_AVAIL_F_NO_INTERRUPT),
            (VIRTQ_USED_F_NO_NOTIFY, r::VRING_USED_F_NO_NOTIFY),
            (RING_EVENT_FLAGS_ENABLE, r::VRING_PACKED_EVENT_FLAG_ENABLE),
            (RING_EVENT_FLAGS_DISABLE, r::VRING_PACKED_EVENT_FLAG_DISABLE),
            (RING_EVENT_FLAGS_DESC, r::VRING_PACKED_EVENT_FLAG_DESC),
        ] {
            assert_eq!(u32::from(ours), linux);
        }
    }

    /// The flag values as numbers, so a wrong binding cannot hide a wrong value.
    #[test]
    fn flag_values() {
        let chain_flags = [VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT];
        assert_eq!(chain_flags, [1, 2, 4]);
        assert_eq!([VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED], [0x80, 0x8000]);
        assert_eq!([VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY], [1, 1]);
        let events = [
            RING_EVENT_FLAGS_ENABLE,
            RING_EVENT_FLAGS_DISABLE,
            RING_EVENT_FLAGS_DESC,
        ];
        assert_eq!(events, [0, 1, 2]);
        assert_eq!(MAX_QUEUE_SIZE, 32768);
    }

    /// virtio 1.4 "Split Virtqueues": "desc: 16 bytes per entry, align 16", "avail ... align 2",
    /// "used ... align 4"; §10.2: packed desc align 16, event structs align 4.
    #[test]
    fn alignments_match_spec_and_bindings() {
        assert_eq!(SPLIT_DESC_ALIGN, 16);
        assert_eq!(SPLIT_AVAIL_ALIGN, 2);
        assert_eq!(SPLIT_USED_ALIGN, 4);
        assert_eq!(PACKED_DESC_ALIGN, 16);
        assert_eq!(PACKED_EVENT_ALIGN, 4);
        assert_eq!(SPLIT_DESC_ALIGN, u64::from(r::VRING_DESC_ALIGN_SIZE));
        assert_eq!(SPLIT_AVAIL_ALIGN, u64::from(r::VRING_AVAIL_ALIGN_SIZE));
        assert_eq!(SPLIT_USED_ALIGN, u64::from(r::VRING_USED_ALIGN_SIZE));
    }

    /// virtio 1.4 "Split Virtqueues": avail "size 6+2N" and used "size 6+8N" with the event
    /// field (4+2N / 4+8N without); descriptor tables 16N.
    #[test]
    fn ring_sizes() {
        for n in [1u16, 2, 256, 1000, MAX_QUEUE_SIZE] {
            let n_us = usize::from(n);
            assert_eq!(split_desc_table_size(n), 16 * n_us);
            assert_eq!(split_avail_ring_size(n, false), 4 + 2 * n_us);
            assert_eq!(split_avail_ring_size(n, true), 6 + 2 * n_us);
            assert_eq!(split_used_ring_size(n, false), 4 + 8 * n_us);
            assert_eq!(split_used_ring_size(n, true), 6 + 8 * n_us);
            assert_eq!(packed_desc_ring_size(n), 16 * n_us);
        }
        assert_eq!(split_desc_table_size(256), 4096);
        assert_eq!(split_avail_ring_size(256, true), 518);
        assert_eq!(split_used_ring_size(256, true), 2054);
        assert_eq!(packed_desc_ring_size(MAX_QUEUE_SIZE), 524_288);
    }

    /// The event fields sit right after the last ring entry, so the offsets
    /// of entry `n` and of the event field coincide.
    #[test]
    fn ring_offsets() {
        assert_eq!(split_avail_entry_offset(0), 4);
        assert_eq!(split_avail_entry_offset(3), 10);
        assert_eq!(split_used_event_offset(8), 20);
        assert_eq!(split_used_elem_offset(0), 4);
        assert_eq!(split_used_elem_offset(3), 28);
        assert_eq!(split_avail_event_offset(8), 68);
        assert_eq!(desc_offset(3), 48);
        for n in [1u16, 8, 256, MAX_QUEUE_SIZE - 1] {
            assert_eq!(split_used_event_offset(n), split_avail_entry_offset(n));
            assert_eq!(split_avail_event_offset(n), split_used_elem_offset(n));
            assert_eq!(
                split_used_event_offset(n) + 2,
                split_avail_ring_size(n, true)
            );
            assert_eq!(
                split_avail_event_offset(n) + 2,
                split_used_ring_size(n, true)
            );
        }
    }
}
