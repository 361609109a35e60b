//! A stop or suspend racing a notification that arrives at the same moment, thousands of
//! times, on a tiny queue: after every acknowledged quiesce nothing changes, and after every
//! resume the buffer of that round has completed exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use virtio_lm_pci::testing::*;
use virtio_lm_pci::{KickMode, PciDriver, QueueSetup, VirtioPciFunction};
use virtio_lm_queue::BufferSpec;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const ITERATIONS: usize = 2000;

/// Waits until the worker has read the kick eventfd (it is no longer readable), then takes the
/// core lock once so a kick already in the core has finished.
struct WorkerSync {
    epoll: Epoll,
}

impl WorkerSync {
    fn new(function: &VirtioPciFunction<Mem>) -> Option<Self> {
        let KickMode::Worker(fds) = function.kick_mode() else {
            return None;
        };
        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(&*fds[0]),
                EpollEvent::new(EventSet::IN, 0),
            )
            .unwrap();
        Some(Self { epoll })
    }

    fn settle(&self, function: &VirtioPciFunction<Mem>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut events = [EpollEvent::default(); 1];
        while self.epoll.wait(0, &mut events).unwrap() > 0 {
            assert!(Instant::now() < deadline, "worker never took the kick");
            std::thread::yield_now();
        }
        drop(function.core().lock().unwrap());
    }
}

fn race(packed: bool, worker: bool) {
    let mem = memory_of(0x4000);
    let f = counting_function(&mem, 2, worker);
    let _worker = worker.then(|| f.spawn_worker().unwrap());
    let sync = WorkerSync::new(&f);
    let mut driver: PciDriver<Mem> = driver_for(&f, &mem);
    driver
        .init(migration_features(packed), &[QueueSetup::new(0, 2, 0x1000)])
        .unwrap();
    let notifier = driver.notifier(0).unwrap();
    let start = Arc::new(Barrier::new(2));
    let kicked = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let kicker = {
        let (start, kicked, done) = (start.clone(), kicked.clone(), done.clone());
        std::thread::spawn(move || loop {
            start.wait();
            if done.load(Ordering::SeqCst) {
                return;
            }
            notifier.notify();
            kicked.wait();
        })
    };

    let mut latched = 0;
    for round in 0..ITERATIONS {
        let suspend = round % 2 == 1;
        let id = driver
            .add_buffer(
                0,
                &[BufferSpec::writable(0x2000 + 0x40 * (round as u64 % 8), 16)],
            )
            .unwrap();
        driver.publish(0).unwrap();
        start.wait();
        // The notification and the quiesce race.
        if suspend {
            driver.suspend().unwrap();
        } else {
            driver.stop().unwrap();
        }
        let memory = snapshot(&mem);
        let interrupts = f.interrupts().total();
        kicked.wait();
        // A second notification while quiescent, then let the worker finish with both.
        driver.notify(0).unwrap();
        if let Some(sync) = &sync {
            sync.settle(&f);
        }
        assert!(
            snapshot(&mem) == memory,
            "round {round}: guest memory changed after the quiesce was acknowledged"
        );
        assert_eq!(f.interrupts().total(), interrupts, "round {round}");
        // Completed before the acknowledgement, or latched for the resume.
        let mut used = driver.collect_used(0).unwrap();
        if used.is_empty() {
            latched += 1;
        }
        if suspend {
            driver.resume_from_suspend().unwrap();
        } else {
            driver.resume().unwrap();
        }
        used.extend(driver.collect_used(0).unwrap());
        assert_eq!(used.len(), 1, "round {round}");
        assert_eq!((used[0].id, used[0].len), (id, 16), "round {round}");
    }
    done.store(true, Ordering::SeqCst);
    start.wait();
    kicker.join().unwrap();
    assert!(driver.outstanding().is_empty());
    eprintln!("packed {packed} worker {worker}: {latched} of {ITERATIONS} kicks latched");
}

/// Seed 000: "When driver is trying to set DEVICE_STOPPED, the device MUST not process new
/// avail requests and MUST complete all requests that is currently processing before setting
/// DEVICE_STOPPED." — 2000 rounds (stop and suspend alternating) of a notification racing the
/// quiesce, kicks processed by a worker thread, split ring of 2: after each acknowledgement no
/// guest memory write and no interrupt; after each resume the round's buffer is used once.
#[test]
fn quiesce_racing_a_kick_worker_split() {
    race(false, true);
}

/// Seed 000: "the device MUST not process new avail requests" once DEVICE_STOPPED is being set
/// — as `quiesce_racing_a_kick_worker_split`, packed ring of 2.
#[test]
fn quiesce_racing_a_kick_worker_packed() {
    race(true, true);
}

/// Seed 003: "Stop consuming buffers of any virtqueues" — the same race with kicks delivered
/// synchronously into the core (direct mode) from another thread, split ring of 2.
#[test]
fn quiesce_racing_a_kick_direct_split() {
    race(false, false);
}

/// Seed 003: "Stop consuming buffers of any virtqueues" — direct mode, packed ring of 2.
#[test]
fn quiesce_racing_a_kick_direct_packed() {
    race(true, false);
}
