//! Queue state: everything a device needs, beyond guest memory and the queue configuration, to
//! resume a virtqueue exactly where it stopped.
//!
//! `avail_state` and `used_state` are the 16-bit seed 001 encodings. The rest is ours: the
//! notification the device still owes (without it an EVENT_IDX driver can wait forever after a
//! restore) and the chains taken but not yet used, so a device can migrate without draining.

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
    let mut seen = vec![false; usize::from(config.size)];
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
        if chain.ring_slots == 0 || chain.ring_slots != expected_slots(chain) {
            return Err(bad("ring slot count does not fit the ring format"));
        }
        let mut builder = ChainBuilder::new(Vec::new());
        for seg in &chain.segments {
            builder
                .push(&view, seg.addr.0, seg.len, seg.writable)
                .map_err(|_| bad("segment out of order, overflowing or outside guest memory"))?;
        }
        chains.push(builder.finish(chain.id, chain.ring_slots));
    }
    Ok(chains)
}
