//! A core-level harness for the net tests: it programs a `DeviceCore` around a `Net` the way a
//! transport would, drives the library's `NetDriver` on guest memory, and pumps the device when
//! its wake eventfd fires (as a host worker would). Everything is on 127.0.0.1, every socket has
//! timeouts and every wait is bounded.

#![allow(dead_code)]

pub mod probe;
mod runner;

#[allow(unused_imports)]
pub use runner::{Runner, SocketDrops};

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_device::testing;
use virtio_lm_device::{DeviceCore, InterruptCounter, QuiesceMode};
use virtio_lm_devices::net::config::features as nf;
use virtio_lm_devices::net::driver::{NetDriver, NetDriverConfig};
use virtio_lm_devices::{Announcer, Net, NetOptions, NetStats};
use virtio_lm_queue::RingKind;
use virtio_lm_spec::Feature;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

#[allow(unused_imports)]
pub use virtio_lm_device::testing::{bit, DirtyMem as Mem, TestCore, RUNNING, SETUP};

pub const MEM_SIZE: usize = 0x100_0000;
pub const RINGS_AT: u64 = 0x1000;
pub const BUFFERS_AT: u64 = 0x10_0000;

/// Longest a test waits for anything.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

pub fn memory() -> Arc<Mem> {
    Arc::new(Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap())
}

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A plain UDP socket on 127.0.0.1 standing in for the peer, with timeouts.
pub fn peer_socket() -> UdpSocket {
    let s = UdpSocket::bind(localhost()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Options for a device whose peer is `remote`.
pub fn options(remote: SocketAddr) -> NetOptions {
    NetOptions {
        queue_size: 64,
        ..NetOptions::new(MAC, localhost(), remote)
    }
}

/// An Ethernet frame `dst`, `src`, EtherType, payload.
pub fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The same with an 802.1Q tag for `vid`.
pub fn tagged(dst: [u8; 6], vid: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&0x88b6u16.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Drives one `DeviceCore` around a `Net`.
pub struct NetRig {
    // The device side: the core around the `Net`, how it quiesces, and its interrupts.
    pub mem: Arc<Mem>,
    pub core: DeviceCore<Mem>,
    pub mode: QuiesceMode,
    pub irq: Arc<InterruptCounter>,
    // The driver side.
    pub driver: Option<NetDriver>,
    pub features: u64,
    pub max_pairs: u16,
    // Handles into the `Net`, taken before the core owned it.
    pub wake: Arc<EventFd>,
    pub stats: Arc<NetStats>,
    pub announcer: Announcer,
    pub local: SocketAddr,
}

impl NetRig {
    pub fn new(options: NetOptions, mode: QuiesceMode) -> Self {
        Self::with_mem(options, mode, memory())
    }

    /// A core around a new `Net` on existing memory (a migration destination).
    pub fn with_mem(options: NetOptions, mode: QuiesceMode, mem: Arc<Mem>) -> Self {
        let max_pairs = options.queue_pairs;
        let net = Net::new(options).unwrap();
        let (wake, stats, announcer, local) = (
            net.wake_fd(),
            net.stats(),
            net.announcer(),
            net.local_addr(),
        );
        let (core, irq) = testing::core_with_mode(Box::new(net), mem.clone(), mode);
        Self {
            mem,
            core,
            mode,
            irq,
            driver: None,
            features: 0,
            max_pairs,
            wake,
            stats,
            announcer,
            local,
        }
    }

    /// Every offered feature, minus RING_PACKED unless `packed`, minus EVENT_IDX unless
    /// `event_idx`.
    pub fn all_features(&self, packed: bool, event_idx: bool) -> u64 {
        let mut f = self.core.device_features();
        if !packed {
            f &= !bit(Feature::RingPacked);
        }
        if !event_idx {
            f &= !bit(Feature::EventIdx);
        }
        f
    }

    /// The ring format the negotiated features select.
    pub fn kind(&self) -> RingKind {
        if self.features & bit(Feature::RingPacked) != 0 {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    pub fn negotiate(&mut self, features: u64) {
        testing::negotiate(&mut self.core, features);
        self.features = features;
    }

    /// The driver configuration the negotiated features give, with `rx_buf_len`.
    pub fn driver_config(&self, rx_buf_len: u32) -> NetDriverConfig {
        let f = self.features;
        NetDriverConfig {
            kind: self.kind(),
            ring: testing::ring_features(&self.core, f),
            queue_size: self.core.queue(0).unwrap().max_size,
            pairs: if f & nf::MQ != 0 { self.max_pairs } else { 1 },
            ctrl: f & nf::CTRL_VQ != 0,
            mrg_rxbuf: f & nf::MRG_RXBUF != 0,
            rx_buf_len,
            rings_at: RINGS_AT,
            buffers_at: BUFFERS_AT,
        }
    }

    /// Programs the queue registers for the driver's queues.
    pub fn program_queues(&mut self) {
        let driver = self.driver.as_ref().unwrap();
        for index in 0..driver.num_queues() {
            let config = driver.queue_config(index).unwrap();
            testing::program_queue(&mut self.core, index, &config);
        }
    }

    /// The whole initialisation, DRIVER_OK, and receive buffers posted on every pair.
    pub fn start(&mut self, features: u64, rx_buf_len: u32) {
        self.start_bare(features, rx_buf_len);
        self.fill_rx_all();
    }

    /// The whole initialisation and DRIVER_OK, no receive buffer posted.
    pub fn start_bare(&mut self, features: u64, rx_buf_len: u32) {
        self.negotiate(features);
        let config = self.driver_config(rx_buf_len);
        self.driver = Some(NetDriver::new(&*self.mem, config).unwrap());
        self.program_queues();
        self.core.write_status(RUNNING);
        assert_eq!(self.core.status(), RUNNING, "device running");
    }

    /// Starts with every feature (split, EVENT_IDX) and 2048-byte receive buffers.
    pub fn start_default(&mut self) -> u64 {
        let f = self.all_features(false, true);
        self.start(f, 2048);
        f
    }

    pub fn driver(&mut self) -> &mut NetDriver {
        self.driver.as_mut().unwrap()
    }

    pub fn pairs(&self) -> u16 {
        if self.features & nf::MQ != 0 {
            self.max_pairs
        } else {
            1
        }
    }

    /// Posts receive buffers on every pair and kicks where any were posted.
    pub fn fill_rx_all(&mut self) {
        for pair in 0..self.pairs() {
            let mem = self.mem.clone();
            if self.driver().fill_rx(&*mem, pair).unwrap() > 0 {
                self.core.kick(NetDriver::rx_queue(pair));
            }
        }
    }

    /// Lets the device take what arrived (as a worker does on the wake eventfd).
    pub fn pump(&mut self) {
        let _ = self.wake.read();
        self.core.process_pending();
    }

    /// Sends `frame` on `pair` and kicks; false if the queue was full.
    pub fn send(&mut self, pair: u16, frame: &[u8]) -> bool {
        let mem = self.mem.clone();
        let sent = self.driver().send(&*mem, pair, frame).unwrap().is_some();
        self.core.kick(NetDriver::tx_queue(pair));
        sent
    }

    /// Executes one control command and returns its ack.
    pub fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let mem = self.mem.clone();
        let id = self
            .driver()
            .command(&*mem, class, cmd, data)
            .unwrap()
            .unwrap();
        let ctrl = self.driver().ctrl_queue().unwrap();
        self.core.kick(ctrl);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let done = self.driver().collect_ctrl(&*mem).unwrap();
            if let Some(&(got, ack)) = done.first() {
                assert_eq!(got, id);
                return ack;
            }
            assert!(Instant::now() < deadline, "control command not answered");
            std::thread::sleep(Duration::from_micros(100));
            self.pump();
        }
    }

    /// Collects frames received on `pair` (reposting buffers) until `n` arrived or `wait`
    /// passed.
    pub fn receive(&mut self, pair: u16, n: usize, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mem = self.mem.clone();
        let mut frames = Vec::new();
        loop {
            frames.extend(self.driver().collect_rx(&*mem, pair).unwrap());
            if self.driver().fill_rx(&*mem, pair).unwrap() > 0 {
                self.core.kick(NetDriver::rx_queue(pair));
            }
            if frames.len() >= n || Instant::now() >= deadline {
                return frames;
            }
            std::thread::sleep(Duration::from_micros(200));
            self.pump();
        }
    }

    /// Collects transmit completions on `pair`.
    pub fn collect_tx(&mut self, pair: u16) -> usize {
        let mem = self.mem.clone();
        self.driver().collect_tx(&*mem, pair).unwrap()
    }

    pub fn config(&self, offset: usize, len: usize) -> Vec<u8> {
        self.core.config_bytes(offset, len)
    }

    pub fn needs_reset(&mut self) -> bool {
        self.core.broken()
    }

    /// A destination on the same memory: a fresh `Net` with `options`, the driver carried
    /// over, the same features, the queue states installed, DRIVER_OK (seed 001 flow).
    pub fn migrate(&mut self, options: NetOptions, mode: QuiesceMode) -> NetRig {
        let states = self.core.queue_states();
        let mut dest = NetRig::with_mem(options, mode, self.mem.clone());
        dest.driver = self.driver.take();
        dest.negotiate(self.features);
        dest.program_queues();
        dest.core.resume_with(states);
        dest
    }

    /// Moves a stopped device to a fresh `Net` with `options` and a fresh core on the same
    /// memory through the device context (seed 004 flow), and announces it there: the
    /// announcement waits for the resume. The destination is returned stopped.
    pub fn migrate_context(&mut self, options: NetOptions) -> NetRig {
        let ctx = self
            .core
            .save_context()
            .expect("context of a stopped device");
        let mode = self.mode;
        let mut dest = NetRig::with_mem(options, mode, self.mem.clone());
        dest.driver = self.driver.take();
        dest.features = self.features;
        dest.core.restore_context(&ctx).expect("restore");
        let announcer = dest.announcer.clone();
        announcer.announce(&mut dest.core);
        dest
    }

    /// FNV checksum of the guest memory the device may write (rings and buffers).
    pub fn device_area_checksum(&self) -> u64 {
        let end = self.driver.as_ref().unwrap().buffers_end() as usize;
        testing::checksum_of(&*self.mem, 0, end)
    }
}

/// Receives one datagram on `socket` (None on timeout).
pub fn recv(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

/// Everything `peer` receives within `wait` (its usual read timeout restored after).
pub fn drain_peer(peer: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    peer.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    while let Some((f, _)) = recv(peer) {
        got.push(f);
    }
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    got
}

/// A draining device whose peer is the socket `peer`.
pub fn rig_on(peer: &UdpSocket) -> NetRig {
    NetRig::new(options(peer.local_addr().unwrap()), QuiesceMode::Drain)
}

/// Sends each of `frames` from `peer` to the device at `to`.
pub fn send_frames(peer: &UdpSocket, to: SocketAddr, frames: &[Vec<u8>]) {
    for f in frames {
        peer.send_to(f, to).unwrap();
    }
}

/// A draining device on `peer` and the features to start it with: every offered one except
/// MRG_RXBUF (and RING_PACKED / EVENT_IDX as `packed` / `event_idx` say).
pub fn rig_without_mrg(peer: &UdpSocket, packed: bool, event_idx: bool) -> (NetRig, u64) {
    let rig = rig_on(peer);
    let f = rig.all_features(packed, event_idx) & !nf::MRG_RXBUF;
    (rig, f)
}
