//! Saving a [`DeviceCore`] into a [`DeviceContext`] and restoring one (spec-notes §5, seed 004).
//!
//! Declared in `core.rs` as a child module of `core` (this file lives with the rest of the
//! context code), so it works on the core's private state directly.
//!
//! Restoring validates everything first and builds a plan; only a valid plan is applied. The
//! device type's part (device-specific fields and DEVICE_CONFIG) is decoded by the device type
//! into a [`ValidatedState`] during planning: decoding is validation, and applying it cannot
//! fail. The only failure after planning is the device type's `activate`, which sets
//! DEVICE_NEEDS_RESET as any failed restore does (spec-notes §2).

use virtio_lm_queue::{DeviceQueue, QueueState, Virtqueue};
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use virtio_lm_spec::context::FieldType;

use crate::context::checks::{check_device_fields, check_state_shape, Negotiation};
use crate::context::{
    ContextError, DeviceContext, QueueContext, ValidatedState, VqConfig, VIRTIO_MSI_NO_VECTOR,
};
use crate::error::DeviceError;
use crate::queues::QueueRegisters;

/// Feature words (64 bits each) of DEVICE_FEATURES and DRIVER_FEATURES in this device: the
/// core negotiates features 0–63.
const FEATURE_WORDS: usize = 1;

/// A validated context, ready to apply.
struct RestorePlan {
    status: u8,
    driver_features: u64,
    config_generation: u8,
    queues: Vec<(QueueRegisters, QueueStart)>,
    device_state: ValidatedState,
    /// DEVICE_CONFIG, written back after the device state so driver-writable fields take the
    /// context's values (read-only ones ignore the write; the device type checked them).
    device_config: Vec<u8>,
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
        let mut device_config = vec![0; self.device.config_len()];
        self.device.read_config(0, &mut device_config);
        let device_fields = self.device.save_state();
        check_device_fields(&device_fields)?;
        Ok(DeviceContext {
            device_features: vec![self.offered],
            driver_features: vec![self.driver_features],
            device_status: self.status.bits(),
            config_generation: self.config_generation,
            device_config,
            config_msix_vector: VIRTIO_MSI_NO_VECTOR,
            queues,
            device_fields,
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
        // Seed 004: "the device MUST respond with an error ... if there is a mismatch between
        // the device context field length ... and the length of the field in the device".
        let lengths = [
            (
                FieldType::DEVICE_FEATURES,
                8 * ctx.device_features.len(),
                8 * FEATURE_WORDS,
            ),
            (
                FieldType::DRIVER_FEATURES,
                8 * ctx.driver_features.len(),
                8 * FEATURE_WORDS,
            ),
            (
                FieldType::DEVICE_CONFIG,
                ctx.device_config.len(),
                self.device.config_len(),
            ),
        ];
        if let Some((field_type, length, device)) = lengths.into_iter().find(|(_, l, d)| l != d) {
            return Err(ContextError::FieldLength {
                field_type,
                length,
                device,
            });
        }
        let neg = Negotiation {
            profile: self.profile,
            status: ctx.device_status.into(),
            driver,
        };
        neg.check_status()
            .map_err(|reason| ContextError::InvalidStatus {
                status: ctx.device_status,
                reason,
            })?;
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
        check_device_fields(&ctx.device_fields)?;
        let device_state = self
            .device
            .decode_state(&ctx.device_fields, &ctx.device_config)
            .map_err(|e| match e {
                DeviceError::ConfigMismatch { offset } => {
                    ContextError::DeviceConfigMismatch { offset }
                }
                e => ContextError::DeviceState(e),
            })?;
        Ok(RestorePlan {
            status: ctx.device_status,
            driver_features: driver,
            config_generation: ctx.config_generation,
            queues,
            device_state,
            device_config: ctx.device_config.clone(),
        })
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
        if c.enabled && !neg.has(DeviceStatus::FEATURES_OK) {
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
            if neg.has(DeviceStatus::DRIVER_OK) {
                QueueStart::Deferred(q.state.clone())
            } else {
                QueueStart::Recorded(Some(q.state.clone()))
            }
        } else if c.enabled && neg.queues_start() {
            let live = Virtqueue::from_state(config, &q.state, &*self.mem).map_err(state_err)?;
            if neg.has(DeviceStatus::DRIVER_OK) {
                QueueStart::Live(live)
            } else {
                QueueStart::Recorded(Some(q.state.clone()))
            }
        } else {
            // Not started: checked as far as it can be without a ring (the kind is known only
            // after FEATURES_OK); the full check runs when the queue starts, as for a state the
            // driver writes (spec-notes §3).
            let known = neg.has(DeviceStatus::FEATURES_OK).then_some(kind);
            check_state_shape(known, c.size, &q.state, &*self.mem).map_err(state_err)?;
            let initial = q.state == QueueState::initial(kind);
            QueueStart::Recorded((!initial).then(|| q.state.clone()))
        };
        Ok((regs, start))
    }

    fn apply_plan(&mut self, plan: RestorePlan) -> Result<(), ContextError> {
        let has = |bit| DeviceStatus::from(plan.status).contains(bit);
        let quiet = |bit| {
            if has(bit) {
                Quiet::Presented
            } else {
                Quiet::No
            }
        };
        self.status = plan.status.into();
        self.driver_features = plan.driver_features;
        self.config_generation = plan.config_generation;
        self.stop = quiet(DeviceStatus::DEVICE_STOPPED);
        self.suspend = quiet(DeviceStatus::SUSPEND);
        self.deferred_config.clear();
        self.last_error = None;
        self.admin.queues_unstarted = false;
        let suspended = has(DeviceStatus::SUSPEND);
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
        self.device.restore_state(plan.device_state);
        let started = has(DeviceStatus::DRIVER_OK)
            && !has(DeviceStatus::DEVICE_NEEDS_RESET)
            && !has(DeviceStatus::FAILED);
        if started {
            if let Err(e) = self.device.activate(plan.driver_features) {
                self.needs_reset(e.clone());
                return Err(ContextError::DeviceRestore(e));
            }
        }
        // After the device state and activation, as the driver wrote them on the source: the
        // driver-writable configuration takes the context's values (spec-decisions §5).
        self.device.write_config(0, &plan.device_config);
        self.process_pending();
        Ok(())
    }
}
