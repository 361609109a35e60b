//! A core-level driver for the blk tests: it programs a `DeviceCore` the way a transport would,
//! owns the ring drivers, lays out virtio-blk requests in guest memory and waits for their
//! completion. Built from the device core's shared rig pieces (`virtio_lm_device::testing`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::{request_type, SECTOR_SIZE};
use virtio_lm_devices::{BackendStats, Blk, BlkOptions};
use virtio_lm_queue::{BufferSpec, UsedBuffer};
use virtio_lm_spec::Feature;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub use virtio_lm_device::testing::DirtyMem as Mem;

pub const QUEUE_BASE: u64 = 0x1000;
pub const DATA: u64 = 0x10_0000;
pub const MEM_SIZE: usize = 0x80_0000;
/// Guest memory per request slot: header, OUT payload, IN data, status.
pub const SLOT: u64 = 0x6000;
pub const SLOTS: u64 = (MEM_SIZE as u64 - DATA) / SLOT;
const PAYLOAD_AT: u64 = 0x1000;
const IN_AT: u64 = 0x3000;
const STATUS_AT: u64 = 0x5800;
/// Largest OUT payload or IN data of one slot.
pub const SLOT_DATA_MAX: u32 = 0x2000;

use virtio_lm_device::testing::{self, CoreDriver};
#[allow(unused_imports)]
pub use virtio_lm_device::testing::{bit, TestCore, RUNNING, SETUP, TIMEOUT};

pub fn memory() -> Arc<Mem> {
    Arc::new(Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap())
}

/// A temporary image file, removed on drop.
pub struct TempImage {
    pub path: PathBuf,
}

impl TempImage {
    /// `sectors` sectors; sector `s` is filled with the byte `s as u8`.
    pub fn new(sectors: u64) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("virtio-lm-blk-test-{}-{n}.img", std::process::id()));
        let mut bytes = vec![0u8; (sectors * SECTOR_SIZE) as usize];
        for (s, chunk) in bytes.chunks_mut(SECTOR_SIZE as usize).enumerate() {
            chunk.fill(s as u8);
        }
        std::fs::write(&path, bytes).unwrap();
        Self { path }
    }

    pub fn options(&self) -> BlkOptions {
        BlkOptions::new(&self.path)
    }

    pub fn read(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    pub fn sector(&self, sector: u64, count: u64) -> Vec<u8> {
        let all = self.read();
        all[(sector * SECTOR_SIZE) as usize..((sector + count) * SECTOR_SIZE) as usize].to_vec()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The bytes a sector holds in a fresh [`TempImage`].
pub fn initial_sector(s: u64) -> Vec<u8> {
    vec![s as u8; SECTOR_SIZE as usize]
}

pub use virtio_lm_queue::RingDriver;

/// How a request is laid out in descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Header, payload, data and status each in their own descriptor.
    Separate,
    /// Header and payload in one readable descriptor, data and status in one writable one.
    Merged,
}

/// A virtio-blk request as the test driver builds it.
#[derive(Clone, Debug)]
pub struct Req {
    pub kind: u32,
    pub sector: u64,
    /// Readable bytes after the header (OUT data, discard segments).
    pub payload: Vec<u8>,
    /// Writable bytes before the status byte (IN data, GET_ID).
    pub in_len: u32,
    /// Readable header bytes offered (16 normally).
    pub header_len: u32,
    /// Whether a status byte is offered.
    pub status: bool,
    pub layout: Layout,
}

impl Req {
    pub fn new(kind: u32, sector: u64) -> Self {
        Self {
            kind,
            sector,
            payload: Vec::new(),
            in_len: 0,
            header_len: 16,
            status: true,
            layout: Layout::Separate,
        }
    }

    pub fn read(sector: u64, sectors: u32) -> Self {
        Self {
            in_len: sectors * SECTOR_SIZE as u32,
            ..Self::new(request_type::IN, sector)
        }
    }

    pub fn write(sector: u64, data: Vec<u8>) -> Self {
        Self {
            payload: data,
            ..Self::new(request_type::OUT, sector)
        }
    }

    pub fn flush() -> Self {
        Self::new(request_type::FLUSH, 0)
    }

    /// A discard (`zeroes` false) or write-zeroes request with segments
    /// `(sector, num_sectors, flags)`.
    pub fn segments(zeroes: bool, segs: &[(u64, u32, u32)]) -> Self {
        let kind = if zeroes {
            request_type::WRITE_ZEROES
        } else {
            request_type::DISCARD
        };
        let mut payload = Vec::new();
        for &(sector, n, flags) in segs {
            payload.extend_from_slice(&sector.to_le_bytes());
            payload.extend_from_slice(&n.to_le_bytes());
            payload.extend_from_slice(&flags.to_le_bytes());
        }
        Self {
            payload,
            ..Self::new(kind, 0)
        }
    }

    pub fn merged(mut self) -> Self {
        self.layout = Layout::Merged;
        self
    }
}

/// A pattern for OUT data: depends on a seed and the byte position.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

/// Drives one `DeviceCore` around a `Blk`: the device core's `CoreDriver` (memory, interrupts,
/// core, rings; reached through `Deref`) plus the blk backend's handles.
pub struct Rig {
    pub driver: CoreDriver<Mem>,
    pub stats: Arc<BackendStats>,
    pub wake: Arc<EventFd>,
    pub features: u64,
}

impl std::ops::Deref for Rig {
    type Target = CoreDriver<Mem>;

    fn deref(&self) -> &CoreDriver<Mem> {
        &self.driver
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut CoreDriver<Mem> {
        &mut self.driver
    }
}

impl Rig {
    /// A core around a new `Blk` with `options`, quiescing by `mode`, on new memory.
    pub fn new(options: BlkOptions, mode: QuiesceMode) -> Self {
        Self::with_mem(options, mode, memory())
    }

    /// The same on existing guest memory (a migration destination).
    pub fn with_mem(options: BlkOptions, mode: QuiesceMode, mem: Arc<Mem>) -> Self {
        Self::with_blk(Blk::open(options).unwrap(), mode, mem)
    }

    /// A fresh image of `sectors` and a draining rig over it, `tune` adjusting the image's
    /// default options; the image lives as long as the caller keeps it.
    pub fn on_image(
        sectors: u64,
        tune: impl FnOnce(BlkOptions) -> BlkOptions,
    ) -> (TempImage, Self) {
        let image = TempImage::new(sectors);
        let r = Self::new(tune(image.options()), QuiesceMode::Drain);
        (image, r)
    }

    /// A core around `blk`.
    pub fn with_blk(blk: Blk, mode: QuiesceMode, mem: Arc<Mem>) -> Self {
        let stats = blk.stats();
        let wake = blk.completion_fd();
        let (core, irq) = testing::core_with_mode(Box::new(blk), mem.clone(), mode);
        Self {
            driver: CoreDriver::around(core, mem, irq),
            stats,
            wake,
            features: 0,
        }
    }

    /// Every feature the device offers, minus RING_PACKED unless `packed`.
    pub fn all_features(&self, packed: bool) -> u64 {
        let offered = self.core.device_features();
        if packed {
            offered
        } else {
            offered & !bit(Feature::RingPacked)
        }
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) {
        self.kind = testing::negotiate(&mut self.core, features);
        self.features = features;
    }

    /// Lays out and enables every queue.
    pub fn setup_queues(&mut self) {
        let ring = testing::ring_features(&self.core, self.features);
        let mem = self.mem.clone();
        let d = &mut self.driver;
        d.rings = testing::setup_queues(&mut d.core, &*mem, d.kind, ring, QUEUE_BASE, 0x8000);
    }

    /// Programs the queue registers for the rings the driver already has.
    pub fn reprogram_queues(&mut self) {
        let d = &mut self.driver;
        testing::reprogram_queues(&mut d.core, &d.rings);
    }

    /// The whole initialisation with `features`, ending with DRIVER_OK.
    pub fn start(&mut self, features: u64) {
        self.negotiate(features);
        self.setup_queues();
        self.core.write_status(RUNNING);
        assert_eq!(self.core.status(), RUNNING, "device running");
    }

    /// Starts with every offered feature (split ring unless `packed`).
    pub fn start_all(&mut self, packed: bool) -> u64 {
        let f = self.all_features(packed);
        self.start(f);
        f
    }

    pub fn slot_base(slot: u64) -> u64 {
        assert!(slot < SLOTS, "slot {slot} out of range");
        DATA + slot * SLOT
    }

    /// Lays `req` out in slot `slot`'s memory and adds it to queue `queue` (not published).
    pub fn add(&mut self, queue: u16, slot: u64, req: &Req) -> u16 {
        let mem = self.mem.clone();
        let bufs = lay_out(&mem, slot, req);
        self.ring(queue).add_chain(&*mem, &bufs).unwrap()
    }

    fn ring(&mut self, queue: u16) -> &mut RingDriver {
        self.rings[usize::from(queue)].as_mut().unwrap()
    }

    /// Adds, publishes and kicks one request; returns its id.
    pub fn submit(&mut self, queue: u16, slot: u64, req: &Req) -> u16 {
        let id = self.add(queue, slot, req);
        self.publish(queue);
        self.core.kick(queue);
        id
    }

    pub fn publish(&mut self, queue: u16) {
        let mem = self.mem.clone();
        self.ring(queue).publish(&*mem).unwrap();
    }

    /// The status byte of slot `slot` (0xee: not written).
    pub fn status_of(&self, slot: u64, _req: &Req) -> u8 {
        slot_status(&self.mem, slot)
    }

    /// The IN data area of slot `slot` (for the merged layout too: it ends at the status).
    pub fn in_data(&self, slot: u64, req: &Req) -> Vec<u8> {
        slot_in_data(&self.mem, slot, req)
    }

    pub fn collect(&mut self, queue: u16) -> Vec<UsedBuffer> {
        let mem = self.mem.clone();
        self.ring(queue).collect_used(&*mem).unwrap()
    }

    /// Processes (as the worker would on completion eventfds) until `n` buffers are used on
    /// `queue`; fails after [`TIMEOUT`].
    pub fn wait_used(&mut self, queue: u16, n: usize) -> Vec<UsedBuffer> {
        let deadline = Instant::now() + TIMEOUT;
        let mut used = Vec::new();
        loop {
            used.extend(self.collect(queue));
            if used.len() >= n {
                return used;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {} of {n} used on queue {queue}; status {:#x}, error {:?}",
                used.len(),
                self.core.status(),
                self.core.last_error()
            );
            let _ = self.wake.read();
            std::thread::sleep(Duration::from_micros(100));
            self.core.process_pending();
        }
    }

    /// Submits one request on queue 0 and waits for it; returns (status, used length).
    pub fn run(&mut self, slot: u64, req: &Req) -> (u8, u32) {
        let id = self.submit(0, slot, req);
        let used = self.wait_used(0, 1);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].id, id);
        (self.status_of(slot, req), used[0].len)
    }

    /// Builds a destination on the same memory and image: a fresh `Blk` with `options`, the
    /// driver's rings carried over, the same features, the queue states installed, DRIVER_OK.
    pub fn migrate(&mut self, options: BlkOptions, mode: QuiesceMode) -> Rig {
        let states = self.core.queue_states();
        let mut dest = Rig::with_mem(options, mode, self.mem.clone());
        dest.rings = std::mem::take(&mut self.rings);
        dest.negotiate(self.features);
        dest.reprogram_queues();
        dest.core.resume_with(states);
        dest
    }

    /// Whether DEVICE_NEEDS_RESET is set.
    pub fn needs_reset(&mut self) -> bool {
        self.core.broken()
    }

    /// A checksum of all guest memory, to prove the device wrote nothing.
    pub fn memory_checksum(&self) -> u64 {
        testing::checksum_of(&*self.mem, 0, MEM_SIZE)
    }

    /// Whether the dirty bitmap has the page of `addr` set.
    pub fn dirty(&self, addr: u64) -> bool {
        testing::is_dirty(&self.mem, addr)
    }

    /// Clears the dirty bitmap.
    pub fn clear_dirty(&self) {
        testing::clear_dirty(&self.mem)
    }
}

/// Writes `req` into slot `slot`'s memory (poisoning its writable area with 0xee) and returns
/// the buffers of its chain.
pub fn lay_out(mem: &Mem, slot: u64, req: &Req) -> Vec<BufferSpec> {
    assert!(req.payload.len() as u32 <= SLOT_DATA_MAX && req.in_len <= SLOT_DATA_MAX);
    let base = Rig::slot_base(slot);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&req.kind.to_le_bytes());
    header[8..16].copy_from_slice(&req.sector.to_le_bytes());
    mem.write_slice(&vec![0xee; req.in_len as usize], GuestAddress(base + IN_AT))
        .unwrap();
    mem.write_obj(0xeeu8, GuestAddress(base + STATUS_AT))
        .unwrap();
    let mut bufs = Vec::new();
    match req.layout {
        Layout::Separate => {
            mem.write_slice(&header, GuestAddress(base)).unwrap();
            mem.write_slice(&req.payload, GuestAddress(base + PAYLOAD_AT))
                .unwrap();
            if req.header_len > 0 {
                bufs.push(BufferSpec::readable(base, req.header_len));
            }
            if !req.payload.is_empty() {
                bufs.push(BufferSpec::readable(
                    base + PAYLOAD_AT,
                    req.payload.len() as u32,
                ));
            }
            if req.in_len > 0 {
                bufs.push(BufferSpec::writable(base + IN_AT, req.in_len));
            }
            if req.status {
                bufs.push(BufferSpec::writable(base + STATUS_AT, 1));
            }
        }
        Layout::Merged => {
            // Header and payload contiguous, ending where the payload ends; data and status
            // contiguous, ending at the status byte.
            let start = base + PAYLOAD_AT - u64::from(req.header_len);
            mem.write_slice(&header[..req.header_len as usize], GuestAddress(start))
                .unwrap();
            mem.write_slice(&req.payload, GuestAddress(base + PAYLOAD_AT))
                .unwrap();
            let readable = req.header_len + req.payload.len() as u32;
            if readable > 0 {
                bufs.push(BufferSpec::readable(start, readable));
            }
            let writable = req.in_len + u32::from(req.status);
            if writable > 0 {
                let at = base + STATUS_AT + u64::from(req.status) - u64::from(writable);
                bufs.push(BufferSpec::writable(at, writable));
            }
        }
    }
    bufs
}

/// The status byte of slot `slot` (0xee: not written).
pub fn slot_status(mem: &Mem, slot: u64) -> u8 {
    mem.read_obj(GuestAddress(Rig::slot_base(slot) + STATUS_AT))
        .unwrap()
}

/// The IN data area of slot `slot` for `req`'s layout.
pub fn slot_in_data(mem: &Mem, slot: u64, req: &Req) -> Vec<u8> {
    let base = Rig::slot_base(slot);
    let at = match req.layout {
        Layout::Separate => base + IN_AT,
        Layout::Merged => base + STATUS_AT - u64::from(req.in_len),
    };
    let mut buf = vec![0u8; req.in_len as usize];
    mem.read_slice(&mut buf, GuestAddress(at)).unwrap();
    buf
}

/// Asserts that `used` holds the ids `want`, in any order (used buffers may complete out of
/// order).
pub fn assert_same_ids(used: impl IntoIterator<Item = u16>, want: &[u16]) {
    let mut used: Vec<u16> = used.into_iter().collect();
    used.sort_unstable();
    let mut want = want.to_vec();
    want.sort_unstable();
    assert_eq!(used, want);
}
