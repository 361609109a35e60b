//! The split queue region (vhost-user "Inflight I/O tracking", split virtqueue):
//! `QueueRegionSplit { u64 features; u16 version; u16 desc_num; u16 last_batch_head;
//! u16 used_idx; DescStateSplit desc[]; }` with `DescStateSplit { u8 inflight; u8 padding[5];
//! u16 next; u64 counter; }`, one entry per descriptor-table head.

use virtio_lm_queue::{QueueConfig, QueueState, SavedChain, SplitQueue, Virtqueue};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{
    hooked_publish, InflightError, Published, QueueRegion, DESC_NUM_AT, VERSION, VERSION_AT,
};

const LAST_BATCH_HEAD: usize = 12;
const USED_IDX: usize = 14;
const INFLIGHT: usize = 0;
const NEXT: usize = 6;
const COUNTER: usize = 8;

fn entry(head: u16) -> usize {
    16 + 16 * usize::from(head)
}

/// used.idx as the driver sees it (guest memory, little-endian).
fn ring_used_idx<M: GuestMemory + ?Sized>(config: &QueueConfig, mem: &M) -> Option<u16> {
    let addr = GuestAddress(config.device_area.0.checked_add(2)?);
    mem.read_obj::<u16>(addr).ok().map(u16::from_le)
}

fn out_of_range(region: &QueueRegion, what: &str, value: u16) -> InflightError {
    InflightError::Corrupt {
        queue: region.index,
        reason: format!("{what} {value} not below the ring size {}", region.size),
    }
}

/// A region never written: nothing in flight, the used index where the ring stands.
pub(super) fn init<M: GuestMemory + ?Sized>(
    region: &QueueRegion,
    config: &QueueConfig,
    mem: &M,
) -> Result<(), InflightError> {
    let used = ring_used_idx(config, mem).ok_or(InflightError::Corrupt {
        queue: region.index,
        reason: "used ring outside guest memory".into(),
    })?;
    let f = &region.fields;
    f.clear(region.size)?;
    f.set_u16(DESC_NUM_AT, region.size)?;
    f.set_u16(USED_IDX, used)?;
    // Last: until the version is there, a restarted backend treats the region as new.
    f.set_u16(VERSION_AT, VERSION)
}

/// Head `head` was taken: counter first, then the flag, so a crash in between leaves it not
/// in flight (then it is taken again from the available ring: it is the newest).
pub(super) fn taken(region: &mut QueueRegion, head: u16) -> Result<(), InflightError> {
    if head >= region.size {
        return Err(out_of_range(region, "head", head));
    }
    let counter = region.next_counter();
    region.fields.set_u64(entry(head) + COUNTER, counter)?;
    region.fields.set_u8(entry(head) + INFLIGHT, 1)
}

/// The batch goes on the last-batch list, then used.idx moves (the publish), then the batch's
/// entries leave flight and the region's used index catches up.
pub(super) fn publish<M: GuestMemory + ?Sized>(
    region: &mut QueueRegion,
    queue: &mut Virtqueue,
    mem: &M,
    batch: &[u16],
) -> Result<(), Published> {
    let f = region.fields.clone();
    for &id in batch {
        if id >= region.size {
            return Err(out_of_range(region, "used id", id).into());
        }
        f.set_u16(entry(id) + NEXT, f.u16(LAST_BATCH_HEAD))?;
        f.set_u16(LAST_BATCH_HEAD, id)?;
    }
    hooked_publish(f.area.hook(), queue, mem)?;
    for &id in batch {
        f.set_u8(entry(id) + INFLIGHT, 0)?;
    }
    let Virtqueue::Split(q) = queue else {
        return Err(Published::Queue("not a split ring".into()));
    };
    f.set_u16(USED_IDX, q.next_used())?;
    Ok(())
}

/// The ring state after a reconnect: if used.idx moved past the recorded used index, the last
/// batch was published and its entries leave flight; then the ring continues at used.idx plus
/// the heads still in flight, which are resubmitted in counter order.
pub(super) fn recover<M: GuestMemory + ?Sized>(
    region: &mut QueueRegion,
    config: &QueueConfig,
    mem: &M,
) -> Result<QueueState, String> {
    let f = region.fields.clone();
    let size = region.size;
    let ring_used = ring_used_idx(config, mem).ok_or("used ring outside guest memory")?;
    let recorded = f.u16(USED_IDX);
    let published = ring_used.wrapping_sub(recorded);
    if published > size {
        return Err(format!(
            "used index {ring_used} is {published} past the recorded {recorded}"
        ));
    }
    let mut head = f.u16(LAST_BATCH_HEAD);
    for n in 0..published {
        if head >= size {
            return Err(format!("last batch list reaches {head}"));
        }
        f.set_u8(entry(head) + INFLIGHT, 0)
            .map_err(|e| e.to_string())?;
        if n + 1 < published {
            head = f.u16(entry(head) + NEXT);
        }
    }
    f.set_u16(USED_IDX, ring_used).map_err(|e| e.to_string())?;

    let mut heads: Vec<(u64, u16)> = (0..size)
        .filter(|&i| f.u8(entry(i) + INFLIGHT) != 0)
        .map(|i| (f.u64(entry(i) + COUNTER), i))
        .collect();
    heads.sort_unstable();
    let mut inflight = Vec::with_capacity(heads.len());
    for &(_, head) in &heads {
        let chain = SplitQueue::chain_at(config, mem, head)
            .map_err(|e| format!("in-flight head {head}: {e}"))?;
        inflight.push(SavedChain::from(chain));
    }
    region.counter = heads.last().map_or(1, |&(c, _)| c.saturating_add(1));
    Ok(QueueState {
        avail_state: ring_used.wrapping_add(heads.len() as u16),
        used_state: 0,
        // The crash may have come between a publish and its notification.
        notification_owed: true,
        inflight,
    })
}
