//! The ring position of a stopped device under the virtio 1.4 profile (spec-decisions §32).
//!
//! virtio 1.4 has no queue-state register or part: a stopped device has used every buffer it
//! observed, and its position is recovered from guest memory. At the stop (DEV_MODE_SET
//! STOPPED, the core's admin Freeze or Stop, and SUSPEND) the core writes each packed queue's
//! position into its device event suppression structure (EVENT_IDX negotiated); the hypervisor
//! of a destination sets every queue's position from memory before DRIVER_OK (the analogue of
//! vhost's SET_VRING_BASE), with [`DeviceCore::set_ring_positions_from_memory`] or, when it read
//! the positions itself, [`DeviceCore::set_queue_position`].

use virtio_lm_queue::{
    read_position, withdraw_packed_position, write_packed_position, QueuePosition, RingKind,
    RingPosition,
};
use virtio_lm_spec::{DeviceStatus, Profile};
use vm_memory::GuestMemory;

use super::DeviceCore;
use crate::error::DeviceError;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Writes each packed queue's position at a stop under the v1.4 profile: called once the
    /// device used everything it took (the queue states are recorded) and before the stop is
    /// presented. A queue still holding chains has no position to give: it is withdrawn (flags
    /// DISABLE), so a destination refuses it rather than lose those chains. On a resume in
    /// place the device's own re-arm of notifications, run for every queue, rewrites the
    /// structure as it keeps it normally.
    pub(super) fn record_ring_positions(&mut self) {
        if self.profile != Profile::V1_4 || self.ring_kind() != RingKind::Packed {
            return;
        }
        let features = self.ring_features();
        if !features.event_idx {
            return;
        }
        for slot in &self.queues {
            let (Some(_), Some(state)) = (slot.live.as_ref(), slot.state.as_ref()) else {
                continue;
            };
            let config = slot.regs.config(RingKind::Packed, features);
            // The ring was checked when the queue started: neither write can fail, and a stop
            // must not fail on what would be only a lost position. (With nothing in flight the
            // available and used positions are equal: the state's own invariant.)
            let _ = if state.inflight.is_empty() {
                let position = RingPosition::from_state(state.avail_state);
                write_packed_position(&**self.mem(), &config, position)
            } else {
                withdraw_packed_position(&**self.mem(), &config)
            };
        }
    }

    /// Whether ring positions may be set now: v1.4 profile, FEATURES_OK set, DRIVER_OK clear
    /// (the driver configured the queues, or the device is suspended), not failed, not admin
    /// Stop or Freeze.
    fn position_window(&self) -> Result<(), DeviceError> {
        let why = if self.profile != Profile::V1_4 {
            "only the v1.4 profile recovers ring positions (the seeds profile has queue state)"
        } else if !self.has(DeviceStatus::FEATURES_OK) || self.has(DeviceStatus::DRIVER_OK) {
            "positions are set after FEATURES_OK and before DRIVER_OK"
        } else if self.has(DeviceStatus::FAILED) || self.admin_silent() {
            "the device failed or is in admin Stop or Freeze"
        } else {
            return Ok(());
        };
        Err(DeviceError::PositionWindow(why))
    }

    /// Sets every enabled queue's position from guest memory (split: `used.idx`; packed: the
    /// position the stopped device recorded), checked as spec-decisions §32 says. The
    /// hypervisor calls it after the driver configured the queues and before DRIVER_OK (or
    /// while suspended), v1.4 profile only. All or nothing: on an error no queue changes. The
    /// queues start there at DRIVER_OK, re-checked and notified as after any restore.
    pub fn set_ring_positions_from_memory(&mut self) -> Result<(), DeviceError> {
        self.position_window()?;
        let (kind, features) = (self.ring_kind(), self.ring_features());
        let mut positions = Vec::new();
        for (index, slot) in (0u16..).zip(&self.queues) {
            if !slot.regs.enabled {
                continue;
            }
            let config = slot.regs.config(kind, features);
            let position = read_position(&**self.mem(), &config)
                .map_err(|source| DeviceError::RingPosition { index, source })?;
            positions.push((index, position));
        }
        for (index, position) in positions {
            self.set_queue_position(index, position)?;
        }
        Ok(())
    }

    /// Sets queue `index` to start at `position` (nothing in flight), in the window of
    /// [`Self::set_ring_positions_from_memory`]. The position must be of the negotiated ring
    /// format; it is checked against the ring when the queue starts.
    pub fn set_queue_position(
        &mut self,
        index: u16,
        position: QueuePosition,
    ) -> Result<(), DeviceError> {
        self.position_window()?;
        let format_ok = matches!(
            (self.ring_kind(), position),
            (RingKind::Split, QueuePosition::Split(_))
                | (RingKind::Packed, QueuePosition::Packed(_))
        );
        if !format_ok {
            return Err(DeviceError::PositionWindow(
                "the position is not of the negotiated ring format",
            ));
        }
        let slot = self
            .queues
            .get_mut(usize::from(index))
            .ok_or(DeviceError::PositionWindow("no such queue"))?;
        slot.state = Some(position.queue_state());
        slot.restored = true;
        Ok(())
    }
}
