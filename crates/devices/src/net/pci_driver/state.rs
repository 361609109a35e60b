//! The net PCI driver's own state as data ([`NetPciDriverState`]): the transport driver's
//! state, the ring-level driver and the next transmit stream — what a guest carries to another
//! process besides guest memory. Restoring checks it all before the driver is built.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_lm_pci::{DriverState, PciDriver, PciTransport};
use virtio_lm_spec::Profile;
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use super::{interrupt_epoll, NetPciDriver, NetPciError};
use crate::net::driver::NetDriver;

/// A [`NetPciDriver`]'s state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetPciDriverState {
    /// The transport driver.
    pub pci: DriverState,
    /// The ring-level driver.
    pub net: NetDriver,
    /// The pair the next frame goes out on.
    pub next_stream: u16,
    /// Announcement frames whose transmit completion is not collected yet.
    pub untracked_tx: u64,
    /// ANNOUNCE_ACKs the device accepted.
    pub announce_acks: u64,
}

impl<M: GuestMemory> NetPciDriver<M> {
    /// The driver's state.
    pub fn state(&self) -> NetPciDriverState {
        NetPciDriverState {
            pci: self.pci.driver_state(),
            net: self.net.clone(),
            next_stream: self.next_stream,
            untracked_tx: self.untracked_tx,
            announce_acks: self.announce_acks,
        }
    }

    /// A driver continuing from `state` over the function behind `transport`, rings in `mem`,
    /// waiting on the interrupt eventfds `irqs`. Nothing is built unless the ring-level driver
    /// passes [`NetDriver::check_restored`] and the transport driver's state its own checks.
    pub fn from_state(
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
        profile: Profile,
        state: NetPciDriverState,
        irqs: Vec<Arc<EventFd>>,
    ) -> Result<Self, NetPciError> {
        state.net.check_restored(&*mem)?;
        let pci = PciDriver::from_state(transport, mem, profile, state.pci)?;
        Ok(Self {
            pci,
            net: state.net,
            epoll: interrupt_epoll(&irqs)?,
            irqs,
            next_stream: state.next_stream,
            untracked_tx: state.untracked_tx,
            announce_acks: state.announce_acks,
        })
    }
}
