//! The shared dirty log of vhost-user migration (LOG_SHMFD, SET_LOG_BASE) as a vm-memory
//! [`Bitmap`]: every write the backend makes into guest RAM through vm-memory — read data, the
//! status byte, used-ring entries and indices, packed descriptors written back — sets the bit of
//! each guest-physical 4 KiB page it touched, right after the write (vm-memory marks after it
//! stores), so the bit is set before any later write publishes the used index or flags.
//!
//! The log is 1 bit per page, bit `page % 8` of byte `page / 8`, indexed by guest-physical
//! address (vhost-user spec, "Migration"; docs/spec-decisions.md §14). Bits are set with an
//! atomic OR because the frontend clears them concurrently.
//!
//! Marking happens only while VHOST_F_LOG_ALL is negotiated: the frontend turns it on at the
//! start of a migration and off when the migration ends or is cancelled; the log area stays
//! mapped in between because the frontend may turn logging on again without a new SET_LOG_BASE.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{PoisonError, RwLock};

use vm_memory::bitmap::{Bitmap, BitmapSlice, WithBitmapSlice};
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

/// Bytes of guest memory one log bit covers.
pub const LOG_PAGE_SIZE: u64 = 4096;

/// Largest log area accepted: one bit per 4 KiB page of 4 TiB of guest-physical space.
pub const MAX_LOG_SIZE: u64 = 128 << 20;

/// Why a log area was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Size 0, larger than [`MAX_LOG_SIZE`], or beyond the end of the file.
    #[error(
        "dirty log area of {size} bytes at offset {offset} does not fit (file of {file_len} bytes)"
    )]
    BadArea {
        /// `mmap_size`.
        size: u64,
        /// `mmap_offset`.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The mapping failed.
    #[error("cannot map the dirty log: {0}")]
    Map(String),
}

/// The dirty log shared by every guest memory region of one connection.
#[derive(Debug, Default)]
pub struct DirtyLog {
    /// VHOST_F_LOG_ALL is negotiated.
    logging: AtomicBool,
    /// Test-only: never mark (the negative control of the end-to-end tests).
    suppressed: bool,
    area: RwLock<Option<MmapRegion<()>>>,
}

impl DirtyLog {
    /// A log that marks nothing until an area is set and LOG_ALL negotiated. `suppressed`
    /// turns marking off for good (test-only: proves a test can see a missing log).
    pub fn new(suppressed: bool) -> Self {
        Self {
            suppressed,
            ..Self::default()
        }
    }

    /// Maps `size` bytes of `file` at `offset` as the log area (SET_LOG_BASE).
    pub fn set_area(&self, file: File, size: u64, offset: u64) -> Result<(), LogError> {
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let fits = offset.checked_add(size).is_some_and(|end| end <= file_len);
        if size == 0 || size > MAX_LOG_SIZE || !fits {
            return Err(LogError::BadArea {
                size,
                offset,
                file_len,
            });
        }
        let region = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| LogError::Map(e.to_string()))?;
        *self.area.write().unwrap_or_else(PoisonError::into_inner) = Some(region);
        Ok(())
    }

    /// Turns marking on or off (VHOST_F_LOG_ALL acked or cleared by SET_FEATURES).
    pub fn set_logging(&self, on: bool) {
        self.logging.store(on, Ordering::SeqCst);
    }

    /// Whether writes are being logged now.
    pub fn is_logging(&self) -> bool {
        self.logging.load(Ordering::SeqCst) && !self.suppressed
    }

    /// Sets the bit of every page of `[gpa, gpa + len)`.
    pub fn mark(&self, gpa: u64, len: usize) {
        if len == 0 || !self.is_logging() {
            return;
        }
        let area = self.area.read().unwrap_or_else(PoisonError::into_inner);
        let Some(area) = area.as_ref() else { return };
        let slice = area.as_volatile_slice();
        let first = gpa / LOG_PAGE_SIZE;
        let last = gpa.saturating_add(len as u64 - 1) / LOG_PAGE_SIZE;
        for page in first..=last {
            // Pages past the area are outside what the frontend asked to track.
            let Ok(byte) = slice.get_atomic_ref::<AtomicU8>((page / 8) as usize) else {
                return;
            };
            // Release: whoever sees the bit (and then copies the page) sees the write.
            byte.fetch_or(1 << (page % 8), Ordering::AcqRel);
        }
    }

    /// Whether the page holding `gpa` is marked.
    pub fn is_marked(&self, gpa: u64) -> bool {
        let area = self.area.read().unwrap_or_else(PoisonError::into_inner);
        let Some(area) = area.as_ref() else {
            return false;
        };
        let page = gpa / LOG_PAGE_SIZE;
        area.as_volatile_slice()
            .get_atomic_ref::<AtomicU8>((page / 8) as usize)
            .is_ok_and(|b| b.load(Ordering::Acquire) & (1 << (page % 8)) != 0)
    }
}

/// The bitmap of one guest memory region: the shared log and the region's guest-physical base.
#[derive(Clone, Debug)]
pub struct LogBitmap {
    log: std::sync::Arc<DirtyLog>,
    base: u64,
}

impl LogBitmap {
    /// The bitmap of the region starting at guest-physical `base`.
    pub fn new(log: std::sync::Arc<DirtyLog>, base: u64) -> Self {
        Self { log, base }
    }
}

/// A [`LogBitmap`] seen from an offset inside its region (what vm-memory slices carry).
#[derive(Clone, Copy, Debug)]
pub struct LogSlice<'a> {
    log: &'a DirtyLog,
    base: u64,
}

impl<'a> WithBitmapSlice<'a> for LogBitmap {
    type S = LogSlice<'a>;
}

impl Bitmap for LogBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.slice_at(0).mark_dirty(offset, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.slice_at(0).dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> LogSlice<'_> {
        LogSlice {
            log: &self.log,
            base: self.base.wrapping_add(offset as u64),
        }
    }
}

impl<'a> WithBitmapSlice<'_> for LogSlice<'a> {
    type S = Self;
}

impl BitmapSlice for LogSlice<'_> {}

impl Bitmap for LogSlice<'_> {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.log.mark(self.base.wrapping_add(offset as u64), len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.log.is_marked(self.base.wrapping_add(offset as u64))
    }

    fn slice_at(&self, offset: usize) -> Self {
        Self {
            log: self.log,
            base: self.base.wrapping_add(offset as u64),
        }
    }
}
