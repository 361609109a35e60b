//! Queue registers and the seed 001 queue state: the setup window, the state readable while the
//! device does not run, and the state written before DRIVER_OK.

use virtio_lm_queue::{DeviceQueue, QueueState};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::queues::{QueueRegisters, QueueSlot};

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Number of queues.
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Registers of queue `index`.
    pub fn queue(&self, index: u16) -> Option<&QueueRegisters> {
        self.queues.get(usize::from(index)).map(|s| &s.regs)
    }

    /// Whether queue registers may be written now: after FEATURES_OK, before DRIVER_OK, and not
    /// while suspended (spec-decisions §2: only queue state may be written then).
    pub(super) fn queue_writable(&self) -> bool {
        !self.admin_silent()
            && self.has(DeviceStatus::FEATURES_OK)
            && !self.has(DeviceStatus::DRIVER_OK)
            && self.suspend == Quiet::No
            && !self.has(DeviceStatus::FAILED)
    }

    /// Driver writes queue registers; ignored outside the setup window (or, with RING_RESET,
    /// the window of a reset queue) or past the last queue.
    pub fn write_queue(&mut self, index: u16, update: impl FnOnce(&mut QueueRegisters)) {
        let after_reset = self.reset_queue_writable(index);
        if !self.queue_writable() && !after_reset {
            return;
        }
        if let Some(slot) = self.queues.get_mut(usize::from(index)) {
            let mut regs = slot.regs;
            update(&mut regs);
            // The device's maximum and the size bound are not the driver's to change.
            regs.max_size = slot.regs.max_size;
            if regs.size > regs.max_size || regs.size == 0 {
                regs.size = slot.regs.size;
            }
            slot.regs = regs;
            if after_reset && regs.enabled {
                self.start_reset_queue(index);
            }
        }
    }

    /// Whether the seed 001 queue state is readable: VIRTIO_F_QUEUE_STATE negotiated and the
    /// device not running (after reset, during setup, or while stopped or suspended).
    pub(super) fn queue_state_readable(&self) -> bool {
        (self.negotiated(Feature::QueueState) || self.status.is_empty())
            && (!self.has(DeviceStatus::DRIVER_OK) || self.stop == Quiet::Presented)
    }

    /// Seed 001 available state of queue `index`; 0 when not readable.
    pub fn queue_avail_state(&self, index: u16) -> u16 {
        self.read_state(index, |s| s.avail_state)
    }

    /// Seed 001 used state of queue `index` (packed); 0 when not readable.
    pub fn queue_used_state(&self, index: u16) -> u16 {
        self.read_state(index, |s| s.used_state)
    }

    pub(super) fn read_state(&self, index: u16, field: impl Fn(&QueueState) -> u16) -> u16 {
        if !self.queue_state_readable() {
            return 0;
        }
        self.queues
            .get(usize::from(index))
            .map_or(0, |slot| field(&self.current_state(slot)))
    }

    /// A queue's state: the live queue's while it exists (it does not run when this is read),
    /// else the recorded or written one, else the initial one.
    pub(super) fn current_state(&self, slot: &QueueSlot) -> QueueState {
        match slot.live.as_ref().map(|q| q.state()) {
            Some(Ok(state)) => state,
            _ => slot.start_state(self.ring_kind()),
        }
    }

    /// Seed 001: the driver sets queue state after FEATURES_OK and before DRIVER_OK (also while
    /// suspended, when DRIVER_OK is clear). Ignored otherwise. Validated when the queue starts.
    pub fn set_queue_avail_state(&mut self, index: u16, value: u16) {
        self.write_state(index, |s| s.avail_state = value);
    }

    /// Seed 001 used state (packed); see [`Self::set_queue_avail_state`].
    pub fn set_queue_used_state(&mut self, index: u16, value: u16) {
        self.write_state(index, |s| s.used_state = value);
    }

    pub(super) fn write_state(&mut self, index: u16, update: impl FnOnce(&mut QueueState)) {
        let window = self.has(DeviceStatus::FEATURES_OK)
            && !self.has(DeviceStatus::DRIVER_OK)
            && !self.has(DeviceStatus::FAILED)
            && !self.admin_silent();
        if !window || !self.negotiated(Feature::QueueState) {
            return;
        }
        let kind = self.ring_kind();
        if let Some(slot) = self.queues.get_mut(usize::from(index)) {
            let mut state = slot.start_state(kind);
            update(&mut state);
            slot.state = Some(state);
            slot.restored = true;
        }
    }

    /// Installs a complete queue state (with in-flight chains and owed notification), as a
    /// device context restore does; same window and validation as the register writes.
    pub fn set_queue_state(&mut self, index: u16, state: QueueState) -> bool {
        let window = self.has(DeviceStatus::FEATURES_OK)
            && !self.has(DeviceStatus::DRIVER_OK)
            && !self.admin_silent();
        match self.queues.get_mut(usize::from(index)) {
            Some(slot) if window => {
                slot.state = Some(state);
                slot.restored = true;
                true
            }
            _ => false,
        }
    }

    /// The complete state of queue `index` while it is readable (see
    /// [`Self::queue_avail_state`]), including in-flight chains.
    pub fn queue_state(&self, index: u16) -> Option<QueueState> {
        if !(self.queue_state_readable() || self.suspend == Quiet::Presented) {
            return None;
        }
        let kind = self.ring_kind();
        self.queues
            .get(usize::from(index))
            .map(|slot| slot.start_state(kind))
    }
}
