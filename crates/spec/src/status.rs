//! Device status field (`device_status`, one byte).
//!
//! The numeric values here are the same in every numbering profile; whether a
//! bit may be used at all depends on the profile (see
//! [`Profile::status_bit`](crate::profile::Profile::status_bit)): DEVICE_STOPPED
//! (seed 000) is not offered under the `v1.4` profile, where 32 is unassigned.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

/// ACKNOWLEDGE (1): the guest has found the device.
pub const ACKNOWLEDGE: u8 = 1;
/// DRIVER (2): the guest knows how to drive the device.
pub const DRIVER: u8 = 2;
/// DRIVER_OK (4): the driver is set up and ready to drive the device.
pub const DRIVER_OK: u8 = 4;
/// FEATURES_OK (8): the driver has acknowledged the features it understands.
pub const FEATURES_OK: u8 = 8;
/// SUSPEND (16): seed 003 / merged 1.4; the device is (being) suspended.
pub const SUSPEND: u8 = 16;
/// DEVICE_STOPPED (32): seed 000; the device has been stopped by the driver.
///
/// Only meaningful in the `seeds` profile; unassigned in virtio 1.4.
pub const DEVICE_STOPPED: u8 = 32;
/// DEVICE_NEEDS_RESET (64): seed 002; the device hit an unrecoverable error.
pub const DEVICE_NEEDS_RESET: u8 = 64;
/// FAILED (128): the guest has given up on the device.
pub const FAILED: u8 = 128;

/// One named device status bit, used to ask a profile whether it offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusBit {
    /// ACKNOWLEDGE (1).
    Acknowledge,
    /// DRIVER (2).
    Driver,
    /// DRIVER_OK (4).
    DriverOk,
    /// FEATURES_OK (8).
    FeaturesOk,
    /// SUSPEND (16).
    Suspend,
    /// DEVICE_STOPPED (32), seeds profile only.
    DeviceStopped,
    /// DEVICE_NEEDS_RESET (64).
    DeviceNeedsReset,
    /// FAILED (128).
    Failed,
}

impl StatusBit {
    /// Every status bit, in increasing numeric order.
    pub const ALL: [StatusBit; 8] = [
        StatusBit::Acknowledge,
        StatusBit::Driver,
        StatusBit::DriverOk,
        StatusBit::FeaturesOk,
        StatusBit::Suspend,
        StatusBit::DeviceStopped,
        StatusBit::DeviceNeedsReset,
        StatusBit::Failed,
    ];

    /// The bit's mask value, independent of profile.
    pub const fn mask(self) -> u8 {
        match self {
            StatusBit::Acknowledge => ACKNOWLEDGE,
            StatusBit::Driver => DRIVER,
            StatusBit::DriverOk => DRIVER_OK,
            StatusBit::FeaturesOk => FEATURES_OK,
            StatusBit::Suspend => SUSPEND,
            StatusBit::DeviceStopped => DEVICE_STOPPED,
            StatusBit::DeviceNeedsReset => DEVICE_NEEDS_RESET,
            StatusBit::Failed => FAILED,
        }
    }

    /// The spec name of the bit, e.g. `"DRIVER_OK"`.
    pub const fn name(self) -> &'static str {
        match self {
            StatusBit::Acknowledge => "ACKNOWLEDGE",
            StatusBit::Driver => "DRIVER",
            StatusBit::DriverOk => "DRIVER_OK",
            StatusBit::FeaturesOk => "FEATURES_OK",
            StatusBit::Suspend => "SUSPEND",
            StatusBit::DeviceStopped => "DEVICE_STOPPED",
            StatusBit::DeviceNeedsReset => "DEVICE_NEEDS_RESET",
            StatusBit::Failed => "FAILED",
        }
    }
}

impl fmt::Display for StatusBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `device_status` byte: a set of status bits.
///
/// A plain value; the rules for who may set or clear which bit live in the
/// device crate, not here.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceStatus(u8);

impl DeviceStatus {
    /// No bit set: the value after reset.
    pub const RESET: DeviceStatus = DeviceStatus(0);
    /// ACKNOWLEDGE (1).
    pub const ACKNOWLEDGE: DeviceStatus = DeviceStatus(ACKNOWLEDGE);
    /// DRIVER (2).
    pub const DRIVER: DeviceStatus = DeviceStatus(DRIVER);
    /// DRIVER_OK (4).
    pub const DRIVER_OK: DeviceStatus = DeviceStatus(DRIVER_OK);
    /// FEATURES_OK (8).
    pub const FEATURES_OK: DeviceStatus = DeviceStatus(FEATURES_OK);
    /// SUSPEND (16).
    pub const SUSPEND: DeviceStatus = DeviceStatus(SUSPEND);
    /// DEVICE_STOPPED (32), seeds profile only.
    pub const DEVICE_STOPPED: DeviceStatus = DeviceStatus(DEVICE_STOPPED);
    /// DEVICE_NEEDS_RESET (64).
    pub const DEVICE_NEEDS_RESET: DeviceStatus = DeviceStatus(DEVICE_NEEDS_RESET);
    /// FAILED (128).
    pub const FAILED: DeviceStatus = DeviceStatus(FAILED);

    /// Wraps a raw status byte; every byte value is representable.
    pub const fn from_bits(bits: u8) -> Self {
        DeviceStatus(bits)
    }

    /// The raw status byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: DeviceStatus) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share at least one bit.
    pub const fn intersects(self, other: DeviceStatus) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets every bit of `other`.
    pub fn insert(&mut self, other: DeviceStatus) {
        self.0 |= other.0;
    }

    /// Clears every bit of `other`.
    pub fn remove(&mut self, other: DeviceStatus) {
        self.0 &= !other.0;
    }

    /// `self` with the bits of `other` set.
    pub const fn with(self, other: DeviceStatus) -> Self {
        DeviceStatus(self.0 | other.0)
    }

    /// `self` with the bits of `other` cleared.
    pub const fn without(self, other: DeviceStatus) -> Self {
        DeviceStatus(self.0 & !other.0)
    }
}

impl From<u8> for DeviceStatus {
    fn from(bits: u8) -> Self {
        DeviceStatus(bits)
    }
}

impl From<DeviceStatus> for u8 {
    fn from(status: DeviceStatus) -> Self {
        status.0
    }
}

impl From<StatusBit> for DeviceStatus {
    fn from(bit: StatusBit) -> Self {
        DeviceStatus(bit.mask())
    }
}

impl BitOr for DeviceStatus {
    type Output = DeviceStatus;
    fn bitor(self, rhs: DeviceStatus) -> DeviceStatus {
        DeviceStatus(self.0 | rhs.0)
    }
}

impl BitOrAssign for DeviceStatus {
    fn bitor_assign(&mut self, rhs: DeviceStatus) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for DeviceStatus {
    type Output = DeviceStatus;
    fn bitand(self, rhs: DeviceStatus) -> DeviceStatus {
        DeviceStatus(self.0 & rhs.0)
    }
}

impl fmt::Debug for DeviceStatus {
    /// Names the set bits, e.g. `DeviceStatus(ACKNOWLEDGE | DRIVER)`; an
    /// empty status prints as `DeviceStatus(0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceStatus(")?;
        if self.0 == 0 {
            f.write_str("0")?;
        }
        let mut first = true;
        for bit in StatusBit::ALL {
            if self.0 & bit.mask() != 0 {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(bit.name())?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §8 status table and spec-notes §1: ACKNOWLEDGE 1, DRIVER 2,
    /// DRIVER_OK 4, FEATURES_OK 8, SUSPEND 16, DEVICE_STOPPED 32,
    /// DEVICE_NEEDS_RESET 64, FAILED 128.
    #[test]
    fn status_values() {
        assert_eq!(ACKNOWLEDGE, 1);
        assert_eq!(DRIVER, 2);
        assert_eq!(DRIVER_OK, 4);
        assert_eq!(FEATURES_OK, 8);
        assert_eq!(SUSPEND, 16);
        assert_eq!(DEVICE_STOPPED, 32);
        assert_eq!(DEVICE_NEEDS_RESET, 64);
        assert_eq!(FAILED, 128);
    }

    /// Seed 000: "DEVICE_STOPPED (32)"; seed 002: "DEVICE_NEEDS_RESET (64)";
    /// seed 003: "SUSPEND (16)". The named bits are distinct single bits that
    /// together fill the byte.
    #[test]
    fn status_bits_are_distinct_single_bits() {
        let mut all = 0u8;
        for bit in StatusBit::ALL {
            assert_eq!(bit.mask().count_ones(), 1, "{bit}");
            assert_eq!(all & bit.mask(), 0, "{bit} overlaps");
            all |= bit.mask();
        }
        assert_eq!(all, 0xff);
        assert_eq!(StatusBit::DeviceStopped.mask(), 32);
        assert_eq!(StatusBit::DeviceNeedsReset.mask(), 64);
        assert_eq!(StatusBit::Suspend.mask(), 16);
    }

    /// The numeric values agree with Linux's `VIRTIO_CONFIG_S_*` as shipped in
    /// virtio-bindings.
    #[test]
    fn status_matches_virtio_bindings() {
        use virtio_bindings::virtio_config as c;
        assert_eq!(u32::from(ACKNOWLEDGE), c::VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(u32::from(DRIVER), c::VIRTIO_CONFIG_S_DRIVER);
        assert_eq!(u32::from(DRIVER_OK), c::VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(u32::from(FEATURES_OK), c::VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(
            u32::from(DEVICE_NEEDS_RESET),
            c::VIRTIO_CONFIG_S_NEEDS_RESET
        );
        assert_eq!(u32::from(FAILED), c::VIRTIO_CONFIG_S_FAILED);
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
        assert_eq!(s.bits(), DRIVER);
        assert_eq!(s.with(DeviceStatus::FAILED).bits(), DRIVER | FAILED);
        assert_eq!(s.without(DeviceStatus::DRIVER), DeviceStatus::RESET);
        assert_eq!(
            DeviceStatus::from(StatusBit::Suspend),
            DeviceStatus::SUSPEND
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
            format!("{:?}", DeviceStatus::from_bits(0xff)),
            "DeviceStatus(ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | SUSPEND \
             | DEVICE_STOPPED | DEVICE_NEEDS_RESET | FAILED)"
        );
    }
}
