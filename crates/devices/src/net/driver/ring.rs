//! The ring-level part of the net driver: a queue with its buffer slots over either ring
//! format.

use virtio_lm_queue::{BufferSpec, DriverError, UsedBuffer};
use vm_memory::GuestMemory;

use super::NetDriverError;

/// Either ring driver (the queue crate's).
pub use virtio_lm_queue::RingDriver as Ring;

/// One queue: its ring, its slots, and the slot of each outstanding buffer id.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Queue {
    pub(super) ring: Ring,
    pub(super) base: u64,
    pub(super) slot_len: u32,
    pub(super) free: Vec<u32>,
    pub(super) slot_of: Vec<Option<u32>>,
}

impl Queue {
    pub(super) fn slot_addr(&self, slot: u32) -> u64 {
        self.base + u64::from(slot) * u64::from(self.slot_len)
    }

    /// Adds a chain built in a free slot; `None` if no slot or ring space is left.
    pub(super) fn add<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        bufs: impl FnOnce(u64) -> Vec<BufferSpec>,
    ) -> Result<Option<u16>, NetDriverError> {
        let Some(slot) = self.free.pop() else {
            return Ok(None);
        };
        match self.ring.add_chain(mem, &bufs(self.slot_addr(slot))) {
            Ok(id) => {
                if let Some(s) = self.slot_of.get_mut(usize::from(id)) {
                    *s = Some(slot);
                }
                Ok(Some(id))
            }
            Err(DriverError::QueueFull { .. }) => {
                self.free.push(slot);
                Ok(None)
            }
            Err(e) => {
                self.free.push(slot);
                Err(e.into())
            }
        }
    }

    /// Collects used buffers with the address of their slot, freeing the slots.
    pub(super) fn collect<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<(UsedBuffer, u64)>, NetDriverError> {
        let used = self.ring.collect_used(mem)?;
        let mut out = Vec::with_capacity(used.len());
        for u in used {
            let slot = self
                .slot_of
                .get_mut(usize::from(u.id))
                .and_then(Option::take)
                .ok_or(NetDriverError::Ring(DriverError::UnknownUsedId {
                    id: u.id.into(),
                }))?;
            self.free.push(slot);
            out.push((u, self.slot_addr(slot)));
        }
        Ok(out)
    }
}
