//! Virtqueue reset (VIRTIO_F_RING_RESET, virtio 1.4 profile): one queue is reset and
//! re-enabled while the others keep running (spec-decisions §16).
//!
//! The reset is synchronous: the core lock is held across it, so the queue is reset before the
//! driver can read `queue_reset` again, and the register reads 0 at once. A reset queue's
//! registers become writable again (with DRIVER_OK set) until the driver writes
//! `queue_enable` = 1, which starts the queue from the initial state of the negotiated ring.

use virtio_lm_queue::{DeviceQueue, QueueState, Virtqueue};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::DeviceCore;
use crate::error::DeviceError;
use crate::queues::QueueRegisters;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Whether queue `index` may be reset now: RING_RESET negotiated, DRIVER_OK set, the device
    /// neither quiescing nor quiet (spec-decisions §16: a queue reset while stopped or suspended
    /// is ignored) and not failed.
    fn ring_reset_allowed(&self, index: u16) -> bool {
        self.negotiated(Feature::RingReset)
            && self.has(DeviceStatus::DRIVER_OK)
            && !self.quiesced_in_band()
            && !self.admin_quiet()
            && !self.has(DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED)
            && usize::from(index) < self.queues.len()
    }

    /// The driver wrote 1 to `queue_reset` for queue `index`: the device stops using the
    /// queue (no request executed, no notification for it afterwards) and returns all of its
    /// state to the defaults, the available and used state included. Returns whether the
    /// queue was reset; the transport then resets its own per-queue registers (the MSI-X
    /// vector).
    pub fn reset_queue(&mut self, index: u16) -> bool {
        if !self.ring_reset_allowed(index) {
            return false;
        }
        self.device.reset_queue(index);
        let slot = &mut self.queues[usize::from(index)];
        slot.live = None;
        slot.regs = QueueRegisters::new(slot.regs.max_size);
        slot.state = None;
        slot.restored = false;
        slot.kicked = false;
        slot.handover = false;
        true
    }

    /// Whether queue `index`'s registers may be written after a queue reset: RING_RESET
    /// negotiated, DRIVER_OK set and the queue not enabled since.
    pub(super) fn reset_queue_writable(&self, index: u16) -> bool {
        self.ring_reset_allowed(index)
            && self
                .queues
                .get(usize::from(index))
                .is_some_and(|slot| slot.live.is_none() && !slot.regs.enabled)
    }

    /// Starts queue `index` after the driver re-enabled it following a queue reset, as
    /// DRIVER_OK starts a queue: from the initial state, checked against the new layout. A
    /// layout that fails the check sets DEVICE_NEEDS_RESET (spec-decisions §3).
    pub(super) fn start_reset_queue(&mut self, index: u16) {
        let kind = self.ring_kind();
        let features = self.ring_features();
        let slot = &self.queues[usize::from(index)];
        let config = slot.regs.config(kind, features);
        match Virtqueue::from_state(config, &QueueState::initial(kind), &*self.mem) {
            Ok(queue) => {
                let slot = &mut self.queues[usize::from(index)];
                slot.live = Some(queue);
                // The driver may have made buffers available before enabling: look now.
                slot.kicked = true;
                self.process_pending();
            }
            Err(source) => self.needs_reset(DeviceError::QueueStart { index, source }),
        }
    }
}
