//! Where a virtqueue lives in guest memory and which ring features shape it.

use vm_memory::{GuestAddress, GuestMemory, Permissions};

use crate::error::{ConfigError, RingArea};
use crate::kind::RingKind;

/// Largest queue size either ring format allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Negotiated features that change how the ring is read and written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RingFeatures {
    /// VIRTIO_F_EVENT_IDX: event indices instead of flags for notification suppression.
    pub event_idx: bool,
    /// VIRTIO_F_INDIRECT_DESC: indirect descriptor tables are allowed.
    pub indirect_desc: bool,
}

/// Configuration of one virtqueue as the driver programmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Ring format.
    pub kind: RingKind,
    /// Number of entries.
    pub size: u16,
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc_table: GuestAddress,
    /// Split: available ring. Packed: driver event suppression structure.
    pub driver_area: GuestAddress,
    /// Split: used ring. Packed: device event suppression structure.
    pub device_area: GuestAddress,
    /// Negotiated ring features.
    pub features: RingFeatures,
}

impl QueueConfig {
    /// Lays a queue out contiguously from `base` with every area aligned as its format requires;
    /// returns the configuration and the first address after the queue.
    pub fn contiguous(
        kind: RingKind,
        size: u16,
        base: GuestAddress,
        features: RingFeatures,
    ) -> (Self, GuestAddress) {
        let desc_table = align_up(base.0, 16);
        let (driver_area, device_area, end) = match kind {
            RingKind::Split => {
                let driver = desc_table + 16 * u64::from(size);
                let device = align_up(driver + 6 + 2 * u64::from(size), 4);
                (driver, device, device + 6 + 8 * u64::from(size))
            }
            RingKind::Packed => {
                let driver = desc_table + 16 * u64::from(size);
                (driver, driver + 4, driver + 8)
            }
        };
        let config = Self {
            kind,
            size,
            desc_table: GuestAddress(desc_table),
            driver_area: GuestAddress(driver_area),
            device_area: GuestAddress(device_area),
            features,
        };
        (config, GuestAddress(end))
    }

    /// Fails unless the configuration is for a `kind` ring.
    pub fn expect_kind(&self, kind: RingKind) -> Result<(), ConfigError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(ConfigError::WrongKind(self.kind))
        }
    }

    /// [`Self::expect_kind`], then [`Self::validate`]: what every queue of one format checks
    /// before it touches guest memory.
    pub(crate) fn validate_as<M: GuestMemory + ?Sized>(
        &self,
        kind: RingKind,
        mem: &M,
    ) -> Result<(), ConfigError> {
        self.expect_kind(kind)?;
        self.validate(mem)
    }

    /// Byte lengths of the descriptor, driver and device areas.
    pub fn area_lengths(&self) -> [u64; 3] {
        let n = u64::from(self.size);
        match self.kind {
            // The event fields are counted whether or not EVENT_IDX is on: drivers lay the rings
            // out with them, and a later feature change must not move the rings.
            RingKind::Split => [16 * n, 6 + 2 * n, 6 + 8 * n],
            RingKind::Packed => [16 * n, 4, 4],
        }
    }

    /// Checks the size, the alignment of each area and that each area lies inside guest memory.
    pub fn validate<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), ConfigError> {
        let size_ok = match self.kind {
            RingKind::Split => self.size.is_power_of_two() && self.size <= MAX_QUEUE_SIZE,
            RingKind::Packed => self.size >= 1 && self.size <= MAX_QUEUE_SIZE,
        };
        if !size_ok {
            return Err(ConfigError::InvalidSize { size: self.size });
        }
        let aligns: [u64; 3] = match self.kind {
            RingKind::Split => [16, 2, 4],
            RingKind::Packed => [16, 4, 4],
        };
        let areas = [
            (RingArea::Descriptors, self.desc_table),
            (RingArea::Driver, self.driver_area),
            (RingArea::Device, self.device_area),
        ];
        for (((area, addr), align), len) in areas.into_iter().zip(aligns).zip(self.area_lengths()) {
            if addr.0 % align != 0 {
                return Err(ConfigError::Misaligned {
                    area,
                    addr: addr.0,
                    align,
                });
            }
            let fits = usize::try_from(len)
                .is_ok_and(|l| mem.check_range(addr, l, Permissions::ReadWrite));
            if !fits {
                return Err(ConfigError::OutOfMemory {
                    area,
                    addr: addr.0,
                    len,
                });
            }
        }
        Ok(())
    }
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}
