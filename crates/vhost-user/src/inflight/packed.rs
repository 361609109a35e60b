//! The packed queue region (vhost-user "Inflight I/O tracking", packed virtqueue):
//! `QueueRegionPacked { u64 features; u16 version; u16 desc_num; u16 free_head;
//! u16 old_free_head; u16 used_idx; u16 old_used_idx; u8 used_wrap_counter;
//! u8 old_used_wrap_counter; u8 padding[7]; DescStatePacked desc[]; }` with
//! `DescStatePacked { u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter;
//! u16 id; u16 flags; u32 len; u64 addr; }`.
//!
//! Entries hold copies of the ring descriptors of each chain in flight, taken from a free list
//! (a packed ring reuses a chain's slots for used descriptors before the chain completes). The
//! `old_*` fields are the last consistent state: recovery commits the update in progress if the
//! driver can already see its batch, and rolls it back otherwise.

use virtio_lm_queue::{
    DescriptorChain, DeviceQueue, PackedQueue, QueueConfig, QueueState, RingPosition, SavedChain,
    Virtqueue,
};
use virtio_lm_spec::ring::{PackedDescriptor, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{
    hooked_publish, Fields, InflightError, Published, QueueRegion, DESC_NUM_AT, VERSION, VERSION_AT,
};

const FREE_HEAD: usize = 12;
const OLD_FREE_HEAD: usize = 14;
const USED_IDX: usize = 16;
const OLD_USED_IDX: usize = 18;
const USED_WRAP: usize = 20;
const OLD_USED_WRAP: usize = 21;
/// `used_idx`, `old_used_idx`, `used_wrap_counter`, `old_used_wrap_counter` and two padding
/// bytes share one aligned 8-byte word: storing it whole changes a position and its wrap
/// counter at once, so no crash leaves an index of one lap with the counter of another.
const USED_WORD: usize = 16;

const INFLIGHT: usize = 0;
const NEXT: usize = 2;
const LAST: usize = 4;
const NUM: usize = 6;
const COUNTER: usize = 8;
const ID: usize = 16;
const FLAGS: usize = 18;
const LEN: usize = 20;
const ADDR: usize = 24;

fn entry(index: u16) -> usize {
    32 + 32 * usize::from(index)
}

type Used = (u16, bool);

/// Stores the used position `current` and the committed one `old` in one store.
fn set_used(f: &Fields, current: Used, old: Used) -> Result<(), InflightError> {
    let mut word = [0u8; 8];
    word[USED_IDX - USED_WORD..][..2].copy_from_slice(&current.0.to_ne_bytes());
    word[OLD_USED_IDX - USED_WORD..][..2].copy_from_slice(&old.0.to_ne_bytes());
    word[USED_WRAP - USED_WORD] = u8::from(current.1);
    word[OLD_USED_WRAP - USED_WORD] = u8::from(old.1);
    f.set_u64(USED_WORD, u64::from_ne_bytes(word))
}

fn used_positions(f: &Fields) -> (Used, Used) {
    (
        (f.u16(USED_IDX), f.u8(USED_WRAP) != 0),
        (f.u16(OLD_USED_IDX), f.u8(OLD_USED_WRAP) != 0),
    )
}

fn corrupt(region: &QueueRegion, reason: String) -> InflightError {
    InflightError::Corrupt {
        queue: region.index,
        reason,
    }
}

/// Ring descriptor `index` as the ring holds it now.
fn ring_descriptor<M: GuestMemory + ?Sized>(
    config: &QueueConfig,
    mem: &M,
    index: u16,
) -> Option<PackedDescriptor> {
    let addr = config.desc_table.0.checked_add(16 * u64::from(index))?;
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(addr)).ok()?;
    let word = |at: usize, n: usize| {
        raw[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    };
    Some(PackedDescriptor::new(
        word(0, 8),
        word(8, 4) as u32,
        word(14, 2) as u16,
        word(12, 2) as u16,
    ))
}

/// A region never written: every entry free, the used position the vring base gives.
pub(super) fn init(region: &QueueRegion, base: &QueueState) -> Result<(), InflightError> {
    let f = &region.fields;
    f.clear(region.size)?;
    for i in 0..region.size {
        f.set_u16(entry(i) + NEXT, i + 1)?;
    }
    let used = RingPosition::from_state(base.used_state);
    f.set_u16(DESC_NUM_AT, region.size)?;
    let used = (used.index, used.wrap_counter);
    set_used(f, used, used)?;
    f.set_u16(VERSION_AT, VERSION)
}

/// The position `slots` before `position`.
fn back(position: RingPosition, slots: u16, size: u16) -> RingPosition {
    let ahead = position.advance(size - slots.min(size), size);
    RingPosition {
        index: ahead.index,
        wrap_counter: !ahead.wrap_counter,
    }
}

/// `chain` was taken: its ring descriptors are copied into entries from the free list, the
/// head entry marked in flight first; `old_free_head` moves only once the chain is complete,
/// which is what makes a half-recorded chain roll back.
pub(super) fn taken<M: GuestMemory + ?Sized>(
    region: &mut QueueRegion,
    queue: &PackedQueue,
    mem: &M,
    chain: &DescriptorChain,
) -> Result<(), InflightError> {
    let size = region.size;
    let config = *queue.config();
    let slots = chain.ring_slots();
    let start = back(queue.next_avail(), slots, size);
    let f = region.fields.clone();
    let head = f.u16(OLD_FREE_HEAD);
    if head >= size || usize::from(chain.id()) >= region.heads.len() {
        return Err(corrupt(
            region,
            format!("free head {head}, buffer id {}", chain.id()),
        ));
    }
    let counter = region.next_counter();
    for i in 0..slots {
        let position = start.advance(i, size);
        let d = ring_descriptor(&config, mem, position.index)
            .ok_or_else(|| corrupt(region, "descriptor ring outside guest memory".into()))?;
        let free = f.u16(FREE_HEAD);
        if free >= size {
            return Err(corrupt(region, format!("free list reaches {free}")));
        }
        if i == 0 {
            f.set_u16(entry(head) + NUM, 0)?;
            f.set_u64(entry(head) + COUNTER, counter)?;
            f.set_u8(entry(head) + INFLIGHT, 1)?;
        }
        if i + 1 == slots {
            f.set_u16(entry(head) + LAST, free)?;
        }
        f.set_u16(entry(head) + NUM, f.u16(entry(head) + NUM).wrapping_add(1))?;
        f.set_u64(entry(free) + ADDR, d.addr())?;
        f.set_u32(entry(free) + LEN, d.len())?;
        f.set_u16(entry(free) + FLAGS, d.flags.get())?;
        f.set_u16(entry(free) + ID, d.id())?;
        f.set_u16(FREE_HEAD, f.u16(entry(free) + NEXT))?;
        if i + 1 == slots {
            f.set_u16(OLD_FREE_HEAD, f.u16(FREE_HEAD))?;
        }
    }
    region.heads[usize::from(chain.id())] = head;
    Ok(())
}

/// The batch's entries go back on the free list and the new used position is recorded, then
/// the head descriptor's flags hand the batch over (the publish), then the batch leaves flight
/// and the `old_*` fields commit.
pub(super) fn publish<M: GuestMemory + ?Sized>(
    region: &mut QueueRegion,
    queue: &mut Virtqueue,
    mem: &M,
    batch: &[u16],
) -> Result<(), Published> {
    let f = region.fields.clone();
    let size = region.size;
    let mut heads = Vec::with_capacity(batch.len());
    for &id in batch {
        let head = region
            .heads
            .get_mut(usize::from(id))
            .map(|h| std::mem::replace(h, u16::MAX))
            .filter(|&h| h < size)
            .ok_or_else(|| corrupt(region, format!("used id {id} has no entry")))?;
        let last = f.u16(entry(head) + LAST);
        if last >= size {
            return Err(corrupt(region, format!("entry {head} ends at {last}")).into());
        }
        f.set_u16(entry(last) + NEXT, f.u16(FREE_HEAD))?;
        f.set_u16(FREE_HEAD, head)?;
        heads.push(head);
    }
    let Virtqueue::Packed(q) = queue else {
        return Err(Published::Queue("not a packed ring".into()));
    };
    let used = q.next_used();
    let used = (used.index, used.wrap_counter);
    let (_, old) = used_positions(&f);
    set_used(&f, used, old)?;
    hooked_publish(f.area.hook(), queue, mem)?;
    for head in heads {
        f.set_u8(entry(head) + INFLIGHT, 0)?;
    }
    // The free list first: a crash before the used word commits is then a commit recovery
    // redoes (the batch is visible), never a free list that lost the batch's entries.
    f.set_u16(OLD_FREE_HEAD, f.u16(FREE_HEAD))?;
    set_used(&f, used, used)?;
    Ok(())
}

/// Whether ring descriptor `index` is used in the lap of `wrap` (AVAIL and USED both equal
/// the wrap counter): the publish of a batch starting there happened.
fn is_used<M: GuestMemory + ?Sized>(config: &QueueConfig, mem: &M, index: u16, wrap: bool) -> bool {
    ring_descriptor(config, mem, index).is_some_and(|d| {
        let flags = d.flags.get();
        (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) == wrap
    })
}

/// The ring state after a reconnect: commit or roll back the update in progress, free what is
/// on the free list, and resubmit the chains still in flight in counter order from their
/// descriptor copies; the ring continues at the recorded used position, its available position
/// that many slots further.
pub(super) fn recover<M: GuestMemory + ?Sized>(
    region: &mut QueueRegion,
    config: &QueueConfig,
    mem: &M,
) -> Result<QueueState, String> {
    let f = region.fields.clone();
    let size = region.size;
    let set = |r: Result<(), InflightError>| r.map_err(|e| e.to_string());
    let (current, mut old) = used_positions(&f);
    if old.0 >= size || current.0 >= size {
        return Err(format!(
            "used index {} / {} beyond the ring",
            current.0, old.0
        ));
    }
    if current != old && is_used(config, mem, old.0, old.1) {
        set(f.set_u16(OLD_FREE_HEAD, f.u16(FREE_HEAD)))?;
        set(set_used(&f, current, current))?;
        old = current;
    }
    set(f.set_u16(FREE_HEAD, f.u16(OLD_FREE_HEAD)))?;
    set(set_used(&f, old, old))?;
    let mut free = f.u16(FREE_HEAD);
    for _ in 0..size {
        if free >= size {
            break;
        }
        set(f.set_u8(entry(free) + INFLIGHT, 0))?;
        free = f.u16(entry(free) + NEXT);
    }

    let mut heads: Vec<(u64, u16)> = (0..size)
        .filter(|&i| f.u8(entry(i) + INFLIGHT) != 0)
        .map(|i| (f.u64(entry(i) + COUNTER), i))
        .collect();
    heads.sort_unstable();
    let mut inflight = Vec::with_capacity(heads.len());
    let mut slots = 0u32;
    for &(_, head) in &heads {
        let num = f.u16(entry(head) + NUM);
        if num == 0 || num > size {
            return Err(format!("entry {head} holds {num} descriptors"));
        }
        let mut descriptors = Vec::with_capacity(usize::from(num));
        let mut at = head;
        for i in 0..num {
            if at >= size {
                return Err(format!("entry {head} links to {at}"));
            }
            let e = entry(at);
            descriptors.push(PackedDescriptor::new(
                f.u64(e + ADDR),
                f.u32(e + LEN),
                f.u16(e + FLAGS),
                f.u16(e + ID),
            ));
            if i + 1 < num {
                at = f.u16(e + NEXT);
            }
        }
        if at != f.u16(entry(head) + LAST) {
            return Err(format!("entry {head} does not end at its last entry"));
        }
        let chain = PackedQueue::chain_from_descriptors(config, mem, &descriptors)
            .map_err(|e| format!("in-flight entry {head}: {e}"))?;
        let id = usize::from(chain.id());
        match region.heads.get_mut(id) {
            Some(h) if *h == u16::MAX => *h = head,
            _ => return Err(format!("buffer id {id} in flight twice or beyond the ring")),
        }
        slots += u32::from(num);
        inflight.push(SavedChain::from(chain));
    }
    if slots > u32::from(size) {
        return Err(format!("{slots} ring slots in flight on a ring of {size}"));
    }
    region.counter = heads.last().map_or(1, |&(c, _)| c.saturating_add(1));
    let used = RingPosition {
        index: old.0,
        wrap_counter: old.1,
    };
    // Used descriptors after a batch's head are written whole before the head's flags flip:
    // ones the crash left behind (a batch rolled back, or one not recorded at all) would look
    // used as soon as a later head before them flips. The slots from the used position on
    // belong to the chains in flight, whose descriptors the region holds: mark them not used.
    for i in 0..slots as u16 {
        let position = used.advance(i, size);
        let flags = if position.wrap_counter {
            VIRTQ_DESC_F_AVAIL
        } else {
            VIRTQ_DESC_F_USED
        };
        let at = config.desc_table.0 + 16 * u64::from(position.index) + 14;
        mem.write_obj(flags.to_le(), GuestAddress(at))
            .map_err(|_| "descriptor ring outside guest memory".to_string())?;
    }
    Ok(QueueState {
        avail_state: used.advance(slots as u16, size).to_state(),
        used_state: used.to_state(),
        // The crash may have come between a publish and its notification.
        notification_owed: true,
        inflight,
    })
}
