//! The crash test of in-flight tracking: a backend stopped at every store it makes to the
//! region or the ring while taking and completing requests, then restarted from the region
//! alone, completes every request exactly once, resubmitting in the order it took them.

use std::collections::HashMap;
use std::sync::Arc;

use virtio_lm_device::QueueAccess;
use virtio_lm_queue::{
    BufferSpec, DeviceQueue, QueueConfig, QueueState, RingDriver, RingFeatures, RingKind, Virtqueue,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{CrashHook, InflightArea, QueueRegion};

const SIZE: u16 = 8;
const REQUESTS: usize = 14;

type Mem = GuestMemoryMmap<()>;

/// The guest side: a driver and which request each buffer id stands for.
struct Guest {
    mem: Mem,
    driver: RingDriver,
    outstanding: HashMap<u16, usize>,
    next: usize,
    completions: Vec<u32>,
}

impl Guest {
    fn new(config: QueueConfig) -> Self {
        let mem = Mem::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
        let driver = RingDriver::new(config, &mem).unwrap();
        Self {
            mem,
            driver,
            outstanding: HashMap::new(),
            next: 0,
            completions: vec![0; REQUESTS],
        }
    }

    /// Offers up to `n` more requests; every third goes through an indirect table.
    fn offer(&mut self, n: usize) {
        for _ in 0..n {
            let req = self.next;
            let indirect = req % 3 == 2;
            if req >= REQUESTS || self.driver.num_free() < if indirect { 1 } else { 2 } {
                break;
            }
            let data = 0x1_0000 + 0x100 * req as u64;
            let buffers = [
                BufferSpec::readable(data, 16),
                BufferSpec::writable(data + 0x80, 4),
            ];
            let id = if indirect {
                let table = GuestAddress(0x2_0000 + 0x100 * req as u64);
                self.driver.add_indirect_chain(&self.mem, &buffers, table)
            } else {
                self.driver.add_chain(&self.mem, &buffers)
            }
            .unwrap();
            assert!(self.outstanding.insert(id, req).is_none());
            self.next += 1;
        }
        self.driver.publish(&self.mem).unwrap();
    }

    /// Collects used buffers: a buffer not outstanding would be a second completion.
    fn collect(&mut self) {
        for used in self.driver.collect_used(&self.mem).unwrap() {
            let req = self
                .outstanding
                .remove(&used.id)
                .unwrap_or_else(|| panic!("buffer {} used while not outstanding", used.id));
            self.completions[req] += 1;
        }
    }

    fn done(&self) -> bool {
        self.next == REQUESTS && self.outstanding.is_empty()
    }
}

/// The backend side: a running ring, its region, and the ids it took, oldest first.
struct Backend {
    queue: Virtqueue,
    region: QueueRegion,
    area: Arc<InflightArea>,
    taken: Vec<u16>,
    /// Every id taken, in order (ids are reused: the last occurrence is the live one).
    history: Vec<u16>,
}

impl Backend {
    fn crashed(&self) -> bool {
        self.area.hook().fired()
    }

    /// One round: take up to two, complete one or two (newest or oldest), publish. Returns
    /// false once the crash hook fired.
    fn round(&mut self, guest: &Guest, round: usize) -> bool {
        let mut access =
            QueueAccess::new(&mut self.queue, &guest.mem, 0).observed(&mut self.region);
        for _ in 0..2 {
            match access.pop().unwrap() {
                Some(chain) => {
                    self.taken.push(chain.id());
                    self.history.push(chain.id());
                }
                None => break,
            }
            if self.area.hook().fired() {
                return false;
            }
        }
        let completions = if round.is_multiple_of(3) { 2 } else { 1 };
        for _ in 0..completions {
            if self.taken.is_empty() {
                break;
            }
            let at = if round.is_multiple_of(2) {
                self.taken.len() - 1
            } else {
                0
            };
            let id = self.taken.remove(at);
            access.add_used(id, 4).unwrap();
        }
        let published = self.region.publish(&mut self.queue, &guest.mem);
        if self.crashed() {
            return false;
        }
        published.unwrap();
        assert_eq!(self.region.error(), None);
        true
    }
}

/// A restarted backend: maps the area the frontend kept and lets the region decide the ring
/// state. `frontend_base` is what QEMU sends after a crash (split: used.idx; packed: stale).
fn restart(
    old: &Arc<InflightArea>,
    config: &QueueConfig,
    guest: &Guest,
    frontend_base: QueueState,
) -> Backend {
    let file = old.file().try_clone().unwrap();
    let area = Arc::new(InflightArea::map(file, old.size(), 0, 1, SIZE).unwrap());
    let (region, state) = QueueRegion::start(&area, 0, config, frontend_base, &guest.mem).unwrap();
    let queue = Virtqueue::from_state(*config, &state, &guest.mem).unwrap();
    let taken: Vec<u16> = queue.inflight().iter().map(|c| c.id()).collect();
    Backend {
        queue,
        region,
        area,
        history: taken.clone(),
        taken,
    }
}

/// A `kind` ring of `SIZE` at guest address 0, with indirect descriptors and no event index.
fn ring_config(kind: RingKind) -> QueueConfig {
    let features = RingFeatures {
        event_idx: false,
        indirect_desc: true,
    };
    QueueConfig::contiguous(kind, SIZE, GuestAddress(0), features).0
}

/// Runs the workload with the backend stopped after `stores` stores (never if `None`), then
/// restarted from the region; returns whether the hook fired.
fn run(kind: RingKind, stores: Option<u64>) -> bool {
    let config = ring_config(kind);
    let mut guest = Guest::new(config);
    let mut area = InflightArea::create(1, SIZE).unwrap();
    if let Some(n) = stores {
        area.set_crash_hook(CrashHook::after(n));
    }
    let area = Arc::new(area);
    let initial = QueueState::initial(kind);
    let Ok((region, state)) = QueueRegion::start(&area, 0, &config, initial.clone(), &guest.mem)
    else {
        assert!(area.hook().fired());
        let mut backend = restart(&area, &config, &guest, initial);
        return finish(&mut backend, &mut guest, true);
    };
    let queue = Virtqueue::from_state(config, &state, &guest.mem).unwrap();
    let mut backend = Backend {
        queue,
        region,
        area: area.clone(),
        taken: Vec::new(),
        history: Vec::new(),
    };
    let mut round = 0;
    while !guest.done() {
        guest.offer(3);
        if !backend.round(&guest, round) {
            let before: Vec<u16> = backend.history.clone();
            let base = match kind {
                RingKind::Split => QueueState {
                    avail_state: ring_used_idx(&config, &guest.mem),
                    ..QueueState::initial(kind)
                },
                RingKind::Packed => QueueState::initial(kind),
            };
            guest.collect();
            backend = restart(&area, &config, &guest, base);
            // Resubmitted in the order they were taken (a request taken but not yet recorded
            // is simply taken again from the ring).
            let positions: Vec<usize> = backend
                .taken
                .iter()
                .map(|id| {
                    before
                        .iter()
                        .rposition(|b| b == id)
                        .expect("resubmitted a request never taken")
                })
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "order {positions:?}"
            );
            return finish(&mut backend, &mut guest, true);
        }
        guest.collect();
        round += 1;
        assert!(round < 200, "workload does not finish");
    }
    finish(&mut backend, &mut guest, false)
}

fn ring_used_idx(config: &QueueConfig, mem: &Mem) -> u16 {
    use vm_memory::Bytes;
    mem.read_obj::<u16>(GuestAddress(config.device_area.0 + 2))
        .unwrap()
}

/// Runs the rest of the workload without crashing and checks each request completed once.
fn finish(backend: &mut Backend, guest: &mut Guest, crashed: bool) -> bool {
    let mut round = 1;
    while !guest.done() {
        guest.offer(3);
        assert!(backend.round(guest, round));
        guest.collect();
        round += 1;
        assert!(round < 200, "workload does not finish after the restart");
    }
    assert_eq!(guest.completions, vec![1; REQUESTS]);
    crashed
}

fn crash_at_every_store(kind: RingKind) {
    assert!(!run(kind, None));
    let mut stores = 0;
    while run(kind, Some(stores)) {
        stores += 1;
        assert!(stores < 100_000);
    }
    assert!(stores > 100, "only {stores} crash points");
}

/// vhost-user "Inflight I/O tracking", split virtqueue: "Resubmit inflight DescStateSplit
/// entries in order of their counter value" after fixing up the last batch when "the value of
/// used_idx does not match the idx value of used ring". A backend stopped before any store of
/// taking and completing requests recovers every request exactly once, in taken order.
#[test]
fn split_crash_at_every_store_completes_each_request_once() {
    crash_at_every_store(RingKind::Split);
}

/// vhost-user "Inflight I/O tracking", packed virtqueue: roll back or commit the update in
/// progress by the used descriptor's flags, clear the free list, "resubmit inflight
/// DescStatePacked entries in order of their counter value". Same crash sweep as split,
/// with chains of two ring slots and indirect chains.
#[test]
fn packed_crash_at_every_store_completes_each_request_once() {
    crash_at_every_store(RingKind::Packed);
}

/// vhost-user SET_INFLIGHT_FD hands us a region the frontend controls: sizes that are not the
/// one we give out, an unaligned offset, no queues or a queue size of 0 are refused; a region
/// whose header says "written" but whose contents are arbitrary either recovers into a state
/// the queue then validates, or is refused — never a panic or an endless walk.
#[test]
fn hostile_areas_and_corrupt_regions_are_refused_without_panicking() {
    use std::os::unix::fs::FileExt;

    let area = InflightArea::create(1, SIZE).unwrap();
    let file = || area.file().try_clone().unwrap();
    let size = area.size();
    for (mmap_size, offset, queues, queue_size) in [
        (size + 64, 0, 1, SIZE),
        (size - 64, 0, 1, SIZE),
        (size, 8, 1, SIZE),
        (size, 0, 0, SIZE),
        (size, 0, 1, 0),
        (size, 0, 2, SIZE),
        (u64::MAX, 4096, 1, SIZE),
    ] {
        assert!(InflightArea::map(file(), mmap_size, offset, queues, queue_size).is_err());
    }

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for kind in [RingKind::Split, RingKind::Packed] {
        let config = ring_config(kind);
        let guest = Guest::new(config);
        for round in 0..300 {
            let mut bytes: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            // Mostly "written, our version, our size", so the contents get looked at.
            if round % 10 != 0 {
                bytes[8..10].copy_from_slice(&1u16.to_ne_bytes());
                bytes[10..12].copy_from_slice(&SIZE.to_ne_bytes());
            }
            if round % 3 == 0 {
                // Small values: links and counts that stay inside the ring.
                for b in &mut bytes[12..] {
                    *b %= SIZE as u8;
                }
            }
            area.file().write_all_at(&bytes, 0).unwrap();
            let mapped = Arc::new(InflightArea::map(file(), size, 0, 1, SIZE).unwrap());
            let base = QueueState::initial(kind);
            if let Ok((_, state)) = QueueRegion::start(&mapped, 0, &config, base, &guest.mem) {
                let _ = Virtqueue::from_state(config, &state, &guest.mem);
            }
        }
    }
}
