//! The machine's side of a migration, in the steps the engine drives (seed 004, admin
//! commands through the owner): on the source, device pre-copy reads while Active, Stop then
//! Freeze, the final context reads, and the way back to running when the migration is
//! abandoned; on the destination, checking a context before anything is applied (including a
//! dry run of the ring checks against the received memory), loading the guest while the
//! members stay frozen, and activating it on Commit.

use std::time::{Duration, Instant};

use virtio_lm_device::context::decode;
use virtio_lm_device::QuiesceMode;
use virtio_lm_queue::{DeviceQueue, RingFeatures, RingKind, Virtqueue};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};

use crate::guest::blk::BlkGuest;
use crate::guest::dirtier::Dirtier;
use crate::guest::net::NetGuest;
use crate::guest::{lock, VcpuState};
use crate::inband::{is_inband, negotiated, read_inband};
use crate::machine::{restore_guest, Loaded, Machine, MachineError, CONTEXT_CHUNK, PAUSE_TIMEOUT};

/// What a destination must match of one member function (the Config section's device entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member number under the owner (VF number).
    pub member: u64,
    /// Virtio device type.
    pub device_type: u32,
    /// Features the device offers.
    pub device_features: u64,
    /// Features the driver negotiated (0 before the guest set them).
    pub driver_features: u64,
    /// Number of virtqueues.
    pub num_queues: u16,
    /// The device configuration space as the device presents it.
    pub config_space: Vec<u8>,
}

impl Machine {
    /// The members as a destination must have them.
    pub fn member_info(&self) -> Vec<MemberInfo> {
        self.members()
            .into_iter()
            .zip(self.functions())
            .map(|(member, function)| {
                let core = lock(function.core());
                // The context's DEVICE_CONFIG is the whole space, as the device presents it.
                let config = core
                    .snapshot_context()
                    .map(|c| c.device_config)
                    .unwrap_or_default();
                MemberInfo {
                    member,
                    device_type: core.device_type(),
                    device_features: core.device_features(),
                    driver_features: core.driver_features(),
                    num_queues: core.num_queues(),
                    config_space: config,
                }
            })
            .collect()
    }

    /// Chooses how the members quiesce on the next Stop (`--inflight`): drain, or record
    /// in-flight requests in the context.
    pub fn set_inflight(&self, mode: QuiesceMode) {
        for function in self.functions() {
            lock(function.core()).set_quiesce_mode(mode);
        }
    }

    /// Every member's context as it stands (DEV_CTX_READ, allowed in every mode: in Active it
    /// is a pre-copy, in Freeze the final one). Each read starts with DEV_CTX_DISCARD: a read
    /// stream lasts until the mode changes, so after a migration cancelled before Stop the
    /// next one's pre-copy read would otherwise find the old stream read to its end (seed 004:
    /// after DISCARD the next READ is "as if VIRTIO_ADMIN_CMD_DEV_CTX_READ was never received").
    ///
    /// Under v1.4 each is the member's device parts instead (DEV_PARTS_METADATA_GET SIZE and
    /// DEV_PARTS_GET ALL through a GET object kept for the migration; spec-decisions §36).
    pub fn read_contexts(&self) -> Result<Vec<(u64, Vec<u8>)>, MachineError> {
        if self.options.profile == Profile::V1_4 {
            return self.read_parts();
        }
        let mut admin = lock(&self.admin);
        let mut contexts = Vec::new();
        for member in self.members() {
            admin.dev_ctx_discard(member)?;
            contexts.push((member, admin.dev_ctx_read_all(member, CONTEXT_CHUNK)?));
        }
        Ok(contexts)
    }

    /// The final read of every member, once they are stopped: [`Self::read_contexts`], and
    /// under v1.4 the GET objects destroyed after it, as Linux's virtio-vfio-pci leaves
    /// STOP_COPY.
    pub fn read_final_contexts(&self) -> Result<Vec<(u64, Vec<u8>)>, MachineError> {
        let contexts = self.read_contexts()?;
        self.end_device_reads()?;
        Ok(contexts)
    }

    /// Releases what the source's device reads hold (v1.4: the GET objects; nothing under the
    /// seeds, whose read stream a later DEV_CTX_DISCARD restarts): after the final read, and
    /// when a migration is abandoned at any step.
    pub fn end_device_reads(&self) -> Result<(), MachineError> {
        match self.options.profile {
            Profile::Seeds => Ok(()),
            Profile::V1_4 => self.destroy_get_objects(),
        }
    }

    /// DEV_MODE_SET Stop then Freeze on every member (Stop returns once in-process requests
    /// are drained or recorded, as the quiesce mode says); under v1.4 DEV_MODE_SET STOPPED.
    pub fn stop_devices(&self) -> Result<(), MachineError> {
        for member in self.members() {
            self.member_mode(member, DevMode::Stop)?;
            // v1.4 has one stopped mode: Stop is all of it.
            if self.options.profile == Profile::Seeds {
                self.member_mode(member, DevMode::Freeze)?;
            }
        }
        Ok(())
    }

    /// DEV_MODE_SET `mode` on every member, one after the other (the engine sets every member
    /// Stop, then every member Freeze).
    pub fn set_members_mode(&self, mode: DevMode) -> Result<(), MachineError> {
        for member in self.members() {
            self.member_mode(member, mode)?;
        }
        Ok(())
    }

    /// Back to running after an abandoned migration: every member Active (in-flight requests
    /// recorded at Stop are completed here, once) and the vCPUs resumed. Tries every step and
    /// reports the first failure.
    pub fn reactivate(&self) -> Result<(), MachineError> {
        let mut first = Ok(());
        for member in self.members() {
            if let Err(e) = self.member_mode(member, DevMode::Active) {
                first = first.and(Err(e));
            }
        }
        self.resume();
        first
    }

    /// Checks `context` for `member` without applying anything: decoded, validated by the
    /// member's device as DEV_CTX_WRITE would, and, with `rings`, each running queue's state
    /// checked against this machine's RAM as the device will check it when it next runs
    /// (ring layout, indices, in-flight chains) — a dry run on the received memory.
    pub fn check_context(
        &self,
        member: u64,
        context: &[u8],
        rings: bool,
    ) -> Result<(), MachineError> {
        let bad = |what: String| MachineError::Device(format!("member {member}: {what}"));
        if self.options.profile == Profile::V1_4 && !is_inband(context) {
            let parts = self.check_parts(member, context).map_err(bad)?;
            if rings {
                self.check_parts_rings(&parts).map_err(bad)?;
            }
            return Ok(());
        }
        let function = self
            .member_function(member)
            .map_err(|_| bad("no such member".into()))?;
        let mut ctx = decode(context).map_err(|e| bad(e.to_string()))?;
        let inband = read_inband(&ctx);
        if inband {
            // Read through the registers: no device-specific fields to validate; the
            // re-initialisation checks each register as a driver would.
            let queues = lock(function.core()).num_queues();
            if ctx.queues.len() != usize::from(queues) {
                return Err(bad(format!(
                    "{} queues in the context, {queues} here",
                    ctx.queues.len()
                )));
            }
        } else {
            lock(function.core())
                .validate_context(&ctx)
                .map_err(|e| bad(e.to_string()))?;
        }
        if !rings {
            return Ok(());
        }
        let status = DeviceStatus::from(ctx.device_status);
        // SUSPEND (seed 003 merged) presents DRIVER_OK clear on a running device.
        let running = status.contains(DeviceStatus::FEATURES_OK)
            && status.intersects(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND);
        if !running {
            return Ok(());
        }
        let profile = self.options.profile;
        let ram = self.memory.ram();
        if inband && profile == Profile::V1_4 {
            // No queue state in 1.4: the positions the load will take, from the same memory
            // (spec-decisions §38).
            ctx.set_ring_positions_from_memory(profile, &**ram)
                .map_err(|e| bad(format!("in the received memory: {e}")))?;
        }
        let driver = ctx.driver_features.first().copied().unwrap_or(0);
        let has = |f| negotiated(profile, driver, f);
        let kind = if has(Feature::RingPacked) {
            RingKind::Packed
        } else {
            RingKind::Split
        };
        let features = RingFeatures {
            event_idx: has(Feature::EventIdx),
            indirect_desc: has(Feature::IndirectDesc),
        };
        for (index, q) in ctx.queues.iter().enumerate() {
            if !q.config.enabled {
                continue;
            }
            let config = q.config.queue_config(kind, features);
            Virtqueue::from_state(config, &q.state, &**ram)
                .map_err(|e| bad(format!("queue {index} against the received memory: {e}")))?;
        }
        Ok(())
    }

    /// The destination side, before Commit: writes each member's context (DEV_CTX_WRITE; the
    /// members stay in Freeze, so nothing runs yet; a context read in-band is restored through
    /// the registers instead, short of DRIVER_OK) and builds the guest's vCPUs from `state`
    /// on this machine's memory (which must hold the source's by now), their threads started
    /// and parked at their first safe point: Commit then only lets them go, and creating
    /// threads is not part of the downtime.
    pub fn load(
        &mut self,
        contexts: &[(u64, Vec<u8>)],
        state: VcpuState,
    ) -> Result<(), MachineError> {
        if self.guest.is_some() || self.loaded.is_some() {
            return Err(MachineError::State("a guest is here already"));
        }
        let ram = self.memory.ram().clone();
        let other_blk = "the vCPU state has another blk function";
        let blk = restore_guest(&self.blk, state.blk, other_blk, |f, s| {
            BlkGuest::from_state(f, &ram, s)
        })?;
        let other_net = "the vCPU state has another net function";
        let net = restore_guest(&self.net, state.net, other_net, |f, s| {
            NetGuest::from_state(f, &ram, s)
        })?;
        let layout = &self.layout;
        let dirtier = Dirtier::restore(
            ram,
            layout.working_set_at,
            layout.working_set_len,
            self.options.dirty_rate_mib,
            state.dirtier,
        )
        .map_err(MachineError::Vcpu)?;
        let mut inband = Vec::new();
        let devices = Instant::now();
        for (member, context) in contexts {
            if is_inband(context) {
                let replay = self.load_inband(*member, context)?;
                inband.push((*member, replay));
            } else if self.options.profile == Profile::V1_4 {
                self.load_parts(*member, context)?;
            } else {
                lock(&self.admin).dev_ctx_write_all(*member, context, CONTEXT_CHUNK)?;
            }
        }
        self.device_time = devices.elapsed();
        // No vCPU runs here yet, so the pause is in force at once and every thread parks
        // before its first step.
        self.control.pause(PAUSE_TIMEOUT)?;
        self.run(blk, net, dirtier)?;
        self.loaded = Some(Loaded { inband });
        Ok(())
    }

    /// How long the device part of the last [`Self::load`] and [`Self::activate`] took: the
    /// members' contexts written or re-initialised in-band, then Active or DRIVER_OK and the
    /// announcement — not the vCPUs' rebuild or start (the destination's share of the
    /// device downtime).
    pub fn device_time(&self) -> Duration {
        self.device_time
    }

    /// Commit on the destination: every member Active (each re-checks its queues and delivers
    /// what it owes; a member restored in-band gets DRIVER_OK instead), the net device
    /// announced (VIRTIO_NET_S_ANNOUNCE and a configuration change, virtio spec 5.1.6.5.4;
    /// docs/spec-decisions.md §31), then the loaded guest's vCPUs run on.
    pub fn activate(&mut self) -> Result<(), MachineError> {
        let Loaded { mut inband } = self
            .loaded
            .take()
            .ok_or(MachineError::State("no guest is loaded"))?;
        let devices = Instant::now();
        for member in self.members() {
            if let Some(at) = inband.iter().position(|(m, _)| *m == member) {
                let (_, replay) = inband.swap_remove(at);
                self.driver_ok_inband(member, replay)?;
            } else {
                self.member_mode(member, DevMode::Active)?;
            }
        }
        if let (Some(handles), Some(function)) = (&self.net_handles, &self.net) {
            handles.announcer.announce(&mut lock(function.core()));
        }
        self.device_time += devices.elapsed();
        self.resume();
        Ok(())
    }
}
