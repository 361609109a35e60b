//! Copying between guest buffers (a chain's segments) and host bytes, through vm-memory so every
//! device write is bounds-checked and dirty-logged.

use virtio_lm_queue::Segment;
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
    copy(segments, offset, buf.len(), |addr, range| {
        mem.read_slice(&mut buf[range], addr).is_ok()
    })
}

/// Writes `data` starting `offset` bytes into the concatenation of `segments`.
pub(crate) fn write_segments<'a, M: GuestMemory + ?Sized>(
    mem: &M,
    segments: impl Iterator<Item = &'a Segment>,
    offset: u64,
    data: &[u8],
) -> Result<(), GuestAccessError> {
    copy(segments, offset, data.len(), |addr, range| {
        mem.write_slice(&data[range], addr).is_ok()
    })
}

/// Walks `len` bytes of `segments` from `offset`, calling `step` with each guest address and
/// the matching range of the host buffer.
fn copy<'a>(
    segments: impl Iterator<Item = &'a Segment>,
    offset: u64,
    len: usize,
    mut step: impl FnMut(vm_memory::GuestAddress, std::ops::Range<usize>) -> bool,
) -> Result<(), GuestAccessError> {
    let mut skip = offset;
    let mut done = 0;
    for seg in segments {
        if done == len {
            break;
        }
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min((len - done) as u64) as usize;
        let addr = seg.addr.checked_add(skip).ok_or(GuestAccessError)?;
        if !step(addr, done..done + n) {
            return Err(GuestAccessError);
        }
        done += n;
        skip = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(GuestAccessError)
    }
}
