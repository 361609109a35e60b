//! Bounded, validating accumulation of descriptors into a [`DescriptorChain`], shared by both
//! ring formats. Every limit here is what keeps a hostile driver from causing an unbounded loop,
//! an overflow or an access outside guest memory.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};
use zerocopy::FromBytes;

use virtio_lm_spec::ring::VIRTQ_DESC_F_WRITE;

use crate::chain::{DescriptorChain, Segment};
use crate::config::MAX_QUEUE_SIZE;
use crate::error::ChainError;

/// Bytes in one descriptor of either format.
pub(crate) const DESC_SIZE: u64 = 16;

/// Reads entry `index` of a descriptor table (either format) at `table`.
pub(crate) fn read_desc<T: FromBytes, M: GuestMemory + ?Sized>(
    mem: &M,
    table: GuestAddress,
    index: u32,
) -> Result<T, ChainError> {
    let addr = table
        .checked_add(u64::from(index) * DESC_SIZE)
        .ok_or(ChainError::DescriptorOutOfMemory { addr: table.0 })?;
    let raw = mem
        .read_obj::<[u8; 16]>(addr)
        .map_err(|_| ChainError::DescriptorOutOfMemory { addr: addr.0 })?;
    T::read_from_bytes(&raw).map_err(|_| ChainError::DescriptorOutOfMemory { addr: addr.0 })
}

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

    /// Adds one buffer descriptor (not an indirect one).
    pub(crate) fn push<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        addr: u64,
        len: u32,
        writable: bool,
    ) -> Result<(), ChainError> {
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
        let access = if writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        // A zero-length buffer carries no data; its address is never dereferenced.
        if len != 0 && !mem.check_range(GuestAddress(addr), len as usize, access) {
            return Err(ChainError::BufferOutOfMemory { addr, len });
        }
        self.chain.segments.push(Segment {
            addr: GuestAddress(addr),
            len,
            writable,
        });
        Ok(())
    }

    /// Adds a buffer descriptor given its raw `flags` (only WRITE matters here).
    pub(crate) fn push_desc<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<(), ChainError> {
        self.push(mem, addr, len, flags & VIRTQ_DESC_F_WRITE != 0)
    }

    pub(crate) fn finish(mut self, id: u16, ring_slots: u16) -> DescriptorChain {
        self.chain.id = id;
        self.chain.ring_slots = ring_slots;
        self.chain
    }
}

/// Validates an indirect descriptor and returns how many entries its table holds.
pub(crate) fn indirect_entries<M: GuestMemory + ?Sized>(
    mem: &M,
    indirect_negotiated: bool,
    in_indirect: bool,
    has_next: bool,
    addr: u64,
    len: u32,
) -> Result<u32, ChainError> {
    if !indirect_negotiated {
        return Err(ChainError::IndirectNotNegotiated);
    }
    if in_indirect {
        return Err(ChainError::NestedIndirect);
    }
    if has_next {
        return Err(ChainError::IndirectWithNext);
    }
    let entries = len / DESC_SIZE as u32;
    if len == 0 || !len.is_multiple_of(DESC_SIZE as u32) || entries > u32::from(MAX_QUEUE_SIZE) {
        return Err(ChainError::BadIndirectTableLength { len });
    }
    if !mem.check_range(GuestAddress(addr), len as usize, Permissions::Read) {
        return Err(ChainError::DescriptorOutOfMemory { addr });
    }
    Ok(entries)
}
