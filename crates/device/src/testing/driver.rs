//! [`CoreDriver`]: a driver of one [`DeviceCore`] as a transport would program it, owning the
//! guest memory, the interrupt counter and the ring drivers; and [`TestRing`], ring-driver
//! shorthands for which a failure is the test's failure.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use virtio_lm_queue::{BufferSpec, QueueConfig, RingDriver, RingKind, UsedBuffer};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::devices::{CountingDevice, SlowDevice};
use super::{negotiate, reprogram_queues, ring_features, setup_queues, RUNNING};
use crate::{CoreOptions, DeviceCore, InterruptCounter, VirtioDevice};

/// Guest memory of the test rigs.
pub type Mem = GuestMemoryMmap<()>;

/// Where [`CoreDriver`] lays out queue `i`: `QUEUE_BASE + i * 0x10000`.
pub const QUEUE_BASE: u64 = 0x1000;
/// First data buffer [`CoreDriver::offer`] uses.
pub const DATA: u64 = 0x10_0000;
/// Bytes of a [`CoreDriver`]'s guest memory.
pub const MEM_SIZE: usize = 0x40_0000;

/// Fresh zeroed guest memory of [`MEM_SIZE`] bytes.
pub fn memory() -> Arc<Mem> {
    memory_of(MEM_SIZE)
}

/// Fresh zeroed guest memory of `size` bytes from address 0.
pub fn memory_of(size: usize) -> Arc<Mem> {
    Arc::new(Mem::from_ranges(&[(GuestAddress(0), size)]).unwrap())
}

/// The feature bit of `feature` in the seeds profile.
pub fn bit(feature: Feature) -> u64 {
    Profile::Seeds.mask(feature).unwrap()
}

/// VERSION_1, DEVICE_STOP, QUEUE_STATE, SUSPEND and EVENT_IDX: what
/// [`CoreDriver::start_default`] negotiates.
pub fn default_features() -> u64 {
    use Feature::*;
    features_of(
        &[Version1, DeviceStop, QueueState, Suspend, EventIdx],
        false,
    )
}

/// The bits of `features` in the seeds profile, plus RING_PACKED if `packed`.
pub fn features_of(features: &[Feature], packed: bool) -> u64 {
    let ring = if packed {
        &[Feature::RingPacked][..]
    } else {
        &[]
    };
    features
        .iter()
        .chain(ring)
        .map(|f| bit(*f))
        .fold(0, |a, b| a | b)
}

/// The ids of `used`, sorted (completion order aside).
pub fn sorted_ids(used: &[UsedBuffer]) -> Vec<u16> {
    let mut ids: Vec<u16> = used.iter().map(|u| u.id).collect();
    ids.sort_unstable();
    ids
}

/// FNV-style checksum of `len` bytes of guest memory at `start`, to prove a device wrote
/// nothing there.
pub fn checksum(mem: &Mem, start: u64, len: usize) -> u64 {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(start)).unwrap();
    buf.iter()
        .enumerate()
        .fold(0xcbf29ce484222325u64, |h, (i, b)| {
            (h ^ u64::from(*b) ^ (i as u64).rotate_left(17)).wrapping_mul(0x100000001b3)
        })
}

/// Ring-driver shorthands: a failure is the test's failure.
pub trait TestRing {
    /// A driver for a ring laid out by `config` (initialises the ring memory).
    fn create(config: QueueConfig, mem: &Mem) -> Self;
    /// Adds one chain of `bufs` (not published); returns its id.
    fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> u16;
    /// Collects what the device used.
    fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer>;
}

impl TestRing for RingDriver {
    fn create(config: QueueConfig, mem: &Mem) -> Self {
        RingDriver::new(config, mem).unwrap()
    }

    fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> u16 {
        self.add_chain(mem, bufs).unwrap()
    }

    fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer> {
        self.collect_used(mem).unwrap()
    }
}

/// Drives one [`DeviceCore`] through its status, features and queues, as a transport would.
/// The shorthands are for [`Mem`]; a rig on other guest memory (e.g. [`super::DirtyMem`])
/// holds one through [`CoreDriver::around`] and brings its own.
pub struct CoreDriver<M: GuestMemory + Send + Sync + 'static = Mem> {
    /// The guest memory ([`MEM_SIZE`] bytes unless the core was built on another's).
    pub mem: Arc<M>,
    /// Counts the core's notifications.
    pub irq: Arc<InterruptCounter>,
    /// The core under test.
    pub core: DeviceCore<M>,
    /// The driver side of each queue, once set up.
    pub rings: Vec<Option<RingDriver>>,
    /// The ring format the last negotiation selected.
    pub kind: RingKind,
}

impl<M: GuestMemory + Send + Sync + 'static> CoreDriver<M> {
    /// A driver of `core` (on `mem`, notifying `irq`), before any negotiation.
    pub fn around(core: DeviceCore<M>, mem: Arc<M>, irq: Arc<InterruptCounter>) -> Self {
        Self {
            mem,
            irq,
            core,
            rings: Vec::new(),
            kind: RingKind::Split,
        }
    }
}

impl CoreDriver {
    /// Writes the device status and returns what it reads back as.
    pub fn set_status(&mut self, status: DeviceStatus) -> DeviceStatus {
        self.core.write_status(status);
        self.core.status()
    }

    /// A core around `device` with the default options.
    pub fn new(device: Box<dyn VirtioDevice<Mem>>) -> Self {
        Self::with_options(device, CoreOptions::default())
    }

    /// A core around `device` with `options`, on fresh guest memory.
    pub fn with_options(device: Box<dyn VirtioDevice<Mem>>, options: CoreOptions) -> Self {
        let mem = memory();
        let irq = Arc::new(InterruptCounter::default());
        let core = DeviceCore::new(device, mem.clone(), irq.clone(), options).unwrap();
        Self::around(core, mem, irq)
    }

    /// A core around a [`CountingDevice`] (stream from 0, one queue of 16).
    pub fn counting() -> Self {
        Self::new(Box::new(CountingDevice::new(0, 16)))
    }

    /// A [`Self::counting`] core started with [`default_features`].
    pub fn running() -> Self {
        let mut d = Self::counting();
        d.start_default();
        d
    }

    /// A [`Self::running`] core to which the driver then writes `status` (to stop or suspend
    /// it).
    pub fn running_then(status: DeviceStatus) -> Self {
        let mut d = Self::running();
        d.core.write_status(status);
        d
    }

    /// A running core around a [`SlowDevice`] (default features) holding `count` requests in
    /// process; returns it and the device's release flag.
    pub fn holding(count: usize) -> (Self, Arc<AtomicBool>) {
        let device = SlowDevice::new();
        let release = device.release.clone();
        let mut d = Self::new(Box::new(device));
        d.start_default();
        d.offer(count);
        d.core.kick(0);
        (d, release)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) {
        self.kind = negotiate(&mut self.core, features);
    }

    /// Lays out and enables every queue (the ring memory is initialised by the ring driver).
    pub fn setup_queues(&mut self, features: u64) {
        let ring = ring_features(&self.core, features);
        let mem = self.mem.clone();
        self.rings = setup_queues(&mut self.core, &*mem, self.kind, ring, QUEUE_BASE, 0x10000);
    }

    /// Programs the queue registers for the rings the driver already has (after a reset, to
    /// continue on the same ring memory).
    pub fn reprogram_queues(&mut self) {
        reprogram_queues(&mut self.core, &self.rings);
    }

    /// The initialisation with `features` up to DRIVER_OK: negotiated, queues set up.
    pub fn prepare(&mut self, features: u64) {
        self.negotiate(features);
        self.setup_queues(features);
    }

    /// The whole initialisation with `features`, ending with DRIVER_OK.
    pub fn start(&mut self, features: u64) {
        self.prepare(features);
        self.core.write_status(RUNNING);
        assert_eq!(self.core.status(), RUNNING, "device running");
    }

    /// [`Self::start`] with [`default_features`]; returns them.
    pub fn start_default(&mut self) -> u64 {
        let features = default_features();
        self.start(features);
        features
    }

    /// Adds `count` one-buffer writable chains to queue 0 and publishes them (no kick).
    pub fn offer(&mut self, count: usize) -> Vec<u16> {
        let mem = self.mem.clone();
        let ring = self.rings[0].as_mut().unwrap();
        let ids = (0..count)
            .map(|i| {
                ring.add(
                    &mem,
                    &[BufferSpec::writable(DATA + (i as u64 % 64) * 0x100, 0x40)],
                )
            })
            .collect();
        ring.publish(&*mem).unwrap();
        ids
    }

    /// Collects queue 0's used buffers.
    pub fn collect(&mut self) -> Vec<UsedBuffer> {
        let mem = self.mem.clone();
        self.rings[0].as_mut().unwrap().collect(&mem)
    }

    /// A checksum of all guest memory, to prove the device wrote nothing.
    pub fn memory_checksum(&self) -> u64 {
        checksum(&self.mem, 0, MEM_SIZE)
    }
}
