//! The one test rig of the virtio-pci transport, behind the `test-utils` feature (it enables
//! `virtio-lm-device/test-utils`, whose device-level rig it builds on): for this crate's tests
//! and for the device types' PCI workloads. A failure here is the calling test's failure, so
//! these helpers assert.
//!
//! - Functions: [`counting_function`] (a [`CountingDevice`] behind a [`VirtioPciFunction`], so
//!   tests check the very bytes a buffer received), [`slow_function`] (a [`SlowDevice`]
//!   backend that holds requests), guest memory of [`MEM_SIZE`] bytes.
//! - Driver side: [`driver_for`], [`features`], [`migration_features`], [`push`].
//! - Register access: [`Regs`] (by common-configuration offset) and [`Recorder`], a transport
//!   that logs every BAR access.
//! - [`admin`]: owners with members, guests driving members, and admin command bytes.
//!
//! ```
//! use virtio_lm_pci::testing::{counting_function, driver_for, features, memory, DATA, RING};
//! use virtio_lm_pci::QueueSetup;
//! use virtio_lm_queue::BufferSpec;
//! use virtio_lm_spec::Feature;
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let mem = memory();
//! let function = counting_function(&mem, 8, false);
//! let mut driver = driver_for(&function, &mem);
//! driver
//!     .init(features(&[Feature::Version1]), &[QueueSetup::new(0, 8, RING)])
//!     .unwrap();
//! driver.submit(0, &[BufferSpec::writable(DATA, 4)]).unwrap();
//! assert_eq!(driver.collect_used(0).unwrap()[0].len, 4);
//! let mut bytes = [0u8; 4];
//! mem.read_slice(&mut bytes, GuestAddress(DATA)).unwrap();
//! assert_eq!(bytes, [1, 2, 3, 4], "the counting stream from seed 1");
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_lm_device::testing::{default_features, CountingDevice, Fill, SlowDevice};
use virtio_lm_device::CoreOptions;
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress};

use crate::{PciDriver, PciTransport, QueueSetup, VirtioPciFunction};

pub mod admin;
mod v14;
mod worker;

pub use v14::{
    capability_ids, first_part, two_queue_function, v14_bare_client, v14_client, v14_driver,
    v14_features, v14_member, v14_options, v14_owner, v14_owner_of, v14_with_get_object,
    TwoQueueDevice, V14Guest,
};
pub use virtio_lm_device::testing::Mem;
pub use worker::{transport_features, worker_function};

/// Size of guest memory: rings at the bottom, data buffers from [`DATA`].
pub const MEM_SIZE: usize = 0x10000;
/// Where queue 0's ring is laid out.
pub const RING: u64 = 0x1000;
/// First data buffer.
pub const DATA: u64 = 0x8000;

/// Fresh zeroed guest memory of [`MEM_SIZE`] bytes.
pub fn memory() -> Arc<Mem> {
    memory_of(MEM_SIZE)
}

pub use virtio_lm_device::testing::memory_of;

/// Core options offering the default features plus `extra`.
pub fn options_with(extra: &[Feature]) -> CoreOptions {
    let mut options = CoreOptions::default();
    options.features.extend_from_slice(extra);
    options
}

/// A [`CountingDevice`] function (queue maximum `queue_max`, 4 MSI-X vectors) over `mem`, its
/// stream counting up from `seed`; with `worker`, kicks go to the function's worker thread.
pub fn counting_function_with(
    mem: &Arc<Mem>,
    queue_max: u16,
    options: CoreOptions,
    worker: bool,
    seed: u64,
) -> Arc<VirtioPciFunction<Mem>> {
    let device = CountingDevice::new(seed, queue_max);
    Arc::new(
        VirtioPciFunction::with_device(Box::new(device), mem.clone(), options, 4, worker).unwrap(),
    )
}

/// A [`CountingDevice`] function with the default options, its stream from 1.
pub fn counting_function(
    mem: &Arc<Mem>,
    queue_max: u16,
    worker: bool,
) -> Arc<VirtioPciFunction<Mem>> {
    counting_function_with(mem, queue_max, CoreOptions::default(), worker, 1)
}

/// Fresh guest memory, a [`counting_function`] over it (queue maximum 8; `worker` as there)
/// and its driver, initialised with `features` and queue 0 of `queue_size` at [`RING`].
pub fn running(
    features: u64,
    queue_size: u16,
    worker: bool,
) -> (Arc<Mem>, Arc<VirtioPciFunction<Mem>>, PciDriver<Mem>) {
    let mem = memory();
    let function = counting_function(&mem, 8, worker);
    let mut driver = driver_for(&function, &mem);
    driver
        .init(features, &[QueueSetup::new(0, queue_size, RING)])
        .unwrap();
    (mem, function, driver)
}

/// The feature mask of `features` (seeds profile).
pub fn features(features: &[Feature]) -> u64 {
    Profile::Seeds.feature_set(features).unwrap()
}

/// Every migration feature (the device rig's [`default_features`]: VERSION_1, EVENT_IDX,
/// DEVICE_STOP, QUEUE_STATE, SUSPEND), plus RING_PACKED when `packed`.
pub fn migration_features(packed: bool) -> u64 {
    let ring = if packed {
        features(&[Feature::RingPacked])
    } else {
        0
    };
    default_features() | ring
}

/// A driver for `function`.
pub fn driver_for(function: &Arc<VirtioPciFunction<Mem>>, mem: &Arc<Mem>) -> PciDriver<Mem> {
    PciDriver::new(function.clone(), mem.clone(), Profile::Seeds).unwrap()
}

/// Initialises `driver` with `features` and queue 0 of 8 at [`RING`].
pub fn init_queue0(driver: &mut PciDriver<Mem>, features: u64) {
    driver
        .init(features, &[QueueSetup::new(0, 8, RING)])
        .unwrap();
}

/// A [`driver_for`] `function` initialised with `features` and queue 0 of 4 at [`RING`].
pub fn driver_started(
    function: &Arc<VirtioPciFunction<Mem>>,
    mem: &Arc<Mem>,
    features: u64,
) -> PciDriver<Mem> {
    let mut driver = driver_for(function, mem);
    driver
        .init(features, &[QueueSetup::new(0, 4, RING)])
        .unwrap();
    driver
}

/// Which in-band quiesce a test uses: DEVICE_STOPPED (seed 000) or SUSPEND (seed 003).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// [`PciDriver::stop`], left with [`PciDriver::resume`].
    Stop,
    /// [`PciDriver::suspend`], left with [`PciDriver::resume_from_suspend`].
    Suspend,
}

impl Quiet {
    /// Quiesces the device through `driver`; panics if it refuses.
    pub fn enter(self, driver: &mut PciDriver<Mem>) {
        match self {
            Self::Stop => driver.stop().unwrap(),
            Self::Suspend => driver.suspend().unwrap(),
        }
    }

    /// Resumes the device [`Self::enter`] quiesced; panics if it refuses.
    pub fn leave(self, driver: &mut PciDriver<Mem>) {
        match self {
            Self::Stop => driver.resume().unwrap(),
            Self::Suspend => driver.resume_from_suspend().unwrap(),
        }
    }
}

/// A copy of all of guest memory.
pub fn snapshot(mem: &Mem) -> Vec<u8> {
    use vm_memory::{Address, GuestMemoryBackend};
    let mut bytes = vec![0u8; mem.last_addr().unchecked_add(1).raw_value() as usize];
    mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
    bytes
}

/// Copies all of `from` into `to` (guest memory migration).
pub fn copy_memory(from: &Mem, to: &Mem) {
    to.write_slice(&snapshot(from), GuestAddress(0)).unwrap();
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Register accessors on a function, by common-configuration field offset.
pub trait Regs {
    /// Reads `N` bytes at BAR 0 `at`.
    fn rd<const N: usize>(&self, at: u64) -> [u8; N];
    /// Writes `data` at BAR 0 `at`.
    fn wr(&self, at: u64, data: &[u8]);
    /// 8-bit common-config read.
    fn r8(&self, field: usize) -> u8 {
        self.rd::<1>(field as u64)[0]
    }
    /// 16-bit common-config read.
    fn r16(&self, field: usize) -> u16 {
        u16::from_le_bytes(self.rd(field as u64))
    }
    /// 32-bit common-config read.
    fn r32(&self, field: usize) -> u32 {
        u32::from_le_bytes(self.rd(field as u64))
    }
    /// 64-bit common-config read.
    fn r64(&self, field: usize) -> u64 {
        u64::from_le_bytes(self.rd(field as u64))
    }
    /// 8-bit common-config write.
    fn w8(&self, field: usize, v: u8) {
        self.wr(field as u64, &[v]);
    }
    /// 16-bit common-config write.
    fn w16(&self, field: usize, v: u16) {
        self.wr(field as u64, &v.to_le_bytes());
    }
    /// 32-bit common-config write.
    fn w32(&self, field: usize, v: u32) {
        self.wr(field as u64, &v.to_le_bytes());
    }
    /// 64-bit common-config write.
    fn w64(&self, field: usize, v: u64) {
        self.wr(field as u64, &v.to_le_bytes());
    }
    /// Device status.
    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.r8(offset::DEVICE_STATUS))
    }
    /// Writes the device status and returns what it reads back as.
    fn write_status(&self, status: DeviceStatus) -> DeviceStatus {
        self.w8(offset::DEVICE_STATUS, status.bits());
        self.status()
    }
    /// ACKNOWLEDGE, DRIVER, `wanted` written through both driver_feature windows, FEATURES_OK,
    /// which the device must accept.
    fn to_features_ok(&self, wanted: u64) {
        let ack_driver = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER;
        self.w8(offset::DEVICE_STATUS, DeviceStatus::ACKNOWLEDGE.bits());
        self.w8(offset::DEVICE_STATUS, ack_driver.bits());
        self.w32(offset::DRIVER_FEATURE_SELECT, 0);
        self.w32(offset::DRIVER_FEATURE, wanted as u32);
        self.w32(offset::DRIVER_FEATURE_SELECT, 1);
        self.w32(offset::DRIVER_FEATURE, (wanted >> 32) as u32);
        let features_ok = ack_driver | DeviceStatus::FEATURES_OK;
        self.w8(offset::DEVICE_STATUS, features_ok.bits());
        assert!(self.status().contains(DeviceStatus::FEATURES_OK));
    }
}

impl Regs for VirtioPciFunction<Mem> {
    fn rd<const N: usize>(&self, at: u64) -> [u8; N] {
        let mut b = [0u8; N];
        self.bar_read(at, &mut b);
        b
    }

    fn wr(&self, at: u64, data: &[u8]) {
        self.bar_write(at, data);
    }
}

/// One register access seen by a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// BAR read at offset, bytes returned.
    Read(u64, Vec<u8>),
    /// BAR write at offset, bytes written.
    Write(u64, Vec<u8>),
}

/// A transport that forwards to another and records every BAR access.
pub struct Recorder {
    inner: Arc<dyn PciTransport>,
    log: Mutex<Vec<Access>>,
}

impl Recorder {
    /// Records the accesses to `inner`.
    pub fn new(inner: Arc<dyn PciTransport>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            log: Mutex::new(Vec::new()),
        })
    }

    /// Takes the log so far.
    pub fn take(&self) -> Vec<Access> {
        std::mem::take(&mut self.log.lock().unwrap())
    }

    /// The status accesses (offset 20) in a log, as (is_write, value).
    pub fn status_accesses(log: &[Access]) -> Vec<(bool, u8)> {
        log.iter()
            .filter_map(|a| match a {
                Access::Read(o, d) if *o == offset::DEVICE_STATUS as u64 => Some((false, d[0])),
                Access::Write(o, d) if *o == offset::DEVICE_STATUS as u64 => Some((true, d[0])),
                _ => None,
            })
            .collect()
    }
}

impl PciTransport for Recorder {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.inner.read(offset, data);
        self.log
            .lock()
            .unwrap()
            .push(Access::Read(offset, data.to_vec()));
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(Access::Write(offset, data.to_vec()));
        self.inner.write(offset, data);
    }

    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.inner.config_read(offset, data);
    }
}

/// A function (direct kicks) around a [`SlowDevice`] backend: one queue of 8, it writes 0x5a
/// into each request it takes and completes one per entry of the core after that; `stuck`, it
/// never completes anything (a device that cannot quiesce).
pub fn slow_function(mem: &Arc<Mem>, stuck: bool) -> Arc<VirtioPciFunction<Mem>> {
    let device = SlowDevice::backend(Fill::Byte(0x5a), 8).one_per_poll();
    let device = if stuck { device } else { device.released() };
    Arc::new(
        VirtioPciFunction::with_device(
            Box::new(device),
            mem.clone(),
            CoreOptions::default(),
            4,
            false,
        )
        .unwrap(),
    )
}

/// Adds a chain, publishes it and kicks the queue if the device asked for it (notification
/// suppression honoured: with EVENT_IDX the device re-arms `avail_event` after processing).
pub fn push(
    driver: &mut PciDriver<Mem>,
    queue: u16,
    buffers: &[virtio_lm_queue::BufferSpec],
) -> u16 {
    driver.submit(queue, buffers).unwrap()
}
