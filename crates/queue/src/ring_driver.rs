//! The driver side of a ring in either format, chosen by the configuration at run time: what a
//! guest driver holds when VIRTIO_F_RING_PACKED is negotiated or not (the counterpart of
//! [`crate::Virtqueue`] on the device side).

use vm_memory::GuestMemory;

use crate::chain::{BufferSpec, UsedBuffer};
use crate::config::QueueConfig;
use crate::error::DriverError;
use crate::event::RingPosition;
use crate::kind::RingKind;
use crate::packed::PackedDriver;
use crate::split::SplitDriver;

/// A split or packed driver-side ring, by [`QueueConfig::kind`].
#[derive(Clone, Debug)]
pub enum RingDriver {
    /// A split ring.
    Split(SplitDriver),
    /// A packed ring.
    Packed(PackedDriver),
}

impl RingDriver {
    /// A driver for a fresh ring laid out by `config` (zeroes the ring areas).
    pub fn new<M: GuestMemory + ?Sized>(config: QueueConfig, mem: &M) -> Result<Self, DriverError> {
        Ok(match config.kind {
            RingKind::Split => Self::Split(SplitDriver::new(config, mem)?),
            RingKind::Packed => Self::Packed(PackedDriver::new(config, mem)?),
        })
    }

    /// The ring's configuration.
    pub fn config(&self) -> &QueueConfig {
        each_format!(RingDriver, self, d => d.config())
    }

    /// Adds a chain (visible to the device after [`Self::publish`]); returns its id.
    pub fn add_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
    ) -> Result<u16, DriverError> {
        each_format!(RingDriver, self, d => d.add_chain(mem, buffers))
    }

    /// Adds a chain through an indirect table at `table`; returns its id.
    pub fn add_indirect_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
        table: vm_memory::GuestAddress,
    ) -> Result<u16, DriverError> {
        each_format!(RingDriver, self, d => d.add_indirect_chain(mem, buffers, table))
    }

    /// Makes every chain added so far visible to the device.
    pub fn publish<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), DriverError> {
        each_format!(RingDriver, self, d => d.publish(mem))
    }

    /// Whether the device wants a notification for what was published since the last decision.
    pub fn should_kick<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, DriverError> {
        each_format!(RingDriver, self, d => d.should_kick(mem))
    }

    /// Buffers the device has used since the last call.
    pub fn collect_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<UsedBuffer>, DriverError> {
        each_format!(RingDriver, self, d => d.collect_used(mem))
    }

    /// Asks for used-buffer notifications; true if used buffers are already waiting.
    pub fn enable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, DriverError> {
        each_format!(RingDriver, self, d => d.enable_interrupts(mem))
    }

    /// Asks the device not to send used-buffer notifications.
    pub fn disable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), DriverError> {
        each_format!(RingDriver, self, d => d.disable_interrupts(mem))
    }

    /// Free descriptors (split) or ring slots (packed).
    pub fn num_free(&self) -> u16 {
        each_format!(RingDriver, self, d => d.num_free())
    }

    /// Chains made available and not yet collected back.
    pub fn outstanding(&self) -> usize {
        each_format!(RingDriver, self, d => d.outstanding())
    }

    /// The available position a VIRTIO_F_NOTIFICATION_DATA notification reports: split, the
    /// published avail.idx (all 16 bits in `index`; the wrap counter is unused and reads set);
    /// packed, the next slot and the driver wrap counter.
    pub fn notification_position(&self) -> RingPosition {
        match self {
            Self::Split(d) => RingPosition {
                index: d.published_avail_idx(),
                wrap_counter: true,
            },
            Self::Packed(d) => d.avail_position(),
        }
    }
}
