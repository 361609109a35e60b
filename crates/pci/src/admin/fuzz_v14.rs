//! Fuzzing entry point for the virtio 1.4 admin commands (capabilities, resource objects,
//! device parts, DEV_MODE_SET) of a v1.4 owner: a cargo-fuzz target and a proptest in the
//! normal tests run the same body.

use virtio_lm_device::testing::CountingDevice;
use virtio_lm_device::CoreOptions;
use virtio_lm_spec::admin::opcode::{v1_4, LIST_USE};
use virtio_lm_spec::admin::{group_type, status, AdminCmdHeader};
use virtio_lm_spec::parts::{
    CapIdData, DevPartsCap, DevPartsObjData, ResourceObjHdr, DEV_MODE_FLAGS_STOPPED, DEV_PARTS_CAP,
    DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET, STATUS_EEXIST,
};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

use super::decode::AdminResult;
use super::fuzz::{memory, run_commands, start_members, NO_SIDE_EFFECT};
use super::parts::{PartsState, SELF_SUPPORTED, SRIOV_SUPPORTED};
use super::{OwnerFunction, OwnerOptions};
use crate::function::VirtioPciFunction;

type Mem = GuestMemoryMmap<()>;

/// A v1.4 function offering `features`.
fn options(features: &[Feature]) -> CoreOptions {
    CoreOptions {
        profile: Profile::V1_4,
        features: features.to_vec(),
        ..CoreOptions::default()
    }
}

fn command(op: u16, group: u16, member: u64, data: &[u8]) -> Vec<u8> {
    let mut bytes = AdminCmdHeader::new(op, group, member).as_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes
}

/// A v1.4 owner with three counting-device members: every v1.4 opcode in use, the
/// capability set to the device's limits; member 1 running (one buffer used) with GET object
/// 0, member 2 the same, stopped, with SET object 1 and GET object 2; member 3 untouched.
fn fuzz_owner() -> Option<OwnerFunction<Mem>> {
    let factory = Box::new(|vf: u16| {
        let mem = memory().ok_or(crate::PciError::NotVirtio("no guest memory"))?;
        let device = CountingDevice::new(u64::from(vf) << 16, 8);
        let features = [Feature::Version1, Feature::Suspend, Feature::RingReset];
        VirtioPciFunction::with_device(Box::new(device), mem, options(&features), 2, false)
    });
    let owner_options = OwnerOptions {
        core: options(&[Feature::Version1]),
        ..OwnerOptions::default()
    };
    let device = CountingDevice::new(0, 8);
    let owner = OwnerFunction::new(Box::new(device), memory()?, owner_options, factory).ok()?;
    owner.set_num_vfs(3).ok()?;
    owner.set_vf_enable(true).ok()?;
    start_members(&owner, Profile::V1_4)?;
    let run = |op, group, member, data: &[u8]| {
        let written = owner.execute_direct(&command(op, group, member, data), 64);
        (AdminResult::decode(&written).status == status::OK).then_some(())
    };
    run(LIST_USE, group_type::SELF, 0, SELF_SUPPORTED.as_bytes())?;
    run(LIST_USE, group_type::SRIOV, 0, SRIOV_SUPPORTED.as_bytes())?;
    let mut cap = CapIdData::new(DEV_PARTS_CAP).as_bytes().to_vec();
    cap.extend_from_slice(
        DevPartsCap {
            get_parts_resource_objects_limit: super::parts::DEVICE_GET_LIMIT,
            set_parts_resource_objects_limit: super::parts::DEVICE_SET_LIMIT,
        }
        .as_bytes(),
    );
    run(v1_4::DRIVER_CAP_SET, group_type::SELF, 0, &cap)?;
    for (member, id, kind) in [
        (1, 0, DEV_PARTS_TYPE_GET),
        (2, 1, DEV_PARTS_TYPE_SET),
        (2, 2, DEV_PARTS_TYPE_GET),
    ] {
        let data = DevPartsObjData::new(id, kind);
        run(
            v1_4::RESOURCE_OBJ_CREATE,
            group_type::SRIOV,
            member,
            data.as_bytes(),
        )?;
    }
    run(
        v1_4::DEV_MODE_SET,
        group_type::SRIOV,
        2,
        &[DEV_MODE_FLAGS_STOPPED],
    )?;
    Some(owner)
}

/// The owner's v1.4 state a failed command must leave unchanged: the capability, the
/// objects, and the staged parts.
pub(super) fn parts_fingerprint(state: &PartsState) -> Vec<u8> {
    let mut out = vec![state.cap.0, state.cap.1];
    for (id, object) in &state.objects {
        out.extend(id.to_le_bytes());
        out.extend(object.member.to_le_bytes());
        out.push(object.kind);
    }
    for (member, staged) in &state.staged {
        out.extend(member.to_le_bytes());
        out.extend(staged.resets.to_le_bytes());
        out.extend(virtio_lm_device::context::encode(&staged.ctx).unwrap_or_default());
        out.extend(staged.vectors.config.to_le_bytes());
        for (q, v) in &staged.vectors.queues {
            out.extend(q.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
    }
    out
}

/// Whether the fuzz owner can be built (a body that returns early tests nothing).
#[doc(hidden)]
pub fn fuzz_v14_owner_ready() -> bool {
    fuzz_owner().is_some()
}

/// A valid DEV_PARTS_SET header for object 1 of member 2, for inputs to build on.
#[doc(hidden)]
pub fn fuzz_v14_set_header() -> Vec<u8> {
    ResourceObjHdr::dev_parts(1).as_bytes().to_vec()
}

/// Fuzzing entry point for the v1.4 command set: `data` is a sequence of commands, each
/// `le16 writable_len; le16 readable_len; u8 readable[readable_len]` (lengths clipped to what
/// is left), run against the owner of `fuzz_owner`. Checks, per command: no panic; the bytes
/// written fit the writable part and are the status header plus whole 8-byte words (or fill
/// the buffer); and a command answered EINVAL, EAGAIN, ENOMEM, EBUSY, ENXIO, ENOSPC or EEXIST
/// changed nothing (members' modes, status, contexts, MSI-X routing; the capability, objects
/// and staged parts).
///
/// # Panics
///
/// When an invariant breaks: that is the finding.
#[doc(hidden)]
pub fn fuzz_v14_admin_command(data: &[u8]) {
    // v1.4 refuses without side effects with three more statuses.
    let no_side_effect = [
        NO_SIDE_EFFECT.as_slice(),
        &[status::ENXIO, status::ENOSPC, STATUS_EEXIST],
    ]
    .concat();
    run_commands(fuzz_owner(), data, &no_side_effect);
}
