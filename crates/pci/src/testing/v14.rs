//! Rig for the virtio 1.4 profile: a function with two counting queues and RING_RESET, so a
//! test resets one queue while the other keeps running.

use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::testing::{CountingDevice, ENTROPY_DEVICE_TYPE};
use virtio_lm_device::{CoreOptions, DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_spec::parts::Part;
use virtio_lm_spec::{Feature, Profile};
use vm_memory::GuestMemory;

use virtio_lm_queue::BufferSpec;

use super::Mem;
use crate::admin::{AdminClient, AdminClientConfig, MemberFactory, OwnerFunction, OwnerOptions};
use crate::{PciDriver, QueueSetup, VirtioPciFunction};

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

    fn config_len(&self) -> usize {
        0
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

/// A member for VF `vf` of a v1.4 owner: a [`CountingDevice`] (its stream from `vf << 16`,
/// one queue of 16) over fresh guest memory, 2 MSI-X vectors.
pub fn v14_member(vf: u16) -> VirtioPciFunction<Mem> {
    let device = CountingDevice::new(u64::from(vf) << 16, 16);
    VirtioPciFunction::with_device(Box::new(device), super::memory(), v14_options(), 2, false)
        .unwrap()
}

/// A v1.4 owner with `num_vfs` [`v14_member`]s, VF Enable set.
pub fn v14_owner(num_vfs: u16) -> OwnerFunction<Mem> {
    v14_owner_of(num_vfs, Box::new(|vf| Ok(v14_member(vf))))
}

/// A v1.4 owner with `num_vfs` members built by `factory`, VF Enable set.
pub fn v14_owner_of(num_vfs: u16, factory: MemberFactory<Mem>) -> OwnerFunction<Mem> {
    let options = OwnerOptions {
        core: CoreOptions {
            features: vec![Feature::Version1],
            ..v14_options()
        },
        ..OwnerOptions::default()
    };
    let device = CountingDevice::new(0, 8);
    let owner = OwnerFunction::new(Box::new(device), super::memory(), options, factory).unwrap();
    owner.set_num_vfs(num_vfs).unwrap();
    owner.set_vf_enable(true).unwrap();
    owner
}

/// The v1.4 owner's driver without LIST_USE (timeouts only fire on a hang).
pub fn v14_bare_client(owner: &OwnerFunction<Mem>) -> AdminClient<Mem> {
    let mem = owner.function().core().lock().unwrap().mem().clone();
    let config = AdminClientConfig::low_memory(Duration::from_secs(60));
    AdminClient::init(owner.function().clone(), mem, Profile::V1_4, config).unwrap()
}

/// A v1.4 owner with `num_vfs` members and its driver ([`v14_client`]), member 1 holding the
/// DEV_PARTS GET object `id`: where most parts tests begin.
pub fn v14_with_get_object(num_vfs: u16, id: u32) -> (OwnerFunction<Mem>, AdminClient<Mem>) {
    let owner = v14_owner(num_vfs);
    let mut client = v14_client(&owner);
    client
        .parts_object_create(1, id, virtio_lm_spec::parts::DEV_PARTS_TYPE_GET)
        .unwrap();
    (owner, client)
}

/// [`v14_bare_client`] after LIST_USE of every v1.4 command and DRIVER_CAP_SET of the
/// device's limits.
pub fn v14_client(owner: &OwnerFunction<Mem>) -> AdminClient<Mem> {
    let mut client = v14_bare_client(owner);
    client.use_v1_4_commands().unwrap();
    let cap = client.dev_parts_cap_get().unwrap();
    client.dev_parts_cap_set(cap).unwrap();
    client
}

/// A guest driving a v1.4 member: VERSION_1, split ring, queue 0 of 16 at [`super::RING`].
pub struct V14Guest {
    /// The member.
    pub function: Arc<VirtioPciFunction<Mem>>,
    /// The guest's memory.
    pub mem: Arc<Mem>,
    /// The guest driver.
    pub driver: PciDriver<Mem>,
}

impl V14Guest {
    /// Initialises `function`.
    pub fn new(function: Arc<VirtioPciFunction<Mem>>) -> Self {
        let mem = function.core().lock().unwrap().mem().clone();
        let mut driver = v14_driver(&function, &mem);
        driver
            .init(
                v14_features(&[Feature::Version1]),
                &[QueueSetup::new(0, 16, super::RING)],
            )
            .unwrap();
        Self {
            function,
            mem,
            driver,
        }
    }

    /// Makes a writable buffer of `len` bytes at `addr` available and notifies.
    pub fn submit(&mut self, addr: u64, len: u32) {
        self.driver
            .submit(0, &[BufferSpec::writable(addr, len)])
            .unwrap();
    }

    /// Used buffers collected now.
    pub fn collect(&mut self) -> usize {
        self.driver.collect_used(0).unwrap().len()
    }
}

/// Capability ids in a function's PCI capability list (a bounded walk).
pub fn capability_ids(function: &VirtioPciFunction<Mem>) -> Vec<u8> {
    let space = function.config_space();
    let mut ids = Vec::new();
    let mut at = usize::from(space[0x34]);
    while at != 0 && ids.len() < 48 {
        ids.push(space[at]);
        at = usize::from(space[at + 1]);
    }
    ids
}

/// The first of `parts` of type `t` (panics without one).
pub fn first_part(parts: &[Part], t: u16) -> Part {
    parts
        .iter()
        .find(|p| p.hdr.part_type() == t)
        .unwrap()
        .clone()
}
