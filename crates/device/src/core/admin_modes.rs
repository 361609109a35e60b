//! Admin device modes (seed 004): the owner's out-of-band Active, Stop and Freeze.
//!
//! The owner's out-of-band control of this device (seed 004 DEV_MODE_SET/GET). It is
//! independent of DEVICE_STOPPED and SUSPEND (spec-notes §2: the device is quiescent while any
//! of them holds; each is undone only by its own mechanism). Everything the admin modes
//! add to the core is in this file; the rest of the core only calls the `admin_*` helpers and
//! `start_restored_queues` defined here.
//!
//! - Active: normal operation.
//! - Stop: every request in process is finished first (drained, or left in the queue's in-flight
//!   list under `QuiesceMode::RecordInflight`), and only then is the mode Stop; until then the
//!   change is pending (`AdminModeChange::Pending`, `poll_admin_mode`). In Stop the device takes
//!   no buffer, touches no guest memory, raises no interrupt and sends no configuration change
//!   notification; driver notifications are accepted and latched.
//! - Freeze: as Stop, and the context does not change: every driver write to the device status,
//!   features, queue registers and configuration space is ignored. Stop ignores them too (our
//!   decision: seed 004 says the driver SHOULD NOT access the configuration space in Stop or
//!   Freeze, and applying such a write could need guest memory or an interrupt, e.g. DRIVER_OK
//!   starting queues, which Stop forbids). Device-side configuration changes wait for Active.
//! - Every transition between the three modes is allowed (the seed names only two reasons to
//!   fail DEV_MODE_SET: an unknown mode and a partially written context, the latter checked by
//!   the owner); Active → Freeze does the Stop work first.
//! - A context restored while not Active does not read guest memory (seed 004: no virtqueue
//!   memory access unless Active; the destination's memory may still be arriving): its running
//!   queues are checked as far as possible without the ring and started, against the ring, at
//!   the first moment the device is live again. A queue that cannot start then sets
//!   DEVICE_NEEDS_RESET, as at DRIVER_OK (spec-notes §3).
//! - A device reset or FLR keeps the mode (seed 004 v2 changelog: FLR does not make the device
//!   Active) and ends a pending change with `AdminModeError::Reset`. DEVICE_NEEDS_RESET ends a
//!   pending change successfully: the device processes nothing any more, so it is as quiet as
//!   Stop requires, and a broken device can still be migrated.

use virtio_lm_queue::{DeviceQueue, Virtqueue};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::DeviceCore;
use crate::error::DeviceError;

/// What [`DeviceCore::set_admin_mode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminModeChange {
    /// The device is in the requested mode.
    Done,
    /// Requests in process must finish first; [`DeviceCore::poll_admin_mode`] reports the end.
    Pending,
}

/// Where an admin mode change stands ([`DeviceCore::poll_admin_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminModeStatus {
    /// No change is pending; the device is in this mode.
    Idle(DevMode),
    /// A change is waiting for requests in process.
    Pending,
    /// The pending change completed: the device is now in this mode.
    Done(DevMode),
    /// The pending change ended without effect; the mode is unchanged.
    Failed(AdminModeError),
}

/// Why an admin mode change did not take effect. The mode is unchanged (seed 004: "if the
/// command fails, the device MUST retain the current device mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminModeError {
    /// Another mode change is still waiting for requests in process.
    #[error("another admin mode change is still in progress")]
    Busy,
    /// The device was reset (driver reset or FLR) while the change waited.
    #[error("the device was reset while the admin mode change waited")]
    Reset,
}

/// The admin mode and its bookkeeping.
#[derive(Debug, Default)]
pub(super) struct AdminState {
    /// The current mode (what DEV_MODE_GET reports).
    pub(super) mode: DevMode,
    /// A change out of Active waiting for requests in process.
    pub(super) target: Option<DevMode>,
    /// How a pending change ended, until `poll_admin_mode` reports it.
    pub(super) outcome: Option<Result<DevMode, AdminModeError>>,
    /// Device resets so far (driver reset or FLR).
    pub(super) resets: u64,
    /// A context restored while not Active left running queues to start against the ring.
    pub(super) queues_unstarted: bool,
}

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// The seed 004 admin mode.
    pub fn admin_mode(&self) -> DevMode {
        self.admin.mode
    }

    /// Whether an admin mode change is waiting for requests in process.
    pub fn admin_mode_pending(&self) -> bool {
        self.admin.target.is_some()
    }

    /// The owner sets the admin mode (seed 004 DEV_MODE_SET). Setting the current mode succeeds
    /// and changes nothing. Leaving Active finishes (or records in flight) every request in
    /// process first: if some cannot finish yet the change is [`AdminModeChange::Pending`] and
    /// completes later, reported by [`Self::poll_admin_mode`]. Returning to Active resumes the
    /// device: latched notifications are processed, every queue is re-checked and held
    /// configuration changes are applied and notified (unless DEVICE_STOPPED or SUSPEND still
    /// holds the device, which only their own mechanism undoes).
    pub fn set_admin_mode(&mut self, mode: DevMode) -> Result<AdminModeChange, AdminModeError> {
        if self.admin.target.is_some() {
            return Err(AdminModeError::Busy);
        }
        if mode == self.admin.mode {
            return Ok(AdminModeChange::Done);
        }
        match (self.admin.mode, mode) {
            (DevMode::Active, _) => {
                self.admin.target = Some(mode);
                self.progress_quiesce();
                match self.admin.outcome.take() {
                    Some(Ok(_)) => Ok(AdminModeChange::Done),
                    Some(Err(e)) => Err(e),
                    None => Ok(AdminModeChange::Pending),
                }
            }
            (_, DevMode::Active) => {
                self.admin.mode = DevMode::Active;
                self.admin_resume();
                Ok(AdminModeChange::Done)
            }
            // Stop <-> Freeze: the device is already quiet; nothing else changes.
            _ => {
                self.admin.mode = mode;
                Ok(AdminModeChange::Done)
            }
        }
    }

    /// Lets a pending admin mode change progress (the device completes background work) and
    /// reports where it stands. A completed or failed change is reported once, then `Idle`.
    pub fn poll_admin_mode(&mut self) -> AdminModeStatus {
        self.progress_quiesce();
        match self.admin.outcome.take() {
            Some(Ok(mode)) => AdminModeStatus::Done(mode),
            Some(Err(e)) => AdminModeStatus::Failed(e),
            None if self.admin.target.is_some() => AdminModeStatus::Pending,
            None => AdminModeStatus::Idle(self.admin.mode),
        }
    }

    /// The owner abandons a pending change (the owner was reset, or its VFs were disabled): the
    /// device stays Active and resumes as after a stop (latched kicks, queues re-checked).
    /// Returns whether a change was pending.
    pub fn cancel_admin_mode(&mut self) -> bool {
        if self.admin.target.take().is_none() {
            return false;
        }
        self.after_resume();
        true
    }

    /// Device resets so far (driver resets and FLRs): an owner keeps context streams per reset.
    pub fn reset_count(&self) -> u64 {
        self.admin.resets
    }

    /// PCI Function Level Reset: resets the device as a driver reset does, in every admin mode
    /// (seed 004: "the device MUST function same for the PCI architected interfaces regardless
    /// of the device mode"). The admin mode is kept; a pending change ends with
    /// [`AdminModeError::Reset`].
    pub fn function_level_reset(&mut self) {
        self.reset();
    }

    /// Not live because of the admin mode: not Active, or a change out of Active is pending.
    /// Buffers are not taken, kicks are latched and configuration changes wait.
    pub(super) fn admin_quiet(&self) -> bool {
        self.admin.mode != DevMode::Active || self.admin.target.is_some()
    }

    /// In Stop or Freeze: no guest memory access, no interrupt, driver writes ignored. (While a
    /// change is pending the device is still Active and finishes its requests normally.)
    pub(super) fn admin_silent(&self) -> bool {
        self.admin.mode != DevMode::Active
    }

    /// A device that set DEVICE_NEEDS_RESET processes nothing any more: a pending change out of
    /// Active completes, as nothing in process will run again.
    pub(super) fn admin_complete_if_dead(&mut self) {
        if self.admin.target.is_some() && self.has(DeviceStatus::DEVICE_NEEDS_RESET) {
            self.admin_complete();
        }
    }

    /// Requests in process are finished (the caller recorded the queue states): a pending
    /// change takes effect.
    pub(super) fn admin_complete(&mut self) {
        if let Some(target) = self.admin.target.take() {
            self.admin.mode = target;
            self.admin.outcome = Some(Ok(target));
        }
    }

    pub(super) fn admin_after_reset(&mut self) {
        self.admin.resets = self.admin.resets.wrapping_add(1);
        self.admin.queues_unstarted = false;
        if self.admin.target.take().is_some() {
            self.admin.outcome = Some(Err(AdminModeError::Reset));
        }
    }

    /// Back to Active: the owed DEVICE_NEEDS_RESET notification (unless the device is suspended:
    /// then it waits for DRIVER_OK), then the same resume as after a stop (held configuration
    /// changes, latched kicks, every queue re-checked).
    pub(super) fn admin_resume(&mut self) {
        self.deliver_owed_config_change();
        self.after_resume();
    }

    /// Starts the running queues a context restored while not Active left unstarted, against
    /// the ring in guest memory. Each is re-checked at once (buffers may have been made
    /// available while the device moved; pitfall 4).
    pub(super) fn start_restored_queues(&mut self) {
        self.admin.queues_unstarted = false;
        let kind = self.ring_kind();
        let features = self.ring_features();
        for index in 0..self.queues.len() {
            let slot = &self.queues[index];
            if !slot.regs.enabled || slot.live.is_some() {
                continue;
            }
            let config = slot.regs.config(kind, features);
            let state = slot.start_state(kind);
            match Virtqueue::from_state(config, &state, &*self.mem) {
                Ok(queue) => {
                    let slot = &mut self.queues[index];
                    slot.live = Some(queue);
                    slot.handover = true;
                    slot.state = None;
                    slot.restored = false;
                    slot.kicked = true;
                }
                Err(source) => {
                    self.needs_reset(DeviceError::QueueStart {
                        index: index as u16,
                        source,
                    });
                    return;
                }
            }
        }
    }
}
