//! The queue rules of the core (registers, and the seed 001 queue state: window, reset, start),
//! each pinned so that breaking it fails a test (found by `scripts/mutants`: these mutants survived the seed
//! tests).

use std::sync::Arc;

use virtio_lm_device::testing::{self, ConfigDevice, RUNNING, SETUP};
use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
use virtio_lm_queue::RingDriver;
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

fn new_core() -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
    let mem = Arc::new(Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let irq = Arc::new(InterruptCounter::default());
    let options = CoreOptions::default();
    let core = DeviceCore::new(Box::new(ConfigDevice::new()), mem, irq.clone(), options).unwrap();
    (core, irq)
}

fn bit(feature: Feature) -> u64 {
    Profile::Seeds.mask(feature).unwrap()
}

/// Negotiates VERSION_1, QUEUE_STATE and `extra`, lays out and enables the queue (DRIVER_OK
/// not yet set); returns the driver's rings.
fn set_up(core: &mut DeviceCore<Mem>, extra: u64) -> Vec<Option<RingDriver>> {
    let features = bit(Feature::Version1) | bit(Feature::QueueState) | extra;
    let kind = testing::negotiate(core, features);
    let ring = testing::ring_features(core, features);
    let mem = core.mem().clone();
    testing::setup_queues(core, &*mem, kind, ring, 0x1000, 0x10000)
}

/// spec-decisions §3: "A queue started from a written state is re-checked at once and sends one
/// notification: the register flow cannot carry an owed notification". The same start without a
/// written state sends none.
#[test]
fn a_queue_started_from_a_written_state_notifies_once() {
    let (mut core, irq) = new_core();
    set_up(&mut core, 0);
    core.write_status(RUNNING);
    assert_eq!(irq.used(), 0, "no written state, nothing used: no notification");

    let (mut core, irq) = new_core();
    set_up(&mut core, 0);
    core.set_queue_avail_state(0, 0);
    core.write_status(RUNNING);
    assert_eq!(core.status(), RUNNING);
    assert_eq!(irq.used(), 1, "the owed notification of a written state");
}

/// Virtio 1.x §4.1.4.3, queue_size: "On reset, specifies the maximum queue size supported by
/// the device. This can be modified by the driver to reduce memory requirements. A 0 means the
/// queue is unavailable." The driver may choose any size from 1 up to the maximum (the maximum
/// itself included); 0 and sizes above the maximum are ignored.
#[test]
fn queue_size_accepts_one_to_the_maximum() {
    let (mut core, _) = new_core();
    testing::negotiate(&mut core, bit(Feature::Version1));
    assert_eq!(core.status(), SETUP);
    let max = core.queue(0).unwrap().max_size;
    let size = |core: &DeviceCore<Mem>| core.queue(0).unwrap().size;
    assert_eq!(size(&core), max, "starts at the maximum");
    for (write, expect) in [(max / 2, max / 2), (max, max), (1, 1), (max + 1, 1), (0, 1)] {
        core.write_queue(0, |r| r.size = write);
        assert_eq!(size(&core), expect, "after writing {write}");
    }
}
