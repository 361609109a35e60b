//! Per-queue registers, the seed 001 queue state kept across reset, and the live queue.

use virtio_lm_queue::{QueueConfig, QueueState, RingFeatures, RingKind, Virtqueue};
use vm_memory::GuestAddress;

/// The queue registers a driver programs (transport-independent part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRegisters {
    /// Largest size the device supports.
    pub max_size: u16,
    /// Size the driver chose (starts at `max_size`).
    pub size: u16,
    /// queue_enable.
    pub enabled: bool,
    /// Descriptor area.
    pub desc: u64,
    /// Driver area.
    pub driver: u64,
    /// Device area.
    pub device: u64,
}

impl QueueRegisters {
    pub(crate) fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// Programs the size and areas of `config` and enables the queue: what a driver writes
    /// to set a queue up (use inside [`DeviceCore::write_queue`](crate::DeviceCore::write_queue)).
    pub fn program(&mut self, config: &QueueConfig) {
        self.size = config.size;
        self.desc = config.desc_table.0;
        self.driver = config.driver_area.0;
        self.device = config.device_area.0;
        self.enabled = true;
    }

    /// The queue configuration these registers describe under the negotiated ring features.
    pub fn config(&self, kind: RingKind, features: RingFeatures) -> QueueConfig {
        QueueConfig {
            kind,
            size: self.size,
            desc_table: GuestAddress(self.desc),
            driver_area: GuestAddress(self.driver),
            device_area: GuestAddress(self.device),
            features,
        }
    }
}

/// One queue of the device.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    pub(crate) regs: QueueRegisters,
    /// Seed 001 state: what a live queue resumes from, what the driver reads after reset and
    /// while the device is stopped or suspended. Kept across reset; `None` (the initial state of
    /// whichever ring format is negotiated) after ACKNOWLEDGE.
    pub(crate) state: Option<QueueState>,
    /// The state came from outside (driver register write or restore): the queue must be
    /// re-checked and a notification sent when it starts, or one could be lost (pitfall 4).
    pub(crate) restored: bool,
    pub(crate) live: Option<Virtqueue>,
    /// A kick arrived while the device could not process: handled on resume.
    pub(crate) kicked: bool,
    /// The queue started or resumed and its in-flight chains (restored with its state, or
    /// left in flight by a quiesce) are still to be handed to the device, once
    /// ([`crate::VirtioDevice::adopt_inflight`]).
    pub(crate) handover: bool,
}

impl QueueSlot {
    pub(crate) fn new(max_size: u16) -> Self {
        Self {
            regs: QueueRegisters::new(max_size),
            state: None,
            restored: false,
            live: None,
            kicked: false,
            handover: false,
        }
    }
}

impl QueueSlot {
    /// The state the queue starts from under ring format `kind`.
    pub(crate) fn start_state(&self, kind: RingKind) -> QueueState {
        self.state
            .clone()
            .unwrap_or_else(|| QueueState::initial(kind))
    }
}
