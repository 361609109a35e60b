//! The transmit path (virtio spec 5.1.6.2): chains to frames to datagrams, with frames held in
//! order while the socket is busy.

use virtio_lm_device::{DeviceError, QueueAccess};
use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;

use super::backend::Sent;
use super::config::{ETH_HLEN, MAX_FRAME_LEN, NET_HDR_LEN};
use super::Net;
use crate::guest_io::read_segments;

/// A transmit chain taken but not sent yet (the socket was busy).
#[derive(Debug)]
pub(crate) struct HeldTx {
    pub(crate) queue: u16,
    pub(crate) chain: DescriptorChain,
    pub(crate) frame: Vec<u8>,
}

/// The frame of a transmit chain, or `None` if the chain is malformed: device-writable buffers,
/// or a frame shorter than an Ethernet header or longer than the MTU.
fn read_frame<M: GuestMemory + ?Sized>(mem: &M, chain: &DescriptorChain) -> Option<Vec<u8>> {
    let len = chain.readable_len() as usize;
    if chain.writable_len() != 0
        || !(NET_HDR_LEN + ETH_HLEN..=NET_HDR_LEN + MAX_FRAME_LEN).contains(&len)
    {
        return None;
    }
    let mut frame = vec![0u8; len - NET_HDR_LEN];
    read_segments(mem, chain.readable(), NET_HDR_LEN as u64, &mut frame).ok()?;
    Some(frame)
}

impl Net {
    /// Retries held frames, then sends new chains of transmit queue `index` (pair `pair`),
    /// stopping at the first frame the socket cannot take.
    pub(crate) fn transmit<M: GuestMemory + ?Sized>(
        &mut self,
        index: u16,
        pair: u16,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let mut blocked = self.retry_tx(index, access)?;
        // Everything available is taken (the core processes a queue until nothing is): once
        // the socket is busy, the rest is held behind the first held frame, in order.
        while let Some(chain) = access.pop()? {
            blocked = self.send_chain(index, pair, chain, !blocked, access)?;
        }
        Ok(())
    }

    /// Sends the chains of transmit queue `index` handed over in flight (never sent before),
    /// in order, behind any frame already held for the queue.
    pub(crate) fn adopt_tx<M: GuestMemory + ?Sized>(
        &mut self,
        index: u16,
        pair: u16,
        chains: Vec<DescriptorChain>,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let mut blocked = self.tx_held.iter().any(|h| h.queue == index);
        for chain in chains {
            let known = self
                .tx_held
                .iter()
                .any(|h| h.queue == index && h.chain.id() == chain.id());
            if !known {
                blocked = self.send_chain(index, pair, chain, !blocked, access)?;
            }
        }
        Ok(())
    }

    /// Sends one chain's frame (or, without `try_send`, holds it behind frames already held);
    /// true if it had to be held.
    fn send_chain<M: GuestMemory + ?Sized>(
        &mut self,
        index: u16,
        pair: u16,
        chain: DescriptorChain,
        try_send: bool,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<bool, DeviceError> {
        let Some(frame) = read_frame(access.mem(), &chain) else {
            self.stats.add_tx_malformed(1);
            access.add_used(chain.id(), 0)?;
            return Ok(false);
        };
        if self.active_pairs() > 1 {
            self.steering.learn(&frame, pair);
        }
        if !try_send || self.backend.send(&frame) == Sent::Busy {
            self.tx_held.push_back(HeldTx {
                queue: index,
                chain,
                frame,
            });
            self.backend.set_tx_blocked(true);
            return Ok(true);
        }
        access.add_used(chain.id(), 0)?;
        Ok(false)
    }

    /// Retries the frames held for queue `index`, in order; true if some are still held.
    pub(crate) fn retry_tx<M: GuestMemory + ?Sized>(
        &mut self,
        index: u16,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<bool, DeviceError> {
        let mut blocked = false;
        while let Some(pos) = self.tx_held.iter().position(|h| h.queue == index) {
            if self.backend.send(&self.tx_held[pos].frame) == Sent::Busy {
                blocked = true;
                break;
            }
            if let Some(held) = self.tx_held.remove(pos) {
                access.add_used(held.chain.id(), 0)?;
            }
        }
        self.backend.set_tx_blocked(!self.tx_held.is_empty());
        Ok(blocked)
    }

    /// Forgets every held frame: the chains stay in flight and the core hands them to
    /// whoever resumes their queue.
    pub(crate) fn forget_tx_held(&mut self) {
        self.tx_held.clear();
        self.backend.set_tx_blocked(false);
    }
}
