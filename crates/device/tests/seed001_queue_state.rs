//! Seed 001 (virtqueue state / VIRTIO_F_QUEUE_STATE) at the device core.

mod common;

use common::{bit, features_of, CoreDriver, RUNNING, SETUP};
use virtio_lm_queue::RingPosition;
use virtio_lm_spec::{DeviceStatus, Feature};

fn features(packed: bool) -> u64 {
    use Feature::*;
    features_of(&[Version1, QueueState, DeviceStop], packed)
}

/// Runs `n` buffers through queue 0 so the state moves away from its initial value.
fn run_buffers(d: &mut CoreDriver, n: usize) {
    for _ in 0..n {
        d.offer(1);
        d.core.kick(0);
        assert_eq!(d.collect().len(), 1);
    }
}

/// Seed 001: "If VIRTIO_F_QUEUE_STATE has been negotiated, a device MUST NOT clear the queue
/// state upon reset" — and seed 001: "a driver MUST reset the device before getting the
/// virtqueue state": after reset the state reads back as the device left it.
#[test]
fn queue_state_survives_reset() {
    for packed in [false, true] {
        let d = reset_after_buffers(packed, 19);
        let (avail, used) = (d.core.queue_avail_state(0), d.core.queue_used_state(0));
        if packed {
            // Queue size 16: 19 one-descriptor buffers wrap once and stop at index 3.
            let want = RingPosition {
                index: 3,
                wrap_counter: false,
            }
            .to_state();
            assert_eq!((avail, used), (want, want));
        } else {
            assert_eq!((avail, used), (19, 0), "split has no used state");
        }
    }
}

/// Seed 001: "If VIRTIO_F_QUEUE_STATE has been negotiated, a device MUST NOT clear the queue
/// state upon reset" — also for a queue that was enabled but never ran: after reset it reads in
/// its own ring format's encoding (packed: both wrap counters 1), not split's zero.
#[test]
fn enabled_queue_that_never_ran_keeps_its_state_across_reset() {
    for packed in [false, true] {
        let mut d = CoreDriver::counting();
        let f = features(packed);
        d.prepare(f);
        d.core.write_status(DeviceStatus::RESET);
        let want = if packed {
            (
                RingPosition::INITIAL.to_state(),
                RingPosition::INITIAL.to_state(),
            )
        } else {
            (0, 0)
        };
        assert_eq!(
            (d.core.queue_avail_state(0), d.core.queue_used_state(0)),
            want,
            "packed={packed}, before DRIVER_OK"
        );

        // Started and suspended before taking a buffer: the recorded state is kept too.
        let f = f | bit(Feature::Suspend);
        d.prepare(f);
        d.core.write_status(RUNNING);
        d.core.write_status(RUNNING | DeviceStatus::SUSPEND);
        d.core.write_status(DeviceStatus::RESET);
        assert_eq!(
            (d.core.queue_avail_state(0), d.core.queue_used_state(0)),
            want,
            "packed={packed}, suspended"
        );
        assert_eq!(
            d.core.queue_state(0).map(|s| (s.avail_state, s.used_state)),
            Some(want)
        );
    }
}

/// Seed 001: "... and MUST reset the queue state when the driver sets ACKNOWLEDGE status bit."
#[test]
fn acknowledge_resets_queue_state() {
    for packed in [false, true] {
        let mut d = reset_after_buffers(packed, 5);
        assert_ne!(d.core.queue_avail_state(0), if packed { 0x8000 } else { 0 });
        d.negotiate(features(packed));
        let initial = if packed {
            RingPosition::INITIAL.to_state()
        } else {
            0
        };
        assert_eq!(d.core.queue_avail_state(0), initial);
        assert_eq!(d.core.queue_used_state(0), if packed { initial } else { 0 });
    }
}

/// Seed 001: "a driver MUST set the state of each virtqueue after setting the FEATURE_OK status
/// bit but before setting the DRIVER_OK status bit." The device continues on the same ring from
/// the state set in that window; writes before FEATURES_OK or after DRIVER_OK are ignored.
#[test]
fn queue_state_writable_only_between_features_ok_and_driver_ok() {
    let f = features(false);
    let mut d = CoreDriver::counting();
    d.start(f);
    run_buffers(&mut d, 7);
    d.core.write_status(DeviceStatus::RESET);
    d.core.write_status(DeviceStatus::ACKNOWLEDGE);
    d.core
        .write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    d.core.set_driver_features(f);
    // A value that differs from both the initial state (0) and the one set below (7), so a
    // write taken outside the window shows.
    d.core.set_queue_avail_state(0, 5);
    assert_eq!(
        d.core.queue_avail_state(0),
        0,
        "before FEATURES_OK: ignored"
    );
    d.core.write_status(SETUP);
    assert_eq!(
        d.core.queue_avail_state(0),
        0,
        "the write before FEATURES_OK was ignored, not kept"
    );
    d.reprogram_queues();
    d.core.set_queue_avail_state(0, 7);
    assert_eq!(d.core.queue_avail_state(0), 7);
    d.core.write_status(RUNNING);
    d.core.set_queue_avail_state(0, 3);
    d.offer(1);
    d.core.kick(0);
    assert_eq!(
        d.collect().len(),
        1,
        "started at index 7: only the new buffer is taken"
    );
    assert_eq!(
        stop_and_read_avail_state(&mut d),
        8,
        "the write after DRIVER_OK was ignored"
    );
}

/// Seed 001 with spec-decisions §3: state that fails validation (packed index not below the size,
/// split avail.idx more than a queue size ahead) sets DEVICE_NEEDS_RESET at DRIVER_OK.
#[test]
fn invalid_queue_state_sets_needs_reset_at_driver_ok() {
    for (packed, value) in [(true, 16u16), (true, 0x8000 | 40), (false, 40)] {
        let mut d = CoreDriver::counting();
        let f = features(packed);
        d.prepare(f);
        d.core.set_queue_avail_state(0, value);
        d.core.write_status(RUNNING);
        let s = d.core.status();
        assert!(
            s.contains(DeviceStatus::DEVICE_NEEDS_RESET),
            "state {value:#x} packed={packed}"
        );
        assert_eq!(
            d.irq.config(),
            1,
            "NEEDS_RESET with DRIVER_OK notifies a config change"
        );
    }
}

/// Seed 001 state is readable while the device is stopped (our extension for the 003 flow) and
/// not while it runs (reads 0).
#[test]
fn queue_state_readable_while_stopped_not_while_running() {
    let mut d = CoreDriver::counting();
    d.start(features(false));
    run_buffers(&mut d, 4);
    assert_eq!(d.core.queue_avail_state(0), 0, "running: not readable");
    assert_eq!(stop_and_read_avail_state(&mut d), 4);
    d.core.write_status(RUNNING);
    run_buffers(&mut d, 1);
    assert_eq!(
        stop_and_read_avail_state(&mut d),
        5,
        "the snapshot follows the live queue"
    );
}

/// Without VIRTIO_F_QUEUE_STATE the state fields are absent: reads give 0, writes are ignored.
#[test]
fn queue_state_absent_without_feature() {
    let mut d = CoreDriver::counting();
    let f = bit(Feature::Version1) | bit(Feature::DeviceStop);
    d.negotiate(f);
    d.core.set_queue_avail_state(0, 3);
    assert_eq!(d.core.queue_avail_state(0), 0);
    d.setup_queues(f);
    d.core.write_status(RUNNING);
    assert_eq!(d.core.status(), RUNNING);
}

/// Stops the running device and reads queue 0's available state (readable while stopped).
fn stop_and_read_avail_state(d: &mut CoreDriver) -> u16 {
    d.core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    d.core.queue_avail_state(0)
}

/// A running device (ring format `packed`) that completed `buffers` one-descriptor buffers and
/// was then reset.
fn reset_after_buffers(packed: bool, buffers: usize) -> CoreDriver {
    let mut d = CoreDriver::counting();
    d.start(features(packed));
    run_buffers(&mut d, buffers);
    d.core.write_status(DeviceStatus::RESET);
    d
}
