//! The ring position of a stopped virtio 1.4 device recovered from guest memory
//! (spec-decisions §32; virtio 1.4 2.8 "Packed Virtqueues" and 2.7 "Split Virtqueues").
//!
//! A hand driver writes the buffer id only in a chain's last descriptor (virtio 1.4 2.8.6:
//! the device "writes out a single used descriptor with the Buffer ID corresponding to the
//! last descriptor in the chain"), so nothing here leans on ids elsewhere in a chain; an
//! IN_ORDER device is modelled by hand (the queue crate does not offer IN_ORDER): it writes one
//! used descriptor for a batch of chains.

use std::collections::{BTreeMap, VecDeque};

use virtio_lm_queue::{
    packed_position, read_position, split_position, withdraw_packed_position,
    write_packed_position, BufferSpec, ConfigError, DeviceQueue, PackedQueue, PositionError,
    QueueConfig, QueuePosition, RingArea, RingFeatures, RingKind, RingPosition, SplitDriver,
    SplitQueue,
};
use virtio_lm_spec::ring::{
    RING_EVENT_FLAGS_DESC, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED,
    VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

const MEM_SIZE: usize = 0x10_0000;
/// Where the buffers live: far from the rings at 0x1000.
const BUFFERS: u64 = 0x8_0000;

const EVENT_IDX: RingFeatures = RingFeatures {
    event_idx: true,
    indirect_desc: false,
};

fn memory() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// What a migration copies: the whole of guest memory, into a fresh memory.
fn copy_of(mem: &Mem) -> Mem {
    let mut bytes = vec![0u8; MEM_SIZE];
    mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
    let copy = memory();
    copy.write_slice(&bytes, GuestAddress(0)).unwrap();
    copy
}

fn packed_config(size: u16) -> QueueConfig {
    QueueConfig::contiguous(RingKind::Packed, size, GuestAddress(0x1000), EVENT_IDX).0
}

fn desc_addr(config: &QueueConfig, slot: u16) -> GuestAddress {
    GuestAddress(config.desc_table.0 + 16 * u64::from(slot))
}

fn read_desc(mem: &Mem, config: &QueueConfig, slot: u16) -> (u64, u32, u16, u16) {
    let b: [u8; 16] = mem.read_obj(desc_addr(config, slot)).unwrap();
    let le16 = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let addr = u64::from_le_bytes(b[..8].try_into().unwrap());
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap());
    (addr, len, le16(12), le16(14))
}

fn write_desc(mem: &Mem, config: &QueueConfig, slot: u16, desc: (u64, u32, u16, u16)) {
    let (addr, len, id, flags) = desc;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&id.to_le_bytes());
    b[14..].copy_from_slice(&flags.to_le_bytes());
    mem.write_obj(b, desc_addr(config, slot)).unwrap();
}

fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

fn used_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
    } else {
        0
    }
}

/// A packed-ring driver that puts the buffer id only in a chain's last descriptor (the others
/// carry 0xffff) and makes the head available last. Each request has a serial number; the
/// driver counts how often each completes.
struct HandDriver {
    config: QueueConfig,
    avail: RingPosition,
    used: RingPosition,
    /// Outstanding chains in the order they were made available: (id, slots, serial).
    outstanding: VecDeque<(u16, u16, u64)>,
    next_serial: u64,
    completed: BTreeMap<u64, u32>,
}

impl HandDriver {
    fn new(config: QueueConfig) -> Self {
        Self {
            config,
            avail: RingPosition::INITIAL,
            used: RingPosition::INITIAL,
            outstanding: VecDeque::new(),
            next_serial: 0,
            completed: BTreeMap::new(),
        }
    }

    fn free_slots(&self) -> u16 {
        self.config.size - self.outstanding.iter().map(|c| c.1).sum::<u16>()
    }

    /// Makes a chain of `slots` descriptors available, if it fits.
    fn add(&mut self, mem: &Mem, slots: u16) -> bool {
        let free_id = (0..self.config.size).find(|id| self.outstanding.iter().all(|c| c.0 != *id));
        let (Some(id), true) = (free_id, slots <= self.free_slots()) else {
            return false;
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let mut position = self.avail;
        let mut head = None;
        for i in 0..slots {
            let last = i + 1 == slots;
            let flags = avail_bits(position.wrap_counter)
                | VIRTQ_DESC_F_WRITE
                | if last { 0 } else { VIRTQ_DESC_F_NEXT };
            let buffer = BUFFERS + 0x100 * (serial % 0x100);
            let desc = (buffer, 0x10, if last { id } else { 0xffff }, flags);
            if i == 0 {
                head = Some((position.index, desc));
            } else {
                write_desc(mem, &self.config, position.index, desc);
            }
            position = position.advance(1, self.config.size);
        }
        let (slot, desc) = head.unwrap();
        write_desc(mem, &self.config, slot, desc);
        self.avail = position;
        self.outstanding.push_back((id, slots, serial));
        true
    }

    /// Reads used descriptors. With `in_order`, one used descriptor completes every chain up
    /// to and including its id (virtio 1.4 2.8.9 "In-order use of descriptors").
    fn collect(&mut self, mem: &Mem, in_order: bool) {
        loop {
            let (_, _, id, flags) = read_desc(mem, &self.config, self.used.index);
            let wrap = self.used.wrap_counter;
            if flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) != used_bits(wrap)
                || self.outstanding.is_empty()
            {
                return;
            }
            let at = self.outstanding.iter().position(|c| c.0 == id);
            let at = at.unwrap_or_else(|| panic!("used id {id} is not outstanding"));
            let done: Vec<_> = if in_order {
                self.outstanding.drain(..=at).collect()
            } else {
                self.outstanding.remove(at).into_iter().collect()
            };
            for (_, slots, serial) in done {
                *self.completed.entry(serial).or_default() += 1;
                self.used = self.used.advance(slots, self.config.size);
            }
        }
    }

    fn assert_each_completed_once(&self) {
        assert!(
            self.outstanding.is_empty(),
            "{:?} never completed",
            self.outstanding
        );
        assert_eq!(
            self.completed.len() as u64,
            self.next_serial,
            "lost requests"
        );
        let twice: Vec<_> = self.completed.iter().filter(|(_, &n)| n != 1).collect();
        assert!(twice.is_empty(), "completed more than once: {twice:?}");
    }
}

/// A packed device of either kind: the queue crate's (used descriptors one per chain, in
/// reverse order of taking within a batch) or an IN_ORDER device written by hand (one used
/// descriptor per batch, carrying the last chain's id, skipping the whole batch).
enum Device {
    Queue(PackedQueue),
    InOrder(RingPosition),
}

impl Device {
    fn resumed(config: QueueConfig, position: RingPosition, mem: &Mem, in_order: bool) -> Self {
        if in_order {
            return Self::InOrder(position);
        }
        let state = QueuePosition::Packed(position).queue_state();
        Self::Queue(PackedQueue::from_state(config, &state, mem).unwrap())
    }

    /// Takes every available chain and uses them all.
    fn drain(&mut self, mem: &Mem, config: &QueueConfig) {
        match self {
            Self::Queue(q) => {
                let mut ids = Vec::new();
                while let Some(chain) = q.pop(mem).unwrap() {
                    ids.push(chain.id());
                }
                for &id in ids.iter().rev() {
                    q.add_used(mem, id, 0).unwrap();
                }
                q.publish_used(mem).unwrap();
            }
            Self::InOrder(position) => {
                let start = *position;
                let mut at = start;
                let mut last_id = None;
                loop {
                    let (_, _, _, flags) = read_desc(mem, config, at.index);
                    if flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)
                        != avail_bits(at.wrap_counter)
                    {
                        break;
                    }
                    loop {
                        let (_, _, id, flags) = read_desc(mem, config, at.index);
                        at = at.advance(1, config.size);
                        if flags & VIRTQ_DESC_F_NEXT == 0 {
                            last_id = Some(id);
                            break;
                        }
                    }
                }
                if let Some(id) = last_id {
                    let (addr, ..) = read_desc(mem, config, start.index);
                    write_desc(
                        mem,
                        config,
                        start.index,
                        (addr, 0, id, used_bits(start.wrap_counter)),
                    );
                }
                *position = at;
            }
        }
    }

    fn position(&self) -> RingPosition {
        match self {
            Self::Queue(q) => q.next_avail(),
            Self::InOrder(position) => *position,
        }
    }
}

/// Requests run on a packed ring of `size` with chains of 1 to `max_chain` descriptors; the
/// device stops (drained) and migrates to a copy of memory after every round, with chains the
/// driver made available after the stop waiting in the ring. Returns the positions migrated at.
fn migrate_every_round(
    size: u16,
    max_chain: u16,
    rounds: u16,
    in_order: bool,
) -> Vec<RingPosition> {
    let config = packed_config(size);
    let mut mem = memory();
    let mut driver = HandDriver::new(config);
    let mut device = Device::resumed(config, RingPosition::INITIAL, &mem, in_order);
    let mut positions = Vec::new();
    for round in 0..rounds {
        // Round r adds chains of varying length until the ring is full or r % 3 + 1 were added.
        for k in 0..(round % 3 + 1) {
            driver.add(&mem, (round + k) % max_chain + 1);
        }
        device.drain(&mem, &config);
        // Made available after the stopped device last looked: must be taken on the destination.
        driver.add(&mem, round % max_chain + 1);
        let position = device.position();
        write_packed_position(&mem, &config, position).unwrap();
        let copy = copy_of(&mem);
        assert_eq!(
            packed_position(&copy, &config),
            Ok(position),
            "size {size} round {round}"
        );
        positions.push(position);
        device = Device::resumed(config, position, &copy, in_order);
        mem = copy;
        driver.collect(&mem, in_order);
    }
    device.drain(&mem, &config);
    driver.collect(&mem, in_order);
    driver.assert_each_completed_once();
    positions
}

/// spec-decisions §32 (virtio 1.4 2.8.6, 2.8.21 "Event Suppression"): a stopped packed device
/// with EVENT_IDX records its next position in the device event suppression structure (flags
/// DESC, `desc_event_off | desc_event_wrap << 15`), and a destination started there on a copy
/// of memory completes every request exactly once: sizes that are not powers of two (1, 3, 5,
/// 7, 255) and 16, chains of 1 to 4 descriptors with the id only in the last, positions at and
/// across the wrap with both wrap counters.
#[test]
fn packed_positions_round_trip_across_the_wrap() {
    for size in [1u16, 3, 5, 7, 16, 255] {
        let max_chain = size.min(4);
        let rounds = 3 * size.min(40) + 4;
        let positions = migrate_every_round(size, max_chain, rounds, false);
        for wrap in [false, true] {
            assert!(
                positions.iter().any(|p| p.wrap_counter == wrap),
                "size {size}: no position with wrap counter {wrap}"
            );
        }
        assert!(positions.iter().any(|p| p.index == 0 && !p.wrap_counter) || size > 16);
    }
}

/// spec-decisions §32 with IN_ORDER (virtio 1.4 2.8.9: the device "can write out a single used
/// descriptor with the Buffer ID of the last descriptor in the batch" and skips the batch): the
/// recorded position is still exact, the checks accept the batch's unwritten slots, and a
/// destination resumes with every request completed once.
#[test]
fn packed_positions_round_trip_with_in_order_batches() {
    for size in [3u16, 7, 16] {
        let positions = migrate_every_round(size, 3, 4 * size, true);
        assert!(
            positions.iter().any(|p| !p.wrap_counter),
            "size {size} never wrapped"
        );
    }
}

/// The split position of virtio 1.4 2.7.8 "The Virtqueue Used Ring" (`used.idx` "where the
/// device would put the next descriptor entry"), spec-decisions §32: after a drained stop it is
/// where the device takes next, and a destination on a copy of memory completes every request
/// once. Checked every round, across several laps of the ring.
#[test]
fn split_positions_round_trip() {
    let (config, _) = QueueConfig::contiguous(RingKind::Split, 8, GuestAddress(0x1000), EVENT_IDX);
    let mut mem = memory();
    let mut driver = SplitDriver::new(config, &mem).unwrap();
    let mut device = SplitQueue::new(config, &mem).unwrap();
    let mut completed = BTreeMap::<u16, u32>::new();
    let mut expected = 0u32;
    for round in 0..30u16 {
        for _ in 0..(round % 4 + 1) {
            driver
                .add_chain(&mem, &[BufferSpec::writable(BUFFERS, 8)])
                .unwrap();
            expected += 1;
        }
        driver.publish(&mem).unwrap();
        while let Some(chain) = device.pop(&mem).unwrap() {
            device.add_used(&mem, chain.id(), 8).unwrap();
        }
        device.publish_used(&mem).unwrap();
        // Made available after the stop: the destination takes it.
        driver
            .add_chain(&mem, &[BufferSpec::writable(BUFFERS, 8)])
            .unwrap();
        driver.publish(&mem).unwrap();
        expected += 1;
        let taken = device.state().unwrap().avail_state;
        let copy = copy_of(&mem);
        assert_eq!(split_position(&copy, &config), Ok(taken), "round {round}");
        assert_eq!(
            read_position(&copy, &config),
            Ok(QueuePosition::Split(taken))
        );
        let state = QueuePosition::Split(taken).queue_state();
        device = SplitQueue::from_state(config, &state, &copy).unwrap();
        mem = copy;
        for used in driver.collect_used(&mem).unwrap() {
            *completed.entry(used.id).or_default() += 1;
        }
    }
    while let Some(chain) = device.pop(&mem).unwrap() {
        device.add_used(&mem, chain.id(), 8).unwrap();
    }
    device.publish_used(&mem).unwrap();
    let total: u32 =
        driver.collect_used(&mem).unwrap().len() as u32 + completed.values().sum::<u32>();
    assert_eq!(total, expected, "every request completes once");
    assert_eq!(driver.outstanding(), 0);
}

fn set_split_indices(mem: &Mem, config: &QueueConfig, avail_idx: u16, used_idx: u16) {
    mem.write_obj(
        avail_idx.to_le_bytes(),
        GuestAddress(config.driver_area.0 + 2),
    )
    .unwrap();
    mem.write_obj(
        used_idx.to_le_bytes(),
        GuestAddress(config.device_area.0 + 2),
    )
    .unwrap();
}

/// spec-decisions §32, split: `avail.idx` may be up to the queue size past `used.idx` (the
/// driver made buffers available the stopped device never observed), modulo 2^16 (virtio 1.4
/// 2.7.6: `idx` "always increments, and wraps naturally at 65536"); more is an inconsistent
/// ring, refused with the values read. One IN_ORDER used entry for a batch (virtio 1.4 2.7.8)
/// leaves `used.idx` exact.
#[test]
fn split_indices_are_checked_modulo_2_16() {
    let (config, _) = QueueConfig::contiguous(RingKind::Split, 8, GuestAddress(0x1000), EVENT_IDX);
    let mem = memory();
    for (avail_idx, used_idx) in [(0, 0), (8, 0), (2, 65534), (65535, 65535), (3, 65531)] {
        set_split_indices(&mem, &config, avail_idx, used_idx);
        assert_eq!(split_position(&mem, &config), Ok(used_idx));
    }
    for (avail_idx, used_idx) in [(9, 0), (65534, 2), (0, 1), (4, 65531)] {
        set_split_indices(&mem, &config, avail_idx, used_idx);
        let err = split_position(&mem, &config).unwrap_err();
        let ahead = avail_idx.wrapping_sub(used_idx);
        assert_eq!(
            err,
            PositionError::SplitAhead {
                avail_idx,
                used_idx,
                ahead,
                size: 8
            }
        );
        let text = err.to_string();
        assert!(text.contains(&format!("avail.idx {avail_idx}")), "{text}");
        assert!(text.contains(&format!("used.idx {used_idx}")), "{text}");
    }
    // IN_ORDER: one used entry (the batch's last head) for three chains, used.idx += 3.
    set_split_indices(&mem, &config, 3, 3);
    assert_eq!(read_position(&mem, &config), Ok(QueuePosition::Split(3)));
}

/// Hostile or inconsistent memory is refused with an error naming what was read (spec-decisions
/// §32), never a panic: a ring outside memory or misaligned, a packed ring without EVENT_IDX,
/// flags that are not DESC (virtio 1.4 2.8.10: 0x3 is reserved), an index beyond the size, and
/// a stale position the device had used past.
#[test]
fn inconsistent_rings_are_refused() {
    let mem = memory();
    let config = packed_config(5);
    let out = QueueConfig {
        desc_table: GuestAddress(MEM_SIZE as u64 - 16),
        ..config
    };
    assert!(matches!(
        packed_position(&mem, &out),
        Err(PositionError::Ring(ConfigError::OutOfMemory {
            area: RingArea::Descriptors,
            ..
        }))
    ));
    let split_out = QueueConfig {
        kind: RingKind::Split,
        size: 8,
        device_area: GuestAddress(u64::MAX - 3),
        ..config
    };
    assert!(matches!(
        split_position(&mem, &split_out),
        Err(PositionError::Ring(_))
    ));
    let no_event_idx = QueueConfig {
        features: RingFeatures::default(),
        ..config
    };
    assert_eq!(
        packed_position(&mem, &no_event_idx),
        Err(PositionError::NoEventIdx)
    );
    assert_eq!(
        write_packed_position(&mem, &no_event_idx, RingPosition::INITIAL),
        Err(PositionError::NoEventIdx)
    );

    let event = |desc: u16, flags: u16| {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&desc.to_le_bytes());
        b[2..].copy_from_slice(&flags.to_le_bytes());
        mem.write_obj(b, config.device_area).unwrap();
    };
    for flags in [0u16, 1, 3, 0xffff, 0x0006] {
        event(0, flags);
        assert_eq!(
            packed_position(&mem, &config),
            Err(PositionError::NotRecorded { flags })
        );
    }
    event(5 | 1 << 15, RING_EVENT_FLAGS_DESC);
    let err = packed_position(&mem, &config).unwrap_err();
    assert_eq!(
        err,
        PositionError::IndexOutOfRange {
            index: 5,
            wrap: true,
            size: 5
        }
    );
    assert!(err.to_string().contains("not below the queue size 5"));
    let beyond = RingPosition {
        index: 5,
        wrap_counter: true,
    };
    assert_eq!(
        write_packed_position(&mem, &config, beyond),
        Err(err),
        "the device never records a slot the ring does not have"
    );

    // A stale position: recorded at slot 1, then the device used the chain there.
    let mut driver = HandDriver::new(config);
    let mut device = Device::resumed(config, RingPosition::INITIAL, &mem, false);
    driver.add(&mem, 1);
    device.drain(&mem, &config);
    let stale = device.position();
    write_packed_position(&mem, &config, stale).unwrap();
    driver.add(&mem, 2);
    device.drain(&mem, &config);
    let err = packed_position(&mem, &config).unwrap_err();
    assert_eq!(
        err,
        PositionError::UsedPast {
            slot: 1,
            flags: used_bits(true),
            wrap: true,
            index: 1,
            position_wrap: true
        }
    );
    assert!(err.to_string().contains("descriptor 1"), "{err}");
    // Recorded again after the stop: accepted.
    write_packed_position(&mem, &config, device.position()).unwrap();
    assert_eq!(packed_position(&mem, &config), Ok(device.position()));
    // Withdrawn (chains still in flight at the stop): refused, not guessed.
    withdraw_packed_position(&mem, &config).unwrap();
    assert_eq!(
        packed_position(&mem, &config),
        Err(PositionError::NotRecorded { flags: 1 })
    );
}

/// A stale position from the previous lap is refused too: a used descriptor the device wrote in
/// the lap after it contradicts it (spec-decisions §32).
#[test]
fn a_position_from_the_previous_lap_is_refused() {
    let config = packed_config(3);
    let mem = memory();
    let mut driver = HandDriver::new(config);
    let mut device = Device::resumed(config, RingPosition::INITIAL, &mem, false);
    driver.add(&mem, 2);
    device.drain(&mem, &config);
    driver.collect(&mem, false);
    let stale = device.position();
    assert_eq!(stale.index, 2);
    for _ in 0..3 {
        driver.add(&mem, 1);
        device.drain(&mem, &config);
        driver.collect(&mem, false);
    }
    assert!(!device.position().wrap_counter);
    write_packed_position(&mem, &config, stale).unwrap();
    assert!(matches!(
        packed_position(&mem, &config),
        Err(PositionError::UsedPast { .. })
    ));
}

/// spec-decisions §32: the recorded position is an ordinary ring write, so a memory with dirty
/// logging marks the device area's page; reading it back dirties nothing.
#[test]
fn the_recorded_position_is_dirty_logged() {
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let config = QueueConfig {
        device_area: GuestAddress(0x3000),
        ..packed_config(4)
    };
    let region = mem.find_region(GuestAddress(0)).unwrap();
    assert_eq!(
        packed_position(&mem, &config),
        Err(PositionError::NotRecorded { flags: 0 })
    );
    assert!(!region.bitmap().dirty_at(0x3000));
    write_packed_position(&mem, &config, RingPosition::INITIAL).unwrap();
    assert!(
        region.bitmap().dirty_at(0x3000),
        "the device area's page is dirty"
    );
    assert!(
        !region.bitmap().dirty_at(0x1000),
        "the descriptor ring's is not"
    );
    assert_eq!(packed_position(&mem, &config), Ok(RingPosition::INITIAL));
}
