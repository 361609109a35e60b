//! Announcing the device after a migration: the state shared between a [`Net`](super::Net)
//! and its [`Announcer`], and the gratuitous frame.
//!
//! An announcement is a device-side configuration change, so it goes through
//! [`DeviceCore::change_config`]: applied at once on a running device, held back while the device
//! is stopped or suspended and applied (and notified) when it resumes. Applying it
//!
//! - sets VIRTIO_NET_S_ANNOUNCE in `status` if the driver negotiated VIRTIO_NET_F_GUEST_ANNOUNCE
//!   (and the control queue), so the driver announces itself and acknowledges with
//!   VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears the bit (virtio spec 5.1.6.5.4); the core sends
//!   the configuration change notification;
//! - and sends one gratuitous RARP broadcast from the device's MAC address through the tunnel,
//!   as QEMU's self-announcement does (`qemu_announce_self`), so the peer learns the device's
//!   new tunnel address from the first frame the device sends after the move.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_lm_device::{DeviceCore, VirtioDevice};
use vm_memory::GuestMemory;

use super::backend::send_frame;
use super::filter::Mac;
use super::stats::NetStats;

/// EtherType of RARP.
pub const ETH_P_RARP: u16 = 0x8035;

/// Length of the gratuitous frame (the Ethernet minimum without FCS).
const RARP_FRAME_LEN: usize = 60;

/// Device state an [`Announcer`] reaches while the device is inside a core.
#[derive(Debug)]
pub(crate) struct Shared {
    mac: Mutex<Mac>,
    /// VIRTIO_NET_S_ANNOUNCE.
    announce: AtomicBool,
    /// GUEST_ANNOUNCE and CTRL_VQ were negotiated at the last activation.
    guest_announce: AtomicBool,
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    stats: Arc<NetStats>,
}

impl Shared {
    pub(crate) fn new(
        mac: Mac,
        socket: Arc<UdpSocket>,
        remote: SocketAddr,
        stats: Arc<NetStats>,
    ) -> Self {
        Self {
            mac: Mutex::new(mac),
            announce: AtomicBool::new(false),
            guest_announce: AtomicBool::new(false),
            socket,
            remote,
            stats,
        }
    }

    pub(crate) fn mac(&self) -> Mac {
        *self.mac.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_mac(&self, mac: Mac) {
        *self.mac.lock().unwrap_or_else(PoisonError::into_inner) = mac;
    }

    pub(crate) fn announcing(&self) -> bool {
        self.announce.load(Ordering::SeqCst)
    }

    pub(crate) fn set_announcing(&self, on: bool) {
        self.announce.store(on, Ordering::SeqCst);
    }

    pub(crate) fn set_guest_announce(&self, on: bool) {
        self.guest_announce.store(on, Ordering::SeqCst);
    }

    /// Applies an announcement (see the module documentation).
    pub(crate) fn announce_now(&self) {
        if self.guest_announce.load(Ordering::SeqCst) {
            self.set_announcing(true);
        }
        let frame = rarp_frame(&self.mac());
        match send_frame(&self.socket, self.remote, &frame) {
            Ok(()) => self.stats.add_announces(1),
            Err(_) => self.stats.add_tx_errors(1),
        }
    }
}

/// Triggers announcements of a [`Net`](super::Net) that lives inside a [`DeviceCore`]. Take it
/// with [`Net::announcer`](super::Net::announcer) before the device moves into the core.
#[derive(Clone, Debug)]
pub struct Announcer {
    shared: Arc<Shared>,
}

impl Announcer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Announces the device through `core` (the core that holds it): call it on the host that
    /// resumes the device after a migration, before or after resuming it. While the device is
    /// stopped or suspended the announcement waits for the resume, as every device-side
    /// configuration change does.
    pub fn announce<M: GuestMemory + Send + Sync + 'static>(&self, core: &mut DeviceCore<M>) {
        let shared = self.shared.clone();
        core.change_config(move |_: &mut dyn VirtioDevice<M>| shared.announce_now());
    }
}

/// The gratuitous frame: a RARP "reverse request" broadcast naming `mac` as sender and target,
/// padded to 60 bytes, as QEMU's `announce_self_create`.
pub fn rarp_frame(mac: &Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(RARP_FRAME_LEN);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ETH_P_RARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f.extend_from_slice(&[6, 4]); // address lengths
    f.extend_from_slice(&3u16.to_be_bytes()); // opcode: reverse request
    f.extend_from_slice(mac); // sender hardware address
    f.extend_from_slice(&[0; 4]); // sender protocol address
    f.extend_from_slice(mac); // target hardware address
    f.extend_from_slice(&[0; 4]); // target protocol address
    f.resize(RARP_FRAME_LEN, 0);
    f
}
