//! The driver side of one queue, split or packed, with the buffers it has outstanding.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use virtio_lm_queue::{
    BufferSpec, DriverError, PackedDriver, QueueConfig, RingKind, SplitDriver, UsedBuffer,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::notify::NotificationData;

/// The driver side of a ring in either format.
#[derive(Clone, Debug)]
pub enum RingDriver {
    /// Split ring.
    Split(SplitDriver),
    /// Packed ring.
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
        match self {
            Self::Split(d) => d.config(),
            Self::Packed(d) => d.config(),
        }
    }

    /// Adds a chain (visible to the device after [`Self::publish`]); returns its id.
    pub fn add_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        buffers: &[BufferSpec],
    ) -> Result<u16, DriverError> {
        match self {
            Self::Split(d) => d.add_chain(mem, buffers),
            Self::Packed(d) => d.add_chain(mem, buffers),
        }
    }

    /// Makes every chain added so far visible to the device.
    pub fn publish<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<(), DriverError> {
        match self {
            Self::Split(d) => d.publish(mem),
            Self::Packed(d) => d.publish(mem),
        }
    }

    /// Whether the device wants a notification for what was published since the last decision.
    pub fn should_kick<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<bool, DriverError> {
        match self {
            Self::Split(d) => d.should_kick(mem),
            Self::Packed(d) => d.should_kick(mem),
        }
    }

    /// Buffers the device has used since the last call.
    pub fn collect_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<UsedBuffer>, DriverError> {
        match self {
            Self::Split(d) => d.collect_used(mem),
            Self::Packed(d) => d.collect_used(mem),
        }
    }

    /// Asks for used-buffer notifications; true if used buffers are already waiting.
    pub fn enable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, DriverError> {
        match self {
            Self::Split(d) => d.enable_interrupts(mem),
            Self::Packed(d) => d.enable_interrupts(mem),
        }
    }

    /// Asks the device not to send used-buffer notifications.
    pub fn disable_interrupts<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), DriverError> {
        match self {
            Self::Split(d) => d.disable_interrupts(mem),
            Self::Packed(d) => d.disable_interrupts(mem),
        }
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        match self {
            Self::Split(d) => d.num_free(),
            Self::Packed(d) => d.num_free(),
        }
    }

    /// The VIRTIO_F_NOTIFICATION_DATA value for queue `queue` as the ring stands (what has been
    /// published). Split: from `avail.idx` in guest memory; packed: the next available slot and
    /// the driver wrap counter.
    pub fn notification<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        queue: u16,
    ) -> Result<NotificationData, DriverError> {
        match self {
            Self::Split(d) => {
                let addr = GuestAddress(d.config().driver_area.0 + 2);
                let idx = mem
                    .load::<u16>(addr, Ordering::Acquire)
                    .map_err(|_| DriverError::MemoryAccess { addr: addr.0 })?;
                Ok(NotificationData::split(queue, u16::from_le(idx)))
            }
            Self::Packed(d) => {
                let pos = d.avail_position();
                Ok(NotificationData::packed(queue, pos.index, pos.wrap_counter))
            }
        }
    }
}

/// One queue as [`crate::PciDriver`] drives it.
#[derive(Clone, Debug)]
pub struct DriverQueue {
    pub(crate) index: u16,
    pub(crate) notify_off: u16,
    pub(crate) ring: RingDriver,
    /// Buffers made available and not yet used, by chain id.
    pub(crate) outstanding: BTreeMap<u16, Vec<BufferSpec>>,
}

impl DriverQueue {
    /// The queue index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The `queue_notify_off` the device reported.
    pub fn notify_off(&self) -> u16 {
        self.notify_off
    }

    /// The ring driver.
    pub fn ring(&self) -> &RingDriver {
        &self.ring
    }

    /// The ring driver, for direct ring manipulation (chains added here bypass the outstanding
    /// list that [`crate::PciDriver::recover_from_needs_reset`] returns).
    pub fn ring_mut(&mut self) -> &mut RingDriver {
        &mut self.ring
    }

    /// Buffers made available and not yet used, by chain id.
    pub fn outstanding(&self) -> &BTreeMap<u16, Vec<BufferSpec>> {
        &self.outstanding
    }
}
