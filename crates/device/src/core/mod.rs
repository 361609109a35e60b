//! The device core: the status state machine of a virtio device with the migration facilities
//! of seeds 000 (DEVICE_STOPPED), 001 (queue state), 002 (DEVICE_NEEDS_RESET) and 003 (SUSPEND),
//! feature negotiation per numbering profile, queue lifecycle and notifications.
//!
//! Every entry point is a method on `&mut DeviceCore`: the transport (driver register accesses)
//! and the worker thread (kicks) share one core behind a mutex, so a stop or suspend and a kick
//! can never interleave inside the core. That is what makes the quiescence guarantee hold: once
//! the stop is presented, no processing call touches guest memory or raises an interrupt.
//!
//! One file per part of the state machine:
//! - `status`: the status a driver writes (initialisation, reset, DRIVER_OK, DEVICE_NEEDS_RESET);
//! - `features`: negotiation;
//! - `quiesce`: DEVICE_STOPPED (seed 000) and SUSPEND (seed 003), and the resume after either;
//! - `queues`: queue registers and the seed 001 queue state;
//! - `processing`: kicks, background completions, running a queue;
//! - `configuration`: the device-type configuration space;
//! - `admin_modes`: the owner's Active, Stop and Freeze (seed 004);
//! - `context`: saving and restoring the device context (seed 004).

use std::sync::Arc;

use virtio_lm_queue::{RingFeatures, RingKind};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::GuestMemory;

use crate::context::checks::Negotiation;
use crate::device::{QuiesceMode, VirtioDevice};
use crate::error::DeviceError;
use crate::interrupt::Interrupts;
use crate::queues::QueueSlot;

mod admin_modes;
mod configuration;
mod context;
mod features;
mod processing;
mod queues;
mod quiesce;
mod status;

use admin_modes::AdminState;
pub use admin_modes::{AdminModeChange, AdminModeError, AdminModeStatus};

/// How a device core is built.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Numbering profile of status and feature bits.
    pub profile: Profile,
    /// Ring and transport features offered besides the device type's own.
    pub features: Vec<Feature>,
    /// How the device quiesces for a stop or suspend.
    pub quiesce_mode: QuiesceMode,
}

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            profile: Profile::Seeds,
            features: vec![
                Feature::Version1,
                Feature::RingPacked,
                Feature::IndirectDesc,
                Feature::EventIdx,
                Feature::DeviceStop,
                Feature::QueueState,
                Feature::Suspend,
            ],
            quiesce_mode: QuiesceMode::Drain,
        }
    }
}

/// Why a core could not be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// The profile does not define a requested feature, or puts two features on one bit.
    #[error("Feature set rejected: {0}")]
    Features(#[from] virtio_lm_spec::ProfileError),
    /// A device-type feature bit collides with a ring or transport feature.
    #[error("Device feature bits {0:#x} collide with transport features")]
    DeviceBitCollision(u64),
}

/// Progress of an in-band quiesce (DEVICE_STOPPED or SUSPEND).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quiet {
    /// Not asked for.
    No,
    /// Asked for; requests still in process.
    Requested,
    /// Done and presented in the status.
    Presented,
}

type ConfigChange<M> = Box<dyn FnOnce(&mut dyn VirtioDevice<M>) + Send>;

/// A virtio device: a device type plus everything generic around it.
pub struct DeviceCore<M: GuestMemory + Send + Sync + 'static> {
    profile: Profile,
    device: Box<dyn VirtioDevice<M>>,
    mem: Arc<M>,
    interrupts: Arc<dyn Interrupts>,
    offered: u64,
    driver_features: u64,
    status: DeviceStatus,
    queues: Vec<QueueSlot>,
    config_generation: u8,
    quiesce_mode: QuiesceMode,
    stop: Quiet,
    suspend: Quiet,
    /// Device-side configuration changes held back while the config space must not change.
    deferred_config: Vec<ConfigChange<M>>,
    /// A configuration change notification held back because the device could not notify when
    /// it was due (DRIVER_OK clear while suspended, or not admin-Active); sent at the first
    /// moment it may be.
    config_change_owed: bool,
    /// The first error that set DEVICE_NEEDS_RESET, for diagnostics.
    last_error: Option<DeviceError>,
    /// Seed 004 admin (out-of-band) mode; see `admin_modes`.
    admin: AdminState,
}

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Builds a core around `device`. Fails if the offered features put two features on one bit.
    pub fn new(
        device: Box<dyn VirtioDevice<M>>,
        mem: Arc<M>,
        interrupts: Arc<dyn Interrupts>,
        options: CoreOptions,
    ) -> Result<Self, CoreError> {
        let transport = options.profile.feature_set(&options.features)?;
        let device_bits = device.device_features();
        if device_bits & transport != 0 {
            return Err(CoreError::DeviceBitCollision(device_bits & transport));
        }
        let queues = device
            .queue_max_sizes()
            .into_iter()
            .map(QueueSlot::new)
            .collect();
        Ok(Self {
            profile: options.profile,
            device,
            mem,
            interrupts,
            offered: transport | device_bits,
            driver_features: 0,
            status: DeviceStatus::RESET,
            queues,
            config_generation: 0,
            quiesce_mode: options.quiesce_mode,
            stop: Quiet::No,
            suspend: Quiet::No,
            deferred_config: Vec::new(),
            config_change_owed: false,
            last_error: None,
            admin: AdminState::default(),
        })
    }

    /// How the device quiesces from now on: a migration chooses (`--inflight drain|transfer`)
    /// after the device was built. A quiesce already under way keeps the mode it began with.
    pub fn set_quiesce_mode(&mut self, mode: QuiesceMode) {
        self.quiesce_mode = mode;
    }

    /// The numbering profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The virtio device id.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Guest memory.
    pub fn mem(&self) -> &Arc<M> {
        &self.mem
    }

    /// The error that set DEVICE_NEEDS_RESET, if any.
    pub fn last_error(&self) -> Option<&DeviceError> {
        self.last_error.as_ref()
    }

    pub(super) fn has(&self, bit: DeviceStatus) -> bool {
        self.status.intersects(bit)
    }

    pub(super) fn bit(&self, feature: Feature) -> u64 {
        self.profile.mask(feature).unwrap_or(0)
    }

    /// The negotiation as it stands: the same rules a context to restore is checked with.
    fn negotiation(&self) -> Negotiation {
        Negotiation {
            profile: self.profile,
            status: self.status,
            driver: self.driver_features,
        }
    }

    /// Whether `feature` was negotiated (offered, accepted, FEATURES_OK set).
    pub fn negotiated(&self, feature: Feature) -> bool {
        self.negotiation().negotiated(feature)
    }

    pub(super) fn ring_kind(&self) -> RingKind {
        self.negotiation().ring_kind()
    }

    pub(super) fn ring_features(&self) -> RingFeatures {
        self.negotiation().ring_features()
    }
}
