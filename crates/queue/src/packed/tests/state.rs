//! Seed 001 queue state: encoding, save and restore at the wrap-around corners (spec-notes §7
//! pitfalls 1–4), validation of every field, reset.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::{ConfigError, QueueState, StateError};

/// Seed 001: "le16 { last_avail_idx : 15; last_avail_wrap_counter : 1; };" and
/// "le16 { used_idx : 15; used_wrap_counter : 1; };" — at index size−1 with both wrap counter
/// values, for sizes 5 and 32768 (where size−1 fills all 15 index bits).
#[test]
fn state_encoding_at_size_minus_one() {
    for size in [5u16, 32768] {
        let mut r = Rig::new(size);
        let mut done = 0u32;
        for (laps, wrap) in [(0u32, true), (1, false), (2, true)] {
            let target = laps * u32::from(size) + u32::from(size) - 1;
            while done < target {
                r.cycle(1, 0);
                done += 1;
            }
            let state = r.device.state().unwrap();
            let expected = (size - 1) | if wrap { 0x8000 } else { 0 };
            assert_eq!(
                (state.avail_state, state.used_state),
                (expected, expected),
                "size {size}"
            );
            r.migrate();
            // One more slot crosses the wrap on the restored queue.
            r.cycle(1, 1);
            done += 1;
            assert_eq!(r.device.next_avail(), pos(0, !wrap));
        }
    }
}

/// Seed 001: "The last_avail_idx field is the location where the device read for the next
/// descriptor from the virtqueue descriptor ring." Exactly at the wrap the index is 0 and the
/// counter has flipped to 0: the state is 0x0000, not the initial 0x8000.
#[test]
fn state_exactly_at_the_wrap() {
    let mut r = Rig::new(3);
    r.cycle(3, 0);
    let state = r.device.state().unwrap();
    assert_eq!((state.avail_state, state.used_state), (0x0000, 0x0000));
    r.migrate();
    // A chain starting right at the wrap, restored mid-flight.
    let id = r.add(&chain_of(2));
    r.pop();
    r.migrate();
    r.complete(id, 4);
    assert_eq!(r.collect(), vec![UsedBuffer { id, len: 4 }]);
    assert_eq!(r.device.state().unwrap().avail_state, 0x0002);
}

/// Seed 001: "For packed virtqueue, we need both the available state and the used state."
/// The available counter has wrapped while the used one has not (and, a lap later, the other
/// way round); restored into a fresh queue, every in-flight buffer completes exactly once with
/// the right id and length, and the queue carries on.
#[test]
fn avail_and_used_wrap_counters_differ() {
    for (warmup, avail_state, used_state) in [(3u16, 0x0002u16, 0x8003u16), (8, 0x8002, 0x0003)] {
        let mut r = Rig::new(5);
        for _ in 0..warmup {
            r.cycle(1, 0);
        }
        let a = r.add(&chain_of(3));
        let b = r.add(&chain_of(1));
        let chains = vec![r.pop(), r.pop()];
        let state = r.device.state().unwrap();
        assert_eq!(
            (state.avail_state, state.used_state),
            (avail_state, used_state)
        );
        assert_eq!(state.inflight, chains);

        let mut resumed = PackedQueue::from_state(r.config, &state, &r.mem).unwrap();
        assert_eq!(resumed.inflight(), chains);
        resumed.add_used(&r.mem, b, 0x10).unwrap();
        resumed.add_used(&r.mem, a, 0x20).unwrap();
        resumed.publish_used(&r.mem).unwrap();
        r.device = resumed;
        let expected = vec![
            UsedBuffer { id: b, len: 0x10 },
            UsedBuffer { id: a, len: 0x20 },
        ];
        assert_eq!(r.collect(), expected);
        assert_eq!(r.device.next_used(), r.device.next_avail());
        for n in [3, 2, 1, 3, 3] {
            r.cycle(n, 1);
        }
    }
}

/// Seed 001: "The used_idx field is the location where the device write next used descriptor
/// to the descriptor ring." and "The used_wrap_counter field is the wrap counter that is used
/// by the device." — random workloads (chains of 1–3 descriptors, completion in random order,
/// batches, migrations at random points) on sizes 1, 3, 5 and 256: every buffer comes back
/// exactly once with the length the device gave it.
#[test]
fn random_workload_with_migrations_uses_each_buffer_once() {
    for (size, seed) in [(1u16, 1u64), (3, 2), (5, 3), (256, 4)] {
        random_workload(size, seed, 3000);
    }
}

fn random_workload(size: u16, mut rng: u64, steps: u32) {
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut r = Rig::new(size);
    let mut outstanding = HashSet::new();
    let mut completed: HashMap<u16, u32> = HashMap::new();
    let mut held: Vec<DescriptorChain> = Vec::new();
    let (mut added, mut collected, mut migrations) = (0u32, 0u32, 0u32);
    let mut collect =
        |r: &mut Rig, outstanding: &mut HashSet<u16>, completed: &mut HashMap<u16, u32>| {
            for u in r.collect() {
                assert_eq!(
                    completed.remove(&u.id),
                    Some(u.len),
                    "size {size}: id {} used once",
                    u.id
                );
                assert!(outstanding.remove(&u.id));
                collected += 1;
            }
        };
    for _ in 0..steps {
        match next() % 6 {
            0 | 1 => {
                let n = (next() % 3 + 1).min(u64::from(size)) as u16;
                if r.driver.num_free() >= n {
                    assert!(outstanding.insert(r.add(&chain_of(n))));
                    added += 1;
                }
            }
            2 => {
                while let Some(c) = r.device.pop(&r.mem).unwrap() {
                    held.push(c);
                }
            }
            3 if !held.is_empty() => {
                let c = held.swap_remove((next() % held.len() as u64) as usize);
                let len = (next() % u64::from(c.writable_len() + 1)) as u32;
                r.device.add_used(&r.mem, c.id, len).unwrap();
                assert!(completed.insert(c.id, len).is_none());
                if next() % 2 == 0 {
                    r.device.publish_used(&r.mem).unwrap();
                }
            }
            4 => collect(&mut r, &mut outstanding, &mut completed),
            _ => {
                r.device.publish_used(&r.mem).unwrap();
                r.migrate();
                migrations += 1;
                let mut restored = r.device.inflight();
                let mut mine = held.clone();
                restored.sort_by_key(|c| c.id);
                mine.sort_by_key(|c| c.id);
                assert_eq!(restored, mine);
            }
        }
    }
    while let Some(c) = r.device.pop(&r.mem).unwrap() {
        held.push(c);
    }
    for c in held.drain(..) {
        r.device.add_used(&r.mem, c.id, 1).unwrap();
        completed.insert(c.id, 1);
    }
    r.device.publish_used(&r.mem).unwrap();
    collect(&mut r, &mut outstanding, &mut completed);
    assert!(
        outstanding.is_empty() && completed.is_empty(),
        "size {size}"
    );
    assert_eq!(added, collected);
    assert!(
        migrations > 100 && added > 100,
        "size {size}: the workload did something"
    );
}

/// Seed 001: "a device MUST NOT clear the queue state upon reset and MUST reset the queue
/// state when the driver sets ACKNOWLEDGE status bit." — `reset` (called by the device at
/// ACKNOWLEDGE) returns indices to 0 and wrap counters to 1 and forgets what was in flight.
#[test]
fn reset_returns_to_initial_state() {
    let mut r = Rig::new(3);
    r.cycle(2, 0);
    r.cycle(2, 0);
    r.add(&chain_of(1));
    let c = r.pop();
    r.add(&chain_of(1));
    r.pop();
    r.device.add_used(&r.mem, c.id, 0).unwrap();
    assert_eq!(
        r.device.state(),
        Err(QueueError::UnpublishedUsed { count: 1 })
    );
    assert_eq!(
        (r.device.next_avail(), r.device.next_used()),
        (pos(0, true), pos(2, false))
    );
    r.device.reset();
    assert_eq!(
        r.device.state().unwrap(),
        QueueState::initial(RingKind::Packed)
    );
    assert_eq!(
        (r.device.next_avail(), r.device.next_used()),
        (pos(0, true), pos(0, true))
    );
    assert_eq!(r.device.inflight_len(), 0);
    // A reset device and a fresh driver run from slot 0 again.
    r.driver = PackedDriver::new(r.config, &r.mem).unwrap();
    r.cycle(3, 0);
}

/// A state saved after publishing but before the notification decision owes a notification:
/// the restored device sends it even though the driver has since disabled interrupts, once.
#[test]
fn owed_notification_survives_restore() {
    for event_idx in [false, true] {
        let mut r = Rig::with(4, event_idx, false);
        let id = r.add(&[buf(0, true)]);
        r.pop();
        r.complete(id, 0);
        let state = r.device.state().unwrap();
        assert!(state.notification_owed);
        r.driver.disable_interrupts(&r.mem).unwrap();
        let mut resumed = PackedQueue::from_state(r.config, &state, &r.mem).unwrap();
        assert!(
            resumed.needs_notification(&r.mem).unwrap(),
            "event_idx {event_idx}"
        );
        assert!(!resumed.needs_notification(&r.mem).unwrap());
        assert!(!resumed.state().unwrap().notification_owed);

        // Decided before saving: nothing owed.
        r.device.needs_notification(&r.mem).unwrap();
        assert!(!r.device.state().unwrap().notification_owed);
    }
}

/// Pitfall 4: with EVENT_IDX (flags DESC) the driver makes buffers available and does not kick
/// because the device had not re-armed. The restored device re-checks the ring, finds them,
/// completes everything and notifies per the driver's DESC event.
#[test]
fn restored_device_finds_buffers_made_available_without_kick() {
    let mut r = Rig::with(8, true, false);
    assert!(!r.driver.enable_interrupts(&r.mem).unwrap());
    assert!(!r.device.enable_notification(&r.mem).unwrap());
    let a = r.add(&[buf(0, true)]);
    assert!(r.driver.should_kick(&r.mem).unwrap());
    r.pop();
    let b = r.add(&chain_of(2));
    let c = r.add(&[buf(3, true)]);
    assert!(
        !r.driver.should_kick(&r.mem).unwrap(),
        "the device's event slot is behind"
    );

    let state = r.device.state().unwrap();
    assert_eq!(state.inflight_ids(), vec![a]);
    let mut resumed = PackedQueue::from_state(r.config, &state, &r.mem).unwrap();
    assert!(resumed.has_available(&r.mem).unwrap());
    let ids: Vec<u16> = std::iter::from_fn(|| resumed.pop(&r.mem).unwrap())
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![b, c]);
    for id in [c, a, b] {
        resumed.add_used(&r.mem, id, 2).unwrap();
    }
    resumed.publish_used(&r.mem).unwrap();
    assert!(resumed.needs_notification(&r.mem).unwrap());
    let used: Vec<u16> = r.collect().iter().map(|u| u.id).collect();
    assert_eq!(used, vec![c, a, b]);
}

/// A queue state to corrupt: size 5, avail (2, wrap 0), used (3, wrap 1), in flight a
/// 3-descriptor chain then a 1-descriptor chain.
fn valid_state() -> (Rig, QueueState) {
    let mut r = Rig::new(5);
    for _ in 0..3 {
        r.cycle(1, 0);
    }
    r.add(&chain_of(3));
    r.add(&chain_of(1));
    r.pop();
    r.pop();
    let state = r.device.state().unwrap();
    assert_eq!((state.avail_state, state.used_state), (0x0002, 0x8003));
    (r, state)
}

/// Restoring `bad` fails with an error `check` accepts, by `from_state` and by `set_state`,
/// and the queue it was offered to is unchanged and still works.
fn assert_rejected(bad: &QueueState, check: impl Fn(&StateError) -> bool) {
    let (mut r, good) = valid_state();
    let err = PackedQueue::from_state(r.config, bad, &r.mem).unwrap_err();
    assert!(check(&err), "unexpected {err:?} for {bad:?}");
    assert_eq!(r.device.set_state(bad, &r.mem).unwrap_err(), err);
    assert_eq!(
        r.device.state().unwrap(),
        good,
        "a failed set_state changes nothing"
    );
    for c in r.device.inflight() {
        r.complete(c.id, 0);
    }
    assert_eq!(r.collect().len(), 2);
}

/// Spec-notes §3: "Validation on set: packed index < queue size" — for each position.
#[test]
fn state_with_index_not_below_size_is_rejected() {
    let (_, good) = valid_state();
    for (avail, index) in [(true, 5u16), (true, 0x7fff), (false, 5), (false, 0x7fff)] {
        let mut bad = good.clone();
        let field = if avail {
            &mut bad.avail_state
        } else {
            &mut bad.used_state
        };
        *field = (*field & 0x8000) | index;
        let which = if avail { "avail_state" } else { "used_state" };
        assert_rejected(&bad, |e| {
            *e == StateError::IndexOutOfRange {
                which,
                index,
                size: 5,
            }
        });
    }
}

/// The in-flight chains must account exactly for the slots between the used and the
/// available position (else a buffer is lost or used twice), and that distance cannot exceed
/// the ring.
#[test]
fn state_with_inflight_mismatch_is_rejected() {
    let (_, good) = valid_state();
    let mismatch = |inflight, distance| {
        move |e: &StateError| *e == StateError::InflightMismatch { inflight, distance }
    };
    let mut bad = good.clone();
    bad.inflight.pop();
    assert_rejected(&bad, mismatch(3, 4));

    let mut bad = good.clone();
    bad.inflight[0].ring_slots = 4;
    assert_rejected(&bad, mismatch(5, 4));

    // The avail wrap counter flipped: 9 slots apart.
    let mut bad = good.clone();
    bad.avail_state ^= 0x8000;
    assert_rejected(&bad, mismatch(4, 9));

    // 6 slots apart in a 5-ring, with chains that add up to 6.
    let mut bad = good.clone();
    bad.avail_state = 0x0004;
    bad.inflight[1].ring_slots = 3;
    assert_rejected(&bad, mismatch(6, 6));

    // Nothing in flight at equal positions is valid.
    let (r, mut fine) = valid_state();
    fine.inflight.clear();
    fine.avail_state = fine.used_state;
    fine.notification_owed = true;
    assert!(PackedQueue::from_state(r.config, &fine, &r.mem).is_ok());
}

/// Each in-flight entry is checked: distinct ids below the size, a ring slot count, segments
/// readable-then-writable inside guest memory.
#[test]
fn state_with_bad_inflight_entry_is_rejected() {
    let (_, good) = valid_state();
    let first = good.inflight[0].id;
    let bad_inflight =
        |id| move |e: &StateError| matches!(e, StateError::BadInflight { id: i, .. } if *i == id);

    let mut bad = good.clone();
    bad.inflight[1].id = first;
    assert_rejected(&bad, bad_inflight(first));

    let mut bad = good.clone();
    bad.inflight[1].id = 5;
    assert_rejected(&bad, bad_inflight(5));

    let mut bad = good.clone();
    bad.inflight[0].ring_slots = 0;
    bad.inflight[1].ring_slots = 4;
    assert_rejected(&bad, bad_inflight(first));

    let mut bad = good.clone();
    bad.inflight[0].segments[1].addr = GuestAddress(MEM_SIZE as u64 - 0x80);
    assert_rejected(&bad, bad_inflight(first));

    let mut bad = good.clone();
    bad.inflight[0].segments.reverse();
    assert_rejected(&bad, bad_inflight(first));
}

/// The configuration is checked too: a split configuration, or one outside guest memory.
#[test]
fn state_with_bad_config_is_rejected() {
    let (r, good) = valid_state();
    let (split, _) = QueueConfig::contiguous(
        RingKind::Split,
        4,
        GuestAddress(0x1000),
        RingFeatures::default(),
    );
    assert_eq!(
        PackedQueue::from_state(split, &good, &r.mem).unwrap_err(),
        StateError::Config(ConfigError::WrongKind(RingKind::Split))
    );
    let mut outside = r.config;
    outside.device_area = GuestAddress(MEM_SIZE as u64);
    assert!(matches!(
        PackedQueue::from_state(outside, &good, &r.mem).unwrap_err(),
        StateError::Config(ConfigError::OutOfMemory { .. })
    ));
}

/// Seed 001: "a driver MUST set the state of each virtqueue after setting the FEATURE_OK status
/// bit but before setting the DRIVER_OK status bit." — a state set on a fresh queue that has
/// not run replaces its initial state; the queue then runs from there.
#[test]
fn set_state_on_a_fresh_queue() {
    let (mut r, good) = valid_state();
    let mut fresh = PackedQueue::new(r.config, &r.mem).unwrap();
    fresh.set_state(&good, &r.mem).unwrap();
    assert_eq!(fresh.state().unwrap(), good);
    assert_eq!(fresh.next_avail(), pos(2, false));
    assert_eq!(fresh.next_used(), pos(3, true));
    r.device = fresh;
    for c in r.device.inflight() {
        r.complete(c.id, 0);
    }
    assert_eq!(r.collect().len(), 2);
    r.cycle(3, 0);
}
