//! A device whose requests finish in the background wakes the worker through an eventfd; the
//! worker services the core, which returns the completions and notifies. Nothing else enters
//! the core meanwhile, so the notification proves the waker path works.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CoreDriver, SlowDevice};
use virtio_lm_device::Worker;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Seed 000: requests in process complete (used + notification) — here from the background,
/// through the worker's waker, without any kick or status access.
#[test]
fn background_completions_are_serviced_through_a_waker() {
    let slow = SlowDevice::new();
    let release = slow.release.clone();
    let held = slow.held.clone();
    let mut d = CoreDriver::new(Box::new(slow));
    d.start_default();
    let irq = d.irq.clone();
    let placeholder = CoreDriver::counting();
    let core = Arc::new(Mutex::new(std::mem::replace(&mut d.core, placeholder.core)));
    let kick = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let waker = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let _worker =
        Worker::spawn_with_wakers(core.clone(), vec![kick.clone()], vec![waker.clone()]).unwrap();

    d.offer(3);
    kick.write(1).unwrap();
    // Wait until the worker has taken the three chains; the device holds them, nothing is used.
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.lock().unwrap().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(held.lock().unwrap().len(), 3);
    assert_eq!(irq.used(), 0);
    release.store(true, Ordering::SeqCst);
    waker.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while irq.used() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(irq.used(), 1, "the worker serviced the core on the waker");
    assert_eq!(d.collect().len(), 3);
}
