//! Configuration-space profiles: the limits the backend advertises in place of the device
//! model's own, so a guest can migrate between our backend and another one without its limits
//! changing under it (docs/spec-decisions.md §23).
//!
//! A guest reads seg_max, size_max and the discard and write-zeroes limits once, at probe time,
//! and keeps them across a migration; QEMU's vhost-user-blk passes the backend's configuration
//! space through without reconciling it. A profile therefore only ever advertises limits within
//! what the device model enforces (smaller discard and write-zeroes limits, and a size_max of 0
//! that makes Linux use page-sized segments), so a guest honouring them never sends a request
//! our device refuses.

use virtio_lm_devices::blk::config::{features, offset};
use virtio_lm_devices::blk::BlkOptions;

/// Which configuration values the backend advertises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConfigProfile {
    /// The device model's own values (docs/spec-decisions.md §11).
    #[default]
    Own,
    /// qemu-storage-daemon 10.0's vhost-user-blk export, as it reports them over GET_CONFIG:
    /// size_max 0, seg_max 126, one discard segment of at most 32768 sectors, one write-zeroes
    /// segment of at most 32768 sectors, write_zeroes_may_unmap 0, writeback 0.
    QemuStorageDaemon,
}

/// The limits qemu-storage-daemon 10.0.2 reports (measured with GET_CONFIG).
mod qsd {
    pub const SIZE_MAX: u32 = 0;
    pub const SEG_MAX: u32 = 126;
    pub const MAX_DISCARD_SECTORS: u32 = 32768;
    pub const MAX_DISCARD_SEG: u32 = 1;
    pub const MAX_WRITE_ZEROES_SECTORS: u32 = 32768;
    pub const MAX_WRITE_ZEROES_SEG: u32 = 1;
}

// A profile only advertises limits the device model enforces or exceeds, so a guest honouring
// them is never refused (spec-decisions §23).
const _: () = {
    use virtio_lm_devices::blk::config as own;
    assert!(qsd::MAX_DISCARD_SECTORS <= own::MAX_DISCARD_SECTORS);
    assert!(qsd::MAX_DISCARD_SEG <= own::MAX_DISCARD_SEG);
    assert!(qsd::MAX_WRITE_ZEROES_SECTORS <= own::MAX_WRITE_ZEROES_SECTORS);
    assert!(qsd::MAX_WRITE_ZEROES_SEG <= own::MAX_WRITE_ZEROES_SEG);
};

impl ConfigProfile {
    /// Adjusts the device model's options to the profile (the initial writeback value lives
    /// there: it decides how writes complete, not only what the guest reads).
    pub fn adjust_options(self, blk: &mut BlkOptions) {
        if self == Self::QemuStorageDaemon {
            blk.writeback = false;
        }
    }

    /// Device features the profile offers on top of the device model's: qemu-storage-daemon
    /// offers MQ whatever its queue count (its configuration space then says one queue).
    pub fn extra_features(self) -> u64 {
        match self {
            Self::Own => 0,
            Self::QemuStorageDaemon => features::MQ,
        }
    }

    /// Overwrites the profile's limits in `space` (the configuration space as the device model
    /// reports it). Fields the space does not reach, or that the device does not report (the
    /// discard limits of a read-only device), are left alone.
    pub fn apply(self, space: &mut [u8]) {
        if self == Self::Own {
            return;
        }
        let reports_discard = space
            .get(offset::MAX_DISCARD_SEG..offset::MAX_DISCARD_SEG + 4)
            .is_some_and(|b| b.iter().any(|&x| x != 0));
        let mut put = |at: usize, value: u32| {
            if let Some(dst) = space.get_mut(at..at + 4) {
                dst.copy_from_slice(&value.to_le_bytes());
            }
        };
        put(offset::SIZE_MAX, qsd::SIZE_MAX);
        put(offset::SEG_MAX, qsd::SEG_MAX);
        if reports_discard {
            put(offset::MAX_DISCARD_SECTORS, qsd::MAX_DISCARD_SECTORS);
            put(offset::MAX_DISCARD_SEG, qsd::MAX_DISCARD_SEG);
            put(
                offset::MAX_WRITE_ZEROES_SECTORS,
                qsd::MAX_WRITE_ZEROES_SECTORS,
            );
            put(offset::MAX_WRITE_ZEROES_SEG, qsd::MAX_WRITE_ZEROES_SEG);
            if let Some(b) = space.get_mut(offset::WRITE_ZEROES_MAY_UNMAP) {
                *b = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_changes_nothing_and_a_short_space_is_safe() {
        let mut space = vec![7u8; 60];
        ConfigProfile::Own.apply(&mut space);
        assert!(space.iter().all(|&b| b == 7));
        let mut short = vec![1u8; 14];
        ConfigProfile::QemuStorageDaemon.apply(&mut short);
        assert_eq!(&short[8..12], &[0, 0, 0, 0]);
    }
}
