//! Split-ring rules, hostile rings and seed 001 state save/restore.

use virtio_lm_spec::ring::{
    SplitDescriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress};

use super::layout;
use crate::test_rig::{buffer, Format, Split};
use crate::{
    BufferSpec, ChainError, DeviceQueue, QueueError, QueueState, RingKind, SplitQueue, StateError,
};

const MEM_SIZE: usize = Split::MEM_SIZE;
const DATA: u64 = 0x8_0000;

type Rig = crate::test_rig::Rig<Split>;

fn buf(i: u64, writable: bool) -> BufferSpec {
    buffer(DATA + i * 0x100, writable)
}

impl Rig {
    fn add(&mut self, bufs: &[BufferSpec]) -> u16 {
        let head = self.driver.add_chain(&self.mem, bufs).unwrap();
        self.driver.publish(&self.mem).unwrap();
        head
    }

    fn raw(&mut self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.driver
            .write_raw_descriptor(
                &self.mem,
                index,
                SplitDescriptor::new(addr, len, flags, next),
            )
            .unwrap();
    }

    fn expose_raw(&mut self, head: u16) {
        self.driver.push_raw_head(&self.mem, head).unwrap();
        self.driver.publish(&self.mem).unwrap();
    }

    fn pop_err(&mut self) -> QueueError {
        let before = self.device.next_avail();
        let err = self.device.pop(&self.mem).unwrap_err();
        assert_eq!(
            self.device.next_avail(),
            before,
            "a rejected chain must not advance the queue"
        );
        err
    }

    /// What the driver collects, as (id, len) pairs.
    fn used_pairs(&mut self) -> Vec<(u16, u32)> {
        let used = self.driver.collect_used(&self.mem).unwrap();
        used.iter().map(|u| (u.id, u.len)).collect()
    }

    /// [`Self::pop_err`] for a malformed chain: the chain error.
    fn pop_chain_err(&mut self) -> ChainError {
        match self.pop_err() {
            QueueError::Chain(err) => err,
            other => panic!("expected a malformed chain, got {other:?}"),
        }
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(layout::used_idx(&self.config)).unwrap()
    }
}

/// A chain's readable part comes before its writable part and both lengths are reported.
#[test]
fn pop_returns_readable_then_writable_segments() {
    let mut r = Rig::new(8);
    let head = r.add(&[buf(0, false), buf(1, false), buf(2, true)]);
    let chain = r.device.pop(&r.mem).unwrap().unwrap();
    assert_eq!(chain.id, head);
    assert_eq!(chain.segments.len(), 3);
    assert_eq!((chain.readable_len(), chain.writable_len()), (0x200, 0x100));
    assert_eq!(
        chain.writable().next().unwrap().addr,
        GuestAddress(DATA + 0x200)
    );
    assert!(r.device.pop(&r.mem).unwrap().is_none());
}

/// Used entries are written in completion order, not availability order, and the driver gets
/// each id back with its length.
#[test]
fn out_of_order_completion_returns_each_id_once() {
    let mut r = Rig::new(8);
    let heads: Vec<u16> = (0..4).map(|i| r.add(&[buf(i, true)])).collect();
    let chains: Vec<_> = (0..4)
        .map(|_| r.device.pop(&r.mem).unwrap().unwrap())
        .collect();
    for (order, &i) in [2usize, 0, 3, 1].iter().enumerate() {
        r.device
            .add_used(&r.mem, chains[i].id, order as u32)
            .unwrap();
    }
    r.device.publish_used(&r.mem).unwrap();
    let used = r.driver.collect_used(&r.mem).unwrap();
    let got: Vec<(u16, u32)> = used.iter().map(|u| (u.id, u.len)).collect();
    assert_eq!(
        got,
        vec![(heads[2], 0), (heads[0], 1), (heads[3], 2), (heads[1], 3)]
    );
    assert_eq!(
        r.device.add_used(&r.mem, heads[0], 0),
        Err(QueueError::NotInFlight { id: heads[0] })
    );
}

/// Batch publish: used.idx in guest memory moves only at `publish_used`, once per batch.
#[test]
fn used_index_moves_only_on_publish() {
    let mut r = Rig::new(8);
    for i in 0..3 {
        r.add(&[buf(i, true)]);
    }
    while let Some(c) = r.device.pop(&r.mem).unwrap() {
        r.device.add_used(&r.mem, c.id, 1).unwrap();
    }
    assert_eq!(r.used_idx(), 0);
    assert_eq!(
        r.device.state(),
        Err(QueueError::UnpublishedUsed { count: 3 })
    );
    r.device.publish_used(&r.mem).unwrap();
    assert_eq!(r.used_idx(), 3);
}

/// The used length may not exceed what the chain lets the device write.
#[test]
fn used_len_beyond_writable_part_is_rejected() {
    let mut r = Rig::new(4);
    let head = r.add(&[buf(0, false), buf(1, true)]);
    r.device.pop(&r.mem).unwrap();
    assert_eq!(
        r.device.add_used(&r.mem, head, 0x101),
        Err(QueueError::UsedLenTooLarge {
            id: head,
            len: 0x101,
            writable: 0x100
        })
    );
    r.device.add_used(&r.mem, head, 0x100).unwrap();
}

/// Without EVENT_IDX: avail.flags = 0 means notify, VIRTQ_AVAIL_F_NO_INTERRUPT means do not.
#[test]
fn notification_follows_avail_flags_without_event_idx() {
    let mut r = Rig::new(8);
    for no_interrupt in [false, true, false] {
        if no_interrupt {
            r.driver.disable_interrupts(&r.mem).unwrap();
        } else {
            r.driver.enable_interrupts(&r.mem).unwrap();
        }
        let head = r.add(&[buf(0, true)]);
        r.device.pop(&r.mem).unwrap().unwrap();
        r.device.add_used(&r.mem, head, 0).unwrap();
        r.device.publish_used(&r.mem).unwrap();
        assert_eq!(r.device.needs_notification(&r.mem).unwrap(), !no_interrupt);
        // Nothing new published: no second notification for the same batch.
        assert!(!r.device.needs_notification(&r.mem).unwrap());
        r.driver.collect_used(&r.mem).unwrap();
    }
}

/// With EVENT_IDX the device notifies exactly when the batch crosses used_event.
#[test]
fn notification_follows_used_event_with_event_idx() {
    let mut r = Rig::with(8, true, false);
    // used_event = 2: the driver wants an interrupt once the entry at index 2 is used.
    r.driver.set_used_event(&r.mem, 2).unwrap();
    let expected = [false, false, true, false];
    for want in expected {
        let head = r.add(&[buf(0, true)]);
        r.device.pop(&r.mem).unwrap().unwrap();
        r.device.add_used(&r.mem, head, 0).unwrap();
        r.device.publish_used(&r.mem).unwrap();
        assert_eq!(r.device.needs_notification(&r.mem).unwrap(), want);
        r.driver.collect_used(&r.mem).unwrap();
    }
}

/// Available-buffer suppression toward the driver: used.flags without EVENT_IDX, avail_event
/// with it; `enable_notification` reports buffers that arrived meanwhile.
#[test]
fn avail_notification_suppression_drives_driver_kicks() {
    for event_idx in [false, true] {
        let mut r = Rig::with(8, event_idx, false);
        r.device.disable_notification(&r.mem).unwrap();
        r.add(&[buf(0, true)]);
        // EVENT_IDX: avail_event is still 0 from initialisation, so the first add kicks.
        assert_eq!(r.driver.should_kick(&r.mem).unwrap(), event_idx);
        assert!(
            r.device.enable_notification(&r.mem).unwrap(),
            "buffer already there"
        );
        r.device.pop(&r.mem).unwrap().unwrap();
        assert!(!r.device.enable_notification(&r.mem).unwrap());
        r.add(&[buf(1, true)]);
        assert!(r.driver.should_kick(&r.mem).unwrap());
        if event_idx {
            // Device has not re-armed avail_event: the next add does not kick.
            r.add(&[buf(2, true)]);
            assert!(!r.driver.should_kick(&r.mem).unwrap());
        }
    }
}

/// Indirect chains: one ring descriptor, buffers read from the table.
#[test]
fn indirect_chain_is_followed() {
    let mut r = Rig::new(4);
    let table = GuestAddress(0x7_0000);
    let head = r
        .driver
        .add_indirect_chain(&r.mem, &[buf(0, false), buf(1, true), buf(2, true)], table)
        .unwrap();
    r.driver.publish(&r.mem).unwrap();
    let chain = r.device.pop(&r.mem).unwrap().unwrap();
    assert_eq!(
        (chain.id, chain.ring_slots, chain.segments.len()),
        (head, 1, 3)
    );
    assert_eq!((chain.readable_len(), chain.writable_len()), (0x100, 0x200));
    assert_eq!(r.driver.num_free(), 3);
}

/// Hostile ring: a descriptor loop ends with a typed error, not a hang.
#[test]
fn descriptor_loop_is_rejected() {
    let mut r = Rig::new(4);
    r.raw(0, DATA, 8, VIRTQ_DESC_F_NEXT, 1);
    r.raw(1, DATA, 8, VIRTQ_DESC_F_NEXT, 0);
    r.expose_raw(0);
    assert_eq!(r.pop_err(), ChainError::ChainTooLong { limit: 4 }.into());
}

/// Hostile ring: a chain with more descriptors than the queue has entries.
#[test]
fn chain_longer_than_queue_is_rejected() {
    let mut r = Rig::new(4);
    for i in 0..4 {
        r.raw(i, DATA, 8, VIRTQ_DESC_F_NEXT, (i + 1) % 4);
    }
    r.expose_raw(2);
    assert!(matches!(r.pop_chain_err(), ChainError::ChainTooLong { .. }));
}

/// Hostile ring: head and next indices at or past the queue size.
#[test]
fn indices_out_of_range_are_rejected() {
    let mut r = Rig::new(4);
    r.expose_raw(4);
    assert_eq!(
        r.pop_err(),
        ChainError::IndexOutOfRange { index: 4, limit: 4 }.into()
    );
    let mut r = Rig::new(4);
    r.raw(0, DATA, 8, VIRTQ_DESC_F_NEXT, 9);
    r.expose_raw(0);
    assert_eq!(
        r.pop_err(),
        ChainError::IndexOutOfRange { index: 9, limit: 4 }.into()
    );
}

/// Hostile ring: indirect-table abuses, each with its own error.
#[test]
fn malformed_indirect_descriptors_are_rejected() {
    let table = 0x7_0000u64;
    let cases: [(u16, u32, ChainError); 4] = [
        (
            VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
            32,
            ChainError::IndirectWithNext,
        ),
        (
            VIRTQ_DESC_F_INDIRECT,
            0,
            ChainError::BadIndirectTableLength { len: 0 },
        ),
        (
            VIRTQ_DESC_F_INDIRECT,
            24,
            ChainError::BadIndirectTableLength { len: 24 },
        ),
        (
            VIRTQ_DESC_F_INDIRECT,
            16 * 32769,
            ChainError::BadIndirectTableLength { len: 16 * 32769 },
        ),
    ];
    for (flags, len, want) in cases {
        let mut r = Rig::new(4);
        r.raw(0, table, len, flags, 1);
        r.expose_raw(0);
        assert_eq!(r.pop_err(), want.into());
    }
    // Indirect inside indirect.
    let mut r = Rig::new(4);
    let nested: [u8; 16] =
        zerocopy::transmute!(SplitDescriptor::new(table, 16, VIRTQ_DESC_F_INDIRECT, 0));
    r.mem.write_obj(nested, GuestAddress(table)).unwrap();
    r.raw(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    r.expose_raw(0);
    assert_eq!(r.pop_err(), ChainError::NestedIndirect.into());
    // Indirect without the feature.
    let mut r = Rig::with(4, false, false);
    r.raw(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    r.expose_raw(0);
    assert_eq!(r.pop_err(), ChainError::IndirectNotNegotiated.into());
    // Indirect table outside guest memory.
    let mut r = Rig::new(4);
    r.raw(0, MEM_SIZE as u64 - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
    r.expose_raw(0);
    assert!(matches!(
        r.pop_chain_err(),
        ChainError::DescriptorOutOfMemory { .. }
    ));
}

/// Hostile ring: buffers outside guest memory, overflowing lengths, readable after writable.
#[test]
fn malformed_buffers_are_rejected() {
    let mut r = Rig::new(4);
    r.raw(0, MEM_SIZE as u64 - 4, 8, 0, 0);
    r.expose_raw(0);
    assert_eq!(
        r.pop_err(),
        ChainError::BufferOutOfMemory {
            addr: MEM_SIZE as u64 - 4,
            len: 8
        }
        .into()
    );

    let mut r = Rig::new(4);
    r.raw(0, u64::MAX - 2, 8, 0, 0);
    r.expose_raw(0);
    assert!(matches!(
        r.pop_chain_err(),
        ChainError::BufferOutOfMemory { .. }
    ));

    // Two 2 GiB buffers: each inside (lazily mapped) guest memory, together 2^32 bytes.
    let mut r = Rig::in_memory(0x8010_0000, 4, false, false);
    r.raw(
        0,
        0x10_0000,
        0x8000_0000,
        VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
        1,
    );
    r.raw(1, 0x10_0000, 0x8000_0000, VIRTQ_DESC_F_WRITE, 0);
    r.expose_raw(0);
    assert_eq!(r.pop_err(), ChainError::LengthOverflow.into());

    let mut r = Rig::new(4);
    r.raw(0, DATA, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    r.raw(1, DATA, 8, 0, 0);
    r.expose_raw(0);
    assert_eq!(r.pop_err(), ChainError::ReadableAfterWritable.into());
}

/// Hostile ring: avail.idx jumping more than the queue size ahead of the device.
#[test]
fn avail_index_jump_is_rejected() {
    let mut r = Rig::new(4);
    r.driver.set_raw_avail_idx(&r.mem, 5).unwrap();
    assert_eq!(
        r.pop_err(),
        QueueError::AvailIndexJump {
            avail_idx: 5,
            next_avail: 0,
            size: 4
        }
    );
}

/// Seed 001: "The field last_avail_idx is the location where the device read for the next index
/// from the virtqueue available ring" — state taken mid-stream (with chains in flight and the
/// free-running index about to wrap at 2^16) resumes on a fresh queue exactly.
#[test]
fn state_round_trip_at_index_wrap_with_inflight() {
    let mut r = Rig::new(8);
    // Move both indices to 65534 (= size-2 modulo the ring) by cycling buffers.
    for _ in 0..65534u32 {
        let head = r.add(&[buf(0, true)]);
        r.device.pop(&r.mem).unwrap().unwrap();
        r.device.add_used(&r.mem, head, 0).unwrap();
        r.device.publish_used(&r.mem).unwrap();
        r.driver.collect_used(&r.mem).unwrap();
    }
    let heads: Vec<u16> = (0..3)
        .map(|i| r.add(&[buf(i, false), buf(i + 4, true)]))
        .collect();
    let a = r.device.pop(&r.mem).unwrap().unwrap();
    let b = r.device.pop(&r.mem).unwrap().unwrap();
    let state = r.device.state().unwrap();
    assert_eq!(state.avail_state, 0, "65534 + 2 wraps to 0");
    assert_eq!(state.inflight, vec![a.clone(), b.clone()]);

    let mut resumed = SplitQueue::from_state(r.config, &state, &r.mem).unwrap();
    assert_eq!(resumed.inflight(), vec![a, b]);
    let c = resumed.pop(&r.mem).unwrap().unwrap();
    assert_eq!(c.id, heads[2]);
    for id in [heads[1], heads[2], heads[0]] {
        resumed.add_used(&r.mem, id, 3).unwrap();
    }
    resumed.publish_used(&r.mem).unwrap();
    let used: Vec<u16> = r
        .driver
        .collect_used(&r.mem)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(used, vec![heads[1], heads[2], heads[0]]);
}

/// Seed 001: "a device MUST NOT clear the queue state upon reset and MUST reset the queue state
/// when the driver sets ACKNOWLEDGE" — the queue's reset (what ACKNOWLEDGE triggers) returns the
/// state to its initial value.
#[test]
fn reset_returns_state_to_initial() {
    let mut r = Rig::new(8);
    r.add(&[buf(0, true)]);
    r.device.pop(&r.mem).unwrap();
    assert_ne!(
        r.device.state().unwrap(),
        QueueState::initial(RingKind::Split)
    );
    r.device.reset();
    assert_eq!(
        r.device.state().unwrap(),
        QueueState::initial(RingKind::Split)
    );
}

/// Restore validation (pitfall 3): each inconsistent field is rejected on its own, and a failed
/// `set_state` leaves the queue exactly as it was.
#[test]
fn invalid_states_are_rejected_and_change_nothing() {
    let mut r = Rig::new(4);
    let head = r.add(&[buf(0, true)]);
    let chain = r.device.pop(&r.mem).unwrap().unwrap();
    let good = r.device.state().unwrap();
    assert_eq!(good.inflight.len(), 1);

    let mut bad = good.clone();
    bad.used_state = 1;
    assert_eq!(
        r.device.set_state(&bad, &r.mem),
        Err(StateError::SplitUsedState(1))
    );

    let mut bad = good.clone();
    bad.inflight.clear();
    assert_eq!(
        r.device.set_state(&bad, &r.mem),
        Err(StateError::InflightMismatch {
            inflight: 0,
            distance: 1
        })
    );

    let mut bad = good.clone();
    bad.avail_state = good.avail_state.wrapping_sub(1);
    assert!(matches!(
        r.device.set_state(&bad, &r.mem),
        Err(StateError::InflightMismatch { .. })
    ));

    let mut bad = good.clone();
    bad.inflight[0].id = 4;
    assert!(matches!(
        r.device.set_state(&bad, &r.mem),
        Err(StateError::BadInflight { id: 4, .. })
    ));

    let mut bad = good.clone();
    bad.inflight[0].segments[0].addr = GuestAddress(MEM_SIZE as u64);
    assert!(matches!(
        r.device.set_state(&bad, &r.mem),
        Err(StateError::BadInflight { .. })
    ));

    // avail.idx more than a queue size past last_avail_idx.
    r.driver.set_raw_avail_idx(&r.mem, 6).unwrap();
    assert!(matches!(
        r.device.set_state(&good, &r.mem),
        Err(StateError::AvailAhead { .. })
    ));
    r.driver.set_raw_avail_idx(&r.mem, 1).unwrap();

    assert_eq!(r.device.state().unwrap(), good);
    assert_eq!(r.device.inflight(), vec![chain]);
    r.device.add_used(&r.mem, head, 0).unwrap();
}

/// Pitfall 4: a notification owed at save time (published, decision pending) is sent after
/// restore even though the restored queue never saw the batch — rust-vmm's queue loses it.
#[test]
fn owed_notification_survives_restore() {
    let mut r = Rig::with(8, true, false);
    r.driver.set_used_event(&r.mem, 0).unwrap();
    let head = r.add(&[buf(0, true)]);
    r.device.pop(&r.mem).unwrap();
    r.device.add_used(&r.mem, head, 0).unwrap();
    r.device.publish_used(&r.mem).unwrap();
    let state = r.device.state().unwrap();
    assert!(state.notification_owed);
    let mut resumed = SplitQueue::from_state(r.config, &state, &r.mem).unwrap();
    assert!(resumed.needs_notification(&r.mem).unwrap());
    assert!(!resumed.state().unwrap().notification_owed);
}

/// Pitfall 4: after restore, buffers the driver added past avail_event without kicking (the kick
/// was not due, or was lost while stopped) are found by polling, completed and notified.
#[test]
fn restore_finds_buffers_added_without_kick() {
    let mut r = Rig::with(8, true, false);
    assert!(!r.device.enable_notification(&r.mem).unwrap());
    r.add(&[buf(0, true)]);
    assert!(r.driver.should_kick(&r.mem).unwrap());
    let first = r.device.pop(&r.mem).unwrap().unwrap();
    // The device is stopped here and saved; avail_event still says 0, so later adds do not kick.
    let state = r.device.state().unwrap();
    r.driver.enable_interrupts(&r.mem).unwrap();
    let second = r.add(&[buf(1, true)]);
    assert!(
        !r.driver.should_kick(&r.mem).unwrap(),
        "no kick is due for the second buffer"
    );

    let mut resumed = SplitQueue::from_state(r.config, &state, &r.mem).unwrap();
    assert!(resumed.has_available(&r.mem).unwrap());
    let chain = resumed.pop(&r.mem).unwrap().unwrap();
    assert_eq!(chain.id, second);
    resumed.add_used(&r.mem, first.id, 1).unwrap();
    resumed.add_used(&r.mem, second, 2).unwrap();
    resumed.publish_used(&r.mem).unwrap();
    assert!(resumed.needs_notification(&r.mem).unwrap());
    assert_eq!(r.driver.collect_used(&r.mem).unwrap().len(), 2);
}

/// The state of a queue restored from another state reads back identically.
#[test]
fn state_is_stable_across_restore() {
    let mut r = Rig::new(16);
    for i in 0..5 {
        r.add(&[buf(i, true)]);
    }
    for _ in 0..3 {
        r.device.pop(&r.mem).unwrap();
    }
    let state = r.device.state().unwrap();
    let restored = SplitQueue::from_state(r.config, &state, &r.mem).unwrap();
    assert_eq!(restored.state().unwrap(), state);
    assert_eq!(restored.next_avail(), 3);
}

/// Seed 001 available state at every ring position, including size-1 and the wrap to 0: a
/// state saved with a chain in flight resumes on a fresh queue, which completes that chain and
/// the next one.
#[test]
fn state_round_trip_at_every_ring_position() {
    let size = 4u16;
    for position in 0..3 * u32::from(size) {
        let mut r = Rig::new(size);
        for _ in 0..position {
            let head = r.add(&[buf(0, true)]);
            r.device.pop(&r.mem).unwrap();
            r.device.add_used(&r.mem, head, 0).unwrap();
            r.device.publish_used(&r.mem).unwrap();
            r.driver.collect_used(&r.mem).unwrap();
        }
        let first = r.add(&[buf(1, true)]);
        let second = r.add(&[buf(2, true)]);
        r.device.pop(&r.mem).unwrap().unwrap();
        let state = r.device.state().unwrap();
        assert_eq!(u32::from(state.avail_state), position + 1);
        let mut resumed = SplitQueue::from_state(r.config, &state, &r.mem).unwrap();
        assert_eq!(resumed.pop(&r.mem).unwrap().unwrap().id, second);
        resumed.add_used(&r.mem, second, 5).unwrap();
        resumed.add_used(&r.mem, first, 6).unwrap();
        resumed.publish_used(&r.mem).unwrap();
        let used = r.used_pairs();
        assert_eq!(used, vec![(second, 5), (first, 6)], "position {position}");
    }
}

/// Batch taking stops before a malformed chain: the good chains come back, the error comes at
/// the next call, and the queue does not move past the bad chain.
#[test]
fn pop_batch_returns_good_chains_before_a_bad_one() {
    let mut r = Rig::new(8);
    let first = r.add(&[buf(0, true)]);
    let second = r.add(&[buf(1, true)]);
    r.expose_raw(9);
    let mut chains = Vec::new();
    assert_eq!(r.device.pop_batch(&r.mem, &mut chains, 8).unwrap(), 2);
    assert_eq!((chains[0].id, chains[1].id), (first, second));
    assert_eq!(
        r.device.pop_batch(&r.mem, &mut chains, 8),
        Err(ChainError::IndexOutOfRange { index: 9, limit: 8 }.into())
    );
    assert_eq!(r.device.next_avail(), 2);
    r.device
        .add_used_batch(&r.mem, &[(second, 1), (first, 2)])
        .unwrap();
    r.device.publish_used(&r.mem).unwrap();
    let used = r.used_pairs();
    assert_eq!(used, vec![(second, 1), (first, 2)]);
}
