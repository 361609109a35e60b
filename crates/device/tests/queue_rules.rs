//! The queue rules of the core (registers, and the seed 001 queue state: window, reset, start),
//! each pinned so that breaking it fails a test (found by `scripts/mutants`: these mutants survived the seed
//! tests).

use std::sync::Arc;

use virtio_lm_device::testing::{self, ConfigDevice, RUNNING, SETUP};
use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
use virtio_lm_queue::{BufferSpec, QueueState, RingDriver, RingKind};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::DeviceStatus;
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

fn new_core() -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
    core_on(Arc::new(
        Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
    ))
}

/// A core on `mem` (a migration destination shares the source's guest memory).
fn core_on(mem: Arc<Mem>) -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
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
    assert_eq!(
        irq.used(),
        0,
        "no written state, nothing used: no notification"
    );

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

/// A split state that differs from the initial one.
fn moved_state() -> QueueState {
    let mut state = QueueState::initial(RingKind::Split);
    state.avail_state = 3;
    state
}

/// Seed 001: "a driver MUST set the state of each virtqueue after setting the FEATURE_OK status
/// bit but before setting the DRIVER_OK status bit". A complete queue state (as a context restore
/// installs it) is taken in that window only, and only for an existing queue; what is taken is
/// what the queue then reports.
#[test]
fn complete_queue_state_is_taken_between_features_ok_and_driver_ok() {
    let (mut core, _) = new_core();
    let features = bit(Feature::Version1) | bit(Feature::QueueState);
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    core.set_driver_features(features);
    assert!(
        !core.set_queue_state(0, moved_state()),
        "before FEATURES_OK"
    );
    core.write_status(SETUP);
    assert!(
        !core.set_queue_state(1, moved_state()),
        "past the last queue"
    );
    assert!(core.set_queue_state(0, moved_state()), "in the window");
    assert_eq!(core.queue_state(0), Some(moved_state()));
    assert_eq!(core.queue_avail_state(0), 3);
}

/// Seed 001 (the window above): once DRIVER_OK is set the complete state is refused and the
/// running queue keeps its own; seed 004: in admin Stop the device ignores the driver's writes,
/// so the window is shut then too.
#[test]
fn complete_queue_state_is_refused_while_running_or_admin_stopped() {
    let (mut core, _) = new_core();
    set_up(&mut core, 0);
    core.write_status(RUNNING);
    assert!(!core.set_queue_state(0, moved_state()), "DRIVER_OK set");

    let (mut core, _) = new_core();
    set_up(&mut core, 0);
    core.set_admin_mode(DevMode::Stop).unwrap();
    assert!(!core.set_queue_state(0, moved_state()), "admin Stop");
    core.set_admin_mode(DevMode::Active).unwrap();
    assert!(core.set_queue_state(0, moved_state()), "Active again");
}

/// Seed 001: the queue state is read while the device does not run (spec-decisions §3: "readable
/// while the device does not run"); a running queue's state is not offered.
#[test]
fn complete_queue_state_is_not_read_while_running() {
    let (mut core, _) = new_core();
    set_up(&mut core, 0);
    assert!(core.queue_state(0).is_some(), "before DRIVER_OK");
    core.write_status(RUNNING);
    assert_eq!(core.queue_state(0), None, "running");
}

/// Seed 003 / spec-decisions §2: a suspended device's recorded queue state is readable (the
/// driver reads and may rewrite it) even when VIRTIO_F_QUEUE_STATE was not negotiated, so a
/// migration can carry it.
#[test]
fn complete_queue_state_is_read_while_suspended_without_queue_state_feature() {
    let (mut core, _) = new_core();
    let features = bit(Feature::Version1) | bit(Feature::Suspend);
    let kind = testing::negotiate(&mut core, features);
    let ring = testing::ring_features(&core, features);
    let mem = core.mem().clone();
    testing::setup_queues(&mut core, &*mem, kind, ring, 0x1000, 0x10000);
    core.write_status(RUNNING);
    assert_eq!(core.queue_state(0), None);
    core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(core.status(), SETUP | DeviceStatus::SUSPEND);
    assert_eq!(
        core.queue_state(0),
        Some(QueueState::initial(RingKind::Split))
    );
}

/// Seed 001: the queue state is where the device reads the next available entry, readable while
/// the device is stopped (seed 000: the driver reads it after DEVICE_STOPPED presents). A device
/// restored from a stopped source's context reads the source's state, not the initial one, also
/// after its queue was rebuilt as a live queue from that state.
#[test]
fn stopped_queue_state_reads_the_same_after_restore() {
    let stop = bit(Feature::DeviceStop);
    let (mut source, _) = new_core();
    let mut rings = set_up(&mut source, stop);
    source.write_status(RUNNING);
    let mem = source.mem().clone();
    let ring = rings[0].as_mut().unwrap();
    for i in 0..3u64 {
        ring.add_chain(&*mem, &[BufferSpec::writable(0x8_0000 + i * 0x100, 0x40)])
            .unwrap();
    }
    ring.publish(&*mem).unwrap();
    source.kick(0);
    let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
    source.write_status(stopped);
    assert_eq!(source.status(), stopped);
    assert_eq!(source.queue_avail_state(0), 3, "three buffers taken");

    let context = source.save_context().unwrap();
    let (mut dest, _) = core_on(mem);
    dest.restore_context(&context).unwrap();
    assert_eq!(dest.status(), stopped);
    assert_eq!(dest.queue_avail_state(0), 3);
}
