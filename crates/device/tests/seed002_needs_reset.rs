//! Seed 002 (DEVICE_NEEDS_RESET) at the device core.

mod common;

use common::TestRing;

use common::{bit, CoreDriver, RUNNING, SETUP};
use virtio_lm_device::DeviceError;
use virtio_lm_queue::{BufferSpec, ChainError, QueueError};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestAddress;

/// Makes queue 0's next chain malformed: a buffer outside guest memory.
fn offer_malformed(d: &mut CoreDriver) {
    let mem = d.mem.clone();
    let ring = d.rings[0].as_mut().unwrap();
    ring.add(
        &mem,
        &[BufferSpec {
            addr: GuestAddress(u64::MAX - 8),
            len: 64,
            writable: true,
        }],
    );
    ring.publish(&*mem).unwrap();
}

/// Seed 002: "The device SHOULD set DEVICE_NEEDS_RESET when it enters an error state that a
/// reset is needed. After it sets DEVICE_NEEDS_RESET, the device MUST send a device
/// configuration change notification to the driver."
#[test]
fn malformed_chain_sets_needs_reset_and_notifies() {
    let mut d = CoreDriver::counting();
    d.start_default();
    offer_malformed(&mut d);
    d.core.kick(0);
    assert_eq!(d.core.status(), RUNNING | DeviceStatus::DEVICE_NEEDS_RESET);
    assert_eq!(d.irq.config(), 1);
    assert!(matches!(
        d.core.last_error(),
        Some(DeviceError::Queue(QueueError::Chain(
            ChainError::BufferOutOfMemory { .. }
        )))
    ));
}

/// Seed 002 note: "the driver can't assume requests in flight will be completed if
/// DEVICE_NEEDS_RESET is set" — and the device processes nothing more until reset: later kicks
/// touch no guest memory and raise no interrupt.
#[test]
fn nothing_is_processed_after_needs_reset() {
    let mut d = CoreDriver::counting();
    d.start_default();
    offer_malformed(&mut d);
    d.core.kick(0);
    d.offer(3);
    let checksum = d.memory_checksum();
    let irq = (d.irq.used(), d.irq.config());
    d.core.kick(0);
    assert_eq!(d.memory_checksum(), checksum);
    assert_eq!((d.irq.used(), d.irq.config()), irq);
}

/// Seed 002: "A good implementation will try to recover by issuing a reset." After reset and
/// re-initialisation the device works again and NEEDS_RESET is gone.
#[test]
fn reset_recovers_from_needs_reset() {
    let mut d = CoreDriver::counting();
    let features = d.start_default();
    offer_malformed(&mut d);
    d.core.kick(0);
    d.core.write_status(DeviceStatus::RESET);
    assert_eq!(d.core.status(), DeviceStatus::RESET);
    d.start(features);
    d.offer(2);
    d.core.kick(0);
    assert_eq!(d.collect().len(), 2);
    assert!(d.core.last_error().is_none());
}

/// Seed 002: "If the driver sets the FAILED bit, the driver MUST later reset the device before
/// attempting to re-initialize." The device ignores initialisation writes until the reset.
#[test]
fn failed_requires_reset_before_reinitialisation() {
    let mut d = CoreDriver::counting();
    d.core.write_status(DeviceStatus::ACKNOWLEDGE);
    d.core
        .write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::FAILED);
    d.core
        .write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::FAILED | DeviceStatus::DRIVER);
    assert_eq!(
        d.core.status(),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::FAILED
    );
    d.core.write_status(DeviceStatus::RESET);
    d.start(bit(Feature::Version1));
    assert_eq!(d.core.status(), RUNNING);
}

/// The driver cannot set or clear DEVICE_NEEDS_RESET: it is the device's bit.
#[test]
fn driver_cannot_write_needs_reset() {
    let mut d = CoreDriver::counting();
    d.negotiate(bit(Feature::Version1));
    d.core
        .write_status(SETUP | DeviceStatus::DEVICE_NEEDS_RESET);
    assert_eq!(d.core.status(), SETUP);
}

/// Seed 002: "The device SHOULD set DEVICE_NEEDS_RESET when it enters an error state that a
/// reset is needed" — a queue layout the device cannot use (a misaligned descriptor table) found
/// when DRIVER_OK is set, with the configuration change notification.
#[test]
fn invalid_queue_layout_sets_needs_reset_at_driver_ok() {
    let mut d = CoreDriver::counting();
    let f = bit(Feature::Version1);
    d.negotiate(f);
    d.setup_queues(f);
    d.core.write_queue(0, |regs| regs.desc = 0x3); // misaligned descriptor table
    d.core.write_status(RUNNING);
    assert!(d.core.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(d.irq.config(), 1);
}
