//! Driver side of a split virtqueue: the guest driver model used by tests, the simulated VM's
//! guest drivers and the conformance suite.

use std::sync::atomic::{fence, Ordering};

use virtio_lm_spec::ring::{
    SplitDescriptor, UsedElem, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};
use zerocopy::FromBytes;

use super::layout;
use crate::chain::{BufferSpec, UsedBuffer};
use crate::config::QueueConfig;
use crate::driver_io::{check_order, load_u16, store_u16, zero_rings};
use crate::error::{mem_err, DriverError};
use crate::event::need_event;
use crate::kind::RingKind;

/// Driver side of a split virtqueue.
#[derive(Clone, Debug)]
pub struct SplitDriver {
    config: QueueConfig,
    /// Free descriptor indices (a stack: the most recently freed is reused first).
    free: Vec<u16>,
    /// Per head: the descriptor indices the chain occupies, while the device holds it.
    outstanding: Vec<Option<Vec<u16>>>,
    /// avail.idx to publish next.
    avail_idx: u16,
    /// avail.idx as last stored to guest memory.
    published_avail: u16,
    /// avail.idx at the last kick decision.
    kicked_avail: u16,
    /// Next used index to read.
    last_used: u16,
}

impl SplitDriver {
    /// Zeroes the rings (the driver initialises used.flags to 0) and returns a driver for them.
    pub fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, DriverError> {
        zero_rings(&config, RingKind::Split, mem)?;
        Ok(Self {
            outstanding: vec![None; usize::from(config.size)],
            free: (0..config.size).rev().collect(),
            config,
            avail_idx: 0,
            published_avail: 0,
            kicked_avail: 0,
            last_used: 0,
        })
    }

    /// The queue configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.free.len() as u16
    }

    /// avail.idx as last published to the device.
    pub fn published_avail_idx(&self) -> u16 {
        self.published_avail
    }

    /// Chains made available and not yet collected back.
    pub fn outstanding(&self) -> usize {
        self.outstanding.iter().filter(|o| o.is_some()).count()
    }

    fn write_desc<M: GuestMemory + ?Sized>(
        mem: &M,
        addr: GuestAddress,
        desc: SplitDescriptor,
    ) -> Result<(), DriverError> {
        let bytes: [u8; 16] = zerocopy::transmute!(desc);
        mem.write_obj(bytes, addr).map_err(|_| mem_err(addr))
    }

    fn take_descs(&mut self, count: usize) -> Result<Vec<u16>, DriverError> {
        if count > self.free.len() {
            return Err(DriverError::QueueFull {
                free: self.num_free(),
                needed: count.min(usize::from(u16::MAX)) as u16,
            });
        }
        Ok(self.free.split_off(self.free.len() - count))
    }

    /// Writes `buffers` as a chain of descriptors and places it in the available ring (visible
    /// to the device after [`Self::publish`]). Returns the head index.
    pub fn add_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
    ) -> Result<u16, DriverError> {
        check_order(buffers)?;
        let descs = self.take_descs(buffers.len())?;
        for (i, (buf, &index)) in buffers.iter().zip(&descs).enumerate() {
            let next = descs.get(i + 1).copied();
            let flags = if buf.writable { VIRTQ_DESC_F_WRITE } else { 0 }
                | if next.is_some() { VIRTQ_DESC_F_NEXT } else { 0 };
            let desc = SplitDescriptor::new(buf.addr.0, buf.len, flags, next.unwrap_or(0));
            if let Err(e) = Self::write_desc(mem, layout::desc(&self.config, index), desc) {
                self.free.extend(descs);
                return Err(e);
            }
        }
        self.expose(mem, descs)
    }

    /// Writes `buffers` into an indirect table at `table` and makes it available through one
    /// descriptor. Returns the head index.
    pub fn add_indirect_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
        table: GuestAddress,
    ) -> Result<u16, DriverError> {
        let entries = self.write_indirect_table(mem, buffers, table)?;
        let descs = self.take_descs(1)?;
        let desc = SplitDescriptor::new(table.0, 16 * u32::from(entries), VIRTQ_DESC_F_INDIRECT, 0);
        if let Err(e) = Self::write_desc(mem, layout::desc(&self.config, descs[0]), desc) {
            self.free.extend(descs);
            return Err(e);
        }
        self.expose(mem, descs)
    }

    /// Writes `buffers` as a chain in an indirect table at `table`; returns its entry count.
    fn write_indirect_table<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        buffers: &[BufferSpec],
        table: GuestAddress,
    ) -> Result<u16, DriverError> {
        check_order(buffers)?;
        let entries = u16::try_from(buffers.len()).map_err(|_| DriverError::QueueFull {
            free: self.num_free(),
            needed: u16::MAX,
        })?;
        for (i, buf) in (0u16..).zip(buffers) {
            let last = i + 1 == entries;
            let flags = if buf.writable { VIRTQ_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VIRTQ_DESC_F_NEXT };
            let desc =
                SplitDescriptor::new(buf.addr.0, buf.len, flags, if last { 0 } else { i + 1 });
            let addr = table.checked_add(16 * u64::from(i)).ok_or(mem_err(table))?;
            Self::write_desc(mem, addr, desc)?;
        }
        Ok(entries)
    }

    fn expose<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        descs: Vec<u16>,
    ) -> Result<u16, DriverError> {
        let head = descs[0];
        let entry = layout::avail_entry(&self.config, self.avail_idx);
        if let Err(e) = store_u16(mem, entry, head, Ordering::Relaxed) {
            self.free.extend(descs);
            return Err(e);
        }
        self.outstanding[usize::from(head)] = Some(descs);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Ok(head)
    }

    /// Stores avail.idx so the device can see every chain added so far.
    pub fn publish<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), DriverError> {
        let addr = layout::avail_idx(&self.config);
        // Release: ring entries and descriptors before the index that exposes them.
        store_u16(mem, addr, self.avail_idx, Ordering::Release)?;
        self.published_avail = self.avail_idx;
        Ok(())
    }

    /// Whether the device asked to be notified of what was published since the last decision.
    pub fn should_kick<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, DriverError> {
        fence(Ordering::SeqCst);
        let new = self.published_avail;
        let old = std::mem::replace(&mut self.kicked_avail, new);
        if old == new {
            return Ok(false);
        }
        if self.config.features.event_idx {
            let addr = layout::avail_event(&self.config);
            let event = load_u16(mem, addr)?;
            Ok(need_event(event, new, old))
        } else {
            let flags = load_u16(mem, layout::used_flags(&self.config))?;
            Ok(flags & VIRTQ_USED_F_NO_NOTIFY == 0)
        }
    }

    /// Collects every buffer the device has used since the last call, freeing its descriptors.
    pub fn collect_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<UsedBuffer>, DriverError> {
        let used_idx = load_u16(mem, layout::used_idx(&self.config))?;
        let distance = used_idx.wrapping_sub(self.last_used);
        if distance > self.config.size {
            return Err(DriverError::UsedIndexJump { distance });
        }
        let mut used = Vec::with_capacity(usize::from(distance));
        while self.last_used != used_idx {
            let addr = layout::used_entry(&self.config, self.last_used);
            let raw: [u8; 8] = mem.read_obj(addr).map_err(|_| mem_err(addr))?;
            let elem = UsedElem::read_from_bytes(&raw).map_err(|_| mem_err(addr))?;
            let id = elem.id.get();
            let descs = u16::try_from(id)
                .ok()
                .and_then(|h| self.outstanding.get_mut(usize::from(h)))
                .and_then(Option::take)
                .ok_or(DriverError::UnknownUsedId { id })?;
            self.free.extend(descs);
            used.push(UsedBuffer {
                id: id as u16,
                len: elem.len.get(),
            });
            self.last_used = self.last_used.wrapping_add(1);
        }
        Ok(used)
    }

    /// Asks for used-buffer notifications. Returns true if used buffers are already waiting.
    pub fn enable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, DriverError> {
        let (addr, value) = if self.config.features.event_idx {
            (layout::used_event(&self.config), self.last_used)
        } else {
            (layout::avail_flags(&self.config), 0)
        };
        store_u16(mem, addr, value, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(load_u16(mem, layout::used_idx(&self.config))? != self.last_used)
    }

    /// Asks the device not to send used-buffer notifications.
    pub fn disable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), DriverError> {
        let (addr, value) = if self.config.features.event_idx {
            // As Linux does: an event index half the index space away is never reached soon.
            (
                layout::used_event(&self.config),
                self.last_used.wrapping_add(0x8000),
            )
        } else {
            (
                layout::avail_flags(&self.config),
                VIRTQ_AVAIL_F_NO_INTERRUPT,
            )
        };
        store_u16(mem, addr, value, Ordering::Relaxed)
    }

    /// Sets `used_event` to an explicit value (EVENT_IDX tests).
    pub fn set_used_event<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        value: u16,
    ) -> Result<(), DriverError> {
        store_u16(
            mem,
            layout::used_event(&self.config),
            value,
            Ordering::Release,
        )
    }

    /// Hostile-driver hook: writes a raw descriptor into the table, bypassing the free list.
    pub fn write_raw_descriptor<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: u16,
        desc: SplitDescriptor,
    ) -> Result<(), DriverError> {
        Self::write_desc(
            mem,
            layout::desc(&self.config, index % self.config.size),
            desc,
        )
    }

    /// Hostile-driver hook: places `head` in the available ring without tracking it.
    pub fn push_raw_head<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        head: u16,
    ) -> Result<(), DriverError> {
        let entry = layout::avail_entry(&self.config, self.avail_idx);
        store_u16(mem, entry, head, Ordering::Relaxed)?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Ok(())
    }

    /// Hostile-driver hook: stores an arbitrary avail.idx.
    pub fn set_raw_avail_idx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        idx: u16,
    ) -> Result<(), DriverError> {
        let addr = layout::avail_idx(&self.config);
        store_u16(mem, addr, idx, Ordering::Release)?;
        self.avail_idx = idx;
        self.published_avail = idx;
        Ok(())
    }
}
