//! What a backend thread does to the image for one request ([`Op`]): pread/pwrite/fdatasync
//! and fallocate, with the injected failure range applied first. The backend (threads,
//! channels, cancellation) is `backend.rs`; this file knows nothing of it.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use vmm_sys_util::fallocate::{fallocate, FallocateMode};

use super::config::SECTOR_SIZE;
use super::options::{RequestKind, WriteSplit};

/// One sector range of a discard or write-zeroes request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) sector: u64,
    pub(crate) sectors: u64,
    pub(crate) unmap: bool,
}

/// What the backend does for a request.
#[derive(Debug)]
pub(crate) enum Op {
    Read { sector: u64, len: usize },
    Write { sector: u64, data: AlignedBuf },
    Flush,
    Discard(Vec<Extent>),
    WriteZeroes(Vec<Extent>),
}

impl Op {
    pub(crate) fn kind(&self) -> RequestKind {
        match self {
            Op::Read { .. } => RequestKind::Read,
            Op::Write { .. } => RequestKind::Write,
            Op::Flush => RequestKind::Flush,
            Op::Discard(_) => RequestKind::Discard,
            Op::WriteZeroes(_) => RequestKind::WriteZeroes,
        }
    }

    /// The sectors the request touches (one span for discard and write zeroes) and whether it
    /// changes them; `None` for flush.
    pub(crate) fn span(&self) -> Option<(Range<u64>, bool)> {
        let sectors = |len: usize| (len as u64).div_ceil(SECTOR_SIZE);
        match self {
            Op::Read { sector, len } => {
                Some((*sector..sector.saturating_add(sectors(*len)), false))
            }
            Op::Write { sector, data } => Some((
                *sector..sector.saturating_add(sectors(data.as_slice().len())),
                true,
            )),
            Op::Flush => None,
            Op::Discard(e) | Op::WriteZeroes(e) => {
                let start = e.iter().map(|e| e.sector).min()?;
                let end = e.iter().map(|e| e.sector.saturating_add(e.sectors)).max()?;
                Some((start..end, true))
            }
        }
    }

    pub(crate) fn first_sector(&self) -> u64 {
        match self {
            Op::Read { sector, .. } | Op::Write { sector, .. } => *sector,
            Op::Flush => 0,
            Op::Discard(e) | Op::WriteZeroes(e) => e.first().map_or(0, |e| e.sector),
        }
    }
}

/// A byte buffer whose start is aligned (for O_DIRECT), without unsafe code: the vector is
/// over-allocated and the aligned window used.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes starting at a multiple of `align` (a power of two, or 1).
    pub(crate) fn zeroed(len: usize, align: usize) -> Self {
        if align <= 1 {
            return Self {
                raw: vec![0; len],
                start: 0,
                len,
            };
        }
        let raw = vec![0; len + align];
        let misalignment = raw.as_ptr() as usize % align;
        let start = (align - misalignment) % align;
        Self { raw, start, len }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// How a backend thread reaches the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Image<'a> {
    pub(crate) file: &'a File,
    /// Injected EIO range (sectors).
    pub(crate) fail: Option<&'a Range<u64>>,
    /// Bounce buffer alignment.
    pub(crate) align: usize,
    /// Injected pause in the middle of each write.
    pub(crate) split: Option<&'a WriteSplit>,
    /// The backend is shutting down: an injected pause ends.
    pub(crate) shutdown: &'a AtomicBool,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Fails with EIO if `[sector, sector + sectors)` meets the injected failure range.
fn check_faults(image: Image<'_>, sector: u64, sectors: u64) -> io::Result<()> {
    match image.fail {
        Some(bad) if sector < bad.end && sector.saturating_add(sectors.max(1)) > bad.start => {
            Err(eio())
        }
        _ => Ok(()),
    }
}

fn byte_range(sector: u64, sectors: u64) -> io::Result<(u64, u64)> {
    // The device validated the ranges against the capacity, so these cannot overflow; stay
    // defensive anyway.
    let offset = sector.checked_mul(SECTOR_SIZE).ok_or_else(eio)?;
    let len = sectors.checked_mul(SECTOR_SIZE).ok_or_else(eio)?;
    Ok((offset, len))
}

/// Carries out `op`; `sync` makes writes stable before returning (writethrough).
pub(crate) fn execute(image: Image<'_>, op: &Op, sync: bool) -> io::Result<Option<AlignedBuf>> {
    let file = image.file;
    match op {
        Op::Read { sector, len } => {
            check_faults(image, *sector, (*len as u64).div_ceil(SECTOR_SIZE))?;
            let mut buf = AlignedBuf::zeroed(*len, image.align);
            let (offset, _) = byte_range(*sector, 0)?;
            file.read_exact_at(buf.as_mut_slice(), offset)?;
            Ok(Some(buf))
        }
        Op::Write { sector, data } => {
            let len = data.as_slice().len() as u64;
            check_faults(image, *sector, len.div_ceil(SECTOR_SIZE))?;
            let (offset, _) = byte_range(*sector, 0)?;
            let bytes = data.as_slice();
            match image.split {
                Some(split) if split.at < bytes.len() => {
                    file.write_all_at(&bytes[..split.at], offset)?;
                    pause(split, image.shutdown);
                    file.write_all_at(&bytes[split.at..], offset + split.at as u64)?;
                }
                _ => file.write_all_at(bytes, offset)?,
            }
            if sync {
                file.sync_data()?;
            }
            Ok(None)
        }
        Op::Flush => file.sync_data().map(|()| None),
        Op::Discard(extents) => {
            for e in extents {
                check_faults(image, e.sector, e.sectors)?;
            }
            for e in extents {
                let (offset, len) = byte_range(e.sector, e.sectors)?;
                // Discard is a hint (virtio spec 5.2.6.1: the device MAY deallocate): a file
                // system that cannot punch holes still completes it successfully.
                match fallocate(file, FallocateMode::PunchHole, true, offset, len) {
                    Ok(()) => {}
                    Err(e) if unsupported(e.errno()) => {}
                    Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
                }
            }
            Ok(None)
        }
        Op::WriteZeroes(extents) => {
            for e in extents {
                check_faults(image, e.sector, e.sectors)?;
            }
            for e in extents {
                write_zeroes(image, e)?;
            }
            if sync {
                file.sync_data()?;
            }
            Ok(None)
        }
    }
}

/// The injected pause between the two parts of a split write.
fn pause(split: &WriteSplit, shutdown: &AtomicBool) {
    std::thread::sleep(split.pause);
    while split.gate.as_ref().is_some_and(|g| g.is_closed()) && !shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn unsupported(errno: i32) -> bool {
    errno == libc::EOPNOTSUPP || errno == libc::ENOSYS || errno == libc::EINVAL
}

/// Zeroes an extent: a hole when the driver allows unmapping, else an allocated zero range,
/// else written zeroes. Reads return zeroes afterwards in every case (virtio spec 5.2.6.1).
fn write_zeroes(image: Image<'_>, e: &Extent) -> io::Result<()> {
    let file = image.file;
    let (offset, len) = byte_range(e.sector, e.sectors)?;
    if e.unmap && fallocate(file, FallocateMode::PunchHole, true, offset, len).is_ok() {
        return Ok(());
    }
    if fallocate(file, FallocateMode::ZeroRange, true, offset, len).is_ok() {
        return Ok(());
    }
    let chunk = len.min(64 * 1024) as usize;
    let zeroes = AlignedBuf::zeroed(chunk, image.align);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(chunk as u64) as usize;
        file.write_all_at(&zeroes.as_slice()[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}
