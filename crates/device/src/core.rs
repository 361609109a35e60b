//! The device core: the status state machine of a virtio device with the migration facilities
//! of seeds 000 (DEVICE_STOPPED), 001 (queue state), 002 (DEVICE_NEEDS_RESET) and 003 (SUSPEND),
//! feature negotiation per numbering profile, queue lifecycle and notifications.
//!
//! Every entry point is a method on `&mut DeviceCore`: the transport (driver register accesses)
//! and the worker thread (kicks) share one core behind a mutex, so a stop or suspend and a kick
//! can never interleave inside the core. That is what makes the quiescence guarantee hold: once
//! the stop is presented, no processing call touches guest memory or raises an interrupt.

use std::sync::Arc;

use virtio_lm_queue::{DeviceQueue, QueueState, RingFeatures, RingKind, Virtqueue};
use virtio_lm_spec::{status, Feature, Profile};
use vm_memory::GuestMemory;

use crate::device::{QueueAccess, Quiesce, QuiesceMode, VirtioDevice};
use crate::error::DeviceError;
use crate::interrupt::Interrupts;
use crate::queues::{QueueRegisters, QueueSlot};

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
    status: u8,
    queues: Vec<QueueSlot>,
    config_generation: u8,
    quiesce_mode: QuiesceMode,
    stop: Quiet,
    suspend: Quiet,
    /// Device-side configuration changes held back while the config space must not change.
    deferred_config: Vec<ConfigChange<M>>,
    /// The first error that set DEVICE_NEEDS_RESET, for diagnostics.
    last_error: Option<DeviceError>,
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
            status: 0,
            queues,
            config_generation: 0,
            quiesce_mode: options.quiesce_mode,
            stop: Quiet::No,
            suspend: Quiet::No,
            deferred_config: Vec::new(),
            last_error: None,
        })
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

    fn has(&self, bit: u8) -> bool {
        self.status & bit != 0
    }

    fn bit(&self, feature: Feature) -> u64 {
        self.profile.mask(feature).unwrap_or(0)
    }

    /// Whether `feature` was negotiated (offered, accepted, FEATURES_OK set).
    pub fn negotiated(&self, feature: Feature) -> bool {
        let mask = self.bit(feature);
        mask != 0 && self.has(status::FEATURES_OK) && self.driver_features & mask != 0
    }

    fn ring_kind(&self) -> RingKind {
        if self.negotiated(Feature::RingPacked) {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    fn ring_features(&self) -> RingFeatures {
        RingFeatures {
            event_idx: self.negotiated(Feature::EventIdx),
            indirect_desc: self.negotiated(Feature::IndirectDesc),
        }
    }

    // ---- features -------------------------------------------------------------------------

    /// Feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.offered
    }

    /// Feature bits the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Driver writes its features; accepted only after DRIVER and before FEATURES_OK.
    pub fn set_driver_features(&mut self, features: u64) {
        if self.has(status::DRIVER) && !self.has(status::FEATURES_OK) && !self.has(status::FAILED) {
            self.driver_features = features;
        }
    }

    // ---- status ---------------------------------------------------------------------------

    /// The device status as the driver reads it. A stop or suspend that was waiting for
    /// requests in process is completed here if they have finished.
    pub fn status(&mut self) -> u8 {
        self.progress_quiesce();
        self.status
    }

    /// The driver writes the device status.
    ///
    /// 0 resets. Otherwise the write may set bits (each only in its turn) and may clear
    /// DEVICE_STOPPED (seed 000: the one bit a driver may clear); a write that clears any other
    /// bit is ignored whole. DEVICE_NEEDS_RESET is the device's and cannot be written.
    pub fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        if self.has(status::FAILED) {
            // Seed 002: after FAILED the driver must reset before re-initialising.
            return;
        }
        // Bits the device owns or clears itself: not the driver's to set or clear.
        let device_owned = status::DEVICE_NEEDS_RESET | status::SUSPEND | status::DRIVER_OK;
        let value_driver = value & !status::DEVICE_NEEDS_RESET;
        let cleared = self.status & !value_driver & !device_owned & !status::DEVICE_STOPPED;
        let suspend_cleared = self.has(status::SUSPEND) && value & status::SUSPEND == 0;
        let driver_ok_cleared = self.has(status::DRIVER_OK) && value & status::DRIVER_OK == 0;
        if cleared != 0 || suspend_cleared || driver_ok_cleared {
            return;
        }
        let set = value_driver & !self.status;
        if set & status::ACKNOWLEDGE != 0 && self.status == 0 {
            self.status = status::ACKNOWLEDGE;
            // Seed 001: queue state returns to its initial value when ACKNOWLEDGE is set.
            for slot in &mut self.queues {
                slot.state = None;
                slot.restored = false;
            }
        }
        if set & status::DRIVER != 0 && self.has(status::ACKNOWLEDGE) {
            self.status |= status::DRIVER;
        }
        if set & status::FEATURES_OK != 0 && self.has(status::DRIVER) && self.features_acceptable()
        {
            self.status |= status::FEATURES_OK;
        }
        if set & status::FAILED != 0 {
            self.status |= status::FAILED;
        }
        if value & status::DRIVER_OK != 0 {
            if self.suspend == Quiet::Presented {
                self.resume_from_suspend();
            } else if !self.has(status::DRIVER_OK)
                && self.has(status::FEATURES_OK)
                && !self.has(status::FAILED)
            {
                self.status |= status::DRIVER_OK;
                self.activate();
            }
        }
        if set & status::SUSPEND != 0 {
            self.request_suspend();
        }
        let stopped_bit = status::DEVICE_STOPPED;
        if set & stopped_bit != 0 {
            self.request_stop();
        } else if value & stopped_bit == 0 && self.stop != Quiet::No {
            self.resume_from_stop();
        }
    }

    fn features_acceptable(&self) -> bool {
        let version_1 = self.bit(Feature::Version1);
        self.driver_features & !self.offered == 0 && self.driver_features & version_1 != 0
    }

    /// Whether the device may take buffers and notify now.
    fn live(&self) -> bool {
        self.has(status::DRIVER_OK)
            && !self.has(status::DEVICE_NEEDS_RESET)
            && !self.has(status::FAILED)
            && self.stop == Quiet::No
            && self.suspend == Quiet::No
    }

    /// Seed 002: an error the device cannot recover from. Nothing is processed until reset.
    pub fn needs_reset(&mut self, error: DeviceError) {
        if self.has(status::DEVICE_NEEDS_RESET) {
            return;
        }
        self.last_error = Some(error);
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.has(status::DRIVER_OK) || self.suspend != Quiet::No {
            self.interrupts.signal_config_change();
        }
    }

    fn reset(&mut self) {
        for slot in &mut self.queues {
            // Seed 001: the queue state survives the reset so the driver can read it afterwards.
            if let Some(live) = slot.live.take() {
                if let Ok(state) = live.state() {
                    slot.state = Some(state);
                }
            }
            let max = slot.regs.max_size;
            slot.regs = QueueRegisters::new(max);
            slot.kicked = false;
        }
        self.device.reset();
        self.status = 0;
        self.driver_features = 0;
        self.stop = Quiet::No;
        self.suspend = Quiet::No;
        self.deferred_config.clear();
        self.last_error = None;
    }

    fn activate(&mut self) {
        let kind = self.ring_kind();
        let features = self.ring_features();
        let mut started = Vec::with_capacity(self.queues.len());
        for (index, slot) in self.queues.iter().enumerate() {
            if !slot.regs.enabled {
                started.push(None);
                continue;
            }
            let config = slot.regs.config(kind, features);
            let mut state = slot.start_state(kind);
            state.notification_owed |= slot.restored;
            match Virtqueue::from_state(config, &state, &*self.mem) {
                Ok(queue) => started.push(Some(queue)),
                Err(source) => {
                    // spec-notes §3: a queue state (or layout) that fails validation at
                    // DRIVER_OK sets DEVICE_NEEDS_RESET.
                    self.needs_reset(DeviceError::QueueStart {
                        index: index as u16,
                        source,
                    });
                    return;
                }
            }
        }
        for (slot, queue) in self.queues.iter_mut().zip(started) {
            slot.live = queue;
            slot.state = None;
            slot.kicked = slot.restored;
            slot.restored = false;
        }
        if let Err(e) = self.device.activate(self.driver_features) {
            self.needs_reset(e);
            return;
        }
        // A restored queue may hold buffers made available without a kick, and may owe a
        // notification (pitfall 4): look at it now.
        self.process_pending();
    }

    // ---- DEVICE_STOPPED (seed 000) --------------------------------------------------------

    fn request_stop(&mut self) {
        // Seed 000: the device ignores DEVICE_STOPPED unless DRIVER_OK is set and the feature
        // was negotiated.
        if !self.has(status::DRIVER_OK)
            || !self.negotiated(Feature::DeviceStop)
            || self.stop != Quiet::No
        {
            return;
        }
        self.stop = Quiet::Requested;
        self.progress_quiesce();
    }

    fn resume_from_stop(&mut self) {
        if self.stop != Quiet::Presented {
            return;
        }
        self.stop = Quiet::No;
        self.status &= !status::DEVICE_STOPPED;
        self.after_resume();
    }

    // ---- SUSPEND (seed 003, merged semantics) ---------------------------------------------

    fn request_suspend(&mut self) {
        if !self.has(status::DRIVER_OK)
            || !self.negotiated(Feature::Suspend)
            || self.suspend != Quiet::No
        {
            return;
        }
        self.suspend = Quiet::Requested;
        self.progress_quiesce();
    }

    fn resume_from_suspend(&mut self) {
        // Queue state may have been rewritten while suspended: restart every queue from its
        // recorded state, exactly as at DRIVER_OK.
        self.suspend = Quiet::No;
        self.status &= !status::SUSPEND;
        self.status |= status::DRIVER_OK;
        self.activate();
        if self.has(status::DEVICE_NEEDS_RESET) {
            return;
        }
        self.after_resume();
    }

    /// Applies configuration changes held back while quiet, notifies them, and processes
    /// kicks latched meanwhile.
    fn after_resume(&mut self) {
        if !self.live() {
            return;
        }
        self.apply_deferred_config();
        for slot in &mut self.queues {
            slot.kicked |= slot.live.is_some();
        }
        self.process_pending();
    }

    /// Finishes a requested stop or suspend once no request is in process.
    fn progress_quiesce(&mut self) {
        if self.stop != Quiet::Requested && self.suspend != Quiet::Requested {
            return;
        }
        self.poll_device();
        match self.device.quiesce(self.quiesce_mode) {
            Quiesce::Pending => return,
            Quiesce::Done => {}
            Quiesce::Failed => {
                // Seed 003 (as merged): a device that cannot suspend sets NEEDS_RESET instead;
                // the same holds for a stop.
                self.stop = Quiet::No;
                self.suspend = Quiet::No;
                self.needs_reset(DeviceError::Quiesce);
                return;
            }
        }
        self.record_queue_states();
        if self.stop == Quiet::Requested {
            self.stop = Quiet::Presented;
            self.status |= status::DEVICE_STOPPED;
        }
        if self.suspend == Quiet::Requested {
            self.suspend = Quiet::Presented;
            self.status &= !status::DRIVER_OK;
            self.status |= status::SUSPEND;
            // The recorded states are now the queues: the driver may rewrite them, and resume
            // restarts every queue from them.
            for slot in &mut self.queues {
                slot.live = None;
            }
        }
    }

    fn record_queue_states(&mut self) {
        for slot in &mut self.queues {
            // The core publishes after every processing step, so state() cannot find entries
            // waiting for publication here.
            if let Some(Ok(state)) = slot.live.as_ref().map(|live| live.state()) {
                slot.state = Some(state);
            }
        }
    }

    // ---- queues ---------------------------------------------------------------------------

    /// Number of queues.
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Registers of queue `index`.
    pub fn queue(&self, index: u16) -> Option<&QueueRegisters> {
        self.queues.get(usize::from(index)).map(|s| &s.regs)
    }

    /// Whether queue registers may be written now: after FEATURES_OK, before DRIVER_OK, and not
    /// while suspended (spec-notes §2: only queue state may be written then).
    fn queue_writable(&self) -> bool {
        self.has(status::FEATURES_OK)
            && !self.has(status::DRIVER_OK)
            && self.suspend == Quiet::No
            && !self.has(status::FAILED)
    }

    /// Driver writes queue registers; ignored outside the setup window or past the last queue.
    pub fn write_queue(&mut self, index: u16, update: impl FnOnce(&mut QueueRegisters)) {
        if !self.queue_writable() {
            return;
        }
        if let Some(slot) = self.queues.get_mut(usize::from(index)) {
            let mut regs = slot.regs;
            update(&mut regs);
            // The device's maximum and the size bound are not the driver's to change.
            regs.max_size = slot.regs.max_size;
            if regs.size > regs.max_size || regs.size == 0 {
                regs.size = slot.regs.size;
            }
            slot.regs = regs;
        }
    }

    /// Whether the seed 001 queue state is readable: VIRTIO_F_QUEUE_STATE negotiated and the
    /// device not running (after reset, during setup, or while stopped or suspended).
    fn queue_state_readable(&self) -> bool {
        (self.negotiated(Feature::QueueState) || self.status == 0)
            && (!self.has(status::DRIVER_OK) || self.stop == Quiet::Presented)
    }

    /// Seed 001 available state of queue `index`; 0 when not readable.
    pub fn queue_avail_state(&self, index: u16) -> u16 {
        self.read_state(index, |s| s.avail_state)
    }

    /// Seed 001 used state of queue `index` (packed); 0 when not readable.
    pub fn queue_used_state(&self, index: u16) -> u16 {
        self.read_state(index, |s| s.used_state)
    }

    fn read_state(&self, index: u16, field: impl Fn(&QueueState) -> u16) -> u16 {
        if !self.queue_state_readable() {
            return 0;
        }
        self.queues
            .get(usize::from(index))
            .map_or(0, |slot| field(&self.current_state(slot)))
    }

    /// A queue's state: the live queue's while it exists (it does not run when this is read),
    /// else the recorded or written one, else the initial one.
    fn current_state(&self, slot: &QueueSlot) -> QueueState {
        match slot.live.as_ref().map(|q| q.state()) {
            Some(Ok(state)) => state,
            _ => slot.start_state(self.ring_kind()),
        }
    }

    /// Seed 001: the driver sets queue state after FEATURES_OK and before DRIVER_OK (also while
    /// suspended, when DRIVER_OK is clear). Ignored otherwise. Validated when the queue starts.
    pub fn set_queue_avail_state(&mut self, index: u16, value: u16) {
        self.write_state(index, |s| s.avail_state = value);
    }

    /// Seed 001 used state (packed); see [`Self::set_queue_avail_state`].
    pub fn set_queue_used_state(&mut self, index: u16, value: u16) {
        self.write_state(index, |s| s.used_state = value);
    }

    fn write_state(&mut self, index: u16, update: impl FnOnce(&mut QueueState)) {
        let window = self.has(status::FEATURES_OK)
            && !self.has(status::DRIVER_OK)
            && !self.has(status::FAILED);
        if !window || !self.negotiated(Feature::QueueState) {
            return;
        }
        let kind = self.ring_kind();
        if let Some(slot) = self.queues.get_mut(usize::from(index)) {
            let mut state = slot.start_state(kind);
            update(&mut state);
            slot.state = Some(state);
            slot.restored = true;
        }
    }

    /// Installs a complete queue state (with in-flight chains and owed notification), as a
    /// device context restore does; same window and validation as the register writes.
    pub fn set_queue_state(&mut self, index: u16, state: QueueState) -> bool {
        let window = self.has(status::FEATURES_OK) && !self.has(status::DRIVER_OK);
        match self.queues.get_mut(usize::from(index)) {
            Some(slot) if window => {
                slot.state = Some(state);
                slot.restored = true;
                true
            }
            _ => false,
        }
    }

    /// The complete state of queue `index` while it is readable (see
    /// [`Self::queue_avail_state`]), including in-flight chains.
    pub fn queue_state(&self, index: u16) -> Option<QueueState> {
        if !(self.queue_state_readable() || self.suspend == Quiet::Presented) {
            return None;
        }
        let kind = self.ring_kind();
        self.queues
            .get(usize::from(index))
            .map(|slot| slot.start_state(kind))
    }

    // ---- notifications in and processing --------------------------------------------------

    /// The driver notified queue `index`. Processed now if the device is live; latched (no
    /// guest memory access) while stopped or suspended; dropped after NEEDS_RESET or FAILED.
    pub fn kick(&mut self, index: u16) {
        let quiet = self.stop != Quiet::No || self.suspend != Quiet::No;
        let dead = self.has(status::DEVICE_NEEDS_RESET) || self.has(status::FAILED);
        // Before DRIVER_OK there is nothing to do (the driver must not notify yet); after an
        // error the device touches nothing until reset.
        if dead || !(self.has(status::DRIVER_OK) || quiet) {
            return;
        }
        let Some(slot) = self.queues.get_mut(usize::from(index)) else {
            return;
        };
        if slot.live.is_none() && !quiet {
            return;
        }
        slot.kicked = true;
        if self.live() {
            self.process_pending();
        }
    }

    /// Processes every queue with a latched kick, and completes background work.
    pub fn process_pending(&mut self) {
        if !self.live() {
            return;
        }
        self.poll_device();
        for index in 0..self.queues.len() {
            if !self.live() {
                return;
            }
            let slot = &mut self.queues[index];
            if !std::mem::take(&mut slot.kicked) {
                continue;
            }
            let Some(queue) = slot.live.as_mut() else {
                continue;
            };
            let result = run_queue(&mut *self.device, index as u16, queue, &*self.mem);
            match result {
                Ok(true) => self.interrupts.signal_used_queue(index as u16),
                Ok(false) => {}
                Err(e) => self.needs_reset(e),
            }
        }
    }

    /// Lets the device complete background work; publishes and notifies what it completed.
    fn poll_device(&mut self) {
        if self.has(status::DEVICE_NEEDS_RESET)
            || (!self.has(status::DRIVER_OK) && self.suspend == Quiet::No)
        {
            return;
        }
        let mem = &*self.mem;
        let mut accesses: Vec<QueueAccess<'_, M>> = Vec::new();
        let mut indices = Vec::new();
        for (index, slot) in self.queues.iter_mut().enumerate() {
            if let Some(queue) = slot.live.as_mut() {
                accesses.push(QueueAccess {
                    queue,
                    mem,
                    used: false,
                });
                indices.push(index as u16);
            }
        }
        let result = self.device.poll(&mut accesses);
        let mut signals = Vec::new();
        let mut error = result.err();
        for (access, index) in accesses.into_iter().zip(indices) {
            if !access.used {
                continue;
            }
            match finish(access.queue, mem) {
                Ok(true) => signals.push(index),
                Ok(false) => {}
                Err(e) => error = error.or(Some(e)),
            }
        }
        for index in signals {
            self.interrupts.signal_used_queue(index);
        }
        if let Some(e) = error {
            self.needs_reset(e);
        }
    }

    // ---- configuration space --------------------------------------------------------------

    /// Configuration generation (changes whenever the device changes its config space).
    pub fn config_generation(&self) -> u8 {
        self.config_generation
    }

    /// Reads device-specific configuration.
    pub fn read_config(&self, offset: usize, data: &mut [u8]) {
        self.device.read_config(offset, data);
    }

    /// Driver write to device-specific configuration; ignored while stopped or suspended
    /// (seed 000: the config space does not change while stopped).
    pub fn write_config(&mut self, offset: usize, data: &[u8]) {
        if self.stop == Quiet::No && self.suspend == Quiet::No {
            self.device.write_config(offset, data);
        }
    }

    /// A device-side configuration change (link up, capacity change). Applied and notified
    /// now, or held back until resume while stopped or suspended.
    pub fn change_config(
        &mut self,
        change: impl FnOnce(&mut dyn VirtioDevice<M>) + Send + 'static,
    ) {
        self.deferred_config.push(Box::new(change));
        if self.stop == Quiet::No && self.suspend == Quiet::No {
            self.apply_deferred_config();
        }
    }

    fn apply_deferred_config(&mut self) {
        if self.deferred_config.is_empty() {
            return;
        }
        for change in std::mem::take(&mut self.deferred_config) {
            change(&mut *self.device);
        }
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.has(status::DRIVER_OK) {
            self.interrupts.signal_config_change();
        }
    }
}

/// Processes a kicked queue until the driver has nothing more: process, publish, decide the
/// notification, re-arm driver notifications (EVENT_IDX: avail_event or the DESC event at the
/// next buffer) and go round again if buffers arrived before the re-arm was visible; without the
/// re-arm an EVENT_IDX driver never kicks again. Returns whether to notify. A driver that keeps
/// adding keeps only this device's thread busy.
fn run_queue<M: GuestMemory + ?Sized>(
    device: &mut dyn VirtioDevice<M>,
    index: u16,
    queue: &mut Virtqueue,
    mem: &M,
) -> Result<bool, DeviceError> {
    let mut notify = false;
    loop {
        let mut access = QueueAccess {
            queue: &mut *queue,
            mem,
            used: false,
        };
        device.process_queue(index, &mut access)?;
        // Publish and decide even if nothing was used: a restored queue may owe a notification.
        notify |= finish(queue, mem)?;
        if !queue.enable_notification(mem)? {
            return Ok(notify);
        }
    }
}

/// Publishes what a processing step added and decides the notification.
fn finish<M: GuestMemory + ?Sized>(queue: &mut Virtqueue, mem: &M) -> Result<bool, DeviceError> {
    queue.publish_used(mem)?;
    Ok(queue.needs_notification(mem)?)
}

// ---- device context (spec-notes §5) --------------------------------------------------------
// `save_context`, `validate_context` and `restore_context` live in src/context/core_glue.rs,
// declared here as a child module so they reach the core's private state without widening it.
#[path = "context/core_glue.rs"]
mod context_glue;
