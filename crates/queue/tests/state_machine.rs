//! Property-based state machines for both ring formats.
//!
//! Random driver adds (direct and indirect), publishes, device takes, out-of-order completions,
//! batch publishes, notification-suppression changes, and save → fresh queue from state →
//! continue at random points. Checked against a model:
//! - every chain is taken in availability order with exactly the buffers the driver offered;
//! - every buffer comes back to the driver exactly once, with its id and the length the device
//!   reported, in completion order;
//! - every notification decision (device → driver and driver → device) equals a reference that
//!   reads the suppression fields from guest memory and applies the spec rule by enumerating the
//!   ring positions, independently of the `need_event` arithmetic under test.
//!
//! Seed 001: "The available state field is two bytes virtqueue state that is used by the device
//! to read for the next available buffer" / "The used state ... is used by the device to make
//! buffer used" — restoring those (plus the in-flight list and owed notification) onto a fresh
//! queue at any point must continue the stream exactly.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use proptest::prelude::*;
use virtio_lm_queue::{
    BufferSpec, DescriptorChain, DeviceQueue, DriverError, PackedDriver, PackedQueue, QueueConfig,
    RingFeatures, RingKind, RingPosition, SplitDriver, SplitQueue, UsedBuffer,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

const QUEUE_BASE: u64 = 0x1000;
const TABLES: u64 = 0x10_0000;
const TABLE_SLOT: u64 = 4 * 16;
const DATA: u64 = 0x20_0000;
const MEM_SIZE: usize = 0x40_0000;

/// The driver operations the model needs, implemented by both ring formats' drivers.
trait Driver: Sized {
    fn create(config: QueueConfig, mem: &Mem) -> Self;
    fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> Result<u16, DriverError>;
    fn add_indirect(
        &mut self,
        mem: &Mem,
        bufs: &[BufferSpec],
        table: GuestAddress,
    ) -> Result<u16, DriverError>;
    fn publish(&mut self, mem: &Mem);
    fn should_kick(&mut self, mem: &Mem) -> bool;
    fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer>;
    fn enable_interrupts(&mut self, mem: &Mem);
    fn disable_interrupts(&mut self, mem: &Mem);
}

macro_rules! impl_driver {
    ($t:ty) => {
        impl Driver for $t {
            fn create(config: QueueConfig, mem: &Mem) -> Self {
                <$t>::new(config, mem).unwrap()
            }
            fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> Result<u16, DriverError> {
                self.add_chain(mem, bufs)
            }
            fn add_indirect(
                &mut self,
                mem: &Mem,
                bufs: &[BufferSpec],
                table: GuestAddress,
            ) -> Result<u16, DriverError> {
                self.add_indirect_chain(mem, bufs, table)
            }
            fn publish(&mut self, mem: &Mem) {
                <$t>::publish(self, mem).unwrap()
            }
            fn should_kick(&mut self, mem: &Mem) -> bool {
                <$t>::should_kick(self, mem).unwrap()
            }
            fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer> {
                self.collect_used(mem).unwrap()
            }
            fn enable_interrupts(&mut self, mem: &Mem) {
                <$t>::enable_interrupts(self, mem).unwrap();
            }
            fn disable_interrupts(&mut self, mem: &Mem) {
                <$t>::disable_interrupts(self, mem).unwrap()
            }
        }
    };
}
impl_driver!(SplitDriver);
impl_driver!(PackedDriver);

#[derive(Clone, Debug)]
enum Op {
    Add {
        readable: u8,
        writable: u8,
        indirect: bool,
        len_seed: u16,
    },
    Publish,
    Pop,
    PopBatch {
        max: u8,
    },
    Complete {
        pick: u16,
        len_seed: u32,
    },
    CompleteBatch {
        count: u8,
        len_seed: u32,
    },
    PublishUsed,
    Collect,
    SaveRestore,
    EnableNotification,
    DisableNotification,
    EnableInterrupts,
    DisableInterrupts,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, 0u8..3, any::<bool>(), any::<u16>()).prop_map(|(readable, writable, indirect, len_seed)| Op::Add {
            readable,
            writable,
            indirect,
            len_seed
        }),
        4 => Just(Op::Publish),
        6 => Just(Op::Pop),
        2 => (1u8..8).prop_map(|max| Op::PopBatch { max }),
        5 => (any::<u16>(), any::<u32>()).prop_map(|(pick, len_seed)| Op::Complete { pick, len_seed }),
        2 => (1u8..8, any::<u32>()).prop_map(|(count, len_seed)| Op::CompleteBatch { count, len_seed }),
        3 => Just(Op::PublishUsed),
        3 => Just(Op::Collect),
        2 => Just(Op::SaveRestore),
        1 => Just(Op::EnableNotification),
        1 => Just(Op::DisableNotification),
        1 => Just(Op::EnableInterrupts),
        1 => Just(Op::DisableInterrupts),
    ]
}

/// A chain as the driver offered it, for comparison with what the device took.
#[derive(Clone, Debug)]
struct Offered {
    id: u16,
    bufs: Vec<BufferSpec>,
    table_slot: Option<usize>,
}

impl Offered {
    /// A used length the device may report for this chain: `seed` folded into
    /// 0..=its writable bytes.
    fn used_len(&self, seed: u32) -> u32 {
        let writable: u32 = self.bufs.iter().filter(|b| b.writable).map(|b| b.len).sum();
        seed % (writable + 1)
    }
}

/// The device took exactly the chain the driver offered: same id, same buffers in order.
fn assert_taken(chain: &DescriptorChain, offered: &Offered) {
    assert_eq!(chain.id(), offered.id);
    let taken: Vec<BufferSpec> = chain
        .segments()
        .iter()
        .map(|s| BufferSpec {
            addr: s.addr,
            len: s.len,
            writable: s.writable,
        })
        .collect();
    assert_eq!(taken, offered.bufs);
}

struct Model<Q, D> {
    mem: Mem,
    config: QueueConfig,
    device: Q,
    driver: D,
    /// Added but not published by the driver.
    unpublished: VecDeque<Offered>,
    /// Published, not yet taken by the device (availability order).
    available: VecDeque<Offered>,
    /// Taken by the device, not yet completed (taking order).
    inflight: Vec<Offered>,
    /// Completed by the device and not yet published.
    completed_unpublished: Vec<(Offered, u32)>,
    /// Published used, not yet collected (completion order).
    used_visible: VecDeque<(Offered, u32)>,
    /// Device position (split: used index; packed: linear used slot) at the last decision.
    signalled: u32,
    /// Published position now.
    published: u32,
    /// A decision is pending over a batch published before a save.
    owed: bool,
    /// Driver position (split: avail index; packed: linear avail slot) at the last kick decision.
    kicked: u32,
    /// Driver position of everything published.
    driver_published: u32,
    /// Driver position of everything added.
    driver_added: u32,
    free_tables: Vec<usize>,
    chain: DescriptorChain,
    batch: Vec<DescriptorChain>,
}

impl<Q: DeviceQueue, D: Driver> Model<Q, D> {
    fn new(kind: RingKind, size: u16, features: RingFeatures) -> Self {
        let mem = Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (config, _) = QueueConfig::contiguous(kind, size, GuestAddress(QUEUE_BASE), features);
        let driver = D::create(config, &mem);
        let device = Q::new(config, &mem).unwrap();
        Self {
            mem,
            config,
            device,
            driver,
            unpublished: VecDeque::new(),
            available: VecDeque::new(),
            inflight: Vec::new(),
            completed_unpublished: Vec::new(),
            used_visible: VecDeque::new(),
            signalled: 0,
            published: 0,
            owed: false,
            kicked: 0,
            driver_published: 0,
            driver_added: 0,
            free_tables: (0..usize::from(size)).rev().collect(),
            chain: DescriptorChain::default(),
            batch: Vec::new(),
        }
    }

    fn slots(&self, o: &Offered) -> u32 {
        match self.config.kind {
            RingKind::Split => 1,
            RingKind::Packed if o.table_slot.is_some() => 1,
            RingKind::Packed => o.bufs.len() as u32,
        }
    }

    /// Wraps a position counter the way the ring format does.
    fn modulus(&self) -> u32 {
        match self.config.kind {
            RingKind::Split => 1 << 16,
            RingKind::Packed => 2 * u32::from(self.config.size),
        }
    }

    fn read_u16(&self, addr: GuestAddress) -> u16 {
        u16::from_le(self.mem.load(addr, Ordering::SeqCst).unwrap())
    }

    /// Reference rule: does the other side's event position lie among the positions
    /// `old, old+1, …, new-1` (enumerated, modulo the format's index space)?
    fn event_crossed(&self, event: u32, old: u32, new: u32) -> bool {
        let m = self.modulus();
        let mut p = old;
        while p != new {
            if p == event {
                return true;
            }
            p = (p + 1) % m;
        }
        false
    }

    /// Reads the suppression field of `area` and applies the spec rule to `old..new`.
    /// Split: `flags_addr`/`event_addr` are the flags word and event index; packed: the event
    /// suppression structure (desc word at +0, flags at +2).
    fn reference_decision(&self, area: GuestAddress, event_off: u64, old: u32, new: u32) -> bool {
        if old == new {
            return false;
        }
        match self.config.kind {
            RingKind::Split => {
                if self.config.features.event_idx {
                    let event = self.read_u16(area.unchecked_add(event_off));
                    self.event_crossed(u32::from(event), old, new)
                } else {
                    self.read_u16(area) & 1 == 0
                }
            }
            RingKind::Packed => {
                let desc = self.read_u16(area);
                let flags = self.read_u16(area.unchecked_add(2)) & 3;
                match flags {
                    1 => false,
                    2 if self.config.features.event_idx => {
                        let event = RingPosition::from_state(desc).linear(self.config.size);
                        self.event_crossed(event, old, new)
                    }
                    _ => true,
                }
            }
        }
    }

    fn split_event_offsets(&self) -> (u64, u64) {
        let n = u64::from(self.config.size);
        (4 + 2 * n, 4 + 8 * n)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Add {
                readable,
                writable,
                indirect,
                len_seed,
            } => {
                let count = usize::from(readable + writable).max(1);
                let indirect = indirect && self.config.features.indirect_desc && count > 0;
                let bufs: Vec<BufferSpec> = (0..count)
                    .map(|i| {
                        let len = 1 + u32::from(len_seed.rotate_left(i as u32 * 5) % 0x200);
                        let addr = DATA + (u64::from(len_seed) + i as u64 * 0x1000) % 0x10_0000;
                        if i < usize::from(readable) || writable == 0 && i == 0 {
                            BufferSpec::readable(addr, len)
                        } else {
                            BufferSpec::writable(addr, len)
                        }
                    })
                    .collect();
                let (result, table_slot) = if indirect {
                    let Some(slot) = self.free_tables.pop() else {
                        return;
                    };
                    let table = GuestAddress(TABLES + slot as u64 * TABLE_SLOT);
                    let r = self.driver.add_indirect(&self.mem, &bufs, table);
                    if r.is_err() {
                        self.free_tables.push(slot);
                    }
                    (r, Some(slot))
                } else {
                    (self.driver.add(&self.mem, &bufs), None)
                };
                match result {
                    Ok(id) => {
                        let offered = Offered {
                            id,
                            bufs,
                            table_slot,
                        };
                        self.driver_added =
                            (self.driver_added + self.slots(&offered)) % self.modulus();
                        self.unpublished.push_back(offered);
                    }
                    Err(DriverError::QueueFull { .. }) => {}
                    Err(e) => panic!("driver add failed: {e}"),
                }
            }
            Op::Publish => {
                self.driver.publish(&self.mem);
                self.available.extend(self.unpublished.drain(..));
                self.driver_published = self.driver_added;
                let (area, off) = match self.config.kind {
                    RingKind::Split => (self.config.device_area, self.split_event_offsets().1),
                    RingKind::Packed => (self.config.device_area, 0),
                };
                let want = self.reference_decision(area, off, self.kicked, self.driver_published);
                self.kicked = self.driver_published;
                assert_eq!(self.driver.should_kick(&self.mem), want, "kick decision");
            }
            Op::Pop => {
                let got = self.device.pop_into(&self.mem, &mut self.chain).unwrap();
                match self.available.pop_front() {
                    None => assert!(!got, "device took a chain the driver never published"),
                    Some(offered) => {
                        assert!(got, "device missed a published chain");
                        assert_taken(&self.chain, &offered);
                        self.inflight.push(offered);
                    }
                }
            }
            Op::PopBatch { max } => {
                let taken = self
                    .device
                    .pop_batch(&self.mem, &mut self.batch, usize::from(max))
                    .unwrap();
                assert_eq!(
                    taken,
                    self.available.len().min(usize::from(max)),
                    "batch size"
                );
                for chain in &self.batch[..taken] {
                    let offered = self.available.pop_front().unwrap();
                    assert_taken(chain, &offered);
                    self.inflight.push(offered);
                }
            }
            Op::CompleteBatch { count, len_seed } => {
                let count = usize::from(count).min(self.inflight.len());
                let batch: Vec<(Offered, u32)> = self
                    .inflight
                    .drain(..count)
                    .map(|offered| {
                        let len = offered.used_len(len_seed);
                        (offered, len)
                    })
                    .collect();
                let used: Vec<(u16, u32)> = batch.iter().map(|(o, l)| (o.id, *l)).collect();
                self.device.add_used_batch(&self.mem, &used).unwrap();
                self.completed_unpublished.extend(batch);
            }
            Op::Complete { pick, len_seed } => {
                if self.inflight.is_empty() {
                    return;
                }
                let offered = self
                    .inflight
                    .remove(usize::from(pick) % self.inflight.len());
                let len = offered.used_len(len_seed);
                self.device.add_used(&self.mem, offered.id, len).unwrap();
                self.completed_unpublished.push((offered, len));
            }
            Op::PublishUsed => {
                self.device.publish_used(&self.mem).unwrap();
                let modulus = self.modulus();
                for (offered, len) in std::mem::take(&mut self.completed_unpublished) {
                    self.published = (self.published + self.slots(&offered)) % modulus;
                    self.used_visible.push_back((offered, len));
                }
                let (area, off) = (self.config.driver_area, self.split_event_offsets().0);
                let off = if self.config.kind == RingKind::Split {
                    off
                } else {
                    0
                };
                let want = std::mem::take(&mut self.owed)
                    || self.reference_decision(area, off, self.signalled, self.published);
                self.signalled = self.published;
                assert_eq!(
                    self.device.needs_notification(&self.mem).unwrap(),
                    want,
                    "notification decision"
                );
            }
            Op::Collect => {
                let used = self.driver.collect(&self.mem);
                let expected: Vec<(u16, u32)> =
                    self.used_visible.iter().map(|(o, l)| (o.id, *l)).collect();
                let got: Vec<(u16, u32)> = used.iter().map(|u| (u.id, u.len)).collect();
                assert_eq!(
                    got, expected,
                    "driver must collect exactly the published completions"
                );
                for (offered, _) in self.used_visible.drain(..) {
                    if let Some(slot) = offered.table_slot {
                        self.free_tables.push(slot);
                    }
                }
            }
            Op::SaveRestore => {
                let state = match self.device.state() {
                    Ok(state) => state,
                    Err(_) => {
                        assert!(
                            !self.completed_unpublished.is_empty(),
                            "state() refused without reason"
                        );
                        return;
                    }
                };
                let ids: Vec<u16> = self.inflight.iter().map(|o| o.id).collect();
                assert_eq!(state.inflight_ids(), ids, "in-flight list in taking order");
                self.owed |= state.notification_owed;
                assert_eq!(state.notification_owed, self.signalled != self.published);
                self.device = Q::from_state(self.config, &state, &self.mem).unwrap();
                assert_eq!(
                    self.device.state().unwrap(),
                    state,
                    "restored queue reports the same state"
                );
            }
            Op::EnableNotification => {
                let pending = self.device.enable_notification(&self.mem).unwrap();
                assert_eq!(pending, !self.available.is_empty());
            }
            Op::DisableNotification => self.device.disable_notification(&self.mem).unwrap(),
            Op::EnableInterrupts => self.driver.enable_interrupts(&self.mem),
            Op::DisableInterrupts => self.driver.disable_interrupts(&self.mem),
        }
    }

    /// Drains everything: every offered chain must come back exactly once.
    fn drain(&mut self) {
        self.apply(&Op::Publish);
        while !self.available.is_empty() {
            self.apply(&Op::Pop);
        }
        while !self.inflight.is_empty() {
            self.apply(&Op::Complete {
                pick: 0,
                len_seed: 0,
            });
        }
        self.apply(&Op::PublishUsed);
        self.apply(&Op::Collect);
        assert_eq!(self.device.inflight_len(), 0);
    }
}

fn run<Q: DeviceQueue, D: Driver>(kind: RingKind, size: u16, features: RingFeatures, ops: &[Op]) {
    let mut model = Model::<Q, D>::new(kind, size, features);
    for op in ops {
        model.apply(op);
    }
    model.drain();
}

fn features() -> impl Strategy<Value = RingFeatures> {
    (any::<bool>(), any::<bool>()).prop_map(|(event_idx, indirect_desc)| RingFeatures {
        event_idx,
        indirect_desc,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Split ring state machine with save/restore at random points (seed 001 available state).
    #[test]
    fn split_ring_matches_model(
        size in prop::sample::select(vec![1u16, 2, 4, 8, 16, 256]),
        features in features(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        run::<SplitQueue, SplitDriver>(RingKind::Split, size, features, &ops);
    }

    /// Packed ring state machine with save/restore at random points (seed 001 available and used
    /// state, wrap counters), including sizes that are not powers of two.
    #[test]
    fn packed_ring_matches_model(
        size in prop::sample::select(vec![1u16, 2, 3, 5, 7, 8, 13, 256]),
        features in features(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        run::<PackedQueue, PackedDriver>(RingKind::Packed, size, features, &ops);
    }
}
