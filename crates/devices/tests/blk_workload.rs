//! DEVICE_STOPPED (seed 000) and SUSPEND (seed 003) cycles in the middle of a running
//! multi-queue workload, draining or recording in-flight requests: nothing is lost, nothing is
//! completed twice (spec-decisions §7 pitfall 2), the device is quiet while stopped (pitfall 5),
//! and the data on the image and in guest memory is what the driver expects.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{pattern, Req, Rig, TempImage, TestCore, RUNNING};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::status;
use virtio_lm_devices::blk::workload::Xorshift64;
use virtio_lm_devices::testing::jitter;
use virtio_lm_devices::BlkOptions;
use virtio_lm_spec::DeviceStatus;

const QUEUES: u16 = 2;
const SLOTS_PER_QUEUE: u64 = 12;
/// Sectors owned by each slot (one request in flight per slot, so no two overlap).
const BLOCK: u64 = 4;

#[derive(Clone, Copy, Debug)]
enum Op {
    Write(u64),
    Read(u64),
}

/// One slot: its own sectors, the version last written there, the request in flight.
#[derive(Debug, Default)]
struct Slot {
    version: u64,
    in_flight: Option<(u16, Op)>,
}

struct Workload {
    r: Rig,
    slots: Vec<Slot>,
    /// Per queue: buffer id → slot.
    ids: Vec<HashMap<u16, u64>>,
    completed: u64,
}

fn seed(slot: u64, version: u64) -> u64 {
    slot * 1_000_003 + version
}

impl Workload {
    fn queue_of(slot: u64) -> u16 {
        (slot / SLOTS_PER_QUEUE) as u16
    }

    fn req(slot: u64, op: Op) -> Req {
        match op {
            Op::Write(v) => {
                Req::write(slot * BLOCK, pattern(seed(slot, v), (BLOCK * 512) as usize))
            }
            Op::Read(_) => Req::read(slot * BLOCK, BLOCK as u32),
        }
    }

    /// Gives every idle slot its next request: write a new version, then read it back.
    fn issue(&mut self, rng: &mut Xorshift64) {
        for slot in 0..self.slots.len() as u64 {
            let s = &self.slots[slot as usize];
            if s.in_flight.is_some() || rng.next_u64().is_multiple_of(4) {
                continue;
            }
            let op = if rng.next_u64().is_multiple_of(2) || s.version == 0 {
                Op::Write(s.version + 1)
            } else {
                Op::Read(s.version)
            };
            let q = Self::queue_of(slot);
            let id = self.r.add(q, slot, &Self::req(slot, op));
            assert!(self.ids[usize::from(q)].insert(id, slot).is_none());
            self.slots[slot as usize].in_flight = Some((id, op));
        }
        for q in 0..QUEUES {
            self.r.publish(q);
            self.r.core.kick(q);
        }
    }

    /// Collects used buffers: each must be a request in flight, completed OK, with the data the
    /// driver expects.
    fn collect(&mut self) {
        for q in 0..QUEUES {
            for used in self.r.collect(q) {
                let slot = self.ids[usize::from(q)]
                    .remove(&used.id)
                    .unwrap_or_else(|| panic!("queue {q}: id {} used twice", used.id));
                let (id, op) = self.slots[slot as usize].in_flight.take().unwrap();
                assert_eq!(id, used.id);
                let req = Self::req(slot, op);
                assert_eq!(self.r.status_of(slot, &req), status::OK, "slot {slot}");
                match op {
                    Op::Write(v) => self.slots[slot as usize].version = v,
                    Op::Read(v) => assert_eq!(
                        self.r.in_data(slot, &req),
                        pattern(seed(slot, v), (BLOCK * 512) as usize),
                        "slot {slot} read back version {v}"
                    ),
                }
                self.completed += 1;
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.in_flight.is_some()).count()
    }
}

/// Checksum of the rings and request slots (where the device could write).
fn device_area_checksum(r: &Rig) -> u64 {
    let len = (common::DATA + QUEUES as u64 * SLOTS_PER_QUEUE * common::SLOT) as usize;
    let mut buf = vec![0u8; len];
    vm_memory::Bytes::read_slice(&*r.mem, &mut buf, vm_memory::GuestAddress(0)).unwrap();
    buf.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Runs `cycles` stop or suspend cycles; every `migrate_every`-th stop instead moves the
/// workload to a fresh device and core on the same memory and image (the rest of a migration
/// is the vm layer's).
fn run(packed: bool, mode: QuiesceMode, cycles: u32, seed_value: u64, migrate_every: Option<u32>) {
    let image = TempImage::new(QUEUES as u64 * SLOTS_PER_QUEUE * BLOCK);
    let options = BlkOptions {
        num_queues: QUEUES,
        queue_size: 64,
        backend_threads: 3,
        faults: jitter(400),
        ..image.options()
    };
    let mut r = Rig::new(options.clone(), mode);
    r.start_all(packed);
    let mut w = Workload {
        r,
        slots: (0..QUEUES as u64 * SLOTS_PER_QUEUE)
            .map(|_| Slot::default())
            .collect(),
        ids: vec![HashMap::new(); usize::from(QUEUES)],
        completed: 0,
    };
    let mut rng = Xorshift64(seed_value);
    let mut in_flight_at_stop = 0;
    let (mut cancelled, mut migrations) = (0, 0);
    for cycle in 0..cycles {
        w.issue(&mut rng);
        for _ in 0..(rng.next_u64() % 4) {
            std::thread::sleep(Duration::from_micros(100));
            w.r.core.process_pending();
            w.collect();
        }
        let suspend = rng.next_u64().is_multiple_of(2);
        let (request, presented) = virtio_lm_device::testing::quiesce_request(suspend);
        w.r.core.set_and_wait(request, presented);
        w.collect();
        in_flight_at_stop += w.in_flight();
        if mode == QuiesceMode::Drain {
            assert_eq!(w.in_flight(), 0, "cycle {cycle}: drained before presenting");
        }
        if cycle % 16 == 0 {
            let (sum, irq) = (device_area_checksum(&w.r), w.r.irq.used());
            std::thread::sleep(Duration::from_millis(1));
            w.r.core.kick(0);
            assert_eq!(w.r.core.status(), presented);
            assert_eq!(
                device_area_checksum(&w.r),
                sum,
                "cycle {cycle}: quiet while stopped"
            );
            assert_eq!(w.r.irq.used(), irq);
        }
        let migrate = migrate_every.is_some_and(|n| cycle % n == n - 1);
        if migrate && !suspend {
            cancelled += w.r.stats.cancelled();
            w.r = w.r.migrate(options.clone(), mode);
            migrations += 1;
        } else if suspend {
            w.r.core.write_status(presented | DeviceStatus::DRIVER_OK);
        } else {
            w.r.core.write_status(RUNNING);
        }
        assert_eq!(w.r.core.status(), RUNNING, "cycle {cycle}: resumed");
    }
    // Let everything finish.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while w.in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "requests lost");
        std::thread::sleep(Duration::from_micros(200));
        w.r.core.process_pending();
        w.collect();
    }
    for (slot, s) in w.slots.iter().enumerate() {
        let slot = slot as u64;
        if s.version > 0 {
            assert_eq!(
                image.sector(slot * BLOCK, BLOCK),
                pattern(seed(slot, s.version), (BLOCK * 512) as usize),
                "slot {slot} on the image"
            );
        }
    }
    assert!(
        w.completed > u64::from(cycles),
        "the workload made progress"
    );
    if mode == QuiesceMode::RecordInflight {
        assert!(
            in_flight_at_stop > 0,
            "some stops caught requests in flight"
        );
        assert!(cancelled + w.r.stats.cancelled() > 0);
    }
    eprintln!("{mode:?} packed={packed}: {} completed, {in_flight_at_stop} in flight at stops, {} cancelled, {migrations} migrations", w.completed, cancelled + w.r.stats.cancelled());
    assert_eq!(migrations > 0, migrate_every.is_some());
    assert!(!w.r.needs_reset());
}

/// Split ring, draining stops and suspends.
#[test]
fn stop_cycles_drain_split() {
    run(false, QuiesceMode::Drain, 300, 0x9e3779b97f4a7c15, None);
}

/// Packed ring, draining stops and suspends.
#[test]
fn stop_cycles_drain_packed() {
    run(true, QuiesceMode::Drain, 300, 0x2545f4914f6cdd1d, None);
}

/// Split ring, stops and suspends that record in-flight requests; they are re-executed on
/// resume exactly once.
#[test]
fn stop_cycles_record_inflight_split() {
    run(
        false,
        QuiesceMode::RecordInflight,
        300,
        0x853c49e6748fea9b,
        None,
    );
}

/// Packed ring, recording in-flight requests.
#[test]
fn stop_cycles_record_inflight_packed() {
    run(
        true,
        QuiesceMode::RecordInflight,
        300,
        0xda3e39cb94b95bdb,
        None,
    );
}

/// Recording in-flight requests while the workload moves to a fresh device every fifth cycle
/// (when it is a stop): each handed-over request is completed once, by the new device.
#[test]
fn stop_cycles_record_inflight_with_handover() {
    run(
        false,
        QuiesceMode::RecordInflight,
        200,
        0x1d8e4e27c47d124f,
        Some(5),
    );
    run(
        true,
        QuiesceMode::RecordInflight,
        200,
        0x6c8e9cf570932bd5,
        Some(5),
    );
}

/// Draining while the workload moves to a fresh device every fifth cycle.
#[test]
fn stop_cycles_drain_with_handover() {
    run(true, QuiesceMode::Drain, 200, 0x4f1bbcdcbfa53e0b, Some(5));
}
