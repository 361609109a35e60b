//! The frontend's memory table (SET_MEM_TABLE) as guest memory the device model can use:
//! each region's file mapped shared at its offset, addressed by guest-physical address, with
//! the dirty log as its bitmap; plus the translation of frontend virtual addresses (the vring
//! addresses of SET_VRING_ADDR) into guest-physical ones.

use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::log::{DirtyLog, LogBitmap};

/// Guest memory as the backend sees it.
pub type BackendMemory = GuestMemoryMmap<LogBitmap>;

/// Most regions a memory table may carry (the vhost-user limit without CONFIGURE_MEM_SLOTS).
pub const MAX_REGIONS: usize = 8;

/// Why a memory table was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// No region, too many, or not one file per region.
    #[error("memory table with {regions} regions and {files} files")]
    Count {
        /// Regions in the message.
        regions: usize,
        /// Files attached.
        files: usize,
    },
    /// A region is empty, overflows, or lies beyond the end of its file.
    #[error("memory region {index} does not fit its file or the address space")]
    BadRegion {
        /// Position in the table.
        index: usize,
    },
    /// The mapping failed, or regions overlap.
    #[error("cannot map memory region: {0}")]
    Map(String),
}

/// One region's frontend virtual address range and its guest-physical base.
#[derive(Clone, Copy, Debug)]
struct Translation {
    user_addr: u64,
    size: u64,
    guest_phys_addr: u64,
}

/// A mapped memory table.
#[derive(Debug)]
pub struct MemoryTable {
    /// The regions, guest-physically addressed.
    pub mem: Arc<BackendMemory>,
    translations: Vec<Translation>,
}

impl MemoryTable {
    /// Maps every region of a SET_MEM_TABLE message; `log` becomes every region's bitmap.
    pub fn map(
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        log: &Arc<DirtyLog>,
    ) -> Result<Self, MemoryError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS || regions.len() != files.len() {
            return Err(MemoryError::Count {
                regions: regions.len(),
                files: files.len(),
            });
        }
        let mut mapped = Vec::with_capacity(regions.len());
        let mut translations = Vec::with_capacity(regions.len());
        for (index, (region, file)) in regions.iter().zip(files).enumerate() {
            let bad = MemoryError::BadRegion { index };
            let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let size = region.memory_size;
            // A mapping past the end of the file would fault (SIGBUS) on first access.
            let fits_file = region
                .mmap_offset
                .checked_add(size)
                .is_some_and(|end| end <= file_len);
            let fits_space = region.guest_phys_addr.checked_add(size).is_some()
                && region.user_addr.checked_add(size).is_some();
            let size_usize = usize::try_from(size).map_err(|_| MemoryError::BadRegion { index })?;
            if size == 0 || !fits_file || !fits_space {
                return Err(bad);
            }
            let mapping = map_shared(
                FileOffset::new(file, region.mmap_offset),
                size_usize,
                LogBitmap::new(log.clone(), region.guest_phys_addr),
            )?;
            let region_mmap = GuestRegionMmap::new(mapping, GuestAddress(region.guest_phys_addr))
                .ok_or(MemoryError::BadRegion { index })?;
            mapped.push(region_mmap);
            translations.push(Translation {
                user_addr: region.user_addr,
                size,
                guest_phys_addr: region.guest_phys_addr,
            });
        }
        let mem =
            GuestMemoryMmap::from_regions(mapped).map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(Self {
            mem: Arc::new(mem),
            translations,
        })
    }

    /// The guest-physical address of frontend virtual address `addr`, if a region holds it.
    pub fn to_guest(&self, addr: u64) -> Option<GuestAddress> {
        self.translations.iter().find_map(|t| {
            let offset = addr.checked_sub(t.user_addr)?;
            (offset < t.size).then(|| GuestAddress(t.guest_phys_addr + offset))
        })
    }
}

/// A shared read-write mapping of `size` bytes of a file, with `bitmap`.
fn map_shared(
    file: FileOffset,
    size: usize,
    bitmap: LogBitmap,
) -> Result<MmapRegion<LogBitmap>, MemoryError> {
    vm_memory::mmap::MmapRegionBuilder::new_with_bitmap(size, bitmap)
        .with_file_offset(file)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| MemoryError::Map(e.to_string()))
}
