//! The one test rig of the device core (compare rust-vmm virtio-queue's `mock` module and
//! Firecracker's `VirtioTestHelper`), behind the `test-utils` feature, for this crate's tests
//! and for the transports and device types built on it. A failure here is the calling test's
//! failure, so these helpers assert.
//!
//! - Status and queue programming on a bare [`DeviceCore`]: [`negotiate`], [`setup_queues`],
//!   [`reprogram_queues`], the statuses [`SETUP`] and [`RUNNING`].
//! - [`CoreDriver`]: a core with its guest memory, interrupt counter and ring drivers
//!   ([`CoreDriver::start_default`], [`CoreDriver::offer`], [`CoreDriver::collect`]).
//! - Device types: [`CountingDevice`] (writes a counted byte stream, so tests check real data),
//!   [`ConfigDevice`] (a writable configuration space), [`SlowDevice`] (requests held in
//!   process until released: drain and record-in-flight).
//! - Pieces for a device type's own rig, on any guest memory: [`core_with_mode`],
//!   [`TestCore`] shorthands on a core, [`checksum_of`], the dirty bitmap of [`DirtyMem`].
//! - [`context`]: an [`context::AdoptingDevice`] with device-specific state,
//!   source/destination cores, and field-level editing of encoded contexts.
//!
//! ```
//! use virtio_lm_device::testing::{CoreDriver, RUNNING};
//!
//! let mut d = CoreDriver::counting();
//! d.start_default();
//! d.offer(2);
//! d.core.kick(0);
//! let used = d.collect();
//! assert_eq!(used.len(), 2);
//! assert_eq!(used[0].len, 0x40, "the whole buffer written");
//! assert_eq!(d.core.status(), RUNNING);
//! ```

use virtio_lm_queue::{QueueConfig, RingDriver, RingFeatures, RingKind};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::{GuestAddress, GuestMemory};

use crate::DeviceCore;

/// The identity methods of a test device with one queue of its `queue_size` field: its device
/// type is the given constant, or (with `field`) its `device_type` field.
macro_rules! one_queue_identity {
    (field) => {
        fn device_type(&self) -> u32 {
            self.device_type
        }
        one_queue_identity!(sizes);
    };
    (sizes) => {
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![self.queue_size]
        }
    };
    ($device_type:expr) => {
        fn device_type(&self) -> u32 {
            $device_type
        }
        one_queue_identity!(sizes);
    };
}

pub mod context;
mod devices;
mod driver;
mod rig;

pub use devices::{
    fill_chain, pattern, ConfigDevice, CountingDevice, Fill, SlowDevice, CONFIG_LEN,
    ENTROPY_DEVICE_TYPE,
};
pub use driver::{
    bit, checksum, default_features, features_of, memory, memory_of, sorted_ids, CoreDriver, Mem,
    TestRing, DATA, MEM_SIZE, QUEUE_BASE,
};
pub use rig::{
    checksum_of, clear_dirty, core_with_mode, is_dirty, quiesce_request, DirtyMem, TestCore,
    TIMEOUT,
};

/// Status after a successful feature negotiation.
pub const SETUP: DeviceStatus = DeviceStatus::ACKNOWLEDGE
    .union(DeviceStatus::DRIVER)
    .union(DeviceStatus::FEATURES_OK);
/// Status of a running device.
pub const RUNNING: DeviceStatus = SETUP.union(DeviceStatus::DRIVER_OK);
/// Status of a running device the driver stopped (seed 000).
pub const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
/// Status of a device suspended before DRIVER_OK (seed 003).
pub const SUSPENDED: DeviceStatus = SETUP.union(DeviceStatus::SUSPEND);

/// Reset, ACKNOWLEDGE, DRIVER, `features`, FEATURES_OK; returns the ring format the features
/// select. Panics if the device refuses the features.
pub fn negotiate<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    features: u64,
) -> RingKind {
    core.write_status(DeviceStatus::RESET);
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    core.set_driver_features(features);
    core.write_status(SETUP);
    assert_eq!(core.status(), SETUP, "features {features:#x} refused");
    let packed = core.profile().mask(Feature::RingPacked).unwrap_or(0);
    if features & packed != 0 {
        RingKind::Packed
    } else {
        RingKind::Split
    }
}

/// The ring features `features` negotiate.
pub fn ring_features<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
    features: u64,
) -> RingFeatures {
    let has = |f| core.profile().mask(f).is_some_and(|m| features & m != 0);
    RingFeatures {
        event_idx: has(Feature::EventIdx),
        indirect_desc: has(Feature::IndirectDesc),
    }
}

/// Writes `config` into queue `index`'s registers and enables it.
pub fn program_queue<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    index: u16,
    config: &QueueConfig,
) {
    core.write_queue(index, |regs| regs.program(config));
}

/// Lays out every queue at its maximum size, queue `i` at `base + i * stride`, programs and
/// enables it, and returns a ring driver for each (which initialises the ring memory).
pub fn setup_queues<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    mem: &M,
    kind: RingKind,
    features: RingFeatures,
    base: u64,
    stride: u64,
) -> Vec<Option<RingDriver>> {
    (0..core.num_queues())
        .map(|index| {
            let size = core.queue(index).map_or(0, |q| q.max_size);
            let at = GuestAddress(base + u64::from(index) * stride);
            let (config, _) = QueueConfig::contiguous(kind, size, at, features);
            program_queue(core, index, &config);
            Some(RingDriver::new(config, mem).expect("ring driver"))
        })
        .collect()
}

/// Programs the queue registers for rings a driver already has (after a reset, to continue on
/// the same ring memory).
pub fn reprogram_queues<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    rings: &[Option<RingDriver>],
) {
    for (index, ring) in rings.iter().enumerate() {
        if let Some(ring) = ring {
            program_queue(core, index as u16, ring.config());
        }
    }
}
