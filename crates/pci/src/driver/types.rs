//! The values the driver's API takes and returns.

use std::sync::Arc;
use std::time::Duration;

use virtio_lm_queue::BufferSpec;
use vm_memory::GuestAddress;

use crate::transport::PciTransport;

/// How one queue is set up by [`PciDriver::init`](crate::PciDriver::init).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSetup {
    /// Queue index.
    pub index: u16,
    /// Queue size (at most the device's maximum; a power of 2 for split rings).
    pub size: u16,
    /// Where the ring is laid out in guest memory ([`QueueConfig::contiguous`](virtio_lm_queue::QueueConfig::contiguous) from here).
    pub base: GuestAddress,
    /// MSI-X vector for the queue's used-buffer notifications ([`VIRTIO_MSI_NO_VECTOR`](virtio_lm_spec::pci::VIRTIO_MSI_NO_VECTOR): INTx).
    pub msix_vector: u16,
    /// Seed 001 queue state to set between FEATURES_OK and DRIVER_OK. A fresh ring is zeroed,
    /// so only the initial state is consistent with it; [`PciDriver::restore_onto`](crate::PciDriver::restore_onto) is the
    /// migration path that keeps ring contents.
    pub state: Option<QueueStateRegs>,
}

impl QueueSetup {
    /// Queue `index` of `size` entries at `base`, notified on MSI-X vector `index + 1` (vector
    /// 0 is the configuration vector), no explicit state.
    pub fn new(index: u16, size: u16, base: u64) -> Self {
        Self {
            index,
            size,
            base: GuestAddress(base),
            msix_vector: index.wrapping_add(1),
            state: None,
        }
    }

    /// The same setup with used-buffer notifications on `vector`.
    pub fn with_vector(mut self, vector: u16) -> Self {
        self.msix_vector = vector;
        self
    }

    /// The same setup with an explicit seed 001 state.
    pub fn with_state(mut self, avail: u16, used: u16) -> Self {
        self.state = Some(QueueStateRegs { avail, used });
        self
    }
}

/// The seed 001 state registers of one queue (`queue_avail_state`, `queue_used_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStateRegs {
    /// Available state (split: last_avail_idx; packed: index | wrap << 15).
    pub avail: u16,
    /// Used state (packed: index | wrap << 15; split: 0).
    pub used: u16,
}

/// What [`PciDriver::save_state`](crate::PciDriver::save_state) reads from a device that is not running, for
/// [`PciDriver::restore_onto`](crate::PciDriver::restore_onto).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedState {
    /// The negotiated features.
    pub features: u64,
    /// Per set-up queue: index and state.
    pub queues: Vec<(u16, QueueStateRegs)>,
    /// The configuration generation when saved.
    pub config_generation: u8,
}

/// A chain the driver had made available and not seen used, as returned by
/// [`PciDriver::recover_from_needs_reset`](crate::PciDriver::recover_from_needs_reset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutstandingChain {
    /// Queue index.
    pub queue: u16,
    /// The chain's id before the reset.
    pub id: u16,
    /// Its buffers, to be added again.
    pub buffers: Vec<BufferSpec>,
}

/// How long the driver re-reads the status waiting for the device (reset, stop, suspend,
/// resume). The first `spins` reads follow each other at once; later ones wait `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    /// Status reads before giving up with [`PciError::Timeout`](crate::PciError::Timeout).
    pub attempts: u32,
    /// Reads made without waiting.
    pub spins: u32,
    /// Wait between later reads.
    pub interval: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            attempts: 2000,
            spins: 64,
            interval: Duration::from_micros(50),
        }
    }
}

/// Notifies one queue with a 16-bit index write (which the function accepts with or without
/// VIRTIO_F_NOTIFICATION_DATA); cheap to clone and usable from another thread
/// while the driver is busy (e.g. a thread that kicks continuously).
#[derive(Clone)]
pub struct Notifier {
    pub(super) transport: Arc<dyn PciTransport>,
    pub(super) address: u64,
    pub(super) queue: u16,
}

impl Notifier {
    /// Writes the queue index to the queue's notify address.
    pub fn notify(&self) {
        self.transport
            .write(self.address, &self.queue.to_le_bytes());
    }

    /// The BAR 0 address written.
    pub fn address(&self) -> u64 {
        self.address
    }
}
