//! The verifying blk workload: random whole-block writes whose content encodes
//! `(lba, version, checksum)`, random reads that check the newest acknowledged version, and
//! flushes, with an exact ledger.
//!
//! All its state is plain data ([`BlkWorkload`], with [`BlkWorkload::encode`] and
//! [`BlkWorkload::decode`]), so a simulated VM can carry it with the guest across a migration.
//! [`BlkWorkload::pump`] and [`BlkWorkload::collect`] run it over a
//! [`BlkDriver`].
//!
//! Block content: `"VLMB"; le64 lba; le64 version; pattern(lba, version); le64 fnv`, the FNV-1a
//! hash over everything before it. A block never written reads as zeroes: version 0.
//!
//! At most one write per block is in flight, so versions of a block are written in order;
//! reads are planned regardless of writes in flight, and a write may be planned for a block
//! being read. A read is checked sector by sector against the window `floor..=newest`: the
//! newest version acknowledged when it was submitted, to the newest issued when it completed.
//! virtio-blk does not order requests in flight, so a read overlapping an uncompleted write may
//! return, per sector, the old or the new data — and nothing else (spec-decisions §7); with no
//! write in flight the window is exactly the acknowledged version. Verdicts: a sector older
//! than the window is *lost* (an acknowledged write vanished); a sector of no version of the
//! block (a bad checksum, the wrong lba, a version never issued, bytes of two versions inside
//! one sector) is *corrupted*; a completion for a request not in flight is *duplicated*.
//! Requests that never complete are *lost* once the caller gives up on them
//! ([`BlkWorkload::declare_lost`]). A request the device answers with a status other than OK
//! is *failed* (the block's content is then one of its versions in flight, as above).

use vm_memory::GuestMemory;

use super::config::status;
use super::driver::{BlkCompletion, BlkDriver, BlkDriverError, BlkRequest};

const MAGIC: [u8; 4] = *b"VLMB";
/// The unit a read is checked in: virtio-blk's sector.
const SECTOR: usize = 512;

/// What a read's data says about the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadVerdict {
    Verified,
    Lost,
    Corrupted,
}
const STATE_MAGIC: [u8; 4] = *b"VLMW";
/// Counters in [`BlkReport`], in encoding order.
const COUNTERS: usize = 10;

/// The workload's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkReport {
    /// Requests submitted.
    pub issued: u64,
    /// Requests completed (any status).
    pub completed: u64,
    /// Reads whose content verified.
    pub verified: u64,
    /// Reads that saw an older version than acknowledged, and requests given up on.
    pub lost: u64,
    /// Completions of requests not in flight.
    pub duplicated: u64,
    /// Reads with a bad checksum, wrong lba or a version never written.
    pub corrupted: u64,
    /// Requests completed with a status other than OK.
    pub failed: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Reads completed.
    pub reads: u64,
    /// Flushes completed.
    pub flushes: u64,
}

impl BlkReport {
    fn words(&self) -> [u64; COUNTERS] {
        [
            self.issued,
            self.completed,
            self.verified,
            self.lost,
            self.duplicated,
            self.corrupted,
            self.failed,
            self.writes,
            self.reads,
            self.flushes,
        ]
    }

    fn from_words(w: [u64; COUNTERS]) -> Self {
        let [issued, completed, verified, lost, duplicated, corrupted, failed, writes, reads, flushes] =
            w;
        Self {
            issued,
            completed,
            verified,
            lost,
            duplicated,
            corrupted,
            failed,
            writes,
            reads,
            flushes,
        }
    }
}

/// One operation of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkOp {
    /// Write `version` of block `lba`.
    Write {
        /// Block.
        lba: u64,
        /// Version written.
        version: u64,
    },
    /// Read block `lba`; `floor` was the newest acknowledged version at submission.
    Read {
        /// Block.
        lba: u64,
        /// Oldest version the read may see.
        floor: u64,
    },
    /// Flush.
    Flush,
}

/// A request in flight: where it was submitted and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Queue index.
    pub queue: u16,
    /// Chain id.
    pub id: u16,
    /// The operation.
    pub op: BlkOp,
}

/// xorshift64: reproducible pseudo-random choices for workloads and the tests that drive them
/// (the state must not be 0).
#[derive(Clone, Copy, Debug)]
pub struct Xorshift64(pub u64);

impl Xorshift64 {
    /// Advances the state and returns it.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The workload's state (plain data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkWorkload {
    /// Blocks the workload uses (from block 0).
    pub blocks: u64,
    /// Bytes per block (a multiple of 512, at least 512).
    pub block_len: u32,
    /// xorshift64 state.
    pub rng: u64,
    /// Per block: newest acknowledged version.
    pub acked: Vec<u64>,
    /// Per block: newest version submitted.
    pub issued: Vec<u64>,
    /// Requests in flight.
    pub inflight: Vec<InFlight>,
    /// The counters.
    pub report: BlkReport,
}

impl BlkWorkload {
    /// A workload on `blocks` blocks of `block_len` bytes (rounded up to a multiple of 512),
    /// choices from `seed`.
    pub fn new(blocks: u64, block_len: u32, seed: u64) -> Self {
        let n = usize::try_from(blocks).unwrap_or(0);
        Self {
            blocks: n as u64,
            block_len: block_len.max(512).next_multiple_of(512),
            rng: seed | 1,
            acked: vec![0; n],
            issued: vec![0; n],
            inflight: Vec::new(),
            report: BlkReport::default(),
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = Xorshift64(self.rng);
        self.rng = x.next_u64();
        self.rng
    }

    fn writing(&self, lba: u64) -> bool {
        self.inflight
            .iter()
            .any(|f| matches!(f.op, BlkOp::Write { lba: l, .. } if l == lba))
    }

    /// Chooses the next operation (not yet recorded: see [`Self::issued`]): 45 % writes, 45 %
    /// reads, 10 % flushes. A write to a block with a write in flight becomes a flush (versions
    /// of a block are written in order); reads and writes of one block may be in flight at once
    /// (a read then sees, per sector, one of the versions in its window).
    pub fn plan(&mut self) -> BlkOp {
        let roll = self.next() % 20;
        if self.blocks == 0 || roll >= 18 {
            return BlkOp::Flush;
        }
        let lba = self.next() % self.blocks;
        let i = lba as usize;
        if roll < 9 {
            if self.writing(lba) {
                return BlkOp::Flush;
            }
            BlkOp::Write {
                lba,
                version: self.issued[i] + 1,
            }
        } else {
            BlkOp::Read {
                lba,
                floor: self.acked[i],
            }
        }
    }

    /// Records `op` as submitted on `queue` with chain id `id`.
    pub fn issued(&mut self, queue: u16, id: u16, op: BlkOp) {
        if let BlkOp::Write { lba, version } = op {
            if let Some(v) = self.issued.get_mut(lba as usize) {
                *v = (*v).max(version);
            }
        }
        self.report.issued += 1;
        self.inflight.push(InFlight { queue, id, op });
    }

    /// The content of `version` of block `lba` (zeroes for version 0).
    pub fn block(&self, lba: u64, version: u64) -> Vec<u8> {
        let len = self.block_len as usize;
        let mut b = vec![0u8; len];
        if version == 0 {
            return b;
        }
        b[..4].copy_from_slice(&MAGIC);
        b[4..12].copy_from_slice(&lba.to_le_bytes());
        b[12..20].copy_from_slice(&version.to_le_bytes());
        for (i, x) in b[20..len - 8].iter_mut().enumerate() {
            *x =
                (lba.wrapping_mul(31) ^ version.wrapping_mul(131)).wrapping_add(i as u64 * 7) as u8;
        }
        let sum = fnv(&b[..len - 8]);
        b[len - 8..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Checks read data of block `lba` sector by sector against versions `floor..=newest`.
    fn check_read(&self, lba: u64, floor: u64, newest: u64, data: &[u8]) -> ReadVerdict {
        if data.len() != self.block_len as usize || floor > newest {
            return ReadVerdict::Corrupted;
        }
        let window: Vec<Vec<u8>> = (floor..=newest).map(|v| self.block(lba, v)).collect();
        let mut older: Option<Vec<Vec<u8>>> = None;
        let mut verdict = ReadVerdict::Verified;
        for (k, sector) in data.chunks(SECTOR).enumerate() {
            let range = k * SECTOR..(k + 1) * SECTOR;
            if window.iter().any(|b| b[range.clone()] == *sector) {
                continue;
            }
            let older =
                older.get_or_insert_with(|| (0..floor).map(|v| self.block(lba, v)).collect());
            if older.iter().any(|b| b[range.clone()] == *sector) {
                verdict = ReadVerdict::Lost;
            } else {
                return ReadVerdict::Corrupted;
            }
        }
        verdict
    }

    /// Counts a completion from the driver.
    pub fn complete(&mut self, c: &BlkCompletion) {
        let Some(at) = self
            .inflight
            .iter()
            .position(|f| f.queue == c.queue && f.id == c.id)
        else {
            self.report.duplicated += 1;
            return;
        };
        let f = self.inflight.swap_remove(at);
        self.report.completed += 1;
        if c.status != status::OK {
            self.report.failed += 1;
            return;
        }
        match f.op {
            BlkOp::Write { lba, version } => {
                self.report.writes += 1;
                if let Some(a) = self.acked.get_mut(lba as usize) {
                    *a = (*a).max(version);
                }
            }
            BlkOp::Flush => self.report.flushes += 1,
            BlkOp::Read { lba, floor } => {
                self.report.reads += 1;
                let newest = self.issued.get(lba as usize).copied().unwrap_or(0);
                match self.check_read(lba, floor, newest, &c.data) {
                    ReadVerdict::Verified => self.report.verified += 1,
                    ReadVerdict::Lost => self.report.lost += 1,
                    ReadVerdict::Corrupted => self.report.corrupted += 1,
                }
            }
        }
    }

    /// Gives up on every request in flight, counting it lost; returns how many.
    pub fn declare_lost(&mut self) -> u64 {
        let n = self.inflight.len() as u64;
        self.inflight.clear();
        self.report.lost += n;
        n
    }

    /// Submits operations on `queue` until `depth` of the workload's requests are in flight
    /// there or the queue is full; returns how many were submitted.
    pub fn pump<M: GuestMemory>(
        &mut self,
        driver: &mut BlkDriver<M>,
        queue: u16,
        depth: usize,
    ) -> Result<usize, BlkDriverError> {
        let mut n = 0;
        while self.inflight.iter().filter(|f| f.queue == queue).count() < depth {
            let op = self.plan();
            let data;
            let request = match op {
                BlkOp::Write { lba, version } => {
                    data = self.block(lba, version);
                    BlkRequest::Write {
                        sector: lba * u64::from(self.block_len / 512),
                        data: &data,
                    }
                }
                BlkOp::Read { lba, .. } => BlkRequest::Read {
                    sector: lba * u64::from(self.block_len / 512),
                    len: self.block_len,
                },
                BlkOp::Flush => BlkRequest::Flush,
            };
            let Some(id) = driver.add(queue, request)? else {
                break;
            };
            self.issued(queue, id, op);
            n += 1;
        }
        if n > 0 {
            driver.kick(queue)?;
        }
        Ok(n)
    }

    /// Collects and counts the completions of `queue`; returns how many.
    pub fn collect<M: GuestMemory>(
        &mut self,
        driver: &mut BlkDriver<M>,
        queue: u16,
    ) -> Result<usize, BlkDriverError> {
        let done = driver.collect(queue)?;
        for c in &done {
            self.complete(c);
        }
        Ok(done.len())
    }

    /// The state as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = STATE_MAGIC.to_vec();
        out.extend_from_slice(&self.blocks.to_le_bytes());
        out.extend_from_slice(&self.block_len.to_le_bytes());
        out.extend_from_slice(&self.rng.to_le_bytes());
        for w in self.report.words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in self.acked.iter().chain(&self.issued) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.inflight.len() as u32).to_le_bytes());
        for f in &self.inflight {
            let (tag, a, b) = match f.op {
                BlkOp::Write { lba, version } => (0u8, lba, version),
                BlkOp::Read { lba, floor } => (1, lba, floor),
                BlkOp::Flush => (2, 0, 0),
            };
            out.extend_from_slice(&f.queue.to_le_bytes());
            out.extend_from_slice(&f.id.to_le_bytes());
            out.push(tag);
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }

    /// The state [`Self::encode`] wrote; `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != STATE_MAGIC {
            return None;
        }
        let blocks = r.u64()?;
        let block_len = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let rng = r.u64()?;
        let mut words = [0u64; COUNTERS];
        for w in &mut words {
            *w = r.u64()?;
        }
        // Bounded by the input: every block takes 16 bytes.
        if blocks > (bytes.len() / 16) as u64 || block_len < 512 || block_len % 512 != 0 {
            return None;
        }
        let n = blocks as usize;
        let acked = (0..n).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
        let issued = (0..n).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
        let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let mut w = Self {
            blocks,
            block_len,
            rng,
            acked,
            issued,
            inflight: Vec::new(),
            report: BlkReport::from_words(words),
        };
        for _ in 0..count {
            let queue = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let id = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let tag = r.take(1)?[0];
            let (a, b) = (r.u64()?, r.u64()?);
            let op = match tag {
                0 if a < blocks && !w.writing(a) => BlkOp::Write { lba: a, version: b },
                1 if a < blocks => BlkOp::Read { lba: a, floor: b },
                2 => BlkOp::Flush,
                _ => return None,
            };
            w.inflight.push(InFlight { queue, id, op });
        }
        let sane = rng != 0 && w.acked.iter().zip(&w.issued).all(|(a, i)| a <= i);
        (r.0.is_empty() && sane).then_some(w)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(w: &BlkWorkload, at: usize, st: u8, data: Vec<u8>) -> BlkCompletion {
        let f = w.inflight[at];
        BlkCompletion {
            queue: f.queue,
            id: f.id,
            kind: 0,
            status: st,
            used_len: 1,
            data,
        }
    }

    #[test]
    fn ledger_is_exact() {
        let mut w = BlkWorkload::new(4, 1024, 7);
        w.issued(0, 1, BlkOp::Write { lba: 2, version: 1 });
        w.issued(0, 2, BlkOp::Read { lba: 2, floor: 0 });
        // The read overlaps the unacknowledged write: either version verifies.
        let c = done(&w, 1, status::OK, w.block(2, 1));
        w.complete(&c);
        let c = done(&w, 0, status::OK, Vec::new());
        w.complete(&c);
        w.complete(&c);
        assert_eq!((w.report.verified, w.report.duplicated), (1, 1));
        // After the ack, version 0 is lost, a version never written or a damaged block corrupted.
        for (data, lost, corrupted) in [
            (w.block(2, 0), 1, 0),
            (w.block(2, 2), 1, 1),
            (w.block(1, 1), 1, 2),
        ] {
            w.issued(1, 9, BlkOp::Read { lba: 2, floor: 1 });
            let c = done(&w, 0, status::OK, data);
            w.complete(&c);
            assert_eq!((w.report.lost, w.report.corrupted), (lost, corrupted));
        }
        let mut bad = w.block(2, 1);
        bad[100] ^= 1;
        w.issued(1, 9, BlkOp::Read { lba: 2, floor: 1 });
        let c = done(&w, 0, status::OK, bad);
        w.complete(&c);
        assert_eq!(w.report.corrupted, 3);
        w.issued(1, 3, BlkOp::Flush);
        assert_eq!(BlkWorkload::decode(&w.encode()), Some(w.clone()));
        assert_eq!(BlkWorkload::decode(&w.encode()[..40]), None);
        assert_eq!(w.declare_lost(), 1);
        assert_eq!(w.report.lost, 2);
    }

    /// spec-decisions §7 (virtio-blk): a read overlapping an uncompleted write may return,
    /// per sector, the old or the new data, and never anything else.
    #[test]
    fn reads_are_checked_per_sector() {
        let mut w = BlkWorkload::new(4, 1024, 7);
        w.issued(0, 1, BlkOp::Write { lba: 1, version: 1 });
        let c = done(&w, 0, status::OK, Vec::new());
        w.complete(&c);
        w.issued(0, 2, BlkOp::Write { lba: 1, version: 2 });
        let (v1, v2) = (w.block(1, 1), w.block(1, 2));
        let mixed = |a: &[u8], b: &[u8], at: usize| [&a[..at], &b[at..]].concat();
        for (data, verdict) in [
            (mixed(&v1, &v2, 512), (1, 0, 0)),
            (mixed(&v2, &v1, 512), (2, 0, 0)),
            (mixed(&v1, &v2, 700), (2, 0, 1)),
            (mixed(&w.block(1, 0), &v2, 512), (2, 1, 1)),
        ] {
            w.issued(1, 9, BlkOp::Read { lba: 1, floor: 1 });
            let at = w.inflight.len() - 1;
            let c = done(&w, at, status::OK, data);
            w.complete(&c);
            let r = w.report;
            assert_eq!((r.verified, r.lost, r.corrupted), verdict);
        }
    }

    #[test]
    fn plans_never_overlap_writes() {
        let mut w = BlkWorkload::new(3, 512, 99);
        for i in 0..200u16 {
            let op = w.plan();
            if let BlkOp::Write { lba, .. } = op {
                assert!(!w.writing(lba));
            }
            w.issued(0, i, op);
        }
        assert_eq!(BlkWorkload::decode(&w.encode()), Some(w));
    }
}
