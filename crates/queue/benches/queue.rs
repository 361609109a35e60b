//! Device-side throughput of our virtqueues against rust-vmm's `virtio-queue` 0.18.
//!
//! One measured iteration is what a device does with one batch: take every available chain,
//! walk its buffers (summing their lengths), return it used, publish the used entries (ours: once
//! per batch; `virtio-queue` stores used.idx in every `add_used`, which is its design) and decide
//! once whether to notify the driver. The driver side (collecting the previous batch's used
//! buffers, re-enabling interrupts, adding and publishing the next batch) runs between
//! measurements and is not timed.
//!
//! Every implementation runs on its own guest memory with the identical layout: same memory
//! size, same ring addresses, same descriptor addresses and lengths, same indirect tables. The
//! split rings of both split implementations are filled by our `SplitDriver`, so `virtio-queue`
//! reads exactly the bytes our `SplitQueue` reads (checked once before measuring). The queues run
//! on forever, so indices advance and wrap naturally.
//!
//! Workloads, queue size 256, EVENT_IDX and INDIRECT_DESC negotiated:
//! - `take_return/1desc`: 256 chains of one writable descriptor;
//! - `take_return/4desc`: 64 chains of 2 readable + 2 writable descriptors;
//! - `take_return/indirect`: 256 chains, each one descriptor pointing to an indirect table of
//!   2 readable + 2 writable buffers.
//!
//! Each batch is checked: chain count, bytes walked, used lengths the driver collects, and the
//! notification decision (the driver re-enables interrupts before every batch, so every batch
//! must ask for one).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use virtio_lm_queue::{
    BufferSpec, DescriptorChain, DeviceQueue, PackedDriver, PackedQueue, QueueConfig, RingFeatures,
    RingKind, SplitDriver, SplitQueue, UsedBuffer,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Entries per queue (both formats).
const QUEUE_SIZE: u16 = 256;
/// Guest memory per implementation.
const MEM_SIZE: usize = 4 << 20;
/// Where the ring starts.
const RING_BASE: u64 = 0;
/// Indirect tables: one of `TABLE_STRIDE` bytes per chain of the batch.
const TABLE_BASE: u64 = 0x1_0000;
const TABLE_STRIDE: u64 = 0x40;
/// Data buffers: one area of `DATA_STRIDE` bytes per chain of the batch.
const DATA_BASE: u64 = 0x2_0000;
const DATA_STRIDE: u64 = 0x2000;
/// Everything the driver side writes lies below this (rings and indirect tables).
const METADATA_END: usize = DATA_BASE as usize;

const FEATURES: RingFeatures = RingFeatures {
    event_idx: true,
    indirect_desc: true,
};

/// A batch the driver makes available before each measured iteration.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Criterion group name.
    group: &'static str,
    /// Chains per batch.
    chains: u16,
    /// Chains go through indirect tables.
    indirect: bool,
    /// The buffers of every chain: (offset in the chain's data area, length, writable).
    buffers: &'static [(u64, u32, bool)],
}

const ONE_DESC: Workload = Workload {
    group: "take_return/1desc",
    chains: 256,
    indirect: false,
    buffers: &[(0, 2048, true)],
};

const FOUR_DESC_BUFFERS: &[(u64, u32, bool)] = &[
    (0, 16, false),
    (0x400, 1024, false),
    (0x800, 2048, true),
    (0x1800, 1, true),
];

const FOUR_DESC: Workload = Workload {
    group: "take_return/4desc",
    chains: 64,
    indirect: false,
    buffers: FOUR_DESC_BUFFERS,
};

const INDIRECT: Workload = Workload {
    group: "take_return/indirect",
    chains: 256,
    indirect: true,
    buffers: FOUR_DESC_BUFFERS,
};

impl Workload {
    /// The buffers of chain `k` of the batch.
    fn buffers(&self, k: u16) -> Vec<BufferSpec> {
        let area = DATA_BASE + u64::from(k) * DATA_STRIDE;
        self.buffers
            .iter()
            .map(|&(offset, len, writable)| {
                if writable {
                    BufferSpec::writable(area + offset, len)
                } else {
                    BufferSpec::readable(area + offset, len)
                }
            })
            .collect()
    }

    /// The indirect table of chain `k` of the batch.
    fn table(&self, k: u16) -> GuestAddress {
        GuestAddress(TABLE_BASE + u64::from(k) * TABLE_STRIDE)
    }

    /// Bytes a chain spans (readable and writable).
    fn chain_bytes(&self) -> u64 {
        self.buffers.iter().map(|&(_, len, _)| u64::from(len)).sum()
    }

    /// Writable bytes of a chain: the used length the device reports.
    fn chain_written(&self) -> u32 {
        self.buffers
            .iter()
            .filter(|b| b.2)
            .map(|&(_, len, _)| len)
            .sum()
    }
}

/// What the device side did with one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Outcome {
    chains: u32,
    bytes: u64,
    notify: bool,
}

/// The driver model that fills the ring between measurements.
trait BenchDriver {
    fn new(config: QueueConfig, mem: &GuestMemoryMmap) -> Self;
    fn add(&mut self, mem: &GuestMemoryMmap, workload: &Workload, k: u16);
    fn publish(&mut self, mem: &GuestMemoryMmap);
    fn enable_interrupts(&mut self, mem: &GuestMemoryMmap);
    fn collect(&mut self, mem: &GuestMemoryMmap) -> Vec<UsedBuffer>;
}

/// Both drivers have the same inherent methods; one body serves them.
macro_rules! bench_driver {
    ($driver:ident, $name:literal) => {
        impl BenchDriver for $driver {
            fn new(config: QueueConfig, mem: &GuestMemoryMmap) -> Self {
                $driver::new(config, mem).expect(concat!($name, " driver"))
            }

            fn add(&mut self, mem: &GuestMemoryMmap, workload: &Workload, k: u16) {
                let buffers = workload.buffers(k);
                if workload.indirect {
                    self.add_indirect_chain(mem, &buffers, workload.table(k))
                } else {
                    self.add_chain(mem, &buffers)
                }
                .expect(concat!($name, " driver: add chain"));
            }

            fn publish(&mut self, mem: &GuestMemoryMmap) {
                $driver::publish(self, mem).expect(concat!($name, " driver: publish"));
            }

            fn enable_interrupts(&mut self, mem: &GuestMemoryMmap) {
                let pending =
                    $driver::enable_interrupts(self, mem).expect(concat!($name, " driver: enable"));
                assert!(!pending, "used buffers left uncollected");
            }

            fn collect(&mut self, mem: &GuestMemoryMmap) -> Vec<UsedBuffer> {
                self.collect_used(mem)
                    .expect(concat!($name, " driver: collect used"))
            }
        }
    };
}

bench_driver!(SplitDriver, "split");
bench_driver!(PackedDriver, "packed");

/// The device side under measurement.
trait BenchDevice {
    /// Takes and returns every available chain, then decides about the notification.
    fn batch(&mut self, mem: &GuestMemoryMmap) -> Outcome;
}

/// Our split or packed queue, driven through its batch calls (ring memory resolved once per
/// batch), reusing the chains' and the completion list's allocations.
struct Ours<Q> {
    queue: Q,
    chains: Vec<DescriptorChain>,
    used: Vec<(u16, u32)>,
}

impl<Q: DeviceQueue> BenchDevice for Ours<Q> {
    #[inline(never)]
    fn batch(&mut self, mem: &GuestMemoryMmap) -> Outcome {
        let mut out = Outcome::default();
        loop {
            let taken = self
                .queue
                .pop_batch(mem, &mut self.chains, usize::MAX)
                .expect("pop");
            if taken == 0 {
                break;
            }
            self.used.clear();
            for chain in &self.chains[..taken] {
                let mut written = 0u32;
                for seg in chain.segments() {
                    out.bytes += u64::from(seg.len);
                    if seg.writable {
                        written += seg.len;
                    }
                }
                self.used.push((chain.id(), written));
            }
            self.queue
                .add_used_batch(mem, &self.used)
                .expect("add_used");
            out.chains += taken as u32;
        }
        self.queue.publish_used(mem).expect("publish_used");
        out.notify = self
            .queue
            .needs_notification(mem)
            .expect("needs_notification");
        out
    }
}

/// rust-vmm's split queue.
struct VirtioQueue {
    queue: Queue,
}

impl BenchDevice for VirtioQueue {
    #[inline(never)]
    fn batch(&mut self, mem: &GuestMemoryMmap) -> Outcome {
        let mut out = Outcome::default();
        while let Some(chain) = self.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut written = 0u32;
            for desc in chain {
                out.bytes += u64::from(desc.len());
                if desc.is_write_only() {
                    written += desc.len();
                }
            }
            self.queue.add_used(mem, head, written).expect("add_used");
            out.chains += 1;
        }
        out.notify = self
            .queue
            .needs_notification(mem)
            .expect("needs_notification");
        out
    }
}

/// One implementation on its own guest memory, with the driver that feeds it.
struct Fixture<D, Q> {
    mem: GuestMemoryMmap,
    driver: D,
    device: Q,
    workload: Workload,
}

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

fn ring_config(kind: RingKind) -> QueueConfig {
    QueueConfig::contiguous(kind, QUEUE_SIZE, GuestAddress(RING_BASE), FEATURES).0
}

/// One of our queues of `kind` (split or packed) and its driver.
fn ours<D: BenchDriver, Q: DeviceQueue>(kind: RingKind, workload: Workload) -> Fixture<D, Ours<Q>> {
    let mem = guest_memory();
    let config = ring_config(kind);
    let driver = D::new(config, &mem);
    let queue = Q::new(config, &mem).expect("device queue");
    Fixture {
        mem,
        driver,
        device: Ours {
            queue,
            chains: Vec::new(),
            used: Vec::new(),
        },
        workload,
    }
}

fn ours_split(workload: Workload) -> Fixture<SplitDriver, Ours<SplitQueue>> {
    ours(RingKind::Split, workload)
}

fn ours_packed(workload: Workload) -> Fixture<PackedDriver, Ours<PackedQueue>> {
    ours(RingKind::Packed, workload)
}

fn virtio_queue(workload: Workload) -> Fixture<SplitDriver, VirtioQueue> {
    let mem = guest_memory();
    let config = ring_config(RingKind::Split);
    let driver = <SplitDriver as BenchDriver>::new(config, &mem);
    let mut queue = Queue::new(QUEUE_SIZE).expect("virtio-queue");
    queue.try_set_size(QUEUE_SIZE).expect("size");
    queue
        .try_set_desc_table_address(config.desc_table)
        .expect("desc table");
    queue
        .try_set_avail_ring_address(config.driver_area)
        .expect("avail ring");
    queue
        .try_set_used_ring_address(config.device_area)
        .expect("used ring");
    queue.set_event_idx(FEATURES.event_idx);
    queue.set_ready(true);
    assert!(queue.is_valid(&mem), "virtio-queue rejects the layout");
    Fixture {
        mem,
        driver,
        device: VirtioQueue { queue },
        workload,
    }
}

impl<D: BenchDriver, Q: BenchDevice> Fixture<D, Q> {
    /// Driver side, not measured: collects the previous batch (checking every used length),
    /// re-enables interrupts and makes the next batch available.
    fn refill(&mut self, first: bool) {
        let used = self.driver.collect(&self.mem);
        let expected = if first {
            0
        } else {
            usize::from(self.workload.chains)
        };
        assert_eq!(
            used.len(),
            expected,
            "{}: used buffers collected",
            self.workload.group
        );
        let written = self.workload.chain_written();
        assert!(
            used.iter().all(|u| u.len == written),
            "{}: wrong used length",
            self.workload.group
        );
        self.driver.enable_interrupts(&self.mem);
        for k in 0..self.workload.chains {
            self.driver.add(&self.mem, &self.workload, k);
        }
        self.driver.publish(&self.mem);
    }

    fn check(&self, out: Outcome) {
        let expected = Outcome {
            chains: u32::from(self.workload.chains),
            bytes: u64::from(self.workload.chains) * self.workload.chain_bytes(),
            notify: true,
        };
        assert_eq!(out, expected, "{}: device batch", self.workload.group);
    }

    /// One checked device batch outside any measurement.
    fn unmeasured_batch(&mut self) {
        let out = self.device.batch(&self.mem);
        self.check(out);
    }

    /// Runs one unmeasured round so the queue is warm and the checks have run once.
    fn prime(&mut self) {
        self.refill(true);
        self.unmeasured_batch();
    }

    /// `iters` measured batches, each preceded by an unmeasured refill.
    fn measure(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            self.refill(false);
            let start = Instant::now();
            let out = black_box(self.device.batch(black_box(&self.mem)));
            total += start.elapsed();
            self.check(out);
        }
        total
    }

    /// The driver-written part of guest memory (rings and indirect tables).
    fn metadata(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; METADATA_END];
        self.mem
            .read_slice(&mut bytes, GuestAddress(0))
            .expect("read metadata");
        bytes
    }
}

/// Checks over a few rounds that `virtio-queue` and our split queue see byte-identical rings and
/// indirect tables, and leave byte-identical used rings behind.
fn check_same_layout(workload: Workload) {
    let mut ours = ours_split(workload);
    let mut theirs = virtio_queue(workload);
    for round in 0..3 {
        ours.refill(round == 0);
        theirs.refill(round == 0);
        assert!(
            ours.metadata() == theirs.metadata(),
            "{}: guest memory layouts differ",
            workload.group
        );
        ours.unmeasured_batch();
        theirs.unmeasured_batch();
        assert!(
            ours.metadata() == theirs.metadata(),
            "{}: used rings differ",
            workload.group
        );
    }
}

fn take_return(c: &mut Criterion, workload: Workload) {
    check_same_layout(workload);
    let mut group = c.benchmark_group(workload.group);
    group.throughput(Throughput::Elements(u64::from(workload.chains)));

    let mut fixture = virtio_queue(workload);
    fixture.prime();
    group.bench_function("virtio-queue", |b| {
        b.iter_custom(|iters| fixture.measure(iters))
    });

    let mut fixture = ours_split(workload);
    fixture.prime();
    group.bench_function("split", |b| b.iter_custom(|iters| fixture.measure(iters)));

    let mut fixture = ours_packed(workload);
    fixture.prime();
    group.bench_function("packed", |b| b.iter_custom(|iters| fixture.measure(iters)));

    group.finish();
}

fn benches_1desc(c: &mut Criterion) {
    take_return(c, ONE_DESC);
}

fn benches_4desc(c: &mut Criterion) {
    take_return(c, FOUR_DESC);
}

fn benches_indirect(c: &mut Criterion) {
    take_return(c, INDIRECT);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = benches_1desc, benches_4desc, benches_indirect
}
criterion_main!(benches);
