//! Rig for the virtio 1.4 profile: a function with two counting queues and RING_RESET, so a
//! test resets one queue while the other keeps running.

use std::sync::Arc;

use virtio_lm_device::testing::{CountingDevice, ENTROPY_DEVICE_TYPE};
use virtio_lm_device::{CoreOptions, DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::GuestMemory;

use super::Mem;
use crate::{PciDriver, VirtioPciFunction};

/// Two [`CountingDevice`] streams, one per queue: queue 0 counts from 1, queue 1 from 101.
#[derive(Debug)]
pub struct TwoQueueDevice {
    streams: [CountingDevice; 2],
    queue_size: u16,
}

impl TwoQueueDevice {
    /// Two queues of `queue_size`.
    pub fn new(queue_size: u16) -> Self {
        Self {
            streams: [
                CountingDevice::new(1, queue_size),
                CountingDevice::new(101, queue_size),
            ],
            queue_size,
        }
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for TwoQueueDevice {
    fn device_type(&self) -> u32 {
        ENTROPY_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size; 2]
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        match self.streams.get_mut(usize::from(index)) {
            Some(stream) => stream.process_queue(index, queue),
            None => Ok(()),
        }
    }
}

/// Core options of the v1.4 profile offering VERSION_1, EVENT_IDX, SUSPEND and RING_RESET.
pub fn v14_options() -> CoreOptions {
    CoreOptions {
        profile: Profile::V1_4,
        features: vec![
            Feature::Version1,
            Feature::EventIdx,
            Feature::Suspend,
            Feature::RingReset,
        ],
        ..CoreOptions::default()
    }
}

/// A [`TwoQueueDevice`] function (queues of 8, 4 MSI-X vectors) under [`v14_options`].
pub fn two_queue_function(mem: &Arc<Mem>) -> Arc<VirtioPciFunction<Mem>> {
    let device = TwoQueueDevice::new(8);
    Arc::new(
        VirtioPciFunction::with_device(Box::new(device), mem.clone(), v14_options(), 4, false)
            .unwrap(),
    )
}

/// A v1.4-profile driver for `function`.
pub fn v14_driver(function: &Arc<VirtioPciFunction<Mem>>, mem: &Arc<Mem>) -> PciDriver<Mem> {
    PciDriver::new(function.clone(), mem.clone(), Profile::V1_4).unwrap()
}

/// The v1.4 feature mask of `features`.
pub fn v14_features(features: &[Feature]) -> u64 {
    Profile::V1_4.feature_set(features).unwrap()
}
