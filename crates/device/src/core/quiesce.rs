//! In-band quiescence: DEVICE_STOPPED (seed 000) and SUSPEND (seed 003, merged semantics), and
//! the resume that follows either.

use virtio_lm_queue::DeviceQueue;
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::device::Quiesce;
use crate::error::DeviceError;
use virtio_lm_spec::Feature;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Whether DEVICE_STOPPED or SUSPEND is asked for or holds. The transport freezes its own
    /// registers (MSI-X vectors) then, as the core freezes queue registers and configuration
    /// space (spec-decisions §2).
    pub fn quiesced_in_band(&self) -> bool {
        self.stop != Quiet::No || self.suspend != Quiet::No
    }

    /// Requests the in-band quiescence of `feature` whose progress `state` selects; ignored
    /// unless DRIVER_OK is set, the feature negotiated and no such request is under way.
    fn request_quiet(&mut self, feature: Feature, state: fn(&mut Self) -> &mut Quiet) {
        if !self.has(DeviceStatus::DRIVER_OK)
            || !self.negotiated(feature)
            || *state(self) != Quiet::No
        {
            return;
        }
        *state(self) = Quiet::Requested;
        self.progress_quiesce();
    }

    pub(super) fn request_stop(&mut self) {
        // Seed 000: the device ignores DEVICE_STOPPED unless DRIVER_OK is set and the feature
        // was negotiated.
        self.request_quiet(Feature::DeviceStop, |core| &mut core.stop);
    }

    pub(super) fn resume_from_stop(&mut self) {
        // Seed 000: clearing DEVICE_STOPPED is ignored too while DRIVER_OK is clear (suspended).
        if self.stop != Quiet::Presented || !self.has(DeviceStatus::DRIVER_OK) {
            return;
        }
        self.stop = Quiet::No;
        self.status &= !DeviceStatus::DEVICE_STOPPED;
        // A DEVICE_NEEDS_RESET raised while stopped was held back; it is due now.
        self.deliver_owed_config_change();
        self.after_resume();
    }

    pub(super) fn request_suspend(&mut self) {
        self.request_quiet(Feature::Suspend, |core| &mut core.suspend);
    }

    pub(super) fn resume_from_suspend(&mut self) {
        // Queue state may have been rewritten while suspended: restart every queue from its
        // recorded state, exactly as at DRIVER_OK.
        self.suspend = Quiet::No;
        self.status &= !DeviceStatus::SUSPEND;
        self.status |= DeviceStatus::DRIVER_OK;
        self.activate();
        if self.has(DeviceStatus::DEVICE_NEEDS_RESET) {
            return;
        }
        self.after_resume();
    }

    /// Applies configuration changes held back while quiet, notifies them, and processes
    /// kicks latched meanwhile.
    pub(super) fn after_resume(&mut self) {
        if !self.live() {
            return;
        }
        self.apply_deferred_config();
        for slot in &mut self.queues {
            slot.kicked |= slot.live.is_some();
        }
        self.process_pending();
    }

    /// Finishes a requested stop or suspend once no request is in process.
    pub(super) fn progress_quiesce(&mut self) {
        self.admin_complete_if_dead();
        if self.stop != Quiet::Requested
            && self.suspend != Quiet::Requested
            && self.admin.target.is_none()
        {
            return;
        }
        self.poll_device();
        self.admin_complete_if_dead();
        match self.device.quiesce(self.quiesce_mode) {
            Quiesce::Pending => return,
            Quiesce::Done => {}
            Quiesce::Failed => {
                // Seed 003 (as merged): a device that cannot suspend sets NEEDS_RESET instead;
                // the same holds for a stop.
                self.stop = Quiet::No;
                self.suspend = Quiet::No;
                self.needs_reset(DeviceError::Quiesce);
                self.admin_complete_if_dead();
                return;
            }
        }
        self.record_queue_states();
        // After the last used write, before the stop is presented (spec-decisions §32).
        self.record_ring_positions();
        // The device let go of everything it held: what is still in flight is handed back to
        // it once when processing resumes.
        for slot in &mut self.queues {
            slot.handover = slot.live.is_some();
        }
        self.admin_complete();
        if self.stop == Quiet::Requested {
            self.stop = Quiet::Presented;
            self.status |= DeviceStatus::DEVICE_STOPPED;
        }
        if self.suspend == Quiet::Requested {
            self.suspend = Quiet::Presented;
            self.status &= !DeviceStatus::DRIVER_OK;
            self.status |= DeviceStatus::SUSPEND;
            // The recorded states are now the queues: the driver may rewrite them, and resume
            // restarts every queue from them.
            for slot in &mut self.queues {
                slot.live = None;
            }
        }
    }

    pub(super) fn record_queue_states(&mut self) {
        for slot in &mut self.queues {
            // The core publishes after every processing step, so state() cannot find entries
            // waiting for publication here.
            if let Some(Ok(state)) = slot.live.as_ref().map(|live| live.state()) {
                slot.state = Some(state);
            }
        }
    }
}
