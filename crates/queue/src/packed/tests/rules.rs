//! The packed-ring rules of spec §10.2: wrap counters, AVAIL/USED bits, chains, skipping,
//! batch publish, indirect tables and sizes that are not powers of two.

use virtio_lm_spec::ring::{
    PackedDescriptor, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress};

use super::*;

/// Spec §10.2: "The driver and the device each keep a 1-bit wrap counter, initialised to 1."
/// Seed 001: "The last_avail_wrap_counter field is the last driver ring wrap counter that is
/// observed by the device."
#[test]
fn wrap_counters_start_at_one() {
    let r = Rig::new(5);
    assert_eq!(r.device.next_avail(), pos(0, true));
    assert_eq!(r.device.next_used(), pos(0, true));
    assert_eq!(r.driver.avail_position(), pos(0, true));
    let state = r.device.state().unwrap();
    assert_eq!((state.avail_state, state.used_state), (0x8000, 0x8000));
}

/// A descriptor is available exactly when AVAIL equals the device's last_avail_wrap_counter and
/// USED differs from it; every other AVAIL/USED combination is not. After a lap the counter is
/// 0 and the roles of the bit patterns swap.
#[test]
fn availability_follows_avail_and_used_bits() {
    let both = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
    let cases = [
        (true, VIRTQ_DESC_F_AVAIL, true),
        (true, both, false),
        (true, 0, false),
        (true, VIRTQ_DESC_F_USED, false),
        (false, VIRTQ_DESC_F_USED, true),
        (false, both, false),
        (false, 0, false),
        (false, VIRTQ_DESC_F_AVAIL, false),
    ];
    for (first_lap, bits, available) in cases {
        let mut r = Rig::new(1);
        if !first_lap {
            r.cycle(1, 0);
        }
        assert_eq!(r.device.next_avail(), pos(0, first_lap));
        r.driver
            .write_raw_descriptor(&r.mem, 0, PackedDescriptor::new(DATA, 16, bits, 0))
            .unwrap();
        assert_eq!(
            r.device.has_available(&r.mem).unwrap(),
            available,
            "flags {bits:#x}"
        );
        assert_eq!(
            r.device.pop(&r.mem).unwrap().is_some(),
            available,
            "flags {bits:#x}"
        );
    }
}

/// Spec §10.2: "Used descriptor: AVAIL = USED = device wrap counter", with the chain's buffer
/// id and the written length (WRITE set so the length counts).
#[test]
fn used_descriptor_carries_wrap_counter_id_and_len() {
    let mut r = Rig::new(1);
    for (len, wrap) in [(7, true), (8, false), (0, true)] {
        let id = r.add(&[buf(0, true)]);
        r.pop();
        r.complete(id, len);
        let used = r.desc_at(0);
        assert_eq!(r.bits_at(0), (wrap, wrap));
        assert_eq!((used.id.get(), used.len.get()), (id, len));
        assert_eq!(used.flags.get() & VIRTQ_DESC_F_WRITE != 0, len != 0);
        assert_eq!(r.collect(), vec![UsedBuffer { id, len }]);
    }
}

/// A chain is the run of ring descriptors up to the first without NEXT; its buffer id is the
/// id of the last one and it occupies one ring slot per descriptor.
#[test]
fn chain_id_comes_from_last_descriptor() {
    let mut r = Rig::new(8);
    r.raw_chain(&[
        raw(DATA, 0x10, VIRTQ_DESC_F_NEXT, 5),
        raw(
            DATA + 0x100,
            0x20,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            6,
        ),
        raw(DATA + 0x200, 0x30, VIRTQ_DESC_F_WRITE, 3),
    ]);
    let chain = r.pop();
    assert_eq!((chain.id, chain.ring_slots), (3, 3));
    assert_eq!((chain.readable_len(), chain.writable_len()), (0x10, 0x50));
    assert_eq!(r.device.next_avail(), pos(3, true));
}

/// Only the head's AVAIL bit is checked: the rest of a chain follows NEXT whatever its bits
/// (the driver makes the head available last).
#[test]
fn chain_does_not_require_avail_bits_after_head() {
    let mut r = Rig::new(4);
    r.raw_chain(&[raw(DATA, 0x10, VIRTQ_DESC_F_NEXT, 0), raw(DATA, 0x10, 0, 1)]);
    // Clear the second descriptor's AVAIL bit behind the device's back.
    r.driver
        .write_raw_descriptor(&r.mem, 1, raw(DATA, 0x10, 0, 1))
        .unwrap();
    let chain = r.pop();
    assert_eq!(
        (chain.id, chain.ring_slots, chain.segments.len()),
        (1, 2, 2)
    );
}

/// A head whose flags are not yet written is not available even though the rest of its chain
/// is: `add_chain` defers the head's flags to `publish`.
#[test]
fn head_becomes_available_only_at_publish() {
    let mut r = Rig::new(4);
    let id = r.driver.add_chain(&r.mem, &chain_of(3)).unwrap();
    assert!(!r.device.has_available(&r.mem).unwrap());
    assert_eq!(
        r.bits_at(1),
        (true, false),
        "the rest of the chain is already written"
    );
    r.driver.publish(&r.mem).unwrap();
    assert_eq!(r.pop().id, id);
}

/// A chain that runs past the last ring slot continues at slot 0, where the driver's wrap
/// counter has flipped; the device's counter flips with it.
#[test]
fn chain_wraps_around_ring_end() {
    let mut r = Rig::new(5);
    r.cycle(3, 0);
    let bufs = [buf(0, false), buf(1, false), buf(2, true), buf(3, true)];
    let id = r.add(&bufs);
    assert_eq!(r.bits_at(4), (true, false));
    assert_eq!(
        r.bits_at(0),
        (false, true),
        "slot 0 carries the flipped driver counter"
    );
    let chain = r.pop();
    assert_eq!((chain.id, chain.ring_slots), (id, 4));
    let addrs: Vec<GuestAddress> = chain.segments.iter().map(|s| s.addr).collect();
    assert_eq!(addrs, bufs.iter().map(|b| b.addr).collect::<Vec<_>>());
    assert_eq!(r.device.next_avail(), pos(2, false));
    r.complete(id, 0x180);
    assert_eq!(r.device.next_used(), pos(2, false));
    // The used descriptor goes to slot 3, still in the device's first lap.
    assert_eq!(r.bits_at(3), (true, true));
    assert_eq!(r.collect(), vec![UsedBuffer { id, len: 0x180 }]);
    assert_eq!(r.driver.used_position(), pos(2, false));
}

/// Out-of-order completion of multi-descriptor chains: each used descriptor goes to the next
/// used slot and the used position skips the completed chain's length.
#[test]
fn out_of_order_completion_skips_chain_lengths() {
    let mut r = Rig::new(8);
    let ids: Vec<u16> = [1u16, 3, 2].iter().map(|&n| r.add(&chain_of(n))).collect();
    let chains: Vec<_> = (0..3).map(|_| r.pop()).collect();
    assert_eq!(r.device.next_avail(), pos(6, true));
    // Complete the 3-descriptor chain first, then the 2, then the 1.
    r.device.add_used(&r.mem, chains[1].id, 0x100).unwrap();
    assert_eq!(r.device.next_used(), pos(3, true));
    r.device.add_used(&r.mem, chains[2].id, 0).unwrap();
    assert_eq!(r.device.next_used(), pos(5, true));
    r.device.add_used(&r.mem, chains[0].id, 0x80).unwrap();
    assert_eq!(r.device.next_used(), pos(6, true));
    r.device.publish_used(&r.mem).unwrap();
    let got: Vec<(u16, u32)> = r.collect().iter().map(|u| (u.id, u.len)).collect();
    assert_eq!(got, vec![(ids[1], 0x100), (ids[2], 0), (ids[0], 0x80)]);
    assert_eq!((r.driver.num_free(), r.driver.outstanding()), (8, 0));
    assert_eq!(
        r.device.add_used(&r.mem, ids[0], 0),
        Err(QueueError::NotInFlight { id: ids[0] })
    );
}

/// The used length may not exceed what the chain lets the device write.
#[test]
fn used_len_beyond_writable_part_is_rejected() {
    let mut r = Rig::new(3);
    let id = r.add(&[buf(0, false), buf(1, true)]);
    r.pop();
    assert_eq!(
        r.device.add_used(&r.mem, id, 0x101),
        Err(QueueError::UsedLenTooLarge {
            id,
            len: 0x101,
            writable: 0x100
        })
    );
    assert_eq!(
        r.device.next_used(),
        pos(0, true),
        "a rejected completion writes nothing"
    );
    r.complete(id, 0x100);
}

/// Batch publish: add_used writes id and len at once, but the batch head's flags only at
/// publish_used, so the driver (which reads used descriptors in ring order from the head) sees
/// nothing before and the whole batch after; the state cannot be taken while a batch is pending.
#[test]
fn used_flags_wait_for_publish() {
    let mut r = Rig::new(4);
    let ids: Vec<u16> = (0..3).map(|i| r.add(&[buf(i, true)])).collect();
    for _ in 0..3 {
        let c = r.pop();
        r.device
            .add_used(&r.mem, c.id, 0x10 + u32::from(c.id))
            .unwrap();
    }
    for slot in 0..3 {
        let d = r.desc_at(slot);
        assert_eq!(
            (d.id.get(), d.len.get()),
            (
                ids[usize::from(slot)],
                0x10 + u32::from(ids[usize::from(slot)])
            )
        );
    }
    assert_eq!(
        r.bits_at(0),
        (true, false),
        "batch head not yet handed back"
    );
    assert!(r.collect().is_empty());
    assert_eq!(
        r.device.state(),
        Err(QueueError::UnpublishedUsed { count: 3 })
    );
    r.device.publish_used(&r.mem).unwrap();
    assert_eq!(r.collect().len(), 3);
    assert!(r.device.state().is_ok());
}

/// An indirect chain takes one ring slot; its table's descriptors are read in order and only
/// their WRITE flag counts (NEXT and id in a table are ignored).
#[test]
fn indirect_chain_takes_one_slot() {
    let mut r = Rig::new(3);
    let bufs = [buf(0, false), buf(1, true), buf(2, true)];
    let id = r
        .driver
        .add_indirect_chain(&r.mem, &bufs, GuestAddress(TABLES))
        .unwrap();
    r.driver.publish(&r.mem).unwrap();
    let chain = r.pop();
    assert_eq!(
        (chain.id, chain.ring_slots, chain.segments.len()),
        (id, 1, 3)
    );
    assert_eq!((chain.readable_len(), chain.writable_len()), (0x100, 0x200));
    assert_eq!(r.device.next_avail(), pos(1, true));
    r.complete(id, 0x200);
    assert_eq!(r.collect(), vec![UsedBuffer { id, len: 0x200 }]);

    // A table whose entries carry NEXT and ids: still read sequentially, all of it.
    let table = [
        raw(DATA, 0x10, VIRTQ_DESC_F_NEXT, 99),
        raw(
            DATA + 0x100,
            0x10,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            77,
        ),
    ];
    for (i, d) in (0u64..).zip(table) {
        let bytes: [u8; 16] = zerocopy::transmute!(d);
        r.mem
            .write_obj(bytes, GuestAddress(TABLES + 16 * i))
            .unwrap();
    }
    r.raw_chain(&[raw(TABLES, 32, VIRTQ_DESC_F_INDIRECT, 2)]);
    let chain = r.pop();
    assert_eq!(
        (chain.id, chain.ring_slots, chain.segments.len()),
        (2, 1, 2)
    );
    assert_eq!(chain.writable_len(), 0x10);
}

/// Sizes 1, 3, 5, 256 and 32768: several laps of chains of varying length, each buffer used
/// exactly once with its id and length, positions and wrap counters consistent on both sides.
#[test]
fn sizes_including_non_powers_of_two_run_many_laps() {
    for size in [1u16, 3, 5, 256, 32768] {
        let mut r = Rig::new(size);
        let laps = if size > 256 { 2 } else { 5 };
        let mut slots = 0u32;
        let mut n = 0u16;
        while slots < laps * u32::from(size) + 1 {
            let len = u16::min(size, n % 3 + 1);
            r.cycle(len, u32::from(len) * 4);
            slots += u32::from(len);
            n = n.wrapping_add(1);
            let linear = slots % (2 * u32::from(size));
            let expected = pos((linear % u32::from(size)) as u16, linear < u32::from(size));
            assert_eq!(r.device.next_avail(), expected, "size {size}");
            assert_eq!(r.device.next_used(), expected, "size {size}");
            assert_eq!(r.driver.avail_position(), expected, "size {size}");
            assert_eq!(r.driver.used_position(), expected, "size {size}");
        }
        assert_eq!(r.driver.num_free(), size);
    }
}

/// The driver cannot offer more descriptors than free ring slots, and gets them back when the
/// buffer is used.
#[test]
fn driver_counts_free_slots() {
    let mut r = Rig::new(5);
    let id = r.add(&chain_of(4));
    assert_eq!(r.driver.num_free(), 1);
    assert_eq!(
        r.driver.add_chain(&r.mem, &chain_of(2)),
        Err(crate::DriverError::QueueFull { free: 1, needed: 2 })
    );
    assert_eq!(
        r.driver.add_chain(&r.mem, &[]),
        Err(crate::DriverError::EmptyChain)
    );
    r.pop();
    r.complete(id, 0);
    r.collect();
    assert_eq!(r.driver.num_free(), 5);
}
