//! Queue state: everything a device needs, beyond guest memory and the queue configuration, to
//! resume a virtqueue exactly where it stopped.
//!
//! `avail_state` and `used_state` are the 16-bit seed 001 encodings. The rest is ours: the
//! notification the device still owes (without it an EVENT_IDX driver can wait forever after a
//! restore) and the chains taken but not yet used, so a device can migrate without draining.

use virtio_lm_spec::ring::VIRTQ_DESC_F_WRITE;
use vm_memory::GuestMemory;

use crate::chain::{DescriptorChain, SavedChain};
use crate::config::QueueConfig;
use crate::error::StateError;
use crate::event::RingPosition;
use crate::kind::RingKind;
use crate::view::RingView;
use crate::walk::ChainBuilder;

/// Saved state of one virtqueue. Untrusted: restoring validates every field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueState {
    /// Seed 001 available state. Split: `last_avail_idx`. Packed: bits 0–14 `last_avail_idx`,
    /// bit 15 `last_avail_wrap_counter`.
    pub avail_state: u16,
    /// Seed 001 used state. Packed: bits 0–14 `used_idx`, bit 15 `used_wrap_counter`.
    /// Split: 0 (its used index lives in guest memory).
    pub used_state: u16,
    /// Used entries were published whose notification decision is still pending.
    pub notification_owed: bool,
    /// Chains taken and not yet used, oldest first. Untrusted like every field here: restoring
    /// turns them into [`DescriptorChain`]s only after validating them.
    pub inflight: Vec<SavedChain>,
}

impl QueueState {
    /// The state of a queue that has never run: indices 0, wrap counters 1.
    pub fn initial(kind: RingKind) -> Self {
        let position = match kind {
            RingKind::Split => 0,
            RingKind::Packed => RingPosition::INITIAL.to_state(),
        };
        Self {
            avail_state: position,
            used_state: position,
            notification_owed: false,
            inflight: Vec::new(),
        }
    }

    /// Ids of the in-flight chains, oldest first (the VQ_INFLIGHT context field).
    pub fn inflight_ids(&self) -> Vec<u16> {
        self.inflight.iter().map(|c| c.id).collect()
    }

    /// Checks the in-flight list for a queue of `size` whose ring addresses are not known yet
    /// (a saved state checked before its queue starts): the same checks a restore makes, with
    /// `slots_ok` judging each chain's ring slot count (at least 1 is always required).
    pub fn check_inflight<M: GuestMemory + ?Sized>(
        &self,
        size: u16,
        mem: &M,
        slots_ok: impl Fn(u16) -> bool,
    ) -> Result<(), StateError> {
        let view = RingView::buffers_only(mem);
        inflight_chains(&view, size, self, |c| slots_ok(c.ring_slots)).map(drop)
    }
}

/// Checks the in-flight list of a saved state: ids distinct and below the size, ring slots as
/// the format requires, segments readable-then-writable and inside guest memory. Returns the
/// validated chains, oldest first.
pub(crate) fn validate_inflight<M: GuestMemory + ?Sized>(
    config: &QueueConfig,
    state: &QueueState,
    mem: &M,
    expected_slots: impl Fn(&SavedChain) -> u16,
) -> Result<Vec<DescriptorChain>, StateError> {
    let view = RingView::new(mem, config);
    inflight_chains(&view, config.size, state, |c| {
        c.ring_slots == expected_slots(c)
    })
}

/// The in-flight chains of `state` for a queue of `size`, validated, oldest first.
fn inflight_chains<M: GuestMemory + ?Sized>(
    view: &RingView<'_, M>,
    size: u16,
    state: &QueueState,
    slots_ok: impl Fn(&SavedChain) -> bool,
) -> Result<Vec<DescriptorChain>, StateError> {
    let mut seen = vec![false; usize::from(size)];
    let mut chains = Vec::with_capacity(state.inflight.len());
    for chain in &state.inflight {
        let bad = |reason| StateError::BadInflight {
            id: chain.id,
            reason,
        };
        let slot = seen
            .get_mut(usize::from(chain.id))
            .ok_or(bad("id not below the queue size"))?;
        if std::mem::replace(slot, true) {
            return Err(bad("id listed twice"));
        }
        if chain.ring_slots == 0 || !slots_ok(chain) {
            return Err(bad("ring slot count does not fit the ring format"));
        }
        let mut builder = ChainBuilder::new(Vec::new());
        for seg in &chain.segments {
            let flags = if seg.writable { VIRTQ_DESC_F_WRITE } else { 0 };
            builder
                .push(view, seg.addr.0, seg.len, flags)
                .map_err(|_| bad("segment out of order, overflowing or outside guest memory"))?;
        }
        chains.push(builder.finish(chain.id, chain.ring_slots));
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::chain::Segment;

    fn seg(addr: u64, len: u32, writable: bool) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
            writable,
        }
    }

    fn chain(id: u16, ring_slots: u16, segments: Vec<Segment>) -> SavedChain {
        SavedChain {
            id,
            ring_slots,
            segments,
        }
    }

    /// A saved state checked before its queue starts gets the restore's in-flight checks:
    /// distinct ids below the size, a ring slot count the caller accepts (never 0), segments
    /// readable-then-writable, not overflowing, inside guest memory with the right access.
    #[test]
    fn check_inflight_without_ring_addresses() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        let good = vec![
            chain(3, 1, vec![seg(0x100, 0x10, false), seg(0x200, 0x10, true)]),
            chain(0, 2, vec![seg(0x300, 0, true)]),
        ];
        let state = |inflight: Vec<SavedChain>| QueueState {
            inflight,
            ..QueueState::initial(RingKind::Split)
        };
        let check = |inflight: Vec<SavedChain>| state(inflight).check_inflight(4, &mem, |s| s <= 2);
        assert_eq!(check(good.clone()), Ok(()));

        let bad_reason = |id, reason| Err(StateError::BadInflight { id, reason });
        let mut dup = good.clone();
        dup[1].id = 3;
        assert_eq!(check(dup), bad_reason(3, "id listed twice"));
        let mut high = good.clone();
        high[0].id = 4;
        assert_eq!(check(high), bad_reason(4, "id not below the queue size"));
        for slots in [0, 3] {
            let mut c = good.clone();
            c[1].ring_slots = slots;
            assert_eq!(
                check(c),
                bad_reason(0, "ring slot count does not fit the ring format")
            );
        }
        let segment_reason = "segment out of order, overflowing or outside guest memory";
        for segments in [
            vec![seg(0x100, 0x10, true), seg(0x200, 0x10, false)],
            vec![seg(0x100, u32::MAX, true), seg(0x200, 1, true)],
            vec![seg(0xfff0, 0x20, false)],
        ] {
            let mut c = good.clone();
            c[0].segments = segments;
            assert_eq!(check(c), bad_reason(3, segment_reason));
        }
    }
}
