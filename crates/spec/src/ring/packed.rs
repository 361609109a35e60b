//! Packed virtqueue layouts (virtio 1.4 "Packed Virtqueues").

use zerocopy::little_endian::{U16, U32, U64};

wire_struct! {
    /// `struct pvirtq_desc`: one packed ring slot (16 bytes).
    ///
    /// Unlike the split descriptor, `id` precedes `flags`.
    pub struct PackedDescriptor {
        /// Guest-physical buffer address.
        pub addr: U64,
        /// Buffer length (available) or bytes written (used, when WRITE is set).
        pub len: U32,
        /// Buffer id, echoed back by the device in the used descriptor.
        pub id: U16,
        /// `VIRTQ_DESC_F_*` flags including AVAIL (bit 7) and USED (bit 15).
        pub flags: U16,
    }
}

impl PackedDescriptor {
    /// A descriptor from native values.
    pub const fn new(addr: u64, len: u32, flags: u16, id: u16) -> Self {
        PackedDescriptor {
            addr: U64::new(addr),
            len: U32::new(len),
            id: U16::new(id),
            flags: U16::new(flags),
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

    /// Buffer id.
    pub const fn id(&self) -> u16 {
        self.id.get()
    }

    /// `VIRTQ_DESC_F_*` flags.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }
}

wire_struct! {
    /// `struct pvirtq_event_suppress` (4 bytes): the driver area (controls used
    /// notifications) and the device area (controls available notifications).
    pub struct PackedEventSuppression {
        /// Bits 0-14 `desc_event_off`, bit 15 `desc_event_wrap`.
        pub desc: U16,
        /// Bits 0-1 `desc_event_flags` (`RING_EVENT_FLAGS_*`), bits 2-15 reserved.
        pub flags: U16,
    }
}

impl PackedEventSuppression {
    /// A structure from an offset (bits 0-14 kept), wrap counter and flags.
    pub const fn new(off: u16, wrap: bool, flags: u16) -> Self {
        PackedEventSuppression {
            desc: U16::new((off & 0x7fff) | ((wrap as u16) << 15)),
            flags: U16::new(flags),
        }
    }

    /// `desc_event_off`: the ring slot the event refers to.
    pub const fn off(&self) -> u16 {
        self.desc.get() & 0x7fff
    }

    /// `desc_event_wrap`: the wrap counter the event refers to.
    pub const fn wrap(&self) -> bool {
        self.desc.get() & 0x8000 != 0
    }

    /// The raw `flags` field.
    pub const fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// `desc_event_flags`: the `RING_EVENT_FLAGS_*` mode in bits 0-1.
    pub const fn event_flags(&self) -> u16 {
        self.flags.get() & super::RING_EVENT_FLAGS_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout_tests::assert_wire;
    use crate::ring::{RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE};
    use virtio_bindings::virtio_ring as r;

    /// virtio 1.4 "Packed Virtqueues": desc `{le64 addr; le32 len; le16 id; le16 flags;}`, 16
    /// bytes, `id` at 12 and `flags` at 14.
    #[test]
    fn packed_descriptor_layout() {
        assert_layout!(PackedDescriptor, 16, bindings r::vring_packed_desc;
            addr @ 0, len @ 8, id @ 12, flags @ 14);
    }

    /// virtio 1.4 "Packed Virtqueues": `struct pvirtq_event_suppress { le16 desc; le16 flags; }`,
    /// 4 bytes.
    #[test]
    fn event_suppression_layout() {
        assert_layout!(PackedEventSuppression, 4, bindings r::vring_packed_desc_event;
            desc @ 0, flags @ 2);
    }

    /// A packed descriptor serialises little-endian with `id` before `flags`.
    #[test]
    fn packed_descriptor_bytes() {
        let d = PackedDescriptor::new(0x1000, 0x200, 0x8080, 0x1234);
        let back = assert_wire(
            &d,
            &[
                0x00, 0x10, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0, 0, 0x34, 0x12, 0x80, 0x80,
            ],
        );
        assert_eq!(
            (back.addr(), back.len(), back.id(), back.flags()),
            (0x1000, 0x200, 0x1234, 0x8080)
        );
        assert!(!back.is_empty());
        assert!(PackedDescriptor::new(0, 0, 0, 0).is_empty());
    }

    /// virtio 1.4 "Packed Virtqueues": "le16 desc; /* bits 0-14 desc_event_off, bit 15
    /// desc_event_wrap */" — the wrap counter is bit 15, at the extremes of
    /// the offset range.
    #[test]
    fn event_suppression_bits() {
        let high = PackedEventSuppression::new(0x7fff, true, RING_EVENT_FLAGS_DESC);
        let e = assert_wire(&high, &[0xff, 0xff, 0x02, 0x00]);
        assert_eq!((e.off(), e.wrap(), e.flags()), (0x7fff, true, 2));

        let low = PackedEventSuppression::new(0x0123, false, RING_EVENT_FLAGS_DISABLE);
        let back = assert_wire(&low, &[0x23, 0x01, 0x01, 0x00]);
        assert_eq!((back.off(), back.wrap()), (0x0123, false));

        let e = PackedEventSuppression::new(0, true, 0xfffe);
        assert_eq!(e.desc.get(), 0x8000);
        assert_eq!((e.off(), e.wrap()), (0, true));
        assert_eq!(e.event_flags(), RING_EVENT_FLAGS_DESC);
    }
}
