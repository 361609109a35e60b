//! The driver side of one queue, split or packed, with the buffers it has outstanding.

use std::collections::BTreeMap;

use virtio_lm_queue::BufferSpec;

use crate::notify::NotificationData;

pub use virtio_lm_queue::RingDriver;

/// The VIRTIO_F_NOTIFICATION_DATA value for queue `queue` as `ring` stands (what has been
/// published): split, the avail index; packed, the next available slot and the wrap counter.
pub(crate) fn notification_data(ring: &RingDriver, queue: u16) -> NotificationData {
    let position = ring.notification_position();
    match ring {
        RingDriver::Split(_) => NotificationData::split(queue, position.index),
        RingDriver::Packed(_) => {
            NotificationData::packed(queue, position.index, position.wrap_counter)
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
