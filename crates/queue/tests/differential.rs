//! Differential tests: our split virtqueue (`SplitQueue`, device side) against rust-vmm's
//! `virtio-queue` 0.18 `Queue`, the reference split-ring device implementation.
//!
//! Each run owns two guest memories with the same layout. Both are driven by our `SplitDriver`
//! (one instance per memory; the driver is deterministic, so the two stay in lock step), and the
//! same operation sequence is applied to both devices. After every operation of the property
//! test the two memories must be byte-identical (descriptor table, available ring with
//! `used_event`, used ring with `avail_event`, indirect tables and the data area the devices
//! write into), popped chains must be the same, and the notification decisions must agree.
//!
//! Batching: `virtio-queue` stores `used.idx` inside every `add_used`, while ours defers it to
//! `publish_used`. A completion operation is therefore "add_used on both, then publish_used on
//! ours", and a batch operation is "k × add_used on both, then one publish_used on ours"; memory
//! is only compared once ours has published. Notification decisions are a separate step
//! (optionally right after the completion), so several completions can accumulate before one
//! decision: `virtio-queue` covers that window with its `num_added` counter, ours with the used
//! index at the last decision.
//!
//! Narrowing (see [`Harness::notify`]): without VIRTIO_F_EVENT_IDX, `virtio-queue` 0.18 does not
//! read `avail.flags` at all ("The VRING_AVAIL_F_NO_INTERRUPT flag isn't supported yet") and
//! answers `true` to every `needs_notification`, even when nothing was added since the last
//! decision. The spec (virtio 1.2 §2.7.7.2; virtio 1.4 "Split Virtqueues") only says the device SHOULD
//! NOT notify when `flags` is 1 and MUST notify when it is 0 after writing a used entry, so that
//! is a permitted (spurious-notification) difference. For that case the test checks that
//! `virtio-queue` says `true` and that ours implements the spec rule exactly: notify iff an entry
//! was published since the last decision and `avail.flags` is 0. With EVENT_IDX the decisions
//! must be equal.

use std::collections::VecDeque;

use proptest::collection::vec;
use proptest::prelude::*;
use virtio_lm_queue::{
    BufferSpec, DeviceQueue, QueueConfig, RingFeatures, RingKind, SplitDriver, SplitQueue,
    UsedBuffer,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

/// Guest memory size of each side; the whole of it is compared after every operation.
const MEM_SIZE: usize = 0x1_0000;
/// Where the queue starts (desc table, then avail ring, then used ring; at most 0x1a0e bytes
/// for size 256).
const QUEUE_BASE: u64 = 0x1000;
/// Indirect tables: one slot of `INDIRECT_SLOT` bytes per possible outstanding chain.
const INDIRECT_BASE: u64 = 0x4000;
/// Room for 4 indirect descriptors.
const INDIRECT_SLOT: u64 = 64;
/// Data buffers live in `DATA_BASE..MEM_SIZE`.
const DATA_BASE: u64 = 0x8000;
/// Largest buffer the generator produces.
const MAX_BUF_LEN: u16 = 256;
/// `avail.flags` bit VIRTQ_AVAIL_F_NO_INTERRUPT.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The same device-side call on our queue and on virtio-queue's (two types with the same method
/// names), each on its own memory.
macro_rules! both_devices {
    ($s:ident, $method:ident) => {
        (
            $s.ours
                .$method(&$s.ours_mem)
                .expect(concat!(stringify!($method), " (ours)")),
            $s.vq
                .$method(&$s.vq_mem)
                .expect(concat!(stringify!($method), " (virtio-queue)")),
        )
    };
}

/// One buffer of a generated chain: offset into the data area and length.
#[derive(Clone, Copy, Debug)]
struct Buf {
    off: u16,
    len: u16,
}

/// One driver or device step, applied to both sides.
#[derive(Clone, Debug)]
enum Op {
    /// Driver: add a chain of `bufs`; the first `readable % (bufs.len() + 1)` are device-readable,
    /// the rest device-writable. Indirect when `indirect` and VIRTIO_F_INDIRECT_DESC is on.
    /// Skipped when the driver lacks free descriptors.
    Add {
        bufs: Vec<Buf>,
        readable: u8,
        indirect: bool,
    },
    /// Driver: store avail.idx, then (if `kick`) decide whether to notify the device.
    Publish { kick: bool },
    /// Driver: ask for used-buffer notifications (used_event = last_used, or avail.flags = 0).
    EnableInterrupts,
    /// Driver: suppress used-buffer notifications.
    DisableInterrupts,
    /// Driver (EVENT_IDX only): used_event = device's next used index + `delta`.
    SetUsedEvent { delta: i8 },
    /// Driver: collect every used buffer.
    Collect,
    /// Device: take one chain.
    Pop,
    /// Device: write `len` bytes into in-flight chain `pick % inflight` and return it; publish;
    /// then, if `notify`, make a notification decision.
    Complete { pick: usize, len: u32, notify: bool },
    /// Device: complete several in-flight chains, then publish once (ours) and optionally decide.
    CompleteBatch {
        items: Vec<(usize, u32)>,
        notify: bool,
    },
    /// Device: publish (a no-op by now for ours) and make a notification decision.
    Notify,
    /// Device: ask for available-buffer notifications; compare "buffers already available".
    EnableNotification,
    /// Device: suppress available-buffer notifications.
    DisableNotification,
}

/// Flattened buffer descriptor: (guest address, length, device-writable).
type Seg = (u64, u32, bool);

/// A chain the device holds, as each side saw it when popping.
#[derive(Debug)]
struct Inflight {
    id: u16,
    ours: Vec<Seg>,
    theirs: Vec<Seg>,
}

struct Harness {
    config: QueueConfig,
    ours_mem: Mem,
    vq_mem: Mem,
    ours_drv: SplitDriver,
    vq_drv: SplitDriver,
    ours: SplitQueue,
    vq: Queue,
    /// Chains popped and not yet completed, in pop order.
    inflight: Vec<Inflight>,
    /// Used entries written and not yet collected, in used-ring order.
    used: VecDeque<UsedBuffer>,
    /// Free indirect-table slots, and the slot each outstanding indirect head uses.
    indirect_free: Vec<u64>,
    indirect_of: Vec<Option<u64>>,
    /// Ours has published used entries since its last notification decision.
    published_since_decision: bool,
    /// Completions so far; seeds the bytes the device writes.
    completions: u32,
}

fn new_mem() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

fn read_mem(mem: &Mem, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr))
        .expect("read guest memory");
    buf
}

/// The bytes a device writes for completion number `seq` of chain `id`, `len` bytes long.
fn pattern(id: u16, seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (u32::from(id).wrapping_mul(31) ^ seq.wrapping_mul(7) ^ i as u32) as u8)
        .collect()
}

/// Writes `len` bytes into the writable segments of `segs`, in order (the "processing").
fn fill(mem: &Mem, segs: &[Seg], id: u16, seq: u32, len: u32) {
    let mut left = len as usize;
    let mut done = 0usize;
    for &(addr, seg_len, writable) in segs {
        if left == 0 {
            break;
        }
        if !writable {
            continue;
        }
        let n = left.min(seg_len as usize);
        let bytes = pattern(id, seq, done + n);
        mem.write_slice(&bytes[done..], GuestAddress(addr))
            .expect("write data buffer");
        left -= n;
        done += n;
    }
    assert_eq!(left, 0, "completion length exceeds the writable part");
}

fn writable_len(segs: &[Seg]) -> u32 {
    segs.iter().filter(|s| s.2).map(|s| s.1).sum()
}

impl Harness {
    fn new(size: u16, features: RingFeatures) -> Self {
        let (config, end) =
            QueueConfig::contiguous(RingKind::Split, size, GuestAddress(QUEUE_BASE), features);
        assert!(end.0 <= INDIRECT_BASE, "queue overlaps the indirect tables");
        let ours_mem = new_mem();
        let vq_mem = new_mem();
        let ours_drv = SplitDriver::new(config, &ours_mem).expect("driver (ours)");
        let vq_drv = SplitDriver::new(config, &vq_mem).expect("driver (virtio-queue)");
        let ours = SplitQueue::new(config, &ours_mem).expect("SplitQueue::new");

        let mut vq = Queue::new(size).expect("Queue::new");
        vq.try_set_size(size).expect("size");
        vq.try_set_desc_table_address(config.desc_table)
            .expect("desc table");
        vq.try_set_avail_ring_address(config.driver_area)
            .expect("avail ring");
        vq.try_set_used_ring_address(config.device_area)
            .expect("used ring");
        vq.set_event_idx(features.event_idx);
        vq.set_ready(true);
        assert!(vq.is_valid(&vq_mem), "virtio-queue rejects the layout");

        let slots = u64::from(size);
        assert!(INDIRECT_BASE + slots * INDIRECT_SLOT <= DATA_BASE);
        let h = Self {
            config,
            ours_mem,
            vq_mem,
            ours_drv,
            vq_drv,
            ours,
            vq,
            inflight: Vec::new(),
            used: VecDeque::new(),
            indirect_free: (0..slots)
                .rev()
                .map(|i| INDIRECT_BASE + i * INDIRECT_SLOT)
                .collect(),
            indirect_of: vec![None; usize::from(size)],
            published_since_decision: false,
            completions: 0,
        };
        h.check_memory(true);
        h
    }

    fn event_idx(&self) -> bool {
        self.config.features.event_idx
    }

    /// Names the guest-memory area holding `addr`, for failure messages.
    fn area(&self, addr: u64) -> &'static str {
        let [desc_len, avail_len, used_len] = self.config.area_lengths();
        let desc = self.config.desc_table.0;
        let avail = self.config.driver_area.0;
        let used = self.config.device_area.0;
        if (desc..desc + desc_len).contains(&addr) {
            "descriptor table"
        } else if (avail..avail + avail_len - 2).contains(&addr) {
            "available ring"
        } else if (avail + avail_len - 2..avail + avail_len).contains(&addr) {
            "used_event"
        } else if (used..used + used_len - 2).contains(&addr) {
            "used ring"
        } else if (used + used_len - 2..used + used_len).contains(&addr) {
            "avail_event"
        } else if (INDIRECT_BASE..DATA_BASE).contains(&addr) {
            "indirect tables"
        } else if addr >= DATA_BASE {
            "data area"
        } else {
            "unused memory"
        }
    }

    /// Both memories byte-identical: the whole memory when `all`, else the three ring areas.
    fn check_memory(&self, all: bool) {
        let ranges: Vec<(u64, u64)> = if all {
            vec![(0, MEM_SIZE as u64)]
        } else {
            let areas = [
                self.config.desc_table.0,
                self.config.driver_area.0,
                self.config.device_area.0,
            ];
            areas.into_iter().zip(self.config.area_lengths()).collect()
        };
        for (start, len) in ranges {
            let ours = read_mem(&self.ours_mem, start, len as usize);
            let theirs = read_mem(&self.vq_mem, start, len as usize);
            // Slice equality is a memcmp even in debug builds; only search on a mismatch.
            if ours == theirs {
                continue;
            }
            if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
                let addr = start + i as u64;
                panic!(
                    "guest memory differs at {addr:#x} ({}): ours {:#04x}, virtio-queue {:#04x}",
                    self.area(addr),
                    ours[i],
                    theirs[i]
                );
            }
        }
    }

    /// Device-internal positions and the in-flight list agree with the model.
    fn check_state(&self) {
        assert_eq!(self.ours.next_avail(), self.vq.next_avail(), "next_avail");
        assert_eq!(self.ours.next_used(), self.vq.next_used(), "next_used");
        let inflight = self.ours.inflight();
        assert_eq!(usize::from(self.ours.inflight_len()), self.inflight.len());
        assert_eq!(inflight.len(), self.inflight.len());
        for (chain, model) in inflight.iter().zip(&self.inflight) {
            assert_eq!(chain.id(), model.id, "in-flight order");
            let segs: Vec<Seg> = chain
                .segments()
                .iter()
                .map(|s| (s.addr.0, s.len, s.writable))
                .collect();
            assert_eq!(segs, model.ours, "in-flight copy of chain {}", model.id);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add {
                bufs,
                readable,
                indirect,
            } => self.add(bufs, *readable, *indirect),
            Op::Publish { kick } => {
                self.drivers(|d, m| d.publish(m), "publish");
                if *kick {
                    let (a, b) = self.drivers(|d, m| d.should_kick(m), "kick");
                    assert_eq!(a, b, "driver kick decision (avail_event / used.flags)");
                }
            }
            Op::EnableInterrupts => {
                let (a, b) = self.drivers(|d, m| d.enable_interrupts(m), "enable interrupts");
                assert_eq!(a, b, "used buffers pending at enable_interrupts");
            }
            Op::DisableInterrupts => {
                self.drivers(|d, m| d.disable_interrupts(m), "disable interrupts");
            }
            Op::SetUsedEvent { delta } => {
                // used_event exists only with EVENT_IDX; a valid driver leaves it alone otherwise.
                if self.event_idx() {
                    let value = self.ours.next_used().wrapping_add_signed(i16::from(*delta));
                    self.drivers(|d, m| d.set_used_event(m, value), "set used_event");
                }
            }
            Op::Collect => self.collect(),
            Op::Pop => self.pop(),
            Op::Complete { pick, len, notify } => {
                if self.inflight.is_empty() {
                    return;
                }
                self.complete_one(*pick, *len);
                self.publish_used(true, *notify);
            }
            Op::CompleteBatch { items, notify } => {
                let mut any = false;
                for &(pick, len) in items {
                    if self.inflight.is_empty() {
                        break;
                    }
                    self.complete_one(pick, len);
                    any = true;
                }
                self.publish_used(any, *notify);
            }
            Op::Notify => self.publish_used(false, true),
            Op::EnableNotification => {
                let (a, b) = both_devices!(self, enable_notification);
                assert_eq!(a, b, "enable_notification: buffers already available");
            }
            Op::DisableNotification => {
                both_devices!(self, disable_notification);
            }
        }
    }

    /// The same call on the driver of each side (both are ours: only the devices differ).
    fn drivers<T, E: std::fmt::Debug>(
        &mut self,
        call: impl Fn(&mut SplitDriver, &Mem) -> Result<T, E>,
        what: &str,
    ) -> (T, T) {
        let a = call(&mut self.ours_drv, &self.ours_mem).expect(what);
        let b = call(&mut self.vq_drv, &self.vq_mem).expect(what);
        (a, b)
    }

    fn add(&mut self, bufs: &[Buf], readable: u8, indirect: bool) {
        let n_readable = usize::from(readable) % (bufs.len() + 1);
        let specs: Vec<BufferSpec> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let addr = DATA_BASE + u64::from(b.off);
                let len = u32::from(b.len);
                if i < n_readable {
                    BufferSpec::readable(addr, len)
                } else {
                    BufferSpec::writable(addr, len)
                }
            })
            .collect();
        let free = self.ours_drv.num_free();
        assert_eq!(free, self.vq_drv.num_free());
        let head = if indirect && self.config.features.indirect_desc {
            if free == 0 {
                return;
            }
            let table = self
                .indirect_free
                .pop()
                .expect("an indirect slot per possible chain");
            let a = self
                .ours_drv
                .add_indirect_chain(&self.ours_mem, &specs, GuestAddress(table))
                .expect("add indirect chain");
            let b = self
                .vq_drv
                .add_indirect_chain(&self.vq_mem, &specs, GuestAddress(table))
                .expect("add indirect chain");
            assert_eq!(a, b);
            self.indirect_of[usize::from(a)] = Some(table);
            a
        } else {
            if usize::from(free) < specs.len() {
                return;
            }
            let a = self
                .ours_drv
                .add_chain(&self.ours_mem, &specs)
                .expect("add chain");
            let b = self
                .vq_drv
                .add_chain(&self.vq_mem, &specs)
                .expect("add chain");
            assert_eq!(a, b);
            a
        };
        assert!(head < self.config.size);
    }

    fn collect(&mut self) {
        let a = self.ours_drv.collect_used(&self.ours_mem).expect("collect");
        let b = self.vq_drv.collect_used(&self.vq_mem).expect("collect");
        assert_eq!(a, b, "used buffers collected by the driver");
        for got in a {
            let want = self.used.pop_front().expect("a used entry was written");
            assert_eq!(got, want, "used entry");
            if let Some(table) = self.indirect_of[usize::from(got.id)].take() {
                self.indirect_free.push(table);
            }
        }
    }

    fn pop(&mut self) {
        let ours = self.ours.pop(&self.ours_mem).expect("pop (valid driver)");
        let theirs = self.vq.pop_descriptor_chain(&self.vq_mem);
        match (ours, theirs) {
            (None, None) => {}
            (Some(chain), Some(vq_chain)) => {
                assert_eq!(chain.id(), vq_chain.head_index(), "popped head");
                assert_eq!(chain.ring_slots(), 1);
                let ours: Vec<Seg> = chain
                    .segments()
                    .iter()
                    .map(|s| (s.addr.0, s.len, s.writable))
                    .collect();
                // Iterating follows NEXT links and indirect tables, yielding buffer descriptors.
                let theirs: Vec<Seg> = vq_chain
                    .map(|d| (d.addr().0, d.len(), d.is_write_only()))
                    .collect();
                assert_eq!(ours, theirs, "segments of chain {}", chain.id());
                self.inflight.push(Inflight {
                    id: chain.id(),
                    ours,
                    theirs,
                });
            }
            (a, b) => panic!(
                "pop disagrees: ours {:?}, virtio-queue {:?}",
                a.map(|c| c.id()),
                b.map(|c| c.head_index())
            ),
        }
    }

    /// Completes in-flight chain `pick % len` with a length derived from `len_sel`: the whole
    /// writable part one time in four, otherwise uniform in `0..=writable`.
    fn complete_one(&mut self, pick: usize, len_sel: u32) {
        let chain = self.inflight.remove(pick % self.inflight.len());
        let writable = writable_len(&chain.ours);
        assert_eq!(writable, writable_len(&chain.theirs));
        let len = if len_sel.is_multiple_of(4) {
            writable
        } else {
            len_sel % (writable + 1)
        };
        self.completions = self.completions.wrapping_add(1);
        // Each side "processes" the request through its own view of the chain.
        fill(&self.ours_mem, &chain.ours, chain.id, self.completions, len);
        fill(&self.vq_mem, &chain.theirs, chain.id, self.completions, len);
        self.ours
            .add_used(&self.ours_mem, chain.id, len)
            .expect("add_used (ours)");
        self.vq
            .add_used(&self.vq_mem, chain.id, len)
            .expect("add_used (virtio-queue)");
        self.used.push_back(UsedBuffer { id: chain.id, len });
    }

    /// Publishes our used entries (virtio-queue publishes in `add_used`), remembers whether any
    /// were new since the last notification decision and, when asked, takes that decision.
    fn publish_used(&mut self, completed: bool, notify: bool) {
        self.ours
            .publish_used(&self.ours_mem)
            .expect("publish_used");
        self.published_since_decision |= completed;
        if notify {
            self.notify();
        }
    }

    /// Used-buffer notification decision on both sides.
    fn notify(&mut self) {
        let (ours, theirs) = both_devices!(self, needs_notification);
        let published = std::mem::take(&mut self.published_since_decision);
        if self.event_idx() {
            assert_eq!(ours, theirs, "needs_notification with EVENT_IDX");
        } else {
            // Narrowed (see the crate doc): virtio-queue 0.18 ignores avail.flags and always
            // notifies, which the spec permits (flags = 1 is only a SHOULD NOT). Ours must follow
            // the spec rule exactly, and must never notify where virtio-queue would not.
            assert!(
                theirs,
                "virtio-queue 0.18 always notifies without EVENT_IDX"
            );
            let flags = self
                .ours_mem
                .read_obj::<u16>(self.config.driver_area)
                .expect("avail.flags");
            let must = published && u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0;
            assert_eq!(
                ours, must,
                "needs_notification without EVENT_IDX (published since last decision: \
                 {published}, avail.flags: {flags:#x})"
            );
        }
    }

    /// Property-test step: `op`, then the whole memory and the state compared.
    fn step(&mut self, op: &Op) {
        self.apply(op);
        self.check_memory(true);
        self.check_state();
    }

    /// Long-run step: `op` with its own comparisons (chains, decisions, used buffers); the
    /// ring-memory and state checks only near the used-index wrap, where they matter most
    /// (elsewhere the caller checks once per round).
    fn long_step(&mut self, op: &Op) {
        self.apply(op);
        if self.completions.abs_diff(0x1_0000) < 2048 {
            self.check();
        }
    }

    /// Ring areas identical and positions and in-flight list as modelled.
    fn check(&self) {
        self.check_memory(false);
        self.check_state();
    }
}

fn buf_strategy() -> impl Strategy<Value = Buf> {
    let span = (MEM_SIZE as u64 - DATA_BASE) as u16 - MAX_BUF_LEN;
    (0..span, 0..=MAX_BUF_LEN).prop_map(|(off, len)| Buf { off, len })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (vec(buf_strategy(), 1..=4), any::<u8>(), any::<bool>())
            .prop_map(|(bufs, readable, indirect)| Op::Add { bufs, readable, indirect }),
        3 => any::<bool>().prop_map(|kick| Op::Publish { kick }),
        2 => Just(Op::EnableInterrupts),
        1 => Just(Op::DisableInterrupts),
        2 => (-4i8..=4).prop_map(|delta| Op::SetUsedEvent { delta }),
        2 => Just(Op::Collect),
        5 => Just(Op::Pop),
        4 => (any::<usize>(), any::<u32>(), any::<bool>())
            .prop_map(|(pick, len, notify)| Op::Complete { pick, len, notify }),
        2 => (vec((any::<usize>(), any::<u32>()), 1..=4), any::<bool>())
            .prop_map(|(items, notify)| Op::CompleteBatch { items, notify }),
        2 => Just(Op::Notify),
        1 => Just(Op::EnableNotification),
        1 => Just(Op::DisableNotification),
    ]
}

fn run(size: u16, event_idx: bool, indirect_desc: bool, ops: &[Op]) {
    let mut h = Harness::new(
        size,
        RingFeatures {
            event_idx,
            indirect_desc,
        },
    );
    for op in ops {
        h.step(op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Differential: our split ring and rust-vmm's virtio-queue 0.18 make the same guest-memory
    /// writes (used elements, used.idx, used.flags, avail_event; whole memory compared after
    /// every step), pop the same chains (head id and flattened (addr, len, writable) buffers,
    /// direct and indirect) and make the same notification decisions (needs_notification,
    /// enable_notification, and the driver's kick/interrupt decisions that read what the devices
    /// wrote) for the same valid driver/device operation sequences, completions in any order
    /// and in batches, queue sizes 1..=256, EVENT_IDX on and off (virtio 1.x §2.7; reference
    /// virtio 1.4 "Split Virtqueues"). Without EVENT_IDX the notification comparison is narrowed as the crate
    /// documentation explains.
    #[test]
    fn split_ring_matches_virtio_queue(
        size in (0u32..=8).prop_map(|s| 1u16 << s),
        event_idx in any::<bool>(),
        indirect_desc in any::<bool>(),
        ops in vec(op_strategy(), 1..200),
    ) {
        run(size, event_idx, indirect_desc, &ops);
    }
}

/// Tiny deterministic generator for the long wrap-around run.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}

/// Differential across 16-bit index wrap-around: with EVENT_IDX on and off and a small queue,
/// more than 65536 chains go round (add, publish and kick, pop, out-of-order and batched
/// completion, notification decisions with used_event placed around the used index, collect),
/// so avail.idx, used.idx, used_event and avail_event all wrap. The ring areas must stay
/// byte-identical (checked after every round, after every step near the wrap, and the whole
/// memory at the end) and every decision equal, as in `split_ring_matches_virtio_queue`
/// (virtio 1.x §2.7: indices are free-running modulo 2^16).
#[test]
fn split_ring_matches_virtio_queue_across_index_wrap() {
    for (event_idx, seed) in [(true, 1u64), (false, 2u64)] {
        let mut rng = Lcg(seed);
        let size = 4u16;
        let mut h = Harness::new(
            size,
            RingFeatures {
                event_idx,
                indirect_desc: true,
            },
        );
        while h.completions < 0x1_0000 + 512 {
            for _ in 0..1 + rng.below(u32::from(size)) {
                let bufs = (0..1 + rng.below(2))
                    .map(|_| Buf {
                        off: rng.below(0x1000) as u16,
                        len: rng.below(u32::from(MAX_BUF_LEN) + 1) as u16,
                    })
                    .collect();
                let op = Op::Add {
                    bufs,
                    readable: rng.below(3) as u8,
                    indirect: rng.below(2) == 0,
                };
                h.long_step(&op);
            }
            h.long_step(&Op::Publish { kick: true });
            if rng.below(3) == 0 {
                h.long_step(&Op::EnableNotification);
            } else {
                h.long_step(&Op::DisableNotification);
            }
            loop {
                let before = h.inflight.len();
                h.long_step(&Op::Pop);
                if h.inflight.len() == before || rng.below(4) == 0 {
                    break;
                }
            }
            match rng.below(4) {
                0 => h.long_step(&Op::EnableInterrupts),
                1 => h.long_step(&Op::DisableInterrupts),
                _ => h.long_step(&Op::SetUsedEvent {
                    delta: rng.below(5) as i8 - 1,
                }),
            }
            while !h.inflight.is_empty() {
                let op = if rng.below(2) == 0 {
                    Op::Complete {
                        pick: rng.next_u32() as usize,
                        len: rng.next_u32(),
                        notify: rng.below(2) == 0,
                    }
                } else {
                    Op::CompleteBatch {
                        items: (0..1 + rng.below(3))
                            .map(|_| (rng.next_u32() as usize, rng.next_u32()))
                            .collect(),
                        notify: rng.below(2) == 0,
                    }
                };
                h.long_step(&op);
            }
            h.long_step(&Op::Notify);
            h.long_step(&Op::Collect);
            h.check();
        }
        assert!(h.ours.next_used() < 0x1000, "used.idx wrapped");
        h.check_memory(true);
    }
}
