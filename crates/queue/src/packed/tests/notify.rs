//! Notification suppression in both directions: the driver event suppression structure
//! (used-buffer notifications) and the device event suppression structure (driver kicks).

use virtio_lm_spec::ring::{
    PackedEventSuppression, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE,
};
use vm_memory::Bytes;
use zerocopy::FromBytes;

use super::*;

/// Reads the device event suppression structure (written by the device).
fn device_event(r: &Rig) -> PackedEventSuppression {
    let raw: [u8; 4] = r.mem.read_obj(r.config.device_area).unwrap();
    PackedEventSuppression::read_from_bytes(&raw).unwrap()
}

/// Uses one single-descriptor buffer and publishes it; returns the notification decision.
fn use_one(r: &mut Rig) -> bool {
    let id = r.add(&[buf(0, true)]);
    r.pop();
    r.complete(id, 0);
    let notify = r.device.needs_notification(&r.mem).unwrap();
    r.collect();
    notify
}

/// Driver flags ENABLE: notify once per published batch; DISABLE: never.
#[test]
fn used_notification_follows_enable_and_disable() {
    let mut r = Rig::new(3);
    for disabled in [false, true, false, true] {
        if disabled {
            r.driver.disable_interrupts(&r.mem).unwrap();
        } else {
            assert!(!r.driver.enable_interrupts(&r.mem).unwrap());
        }
        assert_eq!(use_one(&mut r), !disabled);
        // Nothing new published: no second notification for the same batch.
        assert!(!r.device.needs_notification(&r.mem).unwrap());
    }
}

/// With EVENT_IDX and flags DESC the device notifies exactly when the batch wrote the slot
/// (offset and wrap counter) the driver named, here slot 1 of the second lap of a 3-ring.
#[test]
fn used_notification_follows_desc_event() {
    let mut r = Rig::with(3, true, false);
    let event = PackedEventSuppression::new(1, false, RING_EVENT_FLAGS_DESC);
    r.driver.set_driver_event(&r.mem, event).unwrap();
    // Used slots 0,1,2 (lap 1), 0,1,2 (lap 2): only lap 2's slot 1 matches.
    let got: Vec<bool> = (0..6).map(|_| use_one(&mut r)).collect();
    assert_eq!(got, vec![false, false, false, false, true, false]);
}

/// A batch that skips over the event slot (inside a multi-descriptor chain) still notifies.
#[test]
fn desc_event_inside_a_skipped_chain_notifies() {
    let mut r = Rig::with(5, true, false);
    let event = PackedEventSuppression::new(2, true, RING_EVENT_FLAGS_DESC);
    r.driver.set_driver_event(&r.mem, event).unwrap();
    let id = r.add(&chain_of(4));
    r.pop();
    r.complete(id, 0);
    assert!(r.device.needs_notification(&r.mem).unwrap());
}

/// `enable_interrupts` with EVENT_IDX names the driver's used position; the device notifies
/// for the next used buffer, and `enable_interrupts` reports buffers already waiting.
#[test]
fn driver_enable_interrupts_names_its_used_position() {
    let mut r = Rig::with(3, true, false);
    r.cycle(2, 0);
    assert!(!r.driver.enable_interrupts(&r.mem).unwrap());
    let raw: [u8; 4] = r.mem.read_obj(r.config.driver_area).unwrap();
    let event = PackedEventSuppression::read_from_bytes(&raw).unwrap();
    assert_eq!(
        (event.off(), event.wrap(), event.event_flags()),
        (2, true, RING_EVENT_FLAGS_DESC)
    );
    let id = r.add(&[buf(0, true)]);
    r.pop();
    r.complete(id, 0);
    assert!(
        r.driver.enable_interrupts(&r.mem).unwrap(),
        "a used buffer is waiting"
    );
    assert!(r.device.needs_notification(&r.mem).unwrap());
}

/// DESC without EVENT_IDX, and the reserved mode 3, count as ENABLE (our decision: a spurious
/// interrupt is harmless, a missed one hangs the driver).
#[test]
fn desc_without_event_idx_and_reserved_mode_notify() {
    for flags in [RING_EVENT_FLAGS_DESC, 3] {
        let mut r = Rig::new(4);
        // An event slot the batch does not reach: ignored all the same.
        let event = PackedEventSuppression::new(3, false, flags);
        r.driver.set_driver_event(&r.mem, event).unwrap();
        assert!(use_one(&mut r), "flags {flags}");
    }
    // With EVENT_IDX the reserved mode is still ENABLE, and reserved bits 2-15 are ignored.
    let mut r = Rig::with(4, true, false);
    r.driver
        .set_driver_event(&r.mem, PackedEventSuppression::new(3, false, 3))
        .unwrap();
    assert!(use_one(&mut r));
    r.driver
        .set_driver_event(&r.mem, PackedEventSuppression::new(3, false, 0xfffd))
        .unwrap();
    assert!(!use_one(&mut r), "0xfffd is DISABLE with reserved bits set");
}

/// A hostile event offset at or past the ring size gives a decision, not a panic.
#[test]
fn out_of_range_event_offset_does_not_panic() {
    let mut r = Rig::with(3, true, false);
    r.driver
        .set_driver_event(
            &r.mem,
            PackedEventSuppression::new(0x7fff, true, RING_EVENT_FLAGS_DESC),
        )
        .unwrap();
    for _ in 0..4 {
        use_one(&mut r);
    }
}

/// Publishing two whole laps of a size-1 ring before deciding still notifies: the device
/// counts published slots rather than comparing positions, which would be equal again.
#[test]
fn two_laps_without_decision_still_notify() {
    for event_idx in [false, true] {
        let mut r = Rig::with(1, event_idx, false);
        if event_idx {
            r.driver.enable_interrupts(&r.mem).unwrap();
        }
        for _ in 0..2 {
            let id = r.add(&[buf(0, true)]);
            r.pop();
            r.complete(id, 0);
            r.collect();
        }
        assert_eq!(r.device.next_used(), pos(0, true));
        assert!(
            r.device.needs_notification(&r.mem).unwrap(),
            "event_idx {event_idx}"
        );
    }
}

/// Device `enable_notification`: flags ENABLE, or with EVENT_IDX flags DESC at the device's
/// available position (offset | wrap << 15); it reports buffers already available.
/// `disable_notification` writes DISABLE.
#[test]
fn device_event_suppression_fields() {
    for event_idx in [false, true] {
        let mut r = Rig::with(3, event_idx, false);
        r.cycle(2, 0);
        r.cycle(2, 0);
        assert_eq!(r.device.next_avail(), pos(1, false));
        assert!(!r.device.enable_notification(&r.mem).unwrap());
        let event = device_event(&r);
        if event_idx {
            assert_eq!(event.flags(), RING_EVENT_FLAGS_DESC);
            assert_eq!(event.desc.get(), r.device.next_avail().to_state());
            assert_eq!((event.off(), event.wrap()), (1, false));
        } else {
            assert_eq!(event.flags(), RING_EVENT_FLAGS_ENABLE);
        }
        r.device.disable_notification(&r.mem).unwrap();
        assert_eq!(device_event(&r).flags(), RING_EVENT_FLAGS_DISABLE);
        r.add(&[buf(0, true)]);
        assert!(!r.driver.should_kick(&r.mem).unwrap(), "kicks disabled");
        assert!(
            r.device.enable_notification(&r.mem).unwrap(),
            "a buffer is already there"
        );
    }
}

/// The driver kicks per the device's structure: ENABLE once per published batch, DISABLE
/// never, DESC exactly when the batch made the named descriptor available.
#[test]
fn driver_kick_follows_device_event() {
    let mut r = Rig::with(4, true, false);
    // Device: notify me when slot 0 (lap 1) becomes available.
    r.device.enable_notification(&r.mem).unwrap();
    r.driver.add_chain(&r.mem, &chain_of(2)).unwrap();
    r.driver.publish(&r.mem).unwrap();
    assert!(r.driver.should_kick(&r.mem).unwrap());
    assert!(
        !r.driver.should_kick(&r.mem).unwrap(),
        "nothing new published"
    );
    // The device takes the chain but does not re-arm: slots 2, 3 do not kick.
    r.pop();
    r.add(&[buf(0, true)]);
    assert!(!r.driver.should_kick(&r.mem).unwrap());
    // Re-arming at slot 2 finds that buffer already there; once it is taken, re-armed at
    // slot 3, the next buffer kicks.
    assert!(r.device.enable_notification(&r.mem).unwrap());
    r.pop();
    assert!(!r.device.enable_notification(&r.mem).unwrap());
    r.add(&[buf(1, true)]);
    assert!(r.driver.should_kick(&r.mem).unwrap());
}
