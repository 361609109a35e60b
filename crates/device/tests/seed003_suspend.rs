//! Seed 003 (SUSPEND / VIRTIO_F_SUSPEND) at the device core, with the resolution of its review
//! that spec-notes §2 adopts: the device clears DRIVER_OK when it presents SUSPEND, and setting
//! DRIVER_OK resumes it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{bit, CoreDriver, Mem, SlowDevice, RUNNING, SETUP};
use virtio_lm_device::testing::{ConfigDevice, CONFIG_LEN};
use virtio_lm_device::{AdminModeChange, DeviceError, VirtioDevice};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::{DeviceStatus, Feature};

const SUSPENDED: DeviceStatus = SETUP.union(DeviceStatus::SUSPEND);

/// Seed 003: "The device MUST ignore SUSPEND if FEATURES_OK is not set." and "The device MUST
/// ignore SUSPEND if VIRTIO_F_SUSPEND is not negotiated." — with spec-notes §2, also without
/// DRIVER_OK.
#[test]
fn suspend_ignored_when_not_allowed() {
    let mut d = CoreDriver::counting();
    d.start(bit(Feature::Version1));
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), RUNNING, "feature not negotiated");

    let mut d = CoreDriver::counting();
    let f = bit(Feature::Version1) | bit(Feature::Suspend);
    d.negotiate(f);
    d.core.write_status(SETUP | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SETUP, "DRIVER_OK not set");

    let mut d = CoreDriver::counting();
    d.core
        .write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::SUSPEND);
    assert!(
        !d.core.status().intersects(DeviceStatus::SUSPEND),
        "FEATURES_OK not set"
    );
}

/// Seed 003: "When setting SUSPEND, the driver MUST re-read device status to ensure the SUSPEND
/// bit is set." The device presents it only after it would "Stop consuming buffers of any
/// virtqueues", "Wait until all descriptors that being processed to finish and mark them as
/// used", "Flush all used buffer and send used buffer notifications to the driver" and "Record
/// Virtqueue State of each enabled virtqueue"; then (spec-notes §2) it clears DRIVER_OK.
#[test]
fn suspend_completes_in_process_work_before_presenting() {
    let (mut d, release) = CoreDriver::holding(3);
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(
        d.core.status(),
        RUNNING,
        "requests in process: not yet suspended"
    );
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        d.core.status(),
        SUSPENDED,
        "SUSPEND presented, DRIVER_OK cleared"
    );
    assert_eq!(d.collect().len(), 3);
    assert!(
        d.irq.used() >= 1,
        "used notifications sent before presenting"
    );
    assert_eq!(
        d.core.queue_state(0).unwrap().avail_state,
        3,
        "queue state recorded"
    );
}

/// Seed 003: the device must "Pause its operation except device status and preserve
/// configurations in its Device Configuration Space" — spec-notes §2: while suspended no
/// notifications, no virtqueue memory access, no config change.
#[test]
fn suspended_device_is_quiet() {
    let mut d = CoreDriver::new(Box::new(ConfigDevice::new()));
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SUSPENDED);
    d.offer(4);
    let checksum = d.memory_checksum();
    let (used, config, generation) = (d.irq.used(), d.irq.config(), d.core.config_generation());
    let read_config = |d: &CoreDriver| {
        let mut bytes = [0u8; CONFIG_LEN];
        d.core.read_config(0, &mut bytes);
        bytes
    };
    let config_space = read_config(&d);
    for _ in 0..5 {
        d.core.kick(0);
    }
    d.core
        .change_config(|dev: &mut dyn VirtioDevice<Mem>| dev.write_config(0, &[9]));
    d.core.write_config(0, &[1, 2, 3]);
    assert_eq!(d.memory_checksum(), checksum);
    assert_eq!(
        (d.irq.used(), d.irq.config(), d.core.config_generation()),
        (used, config, generation)
    );
    assert_eq!(
        read_config(&d),
        config_space,
        "configuration space unchanged"
    );
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(
        read_config(&d)[..3],
        [9, 1, 2],
        "the device's change, on resume"
    );
    assert_eq!(d.collect().len(), 4, "latched kicks processed on resume");
}

/// Seed 003: "If VIRTIO_F_SUSPEND is negotiated and SUSPEND is set, the device SHOULD clear
/// SUSPEND and resumes operation upon DRIVER_OK." As resolved (spec-notes §2) DRIVER_OK was
/// cleared by the device, so setting it is a real transition: the device resumes, then clears
/// SUSPEND; a config change that happened meanwhile is notified; latched work completes.
#[test]
fn driver_ok_resumes_then_clears_suspend() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    let ids = d.offer(4);
    d.core.kick(0);
    let applied = Arc::new(AtomicBool::new(false));
    let flag = applied.clone();
    d.core
        .change_config(move |_dev: &mut dyn VirtioDevice<Mem>| flag.store(true, Ordering::SeqCst));
    assert!(!applied.load(Ordering::SeqCst));
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(d.core.status(), RUNNING, "SUSPEND cleared, DRIVER_OK set");
    assert!(applied.load(Ordering::SeqCst));
    assert_eq!(
        d.irq.config(),
        1,
        "held-back config change notified on resume"
    );
    let mut used: Vec<u16> = d.collect().iter().map(|u| u.id).collect();
    used.sort_unstable();
    assert_eq!(used, ids, "every latched buffer completes exactly once");
}

/// Seed 003: "The device SHOULD allow settings to device status even when SUSPEND is set" —
/// a reset is accepted while suspended, and so is a queue state write (DRIVER_OK is clear).
#[test]
fn status_writes_accepted_while_suspended() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.offer(2);
    d.core.kick(0);
    d.collect();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SUSPENDED);
    d.core.set_queue_avail_state(0, 2);
    assert_eq!(d.core.queue_avail_state(0), 2);
    d.core.write_status(DeviceStatus::RESET);
    assert_eq!(d.core.status(), DeviceStatus::RESET);
}

/// Seed 003 with spec-notes §2: "a device that cannot suspend or resume sets DEVICE_NEEDS_RESET
/// instead" — a queue state rewritten while suspended that fails validation makes the resume
/// fail.
#[test]
fn failed_resume_sets_needs_reset() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    d.core.set_queue_avail_state(0, 100);
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert!(d.core.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(d.irq.config(), 1);
}

/// Seed 003 with spec-notes §2: a device that cannot suspend sets DEVICE_NEEDS_RESET instead of
/// presenting SUSPEND.
#[test]
fn failed_suspend_sets_needs_reset() {
    let slow = SlowDevice::new();
    slow.fail_quiesce.store(true, Ordering::SeqCst);
    let mut d = CoreDriver::new(Box::new(slow));
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    let s = d.core.status();
    assert!(!s.intersects(DeviceStatus::SUSPEND));
    assert!(s.contains(DeviceStatus::DEVICE_NEEDS_RESET));
}

/// Seed 003 review: "Setting a bit that is already set should not have side effects. In fact
/// auto-clearing suspend is problematic too." Rewriting DRIVER_OK while running does nothing;
/// only the device clears SUSPEND, and a driver write that clears it is ignored.
#[test]
fn rewriting_bits_has_no_side_effect() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING);
    assert_eq!(d.core.status(), RUNNING);
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    d.core.write_status(SETUP);
    assert_eq!(
        d.core.status(),
        SUSPENDED,
        "clearing SUSPEND by the driver is ignored"
    );
}

/// Seed 003 with seed 000 (spec-notes §2): "The device is quiescent while any of them holds;
/// each is resumed only by its own mechanism." Suspending a stopped device, then resuming from
/// the suspension, leaves it stopped until DEVICE_STOPPED is cleared.
#[test]
fn stop_and_suspend_are_undone_separately() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    d.core
        .write_status(RUNNING | DeviceStatus::DEVICE_STOPPED | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SUSPENDED | DeviceStatus::DEVICE_STOPPED);
    let ids = d.offer(2);
    d.core.kick(0);
    d.core
        .write_status(SUSPENDED | DeviceStatus::DEVICE_STOPPED | DeviceStatus::DRIVER_OK);
    assert_eq!(
        d.core.status(),
        RUNNING | DeviceStatus::DEVICE_STOPPED,
        "resumed from suspend, still stopped"
    );
    assert!(d.collect().is_empty(), "still quiet");
    d.core.write_status(RUNNING);
    let used: Vec<u16> = d.collect().iter().map(|u| u.id).collect();
    assert_eq!(used, ids);
}

/// Seed 002: "If DRIVER_OK is set, after it sets DEVICE_NEEDS_RESET, the device MUST send a
/// device configuration change notification to the driver." With seed 003 as merged
/// (spec-decisions §2): a suspended device sends no notification of any kind, so an error met
/// while suspended (DRIVER_OK clear) is presented in the status at once and notified when the
/// driver next sets DRIVER_OK; the device does not resume then and stays suspended with
/// DEVICE_NEEDS_RESET until reset.
#[test]
fn needs_reset_while_suspended_is_notified_at_driver_ok() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SUSPENDED);
    d.core
        .needs_reset(DeviceError::Backend("backend gone while suspended".into()));
    let broken = SUSPENDED | DeviceStatus::DEVICE_NEEDS_RESET;
    assert_eq!(d.core.status(), broken);
    assert_eq!(d.irq.config(), 0, "no notification while suspended");
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(
        d.irq.config(),
        1,
        "delivered when the driver sets DRIVER_OK"
    );
    assert_eq!(d.core.status(), broken, "still suspended, until reset");
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(d.irq.config(), 1, "delivered once");
    assert_eq!(d.irq.used(), 0);
    d.core.write_status(DeviceStatus::RESET);
    assert_eq!(d.core.status(), DeviceStatus::RESET);
}

/// Seed 004: no configuration change notification unless the device is Active; seed 003 as
/// merged (spec-decisions §2): none while suspended either. An error met while suspended and in
/// admin Stop is not notified when the owner returns the device to Active (it is still
/// suspended), only when the driver sets DRIVER_OK.
#[test]
fn needs_reset_owed_while_suspended_survives_the_return_to_active() {
    let mut d = CoreDriver::counting();
    d.start_default();
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(
        d.core.set_admin_mode(DevMode::Stop),
        Ok(AdminModeChange::Done)
    );
    d.core
        .needs_reset(DeviceError::Backend("backend gone".into()));
    assert_eq!(
        d.core.set_admin_mode(DevMode::Active),
        Ok(AdminModeChange::Done)
    );
    assert_eq!(d.irq.config(), 0, "suspended: no notification on Active");
    d.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(d.irq.config(), 1);
}
