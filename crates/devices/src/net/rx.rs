//! The receive path: frames from the tunnel into per-pair backlogs, and from there into the
//! driver's receive buffers (virtio spec 5.1.6.3 and 5.1.6.4).

use std::collections::VecDeque;

use virtio_lm_device::{ChainFault, DeviceError, QueueAccess};
use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;

use super::config::{features, NET_HDR_LEN, NUM_BUFFERS_OFFSET};
use super::Net;
use crate::guest_io::write_segments;

/// Frames taken from the tunnel and not yet delivered, over all pairs. Past it, frames stay in
/// the tunnel's channel (and past that they are dropped).
pub(crate) const RX_BACKLOG: usize = 64;

/// Receive state of one queue pair.
#[derive(Debug, Default)]
pub(crate) struct RxPair {
    /// Frames steered to this pair, oldest first.
    pub(crate) backlog: VecDeque<Vec<u8>>,
    /// Receive chains taken and not yet filled, oldest first.
    pub(crate) held: Vec<DescriptorChain>,
}

/// Whether `chain` can take received data: device-writable only, room for a header.
fn usable(chain: &DescriptorChain) -> bool {
    chain.readable_len() == 0 && chain.writable_len() as usize >= NET_HDR_LEN
}

impl Net {
    /// Frames waiting in the backlogs.
    fn backlog_len(&self) -> usize {
        self.rx.iter().map(|p| p.backlog.len()).sum()
    }

    /// Takes frames from the tunnel into the backlogs (steering each to its pair).
    pub(crate) fn pull(&mut self) {
        let active = self.active_pairs();
        while self.backlog_len() < RX_BACKLOG {
            let Some(frame) = self.backend.try_recv() else {
                return;
            };
            let pair = self.steering.pick(&frame, active);
            if let Some(rx) = self.rx.get_mut(usize::from(pair)) {
                rx.backlog.push_back(frame);
            }
        }
    }

    /// Moves backlog frames of pairs that are no longer active to pair 0 (after MQ
    /// VQ_PAIRS_SET: no frame is queued on a receive queue past the pairs in use).
    pub(crate) fn resteer(&mut self) {
        let active = usize::from(self.active_pairs());
        let mut moved: Vec<Vec<u8>> = Vec::new();
        for rx in self.rx.iter_mut().skip(active) {
            moved.extend(rx.backlog.drain(..));
        }
        if let Some(first) = self.rx.first_mut() {
            first.backlog.extend(moved);
        }
    }

    /// Holds chains of receive queue `pair` handed over in flight, for the next frames;
    /// unusable ones are returned empty (a malformed chain, as when taken).
    pub(crate) fn adopt_rx<M: GuestMemory + ?Sized>(
        &mut self,
        pair: u16,
        chains: Vec<DescriptorChain>,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        for chain in chains {
            match self.rx.get_mut(usize::from(pair)) {
                Some(rx) if usable(&chain) => {
                    if !rx.held.contains(&chain) {
                        rx.held.push(chain);
                    }
                }
                _ => {
                    self.stats.add_rx_bad_chains(1);
                    access.add_used(chain.id(), 0)?;
                }
            }
        }
        Ok(())
    }

    /// Takes the next usable receive chain into `pair`'s held buffers, returning unusable ones
    /// empty (malformed chains); false if the driver has made none available.
    fn take_one<M: GuestMemory + ?Sized>(
        &mut self,
        p: usize,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<bool, DeviceError> {
        while let Some(chain) = access.pop()? {
            match self.rx.get_mut(p) {
                Some(rx) if usable(&chain) => {
                    rx.held.push(chain);
                    return Ok(true);
                }
                _ => {
                    self.stats.add_rx_bad_chains(1);
                    access.add_used(chain.id(), 0)?;
                }
            }
        }
        Ok(false)
    }

    /// Delivers `pair`'s backlog frames, taking each receive buffer only once a frame is ready
    /// for it (spec-decisions §7: no receive buffer is taken, and so none returned, empty).
    /// With `start_new` false (draining) only a frame already in process is finished: one for
    /// which buffers are already held.
    pub(crate) fn deliver<M: GuestMemory + ?Sized>(
        &mut self,
        pair: u16,
        access: &mut QueueAccess<'_, M>,
        start_new: bool,
    ) -> Result<(), DeviceError> {
        let p = usize::from(pair);
        let own = self.shared.mac();
        let mrg = self.features & features::MRG_RXBUF != 0;
        loop {
            let Some(rx) = self.rx.get(p) else {
                return Ok(());
            };
            let Some(frame) = rx.backlog.front() else {
                return Ok(());
            };
            if rx.held.is_empty() && !start_new {
                return Ok(());
            }
            if !self.filter(&own).accepts(frame) {
                self.rx[p].backlog.pop_front();
                self.stats.add_rx_dropped_filtered(1);
                continue;
            }
            let need = NET_HDR_LEN + frame.len();
            if !mrg {
                if self.rx[p].held.is_empty() && !self.take_one(p, access)? {
                    return Ok(());
                }
                if (self.rx[p].held[0].writable_len() as usize) < need {
                    // The buffer cannot hold this frame; it stays held for the next one.
                    self.rx[p].backlog.pop_front();
                    self.stats.add_rx_dropped_malformed(1);
                    continue;
                }
            }
            let mut have: usize = self.rx[p]
                .held
                .iter()
                .map(|c| c.writable_len() as usize)
                .sum();
            while mrg && have < need {
                if !self.take_one(p, access)? {
                    // MRG_RXBUF: the frame is in process; finished when more buffers come.
                    return Ok(());
                }
                have += self.rx[p]
                    .held
                    .last()
                    .map_or(0, |c| c.writable_len() as usize);
            }
            let mut room = 0;
            let count = self.rx[p]
                .held
                .iter()
                .take_while(|c| {
                    let short = room < need;
                    room += c.writable_len() as usize;
                    short
                })
                .count()
                .max(1);
            let rx = &mut self.rx[p];
            let frame = rx.backlog.pop_front().unwrap_or_default();
            let chains: Vec<DescriptorChain> = rx.held.drain(..count).collect();
            self.write_frame(&frame, &chains, access)?;
        }
    }

    /// Whether `pair` has a receive frame in process: buffers held and a frame to put in them.
    pub(crate) fn rx_in_process(&self, pair: usize) -> bool {
        self.rx
            .get(pair)
            .is_some_and(|rx| !rx.held.is_empty() && !rx.backlog.is_empty())
    }

    /// Writes header and frame across `chains` and returns them used, in order.
    fn write_frame<M: GuestMemory + ?Sized>(
        &mut self,
        frame: &[u8],
        chains: &[DescriptorChain],
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let mut bytes = vec![0u8; NET_HDR_LEN];
        // At most 1518 + 12 bytes over chains of at least 12: fewer than 128 chains.
        let num_buffers = chains.len() as u16;
        bytes[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&num_buffers.to_le_bytes());
        bytes.extend_from_slice(frame);
        let mut offset = 0;
        for chain in chains {
            let take = (chain.writable_len() as usize).min(bytes.len() - offset);
            write_segments(
                access.mem(),
                chain.writable(),
                0,
                &bytes[offset..offset + take],
            )
            .map_err(|_| Net::unanswerable(chain.id(), ChainFault::Unwritable))?;
            access.add_used(chain.id(), take as u32)?;
            offset += take;
        }
        self.stats.add_rx_frames(1);
        self.stats.add_rx_bytes(frame.len() as u64);
        Ok(())
    }
}
