//! Virtqueue reset (VIRTIO_F_RING_RESET): reset one queue and set it up again while the other
//! queues keep running.

use virtio_lm_spec::pci::offset;
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;

use super::types::QueueSetup;
use super::PciDriver;
use crate::error::PciError;

impl<M: GuestMemory> PciDriver<M> {
    /// Reads `queue_reset` of queue `index` (selecting it).
    pub fn queue_reset_register(&self, index: u16) -> u16 {
        self.write16(offset::QUEUE_SELECT, index);
        self.read16(offset::QUEUE_RESET)
    }

    /// Resets queue `setup.index` and sets it up again with `setup` (possibly a new size or
    /// ring address): writes 1 to `queue_reset`, waits until it reads 0 (the driver "MUST NOT
    /// consider the reset complete until it reads 0"), then programs and enables the queue as
    /// at initialisation. Buffers outstanding on the old ring are forgotten.
    pub fn reset_queue(&mut self, setup: QueueSetup) -> Result<(), PciError> {
        self.require(Feature::RingReset)?;
        self.write16(offset::QUEUE_SELECT, setup.index);
        self.write16(offset::QUEUE_RESET, 1);
        let mut done = false;
        for attempt in 0..self.poll.attempts {
            if self.queue_reset_register(setup.index) == 0 {
                done = true;
                break;
            }
            if attempt >= self.poll.spins {
                std::thread::sleep(self.poll.interval);
            } else {
                std::thread::yield_now();
            }
        }
        if !done {
            return Err(PciError::Timeout {
                what: "queue_reset to read 0",
                attempts: self.poll.attempts,
                status: self.status(),
            });
        }
        self.queues.remove(&setup.index);
        if let Some(old) = self.setups.iter_mut().find(|s| s.index == setup.index) {
            *old = setup;
        }
        self.set_up_queues(&[setup])
    }
}
