//! Buffers the device has taken from the ring and not yet returned, in the order it took them.
//!
//! This is what lets a device stop without draining: the list goes into the queue state, and the
//! destination completes each buffer exactly once. Insert and remove are O(1) (a slot per id
//! stamped with a sequence number); only saving sorts.

use crate::chain::{DescriptorChain, SavedChain};
use crate::error::QueueError;

#[derive(Clone, Debug, Default)]
struct Slot {
    /// 0 when the id is not in flight; otherwise the order in which it was taken.
    taken_seq: u64,
    chain: DescriptorChain,
    writable_len: u32,
}

/// In-flight buffers indexed by id (split head or packed buffer id, both below the queue size).
#[derive(Clone, Debug, Default)]
pub struct InflightTracker {
    slots: Vec<Slot>,
    next_seq: u64,
    count: u16,
}

impl InflightTracker {
    pub(crate) fn new(size: u16) -> Self {
        Self {
            slots: vec![Slot::default(); usize::from(size)],
            next_seq: 1,
            count: 0,
        }
    }

    pub(crate) fn len(&self) -> u16 {
        self.count
    }

    /// Records a taken chain, keeping a copy of it.
    #[inline]
    pub(crate) fn insert(&mut self, chain: &DescriptorChain) -> Result<(), QueueError> {
        let seq = self.next_seq;
        let slot = self
            .slots
            .get_mut(usize::from(chain.id))
            .filter(|s| s.taken_seq == 0)
            .ok_or(QueueError::BadBufferId { id: chain.id })?;
        slot.taken_seq = seq;
        slot.writable_len = chain.writable_len();
        slot.chain.id = chain.id;
        slot.chain.ring_slots = chain.ring_slots;
        // Reuses the slot's allocation: after warm-up, taking a chain allocates nothing here.
        slot.chain.segments.clear();
        slot.chain.segments.extend_from_slice(&chain.segments);
        self.next_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// Checks that `id` is in flight and `len` fits its writable part; returns its ring slots.
    #[inline]
    pub(crate) fn check_used(&self, id: u16, len: u32) -> Result<u16, QueueError> {
        let slot = self
            .slots
            .get(usize::from(id))
            .filter(|s| s.taken_seq != 0)
            .ok_or(QueueError::NotInFlight { id })?;
        if len > slot.writable_len {
            return Err(QueueError::UsedLenTooLarge {
                id,
                len,
                writable: slot.writable_len,
            });
        }
        Ok(slot.chain.ring_slots)
    }

    /// Marks `id` returned. The caller has run [`Self::check_used`].
    pub(crate) fn remove(&mut self, id: u16) {
        if let Some(slot) = self.slots.get_mut(usize::from(id)) {
            if slot.taken_seq != 0 {
                slot.taken_seq = 0;
                self.count -= 1;
            }
        }
    }

    /// Copies of the in-flight chains, oldest first.
    pub(crate) fn in_order(&self) -> Vec<DescriptorChain> {
        let mut taken: Vec<&Slot> = self.slots.iter().filter(|s| s.taken_seq != 0).collect();
        taken.sort_by_key(|s| s.taken_seq);
        taken.into_iter().map(|s| s.chain.clone()).collect()
    }

    /// The in-flight chains as a queue state lists them, oldest first.
    pub(crate) fn saved(&self) -> Vec<SavedChain> {
        self.in_order().into_iter().map(SavedChain::from).collect()
    }

    /// Rebuilds the tracker from a saved, already validated list (oldest first).
    pub(crate) fn from_chains(size: u16, chains: &[DescriptorChain]) -> Self {
        let mut tracker = Self::new(size);
        for chain in chains {
            // Validation guaranteed distinct ids below the size, so this cannot fail.
            let _ = tracker.insert(chain);
        }
        tracker
    }

    /// Empties the tracker and moves it out, keeping its allocations for a queue's reset.
    pub(crate) fn recycle(&mut self) -> Self {
        self.clear();
        std::mem::take(self)
    }

    pub(crate) fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.taken_seq = 0;
        }
        self.count = 0;
        self.next_seq = 1;
    }
}
