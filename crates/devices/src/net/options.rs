//! How a [`Net`](super::Net) is built: its address, its tunnel, its queues, fault injection.

use std::net::SocketAddr;

use crate::blk::Gate;

/// Options of a virtio-net device.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// The device's MAC address (configuration `mac`, VIRTIO_NET_F_MAC). Must be unicast.
    pub mac: [u8; 6],
    /// Local UDP address of the tunnel (port 0: any free port; see
    /// [`Net::local_addr`](super::Net::local_addr)).
    pub local: SocketAddr,
    /// The UDP peer frames are sent to (one Ethernet frame per datagram).
    pub remote: SocketAddr,
    /// `max_virtqueue_pairs`, 1..=[`MAX_QUEUE_PAIRS`](super::config::MAX_QUEUE_PAIRS);
    /// VIRTIO_NET_F_MQ is offered when above 1.
    pub queue_pairs: u16,
    /// Maximum size of every queue, 2..=32768.
    pub queue_size: u16,
    /// Offer VIRTIO_NET_F_MRG_RXBUF.
    pub mrg_rxbuf: bool,
    /// Injected faults.
    pub faults: NetFaults,
}

impl NetOptions {
    /// One queue pair of 256 entries, MRG_RXBUF offered, the given tunnel ends.
    pub fn new(mac: [u8; 6], local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            mac,
            local,
            remote,
            queue_pairs: 1,
            queue_size: 256,
            mrg_rxbuf: true,
            faults: NetFaults::default(),
        }
    }
}

/// Fault injection of the datagram backend.
#[derive(Clone, Debug, Default)]
pub struct NetFaults {
    /// While this gate is closed the tunnel behaves as if the socket's send buffer were full:
    /// transmit chains already taken are held (not sent, not used) until it opens, which is
    /// what a drain has to wait for and what a record-in-flight stop hands over.
    pub tx_gate: Option<Gate>,
}
