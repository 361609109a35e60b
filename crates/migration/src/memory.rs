//! The Memory section: guest-physical page ranges, each either page data or a zero marker (an
//! all-zero run of pages travels as 16 bytes, not 4 KiB per page).
//!
//! Payload: `le32 round; le32 count;` then `count` ranges, each `le64 guest_addr; le32 pages;
//! le32 kind;` followed, for kind 0 (DATA), by `pages * 4096` bytes; kind 1 (ZERO) has none.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::header::{Phase, MAX_MEMORY_DATA, MAX_MEMORY_RANGES, PAGE_SIZE};

/// Bytes before the first range.
pub const MEMORY_HEADER_LEN: usize = 8;
/// Bytes of one range descriptor.
pub const RANGE_HEADER_LEN: usize = 16;

const KIND_DATA: u32 = 0;
const KIND_ZERO: u32 = 1;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RangeHeader {
    guest_addr: U64,
    pages: U32,
    kind: U32,
}

const _: () = assert!(core::mem::size_of::<RangeHeader>() == RANGE_HEADER_LEN);

/// One Memory section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryChunk {
    /// Pre-copy round this belongs to (0 sends all RAM); informational for progress reports.
    pub round: u32,
    /// Pre-copy, or the final pages after the source stopped.
    pub phase: Phase,
    /// The ranges, in the order they are applied.
    pub ranges: Vec<MemoryRange>,
}

/// A run of guest-physical pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// Guest-physical address of the first page, page aligned.
    pub guest_addr: u64,
    /// Their contents.
    pub pages: Pages,
}

/// The contents of a [`MemoryRange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pages {
    /// This many pages, all zero.
    Zero(u32),
    /// Page data, a non-zero multiple of [`PAGE_SIZE`] bytes.
    Data(Vec<u8>),
}

impl MemoryRange {
    /// Number of pages.
    pub fn page_count(&self) -> u64 {
        match &self.pages {
            Pages::Zero(n) => u64::from(*n),
            Pages::Data(d) => (d.len() / PAGE_SIZE) as u64,
        }
    }

    /// One past the last byte, if it fits the address space.
    pub fn end(&self) -> Option<u64> {
        self.page_count()
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|len| self.guest_addr.checked_add(len))
    }

    /// Splits whole pages starting at `guest_addr` into runs of data and zero markers.
    pub fn from_pages(guest_addr: u64, data: &[u8]) -> Vec<MemoryRange> {
        split_runs(guest_addr, data)
            .iter()
            .map(RangeRef::to_owned)
            .collect()
    }

    /// The range with its data borrowed.
    pub fn as_ref(&self) -> RangeRef<'_> {
        RangeRef {
            guest_addr: self.guest_addr,
            pages: match &self.pages {
                Pages::Zero(n) => PagesRef::Zero(*n),
                Pages::Data(d) => PagesRef::Data(d),
            },
        }
    }
}

/// A Memory section whose page data is borrowed (from the reader's buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryChunkRef<'a> {
    /// As [`MemoryChunk::round`].
    pub round: u32,
    /// As [`MemoryChunk::phase`].
    pub phase: Phase,
    /// The ranges, in the order they are applied.
    pub ranges: Vec<RangeRef<'a>>,
}

impl MemoryChunkRef<'_> {
    /// The same section with its data copied out.
    pub fn to_owned(&self) -> MemoryChunk {
        MemoryChunk {
            round: self.round,
            phase: self.phase,
            ranges: self.ranges.iter().map(RangeRef::to_owned).collect(),
        }
    }
}

/// A range whose data is borrowed: from the sender's buffer, so page data goes to the wire
/// without a copy, or from the reader's, so it goes to guest RAM without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeRef<'a> {
    /// Guest-physical address of the first page, page aligned.
    pub guest_addr: u64,
    /// Their contents.
    pub pages: PagesRef<'a>,
}

impl RangeRef<'_> {
    /// The same range with its data copied out.
    pub fn to_owned(&self) -> MemoryRange {
        MemoryRange {
            guest_addr: self.guest_addr,
            pages: match self.pages {
                PagesRef::Zero(n) => Pages::Zero(n),
                PagesRef::Data(d) => Pages::Data(d.to_vec()),
            },
        }
    }

    /// Number of pages.
    pub fn page_count(&self) -> u64 {
        match self.pages {
            PagesRef::Zero(n) => u64::from(n),
            PagesRef::Data(d) => (d.len() / PAGE_SIZE) as u64,
        }
    }

    /// One past the last byte, if it fits the address space.
    pub fn end(&self) -> Option<u64> {
        self.page_count()
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|len| self.guest_addr.checked_add(len))
    }
}

/// The contents of a [`RangeRef`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagesRef<'a> {
    /// This many pages, all zero.
    Zero(u32),
    /// Page data, a non-zero multiple of [`PAGE_SIZE`] bytes.
    Data(&'a [u8]),
}

/// One zero page: comparing against it is a `memcmp`, fast in every build profile (a byte loop
/// is not, and every page of every round goes through here).
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

fn is_zero(page: &[u8]) -> bool {
    page.len() <= PAGE_SIZE && page == &ZERO_PAGE[..page.len()]
}

/// Runs of equal zero-ness over whole pages; the caller has checked that `data` is whole pages.
pub(crate) fn split_runs(guest_addr: u64, data: &[u8]) -> Vec<RangeRef<'_>> {
    let mut runs: Vec<RangeRef<'_>> = Vec::new();
    let pages: Vec<bool> = data.chunks(PAGE_SIZE).map(is_zero).collect();
    let mut i = 0usize;
    while i < pages.len() {
        let zero = pages[i];
        let mut j = i;
        // A u32 page count bounds a zero run; data runs are bounded by the section split later.
        while j < pages.len() && pages[j] == zero && (j - i) < u32::MAX as usize {
            j += 1;
        }
        let bytes = &data[i * PAGE_SIZE..(j * PAGE_SIZE).min(data.len())];
        let addr = guest_addr.wrapping_add((i * PAGE_SIZE) as u64);
        runs.push(RangeRef {
            guest_addr: addr,
            pages: if zero {
                PagesRef::Zero((j - i) as u32)
            } else {
                PagesRef::Data(bytes)
            },
        });
        i = j;
    }
    runs
}

/// Cuts runs into groups that each fit one section (data and range-count limits), splitting a
/// data run that straddles the limit.
pub(crate) fn pack_sections(runs: Vec<RangeRef<'_>>) -> Vec<Vec<RangeRef<'_>>> {
    let mut sections = Vec::new();
    let mut current: Vec<RangeRef<'_>> = Vec::new();
    let mut data_left = MAX_MEMORY_DATA;
    for run in runs {
        let mut run = run;
        loop {
            if current.len() == MAX_MEMORY_RANGES {
                sections.push(core::mem::take(&mut current));
                data_left = MAX_MEMORY_DATA;
            }
            match run.pages {
                PagesRef::Zero(_) => {
                    current.push(run);
                    break;
                }
                PagesRef::Data(d) if d.len() <= data_left => {
                    data_left -= d.len();
                    current.push(run);
                    break;
                }
                PagesRef::Data(d) => {
                    let take = data_left - data_left % PAGE_SIZE;
                    if take > 0 {
                        current.push(RangeRef {
                            guest_addr: run.guest_addr,
                            pages: PagesRef::Data(&d[..take]),
                        });
                    }
                    sections.push(core::mem::take(&mut current));
                    data_left = MAX_MEMORY_DATA;
                    run = RangeRef {
                        guest_addr: run.guest_addr.wrapping_add(take as u64),
                        pages: PagesRef::Data(&d[take..]),
                    };
                }
            }
        }
    }
    if !current.is_empty() {
        sections.push(current);
    }
    sections
}

/// The rules a reader enforces, checked before sending: counts, alignment, whole pages, no
/// overflow of the address space.
pub(crate) fn check_ranges(ranges: &[RangeRef<'_>]) -> Result<(), String> {
    if ranges.len() > MAX_MEMORY_RANGES {
        return Err(format!(
            "{} ranges, limit {MAX_MEMORY_RANGES}",
            ranges.len()
        ));
    }
    let mut data = 0usize;
    for (i, r) in ranges.iter().enumerate() {
        let pages = match r.pages {
            PagesRef::Zero(n) => u64::from(n),
            PagesRef::Data(d) => {
                if !d.len().is_multiple_of(PAGE_SIZE) || d.len() / PAGE_SIZE > u32::MAX as usize {
                    return Err(format!("range {i}: {} bytes are not whole pages", d.len()));
                }
                data = data.saturating_add(d.len());
                (d.len() / PAGE_SIZE) as u64
            }
        };
        check_range(i, r.guest_addr, pages)?;
    }
    if data > MAX_MEMORY_DATA {
        return Err(format!(
            "{data} bytes of page data, limit {MAX_MEMORY_DATA}"
        ));
    }
    Ok(())
}

fn check_range(i: usize, guest_addr: u64, pages: u64) -> Result<(), String> {
    if !guest_addr.is_multiple_of(PAGE_SIZE as u64) {
        return Err(format!(
            "range {i}: guest address {guest_addr:#x} is not page aligned"
        ));
    }
    if pages == 0 {
        return Err(format!("range {i} at {guest_addr:#x} has no pages"));
    }
    if pages
        .checked_mul(PAGE_SIZE as u64)
        .and_then(|len| guest_addr.checked_add(len))
        .is_none()
    {
        return Err(format!(
            "range {i} at {guest_addr:#x} of {pages} pages overflows the address space"
        ));
    }
    Ok(())
}

/// Payload length of a section holding `ranges` (already checked).
pub(crate) fn payload_len(ranges: &[RangeRef<'_>]) -> usize {
    ranges.iter().fold(MEMORY_HEADER_LEN, |acc, r| {
        acc + RANGE_HEADER_LEN
            + match r.pages {
                PagesRef::Zero(_) => 0,
                PagesRef::Data(d) => d.len(),
            }
    })
}

/// Feeds the payload to `emit` in pieces: small headers, and page data as borrowed slices.
pub(crate) fn emit_payload<E>(
    round: u32,
    ranges: &[RangeRef<'_>],
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut head = [0u8; MEMORY_HEADER_LEN];
    head[..4].copy_from_slice(&round.to_le_bytes());
    head[4..].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
    emit(&head)?;
    for r in ranges {
        let (pages, kind, data) = match r.pages {
            PagesRef::Zero(n) => (n, KIND_ZERO, None),
            PagesRef::Data(d) => ((d.len() / PAGE_SIZE) as u32, KIND_DATA, Some(d)),
        };
        let h = RangeHeader {
            guest_addr: U64::new(r.guest_addr),
            pages: U32::new(pages),
            kind: U32::new(kind),
        };
        emit(h.as_bytes())?;
        if let Some(d) = data {
            emit(d)?;
        }
    }
    Ok(())
}

/// Decodes and validates a Memory payload.
pub(crate) fn decode(phase: Phase, payload: &[u8]) -> Result<MemoryChunk, String> {
    decode_ref(phase, payload).map(|chunk| chunk.to_owned())
}

/// Decodes and validates a Memory payload, the page data borrowed from it (the destination
/// writes it to guest RAM from the reader's buffer: no copy in between).
pub(crate) fn decode_ref(phase: Phase, payload: &[u8]) -> Result<MemoryChunkRef<'_>, String> {
    let Some((head, mut rest)) = payload.split_at_checked(MEMORY_HEADER_LEN) else {
        return Err(format!(
            "{} bytes, shorter than the 8-byte Memory header",
            payload.len()
        ));
    };
    let round = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if count > MAX_MEMORY_RANGES {
        return Err(format!("{count} ranges, limit {MAX_MEMORY_RANGES}"));
    }
    // Every range takes at least its descriptor, so this bounds the allocation by the payload.
    let mut ranges = Vec::with_capacity(count.min(rest.len() / RANGE_HEADER_LEN));
    let mut data_total = 0usize;
    for i in 0..count {
        let Ok((h, tail)) = RangeHeader::read_from_prefix(rest) else {
            return Err(format!("range {i}: descriptor cut short"));
        };
        rest = tail;
        let pages = h.pages.get();
        let guest_addr = h.guest_addr.get();
        check_range(i, guest_addr, u64::from(pages))?;
        let pages = match h.kind.get() {
            KIND_ZERO => PagesRef::Zero(pages),
            KIND_DATA => {
                let len = (pages as usize)
                    .checked_mul(PAGE_SIZE)
                    .filter(|&l| l <= rest.len());
                let Some(len) = len else {
                    return Err(format!(
                        "range {i}: {pages} pages of data but {} bytes left",
                        rest.len()
                    ));
                };
                data_total += len;
                if data_total > MAX_MEMORY_DATA {
                    return Err(format!("more than {MAX_MEMORY_DATA} bytes of page data"));
                }
                let (d, tail) = rest.split_at(len);
                rest = tail;
                PagesRef::Data(d)
            }
            other => return Err(format!("range {i}: unknown range kind {other}")),
        };
        ranges.push(RangeRef { guest_addr, pages });
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last range", rest.len()));
    }
    Ok(MemoryChunkRef {
        round,
        phase,
        ranges,
    })
}
