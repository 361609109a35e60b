//! One type for a queue of either format, chosen by the configuration at run time: what a device
//! core holds when the driver negotiates VIRTIO_F_RING_PACKED or not.

use vm_memory::GuestMemory;

use crate::chain::{DescriptorChain, UsedBuffer};
use crate::config::QueueConfig;
use crate::device_queue::DeviceQueue;
use crate::error::{ConfigError, QueueError, StateError};
use crate::inflight::InflightTracker;
use crate::kind::RingKind;
use crate::packed::PackedQueue;
use crate::split::SplitQueue;
use crate::state::QueueState;
use crate::view::{RingOps, RingView};

/// A split or packed device-side queue, by [`QueueConfig::kind`].
#[derive(Clone, Debug)]
pub enum Virtqueue {
    /// A split ring.
    Split(SplitQueue),
    /// A packed ring.
    Packed(PackedQueue),
}

impl RingOps for Virtqueue {
    fn ring_config(&self) -> &QueueConfig {
        each_format!(Virtqueue, self, q => q.ring_config())
    }

    fn inflight_tracker(&self) -> &InflightTracker {
        each_format!(Virtqueue, self, q => q.inflight_tracker())
    }

    fn has_available_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
    ) -> Result<bool, QueueError> {
        each_format!(Virtqueue, self, q => q.has_available_in(view))
    }

    fn pop_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        chain: &mut DescriptorChain,
    ) -> Result<bool, QueueError> {
        each_format!(Virtqueue, self, q => q.pop_in(view, chain))
    }

    fn add_used_in<M: GuestMemory + ?Sized>(
        &mut self,
        view: &RingView<'_, M>,
        used: UsedBuffer,
    ) -> Result<(), QueueError> {
        each_format!(Virtqueue, self, q => q.add_used_in(view, used))
    }
}

impl DeviceQueue for Virtqueue {
    fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, ConfigError> {
        Ok(match config.kind {
            RingKind::Split => Virtqueue::Split(SplitQueue::new(config, mem)?),
            RingKind::Packed => Virtqueue::Packed(PackedQueue::new(config, mem)?),
        })
    }

    fn from_state<M: GuestMemory + ?Sized>(
        config: QueueConfig,
        state: &QueueState,
        mem: &M,
    ) -> Result<Self, StateError> {
        Ok(match config.kind {
            RingKind::Split => Virtqueue::Split(SplitQueue::from_state(config, state, mem)?),
            RingKind::Packed => Virtqueue::Packed(PackedQueue::from_state(config, state, mem)?),
        })
    }

    fn publish_used<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        each_format!(Virtqueue, self, q => q.publish_used(mem))
    }

    fn needs_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, QueueError> {
        each_format!(Virtqueue, self, q => q.needs_notification(mem))
    }

    fn enable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        each_format!(Virtqueue, self, q => q.enable_notification(mem))
    }

    fn disable_notification<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), QueueError> {
        each_format!(Virtqueue, self, q => q.disable_notification(mem))
    }

    fn state(&self) -> Result<QueueState, QueueError> {
        each_format!(Virtqueue, self, q => q.state())
    }

    fn reset(&mut self) {
        each_format!(Virtqueue, self, q => q.reset())
    }
}
