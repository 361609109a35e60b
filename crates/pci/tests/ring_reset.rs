//! Virtqueue reset (VIRTIO_F_RING_RESET, bit 40 of the v1.4 profile; virtio 1.4 "Virtqueue
//! Reset" and the PCI `queue_reset` register at offset 58; spec-decisions §16): one queue is
//! reset and set up again while the other keeps running.

use std::sync::Arc;

use virtio_lm_pci::testing::*;
use virtio_lm_pci::{PciDriver, QueueSetup, VirtioPciFunction};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::offset::{
    DEVICE_STATUS, QUEUE_DESC, QUEUE_ENABLE, QUEUE_RESET, QUEUE_SELECT, QUEUE_SIZE,
};
use virtio_lm_spec::pci::VIRTIO_MSI_NO_VECTOR;
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::{Bytes, GuestAddress};

const RING1: u64 = 0x3000;
const NEW_RING0: u64 = 0x5000;

type Function = Arc<VirtioPciFunction<Mem>>;

/// A two-queue v1.4 function, its driver initialised with RING_RESET, queue 0 at [`RING`] and
/// queue 1 at [`RING1`].
fn two_running() -> (Arc<Mem>, Function, PciDriver<Mem>) {
    let mem = memory();
    let function = two_queue_function(&mem);
    let mut driver = v14_driver(&function, &mem);
    let features = v14_features(&[Feature::Version1, Feature::RingReset]);
    driver
        .init(
            features,
            &[QueueSetup::new(0, 8, RING), QueueSetup::new(1, 8, RING1)],
        )
        .unwrap();
    (mem, function, driver)
}

/// A two-queue v1.4 function, its driver initialised without RING_RESET and only queue 0 (at
/// [`RING`]) enabled.
fn queue0_without_ring_reset() -> (Arc<Mem>, Function, PciDriver<Mem>) {
    let mem = memory();
    let function = two_queue_function(&mem);
    let mut driver = v14_driver(&function, &mem);
    init_queue0(&mut driver, v14_features(&[Feature::Version1]));
    (mem, function, driver)
}

fn read(mem: &Mem, addr: u64, n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

/// 1.4 "queue_reset": "The device MUST present a 0 in queue_reset after the virtqueue is
/// enabled with queue_enable" and "after a device reset".
#[test]
fn queue_reset_reads_zero_after_device_reset_and_after_enable() {
    let (_mem, function, mut driver) = two_running();
    assert_eq!(driver.queue_reset_register(0), 0, "after enable");
    assert_eq!(driver.queue_reset_register(1), 0, "after enable");
    driver.reset().unwrap();
    function.w16(QUEUE_SELECT, 0);
    assert_eq!(function.r16(QUEUE_RESET), 0, "after device reset");
}

/// 1.4 "queue_reset": after the driver writes 1 "the device MUST reset the queue" and, once
/// done, "MUST present a 0 in queue_reset and queue_enable"; "the device MUST reset any state
/// of a virtqueue to the default state" (size back to the maximum, vector to NO_VECTOR).
#[test]
fn reset_presents_zero_in_queue_reset_and_queue_enable() {
    let (_mem, function, driver) = two_running();
    function.w16(QUEUE_SELECT, 0);
    function.w16(QUEUE_SIZE, 4);
    function.w16(QUEUE_RESET, 1);
    assert_eq!(function.r16(QUEUE_RESET), 0);
    assert_eq!(function.r16(QUEUE_ENABLE), 0);
    assert_eq!(function.r16(QUEUE_SIZE), 8, "the maximum again");
    assert_eq!(function.interrupts().queue_vector(0), VIRTIO_MSI_NO_VECTOR);
    function.w16(QUEUE_SELECT, 1);
    assert_eq!(
        function.r16(QUEUE_ENABLE),
        1,
        "the other queue is untouched"
    );
    drop(driver);
}

/// 1.4 "Virtqueue Reset": after a queue reset "the device MUST NOT execute any requests from
/// that virtqueue, or notify the driver for it": a buffer made available on the old ring is
/// never used, even when notified.
#[test]
fn reset_queue_executes_nothing_more() {
    let (mem, function, mut driver) = two_running();
    driver
        .add_buffer(0, &[BufferSpec::writable(DATA, 4)])
        .unwrap();
    driver.publish(0).unwrap();
    let before = function.interrupts().vector_count(1);
    function.w16(QUEUE_SELECT, 0);
    function.w16(QUEUE_RESET, 1);
    function.core().lock().unwrap().kick(0);
    assert_eq!(
        read(&mem, DATA, 4),
        [0; 4],
        "the old ring's buffer is untouched"
    );
    assert_eq!(function.interrupts().vector_count(1), before);
}

/// 1.4 "Virtqueue Reset": the driver re-enables the queue "with the same or different
/// parameters" and the device "MUST observe any queue configuration that may have been
/// changed"; meanwhile the other queue keeps running, and the reset queue starts from the
/// default (initial) state on its new ring.
#[test]
fn reset_queue_is_set_up_again_while_the_other_runs() {
    let (mem, _function, mut driver) = two_running();
    driver
        .submit(1, &[BufferSpec::writable(DATA + 0x100, 2)])
        .unwrap();
    assert_eq!(driver.collect_used(1).unwrap().len(), 1);

    driver
        .reset_queue(QueueSetup::new(0, 4, NEW_RING0))
        .unwrap();
    driver
        .submit(1, &[BufferSpec::writable(DATA + 0x200, 2)])
        .unwrap();
    assert_eq!(driver.collect_used(1).unwrap().len(), 1, "queue 1 ran on");
    assert_eq!(read(&mem, DATA + 0x200, 2), [103, 104]);

    driver.submit(0, &[BufferSpec::writable(DATA, 3)]).unwrap();
    let used = driver.collect_used(0).unwrap();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 3);
    assert_eq!(read(&mem, DATA, 3), [1, 2, 3]);
}

/// spec-decisions §16: without RING_RESET negotiated (and always in the seeds profile, where
/// bit 40 is QUEUE_STATE) a write to `queue_reset` is ignored and the queue keeps running.
#[test]
fn queue_reset_is_ignored_without_ring_reset() {
    let (_mem, function, mut driver) = queue0_without_ring_reset();
    function.w16(QUEUE_SELECT, 0);
    function.w16(QUEUE_RESET, 1);
    assert_eq!(function.r16(QUEUE_ENABLE), 1);
    assert!(driver.reset_queue(QueueSetup::new(0, 8, RING)).is_err());
    driver.submit(0, &[BufferSpec::writable(DATA, 2)]).unwrap();
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
}

/// spec-decisions §16: a queue reset for a queue past the last one, or once the device failed
/// (FAILED set by the driver), does nothing; the queues keep their registers.
#[test]
fn queue_reset_beyond_the_queues_or_after_failure_does_nothing() {
    let (_mem, function, _driver) = two_running();
    function.w16(QUEUE_SELECT, 2);
    function.w16(QUEUE_RESET, 1);
    let status = function.status();
    function.w8(DEVICE_STATUS, (status | DeviceStatus::FAILED).bits());
    function.w16(QUEUE_SELECT, 0);
    function.w16(QUEUE_RESET, 1);
    for q in [0, 1] {
        function.w16(QUEUE_SELECT, q);
        assert_eq!(function.r16(QUEUE_ENABLE), 1, "queue {q}");
    }
}

/// 1.4 "Virtqueue Reset" (only a reset queue is set up again after DRIVER_OK;
/// spec-decisions §16): a running queue's registers stay read-only with RING_RESET
/// negotiated, and without it a queue the driver did not enable cannot be enabled late.
#[test]
fn only_a_reset_queue_is_writable_after_driver_ok() {
    let (_mem, function, _driver) = two_running();
    function.w16(QUEUE_SELECT, 0);
    function.w16(QUEUE_SIZE, 4);
    function.w64(QUEUE_DESC, NEW_RING0);
    assert_eq!(function.r16(QUEUE_SIZE), 8);
    assert_eq!(function.r64(QUEUE_DESC), RING);

    let (_mem, function, _driver) = queue0_without_ring_reset();
    function.w16(QUEUE_SELECT, 1);
    function.w16(QUEUE_SIZE, 4);
    function.w16(QUEUE_ENABLE, 1);
    assert_eq!(function.r16(QUEUE_SIZE), 8);
    assert_eq!(function.r16(QUEUE_ENABLE), 0);
}
