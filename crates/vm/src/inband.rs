//! The machine's side of the in-band status strategy (seeds 000, 001 and 003; spec-decisions
//! §15): the hypervisor stops each member through its own device status register (DEVICE_STOPPED
//! or SUSPEND), reads what a driver can see through the function's registers (status, features,
//! per-queue configuration and queue state, MSI-X vectors, configuration space), and on the
//! destination re-initialises the device as a driver would, setting the queue state before
//! DRIVER_OK. No owner device takes part on the source. The state read here travels in the
//! same context encoding as the admin strategy's; its DEVICE_STATUS carries the stop bit, which
//! is how the destination knows to restore it in-band.
//!
//! Under the v1.4 profile (spec-decisions §38) the stop is SUSPEND and there is no queue state
//! to read or write: the destination takes each ring's position from the guest memory it
//! received (spec-decisions §32) and sets it into the device through the hypervisor's own
//! call, where the seeds profile writes the queue-state registers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_device::context::{
    decode, encode, DeviceContext, DeviceField, QueueContext, VqConfig,
};
use virtio_lm_pci::{discover, PciTransport, Regions};
use virtio_lm_queue::{QueuePosition, QueueState, RingKind, RingPosition};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};

use crate::ctrl_replay::CtrlReplay;
use crate::ctrl_shadow::{self, SHADOW_FIELD};
use crate::guest::lock;
use crate::machine::{Machine, MachineError};

/// Which status bit stops the devices (`--status-bit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusBit {
    /// Seed 000: DEVICE_STOPPED (32), feature VIRTIO_F_DEVICE_STOP.
    Stopped,
    /// Seed 003 / merged 1.4: SUSPEND (16), feature VIRTIO_F_SUSPEND.
    Suspend,
}

impl StatusBit {
    /// The `--status-bit` spelling.
    pub fn name(self) -> &'static str {
        match self {
            StatusBit::Stopped => "stopped",
            StatusBit::Suspend => "suspend",
        }
    }

    fn feature(self) -> Feature {
        match self {
            StatusBit::Stopped => Feature::DeviceStop,
            StatusBit::Suspend => Feature::Suspend,
        }
    }

    fn bit(self) -> DeviceStatus {
        match self {
            StatusBit::Stopped => DeviceStatus::DEVICE_STOPPED,
            StatusBit::Suspend => DeviceStatus::SUSPEND,
        }
    }

    /// True once the device presents the stop (seed 003 merged: SUSPEND=1 and DRIVER_OK=0).
    fn presented(self, s: DeviceStatus) -> bool {
        match self {
            StatusBit::Stopped => s.contains(DeviceStatus::DEVICE_STOPPED),
            StatusBit::Suspend => {
                s.contains(DeviceStatus::SUSPEND) && !s.intersects(DeviceStatus::DRIVER_OK)
            }
        }
    }
}

type Function = virtio_lm_pci::VirtioPciFunction<crate::GuestRam>;

/// The context field (empty) that marks an in-band context of a device that was not running
/// at the stop, so had no status bit to set (spec-decisions §40): one below the shadow's.
const RESTING_FIELD: FieldType = FieldType(0x03FE);

/// The longest wait for the device to present a status change: only a hung device reaches it.
const STATUS_DEADLINE: Duration = Duration::from_secs(60);
/// Status re-reads back to back before [`Registers::wait`] starts sleeping between them.
const SPINS: u32 = 32;
/// The longest sleep between two status re-reads.
const MAX_POLL_PAUSE: Duration = Duration::from_micros(100);

/// One function seen through its registers, as a hypervisor's vDPA backend sees it.
struct Registers<'a> {
    function: &'a Function,
    transport: &'a dyn PciTransport,
    regions: Regions,
    /// The seeds profile has queue-state registers; v1.4 does not (spec-decisions §38).
    profile: Profile,
}

impl<'a> Registers<'a> {
    fn new(function: &'a Function) -> Result<Self, MachineError> {
        let transport: &dyn PciTransport = function;
        Ok(Self {
            function,
            regions: discover(transport)?,
            transport,
            profile: lock(function.core()).profile(),
        })
    }

    /// Bytes of device configuration: the backend says how many, as vhost-vdpa's
    /// VHOST_VDPA_GET_CONFIG_SIZE does (the region itself is a whole page). Asked only where
    /// the space is read: it is not cheap, and the stop is on the downtime's path.
    fn config_len(&self) -> usize {
        lock(self.function.core()).config_len()
    }

    fn read<const N: usize>(&self, field: usize) -> [u8; N] {
        let mut b = [0u8; N];
        self.transport
            .read(self.regions.common.offset + field as u64, &mut b);
        b
    }

    fn write(&self, field: usize, data: &[u8]) {
        self.transport
            .write(self.regions.common.offset + field as u64, data);
    }

    fn read16(&self, field: usize) -> u16 {
        u16::from_le_bytes(self.read(field))
    }

    fn read32(&self, field: usize) -> u32 {
        u32::from_le_bytes(self.read(field))
    }

    fn read64(&self, field: usize) -> u64 {
        u64::from(self.read32(field)) | (u64::from(self.read32(field + 4)) << 32)
    }

    fn write16(&self, field: usize, v: u16) {
        self.write(field, &v.to_le_bytes());
    }

    fn write32(&self, field: usize, v: u32) {
        self.write(field, &v.to_le_bytes());
    }

    fn write64(&self, field: usize, v: u64) {
        self.write32(field, v as u32);
        self.write32(field + 4, (v >> 32) as u32);
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.read::<1>(offset::DEVICE_STATUS)[0])
    }

    fn set_status(&self, s: DeviceStatus) {
        self.write(offset::DEVICE_STATUS, &[s.bits()]);
    }

    /// Re-reads the status until `done` (the device presents what was written). A few
    /// re-reads back to back (most changes are presented at once), then short sleeps growing
    /// to [`MAX_POLL_PAUSE`]: a stop waits for requests the device's threads complete, and on
    /// a loaded machine a reader that only yields takes the CPU they need.
    fn wait(
        &self,
        what: &str,
        done: impl Fn(DeviceStatus) -> bool,
    ) -> Result<DeviceStatus, MachineError> {
        let start = Instant::now();
        let mut spins = 0u32;
        let mut pause = Duration::from_micros(5);
        loop {
            let s = self.status();
            if done(s) {
                return Ok(s);
            }
            if s.contains(DeviceStatus::DEVICE_NEEDS_RESET) || start.elapsed() > STATUS_DEADLINE {
                return Err(MachineError::Device(format!(
                    "{what}: the device presents {s:?}"
                )));
            }
            if spins < SPINS {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_POLL_PAUSE);
            }
        }
    }

    /// An available-buffer notification of queue `index`, as a driver sends it.
    fn notify(&self, index: u16) {
        self.write16(offset::QUEUE_SELECT, index);
        let off = self.read16(offset::QUEUE_NOTIFY_OFF);
        let at = self.regions.notify.offset
            + u64::from(off) * u64::from(self.regions.notify_off_multiplier);
        self.transport.write(at, &index.to_le_bytes());
    }

    fn features(&self, select: usize, window: usize) -> u64 {
        self.write32(select, 0);
        let low = self.read32(window);
        self.write32(select, 1);
        u64::from(low) | (u64::from(self.read32(window)) << 32)
    }

    fn config_space(&self) -> Vec<u8> {
        let Some(region) = self.regions.device else {
            return Vec::new();
        };
        let mut b = vec![0u8; self.config_len().min(region.length as usize)];
        self.transport.read(region.offset, &mut b);
        b
    }

    /// Everything a driver can read, as a context (the device must be stopped or suspended).
    /// Under v1.4 the queue state is left at zero: 1.4's common configuration ends before the
    /// seed 001 registers, and the destination finds each position in guest memory.
    fn context(&self) -> DeviceContext {
        let num_queues = self.read16(offset::NUM_QUEUES);
        let queues = (0..num_queues)
            .map(|index| {
                self.write16(offset::QUEUE_SELECT, index);
                QueueContext {
                    config: VqConfig {
                        size: self.read16(offset::QUEUE_SIZE),
                        msix_vector: self.read16(offset::QUEUE_MSIX_VECTOR),
                        enabled: self.read16(offset::QUEUE_ENABLE) != 0,
                        desc: self.read64(offset::QUEUE_DESC),
                        driver: self.read64(offset::QUEUE_DRIVER),
                        device: self.read64(offset::QUEUE_DEVICE),
                    },
                    state: self.queue_state(),
                }
            })
            .collect();
        DeviceContext {
            device_features: vec![
                self.features(offset::DEVICE_FEATURE_SELECT, offset::DEVICE_FEATURE)
            ],
            driver_features: vec![
                self.features(offset::DRIVER_FEATURE_SELECT, offset::DRIVER_FEATURE)
            ],
            device_status: self.status().bits(),
            config_generation: self.read::<1>(offset::CONFIG_GENERATION)[0],
            device_config: self.config_space(),
            config_msix_vector: self.read16(offset::CONFIG_MSIX_VECTOR),
            queues,
            device_fields: Vec::new(),
        }
    }

    /// The selected queue's seed 001 state registers (zero under v1.4, which has none).
    fn queue_state(&self) -> QueueState {
        let seeds = self.profile == Profile::Seeds;
        let read = |field| if seeds { self.read16(field) } else { 0 };
        QueueState {
            avail_state: read(offset::QUEUE_AVAIL_STATE),
            used_state: read(offset::QUEUE_USED_STATE),
            notification_owed: false,
            inflight: Vec::new(),
        }
    }

    /// Sets the selected queue `index` to `state` before DRIVER_OK: through the seed 001
    /// registers, read back; under v1.4, which has none, through the device's hypervisor-side
    /// call (vhost's SET_VRING_BASE; spec-decisions §38).
    fn set_queue_state(
        &self,
        index: u16,
        state: &QueueState,
        packed: bool,
    ) -> Result<(), MachineError> {
        if self.profile == Profile::V1_4 {
            // Drained (§15), so the next buffer to take is the next to use: one position.
            let position = if packed {
                QueuePosition::Packed(RingPosition::from_state(state.avail_state))
            } else {
                QueuePosition::Split(state.avail_state)
            };
            return lock(self.function.core())
                .set_queue_position(index, position)
                .map_err(|e| MachineError::Device(format!("queue {index}: {e}")));
        }
        self.write16(offset::QUEUE_AVAIL_STATE, state.avail_state);
        self.write16(offset::QUEUE_USED_STATE, state.used_state);
        let read = (
            self.read16(offset::QUEUE_AVAIL_STATE),
            self.read16(offset::QUEUE_USED_STATE),
        );
        if read != (state.avail_state, state.used_state) {
            return Err(MachineError::Device(format!(
                "queue {index}: state {read:?} not accepted"
            )));
        }
        Ok(())
    }

    /// The destination's re-initialisation, as a driver would do it, up to (not including)
    /// DRIVER_OK: reset, ACKNOWLEDGE, DRIVER, the same features, FEATURES_OK, the
    /// configuration vector, each queue's configuration and state (seed 001: written between
    /// FEATURES_OK and DRIVER_OK), then the configuration writes. A device that was not
    /// running at the stop (no stop bit in `ctx`) is taken only as far as the driver had taken
    /// it: the status bits it shows, the features written, the queues configured; the queue
    /// state only where it is not the initial one (spec-decisions §40).
    fn reinitialise(&self, ctx: &DeviceContext) -> Result<(), MachineError> {
        let bad = |what: String| Err(MachineError::Device(what));
        let running = stopped_inband(ctx.device_status);
        let want = DeviceStatus::from_bits_retain(ctx.device_status);
        let wanted = |bit| running || want.contains(bit);
        self.set_status(DeviceStatus::RESET);
        self.wait("reset", |s| s.is_empty())?;
        let mut s = DeviceStatus::RESET;
        for bit in [DeviceStatus::ACKNOWLEDGE, DeviceStatus::DRIVER] {
            if wanted(bit) {
                s |= bit;
                self.set_status(s);
            }
        }
        let features = ctx.driver_features.first().copied().unwrap_or(0);
        if s.contains(DeviceStatus::DRIVER) && (running || features != 0) {
            self.regions.write_driver_features(self.transport, features);
        }
        if wanted(DeviceStatus::FEATURES_OK) {
            s |= DeviceStatus::FEATURES_OK;
            self.set_status(s);
            if !self.status().contains(DeviceStatus::FEATURES_OK) {
                return bad(format!("features {features:#x} not accepted"));
            }
        }
        if self.read16(offset::CONFIG_MSIX_VECTOR) != ctx.config_msix_vector {
            self.write16(offset::CONFIG_MSIX_VECTOR, ctx.config_msix_vector);
        }
        let packed = negotiated(self.profile, features, Feature::RingPacked);
        let initial = initial_state(self.profile, features);
        for (index, q) in (0u16..).zip(&ctx.queues) {
            self.write16(offset::QUEUE_SELECT, index);
            if !q.config.enabled {
                self.configure_disabled_queue(&q.config);
                continue;
            }
            self.write16(offset::QUEUE_SIZE, q.config.size);
            self.write64(offset::QUEUE_DESC, q.config.desc);
            self.write64(offset::QUEUE_DRIVER, q.config.driver);
            self.write64(offset::QUEUE_DEVICE, q.config.device);
            self.write16(offset::QUEUE_MSIX_VECTOR, q.config.msix_vector);
            let state = (q.state.avail_state, q.state.used_state);
            // A device not running keeps its initial state unless the driver wrote another
            // (§40); under v1.4 the source reads no state at all, so there is none to write.
            if running || (self.profile == Profile::Seeds && state != initial) {
                self.set_queue_state(index, &q.state, packed)?;
            }
            if self.read16(offset::QUEUE_MSIX_VECTOR) != q.config.msix_vector {
                return bad(format!("queue {index}: MSI-X vector not accepted"));
            }
            self.write16(offset::QUEUE_ENABLE, 1);
        }
        // Only what the driver changed: the rest of the space is the device's own (equal on
        // both sides, which the Config check made sure of).
        if let Some(region) = self.regions.device {
            let ours = self.config_space();
            for (at, (&theirs, &mine)) in ctx.device_config.iter().zip(&ours).enumerate() {
                if theirs != mine {
                    self.transport.write(region.offset + at as u64, &[theirs]);
                }
            }
        }
        if !running && want.contains(DeviceStatus::FAILED) {
            self.set_status(s | DeviceStatus::FAILED);
        }
        Ok(())
    }

    /// The selected queue's registers as the driver left them, while it is not enabled (a
    /// driver part-way through configuring it): only those that differ from this device's.
    fn configure_disabled_queue(&self, c: &VqConfig) {
        if self.read16(offset::QUEUE_SIZE) != c.size {
            self.write16(offset::QUEUE_SIZE, c.size);
        }
        for (field, value) in [
            (offset::QUEUE_DESC, c.desc),
            (offset::QUEUE_DRIVER, c.driver),
            (offset::QUEUE_DEVICE, c.device),
        ] {
            if self.read64(field) != value {
                self.write64(field, value);
            }
        }
        if self.read16(offset::QUEUE_MSIX_VECTOR) != c.msix_vector {
            self.write16(offset::QUEUE_MSIX_VECTOR, c.msix_vector);
        }
    }
}

/// A queue's state registers before it ever ran, in the ring format `features` choose.
fn initial_state(profile: Profile, features: u64) -> (u16, u16) {
    let kind = if negotiated(profile, features, Feature::RingPacked) {
        RingKind::Packed
    } else {
        RingKind::Split
    };
    let state = QueueState::initial(kind);
    (state.avail_state, state.used_state)
}

/// Whether `driver_features`, numbered by `profile`, include `feature`.
pub(crate) fn negotiated(profile: Profile, driver_features: u64, feature: Feature) -> bool {
    profile
        .bit(feature)
        .is_some_and(|b| driver_features & (1u64 << b) != 0)
}

/// True if `context` was read in-band (its DEVICE_STATUS shows the status-register stop, or
/// it is marked as read from a device that was not running).
pub(crate) fn is_inband(context: &[u8]) -> bool {
    decode(context).is_ok_and(|c| read_inband(&c))
}

/// [`is_inband`] of a decoded context.
pub(crate) fn read_inband(ctx: &DeviceContext) -> bool {
    stopped_inband(ctx.device_status) || resting(ctx)
}

/// Whether `ctx` is marked as read in-band from a device that was not running (§40).
fn resting(ctx: &DeviceContext) -> bool {
    ctx.device_fields
        .iter()
        .any(|f| f.field_type == RESTING_FIELD)
}

/// True if `status` shows a status-register stop (DEVICE_STOPPED or SUSPEND).
pub(crate) fn stopped_inband(status: u8) -> bool {
    DeviceStatus::from_bits_retain(status)
        .intersects(DeviceStatus::DEVICE_STOPPED | DeviceStatus::SUSPEND)
}

/// The features a driver must have negotiated for the status strategy to stop it with `bit`:
/// the bit's own and, under the seeds profile, VIRTIO_F_QUEUE_STATE (v1.4 has none; the ring
/// position comes from guest memory, spec-decisions §38).
fn needed_features(profile: Profile, bit: StatusBit) -> Vec<Feature> {
    let mut needed = vec![bit.feature()];
    if profile == Profile::Seeds {
        needed.push(Feature::QueueState);
    }
    needed
}

/// Fails unless `function`'s driver negotiated every feature of `needed` (without them a
/// driver may not set the bit nor write queue state).
fn negotiated_for(
    member: u64,
    function: &Function,
    needed: &[Feature],
) -> Result<(), MachineError> {
    let (profile, driver) = {
        let core = lock(function.core());
        (core.profile(), core.driver_features())
    };
    for &feature in needed {
        if !negotiated(profile, driver, feature) {
            return Err(MachineError::Device(format!(
                "member {member}: the guest did not negotiate {} (negotiated {driver:#x}); \
                 the status strategy needs it",
                feature.name()
            )));
        }
    }
    Ok(())
}

/// What a member loaded in-band needs on Commit.
pub(crate) struct InbandCommit {
    /// DRIVER_OK: the device was running at the stop (otherwise the guest's driver goes on
    /// initialising it, §40).
    driver_ok: bool,
    /// The control-queue replay to run (§21).
    replay: Option<CtrlReplay>,
}

impl Machine {
    /// The status strategy's preconditions, checked at Start: every member's driver
    /// negotiated `bit`'s feature and, under the seeds profile, VIRTIO_F_QUEUE_STATE (without
    /// them a driver may not set the bit nor write queue state). Under v1.4 (spec-decisions
    /// §38) there is no DEVICE_STOPPED. (A v1.4 packed ring without VIRTIO_F_EVENT_IDX, which
    /// no strategy can migrate, the engine refuses before it asks, spec-decisions §36.)
    pub fn check_inband(&self, bit: StatusBit) -> Result<(), MachineError> {
        let profile = self.options.profile;
        if profile == Profile::V1_4 && bit == StatusBit::Stopped {
            return Err(MachineError::Device(
                "virtio 1.4 (the v1.4 profile) has no DEVICE_STOPPED: the status strategy \
                 stops a v1.4 guest with --status-bit suspend"
                    .into(),
            ));
        }
        let needed = needed_features(profile, bit);
        for (member, function) in self.members().into_iter().zip(self.functions()) {
            // A driver before FEATURES_OK has negotiated nothing yet (it is initialising the
            // device, §40): the stop checks again what it negotiates by then.
            let status = lock(function.core()).status();
            if status.contains(DeviceStatus::FEATURES_OK) {
                negotiated_for(member, &function, &needed)?;
            }
        }
        Ok(())
    }

    /// Stops every member through its status register (the vCPUs are paused): sets `bit`
    /// and re-reads until the device presents it — the device completes what it is
    /// processing first (seed 000 / 003), so in-flight requests always drain.
    /// A device not at DRIVER_OK (the guest initialising or resetting it) is not running:
    /// there is nothing to stop, and it travels as its register state (spec-decisions §40).
    pub fn stop_inband(&self, bit: StatusBit) -> Result<(), MachineError> {
        for (member, function) in self.members().into_iter().zip(self.functions()) {
            let regs = Registers::new(&function)?;
            let s = regs.status();
            if !s.contains(DeviceStatus::DRIVER_OK) {
                continue;
            }
            negotiated_for(
                member,
                &function,
                &needed_features(self.options.profile, bit),
            )?;
            regs.set_status(s | bit.bit());
            regs.wait("stopping in-band", |s| bit.presented(s))?;
        }
        Ok(())
    }

    /// Every member's state read through its registers, encoded as a context; the net
    /// member's carries the hypervisor's control-queue shadow besides (spec-decisions §21).
    pub fn read_inband(&self) -> Result<Vec<(u64, Vec<u8>)>, MachineError> {
        let mut out = Vec::new();
        for (member, function) in self.members().into_iter().zip(self.functions()) {
            let mut ctx = Registers::new(&function)?.context();
            if !stopped_inband(ctx.device_status) {
                ctx.device_fields
                    .push(DeviceField::new(RESTING_FIELD, Vec::new()));
            }
            if self.is_net(&function) {
                let shadow = self.net_handles.as_ref().and_then(|h| h.shadow.field());
                ctx.device_fields.extend(shadow);
            }
            let bytes = encode(&ctx).map_err(|e| MachineError::Device(e.to_string()))?;
            out.push((member, bytes));
        }
        Ok(out)
    }

    /// Back to running after an abandoned in-band migration: each member resumed through its
    /// status register (DEVICE_STOPPED cleared; or DRIVER_OK set again after SUSPEND), then the
    /// vCPUs. Tries every step and reports the first failure.
    pub fn resume_inband(&self, bit: StatusBit) -> Result<(), MachineError> {
        let mut first = Ok(());
        for function in self.functions() {
            let step = Registers::new(&function).and_then(|regs| {
                let s = regs.status();
                if !s.intersects(bit.bit()) {
                    return Ok(());
                }
                match bit {
                    StatusBit::Stopped => {
                        regs.set_status(s & !DeviceStatus::DEVICE_STOPPED);
                        regs.wait("resuming from DEVICE_STOPPED", |s| {
                            !s.intersects(DeviceStatus::DEVICE_STOPPED)
                        })
                    }
                    StatusBit::Suspend => {
                        regs.set_status(s | DeviceStatus::DRIVER_OK);
                        regs.wait("resuming from SUSPEND", |s| {
                            !s.intersects(DeviceStatus::SUSPEND)
                                && s.contains(DeviceStatus::DRIVER_OK)
                        })
                    }
                }
                .map(|_| ())
            });
            first = first.and(step);
        }
        self.resume();
        first
    }

    fn is_net(&self, function: &Arc<Function>) -> bool {
        self.net.as_ref().is_some_and(|n| Arc::ptr_eq(n, function))
    }

    /// Destination, before Commit: takes `member` out of the Freeze it was built in (it is
    /// at status 0, with nothing to process) and re-initialises it from `context` as a driver
    /// would, short of DRIVER_OK. A control-queue shadow in the context is written into the
    /// idle control queue, its state rewound by the commands, to run at DRIVER_OK (§21). Under
    /// v1.4 each queue's state is first taken from the ring in guest memory (§38).
    pub(crate) fn load_inband(
        &self,
        member: u64,
        context: &[u8],
    ) -> Result<InbandCommit, MachineError> {
        let bad = |e: String| MachineError::Device(format!("member {member}: {e}"));
        let mut ctx = decode(context).map_err(|e| bad(e.to_string()))?;
        let function = self.member_function(member)?;
        let profile = self.options.profile;
        if profile == Profile::V1_4 {
            ctx.set_ring_positions_from_memory(profile, &**self.memory.ram())
                .map_err(|e| bad(format!("in the received memory: {e}")))?;
        }
        let mut replay = None;
        let shadow = ctx
            .device_fields
            .iter()
            .find(|f| f.field_type == SHADOW_FIELD);
        let driver_ok = stopped_inband(ctx.device_status);
        if let Some(field) = shadow {
            let commands = ctrl_shadow::decode(&field.value).map_err(bad)?;
            if !self.is_net(&function) {
                return Err(bad("a control-queue shadow for a device without one".into()));
            }
            if !driver_ok {
                return Err(bad("a control-queue shadow for a device not running".into()));
            }
            let features = ctx.driver_features.first().copied().unwrap_or(0);
            let packed = negotiated(profile, features, Feature::RingPacked);
            // The control queue is the device's last (after every receive/transmit pair).
            let index = ctx
                .queues
                .len()
                .checked_sub(1)
                .ok_or_else(|| bad("no queues".into()))?;
            let q = &mut ctx.queues[index];
            if !q.config.enabled {
                return Err(bad("a control-queue shadow but no control queue".into()));
            }
            let (prepared, rewound) = CtrlReplay::prepare(
                self.memory.ram(),
                index as u16,
                &q.config,
                &q.state,
                packed,
                commands,
            )
            .map_err(bad)?;
            q.state = rewound;
            replay = Some(prepared);
        }
        self.member_mode(member, DevMode::Active)?;
        Registers::new(&function)?.reinitialise(&ctx)?;
        Ok(InbandCommit { driver_ok, replay })
    }

    /// Destination, on Commit: DRIVER_OK on `member`; the device resumes where the source
    /// stopped — after running the control-queue replay, if any, to its acknowledgements. A
    /// device that was not running stays as loaded: the guest's driver goes on with it.
    pub(crate) fn driver_ok_inband(
        &self,
        member: u64,
        commit: InbandCommit,
    ) -> Result<(), MachineError> {
        let InbandCommit { driver_ok, replay } = commit;
        if !driver_ok {
            return Ok(());
        }
        let function = self.member_function(member)?;
        let regs = Registers::new(&function)?;
        regs.set_status(regs.status() | DeviceStatus::DRIVER_OK);
        regs.wait("DRIVER_OK", |s| s.contains(DeviceStatus::DRIVER_OK))?;
        if let Some(replay) = replay {
            regs.notify(replay.queue);
            replay
                .finish(self.memory.ram())
                .map_err(|e| MachineError::Device(format!("member {member}: {e}")))?;
        }
        Ok(())
    }
}
