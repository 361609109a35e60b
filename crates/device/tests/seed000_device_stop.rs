//! Seed 000 (DEVICE_STOPPED / VIRTIO_F_DEVICE_STOP) at the device core, plus the general status
//! rules the seed restates.

mod common;

use std::sync::atomic::Ordering;

use common::{bit, CoreDriver, SlowDevice, RUNNING, SETUP};
use virtio_lm_device::testing::{ConfigDevice, CONFIG_LEN};
use virtio_lm_device::{CoreOptions, VirtioDevice};
use virtio_lm_spec::{DeviceStatus, Feature};

/// Seed 000: "The device MUST initialize device status to 0 upon reset."
#[test]
fn reset_sets_status_to_zero() {
    let mut d = CoreDriver::running_then(DeviceStatus::RESET);
    assert_eq!(d.core.status(), DeviceStatus::RESET);
    assert_eq!(d.core.driver_features(), 0);
}

/// Seed 000: "The device MUST NOT consume buffers or send any used buffer notifications to the
/// driver before DRIVER_OK." Kicks before DRIVER_OK are ignored; nothing is used.
#[test]
fn no_processing_before_driver_ok() {
    let mut d = CoreDriver::counting();
    let features = bit(Feature::Version1);
    d.prepare(features);
    d.offer(2);
    d.core.kick(0);
    assert!(d.collect().is_empty());
    assert_eq!(d.irq.used(), 0);
    d.core.write_status(RUNNING);
    d.core.kick(0);
    assert_eq!(d.collect().len(), 2);
    assert_eq!(d.irq.used(), 1);
}

/// Seed 000: "The driver MUST NOT clear a device status bit. If the driver sets the FAILED bit,
/// the driver MUST later reset the device" — restated as: the driver may clear DEVICE_STOPPED
/// only. The device ignores a write that clears any other bit (spec-decisions §2).
#[test]
fn status_write_clearing_other_bits_is_ignored() {
    let mut d = CoreDriver::running();
    for value in [
        SETUP,
        RUNNING & !DeviceStatus::ACKNOWLEDGE,
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER_OK,
    ] {
        d.core.write_status(value);
        assert_eq!(d.core.status(), RUNNING, "write {value:#x} must be ignored");
    }
}

/// Seed 000: "The driver MUST NOT set or clear DEVICE_STOPPED when DRIVER_OK is not set." and
/// "The device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set."
#[test]
fn device_stopped_ignored_without_driver_ok() {
    let mut d = CoreDriver::counting();
    let features = bit(Feature::Version1) | bit(Feature::DeviceStop);
    d.negotiate(features);
    d.core.write_status(SETUP | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), SETUP);
}

/// Seed 000 (VIRTIO_F_DEVICE_STOP): without the feature negotiated the bit is ignored too.
#[test]
fn device_stopped_ignored_without_feature() {
    let mut d = CoreDriver::counting();
    d.start(bit(Feature::Version1));
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING);
}

/// Seed 000: "In order to stop the device, the driver MUST set DEVICE_STOPPED and re-read
/// device status until DEVICE_STOPPED is set. In order to resume the device, the driver MUST
/// clear DEVICE_STOPPED and re-read until it is clear."
#[test]
fn stop_and_resume_by_the_bit() {
    let mut d = CoreDriver::running_then(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING | DeviceStatus::DEVICE_STOPPED);
    d.core.write_status(RUNNING);
    assert_eq!(d.core.status(), RUNNING);
}

/// Seed 000: "When driver is trying to set DEVICE_STOPPED, the device MUST not process new avail
/// requests and MUST complete all requests that is being processed before presenting the bit."
#[test]
fn stop_presented_only_after_in_process_requests_complete() {
    let (mut d, release) = CoreDriver::holding(3);
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING, "three requests still in process");
    let more = d.offer(2);
    d.core.kick(0);
    release.store(true, Ordering::SeqCst);
    assert_eq!(d.core.status(), RUNNING | DeviceStatus::DEVICE_STOPPED);
    let used = d.collect();
    assert_eq!(
        used.len(),
        3,
        "in-process requests completed, new ones not taken"
    );
    assert!(used.iter().all(|u| !more.contains(&u.id)));
    let irq = d.irq.used();
    assert!(irq >= 1, "completions were notified before the bit");
    d.core.write_status(RUNNING);
    assert_eq!(d.collect().len(), 2, "latched kick processed on resume");
}

/// Seed 000: "The device MUST keep the config space unchanged when DEVICE_STOPPED is set." On a
/// device that has a configuration space: a driver write while stopped is ignored (and not
/// replayed), a device-side change waits for resume (then bumps the generation and notifies).
#[test]
fn config_space_unchanged_while_stopped() {
    let mut d = CoreDriver::new(Box::new(ConfigDevice::new()));
    d.start_default();
    let config = |d: &CoreDriver| {
        let mut bytes = [0u8; CONFIG_LEN];
        d.core.read_config(0, &mut bytes);
        bytes
    };
    let initial = config(&d);
    assert_eq!(initial, [0, 1, 2, 3, 4, 5, 6, 7]);
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    let generation = d.core.config_generation();
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = applied.clone();
    d.core
        .change_config(move |dev: &mut dyn VirtioDevice<common::Mem>| {
            dev.write_config(4, &[0x55]);
            flag.store(true, Ordering::SeqCst)
        });
    d.core.write_config(0, &[0xaa, 0xbb]);
    assert!(!applied.load(Ordering::SeqCst));
    assert_eq!(config(&d), initial, "no change while stopped");
    assert_eq!(d.core.config_generation(), generation);
    assert_eq!(d.irq.config(), 0);
    d.core.write_status(RUNNING);
    assert!(applied.load(Ordering::SeqCst));
    assert_eq!(
        config(&d),
        [0, 1, 2, 3, 0x55, 5, 6, 7],
        "the device's change applied on resume, the driver's ignored write not replayed"
    );
    assert_eq!(d.core.config_generation(), generation.wrapping_add(1));
    assert_eq!(
        d.irq.config(),
        1,
        "the held-back change is notified on resume"
    );
    d.core.write_config(0, &[0xaa]);
    assert_eq!(config(&d)[0], 0xaa, "running: the driver's write is taken");
}

/// Seed 000 quiescence at the core: while stopped, kicks touch no guest memory and raise no
/// interrupt; on resume each latched buffer completes exactly once.
#[test]
fn stopped_device_is_quiet_and_catches_up() {
    let mut d = CoreDriver::running_then(RUNNING | DeviceStatus::DEVICE_STOPPED);
    let ids = d.offer(5);
    let checksum = d.memory_checksum();
    let irq = d.irq.used();
    for _ in 0..10 {
        d.core.kick(0);
    }
    assert_eq!(d.memory_checksum(), checksum);
    assert_eq!(d.irq.used(), irq);
    d.core.write_status(RUNNING);
    let mut used: Vec<u16> = d.collect().iter().map(|u| u.id).collect();
    used.sort_unstable();
    let mut want = ids;
    want.sort_unstable();
    assert_eq!(used, want);
    assert_eq!(d.irq.used(), irq + 1);
}

/// A device that records in-flight requests stops at once; the requests stay in the queue state
/// (spec-decisions §3 extension) rather than completing.
#[test]
fn record_inflight_stop_keeps_requests_in_queue_state() {
    let options = CoreOptions {
        quiesce_mode: virtio_lm_device::QuiesceMode::RecordInflight,
        ..CoreOptions::default()
    };
    let mut d = CoreDriver::with_options(Box::new(SlowDevice::new()), options);
    d.start_default();
    let ids = d.offer(2);
    d.core.kick(0);
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING | DeviceStatus::DEVICE_STOPPED);
    let state = d.core.queue_state(0).unwrap();
    assert_eq!(state.inflight_ids(), ids);
    assert!(d.collect().is_empty());
}

/// Seed 000: "The device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set." — also when the
/// driver clears it: a device that was stopped and then suspended (DRIVER_OK clear, spec-decisions
/// §2) stays stopped when a status write leaves DEVICE_STOPPED out, and a suspended device that
/// was not stopped does not stop when a write sets it.
#[test]
fn device_stopped_ignored_both_ways_while_suspended() {
    let mut d = CoreDriver::running();
    let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(d.set_status(stopped), stopped);
    let suspended_stopped = SETUP | DeviceStatus::SUSPEND | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(
        d.set_status(stopped | DeviceStatus::SUSPEND),
        suspended_stopped
    );
    // Clearing DEVICE_STOPPED with DRIVER_OK clear: ignored.
    let cleared = SETUP | DeviceStatus::SUSPEND;
    assert_eq!(
        d.set_status(cleared),
        suspended_stopped,
        "clear while suspended"
    );

    let mut d = CoreDriver::running_then(RUNNING | DeviceStatus::SUSPEND);
    let suspended = SETUP | DeviceStatus::SUSPEND;
    assert_eq!(d.core.status(), suspended);
    // Setting DEVICE_STOPPED with DRIVER_OK clear: ignored.
    let set = suspended | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(d.set_status(set), suspended, "set while suspended");
}

/// Seed 000: "The device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set." Whether DRIVER_OK
/// is set is judged when the write arrives (spec-decisions §2): one write that sets DRIVER_OK and
/// changes DEVICE_STOPPED starts (or resumes) the device and ignores DEVICE_STOPPED.
#[test]
fn one_write_setting_driver_ok_ignores_device_stopped() {
    // Initialisation: DRIVER_OK and DEVICE_STOPPED together start the device, not stopped.
    let mut d = CoreDriver::counting();
    let features = d.start_default();
    d.prepare(features);
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING, "started, not stopped");

    // Resume from SUSPEND with DEVICE_STOPPED set in the same write: resumed, not stopped.
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), SETUP | DeviceStatus::SUSPEND);
    d.core
        .write_status(RUNNING | DeviceStatus::SUSPEND | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(d.core.status(), RUNNING, "resumed, not stopped");

    // Stopped and suspended, resumed from SUSPEND by a write that also clears DEVICE_STOPPED:
    // SUSPEND ends, DEVICE_STOPPED stays (its own clear comes with DRIVER_OK set).
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    d.core
        .write_status(RUNNING | DeviceStatus::DEVICE_STOPPED | DeviceStatus::SUSPEND);
    d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(d.core.status(), RUNNING | DeviceStatus::DEVICE_STOPPED);
    d.offer(1);
    d.core.kick(0);
    assert!(d.collect().is_empty(), "still stopped: nothing taken");
    d.core.write_status(RUNNING);
    assert_eq!(d.core.status(), RUNNING);
    assert_eq!(
        d.collect().len(),
        1,
        "the latched kick runs on the stop's own resume"
    );
}

/// The device status a write leaves, from `from` (reached by the usual sequence).
fn after_write(from: DeviceStatus, value: DeviceStatus) -> DeviceStatus {
    let mut d = CoreDriver::counting();
    let features = bit(Feature::Version1) | bit(Feature::DeviceStop) | bit(Feature::QueueState);
    if from.contains(DeviceStatus::FEATURES_OK) {
        d.prepare(features);
        if from.contains(DeviceStatus::DRIVER_OK) {
            d.core.write_status(RUNNING);
        }
    } else {
        for step in [DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER] {
            if from.contains(step) {
                let now = d.core.status();
                d.core.write_status(now | step);
            }
        }
    }
    assert_eq!(d.core.status(), from, "setup");
    d.core.write_status(value);
    d.core.status()
}

/// Seed 000 restates the status rules: "The driver MUST NOT clear a device status bit" (except
/// DEVICE_STOPPED), and each bit is set in its turn (spec-decisions §2): DRIVER only after
/// ACKNOWLEDGE, FEATURES_OK only after DRIVER, DRIVER_OK only after FEATURES_OK. A write that
/// clears a bit the driver may not clear is ignored whole, also the bits it would set;
/// DEVICE_NEEDS_RESET is the device's: the driver neither sets nor clears it.
#[test]
fn status_bits_are_set_in_turn_and_only_device_stopped_is_cleared() {
    use DeviceStatus as S;
    let ack = S::ACKNOWLEDGE;
    let ack_driver = S::ACKNOWLEDGE | S::DRIVER;
    let cases = [
        // (from, write, result)
        (S::RESET, S::DRIVER, S::RESET),
        (S::RESET, S::FEATURES_OK, S::RESET),
        (S::RESET, S::DRIVER_OK, S::RESET),
        (S::RESET, ack_driver, ack_driver),
        (ack, ack | S::FEATURES_OK, ack),
        (ack, ack | S::DRIVER_OK, ack),
        (ack_driver, ack_driver | S::DRIVER_OK, ack_driver),
        (ack_driver, S::DRIVER, ack_driver),
        (ack_driver, ack, ack_driver),
        (SETUP, SETUP.difference(S::DRIVER), SETUP),
        (
            SETUP,
            SETUP.difference(S::ACKNOWLEDGE) | S::DRIVER_OK,
            SETUP,
        ),
        (RUNNING, RUNNING.difference(S::FEATURES_OK), RUNNING),
        (RUNNING, RUNNING.difference(S::DRIVER_OK), RUNNING),
        (
            RUNNING,
            RUNNING.difference(S::DRIVER) | S::DEVICE_STOPPED,
            RUNNING,
        ),
        (RUNNING, RUNNING | S::DEVICE_NEEDS_RESET, RUNNING),
        (
            RUNNING,
            RUNNING | S::DEVICE_STOPPED,
            RUNNING | S::DEVICE_STOPPED,
        ),
    ];
    for (from, write, want) in cases {
        assert_eq!(after_write(from, write), want, "{from:?} + write {write:?}");
    }
}

/// Seed 000: "The driver MUST NOT clear a device status bit" — DEVICE_NEEDS_RESET is the
/// device's (seed 002): a driver write without it does not clear it, and is not ignored whole
/// for that (it may still set FAILED).
#[test]
fn driver_cannot_clear_device_needs_reset() {
    let mut d = CoreDriver::running();
    d.core
        .needs_reset(virtio_lm_device::DeviceError::Backend("gone".into()));
    let broken = RUNNING | DeviceStatus::DEVICE_NEEDS_RESET;
    assert_eq!(d.core.status(), broken);
    d.core.write_status(RUNNING);
    assert_eq!(d.core.status(), broken);
    d.core.write_status(RUNNING | DeviceStatus::FAILED);
    assert_eq!(d.core.status(), broken | DeviceStatus::FAILED);
}

/// Seed 000: "If the driver sets the FAILED bit, the driver MUST later reset the device." With
/// spec-decisions §2: FAILED is taken in any state; a write that sets FAILED and DRIVER_OK
/// together does not start the device; after FAILED, driver features, queue registers and
/// queue state writes are ignored until reset.
#[test]
fn failed_stops_initialisation_until_reset() {
    let features = bit(Feature::Version1) | bit(Feature::QueueState);
    let mut d = CoreDriver::counting();
    d.core.write_status(DeviceStatus::ACKNOWLEDGE);
    d.core
        .write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FAILED);
    d.core.set_driver_features(features);
    assert_eq!(d.core.driver_features(), 0, "features after FAILED");

    let mut d = CoreDriver::counting();
    d.prepare(features);
    d.core.write_status(RUNNING | DeviceStatus::FAILED);
    assert_eq!(d.core.status(), SETUP | DeviceStatus::FAILED, "not started");
    d.core.write_queue(0, |r| r.size = 2);
    assert_eq!(
        d.core.queue(0).map(|q| q.size),
        Some(16),
        "queue size after FAILED"
    );
    d.core.set_queue_avail_state(0, 9);
    assert_eq!(d.core.queue_avail_state(0), 0, "queue state after FAILED");
    d.offer(1);
    d.core.kick(0);
    assert!(d.collect().is_empty());
    d.core.write_status(DeviceStatus::RESET);
    assert_eq!(d.core.status(), DeviceStatus::RESET);
}

/// Seed 003 review: "Setting a bit that is already set should not have side effects." Rewriting
/// ACKNOWLEDGE (with the rest of the status) during setup does not return the queue state to
/// its initial value, as a fresh ACKNOWLEDGE does (seed 001).
#[test]
fn rewriting_acknowledge_keeps_queue_state() {
    let features = bit(Feature::Version1) | bit(Feature::QueueState);
    let mut d = CoreDriver::counting();
    d.prepare(features);
    d.core.set_queue_avail_state(0, 9);
    d.core.write_status(SETUP);
    d.core.write_status(SETUP | DeviceStatus::ACKNOWLEDGE);
    assert_eq!(d.core.status(), SETUP);
    assert_eq!(d.core.queue_avail_state(0), 9);
}
