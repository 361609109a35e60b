//! Buffers and notifications.

use virtio_lm_queue::{BufferSpec, UsedBuffer};
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;

use super::ring::DriverQueue;
use super::types::{Notifier, OutstandingChain};
use super::PciDriver;
use crate::error::PciError;

impl<M: GuestMemory> PciDriver<M> {
    // ---- buffers and notifications ---------------------------------------------------------

    /// Queue `index` as set up.
    pub fn queue(&self, index: u16) -> Option<&DriverQueue> {
        self.queues.get(&index)
    }

    /// Queue `index` as set up, mutable (raw ring access).
    pub fn queue_mut(&mut self, index: u16) -> Option<&mut DriverQueue> {
        self.queues.get_mut(&index)
    }

    fn queue_or_err(&mut self, index: u16) -> Result<&mut DriverQueue, PciError> {
        self.queues
            .get_mut(&index)
            .ok_or(PciError::QueueNotSetUp(index))
    }

    /// Adds a chain of `buffers` to queue `index` (visible after [`Self::publish`]); returns
    /// its id.
    pub fn add_buffer(&mut self, index: u16, buffers: &[BufferSpec]) -> Result<u16, PciError> {
        let mem = self.mem.clone();
        let queue = self.queue_or_err(index)?;
        let id = queue.ring.add_chain(&*mem, buffers)?;
        queue.outstanding.insert(id, buffers.to_vec());
        Ok(id)
    }

    /// Makes the chains added to queue `index` visible to the device.
    pub fn publish(&mut self, index: u16) -> Result<(), PciError> {
        let mem = self.mem.clone();
        self.queue_or_err(index)?.ring.publish(&*mem)?;
        Ok(())
    }

    /// Notifies queue `index` if the device asked for it (notification suppression); returns
    /// whether it notified.
    pub fn kick(&mut self, index: u16) -> Result<bool, PciError> {
        let mem = self.mem.clone();
        if self.queue_or_err(index)?.ring.should_kick(&*mem)? {
            self.notify(index)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Adds, publishes and kicks one chain; returns its id.
    pub fn submit(&mut self, index: u16, buffers: &[BufferSpec]) -> Result<u16, PciError> {
        let id = self.add_buffer(index, buffers)?;
        self.publish(index)?;
        self.kick(index)?;
        Ok(id)
    }

    /// Notifies queue `index` unconditionally: a 16-bit index write, or with
    /// VIRTIO_F_NOTIFICATION_DATA the 32-bit value with the ring position.
    pub fn notify(&mut self, index: u16) -> Result<(), PciError> {
        let address = self.notify_address(index)?;
        if self.negotiated(Feature::NotificationData) {
            let data = super::ring::notification_data(&self.queue_or_err(index)?.ring, index);
            self.transport.write(address, &data.encode().to_le_bytes());
        } else {
            self.transport.write(address, &index.to_le_bytes());
        }
        Ok(())
    }

    /// The BAR 0 address of queue `index`'s notifications (from the notify capability and the
    /// queue's `queue_notify_off`).
    pub fn notify_address(&self, index: u16) -> Result<u64, PciError> {
        let queue = self
            .queues
            .get(&index)
            .ok_or(PciError::QueueNotSetUp(index))?;
        Ok(self.regions.notify.offset
            + u64::from(queue.notify_off) * u64::from(self.regions.notify_off_multiplier))
    }

    /// A [`Notifier`] for queue `index`.
    pub fn notifier(&self, index: u16) -> Result<Notifier, PciError> {
        Ok(Notifier {
            transport: self.transport.clone(),
            address: self.notify_address(index)?,
            queue: index,
        })
    }

    /// Collects the buffers queue `index` has used since the last call.
    pub fn collect_used(&mut self, index: u16) -> Result<Vec<UsedBuffer>, PciError> {
        let mem = self.mem.clone();
        let queue = self.queue_or_err(index)?;
        let used = queue.ring.collect_used(&*mem)?;
        for buffer in &used {
            queue.outstanding.remove(&buffer.id);
        }
        Ok(used)
    }

    /// Asks queue `index` for used-buffer notifications; true if used buffers are waiting.
    pub fn enable_interrupts(&mut self, index: u16) -> Result<bool, PciError> {
        let mem = self.mem.clone();
        Ok(self.queue_or_err(index)?.ring.enable_interrupts(&*mem)?)
    }

    /// Asks queue `index` not to send used-buffer notifications.
    pub fn disable_interrupts(&mut self, index: u16) -> Result<(), PciError> {
        let mem = self.mem.clone();
        Ok(self.queue_or_err(index)?.ring.disable_interrupts(&*mem)?)
    }

    /// Chains made available and not yet seen used, over every queue.
    pub fn outstanding(&self) -> Vec<OutstandingChain> {
        self.queues
            .values()
            .flat_map(|q| {
                q.outstanding.iter().map(|(&id, buffers)| OutstandingChain {
                    queue: q.index,
                    id,
                    buffers: buffers.clone(),
                })
            })
            .collect()
    }
}
