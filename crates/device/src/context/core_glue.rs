//! Saving a [`DeviceCore`] into a [`DeviceContext`] and restoring one (spec-notes §5, seed 004).
//!
//! Declared in `core.rs` as a child module of `core` (this file lives with the rest of the
//! context code), so it works on the core's private state directly.
//!
//! Restoring validates everything first and builds a plan; only a valid plan is applied. The
//! only failures after that are the device type's own (`restore_state`, `activate`), which set
//! DEVICE_NEEDS_RESET as any failed restore does (spec-notes §2).

use virtio_lm_queue::{DeviceQueue, QueueState, Virtqueue};
use virtio_lm_spec::status;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::context::checks::{check_state_shape, device_fields, Negotiation};
use crate::context::{
    is_device_specific, ContextError, ContextWriter, DeviceContext, QueueContext, VqConfig,
    VIRTIO_MSI_NO_VECTOR,
};
use crate::queues::QueueRegisters;

/// Bytes of device-type configuration space saved in DEVICE_CONFIG. `VirtioDevice` does not
/// report its configuration size yet (virtio-rng has none), so nothing is saved; a restore
/// compares whatever the context carries with the device's own configuration space.
const SAVED_CONFIG_LEN: usize = 0;

/// A validated context, ready to apply.
struct RestorePlan {
    status: u8,
    driver_features: u64,
    config_generation: u8,
    queues: Vec<(QueueRegisters, QueueStart)>,
    device_state: Vec<u8>,
}

/// How a queue comes back.
enum QueueStart {
    /// DRIVER_OK: a live queue, already built (and so validated) from the state.
    Live(Virtqueue),
    /// Otherwise: the state kept for the next start (`None`: the initial state).
    Recorded(Option<QueueState>),
    /// DRIVER_OK restored while not admin-Active (seed 004): started against the ring when the
    /// device is next live.
    Deferred(QueueState),
}

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Whether the device is quiet enough for its context to be saved or restored: not running
    /// (reset, during setup, stopped, suspended, or after DEVICE_NEEDS_RESET or FAILED), and no
    /// stop or suspend still waiting for requests in process.
    ///
    /// The admin modes of seed 004 count as quiet here: Stop and Freeze are not live, and a
    /// mode change still waiting for requests in process is a quiesce in progress. (That a
    /// DEV_CTX_WRITE needs Freeze — "The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command
    /// when the device mode is not Freeze" — is the owner's check, as in-band restores need no
    /// admin mode.)
    fn context_quiescent(&self) -> bool {
        let quiescing = self.stop == Quiet::Requested
            || self.suspend == Quiet::Requested
            || self.admin.target.is_some();
        !quiescing && !self.live()
    }

    /// Saves the complete device context. Only while the device is quiescent (see
    /// [`DeviceContext`] and spec-notes §5); a stop or suspend still in progress must be
    /// completed first (read the status until it presents).
    ///
    /// MSI-X vectors are reported as [`VIRTIO_MSI_NO_VECTOR`]: they belong to the PCI
    /// transport, which saves and restores its own around the core.
    pub fn save_context(&self) -> Result<DeviceContext, ContextError> {
        if !self.context_quiescent() {
            return Err(ContextError::NotQuiescent);
        }
        self.snapshot_context()
    }

    /// The device context as it stands, also while the device runs: for seed 004 DEV_CTX_READ,
    /// which works in every admin mode ("The device MUST support reading the device context
    /// when the device is in any mode"). Consistent, because nothing processes while the core
    /// is borrowed, but a running device moves on right after: a context read in Active is a
    /// pre-copy, to be replaced (DISCARD) by one read after Stop. Same content rules as
    /// [`Self::save_context`].
    pub fn snapshot_context(&self) -> Result<DeviceContext, ContextError> {
        let kind = self.ring_kind();
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, slot) in (0u16..).zip(&self.queues) {
            let state = match slot.live.as_ref() {
                Some(live) => live
                    .state()
                    .map_err(|source| ContextError::QueueNotSaved { index, source })?,
                None => slot.start_state(kind),
            };
            queues.push(QueueContext {
                config: VqConfig::from_registers(&slot.regs),
                state,
            });
        }
        let mut device_config = vec![0; SAVED_CONFIG_LEN];
        self.device.read_config(0, &mut device_config);
        Ok(DeviceContext {
            device_features: vec![self.offered],
            driver_features: vec![self.driver_features],
            device_status: self.status,
            config_generation: self.config_generation,
            device_config,
            config_msix_vector: VIRTIO_MSI_NO_VECTOR,
            queues,
            device_fields: device_fields(&self.device.save_state())?,
        })
    }

    /// Checks `ctx` against this device without changing anything: everything
    /// [`Self::restore_context`] checks.
    pub fn validate_context(&self, ctx: &DeviceContext) -> Result<(), ContextError> {
        self.plan_restore(ctx).map(|_| ())
    }

    /// Restores `ctx`: validates all of it first (spec-notes §5: "Every value is validated
    /// before any of it is applied"), and on any error changes nothing. Then applies the status
    /// (DEVICE_STOPPED and SUSPEND as presented, DRIVER_OK with live queues rebuilt from their
    /// states), features, configuration generation, queue registers and states (with in-flight
    /// chains and owed notifications), and the device-specific state.
    ///
    /// A restored running queue is re-checked as soon as the device is live, so buffers made
    /// available meanwhile are not missed (spec-notes §7, pitfall 4).
    pub fn restore_context(&mut self, ctx: &DeviceContext) -> Result<(), ContextError> {
        let plan = self.plan_restore(ctx)?;
        self.apply_plan(plan)
    }

    fn plan_restore(&self, ctx: &DeviceContext) -> Result<RestorePlan, ContextError> {
        if !self.context_quiescent() {
            return Err(ContextError::NotQuiescent);
        }
        let device_word = ctx.device_features.first().copied().unwrap_or(0);
        let extra_device = ctx.device_features.iter().skip(1).any(|&w| w != 0);
        if ctx.device_features.is_empty() || device_word != self.offered || extra_device {
            return Err(ContextError::DeviceFeatures {
                context: device_word,
                device: self.offered,
            });
        }
        let driver = ctx.driver_features.first().copied().unwrap_or(0);
        let not_offered = (0..)
            .zip(&ctx.driver_features)
            .map(|(word, &bits)| {
                (
                    word,
                    if word == 0 {
                        bits & !self.offered
                    } else {
                        bits
                    },
                )
            })
            .find(|&(_, bits)| bits != 0);
        if let Some((word, bits)) = not_offered {
            return Err(ContextError::DriverFeatures { word, bits });
        }
        let neg = Negotiation {
            profile: self.profile,
            status: ctx.device_status,
            driver,
        };
        neg.check_status()
            .map_err(|reason| ContextError::InvalidStatus {
                status: ctx.device_status,
                reason,
            })?;
        self.check_device_config(&ctx.device_config)?;
        if ctx.queues.len() != self.queues.len() {
            return Err(ContextError::NumQueues {
                context: ctx.queues.len(),
                device: self.num_queues(),
            });
        }
        let mut queues = Vec::with_capacity(ctx.queues.len());
        for ((index, slot), q) in (0u16..).zip(&self.queues).zip(&ctx.queues) {
            queues.push(self.plan_queue(&neg, index, slot.regs.max_size, q)?);
        }
        let mut writer = ContextWriter::new();
        for field in &ctx.device_fields {
            if !is_device_specific(field.field_type) {
                return Err(ContextError::Unencodable {
                    field_type: field.field_type,
                    reason: "not a device-specific type",
                });
            }
            writer.field(field.field_type, field.flags, &field.value)?;
        }
        let device_state = writer.into_bytes();
        self.device
            .validate_state(&device_state)
            .map_err(ContextError::DeviceState)?;
        Ok(RestorePlan {
            status: ctx.device_status,
            driver_features: driver,
            config_generation: ctx.config_generation,
            queues,
            device_state,
        })
    }

    fn check_device_config(&self, config: &[u8]) -> Result<(), ContextError> {
        let mut own = vec![0; config.len()];
        self.device.read_config(0, &mut own);
        match own.iter().zip(config).position(|(a, b)| a != b) {
            Some(offset) => Err(ContextError::DeviceConfigMismatch { offset }),
            None => Ok(()),
        }
    }

    fn plan_queue(
        &self,
        neg: &Negotiation,
        index: u16,
        max_size: u16,
        q: &QueueContext,
    ) -> Result<(QueueRegisters, QueueStart), ContextError> {
        let c = &q.config;
        let bad = |reason| ContextError::QueueConfig { index, reason };
        if c.size == 0 || c.size > max_size {
            return Err(bad("size is 0 or above the device's maximum"));
        }
        if c.enabled && !neg.has(status::FEATURES_OK) {
            return Err(bad("enabled before FEATURES_OK"));
        }
        let regs = QueueRegisters {
            max_size,
            size: c.size,
            enabled: c.enabled,
            desc: c.desc,
            driver: c.driver,
            device: c.device,
        };
        let kind = neg.ring_kind();
        let config = regs.config(kind, neg.ring_features());
        let state_err = |source| ContextError::QueueState { index, source };
        if c.enabled {
            config
                .validate(&*self.mem)
                .map_err(|source| ContextError::QueueLayout { index, source })?;
        }
        let start = if c.enabled && neg.queues_start() && self.admin_silent() {
            // Seed 004: no virtqueue memory access unless Active. Checked without the ring now;
            // started against it when the device is next live (see the admin section of core).
            check_state_shape(Some(kind), c.size, &q.state, &*self.mem).map_err(state_err)?;
            if neg.has(status::DRIVER_OK) {
                QueueStart::Deferred(q.state.clone())
            } else {
                QueueStart::Recorded(Some(q.state.clone()))
            }
        } else if c.enabled && neg.queues_start() {
            let live = Virtqueue::from_state(config, &q.state, &*self.mem).map_err(state_err)?;
            if neg.has(status::DRIVER_OK) {
                QueueStart::Live(live)
            } else {
                QueueStart::Recorded(Some(q.state.clone()))
            }
        } else {
            // Not started: checked as far as it can be without a ring (the kind is known only
            // after FEATURES_OK); the full check runs when the queue starts, as for a state the
            // driver writes (spec-notes §3).
            let known = neg.has(status::FEATURES_OK).then_some(kind);
            check_state_shape(known, c.size, &q.state, &*self.mem).map_err(state_err)?;
            let initial = q.state == QueueState::initial(kind);
            QueueStart::Recorded((!initial).then(|| q.state.clone()))
        };
        Ok((regs, start))
    }

    fn apply_plan(&mut self, plan: RestorePlan) -> Result<(), ContextError> {
        let has = |bit: u8| plan.status & bit != 0;
        let quiet = |bit| {
            if has(bit) {
                Quiet::Presented
            } else {
                Quiet::No
            }
        };
        self.status = plan.status;
        self.driver_features = plan.driver_features;
        self.config_generation = plan.config_generation;
        self.stop = quiet(status::DEVICE_STOPPED);
        self.suspend = quiet(status::SUSPEND);
        self.deferred_config.clear();
        self.last_error = None;
        self.admin.queues_unstarted = false;
        let suspended = has(status::SUSPEND);
        for (slot, (regs, start)) in self.queues.iter_mut().zip(plan.queues) {
            slot.regs = regs;
            slot.kicked = false;
            match start {
                QueueStart::Live(queue) => {
                    slot.live = Some(queue);
                    slot.handover = true;
                    slot.state = None;
                    slot.restored = false;
                    // Re-check on the first live moment: buffers may have been made available
                    // while the device was moving (pitfall 4).
                    slot.kicked = true;
                }
                QueueStart::Deferred(state) => {
                    slot.live = None;
                    slot.restored = false;
                    slot.state = Some(state);
                    self.admin.queues_unstarted = true;
                }
                QueueStart::Recorded(state) => {
                    slot.live = None;
                    // As a driver-written state (set_queue_state), except for a suspension,
                    // whose recorded state resumes exactly as the source's would.
                    slot.restored = state.is_some() && !suspended;
                    slot.state = state;
                }
            }
        }
        self.device.reset();
        let mut result = self.device.restore_state(&plan.device_state);
        let started =
            has(status::DRIVER_OK) && !has(status::DEVICE_NEEDS_RESET) && !has(status::FAILED);
        if result.is_ok() && started {
            result = self.device.activate(plan.driver_features);
        }
        if let Err(e) = result {
            self.needs_reset(e.clone());
            return Err(ContextError::DeviceRestore(e));
        }
        self.process_pending();
        Ok(())
    }
}
