//! The net guest driver over the virtio-pci transport: the ring-level [`NetDriver`] (slots,
//! receive reassembly, control commands) on rings that a [`PciDriver`] programs, notifies,
//! stops, suspends and resumes, with used-buffer interrupts on MSI-X eventfds (queue *i* on
//! vector *i* + 1).
//!
//! The [`NetDriver`] owns the ring contents; the [`PciDriver`] is used for registers only
//! (initialisation with the same ring layout, notifications when the ring says the device wants
//! them, status). Waits are
//! bounded: [`NetPciDriver::wait`] returns after its timeout whether or not an interrupt came,
//! so a suppressed notification (EVENT_IDX) only delays the next collection.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_pci::{PciDriver, PciError, QueueSetup};
use virtio_lm_queue::{RingFeatures, RingKind};
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

mod state;

pub use state::NetPciDriverState;

use super::announce::rarp_frame;
use super::config::{ctrl, features as nf, offset, status};
use super::driver::{NetDriver, NetDriverConfig, NetDriverError};
use super::workload::NetWorkload;

/// Why a [`NetPciDriver`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetPciError {
    /// Waiting on the interrupt eventfds failed.
    #[error("Interrupt wait: {0}")]
    Wait(#[source] io::Error),
    /// A control command was not answered in time.
    #[error("Control command not answered")]
    Timeout,
    /// The transport refused.
    #[error("Transport: {0}")]
    Pci(#[from] PciError),
    /// The ring-level driver failed.
    #[error("Driver: {0}")]
    Driver(#[from] NetDriverError),
}

/// Where and how the driver sets itself up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetPciConfig {
    /// Feature bits to ask for (masked by the device's offer).
    pub features: u64,
    /// Queue pairs the device has (`max_virtqueue_pairs`); used when MQ is negotiated.
    pub pairs: u16,
    /// Entries per queue.
    pub queue_size: u16,
    /// Bytes per receive buffer (see [`NetDriverConfig::rx_buf_len`]).
    pub rx_buf_len: u32,
    /// Guest address of the first ring.
    pub rings_at: u64,
    /// Guest address of the buffer area.
    pub buffers_at: u64,
}

/// One epoll over every interrupt eventfd.
fn interrupt_epoll(irqs: &[Arc<EventFd>]) -> Result<Epoll, NetPciError> {
    let epoll = Epoll::new().map_err(NetPciError::Wait)?;
    for fd in irqs {
        epoll
            .ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(NetPciError::Wait)?;
    }
    Ok(epoll)
}

/// The net driver over PCI. See the module documentation.
pub struct NetPciDriver<M: GuestMemory> {
    pci: PciDriver<M>,
    net: NetDriver,
    epoll: Epoll,
    irqs: Vec<Arc<EventFd>>,
    next_stream: u16,
    /// Frames on the transmit queues that are not the workload's (announcements): their
    /// completions are not counted as the workload's.
    untracked_tx: u64,
    /// ANNOUNCE_ACKs the device accepted.
    announce_acks: u64,
}

impl<M: GuestMemory> NetPciDriver<M> {
    /// Initialises the device behind `pci` (features, every queue, DRIVER_OK) and posts
    /// receive buffers on every pair. `irqs` are the MSI-X vector eventfds to wait on.
    pub fn new(
        mut pci: PciDriver<M>,
        config: NetPciConfig,
        irqs: Vec<Arc<EventFd>>,
    ) -> Result<Self, NetPciError> {
        let features = config.features & pci.device_features();
        let profile = pci.profile();
        let has = |f: Feature| profile.mask(f).is_some_and(|m| features & m != 0);
        let net_config = NetDriverConfig {
            kind: if has(Feature::RingPacked) {
                RingKind::Packed
            } else {
                RingKind::Split
            },
            ring: RingFeatures {
                event_idx: has(Feature::EventIdx),
                indirect_desc: has(Feature::IndirectDesc),
            },
            queue_size: config.queue_size,
            pairs: if features & nf::MQ != 0 {
                config.pairs.max(1)
            } else {
                1
            },
            ctrl: features & nf::CTRL_VQ != 0,
            mrg_rxbuf: features & nf::MRG_RXBUF != 0,
            rx_buf_len: config.rx_buf_len,
            rings_at: config.rings_at,
            buffers_at: config.buffers_at,
        };
        let net = NetDriver::new(&**pci.mem(), net_config)?;
        let setups: Vec<QueueSetup> = (0..net.num_queues())
            .filter_map(|i| {
                let qc = net.queue_config(i)?;
                Some(QueueSetup::new(i, qc.size, qc.desc_table.0))
            })
            .collect();
        pci.init(features, &setups)?;
        // `init` zeroed the rings again: the ring driver's fresh state still matches them.
        let epoll = interrupt_epoll(&irqs)?;
        let mut driver = Self {
            pci,
            net,
            epoll,
            irqs,
            next_stream: 0,
            untracked_tx: 0,
            announce_acks: 0,
        };
        driver.refill()?;
        Ok(driver)
    }

    /// The transport driver (stop, resume, suspend, ...).
    pub fn pci(&mut self) -> &mut PciDriver<M> {
        &mut self.pci
    }

    /// The ring-level driver.
    pub fn net(&mut self) -> &mut NetDriver {
        &mut self.net
    }

    /// Queue pairs set up.
    pub fn pairs(&self) -> u16 {
        let ctrl = u16::from(self.net.ctrl_queue().is_some());
        (self.net.num_queues() - ctrl) / 2
    }

    /// The device's MAC address (configuration offset 0).
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        self.pci.read_config(0, &mut mac);
        mac
    }

    /// Posts receive buffers on every pair and notifies where any were posted.
    pub fn refill(&mut self) -> Result<(), NetPciError> {
        for pair in 0..self.pairs() {
            let mem = self.pci.mem().clone();
            let queue = NetDriver::rx_queue(pair);
            if self.net.fill_rx(&*mem, pair)? > 0 && self.net.should_kick(&*mem, queue)? {
                self.pci.notify(queue)?;
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for any used-buffer interrupt; returns whether one came.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, NetPciError> {
        let mut events = [EpollEvent::default()];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let n = match self.epoll.wait(ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(NetPciError::Wait(e)),
        };
        for fd in &self.irqs {
            let _ = fd.read();
        }
        Ok(n > 0)
    }

    /// Executes a control command; returns its ack. Bounded by `timeout`.
    pub fn command(
        &mut self,
        class: u8,
        cmd: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<u8, NetPciError> {
        let mem = self.pci.mem().clone();
        let ctrl = self.net.ctrl_queue().ok_or(NetDriverError::NoQueue(0))?;
        let id = self
            .net
            .command(&*mem, class, cmd, data)?
            .ok_or(NetPciError::Timeout)?;
        if self.net.should_kick(&*mem, ctrl)? {
            self.pci.notify(ctrl)?;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(&(_, ack)) = self
                .net
                .collect_ctrl(&*mem)?
                .iter()
                .find(|(got, _)| *got == id)
            {
                return Ok(ack);
            }
            self.wait(Duration::from_millis(1))?;
        }
        Err(NetPciError::Timeout)
    }

    /// Collects transmit completions and received frames of every pair into `w` (verifying
    /// each echo), reposts receive buffers, then sends new frames round-robin over the pairs
    /// until `window` frames are outstanding. Returns the frames sent.
    pub fn step(&mut self, w: &mut NetWorkload, window: u64) -> Result<u64, NetPciError> {
        self.collect(w)?;
        let pairs = self.pairs();
        let mem = self.pci.mem().clone();
        let mut sent = 0;
        let mut touched = vec![false; usize::from(pairs)];
        while w.outstanding() < window {
            let stream = self.next_stream % pairs;
            // The frame is made only when the queue has room: nothing unsent is counted.
            let mut probe = w.clone();
            let frame = probe.next_frame(stream);
            if self.net.send(&*mem, stream, &frame)?.is_none() {
                break;
            }
            *w = probe;
            touched[usize::from(stream)] = true;
            self.next_stream = (stream + 1) % pairs;
            sent += 1;
        }
        for (pair, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            let queue = NetDriver::tx_queue(pair as u16);
            if self.net.should_kick(&*mem, queue)? {
                self.pci.notify(queue)?;
            }
        }
        Ok(sent)
    }

    /// The device's `status`.
    pub fn status(&self) -> u16 {
        let mut status = [0u8; 2];
        self.pci.read_config(offset::STATUS as u64, &mut status);
        u16::from_le_bytes(status)
    }

    /// ANNOUNCE_ACKs the device accepted so far (this driver and the ones it continues).
    pub fn announce_acks(&self) -> u64 {
        self.announce_acks
    }

    /// The driver's part of a configuration change (call it when the configuration vector
    /// fires): if VIRTIO_NET_F_GUEST_ANNOUNCE was negotiated and `status` shows
    /// VIRTIO_NET_S_ANNOUNCE, the driver announces itself with a gratuitous RARP from its
    /// MAC address on pair 0 and acknowledges with VIRTIO_NET_CTRL_ANNOUNCE_ACK (virtio spec
    /// 5.1.6.5.4), which clears the bit. Returns whether it acknowledged; the ack waits up to
    /// `timeout`.
    pub fn on_config_change(&mut self, timeout: Duration) -> Result<bool, NetPciError> {
        let wanted = nf::GUEST_ANNOUNCE | nf::CTRL_VQ;
        if self.pci.features() & wanted != wanted || self.status() & status::ANNOUNCE == 0 {
            return Ok(false);
        }
        let mem = self.pci.mem().clone();
        // A full transmit queue only skips the gratuitous frame: the device sent its own.
        if self.net.send(&*mem, 0, &rarp_frame(&self.mac()))?.is_some() {
            self.untracked_tx += 1;
            let queue = NetDriver::tx_queue(0);
            if self.net.should_kick(&*mem, queue)? {
                self.pci.notify(queue)?;
            }
        }
        let ack = self.command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[], timeout)?;
        if ack == ctrl::OK {
            self.announce_acks += 1;
        }
        Ok(ack == ctrl::OK)
    }

    /// Collects transmit completions and received frames into `w` and reposts buffers.
    pub fn collect(&mut self, w: &mut NetWorkload) -> Result<(), NetPciError> {
        let mem = self.pci.mem().clone();
        for pair in 0..self.pairs() {
            let n = self.net.collect_tx(&*mem, pair)? as u64;
            let untracked = n.min(self.untracked_tx);
            self.untracked_tx -= untracked;
            w.tx_completed(n - untracked);
            for frame in self.net.collect_rx(&*mem, pair)? {
                w.receive(&frame, pair);
            }
        }
        self.refill()
    }
}
