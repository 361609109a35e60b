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
mod ring_position;
mod ring_reset;
mod status;

use admin_modes::AdminState;
pub use admin_modes::{AdminModeChange, AdminModeError, AdminModeStatus};

/// How a device core is built.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Numbering profile of status and feature bits ([`Profile`], spec-decisions §1).
    pub profile: Profile,
    /// Ring and transport features offered besides the device type's own ([`Feature`]); each
    /// must have a bit in `profile`, or [`DeviceCore::new`] fails with [`CoreError::Features`].
    pub features: Vec<Feature>,
    /// How the device quiesces for a stop, suspend or admin Stop/Freeze ([`QuiesceMode`]).
    pub quiesce_mode: QuiesceMode,
}

impl Default for CoreOptions {
    /// The project's default device:
    ///
    /// - `profile`: [`Profile::Seeds`], the seed numbering (DEVICE_STOP 39, QUEUE_STATE 40,
    ///   SUSPEND 42, status DEVICE_STOPPED).
    /// - `features`: VERSION_1, RING_PACKED, INDIRECT_DESC, EVENT_IDX, and all three migration
    ///   features DEVICE_STOP (seed 000), QUEUE_STATE (seed 001) and SUSPEND (seed 003). Under
    ///   [`Profile::V1_4`] drop DEVICE_STOP and QUEUE_STATE, which it does not number.
    /// - `quiesce_mode`: [`QuiesceMode::Drain`]: a stop completes every request in process
    ///   first, so a context saved after the stop has no chain in flight unless the device type
    ///   gives up on one (virtio-net leaves transmit frames its tunnel will not take in flight).
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
///
/// # Embedding guide: the host-side sequence of a migration
///
/// A VMM owns one `DeviceCore` per device, behind a mutex shared by its transport (which turns
/// the driver's register accesses into [`write_status`](Self::write_status),
/// [`set_driver_features`](Self::set_driver_features), [`write_queue`](Self::write_queue) and
/// [`kick`](Self::kick)) and its [`Worker`](crate::Worker) (eventfd kicks and background
/// completions). Migrating the device is then:
///
/// 1. **Build** the core around a [`VirtioDevice`] on guest memory, with an
///    [`Interrupts`](crate::Interrupts) sink and [`CoreOptions`] (numbering
///    [`Profile`](virtio_lm_spec::Profile), offered features, [`QuiesceMode`]).
/// 2. The **driver** initialises it up to DRIVER_OK and runs requests.
/// 3. **Stop** it, from the host with the seed 004 admin mode
///    ([`set_admin_mode`](Self::set_admin_mode) with
///    [`DevMode::Stop`](virtio_lm_spec::admin::DevMode::Stop); if it answers
///    [`AdminModeChange::Pending`], [`poll_admin_mode`](Self::poll_admin_mode) until done), or
///    let the driver stop it with DEVICE_STOPPED (seed 000) or SUSPEND (seed 003) and re-read
///    the status until the device presents it.
/// 4. **Save** the context ([`save_context`](Self::save_context)) and [`encode`] it: these bytes
///    are what DEV_CTX_READ returns and what travels to the destination.
/// 5. On the destination, [`decode`] them, build a **fresh core** around a fresh device of the
///    same type and options, hold it in [`DevMode::Freeze`](virtio_lm_spec::admin::DevMode::Freeze)
///    while guest memory is still arriving, [`restore_context`](Self::restore_context) (which
///    validates everything before it applies anything), and **resume**: back to
///    [`DevMode::Active`](virtio_lm_spec::admin::DevMode::Active), or, after a driver stop, the
///    driver clears DEVICE_STOPPED (or sets DRIVER_OK after SUSPEND).
/// 6. The driver **continues** its requests on the same rings: in-flight requests complete
///    exactly once and no notification is lost.
///
/// Below, the test rig of the `test-utils` feature plays the guest driver
/// (`virtio_lm_device::testing::CoreDriver`: its `start_default`, `offer` and `collect` do
/// what a guest's virtio driver does through the transport, with the status, feature and queue
/// writes a transport forwards to this core); every other call on a core is the host's.
///
/// ```
/// use std::sync::Arc;
/// use virtio_lm_device::context::{decode, encode};
/// use virtio_lm_device::testing::context::collect_rearm;
/// use virtio_lm_device::testing::{memory, CoreDriver, CountingDevice, Mem, RUNNING, STOPPED};
/// use virtio_lm_device::{AdminModeChange, CoreOptions, DeviceCore, InterruptCounter};
/// use virtio_lm_spec::admin::DevMode;
///
/// type Error = Box<dyn std::error::Error>;
///
/// /// 1. A device type (here the rig's entropy-like `CountingDevice`, one queue of 16) in a core.
/// fn build(mem: &Arc<Mem>) -> Result<(DeviceCore<Mem>, Arc<InterruptCounter>), Error> {
///     let irq = Arc::new(InterruptCounter::default());
///     let device = Box::new(CountingDevice::new(0, 16));
///     let core = DeviceCore::new(device, mem.clone(), irq.clone(), CoreOptions::default())?;
///     Ok((core, irq))
/// }
///
/// fn migrate(stop_from_host: bool) -> Result<(), Error> {
///     let mem = memory();
///     let (core, irq) = build(&mem)?;
///     let mut guest = CoreDriver::around(core, mem.clone(), irq);
///
///     // 2. The driver negotiates the default features, sets up the queue, sets DRIVER_OK and
///     //    runs three requests.
///     guest.start_default();
///     guest.offer(3);
///     guest.core.kick(0);
///     assert_eq!(guest.collect().len(), 3);
///
///     // 3. Stop: from the host (admin mode Stop), or from the driver (DEVICE_STOPPED).
///     if stop_from_host {
///         assert_eq!(guest.core.set_admin_mode(DevMode::Stop)?, AdminModeChange::Done);
///     } else {
///         guest.core.write_status(STOPPED);
///         assert_eq!(guest.core.status(), STOPPED);
///     }
///     // Requests made available now are latched, not processed.
///     guest.offer(2);
///     guest.core.kick(0);
///     assert!(guest.collect().is_empty());
///
///     // 4. Save and encode: the bytes that migrate.
///     let bytes: Vec<u8> = encode(&guest.core.save_context()?)?;
///
///     // 5. Destination: decode, a fresh core, restore while frozen, resume.
///     let context = decode(&bytes)?;
///     let (mut core, irq) = build(&mem)?;
///     core.set_admin_mode(DevMode::Freeze)?;
///     core.restore_context(&context)?;
///     assert_eq!(core.save_context()?, context, "the whole state arrived");
///     core.set_admin_mode(DevMode::Active)?;
///     let (old_core, old_irq) = (
///         std::mem::replace(&mut guest.core, core),
///         std::mem::replace(&mut guest.irq, irq),
///     );
///     drop((old_core, old_irq)); // the source is gone
///     if !stop_from_host {
///         guest.core.write_status(RUNNING); // the driver clears DEVICE_STOPPED
///     }
///     assert_eq!(guest.core.status(), RUNNING);
///
///     // 6. The two latched requests complete on the destination (the driver handles them and
///     //    re-enables notifications), then new ones run and are notified as usual.
///     assert_eq!(collect_rearm(&mut guest).len(), 2);
///     let interrupts = guest.irq.used();
///     guest.offer(4);
///     guest.core.kick(0);
///     assert_eq!(guest.collect().len(), 4);
///     assert_eq!(guest.irq.used(), interrupts + 1, "the completions are notified");
///     Ok(())
/// }
///
/// migrate(true)?;
/// migrate(false)?;
/// # Ok::<(), Error>(())
/// ```
///
/// What else a VMM needs: [`Worker`](crate::Worker) to run the core on eventfds,
/// [`snapshot_context`](Self::snapshot_context) for a pre-copy read while the device runs,
/// [`validate_context`](Self::validate_context) to check a context without applying it, and
/// the queue state accessors ([`queue_state`](Self::queue_state),
/// [`set_queue_state`](Self::set_queue_state), [`QueueState`](virtio_lm_queue::QueueState))
/// for seed 001 alone. A device type's own state travels in the context through
/// [`VirtioDevice::save_state`] and [`VirtioDevice::decode_state`].
///
/// [`encode`]: crate::context::encode
/// [`decode`]: crate::context::decode
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

    /// Bytes of the device configuration space the device type defines.
    pub fn config_len(&self) -> usize {
        self.device.config_len()
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
