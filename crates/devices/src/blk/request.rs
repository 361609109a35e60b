//! Parsing and validating one virtio-blk request (virtio spec 5.2.6) from a descriptor chain.
//!
//! Layout: the device-readable part starts with the 16-byte header and, for OUT, DISCARD and
//! WRITE_ZEROES, continues with the payload; the device-writable part holds IN/GET_ID data and
//! ends with the status byte. Everything a request needs from guest memory (header, OUT data,
//! segments) is copied here, at submission: the backend never reads guest memory.

use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;

use super::config::{
    features, request_type as t, status, DISCARD_SEGMENT_LEN, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG,
    MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG, REQUEST_HEADER_LEN, SECTOR_SIZE,
    VIRTIO_BLK_ID_BYTES, WRITE_ZEROES_FLAG_UNMAP,
};
use super::image_io::{AlignedBuf, Extent, Op};
use crate::guest_io::read_segments;

/// What the device knows when it parses a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits<'a> {
    pub(crate) capacity: u64,
    pub(crate) read_only: bool,
    /// Negotiated feature bits.
    pub(crate) features: u64,
    /// Largest IN/OUT data transfer accepted.
    pub(crate) max_transfer: u32,
    pub(crate) id: &'a [u8; VIRTIO_BLK_ID_BYTES],
    pub(crate) align: usize,
}

/// The outcome of parsing.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Complete at once with `status`, writing `data` first (GET_ID, or a rejected request).
    Now { status: u8, data: Vec<u8> },
    /// Hand to the backend.
    Submit(Op),
}

/// The chain has no device-writable byte: the device cannot even report a status. A
/// malformed chain in the sense of spec-notes §2 (the device sets DEVICE_NEEDS_RESET).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoStatusByte;

fn fail(status: u8) -> Parsed {
    Parsed::Now {
        status,
        data: Vec::new(),
    }
}

/// Whether `[sector, sector + sectors)` lies within the capacity.
fn in_range(sector: u64, sectors: u64, capacity: u64) -> bool {
    sector
        .checked_add(sectors)
        .is_some_and(|end| end <= capacity)
}

/// Parses `chain` as a virtio-blk request.
pub(crate) fn parse<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &DescriptorChain,
    limits: &Limits<'_>,
) -> Result<Parsed, NoStatusByte> {
    let writable = chain.writable_len();
    if writable == 0 {
        return Err(NoStatusByte);
    }
    // Bytes before the status byte in the writable part.
    let in_len = writable - 1;
    let readable = chain.readable_len();
    let mut header = [0u8; REQUEST_HEADER_LEN as usize];
    if readable < REQUEST_HEADER_LEN
        || read_segments(mem, chain.readable(), 0, &mut header).is_err()
    {
        return Ok(fail(status::IOERR));
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    let payload = readable - REQUEST_HEADER_LEN;
    Ok(match kind {
        t::IN if transfer_ok(sector, in_len, limits) => Parsed::Submit(Op::Read {
            sector,
            len: in_len as usize,
        }),
        t::IN => fail(status::IOERR),
        // virtio spec 5.2.6.1: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a
        // write request if the VIRTIO_BLK_F_RO feature if offered, and MUST NOT write any data."
        t::OUT if limits.read_only => fail(status::IOERR),
        t::OUT if transfer_ok(sector, payload, limits) => {
            let mut data = AlignedBuf::zeroed(payload as usize, limits.align);
            let from = u64::from(REQUEST_HEADER_LEN);
            match read_segments(mem, chain.readable(), from, data.as_mut_slice()) {
                Ok(()) => Parsed::Submit(Op::Write { sector, data }),
                Err(_) => fail(status::IOERR),
            }
        }
        t::OUT => fail(status::IOERR),
        t::FLUSH if limits.features & features::FLUSH != 0 => Parsed::Submit(Op::Flush),
        t::GET_ID => {
            let n = (in_len as usize).min(VIRTIO_BLK_ID_BYTES);
            Parsed::Now {
                status: status::OK,
                data: limits.id[..n].to_vec(),
            }
        }
        t::DISCARD if limits.features & features::DISCARD != 0 && !limits.read_only => {
            extents(mem, chain, payload, limits, false)
                .map_or_else(fail, |e| Parsed::Submit(Op::Discard(e)))
        }
        t::WRITE_ZEROES if limits.features & features::WRITE_ZEROES != 0 && !limits.read_only => {
            extents(mem, chain, payload, limits, true)
                .map_or_else(fail, |e| Parsed::Submit(Op::WriteZeroes(e)))
        }
        // Unknown types, and types whose feature was not negotiated.
        _ => fail(status::UNSUPP),
    })
}

/// Whether an IN/OUT transfer of `len` bytes at `sector` may go ahead: whole sectors inside
/// the capacity, and no more than the device advertised through `seg_max` × `size_max`.
fn transfer_ok(sector: u64, len: u32, limits: &Limits<'_>) -> bool {
    let len = u64::from(len);
    len.is_multiple_of(SECTOR_SIZE)
        && len <= u64::from(limits.max_transfer)
        && in_range(sector, len / SECTOR_SIZE, limits.capacity)
}

/// Reads and validates the segments of a discard (`zeroes` false) or write-zeroes request.
/// Every segment is checked before anything runs; the error is the status to report.
fn extents<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &DescriptorChain,
    payload: u32,
    limits: &Limits<'_>,
    zeroes: bool,
) -> Result<Vec<Extent>, u8> {
    let (max_seg, max_sectors) = if zeroes {
        (MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SECTORS)
    } else {
        (MAX_DISCARD_SEG, MAX_DISCARD_SECTORS)
    };
    let count = payload / DISCARD_SEGMENT_LEN;
    if payload == 0 || !payload.is_multiple_of(DISCARD_SEGMENT_LEN) || count > max_seg {
        return Err(status::UNSUPP);
    }
    let mut raw = vec![0u8; payload as usize];
    read_segments(
        mem,
        chain.readable(),
        u64::from(REQUEST_HEADER_LEN),
        &mut raw,
    )
    .map_err(|_| status::IOERR)?;
    let mut out = Vec::with_capacity(count as usize);
    for seg in raw.chunks_exact(DISCARD_SEGMENT_LEN as usize) {
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&seg[0..8]);
        let sector = u64::from_le_bytes(sector);
        let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
        // virtio spec 5.2.6.1: UNSUPP "for discard and write zeroes commands if any unknown
        // flag is set" and "for discard commands if the unmap flag is set".
        let allowed = if zeroes { WRITE_ZEROES_FLAG_UNMAP } else { 0 };
        if flags & !allowed != 0 {
            return Err(status::UNSUPP);
        }
        if sectors > max_sectors || !in_range(sector, u64::from(sectors), limits.capacity) {
            return Err(status::IOERR);
        }
        out.push(Extent {
            sector,
            sectors: u64::from(sectors),
            unmap: flags & WRITE_ZEROES_FLAG_UNMAP != 0,
        });
    }
    Ok(out)
}
