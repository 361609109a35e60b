//! Checks of a device context that need no access to the core: reachable status values (with
//! the context's own negotiation), the shape of a queue state that does not start now, and the
//! range of the device-specific fields.

use virtio_lm_queue::{QueueState, RingFeatures, RingKind, StateError};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::GuestMemory;

use super::{is_device_specific, ContextError, DeviceField};

/// The context's view of negotiation: features and status as they will be after the restore.
pub(crate) struct Negotiation {
    pub(crate) profile: Profile,
    pub(crate) status: DeviceStatus,
    pub(crate) driver: u64,
}

impl Negotiation {
    pub(crate) fn has(&self, bit: DeviceStatus) -> bool {
        self.status.intersects(bit)
    }

    pub(crate) fn negotiated(&self, feature: Feature) -> bool {
        let mask = self.profile.mask(feature).unwrap_or(0);
        mask != 0 && self.has(DeviceStatus::FEATURES_OK) && self.driver & mask != 0
    }

    pub(crate) fn ring_kind(&self) -> RingKind {
        if self.negotiated(Feature::RingPacked) {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    pub(crate) fn ring_features(&self) -> RingFeatures {
        RingFeatures {
            event_idx: self.negotiated(Feature::EventIdx),
            indirect_desc: self.negotiated(Feature::IndirectDesc),
        }
    }

    /// Whether the status is one the core can be in (reached by driver writes and the device's
    /// own transitions).
    pub(crate) fn check_status(&self) -> Result<(), &'static str> {
        let rules: [(bool, &'static str); 9] = [
            (
                !self.has(DeviceStatus::DRIVER) || self.has(DeviceStatus::ACKNOWLEDGE),
                "DRIVER without ACKNOWLEDGE",
            ),
            (
                !self.has(DeviceStatus::FEATURES_OK) || self.has(DeviceStatus::DRIVER),
                "FEATURES_OK without DRIVER",
            ),
            (
                !self.has(DeviceStatus::FEATURES_OK) || self.negotiated(Feature::Version1),
                "FEATURES_OK without VIRTIO_F_VERSION_1",
            ),
            (
                !self.has(DeviceStatus::DRIVER_OK) || self.has(DeviceStatus::FEATURES_OK),
                "DRIVER_OK without FEATURES_OK",
            ),
            (
                self.driver == 0 || self.has(DeviceStatus::DRIVER),
                "driver features without DRIVER",
            ),
            (
                !self.has(DeviceStatus::SUSPEND)
                    || (!self.has(DeviceStatus::DRIVER_OK) && self.negotiated(Feature::Suspend)),
                "SUSPEND needs VIRTIO_F_SUSPEND and DRIVER_OK clear",
            ),
            (
                !self.has(DeviceStatus::DEVICE_STOPPED)
                    || self
                        .profile
                        .status_bit(DeviceStatus::DEVICE_STOPPED)
                        .is_some(),
                "DEVICE_STOPPED is not a status bit of this profile",
            ),
            (
                !self.has(DeviceStatus::DEVICE_STOPPED)
                    || (self.negotiated(Feature::DeviceStop)
                        && self
                            .status
                            .intersects(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND)),
                "DEVICE_STOPPED needs VIRTIO_F_DEVICE_STOP and a started device",
            ),
            (
                !self.has(DeviceStatus::DEVICE_NEEDS_RESET) || self.has(DeviceStatus::FEATURES_OK),
                "DEVICE_NEEDS_RESET before FEATURES_OK",
            ),
        ];
        match rules.into_iter().find(|(ok, _)| !ok) {
            Some((_, reason)) => Err(reason),
            None => Ok(()),
        }
    }

    /// Queues are started (and their states must start) when the device runs, is stopped, or
    /// is suspended, and has not failed.
    pub(crate) fn queues_start(&self) -> bool {
        self.status
            .intersects(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND)
            && !self.has(DeviceStatus::DEVICE_NEEDS_RESET)
            && !self.has(DeviceStatus::FAILED)
    }
}

/// A device type's saved fields must be device-specific (0x0200–0x03FF): they travel after
/// the queue fields, and a generic type there would be out of order.
pub(crate) fn check_device_fields(fields: &[DeviceField]) -> Result<(), ContextError> {
    match fields.iter().find(|f| !is_device_specific(f.field_type)) {
        Some(f) => Err(ContextError::Unencodable {
            field_type: f.field_type,
            reason: "not a device-specific type",
        }),
        None => Ok(()),
    }
}

/// Checks a state that does not start now: positions as the ring format allows (when known),
/// in-flight chains with distinct ids below the size, ring slots as the format requires, and
/// buffers readable-then-writable, not overflowing, inside guest memory.
pub(crate) fn check_state_shape<M: GuestMemory + ?Sized>(
    kind: Option<RingKind>,
    size: u16,
    state: &QueueState,
    mem: &M,
) -> Result<(), StateError> {
    match kind {
        Some(RingKind::Split) if state.used_state != 0 => {
            return Err(StateError::SplitUsedState(state.used_state))
        }
        Some(RingKind::Packed) => {
            for (which, position) in [
                ("avail_state", state.avail_state),
                ("used_state", state.used_state),
            ] {
                let index = position & 0x7fff;
                if index >= size {
                    return Err(StateError::IndexOutOfRange { which, index, size });
                }
            }
        }
        _ => {}
    }
    state.check_inflight(size, mem, |slots| match kind {
        Some(RingKind::Split) => slots == 1,
        _ => slots <= size,
    })
}
