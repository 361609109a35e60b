//! A queue's view of guest memory for one burst of work.
//!
//! Going through `GuestMemory` for every ring access costs a region lookup and a slice-iterator
//! set-up per access, which dominated the device loop in profiles. The view resolves each ring
//! area to a host slice once, on first use, and remembers the memory region the last buffer was
//! found in; every later access in the burst is a bounds-checked slice access. Writes still go
//! through vm-memory slices, so they are dirty-logged as before. Anything that is not inside one
//! resolved slice (an area spanning two regions, an IOMMU-translated memory) falls back to the
//! plain `GuestMemory` accessors.

use std::cell::{Cell, OnceCell};
use std::sync::atomic::Ordering;

use vm_memory::bitmap::BS;
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion,
    Permissions, VolatileMemory, VolatileSlice,
};

use virtio_lm_spec::ring::{PackedDescriptor, SplitDescriptor};

use crate::chain::{DescriptorChain, UsedBuffer};
use crate::config::QueueConfig;
use crate::error::{ChainError, QueueError};
use crate::inflight::InflightTracker;

type Slice<'m, M> = VolatileSlice<'m, BS<'m, <M as GuestMemory>::Bitmap>>;

struct Area<'m, M: GuestMemory + ?Sized> {
    base: u64,
    len: u64,
    slice: OnceCell<Option<Slice<'m, M>>>,
}

/// Guest memory as one queue sees it during one call or one batch.
pub struct RingView<'m, M: GuestMemory + ?Sized> {
    mem: &'m M,
    areas: [Area<'m, M>; 3],
    /// `[start, end)` of the region the last checked buffer was in; empty at first.
    buffer_region: Cell<(u64, u64)>,
}

impl<'m, M: GuestMemory + ?Sized> RingView<'m, M> {
    pub(crate) fn new(mem: &'m M, config: &QueueConfig) -> Self {
        let [desc, driver, device] = config.area_lengths();
        let area = |base: GuestAddress, len| Area {
            base: base.0,
            len,
            slice: OnceCell::new(),
        };
        Self {
            mem,
            areas: [
                area(config.desc_table, desc),
                area(config.driver_area, driver),
                area(config.device_area, device),
            ],
            buffer_region: Cell::new((0, 0)),
        }
    }

    /// The resolved slice holding `addr..addr + size` and the offset in it, if any.
    fn slice_at(&self, addr: GuestAddress, size: u64) -> Option<(&Slice<'m, M>, usize)> {
        self.areas.iter().find_map(|area| {
            let offset = addr.0.checked_sub(area.base)?;
            if offset.checked_add(size)? > area.len {
                return None;
            }
            let slice = area
                .slice
                .get_or_init(|| resolve(self.mem, area.base, area.len))
                .as_ref()?;
            Some((slice, offset as usize))
        })
    }

    pub(crate) fn load_u16(
        &self,
        addr: GuestAddress,
        order: Ordering,
    ) -> Result<u16, GuestAddress> {
        let value = match self.slice_at(addr, 2) {
            Some((slice, offset)) => slice.load::<u16>(offset, order).ok(),
            None => self.mem.load::<u16>(addr, order).ok(),
        };
        value.map(u16::from_le).ok_or(addr)
    }

    pub(crate) fn store_u16(
        &self,
        addr: GuestAddress,
        value: u16,
        order: Ordering,
    ) -> Result<(), GuestAddress> {
        match self.slice_at(addr, 2) {
            Some((slice, offset)) => slice.store(value.to_le(), offset, order).map_err(|_| addr),
            None => self.mem.store(value.to_le(), addr, order).map_err(|_| addr),
        }
    }

    pub(crate) fn store_u64(
        &self,
        addr: GuestAddress,
        value: u64,
        order: Ordering,
    ) -> Result<(), GuestAddress> {
        match self.slice_at(addr, 8) {
            Some((slice, offset)) => slice.store(value.to_le(), offset, order).map_err(|_| addr),
            None => self.mem.store(value.to_le(), addr, order).map_err(|_| addr),
        }
    }

    /// Writes a small value (a used element, a packed len+id) with one volatile store.
    pub(crate) fn write_obj<T: ByteValued>(
        &self,
        value: T,
        addr: GuestAddress,
    ) -> Result<(), GuestAddress> {
        match self.slice_at(addr, size_of::<T>() as u64) {
            Some((slice, offset)) => {
                slice.get_ref::<T>(offset).map_err(|_| addr)?.store(value);
                Ok(())
            }
            None => self.mem.write_obj(value, addr).map_err(|_| addr),
        }
    }

    /// Reads a descriptor in the queue's own descriptor area.
    pub(crate) fn read_ring_desc(&self, addr: GuestAddress) -> Result<RawDescriptor, ChainError> {
        let err = ChainError::DescriptorOutOfMemory { addr: addr.0 };
        let words = match self.slice_at(addr, 16) {
            Some((slice, offset)) => slice.get_ref::<[u64; 2]>(offset).map_err(|_| err)?.load(),
            None => self.mem.read_obj(addr).map_err(|_| err)?,
        };
        Ok(RawDescriptor::from_words(words))
    }

    /// Resolves an indirect table of `entries` descriptors at `addr`.
    pub(crate) fn table(
        &self,
        addr: GuestAddress,
        entries: u32,
    ) -> Result<DescTable<'m, M>, ChainError> {
        let len = u64::from(entries) * 16;
        let err = ChainError::DescriptorOutOfMemory { addr: addr.0 };
        let in_memory =
            usize::try_from(len).is_ok_and(|l| self.mem.check_range(addr, l, Permissions::Read));
        if !in_memory {
            return Err(err);
        }
        Ok(match resolve(self.mem, addr.0, len) {
            Some(slice) => DescTable::Slice(slice),
            None => DescTable::Memory(self.mem, addr),
        })
    }

    /// Whether a buffer lies inside guest memory with the access the device needs.
    pub(crate) fn check_buffer(&self, addr: u64, len: u32, writable: bool) -> bool {
        let Some(end) = addr.checked_add(u64::from(len)) else {
            return false;
        };
        let (start, stop) = self.buffer_region.get();
        if addr >= start && end <= stop {
            return true;
        }
        let access = if writable {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !self
            .mem
            .check_range(GuestAddress(addr), len as usize, access)
        {
            return false;
        }
        // Without an IOMMU the region answers for every later buffer inside it; with one,
        // permissions can differ page by page, so nothing is remembered.
        if let Some(region) = self
            .mem
            .physical_memory()
            .and_then(|m| m.find_region(GuestAddress(addr)))
        {
            let start = region.start_addr().0;
            self.buffer_region
                .set((start, start.saturating_add(region.len())));
        }
        true
    }
}

/// An indirect descriptor table, resolved once per chain.
pub(crate) enum DescTable<'m, M: GuestMemory + ?Sized> {
    Slice(Slice<'m, M>),
    Memory(&'m M, GuestAddress),
}

impl<M: GuestMemory + ?Sized> DescTable<'_, M> {
    pub(crate) fn read(&self, index: u32) -> Result<RawDescriptor, ChainError> {
        let offset = u64::from(index) * 16;
        let words = match self {
            DescTable::Slice(slice) => slice
                .get_ref::<[u64; 2]>(offset as usize)
                .map(|r| r.load())
                .map_err(|_| ChainError::DescriptorOutOfMemory { addr: offset })?,
            DescTable::Memory(mem, base) => {
                let addr = base.unchecked_add(offset);
                mem.read_obj(addr)
                    .map_err(|_| ChainError::DescriptorOutOfMemory { addr: addr.0 })?
            }
        };
        Ok(RawDescriptor::from_words(words))
    }
}

/// A descriptor of either format as two little-endian words: `addr`, then `len` and the two
/// 16-bit fields (split: `flags`, `next`; packed: `id`, `flags`).
///
/// Read as two 64-bit loads and decoded in registers: reading it as 16 bytes made the compiler
/// assemble it byte by byte on the stack and stall on the wider reload (seen in profiles).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawDescriptor {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// Bytes 12–13: split `flags`, packed `id`.
    pub(crate) field12: u16,
    /// Bytes 14–15: split `next`, packed `flags`.
    pub(crate) field14: u16,
}

impl RawDescriptor {
    /// As a split descriptor (`flags` at 12, `next` at 14).
    pub(crate) fn split(self) -> SplitDescriptor {
        SplitDescriptor::new(self.addr, self.len, self.field12, self.field14)
    }

    /// As a packed descriptor (`id` at 12, `flags` at 14).
    pub(crate) fn packed(self) -> PackedDescriptor {
        PackedDescriptor::new(self.addr, self.len, self.field14, self.field12)
    }

    fn from_words(words: [u64; 2]) -> Self {
        let high = u64::from_le(words[1]);
        Self {
            addr: u64::from_le(words[0]),
            len: high as u32,
            field12: (high >> 32) as u16,
            field14: (high >> 48) as u16,
        }
    }
}

/// One host slice for `base..base + len`, if the range is a single contiguous mapping.
fn resolve<M: GuestMemory + ?Sized>(mem: &M, base: u64, len: u64) -> Option<Slice<'_, M>> {
    let len = usize::try_from(len).ok()?;
    let mut slices = mem
        .get_slices(GuestAddress(base), len, Permissions::ReadWrite)
        .ok()?;
    let first = slices.next()?.ok()?;
    (first.len() == len).then_some(first)
}

/// The ring-format operations `DeviceQueue`'s provided methods are built on. Sealed: it lives in
/// a private module, so only this crate's queues implement `DeviceQueue`.
pub trait RingOps {
    /// The queue's configuration (the view needs its areas).
    fn ring_config(&self) -> &QueueConfig;

    /// The chains taken and not yet used.
    fn inflight_tracker(&self) -> &InflightTracker;

    /// A view of `mem` for this queue's ring areas.
    fn view<'m, M: GuestMemory + ?Sized>(&self, mem: &'m M) -> RingView<'m, M> {
        RingView::new(mem, self.ring_config())
    }

    /// Whether the driver has made buffers available that the device has not taken, read
    /// through `view`.
    fn has_available_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
    ) -> Result<bool, QueueError>;

    /// Takes the next available chain through `view`.
    fn pop_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError>;

    /// Writes one used entry through `view`.
    fn add_used_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        used: UsedBuffer,
    ) -> Result<(), QueueError>;
}
