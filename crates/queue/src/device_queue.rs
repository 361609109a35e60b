//! The device-side interface both ring formats implement.

use vm_memory::GuestMemory;

use crate::chain::{DescriptorChain, UsedBuffer};
use crate::config::QueueConfig;
use crate::error::{ConfigError, QueueError, StateError};
use crate::state::QueueState;
use crate::view::RingOps;

/// The device side of a virtqueue.
///
/// The usual loop: `pop` chains until `None`, process each, `add_used` (in any order), then
/// `publish_used` once for the batch and `needs_notification` to decide whether to interrupt the
/// driver; `enable_notification` before sleeping, and pop again if it reports new buffers.
pub trait DeviceQueue: RingOps + Sized {
    /// Validates `config` against guest memory and creates a queue in its initial state.
    fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, ConfigError>;

    /// Creates a queue that resumes from `state`. Every field of `state` is checked against the
    /// configuration and guest memory first.
    fn from_state<M: GuestMemory + ?Sized>(
        config: QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<Self, StateError>;

    /// Replaces this queue's state with `state` if it is valid; on error nothing changes.
    fn set_state<M: GuestMemory + ?Sized>(
        &mut self,
        state: &QueueState,
        mem: &M,
    ) -> Result<(), StateError> {
        *self = Self::from_state(*self.ring_config(), state, mem)?;
        Ok(())
    }

    /// The configuration the queue runs with.
    fn config(&self) -> &QueueConfig {
        self.ring_config()
    }

    /// Takes the next available chain, or `None` when the driver has made nothing new available.
    /// On error the queue does not advance.
    fn pop<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        let mut chain = DescriptorChain::default();
        Ok(self.pop_into(mem, &mut chain)?.then_some(chain))
    }

    /// Like [`Self::pop`], reusing `chain`'s allocation. Returns whether a chain was taken.
    fn pop_into<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError> {
        self.pop_in(&self.view(mem), chain)
    }

    /// Takes up to `max` available chains into `chains[..n]`, reusing the chains already in the
    /// vector (and their allocations), and returns `n`. Ring memory is resolved once for the
    /// whole batch. If a malformed chain follows some good ones, the good ones are returned and
    /// the error comes at the next call (the queue does not advance past a bad chain).
    fn pop_batch<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chains: &mut Vec<DescriptorChain>,
        max: usize,
    ) -> Result<usize, QueueError> {
        let view = self.view(mem);
        let mut taken = 0;
        while taken < max {
            if chains.len() == taken {
                chains.push(DescriptorChain::default());
            }
            match self.pop_in(&view, &mut chains[taken]) {
                Ok(true) => taken += 1,
                Ok(false) => break,
                Err(e) if taken == 0 => return Err(e),
                // Left for the next call: the queue has not moved past the bad chain.
                Err(_) => break,
            }
        }
        Ok(taken)
    }

    /// Returns buffer `id` to the driver with `len` bytes written. The entry becomes visible to
    /// the driver at the next [`Self::publish_used`].
    fn add_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        id: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        self.add_used_in(&self.view(mem), UsedBuffer { id, len })
    }

    /// [`Self::add_used`] for each `(id, len)` in order, with ring memory resolved once. On error
    /// the entries before the failing one are added; it and the rest are not.
    fn add_used_batch<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        used: &[(u16, u32)],
    ) -> Result<(), QueueError> {
        let view = self.view(mem);
        used.iter()
            .try_for_each(|&(id, len)| self.add_used_in(&view, UsedBuffer { id, len }))
    }

    /// Makes every entry added since the last call visible to the driver.
    fn publish_used<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError>;

    /// Whether the driver wants a used-buffer notification for what was published since the last
    /// call; call after [`Self::publish_used`]. Returns true at most once per published batch.
    fn needs_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError>;

    /// Asks the driver to notify on new available buffers. Returns true if buffers are already
    /// available (the caller must pop again rather than sleep).
    fn enable_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M)
        -> Result<bool, QueueError>;

    /// Asks the driver not to notify (a hint; spurious notifications stay possible).
    fn disable_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError>;

    /// Whether the driver has made buffers available that the device has not taken.
    fn has_available<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        self.has_available_in(&self.view(mem))
    }

    /// The queue state. Fails while used entries are added but not published.
    fn state(&self) -> Result<QueueState, QueueError>;

    /// Copies of the chains taken and not yet used, oldest first. After a restore this is the
    /// work the device still has to complete.
    fn inflight(&self) -> Vec<DescriptorChain> {
        self.inflight_tracker().in_order()
    }

    /// Number of chains taken and not yet used.
    fn inflight_len(&self) -> u16 {
        self.inflight_tracker().len()
    }

    /// Returns the queue to its initial state: indices 0, wrap counters 1, nothing in flight.
    fn reset(&mut self);
}
