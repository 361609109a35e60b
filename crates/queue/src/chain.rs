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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorChain {
    /// Split: head descriptor index. Packed: buffer id from the chain's last descriptor.
    pub id: u16,
    /// Ring slots the chain occupies (packed: how far the used index skips; split: 1).
    pub ring_slots: u16,
    /// The buffers in chain order.
    pub segments: Vec<Segment>,
}

impl DescriptorChain {
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u32 {
        self.segments
            .iter()
            .filter(|s| !s.writable)
            .fold(0u32, |acc, s| acc.saturating_add(s.len))
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u32 {
        self.segments
            .iter()
            .filter(|s| s.writable)
            .fold(0u32, |acc, s| acc.saturating_add(s.len))
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

/// A buffer the device has returned, as the driver collects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBuffer {
    /// Split: head index. Packed: buffer id.
    pub id: u16,
    /// Bytes the device wrote.
    pub len: u32,
}
