//! The ring-level net driver as guest state: [`NetDriver`] serialises (its rings' bookkeeping,
//! slots and half-reassembled frames), and [`NetDriver::check_restored`] checks a deserialised
//! one against the layout its configuration implies before it is used.

use vm_memory::GuestMemory;

use super::{queue_layout, NetDriver, NetDriverError};
use virtio_lm_queue::DriverError;

impl NetDriver {
    /// Checks a deserialised driver: its queues are exactly the ones its configuration lays
    /// out (ring, buffer area, slot size), each ring is valid in `mem` and consistent, every
    /// slot is free or holds exactly one outstanding buffer, and partial frames are bounded.
    pub fn check_restored<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), NetDriverError> {
        let bad = |why| NetDriverError::Ring(DriverError::BadState(why));
        let layout = queue_layout(&self.config).ok_or(bad("the layout overflows"))?;
        if layout.len() != self.queues.len() {
            return Err(bad("not the queues the configuration sets up"));
        }
        let size = usize::from(self.config.queue_size);
        for (q, (config, base, slot_len)) in self.queues.iter().zip(layout) {
            if *q.ring.config() != config || q.base != base || q.slot_len != slot_len {
                return Err(bad("a queue is not where the configuration lays it out"));
            }
            q.ring.check_restored(mem)?;
            if q.slot_of.len() != size {
                return Err(bad("slot table is not one entry per id"));
            }
            let mut seen = vec![false; size];
            let slots = q.free.iter().chain(q.slot_of.iter().flatten());
            for &slot in slots {
                match seen.get_mut(slot as usize) {
                    Some(s) if !*s => *s = true,
                    _ => return Err(bad("a slot is out of range or used twice")),
                }
            }
            if seen.iter().any(|s| !s) {
                return Err(bad("a slot is neither free nor holding a buffer"));
            }
        }
        if self.partial.len() != usize::from(self.config.pairs) {
            return Err(bad("not one partial frame per pair"));
        }
        let most = size * self.config.rx_buf_len as usize;
        for p in self.partial.iter().flatten() {
            if p.remaining == 0 || usize::from(p.remaining) > size || p.bytes.len() > most {
                return Err(bad("a partial frame is inconsistent"));
            }
        }
        Ok(())
    }
}
