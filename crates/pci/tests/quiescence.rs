//! Quiescence through `PciDriver` with a `Worker` running and a thread kicking the queue
//! continuously: once DEVICE_STOPPED (seed 000) or SUSPEND (seed 003) is acknowledged, guest
//! memory and the interrupt count do not change until resume; then every buffer latched
//! meanwhile completes exactly once. Split and packed rings.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_pci::testing::*;
use virtio_lm_queue::BufferSpec;
use vm_memory::{Bytes, GuestAddress};

const POISON: u8 = 0xee;
const BUF_LEN: u32 = 64;

fn buffer(id: u16) -> u64 {
    DATA + u64::from(id) * 0x100
}

fn run(packed: bool, quiet: Quiet) {
    let size = if packed { 7 } else { 8 };
    let (mem, f, mut driver) = running(migration_features(packed), size, true);
    let _worker = f.spawn_worker().unwrap();

    // A thread kicks the queue continuously for the whole test.
    let notifier = driver.notifier(0).unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let kicks = Arc::new(AtomicU64::new(0));
    let kicker = {
        let (running, kicks) = (running.clone(), kicks.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                notifier.notify();
                kicks.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };

    // Running: buffers are made available (never explicitly kicked) and complete.
    let mut n = 0u16;
    let mut completed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while completed < 100 {
        assert!(Instant::now() < deadline, "device made no progress");
        while driver.queue(0).unwrap().ring().num_free() > 0 {
            let spec = BufferSpec::writable(buffer(n % 32), BUF_LEN);
            driver.add_buffer(0, &[spec]).unwrap();
            n = n.wrapping_add(1);
        }
        driver.publish(0).unwrap();
        completed += driver.collect_used(0).unwrap().len();
    }

    // Quiesce while buffers may be in flight; what the device finished is collected.
    quiet.enter(&mut driver);
    driver.collect_used(0).unwrap();

    // Latch: fill the ring with poisoned buffers; the kicker keeps notifying.
    let mut latched: BTreeSet<u16> = driver
        .queue(0)
        .unwrap()
        .outstanding()
        .keys()
        .copied()
        .collect();
    while driver.queue(0).unwrap().ring().num_free() > 0 {
        let spec = BufferSpec::writable(buffer(n % 32), BUF_LEN);
        latched.insert(driver.add_buffer(0, &[spec]).unwrap());
        n = n.wrapping_add(1);
    }
    driver.publish(0).unwrap();
    driver.enable_interrupts(0).unwrap();
    let poisoned: Vec<(u16, Vec<BufferSpec>)> = driver
        .queue(0)
        .unwrap()
        .outstanding()
        .iter()
        .map(|(&id, b)| (id, b.clone()))
        .collect();
    for (_, buffers) in &poisoned {
        for b in buffers {
            mem.write_slice(&vec![POISON; b.len as usize], b.addr)
                .unwrap();
        }
    }

    let memory_before = snapshot(&mem);
    let interrupts_before = f.interrupts().total();
    let status_before = driver.status();
    let kicks_before = kicks.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(60), || {
        kicks.load(Ordering::Relaxed) > kicks_before + 200
    }));
    std::thread::sleep(Duration::from_millis(10));
    assert!(
        snapshot(&mem) == memory_before,
        "{quiet:?}: guest memory changed while quiescent (packed {packed})"
    );
    assert_eq!(f.interrupts().total(), interrupts_before, "{quiet:?}");
    assert_eq!(driver.status(), status_before);

    // Resume: every latched buffer completes exactly once.
    quiet.leave(&mut driver);
    let mut done = Vec::new();
    assert!(wait_until(Duration::from_secs(60), || {
        done.extend(driver.collect_used(0).unwrap());
        done.len() >= latched.len()
    }));
    std::thread::sleep(Duration::from_millis(5));
    done.extend(driver.collect_used(0).unwrap());
    running.store(false, Ordering::Relaxed);
    kicker.join().unwrap();

    let ids: Vec<u16> = done.iter().map(|u| u.id).collect();
    let unique: BTreeSet<u16> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a buffer completed twice: {ids:?}");
    assert_eq!(unique, latched);
    for (id, buffers) in &poisoned {
        let used = done.iter().find(|u| u.id == *id).unwrap();
        let total: u32 = buffers.iter().map(|b| b.len).sum();
        assert_eq!(used.len, total);
        for b in buffers {
            let mut bytes = vec![0u8; b.len as usize];
            mem.read_slice(&mut bytes, GuestAddress(b.addr.0)).unwrap();
            assert!(
                bytes.iter().any(|&x| x != POISON),
                "buffer {id} not written"
            );
        }
    }
    assert!(
        f.interrupts().total() > interrupts_before,
        "no notification after resume"
    );
}

virtio_lm_device::test_cases! { run:
    /// Seed 000: "The device MUST keep the config space unchanged when DEVICE_STOPPED is set." and
    /// "When driver is trying to set DEVICE_STOPPED, the device MUST not process new avail
    /// requests" — with the driver kicking continuously, after the stop is acknowledged the guest
    /// memory checksum and the interrupt count do not change until resume; then every latched
    /// buffer completes exactly once (split ring).
    fn stop_is_quiet_under_continuous_kicks_split(false, Quiet::Stop);
    /// Seed 000: "When driver is trying to set DEVICE_STOPPED, the device MUST not process new
    /// avail requests" — as `stop_is_quiet_under_continuous_kicks_split`, packed ring of 7.
    fn stop_is_quiet_under_continuous_kicks_packed(true, Quiet::Stop);
    /// Seed 003: "Stop consuming buffers of any virtqueues and mark all finished descritors as
    /// used." (as merged, spec-decisions §2: while suspended the device touches no virtqueue memory
    /// and sends no notification) — with the driver kicking continuously, after SUSPEND is
    /// acknowledged guest memory and the interrupt count do not change until DRIVER_OK resumes;
    /// then every latched buffer completes exactly once (split ring).
    fn suspend_is_quiet_under_continuous_kicks_split(false, Quiet::Suspend);
    /// Seed 003: "Stop consuming buffers of any virtqueues and mark all finished descritors as
    /// used." — as `suspend_is_quiet_under_continuous_kicks_split`, packed ring of 7.
    fn suspend_is_quiet_under_continuous_kicks_packed(true, Quiet::Suspend);
}
