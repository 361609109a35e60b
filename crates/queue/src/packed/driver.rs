//! Driver side of a packed virtqueue: the guest driver model used by tests, the simulated VM's
//! guest drivers and the conformance suite.

use std::sync::atomic::{fence, Ordering};

use virtio_lm_spec::ring::{
    PackedDescriptor, PackedEventSuppression, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};
use zerocopy::FromBytes;

use super::layout;
use crate::chain::{BufferSpec, UsedBuffer};
use crate::config::QueueConfig;
use crate::driver_io::{check_order, load_u16, store_u16, zero_rings};
use crate::error::{mem_err, DriverError};
use crate::event::{EventSuppression, RingPosition};
use crate::kind::RingKind;

/// Driver side of a packed virtqueue.
///
/// Buffer ids come from a pool of `size` ids; each chain takes one id and as many ring slots as
/// it has descriptors (one for an indirect chain), returned when the device uses the id.
#[derive(Clone, Debug)]
pub struct PackedDriver {
    config: QueueConfig,
    /// Free buffer ids (a stack: the most recently freed is reused first).
    free_ids: Vec<u16>,
    /// Per buffer id: ring slots its chain occupies while the device holds it (0: not outstanding).
    slots: Vec<u16>,
    /// Ring slots not occupied by an outstanding chain.
    free_slots: u16,
    /// Next slot to make available and the driver ring wrap counter.
    avail: RingPosition,
    /// Head descriptors written but not yet made available: (slot, flags), in ring order.
    pending_heads: Vec<(u16, u16)>,
    /// Ring slots added since the last publish.
    unpublished_slots: u32,
    /// `avail` as of the last publish.
    published_avail: RingPosition,
    /// `published_avail` at the last kick decision.
    kicked_avail: RingPosition,
    /// Ring slots published since the last kick decision.
    unkicked_slots: u32,
    /// Next slot to read a used descriptor from, and the wrap counter it must carry.
    used: RingPosition,
}

impl PackedDriver {
    /// Zeroes the descriptor ring and both event suppression structures (flags ENABLE) and
    /// returns a driver for them.
    pub fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, DriverError> {
        zero_rings(&config, RingKind::Packed, mem)?;
        Ok(Self {
            config,
            free_ids: (0..config.size).rev().collect(),
            slots: vec![0; usize::from(config.size)],
            free_slots: config.size,
            avail: RingPosition::INITIAL,
            pending_heads: Vec::new(),
            unpublished_slots: 0,
            published_avail: RingPosition::INITIAL,
            kicked_avail: RingPosition::INITIAL,
            unkicked_slots: 0,
            used: RingPosition::INITIAL,
        })
    }

    /// The queue configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Free ring slots (descriptors).
    pub fn num_free(&self) -> u16 {
        self.free_slots
    }

    /// Chains made available and not yet collected back.
    pub fn outstanding(&self) -> usize {
        usize::from(self.config.size).saturating_sub(self.free_ids.len())
    }

    /// Next slot the driver makes available, with the driver ring wrap counter.
    pub fn avail_position(&self) -> RingPosition {
        self.avail
    }

    /// Next slot the driver reads a used descriptor from, with the wrap counter it expects.
    pub fn used_position(&self) -> RingPosition {
        self.used
    }

    /// Checks `buffers` (see [`check_order`]) and that `needed` ring slots and an id are free.
    fn check_room(&self, buffers: &[BufferSpec], needed: usize) -> Result<(), DriverError> {
        check_order(buffers)?;
        if needed > usize::from(self.free_slots) || self.free_ids.is_empty() {
            return Err(DriverError::QueueFull {
                free: self.free_slots,
                needed: needed.min(usize::from(u16::MAX)) as u16,
            });
        }
        Ok(())
    }

    fn flags_of(buf: &BufferSpec) -> u16 {
        if buf.writable {
            VIRTQ_DESC_F_WRITE
        } else {
            0
        }
    }

    /// Writes `descs` at the available position, AVAIL/USED bits set for each slot's wrap
    /// counter, all but the head's flags; the head's flags wait for [`Self::publish`], so the
    /// device never sees a partly written chain. Advances the available position.
    fn write_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        descs: &[PackedDescriptor],
    ) -> Result<(), DriverError> {
        let size = self.config.size;
        let mut position = self.avail;
        let mut head = None;
        for desc in descs {
            let flags = (desc.flags.get() & !layout::used_bits(true))
                | layout::avail_bits(position.wrap_counter);
            let mut desc = *desc;
            desc.flags.set(flags);
            let bytes: [u8; 16] = zerocopy::transmute!(desc);
            let addr = layout::desc(&self.config, position.index);
            if head.is_none() {
                mem.write_slice(&bytes[..14], addr)
                    .map_err(|_| mem_err(addr))?;
                head = Some((position.index, flags));
            } else {
                mem.write_obj(bytes, addr).map_err(|_| mem_err(addr))?;
            }
            position = position.advance(1, size);
        }
        self.pending_heads.extend(head);
        self.unpublished_slots = self.unpublished_slots.saturating_add(descs.len() as u32);
        self.avail = position;
        Ok(())
    }

    /// Records `id` as outstanding with `slots` ring slots.
    fn track(&mut self, id: u16, slots: u16) {
        if let Some(count) = self.slots.get_mut(usize::from(id)) {
            *count = slots;
        }
        self.free_slots -= slots;
    }

    /// Writes `buffers` as a chain of consecutive ring descriptors (visible to the device after
    /// [`Self::publish`]). Returns the buffer id, carried by every descriptor of the chain.
    pub fn add_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
    ) -> Result<u16, DriverError> {
        self.check_room(buffers, buffers.len())?;
        let id = self.free_ids.pop().ok_or(DriverError::QueueFull {
            free: self.free_slots,
            needed: 1,
        })?;
        let last = buffers.len() - 1;
        let descs: Vec<PackedDescriptor> = buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| {
                let next = if i == last { 0 } else { VIRTQ_DESC_F_NEXT };
                PackedDescriptor::new(buf.addr.0, buf.len, Self::flags_of(buf) | next, id)
            })
            .collect();
        if let Err(e) = self.write_chain(mem, &descs) {
            self.free_ids.push(id);
            return Err(e);
        }
        self.track(id, descs.len() as u16);
        Ok(id)
    }

    /// Writes `buffers` into an indirect table at `table` and makes it available through one
    /// ring descriptor. Returns the buffer id.
    pub fn add_indirect_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
        table: GuestAddress,
    ) -> Result<u16, DriverError> {
        self.check_room(buffers, 1)?;
        let entries = u16::try_from(buffers.len()).map_err(|_| DriverError::QueueFull {
            free: self.free_slots,
            needed: u16::MAX,
        })?;
        // Table entries carry only WRITE: the device reads them in order.
        for (i, buf) in (0u16..).zip(buffers) {
            let desc = PackedDescriptor::new(buf.addr.0, buf.len, Self::flags_of(buf), 0);
            let bytes: [u8; 16] = zerocopy::transmute!(desc);
            let addr = table.checked_add(16 * u64::from(i)).ok_or(mem_err(table))?;
            mem.write_obj(bytes, addr).map_err(|_| mem_err(addr))?;
        }
        let id = self.free_ids.pop().ok_or(DriverError::QueueFull {
            free: self.free_slots,
            needed: 1,
        })?;
        let desc =
            PackedDescriptor::new(table.0, 16 * u32::from(entries), VIRTQ_DESC_F_INDIRECT, id);
        if let Err(e) = self.write_chain(mem, &[desc]) {
            self.free_ids.push(id);
            return Err(e);
        }
        self.track(id, 1);
        Ok(id)
    }

    /// Makes every chain added so far available: stores the deferred head flags in ring order.
    pub fn publish<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), DriverError> {
        for &(slot, flags) in &self.pending_heads {
            let addr = layout::desc_flags(&self.config, slot);
            // Release: the chain's descriptors before the head flags that expose them.
            store_u16(mem, addr, flags, Ordering::Release)?;
        }
        self.pending_heads.clear();
        self.unkicked_slots = self
            .unkicked_slots
            .saturating_add(std::mem::take(&mut self.unpublished_slots));
        self.published_avail = self.avail;
        Ok(())
    }

    /// Whether the device asked to be notified of what was published since the last decision.
    pub fn should_kick<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, DriverError> {
        // The flag stores of publish before the read of the device's suppression structure.
        fence(Ordering::SeqCst);
        let old = self.kicked_avail;
        let new = self.published_avail;
        let slots = std::mem::take(&mut self.unkicked_slots);
        self.kicked_avail = new;
        if slots == 0 {
            return Ok(false);
        }
        // Flags first: a `desc` the device wrote before them is seen with them.
        let flags = load_u16(mem, layout::device_event_flags(&self.config))?;
        let desc = load_u16(mem, layout::device_event_desc(&self.config))?;
        let suppression = EventSuppression::from_raw(desc, flags);
        Ok(suppression.wants(&self.config, old, new, slots))
    }

    /// Whether the descriptor at the used position holds a used buffer of this driver.
    fn used_ready<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<bool, DriverError> {
        if self.outstanding() == 0 {
            return Ok(false);
        }
        // Acquire: the id and len are read only after the flags say used.
        let flags = load_u16(mem, layout::desc_flags(&self.config, self.used.index))?;
        Ok(layout::is_used(flags, self.used.wrap_counter))
    }

    /// Collects every buffer the device has used since the last call, freeing its ring slots.
    pub fn collect_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<UsedBuffer>, DriverError> {
        let mut used = Vec::new();
        // Each used buffer frees at least one slot, so a ring's worth of rounds is enough.
        for _ in 0..self.config.size {
            if !self.used_ready(mem)? {
                break;
            }
            let addr = layout::desc(&self.config, self.used.index);
            let raw: [u8; 16] = mem.read_obj(addr).map_err(|_| mem_err(addr))?;
            let desc = PackedDescriptor::read_from_bytes(&raw).map_err(|_| mem_err(addr))?;
            let id = desc.id.get();
            let slots = self
                .slots
                .get_mut(usize::from(id))
                .map(std::mem::take)
                .filter(|&n| n != 0)
                .ok_or(DriverError::UnknownUsedId { id: u32::from(id) })?;
            self.free_ids.push(id);
            self.free_slots += slots;
            // len is reserved unless WRITE is set.
            let len = if desc.flags.get() & VIRTQ_DESC_F_WRITE != 0 {
                desc.len.get()
            } else {
                0
            };
            used.push(UsedBuffer { id, len });
            self.used = self.used.advance(slots, self.config.size);
        }
        Ok(used)
    }

    /// Asks for used-buffer notifications (with EVENT_IDX: when the descriptor at the driver's
    /// used position is used). Returns true if used buffers are already waiting.
    pub fn enable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, DriverError> {
        if self.config.features.event_idx {
            self.write_driver_event(mem, Some(self.used.to_state()), RING_EVENT_FLAGS_DESC)?;
        } else {
            self.write_driver_event(mem, None, RING_EVENT_FLAGS_ENABLE)?;
        }
        // The enable before re-reading the ring, or a buffer used in between goes unnoticed.
        fence(Ordering::SeqCst);
        self.used_ready(mem)
    }

    /// Asks the device not to send used-buffer notifications.
    pub fn disable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), DriverError> {
        self.write_driver_event(mem, None, RING_EVENT_FLAGS_DISABLE)
    }

    /// Writes the driver event suppression structure verbatim (EVENT_IDX tests and hostile
    /// drivers).
    pub fn set_driver_event<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        event: PackedEventSuppression,
    ) -> Result<(), DriverError> {
        self.write_driver_event(mem, Some(event.desc.get()), event.flags.get())
    }

    /// Stores the driver event suppression structure: `desc` when given, then `flags` (Release,
    /// so the device that sees the flags sees the `desc` they refer to).
    fn write_driver_event<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        desc: Option<u16>,
        flags: u16,
    ) -> Result<(), DriverError> {
        if let Some(desc) = desc {
            store_u16(
                mem,
                layout::driver_event_desc(&self.config),
                desc,
                Ordering::Release,
            )?;
        }
        store_u16(
            mem,
            layout::driver_event_flags(&self.config),
            flags,
            Ordering::Release,
        )
    }

    /// Hostile-driver hook: writes a raw descriptor into ring slot `index` (modulo the size),
    /// bypassing every bookkeeping.
    pub fn write_raw_descriptor<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: u16,
        desc: PackedDescriptor,
    ) -> Result<(), DriverError> {
        let addr = layout::desc(&self.config, index % self.config.size);
        let bytes: [u8; 16] = zerocopy::transmute!(desc);
        mem.write_obj(bytes, addr).map_err(|_| mem_err(addr))
    }

    /// Hostile-driver hook: writes `descs` at the available position as one chain, with the
    /// AVAIL/USED bits of each slot set and everything else (NEXT, id, lengths) verbatim,
    /// without taking an id or ring slots. The head becomes available at [`Self::publish`].
    pub fn push_raw_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        descs: &[PackedDescriptor],
    ) -> Result<(), DriverError> {
        self.write_chain(mem, descs)
    }
}
