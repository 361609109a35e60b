//! Bounded, validating accumulation of descriptors into a [`DescriptorChain`], shared by both
//! ring formats. Every limit here is what keeps a hostile driver from causing an unbounded loop,
//! an overflow or an access outside guest memory.

use vm_memory::{GuestAddress, GuestMemory};

use virtio_lm_spec::ring::VIRTQ_DESC_F_WRITE;

use crate::chain::{DescriptorChain, Segment};
use crate::config::{QueueConfig, MAX_QUEUE_SIZE};
use crate::error::ChainError;
use crate::view::{DescTable, RingView};

/// Bytes in one descriptor of either format.
pub(crate) const DESC_SIZE: u64 = 16;

/// Collects segments while enforcing the chain rules common to split and packed rings.
pub(crate) struct ChainBuilder {
    chain: DescriptorChain,
    seen_writable: bool,
    readable: u32,
    writable: u32,
}

impl ChainBuilder {
    pub(crate) fn new(mut segments: Vec<Segment>) -> Self {
        segments.clear();
        Self {
            chain: DescriptorChain {
                id: 0,
                ring_slots: 0,
                segments,
            },
            seen_writable: false,
            readable: 0,
            writable: 0,
        }
    }

    /// Adds one buffer descriptor (not an indirect one) given its raw `flags` (only WRITE
    /// matters here).
    #[inline]
    pub(crate) fn push<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<(), ChainError> {
        let writable = flags & VIRTQ_DESC_F_WRITE != 0;
        if writable {
            self.seen_writable = true;
            self.writable = self
                .writable
                .checked_add(len)
                .ok_or(ChainError::LengthOverflow)?;
        } else {
            if self.seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            self.readable = self
                .readable
                .checked_add(len)
                .ok_or(ChainError::LengthOverflow)?;
        }
        // A zero-length buffer carries no data; its address is never dereferenced.
        if len != 0 && !view.check_buffer(addr, len, writable) {
            return Err(ChainError::BufferOutOfMemory { addr, len });
        }
        self.chain.segments.push(Segment {
            addr: GuestAddress(addr),
            len,
            writable,
        });
        Ok(())
    }

    pub(crate) fn finish(mut self, id: u16, ring_slots: u16) -> DescriptorChain {
        self.chain.id = id;
        self.chain.ring_slots = ring_slots;
        self.chain
    }
}

/// What an indirect descriptor may not be, checked before its table is touched.
pub(crate) struct IndirectRules {
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    pub(crate) negotiated: bool,
    /// The descriptor is itself inside an indirect table.
    pub(crate) in_indirect: bool,
    /// The descriptor also has NEXT set.
    pub(crate) has_next: bool,
}

impl IndirectRules {
    /// The rules for an INDIRECT descriptor read from the ring itself (not from a table).
    pub(crate) fn in_ring(config: &QueueConfig, has_next: bool) -> Self {
        Self {
            negotiated: config.features.indirect_desc,
            in_indirect: false,
            has_next,
        }
    }
}

/// Validates an indirect descriptor and resolves its table; returns the table and its entries.
pub(crate) fn indirect_table<'m, M: GuestMemory + ?Sized>(
    view: &RingView<'m, M>,
    rules: IndirectRules,
    addr: u64,
    len: u32,
) -> Result<(DescTable<'m, M>, u32), ChainError> {
    if !rules.negotiated {
        return Err(ChainError::IndirectNotNegotiated);
    }
    if rules.in_indirect {
        return Err(ChainError::NestedIndirect);
    }
    if rules.has_next {
        return Err(ChainError::IndirectWithNext);
    }
    let entries = len / DESC_SIZE as u32;
    if len == 0 || !len.is_multiple_of(DESC_SIZE as u32) || entries > u32::from(MAX_QUEUE_SIZE) {
        return Err(ChainError::BadIndirectTableLength { len });
    }
    Ok((view.table(GuestAddress(addr), entries)?, entries))
}
