//! Device side of a split virtqueue.

use std::sync::atomic::{fence, Ordering};

use virtio_lm_spec::ring::{
    UsedElem, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_USED_F_NO_NOTIFY,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout;
use crate::chain::{DescriptorChain, UsedBuffer};
use crate::config::QueueConfig;
use crate::device_queue::DeviceQueue;
use crate::error::{ring_err, ChainError, ConfigError, QueueError, StateError};
use crate::event::need_event;
use crate::inflight::InflightTracker;
use crate::kind::RingKind;
use crate::state::QueueState;
use crate::view::{RingOps, RingView};
use crate::walk::{indirect_table, ChainBuilder, IndirectRules};

/// Device side of a split virtqueue.
///
/// ```
/// use virtio_lm_queue::{BufferSpec, DeviceQueue, QueueConfig, RingFeatures, RingKind, SplitDriver, SplitQueue};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// let (config, _) = QueueConfig::contiguous(RingKind::Split, 8, GuestAddress(0), RingFeatures::default());
/// let mut driver = SplitDriver::new(config, &mem).unwrap();
/// let mut device = SplitQueue::new(config, &mem).unwrap();
///
/// let head = driver.add_chain(&mem, &[BufferSpec::readable(0x8000, 64), BufferSpec::writable(0x9000, 16)]).unwrap();
/// driver.publish(&mem).unwrap();
///
/// let chain = device.pop(&mem).unwrap().expect("one chain");
/// assert_eq!((chain.id(), chain.readable_len(), chain.writable_len()), (head, 64, 16));
/// device.add_used(&mem, chain.id(), 16).unwrap();
/// device.publish_used(&mem).unwrap();
/// assert!(device.needs_notification(&mem).unwrap());
/// assert_eq!(driver.collect_used(&mem).unwrap()[0].len, 16);
/// ```
#[derive(Clone, Debug)]
pub struct SplitQueue {
    config: QueueConfig,
    /// Next available-ring index to read (seed 001 `last_avail_idx`).
    next_avail: u16,
    /// Last avail.idx read from guest memory: saves a memory read per chain in a batch.
    cached_avail_idx: u16,
    /// Next used-ring index to write.
    next_used: u16,
    /// used.idx as last stored to guest memory.
    published_used: u16,
    /// used.idx at the last notification decision.
    signalled_used: u16,
    /// A notification is owed regardless of suppression (restored from a saved state).
    force_notify: bool,
    inflight: InflightTracker,
}

impl SplitQueue {
    fn parse_chain<M: GuestMemory + ?Sized>(
        &self,
        view: &RingView<'_, M>,
        head: u16,
        chain: &mut DescriptorChain,
    ) -> Result<(), ChainError> {
        let size = u32::from(self.config.size);
        if u32::from(head) >= size {
            return Err(ChainError::IndexOutOfRange {
                index: u32::from(head),
                limit: size,
            });
        }
        let mut builder = ChainBuilder::new(std::mem::take(&mut chain.segments));
        let mut index = u32::from(head);
        let mut visited = 0u32;
        // The direct part of the chain, in the ring's own table.
        let indirect = loop {
            visited += 1;
            if visited > size {
                return Err(ChainError::ChainTooLong { limit: size });
            }
            let raw = view.read_ring_desc(layout::desc(&self.config, index as u16))?;
            let desc = raw.split();
            let flags = desc.flags.get();
            let has_next = flags & VIRTQ_DESC_F_NEXT != 0;
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                let rules = IndirectRules::in_ring(&self.config, has_next);
                break Some(indirect_table(
                    view,
                    rules,
                    desc.addr.get(),
                    desc.len.get(),
                )?);
            }
            builder.push(view, desc.addr.get(), desc.len.get(), flags)?;
            if !has_next {
                break None;
            }
            index = u32::from(desc.next.get());
            if index >= size {
                return Err(ChainError::IndexOutOfRange { index, limit: size });
            }
        };
        // An indirect table ends the chain: the descriptor pointing to it cannot have NEXT.
        if let Some((table, entries)) = indirect {
            let mut index = 0u32;
            for visited in 1.. {
                if visited > entries {
                    return Err(ChainError::ChainTooLong { limit: entries });
                }
                let desc = table.read(index)?.split();
                let flags = desc.flags.get();
                if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                    return Err(ChainError::NestedIndirect);
                }
                builder.push(view, desc.addr.get(), desc.len.get(), flags)?;
                if flags & VIRTQ_DESC_F_NEXT == 0 {
                    break;
                }
                index = u32::from(desc.next.get());
                if index >= entries {
                    return Err(ChainError::IndexOutOfRange {
                        index,
                        limit: entries,
                    });
                }
            }
        }
        *chain = builder.finish(head, 1);
        Ok(())
    }

    /// A queue that reads the available ring at `next_avail` and writes used entries at
    /// `used_idx`, with everything published and signalled.
    fn resumed(
        config: QueueConfig,
        next_avail: u16,
        used_idx: u16,
        inflight: InflightTracker,
    ) -> Self {
        Self {
            config,
            next_avail,
            cached_avail_idx: next_avail,
            next_used: used_idx,
            published_used: used_idx,
            signalled_used: used_idx,
            force_notify: false,
            inflight,
        }
    }

    fn check_state<M: GuestMemory + ?Sized>(
        config: &QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<(u16, Vec<DescriptorChain>), StateError> {
        config.validate_as(RingKind::Split, mem)?;
        if state.used_state != 0 {
            return Err(StateError::SplitUsedState(state.used_state));
        }
        let last_avail = state.avail_state;
        let load = |addr: GuestAddress| {
            mem.load::<u16>(addr, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(|_| StateError::RingAccess { addr: addr.0 })
        };
        let avail_idx = load(layout::avail_idx(config))?;
        if avail_idx.wrapping_sub(last_avail) > config.size {
            return Err(StateError::AvailAhead {
                avail_idx,
                last_avail,
                size: config.size,
            });
        }
        let used_idx = load(layout::used_idx(config))?;
        let distance = u32::from(last_avail.wrapping_sub(used_idx));
        if distance != state.inflight.len() as u32 {
            return Err(StateError::InflightMismatch {
                inflight: state.inflight.len() as u32,
                distance,
            });
        }
        let chains = crate::state::validate_inflight(config, state, mem, |_| 1)?;
        Ok((used_idx, chains))
    }

    /// The chain whose head is descriptor `head`, read from the descriptor table with the
    /// checks of taking it from the ring: how a backend recovers a chain it recorded as taken
    /// before a crash (the driver leaves an in-flight chain's descriptors alone until it is used).
    pub fn chain_at<M: GuestMemory + ?Sized>(
        config: &QueueConfig,
        mem: &M,
        head: u16,
    ) -> Result<DescriptorChain, ChainError> {
        let queue = Self::resumed(*config, 0, 0, InflightTracker::default());
        let mut chain = DescriptorChain::default();
        queue.parse_chain(&RingView::new(mem, config), head, &mut chain)?;
        Ok(chain)
    }

    /// Next available-ring index the device will read (seed 001 `last_avail_idx`).
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// Next used-ring index the device will write.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }
}

impl DeviceQueue for SplitQueue {
    fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, ConfigError> {
        config.validate_as(RingKind::Split, mem)?;
        Ok(Self::resumed(
            config,
            0,
            0,
            InflightTracker::new(config.size),
        ))
    }

    fn from_state<M: GuestMemory + ?Sized>(
        config: QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<Self, StateError> {
        let (used_idx, chains) = Self::check_state(&config, state, mem)?;
        let inflight = InflightTracker::from_chains(config.size, &chains);
        Ok(Self {
            force_notify: state.notification_owed,
            ..Self::resumed(config, state.avail_state, used_idx, inflight)
        })
    }

    fn publish_used<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        if self.published_used == self.next_used {
            return Ok(());
        }
        // Release: the used elements must be visible before the index that exposes them.
        let addr = layout::used_idx(&self.config);
        mem.store(self.next_used.to_le(), addr, Ordering::Release)
            .map_err(|_| ring_err(addr))?;
        self.published_used = self.next_used;
        Ok(())
    }

    fn needs_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        // The used.idx store must be ordered before the read of the driver's suppression field,
        // or a driver that just re-enabled interrupts could be missed.
        fence(Ordering::SeqCst);
        let old = self.signalled_used;
        let new = self.published_used;
        self.signalled_used = new;
        if std::mem::take(&mut self.force_notify) {
            return Ok(true);
        }
        if old == new {
            return Ok(false);
        }
        let load = |addr: GuestAddress| {
            mem.load::<u16>(addr, Ordering::Relaxed)
                .map(u16::from_le)
                .map_err(|_| ring_err(addr))
        };
        if self.config.features.event_idx {
            Ok(need_event(
                load(layout::used_event(&self.config))?,
                new,
                old,
            ))
        } else {
            Ok(load(layout::avail_flags(&self.config))? & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    fn enable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        let view = self.view(mem);
        let (addr, value) = if self.config.features.event_idx {
            (layout::avail_event(&self.config), self.next_avail)
        } else {
            (layout::used_flags(&self.config), 0)
        };
        view.store_u16(addr, value, Ordering::Relaxed)
            .map_err(ring_err)?;
        // The enable must be visible before re-reading avail.idx, or a buffer added in between
        // would get neither a kick nor a poll.
        fence(Ordering::SeqCst);
        self.has_available_in(&view)
    }

    fn disable_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        // With EVENT_IDX a stale avail_event already suppresses kicks; writing it would only cost.
        if !self.config.features.event_idx {
            let addr = layout::used_flags(&self.config);
            mem.store(VIRTQ_USED_F_NO_NOTIFY.to_le(), addr, Ordering::Relaxed)
                .map_err(|_| ring_err(addr))?;
        }
        Ok(())
    }

    fn state(&self) -> Result<QueueState, QueueError> {
        if self.published_used != self.next_used {
            return Err(QueueError::UnpublishedUsed {
                count: self.next_used.wrapping_sub(self.published_used),
            });
        }
        Ok(QueueState {
            avail_state: self.next_avail,
            used_state: 0,
            notification_owed: self.force_notify || self.signalled_used != self.published_used,
            inflight: self.inflight.saved(),
        })
    }

    fn reset(&mut self) {
        let inflight = self.inflight.recycle();
        *self = Self::resumed(self.config, 0, 0, inflight);
    }
}

impl RingOps for SplitQueue {
    fn ring_config(&self) -> &QueueConfig {
        &self.config
    }

    fn inflight_tracker(&self) -> &InflightTracker {
        &self.inflight
    }

    fn has_available_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
    ) -> Result<bool, QueueError> {
        let avail_idx = view
            .load_u16(layout::avail_idx(&self.config), Ordering::Acquire)
            .map_err(ring_err)?;
        if avail_idx.wrapping_sub(self.next_avail) > self.config.size {
            return Err(QueueError::AvailIndexJump {
                avail_idx,
                next_avail: self.next_avail,
                size: self.config.size,
            });
        }
        self.cached_avail_idx = avail_idx;
        Ok(avail_idx != self.next_avail)
    }

    fn pop_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError> {
        if self.cached_avail_idx == self.next_avail && !self.has_available_in(view)? {
            return Ok(false);
        }
        let entry = layout::avail_entry(&self.config, self.next_avail);
        let head = view.load_u16(entry, Ordering::Relaxed).map_err(ring_err)?;
        self.parse_chain(view, head, chain)?;
        self.inflight.insert(chain)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(true)
    }

    fn add_used_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        used: UsedBuffer,
    ) -> Result<(), QueueError> {
        self.inflight.check_used(used.id, used.len)?;
        let addr = layout::used_entry(&self.config, self.next_used);
        let bytes: [u8; 8] = zerocopy::transmute!(UsedElem::new(u32::from(used.id), used.len));
        view.write_obj(bytes, addr).map_err(ring_err)?;
        self.inflight.remove(used.id);
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }
}
