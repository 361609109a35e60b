//! Split virtqueue layouts (virtio 1.4 "Split Virtqueues").
//!
//! The avail and used rings are variable-length, so only their fixed headers
//! and elements are structs; entries are placed with the offset helpers in
//! [`crate::ring`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `struct virtq_desc`: one split descriptor table entry (16 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct SplitDescriptor {
    /// Guest-physical buffer address.
    pub addr: U64,
    /// Buffer length in bytes.
    pub len: U32,
    /// `VIRTQ_DESC_F_*` flags.
    pub flags: U16,
    /// Index of the next descriptor when `VIRTQ_DESC_F_NEXT` is set.
    pub next: U16,
}

impl SplitDescriptor {
    /// A descriptor from native values.
    pub const fn new(addr: u64, len: u32, flags: u16, next: u16) -> Self {
        SplitDescriptor {
            addr: U64::new(addr),
            len: U32::new(len),
            flags: U16::new(flags),
            next: U16::new(next),
        }
    }

    /// Guest-physical buffer address.
    pub const fn addr(&self) -> u64 {
        self.addr.get()
    }

    /// Buffer length in bytes.
    pub const fn len(&self) -> u32 {
        self.len.get()
    }

    /// True when `len` is 0.
    pub const fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// `VIRTQ_DESC_F_*` flags.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// Index of the next descriptor in the chain.
    pub const fn next(&self) -> u16 {
        self.next.get()
    }
}

/// `struct virtq_avail` header: `flags` and `idx` (4 bytes), followed in
/// guest memory by `le16 ring[N]` and, with EVENT_IDX, `le16 used_event`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct AvailRingHeader {
    /// `VIRTQ_AVAIL_F_*` flags.
    pub flags: U16,
    /// Where the driver puts the next ring entry (free-running, wraps at 2^16).
    pub idx: U16,
}

impl AvailRingHeader {
    /// A header from native values.
    pub const fn new(flags: u16, idx: u16) -> Self {
        AvailRingHeader {
            flags: U16::new(flags),
            idx: U16::new(idx),
        }
    }

    /// `VIRTQ_AVAIL_F_*` flags.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// The driver's free-running available index.
    pub const fn idx(&self) -> u16 {
        self.idx.get()
    }
}

/// `struct virtq_used` header: `flags` and `idx` (4 bytes), followed in guest
/// memory by `UsedElem ring[N]` and, with EVENT_IDX, `le16 avail_event`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct UsedRingHeader {
    /// `VIRTQ_USED_F_*` flags.
    pub flags: U16,
    /// Where the device puts the next ring entry (free-running, wraps at 2^16).
    pub idx: U16,
}

impl UsedRingHeader {
    /// A header from native values.
    pub const fn new(flags: u16, idx: u16) -> Self {
        UsedRingHeader {
            flags: U16::new(flags),
            idx: U16::new(idx),
        }
    }

    /// `VIRTQ_USED_F_*` flags.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// The device's free-running used index.
    pub const fn idx(&self) -> u16 {
        self.idx.get()
    }
}

/// `struct virtq_used_elem` (8 bytes).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct UsedElem {
    /// Head descriptor index of the used chain (le32 although indices fit 16 bits).
    pub id: U32,
    /// Bytes written into the chain's device-writable buffers.
    pub len: U32,
}

impl UsedElem {
    /// An element from native values.
    pub const fn new(id: u32, len: u32) -> Self {
        UsedElem {
            id: U32::new(id),
            len: U32::new(len),
        }
    }

    /// Head descriptor index.
    pub const fn id(&self) -> u32 {
        self.id.get()
    }

    /// Bytes written.
    pub const fn len(&self) -> u32 {
        self.len.get()
    }

    /// True when the device wrote nothing (`len` is 0).
    pub const fn is_empty(&self) -> bool {
        self.len.get() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    /// virtio 1.4 "Split Virtqueues" "desc: 16 bytes per entry": `le64 addr; le32 len; le16
    /// flags; le16 next` at offsets 0, 8, 12, 14; alignment 1 so the struct
    /// can sit at any guest offset (the 16-byte ring alignment is the
    /// driver's duty, checked elsewhere).
    #[test]
    fn split_descriptor_layout() {
        assert_eq!(size_of::<SplitDescriptor>(), 16);
        assert_eq!(align_of::<SplitDescriptor>(), 1);
        assert_eq!(offset_of!(SplitDescriptor, addr), 0);
        assert_eq!(offset_of!(SplitDescriptor, len), 8);
        assert_eq!(offset_of!(SplitDescriptor, flags), 12);
        assert_eq!(offset_of!(SplitDescriptor, next), 14);
        assert_eq!(
            size_of::<SplitDescriptor>(),
            size_of::<virtio_bindings::virtio_ring::vring_desc>()
        );
    }

    /// Avail/used headers are `le16 flags; le16 idx` (4 bytes), used elements
    /// `le32 id; le32 len` (8 bytes).
    #[test]
    fn ring_header_and_elem_layout() {
        assert_eq!(size_of::<AvailRingHeader>(), 4);
        assert_eq!(offset_of!(AvailRingHeader, flags), 0);
        assert_eq!(offset_of!(AvailRingHeader, idx), 2);
        assert_eq!(size_of::<UsedRingHeader>(), 4);
        assert_eq!(offset_of!(UsedRingHeader, flags), 0);
        assert_eq!(offset_of!(UsedRingHeader, idx), 2);
        assert_eq!(size_of::<UsedElem>(), 8);
        assert_eq!(offset_of!(UsedElem, id), 0);
        assert_eq!(offset_of!(UsedElem, len), 4);
    }

    /// A descriptor serialises little-endian field by field and reads back.
    #[test]
    fn split_descriptor_bytes() {
        let d = SplitDescriptor::new(0x0102_0304_0506_0708, 0x1122_3344, 0x1234, 0xabcd);
        let bytes = d.as_bytes();
        assert_eq!(
            bytes,
            [
                0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x44, 0x33, 0x22, 0x11, 0x34, 0x12,
                0xcd, 0xab
            ]
        );
        let back = SplitDescriptor::read_from_bytes(bytes).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.addr(), 0x0102_0304_0506_0708);
        assert_eq!(back.len(), 0x1122_3344);
        assert_eq!(back.flags(), 0x1234);
        assert_eq!(back.next(), 0xabcd);
        assert!(!back.is_empty());
        assert!(SplitDescriptor::new(0, 0, 0, 0).is_empty());
        assert!(SplitDescriptor::read_from_bytes(&bytes[..15]).is_err());
    }

    /// Headers and used elements serialise little-endian and read back.
    #[test]
    fn ring_header_and_elem_bytes() {
        let a = AvailRingHeader::new(1, 0x1234);
        assert_eq!(a.as_bytes(), [0x01, 0x00, 0x34, 0x12]);
        let a2 = AvailRingHeader::read_from_bytes(a.as_bytes()).unwrap();
        assert_eq!((a2.flags(), a2.idx()), (1, 0x1234));

        let u = UsedRingHeader::new(0, 0xfffe);
        assert_eq!(u.as_bytes(), [0x00, 0x00, 0xfe, 0xff]);
        let u2 = UsedRingHeader::read_from_bytes(u.as_bytes()).unwrap();
        assert_eq!((u2.flags(), u2.idx()), (0, 0xfffe));

        let e = UsedElem::new(7, 0x0001_0203);
        assert_eq!(e.as_bytes(), [7, 0, 0, 0, 0x03, 0x02, 0x01, 0x00]);
        let e2 = UsedElem::read_from_bytes(e.as_bytes()).unwrap();
        assert_eq!((e2.id(), e2.len()), (7, 0x0001_0203));
        assert!(!e2.is_empty());
        assert!(UsedElem::new(7, 0).is_empty());
    }
}
