//! Seed 004 admin (out-of-band) modes at the device core: pending changes, their end by reset,
//! cancellation or DEVICE_NEEDS_RESET, and restoring a context in Freeze without touching guest
//! memory.

mod common;

use std::sync::atomic::Ordering;

use common::context::fresh;
use common::*;
use virtio_lm_device::{
    AdminModeChange, AdminModeError, AdminModeStatus, ContextError, DeviceCore, DeviceError,
    InterruptCounter,
};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::DeviceStatus;
use vm_memory::{Bytes, GuestAddress};

/// A running SlowDevice core with two requests held in process.
fn busy() -> (CoreDriver, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    CoreDriver::holding(2)
}

/// Seed 004: "the device MUST finish all the outstanding PCI transactions before completing the
/// command VIRTIO_ADMIN_CMD_DEV_MODE_SET" — the change is pending while requests are in process
/// (a second change is refused meanwhile), then completes and the requests are all used.
#[test]
fn stop_is_pending_until_requests_finish() {
    let (mut d, release) = busy();
    assert_eq!(
        d.core.set_admin_mode(DevMode::Stop),
        Ok(AdminModeChange::Pending)
    );
    assert_eq!(d.core.admin_mode(), DevMode::Active);
    assert_eq!(d.core.poll_admin_mode(), AdminModeStatus::Pending);
    assert_eq!(
        d.core.set_admin_mode(DevMode::Freeze),
        Err(AdminModeError::Busy)
    );
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        d.core.poll_admin_mode(),
        AdminModeStatus::Done(DevMode::Stop)
    );
    assert_eq!(d.collect().len(), 2);
    assert_eq!(
        d.core.poll_admin_mode(),
        AdminModeStatus::Idle(DevMode::Stop)
    );
}

/// Seed 004: "the member device MUST respond to commands VIRTIO_ADMIN_CMD_DEV_MODE_SET ... after
/// the device reset completes" — a reset while the change waits ends it (mode kept: "if the
/// command fails, the device MUST retain the current device mode"); an owner may also cancel a
/// change, and the device resumes.
#[test]
fn reset_or_cancel_ends_a_pending_change() {
    let (mut d, _release) = busy();
    d.core.set_admin_mode(DevMode::Stop).unwrap();
    d.core.write_status(DeviceStatus::RESET);
    assert_eq!(
        d.core.poll_admin_mode(),
        AdminModeStatus::Failed(AdminModeError::Reset)
    );
    assert_eq!(d.core.admin_mode(), DevMode::Active);
    assert_eq!(d.core.reset_count(), 1 + 1, "start_default resets once too");

    let (mut d, release) = busy();
    d.core.set_admin_mode(DevMode::Freeze).unwrap();
    d.offer(1);
    d.core.kick(0);
    assert!(d.core.cancel_admin_mode());
    assert_eq!(
        d.core.poll_admin_mode(),
        AdminModeStatus::Idle(DevMode::Active)
    );
    release.store(true, Ordering::SeqCst);
    d.core.kick(0);
    assert_eq!(d.collect().len(), 3, "the latched kick was processed");
}

/// Seed 004 (our reading): a device that set DEVICE_NEEDS_RESET processes nothing more, so a
/// pending change out of Active completes — the device is as quiet as Stop requires and a
/// broken device can still be migrated; its notification waits for Active ("the device MUST
/// not generate any configuration change notification" when not Active).
#[test]
fn needs_reset_completes_a_pending_change() {
    let (mut d, _release) = busy();
    d.core.set_admin_mode(DevMode::Stop).unwrap();
    let notified = d.irq.config();
    d.core
        .needs_reset(DeviceError::Backend("backend gone".into()));
    assert_eq!(
        d.irq.config(),
        notified + 1,
        "still Active when it happened"
    );
    assert_eq!(
        d.core.poll_admin_mode(),
        AdminModeStatus::Done(DevMode::Stop)
    );
    assert!(d.core.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
}

/// Seed 004: "the device MUST not access any virtqueue memory or any memory referred by the
/// virtqueue when the device mode is not Active" — a running context restored in Freeze is not
/// checked against the ring in guest memory (the destination's memory may still be arriving);
/// the queue starts against the ring on Freeze → Active, which fails (DEVICE_NEEDS_RESET) if the
/// ring does not match, and works once the memory is there.
#[test]
fn restore_in_freeze_reads_no_ring() {
    let mut src = CoreDriver::counting();
    src.start_default();
    src.offer(2);
    src.core.kick(0);
    assert_eq!(src.collect().len(), 2);
    src.core.set_admin_mode(DevMode::Stop).unwrap();
    let ctx = src.core.save_context().unwrap();

    // Not in Freeze: the restore reads the (empty) ring and refuses the context.
    let mut plain = fresh(Box::new(rng()), Default::default());
    assert!(matches!(
        plain.core.restore_context(&ctx),
        Err(ContextError::QueueState { .. })
    ));

    // In Freeze: accepted; the empty ring fails only when the device goes Active.
    for copy_memory in [false, true] {
        let mut dst = fresh(Box::new(rng()), Default::default());
        dst.core.set_admin_mode(DevMode::Freeze).unwrap();
        dst.core.restore_context(&ctx).unwrap();
        assert_eq!(dst.core.snapshot_context().unwrap(), ctx);
        if copy_memory {
            let mut bytes = vec![0u8; MEM_SIZE];
            src.mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
            dst.mem.write_slice(&bytes, GuestAddress(0)).unwrap();
        }
        dst.core.set_admin_mode(DevMode::Active).unwrap();
        let failed = dst.core.status().contains(DeviceStatus::DEVICE_NEEDS_RESET);
        assert_eq!(failed, !copy_memory);
    }
}

fn rng() -> CountingDevice {
    CountingDevice::new(0, 16)
}

/// Seed 004: admin modes are a separate, out-of-band state: a core starts Active, and a core
/// built without an owner works exactly as before (nothing pending, nothing to poll).
#[test]
fn a_fresh_core_is_active() {
    let mem = memory();
    let irq = std::sync::Arc::new(InterruptCounter::default());
    let mut core = DeviceCore::new(Box::new(rng()), mem, irq, Default::default()).unwrap();
    assert_eq!(core.admin_mode(), DevMode::Active);
    assert!(!core.admin_mode_pending());
    assert_eq!(
        core.poll_admin_mode(),
        AdminModeStatus::Idle(DevMode::Active)
    );
    assert!(!core.cancel_admin_mode());
}
