//! Helpers shared by the integration tests: guest memory, an rng function, feature sets, a
//! recording transport, guest-memory snapshots and bounded waits.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_lm_device::{CoreOptions, CountingEntropy, Rng};
use virtio_lm_pci::{PciDriver, PciTransport, VirtioPciFunction};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory type of the tests.
pub type Mem = GuestMemoryMmap<()>;

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

/// Fresh zeroed guest memory of `size` bytes.
pub fn memory_of(size: usize) -> Arc<Mem> {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap())
}

/// Core options offering the default features plus `extra`.
pub fn options_with(extra: &[Feature]) -> CoreOptions {
    let mut options = CoreOptions::default();
    options.features.extend_from_slice(extra);
    options
}

/// An rng function (queue maximum `queue_max`, 4 MSI-X vectors) over `mem`, entropy counting
/// up from `seed`.
pub fn rng_function_with(
    mem: &Arc<Mem>,
    queue_max: u16,
    options: CoreOptions,
    worker: bool,
    seed: u64,
) -> Arc<VirtioPciFunction<Mem>> {
    let rng = Rng::new(Box::new(CountingEntropy::new(seed)), queue_max);
    Arc::new(
        VirtioPciFunction::with_device(Box::new(rng), mem.clone(), options, 4, worker).unwrap(),
    )
}

/// An rng function with the default options.
pub fn rng_function(mem: &Arc<Mem>, queue_max: u16, worker: bool) -> Arc<VirtioPciFunction<Mem>> {
    rng_function_with(mem, queue_max, CoreOptions::default(), worker, 1)
}

/// The feature mask of `features` (seeds profile).
pub fn features(features: &[Feature]) -> u64 {
    Profile::Seeds.feature_set(features).unwrap()
}

/// Every migration feature, plus RING_PACKED when `packed`.
pub fn migration_features(packed: bool) -> u64 {
    let mut list = vec![
        Feature::Version1,
        Feature::EventIdx,
        Feature::DeviceStop,
        Feature::QueueState,
        Feature::Suspend,
    ];
    if packed {
        list.push(Feature::RingPacked);
    }
    features(&list)
}

/// A driver for `function`.
pub fn driver_for(function: &Arc<VirtioPciFunction<Mem>>, mem: &Arc<Mem>) -> PciDriver<Mem> {
    PciDriver::new(function.clone(), mem.clone(), Profile::Seeds).unwrap()
}

/// A copy of all of guest memory.
pub fn snapshot(mem: &Mem) -> Vec<u8> {
    use vm_memory::{Address, GuestMemoryBackend};
    let mut bytes = vec![0u8; mem.last_addr().unchecked_add(1).raw_value() as usize];
    mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
    bytes
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

/// A device with an asynchronous backend: it takes chains when notified and completes them
/// later, one per [`VirtioDevice::poll`], writing `fill` into every writable segment. While any
/// is pending it is not quiet. With `stuck` it never completes anything (a device that cannot
/// quiesce).
pub struct SlowDevice {
    pending: std::collections::VecDeque<(u16, u32)>,
    fill: u8,
    stuck: bool,
}

impl SlowDevice {
    /// A slow device writing `fill`.
    pub fn new(fill: u8, stuck: bool) -> Self {
        Self {
            pending: Default::default(),
            fill,
            stuck,
        }
    }
}

use virtio_lm_device::{DeviceError, QueueAccess, Quiesce, QuiesceMode, VirtioDevice};
use vm_memory::GuestMemory;

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for SlowDevice {
    fn device_type(&self) -> u32 {
        virtio_lm_device::VIRTIO_ID_RNG
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![8]
    }

    fn read_config(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = queue.pop()? {
            for segment in chain.writable() {
                let bytes = vec![self.fill; segment.len as usize];
                queue
                    .mem()
                    .write_slice(&bytes, segment.addr)
                    .map_err(|e| DeviceError::Backend(e.to_string()))?;
            }
            self.pending.push_back((chain.id(), chain.writable_len()));
        }
        Ok(())
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, M>]) -> Result<(), DeviceError> {
        if self.stuck {
            return Ok(());
        }
        if let (Some(queue), Some((id, len))) = (queues.first_mut(), self.pending.pop_front()) {
            queue.add_used(id, len)?;
        }
        Ok(())
    }

    fn quiesce(&mut self, _mode: QuiesceMode) -> Quiesce {
        if self.pending.is_empty() {
            Quiesce::Done
        } else {
            Quiesce::Pending
        }
    }

    fn reset(&mut self) {
        self.pending.clear();
    }
}

/// A function around a [`SlowDevice`] (direct kicks).
pub fn slow_function(mem: &Arc<Mem>, stuck: bool) -> Arc<VirtioPciFunction<Mem>> {
    Arc::new(
        VirtioPciFunction::with_device(
            Box::new(SlowDevice::new(0x5a, stuck)),
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
