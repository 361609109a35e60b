//! The blk driver's own state as data ([`BlkDriverState`]): the transport driver's state, the
//! layout, and per queue the free request slots and the requests in flight — what a guest
//! carries to another process besides guest memory. Restoring checks every slot against the
//! layout before the driver is built.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_lm_pci::{DriverState, PciDriver, PciError, PciTransport};
use virtio_lm_spec::Profile;
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use super::{interrupt_epolls, BlkDriver, BlkDriverConfig, BlkDriverError, Pending, SlotQueue};

/// One request in flight: chain id, slot, request type, IN bytes expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// Chain id.
    pub id: u16,
    /// Guest address of its slot.
    pub slot: u64,
    /// Request type.
    pub kind: u32,
    /// Bytes of IN data.
    pub in_len: u32,
}

/// A [`BlkDriver`]'s state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlkDriverState {
    /// The transport driver.
    pub pci: DriverState,
    /// The layout.
    pub config: BlkDriverConfig,
    /// Per queue.
    pub queues: Vec<SlotQueueState>,
}

/// One queue's slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotQueueState {
    /// Free slots, in the order they are taken (last first).
    pub free: Vec<u64>,
    /// Requests in flight, in chain-id order.
    pub pending: Vec<PendingRequest>,
}

impl SlotQueue {
    /// This queue's slots as data.
    fn state(&self) -> SlotQueueState {
        let mut pending: Vec<_> = self
            .pending
            .iter()
            .map(|(&id, p)| PendingRequest {
                id,
                slot: p.slot,
                kind: p.kind,
                in_len: p.in_len,
            })
            .collect();
        pending.sort_by_key(|p| p.id);
        SlotQueueState {
            free: self.free.clone(),
            pending,
        }
    }
}

impl<M: GuestMemory> BlkDriver<M> {
    /// The driver's state.
    pub fn state(&self) -> BlkDriverState {
        BlkDriverState {
            pci: self.pci.driver_state(),
            config: self.config,
            queues: self.queues.iter().map(SlotQueue::state).collect(),
        }
    }

    /// A driver continuing from `state` over the function behind `transport`, rings in `mem`,
    /// interrupts on `irqs` (queue *i* on `irqs[i]`). Every slot must be one of its queue's,
    /// free or in flight exactly once, every chain id once per queue; nothing is built
    /// otherwise.
    pub fn from_state(
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
        profile: Profile,
        state: BlkDriverState,
        irqs: Vec<Arc<EventFd>>,
    ) -> Result<Self, BlkDriverError> {
        let config = state.config;
        let bad = |why| BlkDriverError::Pci(PciError::BadDriverState(why));
        if config.max_data == 0 || !config.max_data.is_multiple_of(512) {
            return Err(bad("max_data"));
        }
        if state.queues.len() != usize::from(config.num_queues) {
            return Err(bad("not one slot list per queue"));
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (q, s) in (0u16..).zip(state.queues) {
            let first = config.slots_at(q);
            let count = u64::from(config.queue_size);
            let mut seen = vec![false; usize::from(config.queue_size)];
            let mut mark = |slot: u64| {
                let offset = slot
                    .checked_sub(first)
                    .ok_or(bad("a slot below its queue"))?;
                let (index, rest) = (offset / config.slot_len(), offset % config.slot_len());
                match seen.get_mut(index as usize) {
                    Some(s) if rest == 0 && index < count && !*s => {
                        *s = true;
                        Ok(())
                    }
                    _ => Err(bad("a slot outside its queue, misaligned or listed twice")),
                }
            };
            for &slot in &s.free {
                mark(slot)?;
            }
            let mut pending = HashMap::with_capacity(s.pending.len());
            for p in &s.pending {
                mark(p.slot)?;
                if p.in_len > config.max_data {
                    return Err(bad("IN data longer than a slot"));
                }
                let request = Pending {
                    slot: p.slot,
                    kind: p.kind,
                    in_len: p.in_len,
                };
                if pending.insert(p.id, request).is_some() {
                    return Err(bad("a chain id is in flight twice"));
                }
            }
            if seen.iter().any(|s| !s) {
                return Err(bad("a slot is neither free nor in flight"));
            }
            queues.push(SlotQueue {
                free: s.free,
                pending,
            });
        }
        if irqs.len() < usize::from(config.num_queues) {
            return Err(BlkDriverError::BadRequest(
                "one interrupt eventfd per queue",
            ));
        }
        let pci = PciDriver::from_state(transport, mem, profile, state.pci)?;
        let irqs: Vec<_> = irqs
            .into_iter()
            .take(usize::from(config.num_queues))
            .collect();
        Ok(Self {
            pci,
            config,
            queues,
            irqs: interrupt_epolls(&irqs)?,
            irq_fds: irqs,
        })
    }
}
