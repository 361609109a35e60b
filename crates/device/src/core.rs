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
use virtio_lm_spec::admin::DevMode;
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
    /// Seed 004 admin (out-of-band) mode; see the "admin device modes" section.
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
            status: 0,
            queues,
            config_generation: 0,
            quiesce_mode: options.quiesce_mode,
            stop: Quiet::No,
            suspend: Quiet::No,
            deferred_config: Vec::new(),
            last_error: None,
            admin: AdminState::default(),
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
        if self.admin_silent() {
            return;
        }
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
    /// bit is ignored whole. DEVICE_NEEDS_RESET is the device's and cannot be written. Ignored
    /// whole while the owner holds the device in admin Stop or Freeze (seed 004).
    pub fn write_status(&mut self, value: u8) {
        if self.admin_silent() {
            // Seed 004: the owner holds the device in Stop or Freeze; see `set_admin_mode`.
            return;
        }
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
            && !self.admin_quiet()
    }

    /// Seed 002: an error the device cannot recover from. Nothing is processed until reset.
    pub fn needs_reset(&mut self, error: DeviceError) {
        if self.has(status::DEVICE_NEEDS_RESET) {
            return;
        }
        self.last_error = Some(error);
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.has(status::DRIVER_OK) || self.suspend != Quiet::No {
            if self.admin_silent() {
                // Seed 004: no configuration change notification unless Active; owed until then.
                self.admin.config_owed = true;
            } else {
                self.interrupts.signal_config_change();
            }
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
        self.admin_after_reset();
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
        self.admin.queues_unstarted = false;
        for (slot, queue) in self.queues.iter_mut().zip(started) {
            slot.handover = queue.is_some();
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
        self.admin_complete_if_dead();
        if self.stop != Quiet::Requested
            && self.suspend != Quiet::Requested
            && self.admin.target.is_none()
        {
            return;
        }
        self.poll_device();
        self.admin_complete_if_dead();
        match self.device.quiesce(self.quiesce_mode) {
            Quiesce::Pending => return,
            Quiesce::Done => {}
            Quiesce::Failed => {
                // Seed 003 (as merged): a device that cannot suspend sets NEEDS_RESET instead;
                // the same holds for a stop.
                self.stop = Quiet::No;
                self.suspend = Quiet::No;
                self.needs_reset(DeviceError::Quiesce);
                self.admin_complete_if_dead();
                return;
            }
        }
        self.record_queue_states();
        // The device let go of everything it held: what is still in flight is handed back to
        // it once when processing resumes.
        for slot in &mut self.queues {
            slot.handover = slot.live.is_some();
        }
        self.admin_complete();
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
        !self.admin_silent()
            && self.has(status::FEATURES_OK)
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
            && !self.has(status::FAILED)
            && !self.admin_silent();
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
        let window =
            self.has(status::FEATURES_OK) && !self.has(status::DRIVER_OK) && !self.admin_silent();
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
        let quiet = self.stop != Quiet::No || self.suspend != Quiet::No || self.admin_quiet();
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

    /// Background work finished (a backend's completion eventfd fired): lets the device return
    /// it, finishes a stop, suspend or admin mode change that was waiting for it, and processes
    /// whatever is latched. What a worker calls on a device's wake eventfd.
    pub fn service(&mut self) {
        self.progress_quiesce();
        self.process_pending();
    }

    /// Processes every queue with a latched kick, and completes background work.
    pub fn process_pending(&mut self) {
        if !self.live() {
            return;
        }
        if self.admin.queues_unstarted {
            self.start_restored_queues();
            if !self.live() {
                return;
            }
        }
        self.hand_over_inflight();
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

    /// Hands each started or resumed queue's in-flight chains to the device, once per start
    /// (the device keeps no record of what it was handed: seed 001's "exactly once" is the
    /// core's), before anything else is processed; publishes and notifies what it completed.
    fn hand_over_inflight(&mut self) {
        for index in 0..self.queues.len() {
            if !self.live() {
                return;
            }
            let slot = &mut self.queues[index];
            if !std::mem::take(&mut slot.handover) {
                continue;
            }
            let Some(queue) = slot.live.as_mut() else {
                continue;
            };
            let chains = queue.inflight();
            if chains.is_empty() {
                continue;
            }
            let mem = &*self.mem;
            let mut access = QueueAccess {
                queue: &mut *queue,
                mem,
                index: index as u16,
                used: false,
                took: false,
            };
            let result = self
                .device
                .adopt_inflight(index as u16, chains, &mut access)
                .and_then(|()| finish(queue, mem));
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
                    index: index as u16,
                    used: false,
                    took: false,
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
    /// (seed 000: the config space does not change while stopped) and while not admin-Active
    /// (seed 004: in Freeze "any write access to virtio configuration space MUST not update any
    /// fields").
    pub fn write_config(&mut self, offset: usize, data: &[u8]) {
        if self.stop == Quiet::No && self.suspend == Quiet::No && !self.admin_quiet() {
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
        if self.stop == Quiet::No && self.suspend == Quiet::No && !self.admin_quiet() {
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
/// next buffer) and go round again if buffers arrived before the re-arm was visible and the
/// device is taking buffers; without the re-arm an EVENT_IDX driver never kicks again. Returns
/// whether to notify. A driver that keeps adding keeps only this device's thread busy.
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
            index,
            used: false,
            took: false,
        };
        device.process_queue(index, &mut access)?;
        let took = access.took;
        // Publish and decide even if nothing was used: a restored queue may owe a notification.
        notify |= finish(queue, mem)?;
        // Round again only for buffers that arrived while the device was taking: a device that
        // leaves buffers in the ring on purpose (a receive queue with no frame to deliver) must
        // not spin here.
        if !queue.enable_notification(mem)? || !took {
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

// ==== admin device modes (seed 004) ==========================================================
//
// The owner's out-of-band control of this device (seed 004 DEV_MODE_SET/GET): Active, Stop and
// Freeze. It is independent of DEVICE_STOPPED and SUSPEND (spec-notes §2: the device is quiescent
// while any of them holds; each is undone only by its own mechanism). Everything the admin modes
// add to the core is in this section; the code above only calls the `admin_*` helpers and
// `start_restored_queues` defined here.
//
// - Active: normal operation.
// - Stop: every request in process is finished first (drained, or left in the queue's in-flight
//   list under `QuiesceMode::RecordInflight`), and only then is the mode Stop; until then the
//   change is pending (`AdminModeChange::Pending`, `poll_admin_mode`). In Stop the device takes
//   no buffer, touches no guest memory, raises no interrupt and sends no configuration change
//   notification; driver notifications are accepted and latched.
// - Freeze: as Stop, and the context does not change: every driver write to the device status,
//   features, queue registers and configuration space is ignored. Stop ignores them too (our
//   decision: seed 004 says the driver SHOULD NOT access the configuration space in Stop or
//   Freeze, and applying such a write could need guest memory or an interrupt, e.g. DRIVER_OK
//   starting queues, which Stop forbids). Device-side configuration changes wait for Active.
// - Every transition between the three modes is allowed (the seed names only two reasons to
//   fail DEV_MODE_SET: an unknown mode and a partially written context, the latter checked by
//   the owner); Active → Freeze does the Stop work first.
// - A context restored while not Active does not read guest memory (seed 004: no virtqueue
//   memory access unless Active; the destination's memory may still be arriving): its running
//   queues are checked as far as possible without the ring and started, against the ring, at
//   the first moment the device is live again. A queue that cannot start then sets
//   DEVICE_NEEDS_RESET, as at DRIVER_OK (spec-notes §3).
// - A device reset or FLR keeps the mode (seed 004 v2 changelog: FLR does not make the device
//   Active) and ends a pending change with `AdminModeError::Reset`. DEVICE_NEEDS_RESET ends a
//   pending change successfully: the device processes nothing any more, so it is as quiet as
//   Stop requires, and a broken device can still be migrated.

/// What [`DeviceCore::set_admin_mode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminModeChange {
    /// The device is in the requested mode.
    Done,
    /// Requests in process must finish first; [`DeviceCore::poll_admin_mode`] reports the end.
    Pending,
}

/// Where an admin mode change stands ([`DeviceCore::poll_admin_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminModeStatus {
    /// No change is pending; the device is in this mode.
    Idle(DevMode),
    /// A change is waiting for requests in process.
    Pending,
    /// The pending change completed: the device is now in this mode.
    Done(DevMode),
    /// The pending change ended without effect; the mode is unchanged.
    Failed(AdminModeError),
}

/// Why an admin mode change did not take effect. The mode is unchanged (seed 004: "if the
/// command fails, the device MUST retain the current device mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminModeError {
    /// Another mode change is still waiting for requests in process.
    #[error("another admin mode change is still in progress")]
    Busy,
    /// The device was reset (driver reset or FLR) while the change waited.
    #[error("the device was reset while the admin mode change waited")]
    Reset,
}

/// The admin mode and its bookkeeping.
#[derive(Debug, Default)]
struct AdminState {
    /// The current mode (what DEV_MODE_GET reports).
    mode: DevMode,
    /// A change out of Active waiting for requests in process.
    target: Option<DevMode>,
    /// How a pending change ended, until `poll_admin_mode` reports it.
    outcome: Option<Result<DevMode, AdminModeError>>,
    /// DEVICE_NEEDS_RESET was set while not Active: its notification goes out on return to Active.
    config_owed: bool,
    /// Device resets so far (driver reset or FLR).
    resets: u64,
    /// A context restored while not Active left running queues to start against the ring.
    queues_unstarted: bool,
}

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// The seed 004 admin mode.
    pub fn admin_mode(&self) -> DevMode {
        self.admin.mode
    }

    /// Whether an admin mode change is waiting for requests in process.
    pub fn admin_mode_pending(&self) -> bool {
        self.admin.target.is_some()
    }

    /// The owner sets the admin mode (seed 004 DEV_MODE_SET). Setting the current mode succeeds
    /// and changes nothing. Leaving Active finishes (or records in flight) every request in
    /// process first: if some cannot finish yet the change is [`AdminModeChange::Pending`] and
    /// completes later, reported by [`Self::poll_admin_mode`]. Returning to Active resumes the
    /// device: latched notifications are processed, every queue is re-checked and held
    /// configuration changes are applied and notified (unless DEVICE_STOPPED or SUSPEND still
    /// holds the device, which only their own mechanism undoes).
    pub fn set_admin_mode(&mut self, mode: DevMode) -> Result<AdminModeChange, AdminModeError> {
        if self.admin.target.is_some() {
            return Err(AdminModeError::Busy);
        }
        if mode == self.admin.mode {
            return Ok(AdminModeChange::Done);
        }
        match (self.admin.mode, mode) {
            (DevMode::Active, _) => {
                self.admin.target = Some(mode);
                self.progress_quiesce();
                match self.admin.outcome.take() {
                    Some(Ok(_)) => Ok(AdminModeChange::Done),
                    Some(Err(e)) => Err(e),
                    None => Ok(AdminModeChange::Pending),
                }
            }
            (_, DevMode::Active) => {
                self.admin.mode = DevMode::Active;
                self.admin_resume();
                Ok(AdminModeChange::Done)
            }
            // Stop <-> Freeze: the device is already quiet; nothing else changes.
            _ => {
                self.admin.mode = mode;
                Ok(AdminModeChange::Done)
            }
        }
    }

    /// Lets a pending admin mode change progress (the device completes background work) and
    /// reports where it stands. A completed or failed change is reported once, then `Idle`.
    pub fn poll_admin_mode(&mut self) -> AdminModeStatus {
        self.progress_quiesce();
        match self.admin.outcome.take() {
            Some(Ok(mode)) => AdminModeStatus::Done(mode),
            Some(Err(e)) => AdminModeStatus::Failed(e),
            None if self.admin.target.is_some() => AdminModeStatus::Pending,
            None => AdminModeStatus::Idle(self.admin.mode),
        }
    }

    /// The owner abandons a pending change (the owner was reset, or its VFs were disabled): the
    /// device stays Active and resumes as after a stop (latched kicks, queues re-checked).
    /// Returns whether a change was pending.
    pub fn cancel_admin_mode(&mut self) -> bool {
        if self.admin.target.take().is_none() {
            return false;
        }
        self.after_resume();
        true
    }

    /// Device resets so far (driver resets and FLRs): an owner keeps context streams per reset.
    pub fn reset_count(&self) -> u64 {
        self.admin.resets
    }

    /// PCI Function Level Reset: resets the device as a driver reset does, in every admin mode
    /// (seed 004: "the device MUST function same for the PCI architected interfaces regardless
    /// of the device mode"). The admin mode is kept; a pending change ends with
    /// [`AdminModeError::Reset`].
    pub fn function_level_reset(&mut self) {
        self.reset();
    }

    /// Not live because of the admin mode: not Active, or a change out of Active is pending.
    /// Buffers are not taken, kicks are latched and configuration changes wait.
    fn admin_quiet(&self) -> bool {
        self.admin.mode != DevMode::Active || self.admin.target.is_some()
    }

    /// In Stop or Freeze: no guest memory access, no interrupt, driver writes ignored. (While a
    /// change is pending the device is still Active and finishes its requests normally.)
    fn admin_silent(&self) -> bool {
        self.admin.mode != DevMode::Active
    }

    /// A device that set DEVICE_NEEDS_RESET processes nothing any more: a pending change out of
    /// Active completes, as nothing in process will run again.
    fn admin_complete_if_dead(&mut self) {
        if self.admin.target.is_some() && self.has(status::DEVICE_NEEDS_RESET) {
            self.admin_complete();
        }
    }

    /// Requests in process are finished (the caller recorded the queue states): a pending
    /// change takes effect.
    fn admin_complete(&mut self) {
        if let Some(target) = self.admin.target.take() {
            self.admin.mode = target;
            self.admin.outcome = Some(Ok(target));
        }
    }

    fn admin_after_reset(&mut self) {
        self.admin.resets = self.admin.resets.wrapping_add(1);
        self.admin.queues_unstarted = false;
        self.admin.config_owed = false;
        if self.admin.target.take().is_some() {
            self.admin.outcome = Some(Err(AdminModeError::Reset));
        }
    }

    /// Back to Active: the owed DEVICE_NEEDS_RESET notification, then the same resume as after a
    /// stop (held configuration changes, latched kicks, every queue re-checked).
    fn admin_resume(&mut self) {
        let started = self.has(status::DRIVER_OK) || self.suspend != Quiet::No;
        if std::mem::take(&mut self.admin.config_owed) && started {
            self.interrupts.signal_config_change();
        }
        self.after_resume();
    }

    /// Starts the running queues a context restored while not Active left unstarted, against
    /// the ring in guest memory. Each is re-checked at once (buffers may have been made
    /// available while the device moved; pitfall 4).
    fn start_restored_queues(&mut self) {
        self.admin.queues_unstarted = false;
        let kind = self.ring_kind();
        let features = self.ring_features();
        for index in 0..self.queues.len() {
            let slot = &self.queues[index];
            if !slot.regs.enabled || slot.live.is_some() {
                continue;
            }
            let config = slot.regs.config(kind, features);
            let state = slot.start_state(kind);
            match Virtqueue::from_state(config, &state, &*self.mem) {
                Ok(queue) => {
                    let slot = &mut self.queues[index];
                    slot.live = Some(queue);
                    slot.handover = true;
                    slot.state = None;
                    slot.restored = false;
                    slot.kicked = true;
                }
                Err(source) => {
                    self.needs_reset(DeviceError::QueueStart {
                        index: index as u16,
                        source,
                    });
                    return;
                }
            }
        }
    }
}
// ==== end of admin device modes ==============================================================
