//! Notifications in and processing: kicks (latched while quiet), background completions, and
//! running a queue until the driver has nothing more.

use virtio_lm_queue::{DeviceQueue, Virtqueue};
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::device::{Handover, QueueAccess, VirtioDevice};
use crate::error::DeviceError;
use crate::queues::QueueSlot;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// The driver notified queue `index`. Processed now if the device is live; latched (no
    /// guest memory access) while stopped or suspended; dropped after NEEDS_RESET or FAILED.
    pub fn kick(&mut self, index: u16) {
        let quiet = self.stop != Quiet::No || self.suspend != Quiet::No || self.admin_quiet();
        let dead = self.has(DeviceStatus::DEVICE_NEEDS_RESET) || self.has(DeviceStatus::FAILED);
        // Before DRIVER_OK there is nothing to do (the driver must not notify yet); after an
        // error the device touches nothing until reset.
        if dead || !(self.has(DeviceStatus::DRIVER_OK) || quiet) {
            return;
        }
        let Some(slot) = self.queues.get_mut(usize::from(index)) else {
            return;
        };
        if slot.live.is_none() && !quiet {
            return;
        }
        slot.kicked = true;
        if self.live() {
            self.process_pending();
        }
    }

    /// Background work finished (a backend's completion eventfd fired): lets the device return
    /// it, finishes a stop, suspend or admin mode change that was waiting for it, and processes
    /// whatever is latched. What a worker calls on a device's wake eventfd.
    pub fn service(&mut self) {
        self.progress_quiesce();
        self.process_pending();
    }

    /// Processes every queue with a latched kick, and completes background work.
    pub fn process_pending(&mut self) {
        if !self.live() {
            return;
        }
        if self.admin.queues_unstarted {
            self.start_restored_queues();
            if !self.live() {
                return;
            }
        }
        self.hand_over_inflight();
        self.poll_device();
        for index in 0..self.queues.len() {
            if !self.live() {
                return;
            }
            let Some(queue) = take_flagged(&mut self.queues[index], |slot| &mut slot.kicked) else {
                continue;
            };
            let result = run_queue(&mut *self.device, index as u16, queue, &*self.mem);
            match result {
                Ok(true) => self.interrupts.signal_used_queue(index as u16),
                Ok(false) => {}
                Err(e) => self.needs_reset(e),
            }
        }
    }

    /// Hands each started or resumed queue's in-flight chains to the device, once per start
    /// (the device keeps no record of what it was handed: seed 001's "exactly once" is the
    /// core's), before anything else is processed; publishes and notifies what it completed.
    fn hand_over_inflight(&mut self) {
        for index in 0..self.queues.len() {
            if !self.live() {
                return;
            }
            let Some(queue) = take_flagged(&mut self.queues[index], |slot| &mut slot.handover)
            else {
                continue;
            };
            let chains = queue.inflight();
            if chains.is_empty() {
                continue;
            }
            let mem = &*self.mem;
            let mut access = QueueAccess {
                queue: &mut *queue,
                mem,
                index: index as u16,
                used: false,
                took: false,
                observer: None,
            };
            let result = self
                .device
                .adopt_inflight(Handover::new(chains, &mut access))
                .and_then(|()| finish(queue, mem));
            match result {
                Ok(true) => self.interrupts.signal_used_queue(index as u16),
                Ok(false) => {}
                Err(e) => self.needs_reset(e),
            }
        }
    }

    /// Lets the device complete background work; publishes and notifies what it completed.
    pub(super) fn poll_device(&mut self) {
        if self.has(DeviceStatus::DEVICE_NEEDS_RESET)
            || (!self.has(DeviceStatus::DRIVER_OK) && self.suspend == Quiet::No)
        {
            return;
        }
        let mem = &*self.mem;
        let mut accesses: Vec<QueueAccess<'_, M>> = Vec::new();
        let mut indices = Vec::new();
        for (index, slot) in self.queues.iter_mut().enumerate() {
            if let Some(queue) = slot.live.as_mut() {
                accesses.push(QueueAccess {
                    queue,
                    mem,
                    index: index as u16,
                    used: false,
                    took: false,
                    observer: None,
                });
                indices.push(index as u16);
            }
        }
        let result = self.device.poll(&mut accesses);
        let mut signals = Vec::new();
        let mut error = result.err();
        for (access, index) in accesses.into_iter().zip(indices) {
            if !access.used {
                continue;
            }
            match finish(access.queue, mem) {
                Ok(true) => signals.push(index),
                Ok(false) => {}
                Err(e) => error = error.or(Some(e)),
            }
        }
        for index in signals {
            self.interrupts.signal_used_queue(index);
        }
        if let Some(e) = error {
            self.needs_reset(e);
        }
    }
}

/// Processes a kicked queue until the driver has nothing more: process, publish, decide the
/// notification, re-arm driver notifications (EVENT_IDX: avail_event or the DESC event at the
/// next buffer) and go round again if buffers arrived before the re-arm was visible and the
/// device is taking buffers; without the re-arm an EVENT_IDX driver never kicks again. Returns
/// whether to notify. A driver that keeps adding keeps only this device's thread busy.
pub(super) fn run_queue<M: GuestMemory + ?Sized>(
    device: &mut dyn VirtioDevice<M>,
    index: u16,
    queue: &mut Virtqueue,
    mem: &M,
) -> Result<bool, DeviceError> {
    let mut notify = false;
    loop {
        let mut access = QueueAccess {
            queue: &mut *queue,
            mem,
            index,
            used: false,
            took: false,
            observer: None,
        };
        device.process_queue(index, &mut access)?;
        let took = access.took;
        // Publish and decide even if nothing was used: a restored queue may owe a notification.
        notify |= finish(queue, mem)?;
        // Round again only for buffers that arrived while the device was taking: a device that
        // leaves buffers in the ring on purpose (a receive queue with no frame to deliver) must
        // not spin here.
        if !queue.enable_notification(mem)? || !took {
            return Ok(notify);
        }
    }
}

/// Publishes what a processing step added and decides the notification.
pub(super) fn finish<M: GuestMemory + ?Sized>(
    queue: &mut Virtqueue,
    mem: &M,
) -> Result<bool, DeviceError> {
    queue.publish_used(mem)?;
    Ok(queue.needs_notification(mem)?)
}

/// Clears the flag `flag` selects in `slot`; returns the live queue if the flag was set and
/// the queue is live.
fn take_flagged(
    slot: &mut QueueSlot,
    flag: fn(&mut QueueSlot) -> &mut bool,
) -> Option<&mut Virtqueue> {
    if !std::mem::take(flag(slot)) {
        return None;
    }
    slot.live.as_mut()
}
