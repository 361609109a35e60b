//! Regression tests for two device-core bugs found while building the PCI transport: the core
//! did not re-arm `avail_event` after processing (an EVENT_IDX driver stopped kicking), and a
//! packed queue's initial state read back as the split one after a reset.

use virtio_lm_pci::testing::*;
use virtio_lm_queue::BufferSpec;

/// Core issue 1: with VIRTIO_F_EVENT_IDX on a split ring the core never writes `avail_event`
/// (it does not call `DeviceQueue::enable_notification` after processing a queue), so a driver
/// that honours notification suppression kicks once and then never again: the second buffer
/// is never processed. Spec §10.1: the device uses `avail_event` to ask for available-buffer
/// notifications, the mirror image of `used_event`.
#[test]
fn split_event_idx_driver_keeps_kicking() {
    let (_, _, mut driver) = running(migration_features(false), 4, false);
    for i in 0..3 {
        driver
            .submit(0, &[BufferSpec::writable(DATA + 64 * i, 8)])
            .unwrap();
        assert_eq!(driver.collect_used(0).unwrap().len(), 1, "buffer {i}");
    }
}

/// Core issue 2: after a reset, a packed queue whose state equals the initial state (index 0,
/// both wrap counters 1 — e.g. after exactly two laps of the ring) reads back as 0x0000, i.e.
/// wrap counters 0. `DeviceCore::reset` drops a state equal to `QueueState::initial(kind)`,
/// and reads after the reset fall back to `initial(ring_kind())`, which is the split initial
/// state because no feature is negotiated any more. Seed 001 ("a device MUST NOT clear the
/// queue state upon reset") and pitfall 1 (wrap counters 0/1): restoring what was read would
/// put the destination's counters out of phase with the ring.
#[test]
fn packed_initial_state_survives_reset() {
    let (_, _, mut driver) = running(migration_features(true), 4, false);
    for i in 0..8 {
        push(&mut driver, 0, &[BufferSpec::writable(DATA + 64 * i, 8)]);
        assert_eq!(driver.collect_used(0).unwrap().len(), 1);
    }
    driver.reset().unwrap();
    assert_eq!(driver.read_queue_state(0).unwrap(), (0x8000, 0x8000));
}
