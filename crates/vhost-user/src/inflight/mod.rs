//! In-flight I/O tracking (INFLIGHT_SHMFD, docs/spec-decisions.md §24): a shared region, one
//! queue region per virtqueue in the layouts the vhost-user specification documents ("Inflight
//! I/O tracking"), that the backend updates as it takes and completes requests and that the
//! frontend keeps across a backend crash and hands back (SET_INFLIGHT_FD) to the restarted
//! backend.
//!
//! Every update is ordered so that a crash between any two stores leaves a region from which
//! [`QueueRegion::start`] rebuilds the exact ring state: what was published to the driver is
//! never completed again, and every request taken and not published is resubmitted, in the
//! order it was taken. Split rings follow the split procedure (a counter per head, the last
//! used batch as a list, the used index in guest memory decides); packed rings the packed one
//! (descriptor copies in a free list, `old_*` fields as a commit record, the used descriptor's
//! flags decide). The region, not the vring base, decides where a ring stands once it was
//! written: after a crash the frontend has no base to give (QEMU sends its stale one).
//!
//! The region is untrusted like everything from the frontend: every index read from it is
//! bounds-checked and a recovered ring state is validated by the queue before it runs.

mod packed;
mod split;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_lm_device::AccessObserver;
use virtio_lm_queue::{DescriptorChain, DeviceQueue, QueueConfig, QueueState, RingKind, Virtqueue};
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestMemory, VolatileMemory};

/// Bytes of one descriptor state entry (packed `DescStatePacked`; split's 16-byte
/// `DescStateSplit` uses the first half of each slot's stride only in the sense that both
/// layouts are sized for the larger one, so one size fits whichever format is negotiated).
const PACKED_ENTRY: usize = 32;
/// Header bytes of a queue region (packed `QueueRegionPacked`; split's is 16).
const PACKED_HEADER: usize = 32;
/// Queue regions are laid out back to back, each aligned to 64 bytes.
const QUEUE_ALIGN: usize = 64;
/// The region version this backend writes; 0 means never written.
const VERSION: u16 = 1;
/// Largest ring the region accepts (the virtio maximum).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Most queue regions one area holds.
pub const MAX_QUEUES: u16 = 64;

/// Why an in-flight area or queue region was refused.
#[derive(Debug, thiserror::Error)]
pub enum InflightError {
    /// Queue count or size out of range, or a size the file does not hold.
    #[error("in-flight area for {num_queues} queues of {queue_size}: {reason}")]
    BadArea {
        /// Queues.
        num_queues: u16,
        /// Queue size.
        queue_size: u16,
        /// What is wrong.
        reason: String,
    },
    /// Creating or mapping the shared memory failed.
    #[error("in-flight area: {0}")]
    Io(String),
    /// The region's contents cannot describe a ring state (corrupt or hostile).
    #[error("vring {queue}: in-flight region: {reason}")]
    Corrupt {
        /// Queue index.
        queue: u16,
        /// What is wrong.
        reason: String,
    },
    /// The test hook stopped the backend here (never outside tests).
    #[error("stopped by the crash hook")]
    Crashed,
}

/// Bytes one queue region takes for `queue_size`: the packed layout (the larger) rounded up
/// to 64, whichever format the rings use.
pub fn queue_region_size(queue_size: u16) -> usize {
    (PACKED_HEADER + PACKED_ENTRY * usize::from(queue_size)).div_ceil(QUEUE_ALIGN) * QUEUE_ALIGN
}

/// Stops the backend after a given number of region or ring stores: the test hook of the crash
/// tests. Once it fired, every later store is dropped, as if the process had died there.
#[derive(Debug)]
pub struct CrashHook {
    remaining: AtomicU64,
    fired: AtomicBool,
}

impl Default for CrashHook {
    fn default() -> Self {
        Self {
            remaining: AtomicU64::new(u64::MAX),
            fired: AtomicBool::new(false),
        }
    }
}

impl CrashHook {
    /// A hook that lets `stores` stores through, then fires.
    pub fn after(stores: u64) -> Self {
        Self {
            remaining: AtomicU64::new(stores),
            fired: AtomicBool::new(false),
        }
    }

    /// Whether it fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// One store is about to happen: `Err` if the backend is "dead" by now.
    pub fn step(&self) -> Result<(), InflightError> {
        if self.fired() {
            return Err(InflightError::Crashed);
        }
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            self.fired.store(true, Ordering::SeqCst);
            return Err(InflightError::Crashed);
        }
        if left != u64::MAX {
            self.remaining.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// The shared in-flight area of one connection (GET_INFLIGHT_FD / SET_INFLIGHT_FD).
#[derive(Debug)]
pub struct InflightArea {
    map: MmapRegion<()>,
    file: File,
    num_queues: u16,
    queue_size: u16,
    hook: CrashHook,
}

impl InflightArea {
    fn check(num_queues: u16, queue_size: u16) -> Result<usize, InflightError> {
        if num_queues == 0
            || num_queues > MAX_QUEUES
            || queue_size == 0
            || queue_size > MAX_QUEUE_SIZE
        {
            return Err(InflightError::BadArea {
                num_queues,
                queue_size,
                reason: format!("not in 1..={MAX_QUEUES} queues of 1..={MAX_QUEUE_SIZE}"),
            });
        }
        Ok(queue_region_size(queue_size) * usize::from(num_queues))
    }

    /// A new zeroed area in a sealed memfd (GET_INFLIGHT_FD): the frontend keeps the file and
    /// hands it back after a reconnect.
    pub fn create(num_queues: u16, queue_size: u16) -> Result<Self, InflightError> {
        let size = Self::check(num_queues, queue_size)?;
        let io =
            |what: &str| InflightError::Io(format!("{what}: {}", std::io::Error::last_os_error()));
        // SAFETY: a NUL-terminated name and valid flags; the returned fd is checked below.
        let fd = unsafe {
            libc::memfd_create(
                c"virtio-lm-inflight".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io("memfd_create"));
        }
        // SAFETY: `fd` is a fresh descriptor this function owns from here on.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64)
            .map_err(|e| InflightError::Io(e.to_string()))?;
        // The frontend maps it as it is: it must not grow or shrink under either side.
        // SAFETY: fcntl on a descriptor we own with an integer argument.
        let sealed = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            )
        };
        if sealed < 0 {
            return Err(io("F_ADD_SEALS"));
        }
        Self::map(file, size as u64, 0, num_queues, queue_size)
    }

    /// Maps the area the frontend hands back (SET_INFLIGHT_FD), after checking that its size is
    /// the one this backend gives out for these queues and that the file holds it.
    pub fn map(
        file: File,
        mmap_size: u64,
        mmap_offset: u64,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<Self, InflightError> {
        let size = Self::check(num_queues, queue_size)?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let fits = mmap_offset
            .checked_add(mmap_size)
            .is_some_and(|end| end <= file_len);
        if mmap_size != size as u64 || !fits || !mmap_offset.is_multiple_of(4096) {
            return Err(InflightError::BadArea {
                num_queues,
                queue_size,
                reason: format!(
                    "{mmap_size} bytes at {mmap_offset} (file {file_len}), expected {size}"
                ),
            });
        }
        let dup = file
            .try_clone()
            .map_err(|e| InflightError::Io(e.to_string()))?;
        let map = MmapRegion::build(
            Some(FileOffset::new(dup, mmap_offset)),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| InflightError::Io(e.to_string()))?;
        Ok(Self {
            map,
            file,
            num_queues,
            queue_size,
            hook: CrashHook::default(),
        })
    }

    /// The file, for the GET_INFLIGHT_FD reply.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes mapped.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Queue regions.
    pub fn num_queues(&self) -> u16 {
        self.num_queues
    }

    /// The queue size the area was made for.
    pub fn queue_size(&self) -> u16 {
        self.queue_size
    }

    /// Installs the test hook (crash tests only).
    pub fn set_crash_hook(&mut self, hook: CrashHook) {
        self.hook = hook;
    }

    /// The test hook.
    pub fn hook(&self) -> &CrashHook {
        &self.hook
    }

    fn load<T: vm_memory::ByteValued + Default>(&self, offset: usize) -> T {
        // Offsets come from our own layout arithmetic inside the mapped size; a miss reads 0.
        self.map
            .get_ref::<T>(offset)
            .map(|r| r.load())
            .unwrap_or_default()
    }

    fn store<T: vm_memory::ByteValued>(
        &self,
        offset: usize,
        value: T,
    ) -> Result<(), InflightError> {
        self.hook.step()?;
        if let Ok(r) = self.map.get_ref::<T>(offset) {
            r.store(value);
        }
        // Each store is a point the region must be consistent at, so the compiler keeps them
        // in program order. A killed process's completed stores still reach the shared pages
        // (the CPU drains them), and the restarted backend reads the region long after, so no
        // CPU fence is needed; the ring's publish is a release store after them.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        Ok(())
    }
}

/// Field access to one queue region inside the area.
#[derive(Clone, Debug)]
struct Fields {
    area: Arc<InflightArea>,
    base: usize,
}

impl Fields {
    fn u8(&self, at: usize) -> u8 {
        self.area.load(self.base + at)
    }
    fn u16(&self, at: usize) -> u16 {
        self.area.load(self.base + at)
    }
    fn u32(&self, at: usize) -> u32 {
        self.area.load(self.base + at)
    }
    fn u64(&self, at: usize) -> u64 {
        self.area.load(self.base + at)
    }
    fn set_u8(&self, at: usize, v: u8) -> Result<(), InflightError> {
        self.area.store(self.base + at, v)
    }
    fn set_u16(&self, at: usize, v: u16) -> Result<(), InflightError> {
        self.area.store(self.base + at, v)
    }
    fn set_u32(&self, at: usize, v: u32) -> Result<(), InflightError> {
        self.area.store(self.base + at, v)
    }
    fn set_u64(&self, at: usize, v: u64) -> Result<(), InflightError> {
        self.area.store(self.base + at, v)
    }
    /// Zeroes the whole queue region (header and entries).
    fn clear(&self, entries: u16) -> Result<(), InflightError> {
        let end = PACKED_HEADER + PACKED_ENTRY * usize::from(entries);
        (0..end).step_by(8).try_for_each(|at| self.set_u64(at, 0))
    }
}

/// Header fields common to both layouts.
const VERSION_AT: usize = 8;
const DESC_NUM_AT: usize = 10;

/// The in-flight record of one running ring.
#[derive(Debug)]
pub struct QueueRegion {
    fields: Fields,
    index: u16,
    kind: RingKind,
    size: u16,
    /// The next counter value: orders requests by when they were taken.
    counter: u64,
    /// Buffers returned used since the last publish.
    batch: Vec<u16>,
    /// Packed: head entry of each buffer id in flight (`u16::MAX` = none).
    heads: Vec<u16>,
    /// The first failure to record (the ring is broken by the engine when it sees it).
    error: Option<String>,
}

impl QueueRegion {
    /// Starts ring `index` of `config` with `area`'s region for it: a region never written is
    /// initialised from `base` (the frontend's vring base) and `base` is returned; a written one
    /// decides the ring state itself (recovery after a reconnect), with its in-flight requests
    /// oldest first in the returned state.
    pub fn start<M: GuestMemory + ?Sized>(
        area: &Arc<InflightArea>,
        index: u16,
        config: &QueueConfig,
        base: QueueState,
        mem: &M,
    ) -> Result<(Self, QueueState), InflightError> {
        let corrupt = |reason: String| InflightError::Corrupt {
            queue: index,
            reason,
        };
        if index >= area.num_queues || config.size > area.queue_size {
            return Err(corrupt(format!(
                "ring of {} does not fit an area of {} queues of {}",
                config.size, area.num_queues, area.queue_size
            )));
        }
        let fields = Fields {
            area: area.clone(),
            base: usize::from(index) * queue_region_size(area.queue_size),
        };
        let mut region = Self {
            fields,
            index,
            kind: config.kind,
            size: config.size,
            counter: 1,
            batch: Vec::new(),
            heads: vec![u16::MAX; usize::from(config.size)],
            error: None,
        };
        let version = region.fields.u16(VERSION_AT);
        if version == 0 {
            match config.kind {
                RingKind::Split => split::init(&region, config, mem)?,
                RingKind::Packed => packed::init(&region, &base)?,
            }
            return Ok((region, base));
        }
        if version != VERSION || region.fields.u16(DESC_NUM_AT) != config.size {
            return Err(corrupt(format!(
                "version {version} with {} entries for a ring of {}",
                region.fields.u16(DESC_NUM_AT),
                config.size
            )));
        }
        let state = match config.kind {
            RingKind::Split => split::recover(&mut region, config, mem),
            RingKind::Packed => packed::recover(&mut region, config, mem),
        }
        .map_err(corrupt)?;
        Ok((region, state))
    }

    /// The first recording failure since the ring started.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Records `chain`, which `queue` has just taken, as in flight.
    pub fn record_taken<M: GuestMemory + ?Sized>(
        &mut self,
        queue: &Virtqueue,
        mem: &M,
        chain: &DescriptorChain,
    ) -> Result<(), InflightError> {
        match (self.kind, queue) {
            (RingKind::Split, Virtqueue::Split(_)) => split::taken(self, chain.id()),
            (RingKind::Packed, Virtqueue::Packed(q)) => packed::taken(self, q, mem, chain),
            _ => Err(InflightError::Corrupt {
                queue: self.index,
                reason: "ring format changed under the region".into(),
            }),
        }
    }

    /// Publishes `queue`'s used buffers with the region updates around it: the batch is
    /// recorded before the driver can see it and cleared after, so a crash anywhere is either
    /// before the publish (the batch is resubmitted) or after it (the batch is dropped).
    pub fn publish<M: GuestMemory + ?Sized>(
        &mut self,
        queue: &mut Virtqueue,
        mem: &M,
    ) -> Result<(), String> {
        let batch = std::mem::take(&mut self.batch);
        let result = match self.kind {
            RingKind::Split => split::publish(self, queue, mem, &batch),
            RingKind::Packed => packed::publish(self, queue, mem, &batch),
        };
        match result {
            Ok(()) => Ok(()),
            Err(Published::Queue(e)) => Err(e),
            Err(Published::Region(e)) => Err(e.to_string()),
        }
    }

    fn next_counter(&mut self) -> u64 {
        let c = self.counter;
        self.counter += 1;
        c
    }
}

/// Why a publish failed.
enum Published {
    Queue(String),
    Region(InflightError),
}

impl From<InflightError> for Published {
    fn from(e: InflightError) -> Self {
        Published::Region(e)
    }
}

impl<M: GuestMemory + ?Sized> AccessObserver<M> for QueueRegion {
    fn taken(&mut self, queue: &Virtqueue, mem: &M, chain: &DescriptorChain) {
        if let Err(e) = self.record_taken(queue, mem, chain) {
            self.error.get_or_insert(e.to_string());
        }
    }

    fn used(&mut self, id: u16) {
        self.batch.push(id);
    }
}

/// The queue's publish through the crash hook: the one ring store that hands a batch over.
fn hooked_publish<M: GuestMemory + ?Sized>(
    hook: &CrashHook,
    queue: &mut Virtqueue,
    mem: &M,
) -> Result<(), Published> {
    hook.step()?;
    queue
        .publish_used(mem)
        .map_err(|e| Published::Queue(e.to_string()))
}
