//! A virtio-net guest driver on the driver side of the queue crate
//! ([`SplitDriver`](virtio_lm_queue::SplitDriver),
//! [`PackedDriver`](virtio_lm_queue::PackedDriver)): it lays out its rings and buffers in guest memory, posts receive buffers,
//! sends frames, issues control commands and reassembles received frames (MRG_RXBUF
//! `num_buffers`). It does not notify the device itself: each call says which queue it touched,
//! and the caller (a test's core harness now, the simulated VM's PCI driver later) kicks it.
//!
//! Buffer areas: every queue gets `queue_size` slots after `buffers_at` — receive slots of
//! `rx_buf_len` bytes, transmit slots of [`TX_SLOT`] bytes (header then frame, as two
//! descriptors), control slots of [`CTRL_SLOT`] bytes (command then ack).

mod ring;

use virtio_lm_queue::{BufferSpec, DriverError, QueueConfig, RingFeatures, RingKind, UsedBuffer};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub use ring::Ring;

use super::config::{MAX_FRAME_LEN, NET_HDR_LEN, NUM_BUFFERS_OFFSET};
use ring::Queue;

/// Bytes per transmit slot.
pub const TX_SLOT: u32 = 2048;
/// Bytes per control slot.
pub const CTRL_SLOT: u32 = 4096;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetDriverError {
    /// The ring refused the operation (full, or the device broke the ring protocol).
    #[error("Ring: {0}")]
    Ring(#[from] DriverError),
    /// Guest memory could not be accessed.
    #[error("Guest memory access at {0:#x} failed")]
    Memory(u64),
    /// The device returned a receive buffer the driver cannot make sense of.
    #[error("Bad receive buffer: {0}")]
    BadReceive(&'static str),
    /// A frame or command does not fit its slot.
    #[error("{0} does not fit a slot")]
    TooLong(&'static str),
    /// No such queue in this driver.
    #[error("Queue {0} is not set up")]
    NoQueue(u16),
}

/// How the driver sets itself up (after feature negotiation).
#[derive(Clone, Copy, Debug)]
pub struct NetDriverConfig {
    /// Ring format.
    pub kind: RingKind,
    /// Negotiated ring features.
    pub ring: RingFeatures,
    /// Size of every queue.
    pub queue_size: u16,
    /// Queue pairs set up: `max_virtqueue_pairs` with VIRTIO_NET_F_MQ, else 1.
    pub pairs: u16,
    /// Set up the control queue (VIRTIO_NET_F_CTRL_VQ negotiated).
    pub ctrl: bool,
    /// VIRTIO_NET_F_MRG_RXBUF negotiated.
    pub mrg_rxbuf: bool,
    /// Bytes per receive buffer: at least 1530 without MRG_RXBUF, at least 12 with it.
    pub rx_buf_len: u32,
    /// Guest address of the first ring.
    pub rings_at: u64,
    /// Guest address of the buffer area.
    pub buffers_at: u64,
}

/// A frame being reassembled from several receive buffers.
#[derive(Clone, Debug, Default)]
struct Partial {
    remaining: u16,
    bytes: Vec<u8>,
}

/// The net driver. See the module documentation.
#[derive(Clone, Debug)]
pub struct NetDriver {
    config: NetDriverConfig,
    queues: Vec<Queue>,
    partial: Vec<Option<Partial>>,
    /// Receive buffers returned with nothing written.
    rx_length_errors: u64,
}

impl NetDriver {
    /// Lays out and zeroes the rings of every queue the configuration sets up.
    pub fn new<M: GuestMemory + ?Sized>(
        mem: &M,
        config: NetDriverConfig,
    ) -> Result<Self, NetDriverError> {
        let count = 2 * config.pairs + u16::from(config.ctrl);
        let mut ring_at = GuestAddress(config.rings_at);
        let mut buffers_at = config.buffers_at;
        let mut queues = Vec::with_capacity(usize::from(count));
        for index in 0..count {
            let (qc, end) =
                QueueConfig::contiguous(config.kind, config.queue_size, ring_at, config.ring);
            ring_at = end;
            let slot_len = if config.ctrl && index == 2 * config.pairs {
                CTRL_SLOT
            } else if index.is_multiple_of(2) {
                config.rx_buf_len
            } else {
                TX_SLOT
            };
            let size = u32::from(config.queue_size);
            queues.push(Queue {
                ring: Ring::new(qc, mem)?,
                base: buffers_at,
                slot_len,
                free: (0..size).rev().collect(),
                slot_of: vec![None; usize::from(config.queue_size)],
            });
            buffers_at += u64::from(size) * u64::from(slot_len);
        }
        Ok(Self {
            config,
            queues,
            partial: vec![None; usize::from(config.pairs)],
            rx_length_errors: 0,
        })
    }

    /// End of the buffer area (the first guest address the driver does not use).
    pub fn buffers_end(&self) -> u64 {
        self.queues.last().map_or(self.config.buffers_at, |q| {
            q.base + u64::from(self.config.queue_size) * u64::from(q.slot_len)
        })
    }

    /// The configuration of queue `index`, for the transport's queue registers.
    pub fn queue_config(&self, index: u16) -> Option<QueueConfig> {
        self.queues
            .get(usize::from(index))
            .map(|q| *q.ring.config())
    }

    /// Number of queues set up (receive and transmit of every pair, then control).
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Queue index of receiveq of `pair`.
    pub fn rx_queue(pair: u16) -> u16 {
        2 * pair
    }

    /// Queue index of transmitq of `pair`.
    pub fn tx_queue(pair: u16) -> u16 {
        2 * pair + 1
    }

    /// Whether queue `index` must be notified of what was published since the last decision
    /// (the device's notification suppression: used.flags / avail_event, or the packed device
    /// event). Call after the buffers are published.
    pub fn should_kick<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: u16,
    ) -> Result<bool, NetDriverError> {
        let queue = self
            .queues
            .get_mut(usize::from(index))
            .ok_or(NetDriverError::NoQueue(index))?;
        Ok(queue.ring.should_kick(mem)?)
    }

    /// Queue index of the control queue, if set up.
    pub fn ctrl_queue(&self) -> Option<u16> {
        self.config.ctrl.then_some(2 * self.config.pairs)
    }

    fn queue(&mut self, index: u16) -> Result<&mut Queue, NetDriverError> {
        self.queues
            .get_mut(usize::from(index))
            .ok_or(NetDriverError::NoQueue(index))
    }

    /// Posts receive buffers on `pair` until its ring or slots are full and publishes them;
    /// returns how many were posted (kick the receive queue if any).
    pub fn fill_rx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        pair: u16,
    ) -> Result<usize, NetDriverError> {
        let len = self.config.rx_buf_len;
        let q = self.queue(Self::rx_queue(pair))?;
        let mut n = 0;
        while q
            .add(mem, |at| vec![BufferSpec::writable(at, len)])?
            .is_some()
        {
            n += 1;
        }
        if n > 0 {
            q.ring.publish(mem)?;
        }
        Ok(n)
    }

    /// Adds `frame` (with a zero header) to transmitq of `pair` and publishes it; `None` when
    /// the queue is full (collect completions first). Kick the transmit queue afterwards.
    pub fn send<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        pair: u16,
        frame: &[u8],
    ) -> Result<Option<u16>, NetDriverError> {
        if frame.len() > MAX_FRAME_LEN || NET_HDR_LEN + frame.len() > TX_SLOT as usize {
            return Err(NetDriverError::TooLong("frame"));
        }
        let q = self.queue(Self::tx_queue(pair))?;
        let Some(slot) = q.free.last().map(|&s| q.slot_addr(s)) else {
            return Ok(None);
        };
        write(mem, slot, &[0u8; NET_HDR_LEN])?;
        write(mem, slot + NET_HDR_LEN as u64, frame)?;
        let hdr = BufferSpec::readable(slot, NET_HDR_LEN as u32);
        let body = BufferSpec::readable(slot + NET_HDR_LEN as u64, frame.len() as u32);
        // `add` takes the same slot (the last free one).
        let id = q.add(mem, |_| vec![hdr, body])?;
        if id.is_some() {
            q.ring.publish(mem)?;
        }
        Ok(id)
    }

    /// Transmit buffers of `pair` the device returned.
    pub fn collect_tx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        pair: u16,
    ) -> Result<usize, NetDriverError> {
        Ok(self.queue(Self::tx_queue(pair))?.collect(mem)?.len())
    }

    /// Receive buffers the device returned with nothing written (used length 0), which Linux
    /// counts as receive errors (`rx_length_errors`); skipped by [`Self::collect_rx`].
    pub fn rx_length_errors(&self) -> u64 {
        self.rx_length_errors
    }

    /// Frames received on `pair` (headers stripped, MRG_RXBUF buffers joined), in order.
    /// Buffers returned with nothing written (used length 0) are skipped and counted
    /// ([`Self::rx_length_errors`]).
    pub fn collect_rx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        pair: u16,
    ) -> Result<Vec<Vec<u8>>, NetDriverError> {
        let mrg = self.config.mrg_rxbuf;
        let used = self.queue(Self::rx_queue(pair))?.collect(mem)?;
        let partial = self
            .partial
            .get_mut(usize::from(pair))
            .ok_or(NetDriverError::NoQueue(Self::rx_queue(pair)))?;
        let mut frames = Vec::new();
        for (u, at) in used {
            if u.len > self.config.rx_buf_len {
                return Err(NetDriverError::BadReceive("used length past the buffer"));
            }
            let mut data = vec![0u8; u.len as usize];
            mem.read_slice(&mut data, GuestAddress(at))
                .map_err(|_| NetDriverError::Memory(at))?;
            if u.len == 0 && partial.is_none() {
                // Linux's virtio_net counts a receive shorter than a header plus an Ethernet
                // header in rx_length_errors and drops it; so do we.
                self.rx_length_errors += 1;
                continue;
            }
            let p = match partial.take() {
                Some(mut p) => {
                    p.bytes.extend_from_slice(&data);
                    p.remaining -= 1;
                    p
                }
                None => {
                    if data.len() < NET_HDR_LEN {
                        return Err(NetDriverError::BadReceive("shorter than a header"));
                    }
                    let n = u16::from_le_bytes([
                        data[NUM_BUFFERS_OFFSET],
                        data[NUM_BUFFERS_OFFSET + 1],
                    ]);
                    if n == 0 || (!mrg && n != 1) {
                        return Err(NetDriverError::BadReceive("num_buffers"));
                    }
                    Partial {
                        remaining: n - 1,
                        bytes: data[NET_HDR_LEN..].to_vec(),
                    }
                }
            };
            if p.remaining == 0 {
                frames.push(p.bytes);
            } else {
                *partial = Some(p);
            }
        }
        Ok(frames)
    }

    /// Adds a chain of the caller's own buffers to queue `index` and publishes it (for tests
    /// of hostile drivers); `bufs` gets the address of the slot the chain may use. `None` if
    /// the queue is full.
    pub fn add_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: u16,
        bufs: impl FnOnce(u64) -> Vec<BufferSpec>,
    ) -> Result<Option<u16>, NetDriverError> {
        let q = self.queue(index)?;
        let id = q.add(mem, bufs)?;
        if id.is_some() {
            q.ring.publish(mem)?;
        }
        Ok(id)
    }

    /// Used buffers of queue `index`, raw (for chains added with [`Self::add_chain`]).
    pub fn collect_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        index: u16,
    ) -> Result<Vec<UsedBuffer>, NetDriverError> {
        Ok(self
            .queue(index)?
            .collect(mem)?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    /// Posts control command `class`/`cmd` with `data` and publishes it; returns its buffer id
    /// (kick the control queue, then [`Self::collect_ctrl`]).
    pub fn command<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        class: u8,
        cmd: u8,
        data: &[u8],
    ) -> Result<Option<u16>, NetDriverError> {
        if 2 + data.len() + 1 > CTRL_SLOT as usize {
            return Err(NetDriverError::TooLong("command"));
        }
        let index = self
            .ctrl_queue()
            .ok_or(NetDriverError::NoQueue(2 * self.config.pairs))?;
        let q = self.queue(index)?;
        let Some(slot) = q.free.last().map(|&s| q.slot_addr(s)) else {
            return Ok(None);
        };
        let mut bytes = vec![class, cmd];
        bytes.extend_from_slice(data);
        write(mem, slot, &bytes)?;
        let ack_at = slot + u64::from(CTRL_SLOT) - 1;
        write(mem, ack_at, &[0xee])?;
        let readable = BufferSpec::readable(slot, bytes.len() as u32);
        let ack = BufferSpec::writable(ack_at, 1);
        let id = q.add(mem, |_| vec![readable, ack])?;
        if id.is_some() {
            q.ring.publish(mem)?;
        }
        Ok(id)
    }

    /// Completed control commands: `(buffer id, ack)`; the ack reads 0xee if the device wrote
    /// none.
    pub fn collect_ctrl<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Vec<(u16, u8)>, NetDriverError> {
        let index = self
            .ctrl_queue()
            .ok_or(NetDriverError::NoQueue(2 * self.config.pairs))?;
        let used = self.queue(index)?.collect(mem)?;
        used.into_iter()
            .map(|(u, slot)| {
                let at = slot + u64::from(CTRL_SLOT) - 1;
                let ack: u8 = mem
                    .read_obj(GuestAddress(at))
                    .map_err(|_| NetDriverError::Memory(at))?;
                Ok((u.id, ack))
            })
            .collect()
    }
}

fn write<M: GuestMemory + ?Sized>(mem: &M, at: u64, bytes: &[u8]) -> Result<(), NetDriverError> {
    mem.write_slice(bytes, GuestAddress(at))
        .map_err(|_| NetDriverError::Memory(at))
}
