//! Guest memory: vm-memory regions mapped shared from one memfd, each carrying an
//! [`AtomicBitmap`] that every write through vm-memory marks — the device's data writes, its
//! used-ring and packed-descriptor writes, and the guest drivers' own writes alike — so the
//! dirty log sees every writer of this simulated VM (there is no KVM log for vCPU writes: the
//! vCPUs are threads writing through vm-memory too).
//!
//! The devices write through a second mapping of the same memfd with bitmaps of their own
//! ([`VmMemory::device_ram`]), as a vhost back-end keeps its own dirty log beside KVM's; a
//! harvest takes the union of both. Keeping them apart is what lets a test drop only the
//! devices' marks (the migration engine's negative control).
//!
//! The bitmap always marks; what logging adds is a window: [`VmMemory::start_dirty_log`] clears
//! every bitmap and hands out the one [`DirtyLog`], whose [`DirtyLog::harvest`] takes the marks
//! (get-and-clear, per 64-page word) as coalesced page ranges. Stopping — by
//! [`DirtyLog::stop`] or by dropping the log, which is what a cancelled or failed migration
//! does — clears the bitmaps again and ends the window, so no stale mark reaches the next one.

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memfd::{FileSeal, MemfdOptions};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use vmm_sys_util::seek_hole::SeekHole;

use crate::dirty::{coalesce_into, DirtyRange};

/// The guest memory type every layer of the VM uses: mmap regions with a dirty bitmap.
pub type GuestRam = GuestMemoryMmap<AtomicBitmap>;

/// Bytes per dirty-log page: the host page size the bitmap uses, the unit of harvested ranges.
pub const PAGE_SIZE: u64 = 4096;

/// Why guest memory could not be built or logged.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The memfd could not be created, sized or sealed.
    #[error("Guest memory file: {0}")]
    File(#[source] std::io::Error),
    /// The memfd could not be sealed against resizing.
    #[error("Guest memory seals: {0}")]
    Seal(#[source] memfd::Error),
    /// The memfd could not be created.
    #[error("Guest memory memfd: {0}")]
    Memfd(#[source] memfd::Error),
    /// A range is empty, not page aligned, overlapping another or past the address space.
    #[error("Guest memory range {gpa:#x}+{len:#x} is invalid")]
    BadRange {
        /// Its first address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// The memfd could not be mapped.
    #[error("Guest memory mapping: {0}")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    /// vm-memory refused the regions.
    #[error("Guest memory regions: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    /// A dirty log is already running: there is one window at a time.
    #[error("Dirty logging is already running")]
    AlreadyLogging,
    /// Copying between two guest memories failed (a different layout, or an access error).
    #[error("Guest memory copy: {0}")]
    Copy(String),
}

/// One RAM range of the layout: guest-physical `gpa..gpa + len` at `file_offset` in the memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RamRange {
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Where the range starts in the memfd.
    pub file_offset: u64,
}

struct Inner {
    ram: Arc<GuestRam>,
    device_ram: Arc<GuestRam>,
    /// Test switch: harvests discard the devices' marks.
    drop_device_marks: AtomicBool,
    file: File,
    layout: Vec<RamRange>,
    logging: AtomicBool,
}

/// The guest's memory: regions of [`GuestRam`] over one memfd, and the dirty-log window.
/// Clones share the memory.
#[derive(Clone)]
pub struct VmMemory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VmMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmMemory")
            .field("layout", &self.inner.layout)
            .field("logging", &self.is_logging())
            .finish()
    }
}

impl VmMemory {
    /// `size` bytes of zeroed RAM at guest address 0.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        Self::with_ranges(&[(0, size)])
    }

    /// Zeroed RAM at each `(gpa, len)` (page aligned, ascending, not overlapping), the ranges
    /// laid one after another in one memfd, which is sealed against shrinking so the mapping
    /// can never lose its backing.
    pub fn with_ranges(ranges: &[(u64, u64)]) -> Result<Self, MemoryError> {
        let mut layout = Vec::with_capacity(ranges.len());
        let mut file_offset = 0u64;
        let mut prev_end = 0u64;
        for (i, &(gpa, len)) in ranges.iter().enumerate() {
            let bad = MemoryError::BadRange { gpa, len };
            let end = gpa
                .checked_add(len)
                .ok_or(MemoryError::BadRange { gpa, len })?;
            if len == 0
                || gpa % PAGE_SIZE != 0
                || len % PAGE_SIZE != 0
                || (i > 0 && gpa < prev_end)
                || usize::try_from(len).is_err()
            {
                return Err(bad);
            }
            layout.push(RamRange {
                gpa,
                len,
                file_offset,
            });
            file_offset += len;
            prev_end = end;
        }
        let memfd = MemfdOptions::default()
            .close_on_exec(true)
            .allow_sealing(true)
            .create("virtio-lm-guest")
            .map_err(MemoryError::Memfd)?;
        memfd
            .as_file()
            .set_len(file_offset)
            .map_err(MemoryError::File)?;
        memfd
            .add_seals(&[FileSeal::SealShrink, FileSeal::SealGrow])
            .map_err(MemoryError::Seal)?;
        let file = memfd.into_file();
        let regions = layout
            .iter()
            .map(|r| region(&file, r))
            .collect::<Result<Vec<_>, MemoryError>>()?;
        let ram = GuestRam::from_regions(regions).map_err(MemoryError::Regions)?;
        let device_regions = layout
            .iter()
            .map(|r| region(&file, r))
            .collect::<Result<Vec<_>, MemoryError>>()?;
        let device_ram = GuestRam::from_regions(device_regions).map_err(MemoryError::Regions)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ram: Arc::new(ram),
                device_ram: Arc::new(device_ram),
                drop_device_marks: AtomicBool::new(false),
                file,
                layout,
                logging: AtomicBool::new(false),
            }),
        })
    }

    /// The vm-memory view every device, queue and driver works on.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.inner.ram
    }

    /// The same RAM as the devices see it: one memfd, bitmaps of their own (see the module
    /// documentation). Device cores and their back-ends are built on this view.
    pub fn device_ram(&self) -> &Arc<GuestRam> {
        &self.inner.device_ram
    }

    /// Test switch, the negative control of dirty tracking: while on, harvests discard every
    /// mark the devices made, as a back-end without a dirty log would.
    #[cfg(feature = "test-utils")]
    pub fn set_drop_device_marks(&self, on: bool) {
        self.inner.drop_device_marks.store(on, Ordering::SeqCst);
    }

    /// The memfd behind the RAM: for sharing it with another process. Writing it directly
    /// bypasses the dirty bitmap (the negative control of the dirty-log tests).
    pub fn file(&self) -> &File {
        &self.inner.file
    }

    /// The parts of RAM that may hold data, as page ranges in ascending order: the memfd's
    /// allocated extents (SEEK_DATA / SEEK_HOLE). A page never written is a hole and reads as
    /// zero; a migration sends it as a zero marker without reading it, since reading would
    /// allocate it (a mostly idle 4 GiB guest would cost 4 GiB of host memory more).
    pub fn data_ranges(&self) -> Result<Vec<DirtyRange>, MemoryError> {
        let mut file = self.inner.file.try_clone().map_err(MemoryError::File)?;
        let mut out = Vec::new();
        for r in &self.inner.layout {
            let end = r.file_offset + r.len;
            let mut at = r.file_offset;
            while at < end {
                let Some(data) = file.seek_data(at).map_err(MemoryError::File)? else {
                    break;
                };
                if data >= end {
                    break;
                }
                let hole = file
                    .seek_hole(data)
                    .map_err(MemoryError::File)?
                    .map_or(end, |h| h.min(end));
                let start = data - data % PAGE_SIZE;
                let stop = hole.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE).min(end);
                out.push(DirtyRange {
                    gpa: r.gpa + (start - r.file_offset),
                    len: stop - start,
                });
                at = stop.max(at + PAGE_SIZE);
            }
        }
        Ok(out)
    }

    /// The RAM ranges.
    pub fn layout(&self) -> &[RamRange] {
        &self.inner.layout
    }

    /// Total bytes of RAM.
    pub fn size(&self) -> u64 {
        self.inner.layout.iter().map(|r| r.len).sum()
    }

    /// Whether a dirty log is running.
    pub fn is_logging(&self) -> bool {
        self.inner.logging.load(Ordering::Acquire)
    }

    /// Starts dirty logging: clears every region's bitmap, so the first harvest reports what
    /// was written from now on. One log at a time.
    pub fn start_dirty_log(&self) -> Result<DirtyLog, MemoryError> {
        if self
            .inner
            .logging
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(MemoryError::AlreadyLogging);
        }
        self.reset_bitmaps();
        Ok(DirtyLog {
            memory: self.clone(),
            stopped: false,
        })
    }

    fn reset_bitmaps(&self) {
        for region in self.inner.ram.iter().chain(self.inner.device_ram.iter()) {
            region.deref_bitmap().reset();
        }
    }

    /// Copies every byte of `source` (same layout) into this memory through vm-memory (so the
    /// copy is itself logged here). For a guest rebuilt from a memory image.
    pub fn copy_from(&self, source: &VmMemory) -> Result<(), MemoryError> {
        if source
            .layout()
            .iter()
            .map(|r| (r.gpa, r.len))
            .ne(self.layout().iter().map(|r| (r.gpa, r.len)))
        {
            return Err(MemoryError::Copy("the layouts differ".into()));
        }
        let mut buf = vec![0u8; 1 << 20];
        for r in self.layout() {
            let mut at = 0u64;
            while at < r.len {
                let n = (r.len - at).min(buf.len() as u64) as usize;
                let addr = GuestAddress(r.gpa + at);
                source
                    .ram()
                    .read_slice(&mut buf[..n], addr)
                    .map_err(|e| MemoryError::Copy(e.to_string()))?;
                self.ram()
                    .write_slice(&buf[..n], addr)
                    .map_err(|e| MemoryError::Copy(e.to_string()))?;
                at += n as u64;
            }
        }
        Ok(())
    }
}

/// The region of `range`: a shared mapping of the memfd with a bitmap of [`PAGE_SIZE`] pages
/// (fixed here rather than the host page size vm-memory would pick, so harvested ranges have
/// one unit on every host).
fn region(file: &File, range: &RamRange) -> Result<GuestRegionMmap<AtomicBitmap>, MemoryError> {
    let bad = || MemoryError::BadRange {
        gpa: range.gpa,
        len: range.len,
    };
    let len = usize::try_from(range.len).map_err(|_| bad())?;
    let page = NonZeroUsize::new(PAGE_SIZE as usize).ok_or_else(bad)?;
    let clone = file.try_clone().map_err(MemoryError::File)?;
    let mapping = MmapRegionBuilder::new_with_bitmap(len, AtomicBitmap::new(len, page))
        .with_file_offset(FileOffset::new(clone, range.file_offset))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
        .build()
        .map_err(MemoryError::Mmap)?;
    GuestRegionMmap::new(mapping, GuestAddress(range.gpa)).ok_or_else(bad)
}

/// The bitmap of a region as its own type (the trait's `bitmap()` returns a slice view).
trait RegionBitmap {
    fn deref_bitmap(&self) -> &AtomicBitmap;
}

impl RegionBitmap for GuestRegionMmap<AtomicBitmap> {
    fn deref_bitmap(&self) -> &AtomicBitmap {
        // `GuestRegionMmap` derefs to its `MmapRegion`, whose bitmap is the whole region's.
        std::ops::Deref::deref(self).bitmap()
    }
}

/// A running dirty log (see the module documentation). Dropping it stops logging.
#[derive(Debug)]
pub struct DirtyLog {
    memory: VmMemory,
    stopped: bool,
}

impl DirtyLog {
    /// The pages written since logging started or since the previous harvest, as coalesced
    /// ranges in ascending address order; their marks are cleared (get-and-clear per word, so
    /// a write racing the harvest lands in this harvest or the next, never in neither).
    pub fn harvest(&mut self) -> Vec<DirtyRange> {
        let inner = &self.memory.inner;
        let drop_device = inner.drop_device_marks.load(Ordering::SeqCst);
        let mut out = Vec::new();
        // Both views have the same regions in the same order (built from one layout).
        for (region, device) in inner.ram.iter().zip(inner.device_ram.iter()) {
            let mut words = region.deref_bitmap().get_and_reset();
            let device_words = device.deref_bitmap().get_and_reset();
            if !drop_device {
                for (w, d) in words.iter_mut().zip(device_words) {
                    *w |= d;
                }
            }
            coalesce_into(&mut out, &words, region.start_addr().0, PAGE_SIZE);
        }
        out
    }

    /// The memory logged.
    pub fn memory(&self) -> &VmMemory {
        &self.memory
    }

    /// Stops logging and clears the marks (a later log starts clean).
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.memory.reset_bitmaps();
            self.memory.inner.logging.store(false, Ordering::Release);
        }
    }
}

impl Drop for DirtyLog {
    fn drop(&mut self) {
        self.finish();
    }
}
