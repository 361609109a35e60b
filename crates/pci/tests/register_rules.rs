//! Common-configuration register rules of the virtio-pci transport, each pinned so that breaking
//! it fails a test (found by `scripts/mutants`: these mutants survived the register tests).

use std::sync::Arc;

use virtio_lm_device::CoreOptions;
use virtio_lm_pci::testing::admin::{owner, Kind};
use virtio_lm_pci::testing::{
    counting_function_with, driver_for, features, init_queue0, memory, push, Mem, Regs, DATA,
};
use virtio_lm_pci::VirtioPciFunction;
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::offset::*;
use virtio_lm_spec::pci::VIRTIO_MSI_NO_VECTOR;
use virtio_lm_spec::{DeviceStatus, Feature};

/// A running function offering `offered` (VERSION_1 negotiated), three buffers used on queue
/// 0, then reset by the driver: the core keeps queue 0's state (seed 001).
fn used_three_then_reset(offered: &[Feature]) -> Arc<VirtioPciFunction<Mem>> {
    let mem = memory();
    let options = CoreOptions {
        features: offered.to_vec(),
        ..CoreOptions::default()
    };
    let function = counting_function_with(&mem, 8, options, false, 1);
    let mut driver = driver_for(&function, &mem);
    init_queue0(&mut driver, features(&[Feature::Version1]));
    for i in 0..3 {
        push(
            &mut driver,
            0,
            &[BufferSpec::writable(DATA + i * 0x100, 16)],
        );
    }
    function.w8(DEVICE_STATUS, 0);
    function
}

/// Seed 001 / spec-decisions §3: the queue state registers are present when
/// VIRTIO_F_QUEUE_STATE is negotiated, or after a reset when the device offers it ("the driver
/// reads state after a reset"); otherwise they read 0. A device that does not offer the feature
/// shows no state after a reset, though the core kept it; one that offers it shows it.
#[test]
fn queue_state_registers_need_the_feature_offered() {
    let without = used_three_then_reset(&[Feature::Version1]);
    assert_eq!(without.r16(QUEUE_AVAIL_STATE), 0);
    assert_eq!(without.core().lock().unwrap().queue_avail_state(0), 3);

    let with = used_three_then_reset(&[Feature::Version1, Feature::QueueState]);
    assert_eq!(with.r16(QUEUE_AVAIL_STATE), 3);
}

/// Virtio 1.x §4.1.4.3: driver_feature_select is read-write: it reads back what the driver
/// wrote.
#[test]
fn driver_feature_select_reads_back() {
    let mem = memory();
    let function = counting_function_with(&mem, 8, CoreOptions::default(), false, 1);
    function.w32(DRIVER_FEATURE_SELECT, 1);
    assert_eq!(function.r32(DRIVER_FEATURE_SELECT), 1);
    function.w32(DRIVER_FEATURE_SELECT, 0);
    assert_eq!(function.r32(DRIVER_FEATURE_SELECT), 0);
}

/// Seed 004 framework (spec §2.6): the admin queue fields are valid only once VIRTIO_F_ADMIN_VQ
/// is negotiated, so before that an owner's admin queue does not exist for the driver: it reads
/// as absent and writes to its queue fields (size, enable, vector, addresses, queue state) change
/// nothing. The owner's ordinary queue exists all along, and with an admin queue selected the
/// fields that are not per queue (device_status) still work.
#[test]
fn admin_queue_is_absent_until_admin_vq_is_negotiated() {
    let owner = owner(1, Kind::Counting);
    let f = owner.function();
    let admin = f.r16(ADMIN_QUEUE_INDEX);
    assert_eq!(admin, 1);
    assert_eq!(f.r16(QUEUE_SIZE), 8, "queue 0 exists before negotiation");
    f.to_features_ok(features(&[Feature::Version1, Feature::QueueState]));
    assert_eq!(f.r16(QUEUE_SIZE), 8, "queue 0 exists without ADMIN_VQ");

    f.w16(QUEUE_SELECT, admin);
    assert_eq!(f.r16(QUEUE_SIZE), 0, "admin queue absent");
    let before = *f.core().lock().unwrap().queue(admin).unwrap();
    f.w16(QUEUE_SIZE, 4);
    f.w64(QUEUE_DESC, 0x3000);
    f.w16(QUEUE_MSIX_VECTOR, 0);
    f.w16(QUEUE_AVAIL_STATE, 5);
    f.w16(QUEUE_ENABLE, 1);
    let core = f.core().lock().unwrap();
    assert_eq!(
        *core.queue(admin).unwrap(),
        before,
        "admin queue registers written"
    );
    assert_eq!(
        core.queue_avail_state(admin),
        0,
        "admin queue state written"
    );
    drop(core);
    assert_eq!(f.interrupts().queue_vector(admin), VIRTIO_MSI_NO_VECTOR);

    let status = f.status();
    f.w8(DEVICE_STATUS, (status | DeviceStatus::FAILED).bits());
    assert!(
        f.status().contains(DeviceStatus::FAILED),
        "device_status written"
    );
}
