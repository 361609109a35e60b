//! Device side of a packed virtqueue.

use std::sync::atomic::{fence, Ordering};

use virtio_lm_spec::ring::{
    PackedDescriptor, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
    VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Address, GuestMemory};

use super::layout;
use crate::chain::{DescriptorChain, UsedBuffer};
use crate::config::QueueConfig;
use crate::device_queue::DeviceQueue;
use crate::error::{ring_err, ChainError, ConfigError, QueueError, StateError};
use crate::event::{EventSuppression, RingPosition};
use crate::inflight::InflightTracker;
use crate::kind::RingKind;
use crate::state::validate_inflight;
use crate::state::QueueState;
use crate::view::{DescTable, RingOps, RingView};
use crate::walk::{indirect_table, ChainBuilder, IndirectRules};

/// Device side of a packed virtqueue.
///
/// Any size in 1..=32768 works, not only powers of two. Used descriptors are written in
/// completion order; [`DeviceQueue::publish_used`] flips their flags as one batch.
///
/// ```
/// use virtio_lm_queue::{BufferSpec, DeviceQueue, PackedDriver, PackedQueue, QueueConfig, RingFeatures, RingKind};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// let (config, _) = QueueConfig::contiguous(RingKind::Packed, 3, GuestAddress(0), RingFeatures::default());
/// let mut driver = PackedDriver::new(config, &mem).unwrap();
/// let mut device = PackedQueue::new(config, &mem).unwrap();
///
/// let id = driver.add_chain(&mem, &[BufferSpec::readable(0x8000, 64), BufferSpec::writable(0x9000, 16)]).unwrap();
/// driver.publish(&mem).unwrap();
///
/// let chain = device.pop(&mem).unwrap().expect("one chain");
/// assert_eq!((chain.id(), chain.ring_slots(), chain.writable_len()), (id, 2, 16));
/// device.add_used(&mem, chain.id(), 16).unwrap();
/// device.publish_used(&mem).unwrap();
/// assert!(device.needs_notification(&mem).unwrap());
/// assert_eq!(driver.collect_used(&mem).unwrap()[0].len, 16);
/// ```
#[derive(Clone, Debug)]
pub struct PackedQueue {
    config: QueueConfig,
    /// Next descriptor slot to read and the driver wrap counter expected there (seed 001
    /// `last_avail_idx` and `last_avail_wrap_counter`).
    next_avail: RingPosition,
    /// Next descriptor slot to write a used descriptor to (seed 001 `used_idx` and
    /// `used_wrap_counter`).
    next_used: RingPosition,
    /// The first used descriptor added since the last `publish_used`: (slot, flags). Its flags
    /// wait for `publish_used`; the driver reads used descriptors in ring order starting there,
    /// so the ones after it can be written whole at once and stay unseen until it flips.
    pending_head: Option<(u16, u16)>,
    /// Used descriptors added since the last `publish_used`.
    pending: u16,
    /// `next_used` as of the last `publish_used`: what the driver can see.
    published_used: RingPosition,
    /// `published_used` at the last notification decision.
    signalled_used: RingPosition,
    /// Ring slots published since the last notification decision. Positions alone cannot tell
    /// "nothing" from "two whole laps" (a ring of size 1 has only two positions).
    unsignalled_slots: u32,
    /// A notification is owed regardless of suppression (restored from a saved state).
    force_notify: bool,
    inflight: InflightTracker,
}

impl PackedQueue {
    /// Next descriptor slot the device will read, with the driver wrap counter it expects there
    /// (seed 001 `last_avail_idx` and `last_avail_wrap_counter`).
    pub fn next_avail(&self) -> RingPosition {
        self.next_avail
    }

    /// Next descriptor slot the device will write a used descriptor to, with its wrap counter
    /// (seed 001 `used_idx` and `used_wrap_counter`).
    pub fn next_used(&self) -> RingPosition {
        self.next_used
    }

    /// Reads the chain starting at `next_avail`, whose head the caller has seen available.
    /// The chain is the run of ring descriptors up to the first without NEXT, wrapping at the
    /// end of the ring; only the head's AVAIL bit is checked (the driver makes it available last).
    fn parse_chain<M: GuestMemory + ?Sized>(
        &self,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
    ) -> Result<(), ChainError> {
        let config = self.config;
        let start = self.next_avail;
        Self::build_chain(&config, view, chain, |slot| {
            let position = start.advance(slot, config.size);
            Ok(view
                .read_ring_desc(layout::desc(&config, position.index))?
                .packed())
        })
    }

    /// Builds a chain from its ring descriptors, `descriptor(i)` being the `i`-th (ring order).
    fn build_chain<M: GuestMemory + ?Sized>(
        config: &QueueConfig,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
        mut descriptor: impl FnMut(u16) -> Result<PackedDescriptor, ChainError>,
    ) -> Result<(), ChainError> {
        let size = config.size;
        let mut builder = ChainBuilder::new(std::mem::take(&mut chain.segments));
        let mut slots = 0u16;
        let id = loop {
            let desc = descriptor(slots)?;
            slots += 1;
            let flags = desc.flags.get();
            let has_next = flags & VIRTQ_DESC_F_NEXT != 0;
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                let rules = IndirectRules::in_ring(config, has_next);
                let (table, entries) =
                    indirect_table(view, rules, desc.addr.get(), desc.len.get())?;
                Self::walk_indirect(view, &mut builder, &table, entries)?;
            } else {
                builder.push(view, desc.addr.get(), desc.len.get(), flags)?;
            }
            if !has_next {
                break desc.id.get();
            }
            if slots >= size {
                return Err(ChainError::ChainTooLong {
                    limit: u32::from(size),
                });
            }
        };
        *chain = builder.finish(id, slots);
        Ok(())
    }

    /// Rebuilds a chain from copies of its ring descriptors, in ring order, with the checks of
    /// taking it from the ring (indirect tables are read from guest memory again): how a
    /// backend recovers a chain it recorded before a crash, when the ring slots may already
    /// hold used descriptors. The last copy must end the chain (no NEXT).
    pub fn chain_from_descriptors<M: GuestMemory + ?Sized>(
        config: &QueueConfig,
        mem: &M,
        descriptors: &[PackedDescriptor],
    ) -> Result<DescriptorChain, ChainError> {
        let view = RingView::new(mem, config);
        let mut chain = DescriptorChain::default();
        let limit = u32::try_from(descriptors.len()).unwrap_or(u32::MAX);
        Self::build_chain(config, &view, &mut chain, |i| {
            descriptors
                .get(usize::from(i))
                .copied()
                .ok_or(ChainError::ChainTooLong { limit })
        })?;
        if usize::from(chain.ring_slots) != descriptors.len() {
            return Err(ChainError::ChainTooLong { limit });
        }
        Ok(chain)
    }

    /// Adds the `entries` descriptors of an indirect table, read in order. Only WRITE counts in
    /// a table entry: NEXT and id are ignored, INDIRECT would be a nested table.
    fn walk_indirect<M: GuestMemory + ?Sized>(
        view: &RingView<'_, M>,
        builder: &mut ChainBuilder,
        table: &DescTable<'_, M>,
        entries: u32,
    ) -> Result<(), ChainError> {
        for i in 0..entries {
            let desc = table.read(i)?.packed();
            let flags = desc.flags.get();
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(ChainError::NestedIndirect);
            }
            builder.push(view, desc.addr.get(), desc.len.get(), flags)?;
        }
        Ok(())
    }

    fn check_state<M: GuestMemory + ?Sized>(
        config: &QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<(RingPosition, RingPosition, Vec<DescriptorChain>), StateError> {
        config.validate_as(RingKind::Packed, mem)?;
        let size = config.size;
        let avail = RingPosition::from_state(state.avail_state);
        let used = RingPosition::from_state(state.used_state);
        for (which, position) in [("avail_state", avail), ("used_state", used)] {
            if position.index >= size {
                return Err(StateError::IndexOutOfRange {
                    which,
                    index: position.index,
                    size,
                });
            }
        }
        // Every slot between the used and the available position belongs to exactly one chain
        // in flight: otherwise a buffer would be lost or used twice.
        let distance = avail.distance_from(used, size);
        let inflight = state
            .inflight
            .iter()
            .fold(0u32, |acc, c| acc.saturating_add(u32::from(c.ring_slots)));
        if inflight != distance || distance > u32::from(size) {
            return Err(StateError::InflightMismatch { inflight, distance });
        }
        // Any chain length the ring holds is possible; the sum check above ties them together.
        let chains = validate_inflight(config, state, mem, |c| {
            if c.ring_slots <= size {
                c.ring_slots
            } else {
                0
            }
        })?;
        Ok((avail, used, chains))
    }

    /// A queue at `avail` and `used` with everything published and signalled.
    fn resumed(
        config: QueueConfig,
        avail: RingPosition,
        used: RingPosition,
        inflight: InflightTracker,
    ) -> Self {
        Self {
            config,
            next_avail: avail,
            next_used: used,
            pending_head: None,
            pending: 0,
            published_used: used,
            signalled_used: used,
            unsignalled_slots: 0,
            force_notify: false,
            inflight,
        }
    }

    /// Reads the driver event suppression structure. Flags are read first with Acquire, so a
    /// `desc` written before them is seen with them.
    fn driver_event<M: GuestMemory + ?Sized>(
        &self,
        view: &RingView<'_, M>,
    ) -> Result<EventSuppression, QueueError> {
        let flags_addr = layout::driver_event_flags(&self.config);
        let flags = view
            .load_u16(flags_addr, Ordering::Acquire)
            .map_err(ring_err)?;
        let desc_addr = layout::driver_event_desc(&self.config);
        let desc = view
            .load_u16(desc_addr, Ordering::Relaxed)
            .map_err(ring_err)?;
        Ok(EventSuppression::from_raw(desc, flags))
    }
}

impl DeviceQueue for PackedQueue {
    fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, ConfigError> {
        config.validate_as(RingKind::Packed, mem)?;
        let inflight = InflightTracker::new(config.size);
        Ok(Self::resumed(
            config,
            RingPosition::INITIAL,
            RingPosition::INITIAL,
            inflight,
        ))
    }

    fn from_state<M: GuestMemory + ?Sized>(
        config: QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<Self, StateError> {
        let (avail, used, chains) = Self::check_state(&config, state, mem)?;
        let inflight = InflightTracker::from_chains(config.size, &chains);
        let queue = Self::resumed(config, avail, used, inflight);
        Ok(Self {
            force_notify: state.notification_owed,
            ..queue
        })
    }

    fn publish_used<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        let Some((slot, flags)) = self.pending_head.take() else {
            return Ok(());
        };
        // Release: every used descriptor of the batch is written before the head's flags hand
        // the batch over; the driver sees it all at once (as DPDK does).
        let addr = layout::desc_flags(&self.config, slot);
        if let Err(addr) = self.view(mem).store_u16(addr, flags, Ordering::Release) {
            self.pending_head = Some((slot, flags));
            return Err(ring_err(addr));
        }
        let published = self
            .next_used
            .distance_from(self.published_used, self.config.size);
        self.unsignalled_slots = self.unsignalled_slots.saturating_add(published);
        self.published_used = self.next_used;
        self.pending = 0;
        Ok(())
    }

    fn needs_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        // The flag stores must be ordered before the read of the driver's suppression structure,
        // or a driver that just re-enabled interrupts could be missed.
        fence(Ordering::SeqCst);
        let old = self.signalled_used;
        let new = self.published_used;
        let slots = std::mem::take(&mut self.unsignalled_slots);
        self.signalled_used = new;
        if std::mem::take(&mut self.force_notify) {
            return Ok(true);
        }
        if slots == 0 {
            return Ok(false);
        }
        let suppression = self.driver_event(&self.view(mem))?;
        Ok(suppression.wants(&self.config, old, new, slots))
    }

    fn enable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        let view = self.view(mem);
        let store = |addr, value, order| view.store_u16(addr, value, order).map_err(ring_err);
        let flags = layout::device_event_flags(&self.config);
        if self.config.features.event_idx {
            // Notify me when the descriptor I read next becomes available.
            let desc = layout::device_event_desc(&self.config);
            store(desc, self.next_avail.to_state(), Ordering::Relaxed)?;
            store(flags, RING_EVENT_FLAGS_DESC, Ordering::Release)?;
        } else {
            store(flags, RING_EVENT_FLAGS_ENABLE, Ordering::Release)?;
        }
        // The enable must be visible before re-reading the ring, or a buffer made available in
        // between would get neither a kick nor a poll.
        fence(Ordering::SeqCst);
        self.has_available_in(&view)
    }

    fn disable_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        let flags = layout::device_event_flags(&self.config);
        self.view(mem)
            .store_u16(flags, RING_EVENT_FLAGS_DISABLE, Ordering::Relaxed)
            .map_err(ring_err)
    }

    fn state(&self) -> Result<QueueState, QueueError> {
        if self.pending != 0 {
            return Err(QueueError::UnpublishedUsed {
                count: self.pending,
            });
        }
        Ok(QueueState {
            avail_state: self.next_avail.to_state(),
            used_state: self.next_used.to_state(),
            notification_owed: self.force_notify || self.unsignalled_slots != 0,
            inflight: self.inflight.saved(),
        })
    }

    fn reset(&mut self) {
        let inflight = self.inflight.recycle();
        *self = Self::resumed(
            self.config,
            RingPosition::INITIAL,
            RingPosition::INITIAL,
            inflight,
        );
    }
}

impl RingOps for PackedQueue {
    fn has_available_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
    ) -> Result<bool, QueueError> {
        // Acquire: the descriptor's other fields are read only after its flags say available.
        let addr = layout::desc_flags(&self.config, self.next_avail.index);
        let flags = view.load_u16(addr, Ordering::Acquire).map_err(ring_err)?;
        Ok(layout::is_avail(flags, self.next_avail.wrap_counter))
    }

    fn add_used_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        used: UsedBuffer,
    ) -> Result<(), QueueError> {
        let UsedBuffer { id, len } = used;
        let slots = self.inflight.check_used(id, len)?;
        let slot = self.next_used.index;
        // WRITE marks `len` as meaningful (the spec reserves it otherwise); the driver reads 0
        // without it, which is what a zero-length completion means anyway.
        let flags = layout::used_bits(self.next_used.wrap_counter)
            | if len != 0 { VIRTQ_DESC_F_WRITE } else { 0 };
        // Bytes 8..16 of the descriptor: len, id, flags (addr stays as the driver wrote it).
        let tail = u64::from(len) | u64::from(id) << 32 | u64::from(flags) << 48;
        let addr = layout::desc(&self.config, slot).unchecked_add(layout::LEN_OFFSET);
        if self.pending_head.is_none() {
            // The batch head: len and id now, the flags that hand the batch over at publish.
            let b = tail.to_le_bytes();
            let len_id = [b[0], b[1], b[2], b[3], b[4], b[5]];
            view.write_obj(len_id, addr).map_err(ring_err)?;
            self.pending_head = Some((slot, flags));
        } else {
            // One aligned 8-byte store; the driver, stopped at the head, does not look yet.
            view.store_le(addr, tail.to_le(), Ordering::Relaxed)
                .map_err(ring_err)?;
        }
        self.pending += 1;
        self.inflight.remove(id);
        self.next_used = self.next_used.advance(slots, self.config.size);
        Ok(())
    }

    fn pop_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError> {
        // has_available reads the head's flags with Acquire: the rest of the chain, written
        // before them, is visible to the reads below.
        if !self.has_available_in(view)? {
            return Ok(false);
        }
        self.parse_chain(view, chain)?;
        self.inflight.insert(chain)?;
        self.next_avail = self.next_avail.advance(chain.ring_slots, self.config.size);
        Ok(true)
    }

    fn ring_config(&self) -> &QueueConfig {
        &self.config
    }

    fn inflight_tracker(&self) -> &InflightTracker {
        &self.inflight
    }
}
