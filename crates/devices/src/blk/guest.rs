//! Copying between guest buffers (a chain's segments) and host bytes, through vm-memory so every
//! device write is bounds-checked and dirty-logged.

use virtio_lm_device::{DeviceError, QueueAccess};
use virtio_lm_queue::{DescriptorChain, Segment};
use vm_memory::{Address, Bytes, GuestMemory};

/// A guest buffer could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestAccessError;

/// Reads `buf.len()` bytes starting `offset` bytes into the concatenation of `segments`.
pub(crate) fn read_segments<'a, M: GuestMemory + ?Sized>(
    mem: &M,
    segments: impl Iterator<Item = &'a Segment>,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), GuestAccessError> {
    let mut skip = offset;
    let mut filled = 0;
    for seg in segments {
        if filled == buf.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min((buf.len() - filled) as u64) as usize;
        let addr = seg.addr.checked_add(skip).ok_or(GuestAccessError)?;
        mem.read_slice(&mut buf[filled..filled + n], addr)
            .map_err(|_| GuestAccessError)?;
        filled += n;
        skip = 0;
    }
    if filled == buf.len() {
        Ok(())
    } else {
        Err(GuestAccessError)
    }
}

/// Writes `data` starting `offset` bytes into the concatenation of `segments`.
pub(crate) fn write_segments<'a, M: GuestMemory + ?Sized>(
    mem: &M,
    segments: impl Iterator<Item = &'a Segment>,
    offset: u64,
    data: &[u8],
) -> Result<(), GuestAccessError> {
    let mut skip = offset;
    let mut done = 0;
    for seg in segments {
        if done == data.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min((data.len() - done) as u64) as usize;
        let addr = seg.addr.checked_add(skip).ok_or(GuestAccessError)?;
        mem.write_slice(&data[done..done + n], addr)
            .map_err(|_| GuestAccessError)?;
        done += n;
        skip = 0;
    }
    if done == data.len() {
        Ok(())
    } else {
        Err(GuestAccessError)
    }
}

/// Completes a request: writes `data` (IN or GET_ID bytes) at the start of the writable part,
/// the status into its last byte, and returns the chain used with the bytes written.
///
/// The caller checked that the chain has a writable byte. If the data cannot be written the
/// request fails with IOERR; if even the status cannot be written the device needs a reset.
pub(crate) fn finish_request<M: GuestMemory + ?Sized>(
    access: &mut QueueAccess<'_, M>,
    chain: &DescriptorChain,
    data: Option<&[u8]>,
    status: u8,
) -> Result<(), DeviceError> {
    let mem = access.mem();
    let status_at = u64::from(chain.writable_len().saturating_sub(1));
    let mut status = status;
    let mut written = 0u32;
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        // The data never reaches the status byte: parsing bounded it by the writable length.
        match write_segments(mem, chain.writable(), 0, data) {
            Ok(()) => written = data.len() as u32,
            Err(GuestAccessError) => status = super::config::status::IOERR,
        }
    }
    write_segments(mem, chain.writable(), status_at, &[status]).map_err(|_| {
        DeviceError::Backend(format!(
            "virtio-blk: status byte of request {} cannot be written",
            chain.id
        ))
    })?;
    access.add_used(chain.id, written + 1)?;
    Ok(())
}
