//! Device status field (`device_status`, one byte) as a [`bitflags`] set.
//!
//! The numeric values here are the same in every numbering profile; whether a bit may be used
//! at all depends on the profile (see [`Profile::status_bit`](crate::profile::Profile::status_bit)):
//! DEVICE_STOPPED (seed 000) is offered only by the `seeds` profile; under `v1.4` bit 32 is
//! unassigned. A raw byte read from or written to a register keeps every bit
//! ([`DeviceStatus::from_bits_retain`]): which bits a driver may set or clear is the device
//! core's rule, not this type's.

use core::fmt;

bitflags::bitflags! {
    /// A `device_status` byte: a set of status bits.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DeviceStatus: u8 {
        /// ACKNOWLEDGE (1): the guest has found the device.
        const ACKNOWLEDGE = 1;
        /// DRIVER (2): the guest knows how to drive the device.
        const DRIVER = 2;
        /// DRIVER_OK (4): the driver is set up and ready to drive the device.
        const DRIVER_OK = 4;
        /// FEATURES_OK (8): the driver has acknowledged the features it understands.
        const FEATURES_OK = 8;
        /// SUSPEND (16): seed 003 / merged 1.4; the device is (being) suspended.
        const SUSPEND = 16;
        /// DEVICE_STOPPED (32): seed 000; the device has been stopped by the driver. Only in
        /// the `seeds` profile; unassigned in virtio 1.4.
        const DEVICE_STOPPED = 32;
        /// DEVICE_NEEDS_RESET (64): seed 002; the device hit an unrecoverable error.
        const DEVICE_NEEDS_RESET = 64;
        /// FAILED (128): the guest has given up on the device.
        const FAILED = 128;
    }
}

impl DeviceStatus {
    /// No bit set: the value after reset.
    pub const RESET: DeviceStatus = DeviceStatus::empty();
}

impl From<u8> for DeviceStatus {
    fn from(bits: u8) -> Self {
        DeviceStatus::from_bits_retain(bits)
    }
}

impl From<DeviceStatus> for u8 {
    fn from(status: DeviceStatus) -> Self {
        status.bits()
    }
}

impl fmt::Debug for DeviceStatus {
    /// Names the set bits, e.g. `DeviceStatus(ACKNOWLEDGE | DRIVER)`; an empty status prints as
    /// `DeviceStatus(0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceStatus(")?;
        if self.is_empty() {
            f.write_str("0")?;
        }
        for (i, (name, _)) in self.iter_names().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// virtio 1.4 "Device Status Field" and "Reserved Feature Bits" status table and spec-decisions §1: ACKNOWLEDGE 1, DRIVER 2,
    /// DRIVER_OK 4, FEATURES_OK 8, SUSPEND 16, DEVICE_STOPPED 32,
    /// DEVICE_NEEDS_RESET 64, FAILED 128.
    #[test]
    fn status_values() {
        assert_eq!(DeviceStatus::ACKNOWLEDGE.bits(), 1);
        assert_eq!(DeviceStatus::DRIVER.bits(), 2);
        assert_eq!(DeviceStatus::DRIVER_OK.bits(), 4);
        assert_eq!(DeviceStatus::FEATURES_OK.bits(), 8);
        assert_eq!(DeviceStatus::SUSPEND.bits(), 16);
        assert_eq!(DeviceStatus::DEVICE_STOPPED.bits(), 32);
        assert_eq!(DeviceStatus::DEVICE_NEEDS_RESET.bits(), 64);
        assert_eq!(DeviceStatus::FAILED.bits(), 128);
    }

    /// Seed 000: "DEVICE_STOPPED (32)"; seed 002: "DEVICE_NEEDS_RESET (64)";
    /// seed 003: "SUSPEND (16)". The named bits are distinct single bits that
    /// together fill the byte.
    #[test]
    fn status_bits_are_distinct_single_bits() {
        let mut all = 0u8;
        for (name, bit) in DeviceStatus::all().iter_names() {
            assert_eq!(bit.bits().count_ones(), 1, "{name}");
            assert_eq!(all & bit.bits(), 0, "{name} overlaps");
            all |= bit.bits();
        }
        assert_eq!(all, 0xff);
        assert_eq!(DeviceStatus::DEVICE_STOPPED.bits(), 32);
        assert_eq!(DeviceStatus::DEVICE_NEEDS_RESET.bits(), 64);
        assert_eq!(DeviceStatus::SUSPEND.bits(), 16);
    }

    /// The numeric values agree with Linux's `VIRTIO_CONFIG_S_*` as shipped in
    /// virtio-bindings.
    #[test]
    fn status_matches_virtio_bindings() {
        use virtio_bindings::virtio_config as c;
        let bits = |s: DeviceStatus| u32::from(s.bits());
        assert_eq!(
            bits(DeviceStatus::ACKNOWLEDGE),
            c::VIRTIO_CONFIG_S_ACKNOWLEDGE
        );
        assert_eq!(bits(DeviceStatus::DRIVER), c::VIRTIO_CONFIG_S_DRIVER);
        assert_eq!(bits(DeviceStatus::DRIVER_OK), c::VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(
            bits(DeviceStatus::FEATURES_OK),
            c::VIRTIO_CONFIG_S_FEATURES_OK
        );
        assert_eq!(
            bits(DeviceStatus::DEVICE_NEEDS_RESET),
            c::VIRTIO_CONFIG_S_NEEDS_RESET
        );
        assert_eq!(bits(DeviceStatus::FAILED), c::VIRTIO_CONFIG_S_FAILED);
    }

    /// `insert`, `remove` and `contains` act on exactly the given bits.
    #[test]
    fn insert_remove_contains() {
        let mut s = DeviceStatus::RESET;
        assert!(s.is_empty());
        s.insert(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        assert!(s.contains(DeviceStatus::ACKNOWLEDGE));
        assert!(s.contains(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER));
        assert!(!s.contains(DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK));
        assert!(s.intersects(DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK));
        s.remove(DeviceStatus::ACKNOWLEDGE);
        assert_eq!(s.bits(), DeviceStatus::DRIVER.bits());
        assert_eq!(
            s.union(DeviceStatus::FAILED).bits(),
            (DeviceStatus::DRIVER | DeviceStatus::FAILED).bits()
        );
        assert_eq!(s.difference(DeviceStatus::DRIVER), DeviceStatus::RESET);
        assert_eq!(
            DeviceStatus::from_name("SUSPEND"),
            Some(DeviceStatus::SUSPEND)
        );
        assert_eq!(u8::from(DeviceStatus::from(0x0f)), 0x0f);
    }

    /// Debug names the set bits so that test failures read like the spec.
    #[test]
    fn debug_names_bits() {
        assert_eq!(format!("{:?}", DeviceStatus::RESET), "DeviceStatus(0)");
        let s = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK;
        assert_eq!(
            format!("{s:?}"),
            "DeviceStatus(ACKNOWLEDGE | DRIVER | DRIVER_OK)"
        );
        assert_eq!(
            format!("{:?}", DeviceStatus::from_bits_retain(0xff)),
            "DeviceStatus(ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | SUSPEND \
             | DEVICE_STOPPED | DEVICE_NEEDS_RESET | FAILED)"
        );
    }
}
