//! The device status a driver writes and reads: the initialisation sequence, reset (seed 001:
//! queue state survives it), DRIVER_OK starting the queues, and DEVICE_NEEDS_RESET (seed 002).

use virtio_lm_queue::{DeviceQueue, QueueState, Virtqueue};
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::error::DeviceError;
use crate::queues::QueueRegisters;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// The device status as the driver reads it. A stop or suspend that was waiting for
    /// requests in process is completed here if they have finished.
    pub fn status(&mut self) -> DeviceStatus {
        self.progress_quiesce();
        self.status
    }

    /// The driver writes the device status.
    ///
    /// 0 resets. Otherwise the write may set bits (each only in its turn) and may clear
    /// DEVICE_STOPPED (seed 000: the one bit a driver may clear); a write that clears any other
    /// bit is ignored whole. DEVICE_NEEDS_RESET is the device's and cannot be written. Ignored
    /// whole while the owner holds the device in admin Stop or Freeze (seed 004).
    pub fn write_status(&mut self, value: DeviceStatus) {
        if self.admin_silent() {
            // Seed 004: the owner holds the device in Stop or Freeze; see `set_admin_mode`.
            return;
        }
        if value.is_empty() {
            self.reset();
            return;
        }
        if self.has(DeviceStatus::FAILED) {
            // Seed 002: after FAILED the driver must reset before re-initialising.
            return;
        }
        let driver_ok_on_arrival = self.has(DeviceStatus::DRIVER_OK);
        // Bits the device owns or clears itself: not the driver's to set or clear.
        let device_owned =
            DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK;
        let value_driver = value & !DeviceStatus::DEVICE_NEEDS_RESET;
        let cleared = self.status & !value_driver & !device_owned & !DeviceStatus::DEVICE_STOPPED;
        let suspend_cleared =
            self.has(DeviceStatus::SUSPEND) && !value.intersects(DeviceStatus::SUSPEND);
        let driver_ok_cleared =
            self.has(DeviceStatus::DRIVER_OK) && !value.intersects(DeviceStatus::DRIVER_OK);
        if !cleared.is_empty() || suspend_cleared || driver_ok_cleared {
            return;
        }
        let set = value_driver & !self.status;
        if set.contains(DeviceStatus::ACKNOWLEDGE) && self.status.is_empty() {
            self.status = DeviceStatus::ACKNOWLEDGE;
            // Seed 001: queue state returns to its initial value when ACKNOWLEDGE is set.
            for slot in &mut self.queues {
                slot.state = None;
                slot.restored = false;
            }
        }
        if set.contains(DeviceStatus::DRIVER) && self.has(DeviceStatus::ACKNOWLEDGE) {
            self.status |= DeviceStatus::DRIVER;
        }
        if set.contains(DeviceStatus::FEATURES_OK)
            && self.has(DeviceStatus::DRIVER)
            && self.features_acceptable()
        {
            self.status |= DeviceStatus::FEATURES_OK;
        }
        if set.contains(DeviceStatus::FAILED) {
            self.status |= DeviceStatus::FAILED;
        }
        if value.contains(DeviceStatus::DRIVER_OK) {
            if self.suspend == Quiet::Presented && self.has(DeviceStatus::DEVICE_NEEDS_RESET) {
                // spec-decisions §2: the owed notification goes out now; the device does not
                // resume and stays suspended with DEVICE_NEEDS_RESET until reset.
                if std::mem::take(&mut self.config_change_owed) {
                    self.interrupts.signal_config_change();
                }
            } else if self.suspend == Quiet::Presented {
                self.resume_from_suspend();
            } else if !self.has(DeviceStatus::DRIVER_OK)
                && self.has(DeviceStatus::FEATURES_OK)
                && !self.has(DeviceStatus::FAILED)
            {
                self.status |= DeviceStatus::DRIVER_OK;
                self.activate();
            }
        }
        if set.contains(DeviceStatus::SUSPEND) {
            self.request_suspend();
        }
        // Seed 000: "the device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set", both
        // ways, judged when the write arrives: a write that sets DRIVER_OK (or resumes from
        // SUSPEND) and changes DEVICE_STOPPED has its DEVICE_STOPPED ignored
        // (spec-decisions §2).
        if driver_ok_on_arrival {
            let stopped_bit = DeviceStatus::DEVICE_STOPPED;
            if set.contains(stopped_bit) {
                self.request_stop();
            } else if !value.contains(stopped_bit) && self.stop != Quiet::No {
                self.resume_from_stop();
            }
        }
    }
    /// Whether the device may take buffers and notify now.
    pub(super) fn live(&self) -> bool {
        self.has(DeviceStatus::DRIVER_OK)
            && !self.has(DeviceStatus::DEVICE_NEEDS_RESET)
            && !self.has(DeviceStatus::FAILED)
            && self.stop == Quiet::No
            && self.suspend == Quiet::No
            && !self.admin_quiet()
    }

    /// Seed 002: an error the device cannot recover from. Nothing is processed until reset.
    pub fn needs_reset(&mut self, error: DeviceError) {
        if self.has(DeviceStatus::DEVICE_NEEDS_RESET) {
            return;
        }
        self.last_error = Some(error);
        self.status |= DeviceStatus::DEVICE_NEEDS_RESET;
        if self.has(DeviceStatus::DRIVER_OK) || self.suspend != Quiet::No {
            // Seed 002 ties the notification to DRIVER_OK being set, and a suspended device
            // (DRIVER_OK clear) sends none (spec-decisions §2); seed 004: none unless Active.
            self.config_change_owed = true;
            self.deliver_owed_config_change();
        }
    }

    /// Sends the owed configuration change notification if the device may notify now: DRIVER_OK
    /// set and admin-Active.
    pub(super) fn deliver_owed_config_change(&mut self) {
        if self.config_change_owed && self.has(DeviceStatus::DRIVER_OK) && !self.admin_silent() {
            self.config_change_owed = false;
            self.interrupts.signal_config_change();
        }
    }

    pub(super) fn reset(&mut self) {
        // The ring format is forgotten with the features: fix each state's encoding first.
        let kind = self.ring_kind();
        for slot in &mut self.queues {
            // Seed 001: the queue state survives the reset so the driver can read it afterwards,
            // in the encoding of the ring format the queue was enabled with, also for a queue
            // that never ran.
            if let Some(live) = slot.live.take() {
                if let Ok(state) = live.state() {
                    slot.state = Some(state);
                }
            }
            if slot.regs.enabled && slot.state.is_none() {
                slot.state = Some(QueueState::initial(kind));
            }
            let max = slot.regs.max_size;
            slot.regs = QueueRegisters::new(max);
            slot.kicked = false;
        }
        self.device.reset();
        self.status = DeviceStatus::RESET;
        self.driver_features = 0;
        self.stop = Quiet::No;
        self.suspend = Quiet::No;
        self.deferred_config.clear();
        self.config_change_owed = false;
        self.last_error = None;
        self.admin_after_reset();
    }

    pub(super) fn activate(&mut self) {
        let kind = self.ring_kind();
        let features = self.ring_features();
        let mut started = Vec::with_capacity(self.queues.len());
        for (index, slot) in self.queues.iter().enumerate() {
            if !slot.regs.enabled {
                started.push(None);
                continue;
            }
            let config = slot.regs.config(kind, features);
            let mut state = slot.start_state(kind);
            state.notification_owed |= slot.restored;
            match Virtqueue::from_state(config, &state, &*self.mem) {
                Ok(queue) => started.push(Some(queue)),
                Err(source) => {
                    // spec-notes §3: a queue state (or layout) that fails validation at
                    // DRIVER_OK sets DEVICE_NEEDS_RESET.
                    self.needs_reset(DeviceError::QueueStart {
                        index: index as u16,
                        source,
                    });
                    return;
                }
            }
        }
        self.admin.queues_unstarted = false;
        for (slot, queue) in self.queues.iter_mut().zip(started) {
            slot.handover = queue.is_some();
            slot.live = queue;
            slot.state = None;
            slot.kicked = slot.restored;
            slot.restored = false;
        }
        if let Err(e) = self.device.activate(self.driver_features) {
            self.needs_reset(e);
            return;
        }
        // A restored queue may hold buffers made available without a kick, and may owe a
        // notification (pitfall 4): look at it now.
        self.process_pending();
    }
}
