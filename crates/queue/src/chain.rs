//! Descriptor chains as the device sees them after validation.

use vm_memory::GuestAddress;

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the buffer.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub writable: bool,
}

/// A validated descriptor chain: readable segments first, then writable ones.
///
/// The chain is a copy: once taken, the device never re-reads the descriptors, so a driver that
/// rewrites them cannot change what the device is processing, and the chain can be saved with the
/// queue state and handed back after a restore.
///
/// Its fields are private to the queue crate: only a queue builds one, from descriptors it validated (taking a chain)
/// or from a [`SavedChain`] it validated (restoring a state), so holding a `DescriptorChain` means
/// every segment lies in guest memory, readable before writable, with no length overflow. The
/// default value is an empty chain (no segments), a placeholder for
/// [`DeviceQueue::pop_into`](crate::DeviceQueue::pop_into).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorChain {
    pub(crate) id: u16,
    pub(crate) ring_slots: u16,
    pub(crate) segments: Vec<Segment>,
}

impl DescriptorChain {
    /// Split: head descriptor index. Packed: buffer id from the chain's last descriptor.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Ring slots the chain occupies (packed: how far the used index skips; split: 1).
    pub fn ring_slots(&self) -> u16 {
        self.ring_slots
    }

    /// The buffers in chain order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u32 {
        total_len(&self.segments, false)
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u32 {
        total_len(&self.segments, true)
    }

    /// The device-readable segments.
    pub fn readable(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| !s.writable)
    }

    /// The device-writable segments.
    pub fn writable(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.writable)
    }
}

/// An in-flight chain as a saved [`QueueState`](crate::QueueState) lists it.
///
/// Untrusted: it comes from a device context, so anyone can build one. A queue turns it into a
/// [`DescriptorChain`] only after checking it against its configuration and guest memory
/// (`from_state`), with the same rules as a chain taken from the ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedChain {
    /// Split: head descriptor index. Packed: buffer id.
    pub id: u16,
    /// Ring slots the chain occupies (packed: how far the used index skips; split: 1).
    pub ring_slots: u16,
    /// The buffers in chain order.
    pub segments: Vec<Segment>,
}

impl SavedChain {
    /// Total bytes of the device-readable segments (saturating: the chain is not validated).
    pub fn readable_len(&self) -> u32 {
        total_len(&self.segments, false)
    }

    /// Total bytes of the device-writable segments (saturating: the chain is not validated).
    pub fn writable_len(&self) -> u32 {
        total_len(&self.segments, true)
    }
}

fn total_len(segments: &[Segment], writable: bool) -> u32 {
    segments
        .iter()
        .filter(|s| s.writable == writable)
        .fold(0u32, |acc, s| acc.saturating_add(s.len))
}

impl From<&DescriptorChain> for SavedChain {
    fn from(chain: &DescriptorChain) -> Self {
        Self {
            id: chain.id,
            ring_slots: chain.ring_slots,
            segments: chain.segments.clone(),
        }
    }
}

impl From<DescriptorChain> for SavedChain {
    fn from(chain: DescriptorChain) -> Self {
        Self {
            id: chain.id,
            ring_slots: chain.ring_slots,
            segments: chain.segments,
        }
    }
}

impl PartialEq<SavedChain> for DescriptorChain {
    fn eq(&self, other: &SavedChain) -> bool {
        self.id == other.id
            && self.ring_slots == other.ring_slots
            && self.segments == other.segments
    }
}

impl PartialEq<DescriptorChain> for SavedChain {
    fn eq(&self, other: &DescriptorChain) -> bool {
        other == self
    }
}

/// A buffer the driver offers: what the driver side turns into descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSpec {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

impl BufferSpec {
    /// A device-readable buffer.
    pub fn readable(addr: u64, len: u32) -> Self {
        Self {
            addr: GuestAddress(addr),
            len,
            writable: false,
        }
    }

    /// A device-writable buffer.
    pub fn writable(addr: u64, len: u32) -> Self {
        Self {
            addr: GuestAddress(addr),
            len,
            writable: true,
        }
    }
}

/// A buffer the device returns: what `add_used` writes and the driver collects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBuffer {
    /// Split: head index. Packed: buffer id.
    pub id: u16,
    /// Bytes the device wrote.
    pub len: u32,
}
