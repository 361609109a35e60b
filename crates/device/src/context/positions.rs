//! Ring positions of a context's queues recovered from guest memory, for the v1.4 profile,
//! which carries no queue state (spec-decisions §32).

use virtio_lm_queue::{read_position, QueuePosition, QueueState};
use virtio_lm_spec::{DeviceStatus, Profile};
use vm_memory::GuestMemory;

use super::checks::Negotiation;
use super::DeviceContext;
use crate::error::DeviceError;

impl DeviceContext {
    /// The position of each enabled queue of a running or suspended device (DRIVER_OK or
    /// SUSPEND in the status), read and checked from `mem` as spec-decisions §32 says, with
    /// the ring format and features the context negotiated under `profile`. Empty for a device
    /// whose queues do not run. The first queue that has no sound position fails the whole.
    pub fn ring_positions<M: GuestMemory + ?Sized>(
        &self,
        profile: Profile,
        mem: &M,
    ) -> Result<Vec<(u16, QueuePosition)>, DeviceError> {
        let negotiation = Negotiation {
            profile,
            status: DeviceStatus::from_bits_retain(self.device_status),
            driver: self.driver_features.first().copied().unwrap_or(0),
        };
        if !negotiation.has(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND) {
            return Ok(Vec::new());
        }
        let (kind, features) = (negotiation.ring_kind(), negotiation.ring_features());
        let mut positions = Vec::new();
        for (index, q) in (0u16..).zip(&self.queues) {
            if !q.config.enabled {
                continue;
            }
            let config = q.config.queue_config(kind, features);
            let position = read_position(mem, &config)
                .map_err(|source| DeviceError::RingPosition { index, source })?;
            positions.push((index, position));
        }
        Ok(positions)
    }

    /// Sets each enabled queue's state to its [`Self::ring_positions`] (nothing in flight): what
    /// a v1.4 destination does before it applies the context. Changes nothing on an error.
    ///
    /// A device that is not running (the driver initialising or resetting it, spec-decisions
    /// §40) has no position to recover: 1.4 carries no queue state, and none of its queues has
    /// run since the reset, so each is set to its initial state, which a restore leaves for the
    /// queue to take in the ring format the driver negotiates by DRIVER_OK. (A state taken over
    /// from elsewhere, such as a fresh device's split zeros, would start a packed ring on the
    /// wrong wrap counter.)
    pub fn set_ring_positions_from_memory<M: GuestMemory + ?Sized>(
        &mut self,
        profile: Profile,
        mem: &M,
    ) -> Result<(), DeviceError> {
        let negotiation = Negotiation {
            profile,
            status: DeviceStatus::from_bits_retain(self.device_status),
            driver: self.driver_features.first().copied().unwrap_or(0),
        };
        if !negotiation.has(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND) {
            let initial = QueueState::initial(negotiation.ring_kind());
            for q in &mut self.queues {
                q.state = initial.clone();
            }
            return Ok(());
        }
        for (index, position) in self.ring_positions(profile, mem)? {
            if let Some(q) = self.queues.get_mut(usize::from(index)) {
                q.state = position.queue_state();
            }
        }
        Ok(())
    }
}
