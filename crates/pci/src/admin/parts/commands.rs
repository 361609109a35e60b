//! The member commands of device parts: DEV_PARTS_METADATA_GET, DEV_PARTS_GET, DEV_PARTS_SET
//! and DEV_MODE_SET (virtio 1.4 "Device parts"; spec-decisions §17).
//!
//! Stopped is the core's Freeze: no guest memory access, no interrupt, driver writes ignored,
//! so the parts do not change. DEV_PARTS_SET stages the parts (checked in full, nothing
//! applied); resuming applies what was staged, then runs the member. A running queue resumes
//! at the ring position it finds in guest memory (split: `used.idx`; packed: the position the
//! stopped source recorded, EVENT_IDX required), checked first (spec-decisions §32).

use virtio_lm_device::{AdminModeChange, AdminModeError, DeviceCore};
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{qualifier, status, DevMode};
use virtio_lm_spec::parts::{
    decode_parts, part_type, DevPartHdr, DevPartsTypedData, MetadataHead, Part, ResourceObjHdr,
    DEV_MODE_FLAGS_STOPPED, DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET, GET_TYPE_ALL,
    GET_TYPE_SELECTED, METADATA_TYPE_COUNT, METADATA_TYPE_LIST, METADATA_TYPE_SIZE,
};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::GuestMemory;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use super::codec::{parts_of, select, stage, Vectors};
use super::objects::{busy, data, missing};
use super::{einval, PartsState, Staged};
use crate::admin::decode::{AdminCommand, AdminResult};
use crate::admin::dispatch::{ModeWait, Outcome};
use crate::admin::sriov::SriovGroup;
use crate::interrupts::MsixInterrupts;

fn field() -> AdminResult {
    einval(qualifier::Q_INVALID_FIELD)
}

fn no_room() -> AdminResult {
    AdminResult::error(status::ENOMEM, qualifier::Q_NORESOURCE)
}

fn vectors_of<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
    irq: &MsixInterrupts,
) -> Vectors {
    Vectors {
        config: irq.config_vector(),
        queues: (0..core.num_queues())
            .map(|q| (q, irq.queue_vector(q)))
            .collect(),
    }
}

fn metadata_head(value: usize) -> MetadataHead {
    MetadataHead {
        value: U32::new(u32::try_from(value).unwrap_or(u32::MAX)),
        reserved: U32::ZERO,
    }
}

impl PartsState {
    /// The object `id` of the member, which must be of `kind`.
    fn object_of(&self, cmd: &AdminCommand, kind: u8) -> Result<(), AdminResult> {
        let id = data::<ResourceObjHdr>(cmd).id.get();
        match self.objects.get(&id) {
            Some(o) if o.member != cmd.group_member_id => Err(missing()),
            Some(o) if o.kind != kind => Err(busy()),
            Some(_) => Ok(()),
            None => Err(missing()),
        }
    }

    pub(super) fn member_command<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        group: &mut SriovGroup<M>,
        cmd: &AdminCommand,
        capacity: usize,
    ) -> Outcome {
        let generation = group.generation;
        let Some(member) = group.member(cmd.group_member_id) else {
            return Outcome::Done(einval(qualifier::Q_INVALID_MEMBER));
        };
        let function = member.function.clone();
        let irq = function.interrupts().clone();
        let mut core = function.core().lock().unwrap_or_else(|e| e.into_inner());
        if core.admin_mode_pending() {
            return Outcome::Done(AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN));
        }
        let result = match cmd.opcode {
            v1_4::DEV_PARTS_METADATA_GET | v1_4::DEV_PARTS_GET => {
                match self.object_of(cmd, DEV_PARTS_TYPE_GET) {
                    Err(e) => e,
                    Ok(()) => self.get(&core, &irq, cmd, capacity),
                }
            }
            v1_4::DEV_PARTS_SET => match self.object_of(cmd, DEV_PARTS_TYPE_SET) {
                Err(e) => e,
                Ok(()) => self.set(&core, &irq, cmd),
            },
            _ => {
                let [flags] = cmd.data_as::<1>();
                if flags & !DEV_MODE_FLAGS_STOPPED != 0 {
                    field()
                } else if flags & DEV_MODE_FLAGS_STOPPED != 0 {
                    if self.defects.ignore_stopped {
                        return Outcome::Done(AdminResult::ok(Vec::new()));
                    }
                    // Stopping a stopped member succeeds and changes nothing.
                    match core.set_admin_mode(DevMode::Freeze) {
                        Ok(AdminModeChange::Done) => AdminResult::ok(Vec::new()),
                        Ok(AdminModeChange::Pending) => {
                            return Outcome::Wait(ModeWait {
                                member: cmd.group_member_id,
                                generation,
                            })
                        }
                        Err(AdminModeError::Busy) => {
                            AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN)
                        }
                        Err(AdminModeError::Reset) => {
                            AdminResult::error(status::ENXIO, qualifier::Q_INVALID_COMMAND)
                        }
                    }
                } else {
                    self.resume(cmd.group_member_id, &mut core, &irq)
                }
            }
        };
        Outcome::Done(result)
    }

    fn get<M: GuestMemory + Send + Sync + 'static>(
        &self,
        core: &DeviceCore<M>,
        irq: &MsixInterrupts,
        cmd: &AdminCommand,
        capacity: usize,
    ) -> AdminResult {
        let Ok(ctx) = core.snapshot_context() else {
            return AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN);
        };
        let codec = self.codec_for(cmd.group_member_id);
        let mut all = parts_of(&ctx, &vectors_of(core, irq), codec);
        if self.defects.reverse_order {
            all.reverse();
        }
        let typed = data::<DevPartsTypedData>(cmd);
        let mut out = Vec::new();
        if cmd.opcode == v1_4::DEV_PARTS_METADATA_GET {
            match typed.kind {
                METADATA_TYPE_SIZE => {
                    let size = all.iter().map(Part::wire_len).sum();
                    out.extend_from_slice(metadata_head(size).as_bytes());
                }
                METADATA_TYPE_COUNT => out.extend_from_slice(metadata_head(all.len()).as_bytes()),
                METADATA_TYPE_LIST => {
                    out.extend_from_slice(metadata_head(all.len()).as_bytes());
                    for p in &all {
                        out.extend_from_slice(p.hdr.as_bytes());
                    }
                }
                _ => return field(),
            }
        } else {
            let parts = match typed.kind {
                GET_TYPE_ALL => all,
                GET_TYPE_SELECTED => {
                    let tail = cmd.data.get(size_of::<DevPartsTypedData>()..);
                    let wanted: Vec<DevPartHdr> = tail
                        .unwrap_or_default()
                        .chunks_exact(size_of::<DevPartHdr>())
                        .filter_map(|c| DevPartHdr::read_from_bytes(c).ok())
                        .collect();
                    select(&all, &wanted)
                }
                _ => return field(),
            };
            for p in &parts {
                p.encode_into(&mut out);
            }
        }
        // "If the result buffer is too small the device fails the command with ENOMEM".
        if out.len() > capacity {
            return no_room();
        }
        AdminResult::ok(out)
    }

    fn set<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        core: &DeviceCore<M>,
        irq: &MsixInterrupts,
        cmd: &AdminCommand,
    ) -> AdminResult {
        // "The device SHOULD fail DEV_PARTS_SET if the device is not stopped".
        if core.admin_mode() != DevMode::Freeze {
            return busy();
        }
        let body = cmd
            .data
            .get(size_of::<ResourceObjHdr>()..)
            .unwrap_or_default();
        let Ok(parts) = decode_parts(body) else {
            return field();
        };
        let member = cmd.group_member_id;
        let resets = core.reset_count();
        let (mut ctx, mut vectors) = match self.staged.get(&member) {
            Some(s) if s.resets == resets => (s.ctx.clone(), s.vectors.clone()),
            _ => match core.snapshot_context() {
                Ok(ctx) => (ctx, vectors_of(core, irq)),
                Err(_) => return AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN),
            },
        };
        let staged = if self.defects.accept_wrong_length {
            stage(&parts, &mut ctx, &mut vectors, self.codec_for(member)).or(Ok(()))
        } else {
            stage(&parts, &mut ctx, &mut vectors, self.codec_for(member))
        };
        // A SET may bring a few parts at a time; the whole is checked once it carries the
        // device status (the parts after it only refine it), and again on resume.
        let complete = parts
            .iter()
            .any(|p| p.hdr.part_type() == part_type::DEVICE_STATUS);
        if staged.is_err() || (complete && core.validate_context(&ctx).is_err()) {
            return field();
        }
        if running_packed_without_event_idx(&ctx) {
            // spec-decisions §32: without EVENT_IDX a packed ring's position is not recorded.
            return field();
        }
        self.staged.insert(
            member,
            Staged {
                ctx,
                vectors,
                resets,
            },
        );
        AdminResult::ok(Vec::new())
    }

    /// DEV_MODE_SET with no flags: applies staged parts (unless a member reset came since),
    /// then runs the member. Resuming a running member succeeds and changes nothing.
    fn resume<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        member: u64,
        core: &mut DeviceCore<M>,
        irq: &MsixInterrupts,
    ) -> AdminResult {
        if let Some(staged) = self.staged.get(&member) {
            if staged.resets == core.reset_count() && core.admin_mode() == DevMode::Freeze {
                let mut ctx = staged.ctx.clone();
                // Parts that do not make a consistent device, or a ring with no sound position,
                // fail the resume with EINVAL, which changes nothing (spec-decisions §29, §32):
                // the member stays stopped and keeps the staged parts for a SET that corrects
                // them.
                let positioned = ctx.set_ring_positions_from_memory(Profile::V1_4, &**core.mem());
                if positioned.is_err() || core.restore_context(&ctx).is_err() {
                    return field();
                }
                irq.set_config_vector(staged.vectors.config);
                for (&q, &v) in &staged.vectors.queues {
                    irq.set_queue_vector(q, v);
                }
            }
        }
        self.staged.remove(&member);
        match core.set_admin_mode(DevMode::Active) {
            Ok(_) => AdminResult::ok(Vec::new()),
            Err(_) => AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN),
        }
    }
}

/// A packed ring's queues would run (DRIVER_OK or SUSPEND) without EVENT_IDX: their position
/// cannot have been recorded (spec-decisions §32).
fn running_packed_without_event_idx(ctx: &virtio_lm_device::DeviceContext) -> bool {
    let status = DeviceStatus::from_bits_retain(ctx.device_status);
    let running = status.intersects(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND);
    let negotiated = |feature| {
        let bit = Profile::V1_4.mask(feature).unwrap_or(0);
        ctx.driver_features.first().is_some_and(|w| w & bit != 0)
    };
    running
        && negotiated(Feature::RingPacked)
        && !negotiated(Feature::EventIdx)
        && ctx.queues.iter().any(|q| q.config.enabled)
}
