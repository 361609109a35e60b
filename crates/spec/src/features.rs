//! Transport and ring feature names.
//!
//! A [`Feature`] is only a name: its bit number depends on the numbering
//! profile, because several seed numbers were later given to other features
//! by virtio 1.4 (see [`Profile::bit`](crate::profile::Profile::bit)).

use core::fmt;

/// A transport or ring feature this project knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// VIRTIO_F_VERSION_1: a non-legacy (1.0+) device.
    Version1,
    /// VIRTIO_F_RING_PACKED: packed virtqueue layout.
    RingPacked,
    /// VIRTIO_F_IN_ORDER: buffers are used in the order they were made available.
    InOrder,
    /// VIRTIO_F_INDIRECT_DESC: indirect descriptor tables.
    IndirectDesc,
    /// VIRTIO_F_EVENT_IDX: `used_event` / `avail_event` notification suppression.
    EventIdx,
    /// VIRTIO_F_SR_IOV: the device supports SR-IOV virtual functions.
    SrIov,
    /// VIRTIO_F_NOTIFICATION_DATA: driver notifications carry ring position data.
    NotificationData,
    /// VIRTIO_F_DEVICE_STOP (seed 000): the DEVICE_STOPPED status bit.
    DeviceStop,
    /// VIRTIO_F_QUEUE_STATE (seed 001): available/used state registers.
    QueueState,
    /// VIRTIO_F_ADMIN_VQ: the device has administration virtqueues.
    AdminVq,
    /// VIRTIO_F_SUSPEND (seed 003 / merged 1.4): the SUSPEND status bit.
    Suspend,
    /// VIRTIO_F_NOTIF_CONFIG_DATA (1.4): `queue_notif_config_data`.
    NotifConfigData,
    /// VIRTIO_F_RING_RESET (1.4): per-virtqueue reset.
    RingReset,
}

impl Feature {
    /// Every known feature, in declaration order.
    pub const ALL: [Feature; 13] = [
        Feature::Version1,
        Feature::RingPacked,
        Feature::InOrder,
        Feature::IndirectDesc,
        Feature::EventIdx,
        Feature::SrIov,
        Feature::NotificationData,
        Feature::DeviceStop,
        Feature::QueueState,
        Feature::AdminVq,
        Feature::Suspend,
        Feature::NotifConfigData,
        Feature::RingReset,
    ];

    /// The spec name, e.g. `"VIRTIO_F_RING_PACKED"`.
    ///
    /// The spec spells the two ring features `VIRTIO_F_*` (Linux keeps the
    /// older `VIRTIO_RING_F_*`); we follow the spec.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Version1 => "VIRTIO_F_VERSION_1",
            Feature::RingPacked => "VIRTIO_F_RING_PACKED",
            Feature::InOrder => "VIRTIO_F_IN_ORDER",
            Feature::IndirectDesc => "VIRTIO_F_INDIRECT_DESC",
            Feature::EventIdx => "VIRTIO_F_EVENT_IDX",
            Feature::SrIov => "VIRTIO_F_SR_IOV",
            Feature::NotificationData => "VIRTIO_F_NOTIFICATION_DATA",
            Feature::DeviceStop => "VIRTIO_F_DEVICE_STOP",
            Feature::QueueState => "VIRTIO_F_QUEUE_STATE",
            Feature::AdminVq => "VIRTIO_F_ADMIN_VQ",
            Feature::Suspend => "VIRTIO_F_SUSPEND",
            Feature::NotifConfigData => "VIRTIO_F_NOTIF_CONFIG_DATA",
            Feature::RingReset => "VIRTIO_F_RING_RESET",
        }
    }

    /// Looks a feature up by its spec name (the inverse of [`Feature::name`]).
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique and round-trip through `from_name`.
    #[test]
    fn names_round_trip() {
        for (i, a) in Feature::ALL.iter().enumerate() {
            assert_eq!(Feature::from_name(a.name()), Some(*a));
            assert_eq!(a.to_string(), a.name());
            for b in &Feature::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a, b);
            }
        }
        assert_eq!(Feature::from_name("VIRTIO_F_NOPE"), None);
    }

    /// Seed 000 names "VIRTIO_F_DEVICE_STOP", seed 001 "VIRTIO_F_QUEUE_STATE",
    /// seed 003 "VIRTIO_F_SUSPEND": the spelling other layers print and parse.
    #[test]
    fn seed_feature_names() {
        assert_eq!(Feature::DeviceStop.name(), "VIRTIO_F_DEVICE_STOP");
        assert_eq!(Feature::QueueState.name(), "VIRTIO_F_QUEUE_STATE");
        assert_eq!(Feature::Suspend.name(), "VIRTIO_F_SUSPEND");
    }
}
