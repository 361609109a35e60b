//! Stop and suspend racing the driver's kicks, with the device's worker thread processing them:
//! thousands of iterations, each checking that once the stop or suspend is acknowledged nothing
//! changes in guest memory and no interrupt is raised until resume, and that every buffer then
//! completes exactly once.

mod common;

use std::sync::{Arc, Mutex};

use common::{checksum, CoreDriver, DATA, QUEUE_BASE, RUNNING, SETUP};
use virtio_lm_device::{DeviceCore, InterruptCounter, Worker};
use virtio_lm_spec::DeviceStatus;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory the device may write: queue 0's rings and the data buffers.
fn device_visible(d: &CoreDriver) -> u64 {
    checksum(&d.mem, QUEUE_BASE, 0x1000) ^ checksum(&d.mem, DATA, 64 * 0x100)
}

struct Rig {
    d: CoreDriver,
    core: Arc<Mutex<DeviceCore<common::Mem>>>,
    irq: Arc<InterruptCounter>,
    kick: Arc<EventFd>,
    _worker: Worker,
}

fn rig() -> Rig {
    let mut d = CoreDriver::running();
    let irq = d.irq.clone();
    // The core moves behind the mutex the worker shares; the test keeps the ring drivers.
    let placeholder = CoreDriver::counting();
    let core = Arc::new(Mutex::new(std::mem::replace(&mut d.core, placeholder.core)));
    let kick = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let worker = Worker::spawn(core.clone(), vec![kick.clone()]).unwrap();
    Rig {
        d,
        core,
        irq,
        kick,
        _worker: worker,
    }
}

/// Waits (at most 10 s) until the worker has completed `want` buffers in total.
fn collect_until(r: &mut Rig, collected: &mut Vec<u16>, want: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        collected.extend(r.d.collect().iter().map(|u| u.id));
        if collected.len() >= want {
            return;
        }
        std::thread::yield_now();
    }
    panic!("only {} of {want} buffers completed", collected.len());
}

fn race(quiesce: DeviceStatus, resume: DeviceStatus, acknowledged: DeviceStatus) {
    let mut r = rig();
    let mut total = 0usize;
    let mut collected = Vec::new();
    for iteration in 0..2000u32 {
        let offered = r.d.offer(2 + (iteration % 3) as usize);
        total += offered.len();
        r.kick.write(1).unwrap();
        // The quiesce request lands while the worker may be processing that very kick.
        r.core.lock().unwrap().write_status(quiesce);
        assert_eq!(
            r.core.lock().unwrap().status(),
            acknowledged,
            "iteration {iteration}"
        );
        let memory = device_visible(&r.d);
        let interrupts = (r.irq.used(), r.irq.config());
        r.kick.write(1).unwrap();
        std::thread::yield_now();
        r.core.lock().unwrap().kick(0);
        assert_eq!(
            device_visible(&r.d),
            memory,
            "guest memory changed while quiet ({iteration})"
        );
        assert_eq!(
            (r.irq.used(), r.irq.config()),
            interrupts,
            "interrupt while quiet ({iteration})"
        );
        r.core.lock().unwrap().write_status(resume);
        collect_until(&mut r, &mut collected, total);
    }
    // A second completion of a buffer would make the driver's collect fail on an id it does not
    // hold; here the count closes the other side: none is missing.
    assert_eq!(collected.len(), total, "each buffer completed exactly once");
}

/// Seed 000: after DEVICE_STOPPED is presented the device "MUST not process new avail
/// requests" — raced against kicks through the worker, 2000 times.
#[test]
fn stop_races_kicks() {
    race(
        RUNNING | DeviceStatus::DEVICE_STOPPED,
        RUNNING,
        RUNNING | DeviceStatus::DEVICE_STOPPED,
    );
}

/// Seed 003: once SUSPEND is presented the device must "Pause its operation except device
/// status" — raced against kicks through the worker, 2000 times.
#[test]
fn suspend_races_kicks() {
    race(
        RUNNING | DeviceStatus::SUSPEND,
        SETUP | DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK,
        SETUP | DeviceStatus::SUSPEND,
    );
}
