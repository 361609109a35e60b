//! Hostile drivers: every malformed chain gives its typed error, never a panic or an unbounded
//! loop, and leaves the device where it was.

use virtio_lm_spec::ring::{
    PackedDescriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::ChainError;

const NEXT: u16 = VIRTQ_DESC_F_NEXT;
const WRITE: u16 = VIRTQ_DESC_F_WRITE;
const INDIRECT: u16 = VIRTQ_DESC_F_INDIRECT;

fn write_table(r: &Rig, table: u64, descs: &[PackedDescriptor]) {
    for (i, d) in (0u64..).zip(descs) {
        let bytes: [u8; 16] = zerocopy::transmute!(*d);
        r.mem
            .write_obj(bytes, GuestAddress(table + 16 * i))
            .unwrap();
    }
}

fn chain_err(e: ChainError) -> QueueError {
    QueueError::Chain(e)
}

/// A chain whose every descriptor sets NEXT never ends: rejected once it spans the whole ring,
/// for sizes 1, 3 and 4 (and starting mid-ring, so the walk wraps).
#[test]
fn chain_longer_than_the_queue() {
    for (size, warmup) in [(1u16, 0u16), (3, 2), (4, 0)] {
        let mut r = Rig::new(size);
        for _ in 0..warmup {
            r.cycle(1, 0);
        }
        let descs: Vec<_> = (0..size).map(|i| raw(DATA, 0x10, NEXT, i)).collect();
        r.raw_chain(&descs);
        assert_eq!(
            r.pop_err(),
            chain_err(ChainError::ChainTooLong {
                limit: u32::from(size)
            })
        );
    }
}

/// An indirect table entry with INDIRECT is a nested table.
#[test]
fn indirect_inside_indirect() {
    let mut r = Rig::new(4);
    write_table(
        &r,
        TABLES,
        &[raw(DATA, 0x10, 0, 0), raw(TABLES + 0x100, 16, INDIRECT, 0)],
    );
    r.raw_chain(&[raw(TABLES, 32, INDIRECT, 0)]);
    assert_eq!(r.pop_err(), chain_err(ChainError::NestedIndirect));
}

/// INDIRECT together with NEXT on a ring descriptor.
#[test]
fn indirect_with_next() {
    let mut r = Rig::new(4);
    write_table(&r, TABLES, &[raw(DATA, 0x10, 0, 0)]);
    r.raw_chain(&[raw(TABLES, 16, INDIRECT | NEXT, 0), raw(DATA, 0x10, 0, 1)]);
    assert_eq!(r.pop_err(), chain_err(ChainError::IndirectWithNext));
}

/// Indirect tables of length 0, not a multiple of 16, or more than 32768 entries.
#[test]
fn bad_indirect_table_lengths() {
    for len in [0u32, 8, 24, 16 * 32769] {
        let mut r = Rig::new(4);
        r.raw_chain(&[raw(TABLES, len, INDIRECT, 0)]);
        assert_eq!(
            r.pop_err(),
            chain_err(ChainError::BadIndirectTableLength { len })
        );
    }
}

/// An indirect table that is not in guest memory.
#[test]
fn indirect_table_outside_memory() {
    let mut r = Rig::new(4);
    let addr = MEM_SIZE as u64 - 16;
    r.raw_chain(&[raw(addr, 32, INDIRECT, 0)]);
    assert_eq!(
        r.pop_err(),
        chain_err(ChainError::DescriptorOutOfMemory { addr })
    );
}

/// INDIRECT without VIRTIO_F_INDIRECT_DESC.
#[test]
fn indirect_not_negotiated() {
    let mut r = Rig::with(4, false, false);
    write_table(&r, TABLES, &[raw(DATA, 0x10, 0, 0)]);
    r.raw_chain(&[raw(TABLES, 16, INDIRECT, 0)]);
    assert_eq!(r.pop_err(), chain_err(ChainError::IndirectNotNegotiated));
}

/// A buffer that is not entirely inside guest memory, in the ring and in an indirect table.
#[test]
fn buffer_outside_memory() {
    let addr = MEM_SIZE as u64 - 0x10;
    let mut r = Rig::new(4);
    r.raw_chain(&[raw(DATA, 0x10, NEXT, 0), raw(addr, 0x20, WRITE, 0)]);
    assert_eq!(
        r.pop_err(),
        chain_err(ChainError::BufferOutOfMemory { addr, len: 0x20 })
    );

    let mut r = Rig::new(4);
    write_table(&r, TABLES, &[raw(addr, 0x11, 0, 0)]);
    r.raw_chain(&[raw(TABLES, 16, INDIRECT, 0)]);
    assert_eq!(
        r.pop_err(),
        chain_err(ChainError::BufferOutOfMemory { addr, len: 0x11 })
    );
}

/// Lengths that add up past 32 bits: two 2 GiB ring descriptors (each inside lazily mapped
/// guest memory), and 2048 indirect entries of 2 MiB each.
#[test]
fn length_overflow() {
    let mut r = Rig::in_memory(0x8010_0000, 4, false, false);
    r.raw_chain(&[
        raw(0x10_0000, 0x8000_0000, WRITE | NEXT, 0),
        raw(0x10_0000, 0x8000_0000, WRITE, 0),
    ]);
    assert_eq!(r.pop_err(), chain_err(ChainError::LengthOverflow));

    let mut r = Rig::new(4);
    let table: Vec<_> = (0..2048).map(|_| raw(0, MEM_SIZE as u32, 0, 0)).collect();
    write_table(&r, TABLES, &table);
    r.raw_chain(&[raw(TABLES, 16 * 2048, INDIRECT, 0)]);
    assert_eq!(r.pop_err(), chain_err(ChainError::LengthOverflow));
}

/// A readable descriptor after a writable one.
#[test]
fn readable_after_writable() {
    let mut r = Rig::new(4);
    r.raw_chain(&[raw(DATA, 0x10, WRITE | NEXT, 0), raw(DATA, 0x10, 0, 0)]);
    assert_eq!(r.pop_err(), chain_err(ChainError::ReadableAfterWritable));
}

/// A buffer id at or past the queue size cannot be tracked (our decision: ids are below the
/// size, as the driver's id pool is).
#[test]
fn buffer_id_not_below_size() {
    for id in [5u16, 6, u16::MAX] {
        let mut r = Rig::new(5);
        r.raw_chain(&[raw(DATA, 0x10, 0, 0), raw(DATA, 0x10, 0, id)]);
        // The first chain (id 0) is fine; the second is rejected.
        assert_eq!(r.pop().id, 0);
        assert_eq!(r.pop_err(), QueueError::BadBufferId { id });
    }
}

/// A buffer id that is already in flight: the device could not tell the two completions apart.
#[test]
fn buffer_id_already_in_flight() {
    let mut r = Rig::new(4);
    let id = r.add(&[buf(0, true)]);
    r.pop();
    r.raw_chain(&[raw(DATA, 0x10, NEXT, 3), raw(DATA, 0x10, 0, id)]);
    assert_eq!(r.pop_err(), QueueError::BadBufferId { id });
    // Once the first use of the id is returned, the same chain is accepted.
    r.complete(id, 0);
    let chain = r.pop();
    assert_eq!((chain.id, chain.ring_slots), (id, 2));
}

/// A rejected chain leaves the available position alone; the device can report the error and
/// the ring stays where it was (here the driver repairs the descriptor and the device resumes).
#[test]
fn error_leaves_avail_position_unchanged() {
    let mut r = Rig::new(3);
    r.cycle(2, 0);
    r.raw_chain(&[raw(DATA, 0x10, WRITE | NEXT, 7), raw(DATA, 0x10, 0, 1)]);
    let before = r.device.next_avail();
    assert_eq!(r.pop_err(), chain_err(ChainError::ReadableAfterWritable));
    assert_eq!(r.device.next_avail(), before);
    assert_eq!(r.device.inflight_len(), 0);
    // Repair the second descriptor (slot 0 of the next lap) in place.
    let mut fixed = r.desc_at(0);
    fixed.flags.set(fixed.flags.get() | WRITE);
    r.driver.write_raw_descriptor(&r.mem, 0, fixed).unwrap();
    let chain = r.pop();
    assert_eq!((chain.id, chain.ring_slots), (1, 2));
}
