//! The load generator of `virtio-lm bench-vhost-user-blk` (feature `frontend`): random reads or
//! writes of one block size at a fixed queue depth through a [`BlkFrontend`], timed per request,
//! with the backend process's CPU time read from `/proc` before and after
//! (docs/spec-decisions.md §23).
//!
//! The offsets come from a fixed-seed generator, so every backend sees the same sequence. With
//! `verify`, writes carry a stamp per sector and reads check it ([`stamp`], [`check_stamp`]):
//! the correctness mode of the CI test, never used when measuring.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use virtio_lm_devices::blk::config::{request_type, status};
use virtio_lm_queue::{BufferSpec, RingKind};
use vm_memory::{Bytes, GuestAddress};

use crate::frontend::{BlkFrontend, FrontendError, FrontendRing, ANSWER_TIMEOUT};

/// Sector size of the request header's `sector` field.
pub const SECTOR: u64 = 512;
/// Ring entries: room for [`MAX_QD`] requests of three descriptors.
pub const QUEUE_SIZE: u16 = 256;
/// Largest queue depth.
pub const MAX_QD: u16 = 64;
/// Largest block size: one data descriptor of at most the 64 KiB `size_max` our device has.
pub const MAX_BS: u32 = 64 * 1024;
/// Where request slots start in guest RAM (the ring lives below).
const SLOTS_BASE: u64 = 0x1_0000;
/// Header page of a slot; the data follows it.
const HEADER_LEN: u64 = 0x1000;

/// The I/O pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadWrite {
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Requests kept in flight, 1..=[`MAX_QD`].
    pub qd: u16,
    /// Bytes per request, a multiple of 512 up to [`MAX_BS`].
    pub bs: u32,
    /// Reads or writes.
    pub rw: ReadWrite,
    /// Stop submitting after this long.
    pub duration: Duration,
    /// Stop submitting after this many requests (whichever comes first).
    pub max_ios: Option<u64>,
    /// Split or packed ring.
    pub ring: RingKind,
    /// Stamp written sectors and check read ones (see the module documentation).
    pub verify: bool,
    /// The backend's pid when SO_PEERCRED cannot tell (a backend behind a proxy).
    pub backend_pid: Option<u32>,
}

impl BenchOptions {
    /// Refuses values outside the documented ranges (a usage error for the command).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_QD).contains(&self.qd) {
            return Err(format!("--qd {} not in 1..={MAX_QD}", self.qd));
        }
        if self.bs == 0 || self.bs > MAX_BS || u64::from(self.bs) % SECTOR != 0 {
            return Err(format!(
                "--bs {} is not a multiple of 512 up to {MAX_BS}",
                self.bs
            ));
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Requests completed.
    pub ios: u64,
    /// From the first submission to the last completion.
    pub elapsed: Duration,
    /// Latency percentiles, submission to completion seen: p50, p99, p99.9.
    pub latency: [Duration; 3],
    /// The backend's pid, if known.
    pub backend_pid: Option<u32>,
    /// The backend process's user + system CPU time during the run, if readable.
    pub backend_cpu: Option<Duration>,
}

impl BenchReport {
    /// I/Os per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Backend CPU seconds per million I/Os.
    pub fn cpu_seconds_per_million(&self) -> Option<f64> {
        let cpu = self.backend_cpu?.as_secs_f64();
        (self.ios > 0).then(|| cpu * 1e6 / self.ios as f64)
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The frontend or the backend failed.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// A request completed with a status other than OK.
    #[error("request at sector {sector} completed with status {status}")]
    Status {
        /// Its sector.
        sector: u64,
        /// The status byte.
        status: u8,
    },
    /// Data read back is not what was stamped there.
    #[error("sector {0}: data read back is not its stamp")]
    Verify(u64),
    /// An option is outside its range.
    #[error("{0}")]
    Options(String),
    /// The image is smaller than one block.
    #[error("the device's capacity ({0} sectors) holds no block of this size")]
    TooSmall(u64),
}

/// Fills `buf` (whole sectors) with the stamp of `first_sector` onwards in `generation`: per
/// sector its number and the generation (LE u64 each), then its number's low byte repeated.
pub fn stamp(buf: &mut [u8], first_sector: u64, generation: u64) {
    for (i, chunk) in buf.chunks_exact_mut(SECTOR as usize).enumerate() {
        let sector = first_sector + i as u64;
        chunk[..8].copy_from_slice(&sector.to_le_bytes());
        chunk[8..16].copy_from_slice(&generation.to_le_bytes());
        chunk[16..].fill(sector as u8);
    }
}

/// The generation of each sector of `buf` starting at `first_sector`, or the first sector
/// whose bytes are no stamp of it.
pub fn check_stamp(buf: &[u8], first_sector: u64) -> Result<Vec<u64>, u64> {
    let mut generations = Vec::new();
    for (i, chunk) in buf.chunks_exact(SECTOR as usize).enumerate() {
        let sector = first_sector + i as u64;
        let mut word = [0u8; 8];
        word.copy_from_slice(&chunk[..8]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&chunk[8..16]);
        if u64::from_le_bytes(word) != sector || chunk[16..].iter().any(|&b| b != sector as u8) {
            return Err(sector);
        }
        generations.push(u64::from_le_bytes(generation));
    }
    Ok(generations)
}

/// Guest RAM needed for `qd` slots of `bs` bytes.
fn slot_len(bs: u32) -> u64 {
    (HEADER_LEN + u64::from(bs) + 1).next_multiple_of(0x1000)
}

/// A fixed-seed xorshift generator: the same offsets for every backend.
struct Offsets(u64);

impl Offsets {
    fn next(&mut self, blocks: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % blocks
    }
}

/// One request slot in guest RAM and what is in flight in it.
#[derive(Clone, Copy)]
struct Slot {
    base: u64,
    sector: u64,
    submitted: Instant,
}

/// The run: the frontend, its ring and the slots.
struct Run<'a> {
    fe: BlkFrontend,
    ring: FrontendRing,
    options: &'a BenchOptions,
    blocks: u64,
    offsets: Offsets,
    slots: Vec<Slot>,
    by_id: HashMap<u16, usize>,
    latencies: Vec<u64>,
    submitted: u64,
}

impl Run<'_> {
    fn data_at(&self, slot: usize) -> u64 {
        self.slots[slot].base + HEADER_LEN
    }

    /// Puts slot `slot` on the ring with a new random block (not yet published).
    fn submit(&mut self, slot: usize) -> Result<(), BenchError> {
        let bs = u64::from(self.options.bs);
        let sector = self.offsets.next(self.blocks) * (bs / SECTOR);
        let base = self.slots[slot].base;
        let data_at = base + HEADER_LEN;
        let kind = match self.options.rw {
            ReadWrite::RandRead => request_type::IN,
            ReadWrite::RandWrite => request_type::OUT,
        };
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        let ram = |e: vm_memory::GuestMemoryError| FrontendError::Ring(e.to_string());
        self.fe
            .mem
            .write_slice(&header, GuestAddress(base))
            .map_err(ram)?;
        if self.options.verify && kind == request_type::OUT {
            let mut data = vec![0u8; bs as usize];
            stamp(&mut data, sector, 1);
            self.fe
                .mem
                .write_slice(&data, GuestAddress(data_at))
                .map_err(ram)?;
        }
        let data = match kind {
            request_type::OUT => BufferSpec::readable(data_at, self.options.bs),
            _ => BufferSpec::writable(data_at, self.options.bs),
        };
        let status_at = data_at + bs;
        self.fe
            .mem
            .write_slice(&[0xff], GuestAddress(status_at))
            .map_err(ram)?;
        let buffers = [
            BufferSpec::readable(base, 16),
            data,
            BufferSpec::writable(status_at, 1),
        ];
        let id = self
            .ring
            .driver
            .add_chain(&self.fe.mem, &buffers)
            .map_err(|e| FrontendError::Ring(e.to_string()))?;
        self.by_id.insert(id, slot);
        self.slots[slot].sector = sector;
        self.slots[slot].submitted = Instant::now();
        self.submitted += 1;
        Ok(())
    }

    /// Publishes what was added and kicks if the backend asks for it.
    fn publish(&mut self) -> Result<(), BenchError> {
        let ring = |e: virtio_lm_queue::DriverError| FrontendError::Ring(e.to_string());
        self.ring.driver.publish(&self.fe.mem).map_err(ring)?;
        if self.ring.driver.should_kick(&self.fe.mem).map_err(ring)? {
            self.ring.kick.write(1).map_err(FrontendError::Io)?;
        }
        Ok(())
    }

    /// Checks a completed slot: status OK, and with `verify` the stamps of what it read.
    fn complete(&mut self, slot: usize) -> Result<(), BenchError> {
        let Slot { sector, .. } = self.slots[slot];
        let status_at = self.data_at(slot) + u64::from(self.options.bs);
        let ram = |e: vm_memory::GuestMemoryError| FrontendError::Ring(e.to_string());
        let got: u8 = self.fe.mem.read_obj(GuestAddress(status_at)).map_err(ram)?;
        if got != status::OK {
            return Err(BenchError::Status {
                sector,
                status: got,
            });
        }
        if self.options.verify && self.options.rw == ReadWrite::RandRead {
            let mut data = vec![0u8; self.options.bs as usize];
            self.fe
                .mem
                .read_slice(&mut data, GuestAddress(self.data_at(slot)))
                .map_err(ram)?;
            check_stamp(&data, sector).map_err(BenchError::Verify)?;
        }
        Ok(())
    }

    /// Waits for the backend's call, after asking for one; false if used buffers are waiting.
    fn wait_call(&mut self) -> Result<(), BenchError> {
        let ring = |e: virtio_lm_queue::DriverError| FrontendError::Ring(e.to_string());
        if self
            .ring
            .driver
            .enable_interrupts(&self.fe.mem)
            .map_err(ring)?
        {
            return Ok(());
        }
        let mut poll = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.ring.call),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = ANSWER_TIMEOUT.as_millis() as i32;
        // SAFETY: one valid pollfd that outlives the call; poll(2) writes only its `revents`.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
        if ready == 0 {
            return Err(FrontendError::Backend(format!(
                "no completion within {} s",
                ANSWER_TIMEOUT.as_secs()
            ))
            .into());
        }
        let _ = self.ring.call.read();
        Ok(())
    }

    fn go(&mut self) -> Result<(Instant, Instant), BenchError> {
        let start = Instant::now();
        let deadline = start + self.options.duration;
        let more = |run: &Self| {
            Instant::now() < deadline && run.options.max_ios.is_none_or(|max| run.submitted < max)
        };
        for slot in 0..self.slots.len() {
            if more(self) {
                self.submit(slot)?;
            }
        }
        self.publish()?;
        let mut last = start;
        while !self.by_id.is_empty() {
            let used = self
                .ring
                .driver
                .collect_used(&self.fe.mem)
                .map_err(|e| FrontendError::Ring(e.to_string()))?;
            if used.is_empty() {
                self.wait_call()?;
                continue;
            }
            last = Instant::now();
            // Every id of the batch leaves the table before any slot goes back on the ring:
            // the driver may hand a freed id of this batch to a resubmission.
            let mut done = Vec::with_capacity(used.len());
            for buffer in used {
                let slot = self.by_id.remove(&buffer.id).ok_or_else(|| {
                    FrontendError::Backend(format!("used id {} was not in flight", buffer.id))
                })?;
                done.push(slot);
            }
            for slot in done {
                let latency = last.saturating_duration_since(self.slots[slot].submitted);
                self.latencies.push(latency.as_nanos() as u64);
                self.complete(slot)?;
                if more(self) {
                    self.submit(slot)?;
                }
            }
            self.publish()?;
        }
        Ok((start, last))
    }
}

/// The `per_mille`-th latency of `sorted` nanoseconds (nearest rank).
fn percentile(sorted: &[u64], per_mille: u64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as u64 * per_mille).div_ceil(1000).max(1);
    Duration::from_nanos(sorted[(rank - 1) as usize])
}

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of proc(5); the state (field 3) is fields[0].
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// Runs the load against the backend at `socket`.
pub fn run(socket: &Path, options: &BenchOptions) -> Result<BenchReport, BenchError> {
    options.check().map_err(BenchError::Options)?;
    let ram = SLOTS_BASE + u64::from(options.qd) * slot_len(options.bs);
    let mut fe = BlkFrontend::connect(socket, options.ring, ram)?;
    let config = fe.config(8)?;
    let mut capacity = [0u8; 8];
    capacity.copy_from_slice(&config[..8]);
    let capacity = u64::from_le_bytes(capacity);
    let blocks = capacity.saturating_mul(SECTOR) / u64::from(options.bs);
    if blocks == 0 {
        return Err(BenchError::TooSmall(capacity));
    }
    let ring = fe.start_ring(QUEUE_SIZE)?;
    let backend_pid = options.backend_pid.or_else(|| fe.backend_pid());
    let now = Instant::now();
    let slots = (0..u64::from(options.qd))
        .map(|i| Slot {
            base: SLOTS_BASE + i * slot_len(options.bs),
            sector: 0,
            submitted: now,
        })
        .collect();
    let mut run = Run {
        fe,
        ring,
        options,
        blocks,
        offsets: Offsets(0x9e37_79b9_7f4a_7c15),
        slots,
        by_id: HashMap::new(),
        latencies: Vec::new(),
        submitted: 0,
    };
    let cpu_before = backend_pid.and_then(process_cpu);
    let (start, last) = run.go()?;
    let cpu_after = backend_pid.and_then(process_cpu);
    let mut latencies = std::mem::take(&mut run.latencies);
    latencies.sort_unstable();
    Ok(BenchReport {
        ios: latencies.len() as u64,
        elapsed: last.saturating_duration_since(start),
        latency: [
            percentile(&latencies, 500),
            percentile(&latencies, 990),
            percentile(&latencies, 999),
        ],
        backend_pid,
        backend_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_check_and_name_the_first_bad_sector() {
        let mut buf = vec![0u8; 2048];
        stamp(&mut buf, 40, 3);
        assert_eq!(check_stamp(&buf, 40), Ok(vec![3; 4]));
        assert_eq!(check_stamp(&buf, 41), Err(41));
        buf[1024 + 100] ^= 1;
        assert_eq!(check_stamp(&buf, 40), Err(42));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 500), Duration::from_nanos(500));
        assert_eq!(percentile(&sorted, 999), Duration::from_nanos(999));
        assert_eq!(percentile(&[7], 999), Duration::from_nanos(7));
        assert_eq!(percentile(&[], 500), Duration::ZERO);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu(std::process::id()).is_some());
    }
}
