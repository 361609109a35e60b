//! virtio-net (device id 1, virtio spec 5.1) over a UDP datagram tunnel, with the control
//! queue, multiple queue pairs, announcement after a migration, and both ways of quiescing.
//!
//! # Queues
//!
//! receiveq*k* is queue 2*k*, transmitq*k* queue 2*k*+1, and the control queue comes last:
//! queue 2×`max_virtqueue_pairs` with VIRTIO_NET_F_MQ, queue 2 without it (virtio spec 5.1.2).
//! The core is built with 2×`max_virtqueue_pairs`+1 queues either way.
//!
//! # Taking chains
//!
//! The core processes a kicked queue until the device takes nothing more from it (it re-arms
//! driver notifications and goes round again while the device is taking buffers). Transmit,
//! control and unused queues take every chain the driver made available; what cannot be sent
//! yet is held (transmit frames while the socket is busy). A receive queue is different: a
//! receive buffer is taken only when a frame is ready to go into it (spec-decisions §7), so a
//! receive buffer is never held empty and never returned empty.
//!
//! # Transmit path
//!
//! `process_queue` on a transmit queue takes chains, checks them (device-readable only, a
//! 12-byte `virtio_net_hdr_v1` then a frame of 14..=1518 bytes), strips the header and sends the
//! frame as one datagram to the peer, then returns the chain used. A malformed chain is
//! returned unsent and counted. When the socket cannot take a frame (send buffer full, or the
//! test gate [`NetFaults::tx_gate`] closed) that chain and every later one of the queue are
//! held, in order, and retried from every processing call; the tunnel's thread signals
//! [`Net::wake_fd`] every 20 ms while frames are held.
//!
//! # Receive path
//!
//! A thread reads datagrams (one frame each) into a bounded channel and signals
//! [`Net::wake_fd`]. The device takes frames from the channel into a backlog per queue pair
//! (at most 64 frames over all pairs), choosing the pair by
//! automatic receive steering (`steer.rs`, virtio spec 5.1.6.5.5). For the frame at the head
//! of a pair's backlog — in `process_queue` of the receive queue and in `poll` — the receive
//! filter (RX mode, MAC table, VLAN table, `filter.rs`) is applied, then the buffers it needs
//! are taken (one, or with VIRTIO_NET_F_MRG_RXBUF as many as its length needs) and the header
//! (`num_buffers` = the buffers used; always 1 without MRG_RXBUF) and the frame written. While
//! the driver has posted no buffer a frame waits in the backlog; when backlog and channel are
//! full the tunnel drops new frames and counts them ([`NetStats::rx_dropped_no_buffer`]), as a
//! NIC drops frames with no descriptor.
//!
//! Receive buffers are held across processing calls only when taken for a frame that could
//! not be finished: a mergeable frame whose ring ran out of buffers part-way (it is finished
//! when more are posted), and chains handed over in flight by the core (they take the next
//! frames). Without MRG_RXBUF a buffer too small for the frame at the head is kept for the
//! next frame and that frame dropped (counted as malformed): the driver should post buffers of
//! at least 1526 bytes (virtio spec 5.1.6.3.1).
//!
//! `poll` finds each queue's access by its index
//! ([`QueueAccess::find`](virtio_lm_device::QueueAccess::find)).
//!
//! # Quiescing
//!
//! Nothing is ever half-done: held transmit frames are unsent, held receive buffers unwritten.
//!
//! - [`QuiesceMode::Drain`]: `Pending` until `poll` has sent every held transmit frame and
//!   finished every receive frame in process (a mergeable frame with buffers already taken
//!   takes the further buffers it needs; no new frame is started), so a destination that only
//!   gets the queue state registers (seed 001) loses no buffer and no receive buffer comes back
//!   empty. After [`DRAIN_LIMIT`] of a socket that takes nothing (or a ring with no buffer to
//!   finish a frame), what is still held is left in flight as below. Receive buffers held
//!   with no frame in process (chains handed over in flight) stay in flight too.
//! - [`QuiesceMode::RecordInflight`]: everything held is forgotten at once and stays in the
//!   queues' in-flight lists (saved with the queue state).
//!
//! When a queue starts or resumes, the core hands its in-flight chains over once
//! ([`VirtioDevice::adopt_inflight`](virtio_lm_device::VirtioDevice::adopt_inflight)):
//! transmit chains are sent (exactly once: they were never sent before), receive chains held
//! for the next frames, control commands executed. The device keeps no flag of its own for it.
//!
//! # Control queue and device context
//!
//! Every command of the classes RX, MAC, VLAN, ANNOUNCE and MQ (virtio spec 5.1.6.5) is
//! executed at once (`ctrl.rs`), acknowledged OK or ERR; a rejected command changes nothing. A
//! control chain without a device-writable byte cannot be acknowledged: `process_queue` returns
//! a [`DeviceError`] and the core sets DEVICE_NEEDS_RESET. The state the commands set is the
//! device context's net part (spec-decisions §5), saved by `save_state` as five mandatory fields,
//! each exactly once, values ours:
//!
//! | Type | Name | Value |
//! |---|---|---|
//! | 0x0300 | NET_RX_MODE | `u8`: bit *n* = RX command *n* on (PROMISC 0, ALLMULTI 1, ALLUNI 2, NOMULTI 3, NOUNI 4, NOBCAST 5) |
//! | 0x0301 | NET_MAC_TABLE | `u8 mac[6]` (the device address, ADDR_SET); `u8 flags` (bit 0 unicast, bit 1 multicast overflow); `u8 reserved`; `le16 unicast`; `le16 multicast`; `u8 macs[][6]` |
//! | 0x0302 | NET_VLAN_TABLE | `u8 vids[512]`, bit *v % 8* of byte *v / 8* = VLAN *v* |
//! | 0x0303 | NET_MQ_PAIRS | `le16`, 1..=`max_virtqueue_pairs` |
//! | 0x0304 | NET_ANNOUNCE | `u8`: 1 = VIRTIO_NET_S_ANNOUNCE set, ANNOUNCE_ACK pending |
//!
//! `validate_state` checks every length, value, reserved bit and the framing (unknown optional
//! fields are skipped); a rejected `restore_state` changes nothing.
//!
//! # Announcing
//!
//! See [`Announcer`]: after a move, whoever resumes the device calls
//! [`Announcer::announce`] on its core.

mod announce;
mod backend;
pub mod config;
mod ctrl;
mod device;
pub mod driver;
pub mod echo;
mod filter;
mod options;
mod parts;
pub mod pci_driver;
mod rx;
mod state;
mod stats;
mod steer;
mod tx;
pub mod workload;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use virtio_lm_device::{ChainFault, DeviceError, QuiesceMode};
use vmm_sys_util::eventfd::EventFd;

pub use announce::{rarp_frame, Announcer, ETH_P_RARP};
pub use device::DRAIN_LIMIT;
pub use options::{NetFaults, NetOptions};
pub use parts::NetParts;
pub use stats::NetStats;

use announce::Shared;
use backend::Backend;
use config::{features, MAX_QUEUE_PAIRS};
use filter::{is_multicast, Filter, MacTable, RxMode, VlanTable};
use rx::RxPair;
use steer::Steering;
use tx::HeldTx;

/// Why a [`Net`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An option is out of range.
    #[error("Invalid option: {0}")]
    Options(&'static str),
    /// The tunnel socket, its thread or the wake eventfd could not be set up.
    #[error("Cannot start the datagram tunnel on {local}: {source}")]
    Backend {
        /// The local address asked for.
        local: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Drop for Net {
    /// Counts the frames that will never be delivered (after a migration, the source's).
    fn drop(&mut self) {
        self.backend.shutdown();
        let n = self.undelivered();
        self.stats.add_rx_discarded(n);
    }
}

/// What a queue is for, under the negotiated features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Rx(u16),
    Tx(u16),
    Ctrl,
    Unused,
}

/// The virtio-net device type. See the module documentation for the design.
pub struct Net {
    initial_mac: [u8; 6],
    max_pairs: u16,
    queue_size: u16,
    mrg_rxbuf: bool,
    backend: Backend,
    shared: Arc<Shared>,
    stats: Arc<NetStats>,
    /// Features negotiated at the last activation.
    features: u64,
    mode: RxMode,
    macs: MacTable,
    vlans: VlanTable,
    /// Queue pairs in use (MQ VQ_PAIRS_SET).
    pairs: u16,
    steering: Steering,
    /// Queues of the device: 2×`max_pairs` + 1.
    num_queues: usize,
    rx: Vec<RxPair>,
    tx_held: std::collections::VecDeque<HeldTx>,
    /// A stop or suspend asked for quiescence; cleared when processing resumes.
    quiescing: Option<QuiesceMode>,
    /// When a drain began.
    drain_started: Option<std::time::Instant>,
    /// Who sees each control command and its acknowledgement ([`ControlTap`]).
    tap: Option<Arc<dyn ControlTap>>,
}

/// Sees every control-queue command the device executes, with its outcome, and every device
/// reset: where a vDPA hypervisor's shadow control virtqueue sits (it forwards the guest's
/// commands and reads the device's acknowledgements), so it can keep the device state the
/// registers do not show and replay it into a destination device (spec-decisions §21).
pub trait ControlTap: Send + Sync {
    /// The device executed `class`/`cmd` with `data`; `accepted` if it acknowledged OK.
    fn command(&self, class: u8, cmd: u8, data: &[u8], accepted: bool);
    /// The device was reset: its control state is back to the defaults.
    fn reset(&self);
}

impl Net {
    /// Binds the tunnel's socket and starts its receiver thread.
    pub fn new(options: NetOptions) -> Result<Self, NetError> {
        if is_multicast(&options.mac) {
            return Err(NetError::Options("mac must be a unicast address"));
        }
        if !(1..=MAX_QUEUE_PAIRS).contains(&options.queue_pairs) {
            return Err(NetError::Options("queue_pairs must be in 1..=16"));
        }
        if !(2..=32768).contains(&options.queue_size) {
            return Err(NetError::Options("queue_size must be in 2..=32768"));
        }
        let stats = Arc::new(NetStats::default());
        let backend = Backend::start(
            options.local,
            options.remote,
            options.faults.tx_gate.clone(),
            stats.clone(),
        )
        .map_err(|source| NetError::Backend {
            local: options.local,
            source,
        })?;
        let shared = Arc::new(Shared::new(
            options.mac,
            backend.socket().clone(),
            backend.remote(),
            stats.clone(),
        ));
        let pairs = usize::from(options.queue_pairs);
        Ok(Self {
            initial_mac: options.mac,
            max_pairs: options.queue_pairs,
            queue_size: options.queue_size,
            mrg_rxbuf: options.mrg_rxbuf,
            backend,
            shared,
            stats,
            features: 0,
            mode: RxMode::default(),
            macs: MacTable::default(),
            vlans: VlanTable::default(),
            pairs: 1,
            steering: Steering::default(),
            num_queues: 2 * pairs + 1,
            rx: (0..pairs).map(|_| RxPair::default()).collect(),
            tx_held: Default::default(),
            quiescing: None,
            drain_started: None,
            tap: None,
        })
    }

    /// Installs `tap`, which from now on sees every control command and reset.
    pub fn set_control_tap(&mut self, tap: Arc<dyn ControlTap>) {
        self.tap = Some(tap);
    }

    /// The tunnel's local address (the port actually bound when the options asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        // The socket is bound: only a closed socket fails here, and it is never closed.
        self.backend
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The eventfd signalled when frames arrive (and every 20 ms while transmit frames are held
    /// for a busy socket). Non-blocking; give it to `Worker::spawn_with_wakers`, which calls
    /// `DeviceCore::service` when it is signalled. Take it before the device moves into a core.
    pub fn wake_fd(&self) -> Arc<EventFd> {
        self.backend.wake().clone()
    }

    /// The device's counters (shared: they stay readable after the device moves into a core).
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    /// The handle that announces this device once it is inside a core (see [`Announcer`]).
    pub fn announcer(&self) -> Announcer {
        Announcer::new(self.shared.clone())
    }

    /// Queue pairs the negotiated features give the driver.
    fn data_pairs(&self) -> u16 {
        if self.features & features::MQ != 0 {
            self.max_pairs
        } else {
            1
        }
    }

    /// Queue pairs receive steering may use now.
    fn active_pairs(&self) -> u16 {
        if self.features & features::MQ != 0 {
            self.pairs.clamp(1, self.max_pairs)
        } else {
            1
        }
    }

    fn role(&self, index: u16) -> Role {
        let pairs = self.data_pairs();
        if self.features & features::CTRL_VQ != 0 && index == 2 * pairs {
            Role::Ctrl
        } else if index < 2 * pairs {
            if index.is_multiple_of(2) {
                Role::Rx(index / 2)
            } else {
                Role::Tx(index / 2)
            }
        } else {
            Role::Unused
        }
    }

    /// The receive filter as programmed, for a device whose address is `own`.
    fn filter<'a>(&'a self, own: &'a [u8; 6]) -> Filter<'a> {
        Filter {
            mode: &self.mode,
            macs: &self.macs,
            vlans: (self.features & features::CTRL_VLAN != 0).then_some(&self.vlans),
            own,
        }
    }

    /// Frames taken from the tunnel or waiting in its channel, not delivered.
    fn undelivered(&mut self) -> u64 {
        let mut n: usize = self.rx.iter().map(|rx| rx.backlog.len()).sum();
        while self.backend.try_recv().is_some() {
            n += 1;
        }
        n as u64
    }

    /// Forgets held receive chains: they stay in flight and the core hands them back when the
    /// queue resumes.
    fn forget_rx_held(&mut self) {
        for rx in &mut self.rx {
            rx.held.clear();
        }
    }

    /// An error for a chain the device cannot even answer.
    fn unanswerable(id: u16, fault: ChainFault) -> DeviceError {
        DeviceError::MalformedChain { id, fault }
    }
}
