//! Driver-side shorthands for tests that drive a [`DeviceCore`] directly, as a transport would:
//! the initialisation sequence and queue programming, and [`ConfigDevice`], a device type with
//! a writable configuration space. Behind the `test-utils` feature; a failure here is the
//! calling test's failure, so these helpers assert.

use virtio_lm_queue::{QueueConfig, RingDriver, RingFeatures, RingKind};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::{GuestAddress, GuestMemory};

use crate::{DeviceCore, DeviceError, QueueAccess, VirtioDevice};

/// Status after a successful feature negotiation.
pub const SETUP: DeviceStatus = DeviceStatus::ACKNOWLEDGE
    .union(DeviceStatus::DRIVER)
    .union(DeviceStatus::FEATURES_OK);
/// Status of a running device.
pub const RUNNING: DeviceStatus = SETUP.union(DeviceStatus::DRIVER_OK);

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
    core.write_queue(index, |regs| {
        regs.size = config.size;
        regs.desc = config.desc_table.0;
        regs.driver = config.driver_area.0;
        regs.device = config.device_area.0;
        regs.enabled = true;
    });
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

/// Bytes of [`ConfigDevice`]'s configuration space.
pub const CONFIG_LEN: usize = 8;

/// A small device type with a configuration space the driver can write (byte `i` starts as
/// `i`), for tests that must see whether a configuration write or change went through. One
/// queue of 16; each buffer is used at once with length 0.
#[derive(Debug, Default)]
pub struct ConfigDevice {
    config: [u8; CONFIG_LEN],
}

impl ConfigDevice {
    /// Device id of the test device (a value no virtio device type uses).
    pub const DEVICE_TYPE: u32 = 0xfffe;

    /// A device with its initial configuration `0, 1, …, 7`.
    pub fn new() -> Self {
        let mut config = [0; CONFIG_LEN];
        for (i, b) in config.iter_mut().enumerate() {
            *b = i as u8;
        }
        Self { config }
    }
}

impl<M: GuestMemory> VirtioDevice<M> for ConfigDevice {
    fn device_type(&self) -> u32 {
        Self::DEVICE_TYPE
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![16]
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset + i).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset + i) {
                *slot = *b;
            }
        }
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = queue.pop()? {
            queue.add_used(chain.id(), 0)?;
        }
        Ok(())
    }
}
