//! Split virtqueue layouts (virtio 1.4 "Split Virtqueues").
//!
//! The avail and used rings are variable-length, so only their fixed headers
//! and elements are structs; entries are placed with the offset helpers in
//! [`crate::ring`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

wire_struct! {
    /// `struct virtq_desc`: one split descriptor table entry (16 bytes).
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

/// A split ring header, `le16 flags; le16 idx` (4 bytes): the avail and used rings share the
/// layout and differ in who advances `idx` and which flags apply.
macro_rules! ring_header {
    ($(#[$doc:meta])* $name:ident, flags: $flags:literal, idx: $idx:literal $(,)?) => {
        $(#[$doc])*
        #[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[repr(C)]
        pub struct $name {
            #[doc = $flags]
            pub flags: U16,
            #[doc = $idx]
            pub idx: U16,
        }

        impl $name {
            /// A header from native values.
            pub const fn new(flags: u16, idx: u16) -> Self {
                Self {
                    flags: U16::new(flags),
                    idx: U16::new(idx),
                }
            }

            #[doc = $flags]
            pub const fn flags(&self) -> u16 {
                self.flags.get()
            }

            #[doc = $idx]
            pub const fn idx(&self) -> u16 {
                self.idx.get()
            }
        }
    };
}

ring_header! {
    /// `struct virtq_avail` header: `flags` and `idx` (4 bytes), followed in
    /// guest memory by `le16 ring[N]` and, with EVENT_IDX, `le16 used_event`.
    AvailRingHeader,
    flags: "`VIRTQ_AVAIL_F_*` flags.",
    idx: "Where the driver puts the next ring entry (free-running, wraps at 2^16).",
}

ring_header! {
    /// `struct virtq_used` header: `flags` and `idx` (4 bytes), followed in guest
    /// memory by `UsedElem ring[N]` and, with EVENT_IDX, `le16 avail_event`.
    UsedRingHeader,
    flags: "`VIRTQ_USED_F_*` flags.",
    idx: "Where the device puts the next ring entry (free-running, wraps at 2^16).",
}

wire_struct! {
    /// `struct virtq_used_elem` (8 bytes).
    pub struct UsedElem {
        /// Head descriptor index of the used chain (le32 although indices fit 16 bits).
        pub id: U32,
        /// Bytes written into the chain's device-writable buffers.
        pub len: U32,
    }
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
    use crate::layout_tests::assert_wire;
    use virtio_bindings::virtio_ring as r;

    /// virtio 1.4 "Split Virtqueues" "desc: 16 bytes per entry": `le64 addr; le32 len; le16
    /// flags; le16 next` at offsets 0, 8, 12, 14; alignment 1 so the struct
    /// can sit at any guest offset (the 16-byte ring alignment is the
    /// driver's duty, checked elsewhere).
    #[test]
    fn split_descriptor_layout() {
        assert_layout!(SplitDescriptor, 16, bindings r::vring_desc;
            addr @ 0, len @ 8, flags @ 12, next @ 14);
    }

    /// Avail/used headers are `le16 flags; le16 idx` (4 bytes), used elements
    /// `le32 id; le32 len` (8 bytes).
    #[test]
    fn ring_header_and_elem_layout() {
        assert_layout!(AvailRingHeader, 4; flags @ 0, idx @ 2);
        assert_layout!(UsedRingHeader, 4; flags @ 0, idx @ 2);
        assert_layout!(UsedElem, 8; id @ 0, len @ 4);
    }

    /// A descriptor serialises little-endian field by field and reads back.
    #[test]
    fn split_descriptor_bytes() {
        let d = SplitDescriptor::new(0x0102_0304_0506_0708, 0x1122_3344, 0x1234, 0xabcd);
        let back = assert_wire(
            &d,
            &[
                0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x44, 0x33, 0x22, 0x11, 0x34, 0x12,
                0xcd, 0xab,
            ],
        );
        assert_eq!(back.addr(), 0x0102_0304_0506_0708);
        assert_eq!(back.len(), 0x1122_3344);
        assert_eq!(back.flags(), 0x1234);
        assert_eq!(back.next(), 0xabcd);
        assert!(!back.is_empty());
        assert!(SplitDescriptor::new(0, 0, 0, 0).is_empty());
    }

    /// Headers and used elements serialise little-endian and read back.
    #[test]
    fn ring_header_and_elem_bytes() {
        let a = assert_wire(&AvailRingHeader::new(1, 0x1234), &[0x01, 0x00, 0x34, 0x12]);
        assert_eq!((a.flags(), a.idx()), (1, 0x1234));
        let u = assert_wire(&UsedRingHeader::new(0, 0xfffe), &[0x00, 0x00, 0xfe, 0xff]);
        assert_eq!((u.flags(), u.idx()), (0, 0xfffe));
        let e = assert_wire(
            &UsedElem::new(7, 0x0001_0203),
            &[7, 0, 0, 0, 0x03, 0x02, 0x01, 0x00],
        );
        assert_eq!((e.id(), e.len()), (7, 0x0001_0203));
        assert!(!e.is_empty());
        assert!(UsedElem::new(7, 0).is_empty());
    }
}
