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

    /// Takes back the in-flight chains of receive queue `pair` as empty held buffers.
    pub(crate) fn adopt_rx<M: GuestMemory + ?Sized>(
        &mut self,
        pair: u16,
        access: &QueueAccess<'_, M>,
    ) {
        if let Some(rx) = self.rx.get_mut(usize::from(pair)) {
            for chain in access.inflight() {
                if !rx.held.contains(&chain) {
                    rx.held.push(chain);
                }
            }
        }
    }

    /// Takes every receive chain the driver made available into `pair`'s held buffers (the
    /// core processes a queue until nothing is available), returning unusable ones empty.
    fn take_all<M: GuestMemory + ?Sized>(
        &mut self,
        p: usize,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = access.pop()? {
            match self.rx.get_mut(p) {
                Some(rx) if usable(&chain) => rx.held.push(chain),
                _ => {
                    self.stats.add_rx_bad_chains(1);
                    access.add_used(chain.id(), 0)?;
                }
            }
        }
        Ok(())
    }

    /// Takes the available receive chains of `pair` and fills them with backlog frames.
    pub(crate) fn deliver<M: GuestMemory + ?Sized>(
        &mut self,
        pair: u16,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let p = usize::from(pair);
        self.take_all(p, access)?;
        let own = self.shared.mac();
        let mrg = self.features & features::MRG_RXBUF != 0;
        loop {
            let Some(rx) = self.rx.get(p) else {
                return Ok(());
            };
            let (Some(frame), Some(first)) = (rx.backlog.front(), rx.held.first()) else {
                return Ok(());
            };
            if !self.filter(&own).accepts(frame) {
                self.rx[p].backlog.pop_front();
                self.stats.add_rx_dropped_filtered(1);
                continue;
            }
            let need = NET_HDR_LEN + frame.len();
            if !mrg && (first.writable_len() as usize) < need {
                // The buffer cannot hold this frame; it stays held for the next one.
                self.rx[p].backlog.pop_front();
                self.stats.add_rx_dropped_malformed(1);
                continue;
            }
            let mut have = 0;
            let count = rx
                .held
                .iter()
                .take_while(|c| {
                    let short = have < need;
                    have += c.writable_len() as usize;
                    short
                })
                .count();
            if have < need {
                // MRG_RXBUF: wait for more buffers.
                return Ok(());
            }
            let rx = &mut self.rx[p];
            let frame = rx.backlog.pop_front().unwrap_or_default();
            let chains: Vec<DescriptorChain> = rx.held.drain(..count).collect();
            self.write_frame(&frame, &chains, access)?;
        }
    }

    /// Returns `pair`'s held receive chains used and empty (a drain leaves nothing in flight).
    pub(crate) fn return_rx_held<M: GuestMemory + ?Sized>(
        &mut self,
        pair: u16,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let Some(rx) = self.rx.get_mut(usize::from(pair)) else {
            return Ok(());
        };
        let held = std::mem::take(&mut rx.held);
        self.stats.add_rx_returned_empty(held.len() as u64);
        for chain in held {
            access.add_used(chain.id(), 0)?;
        }
        Ok(())
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
