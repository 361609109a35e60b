//! The virtio 1.4 form of device migration on an SR-IOV owner (the `v1.4` profile): the
//! self group's capability commands, the SR-IOV group's resource objects, device parts and
//! DEV_MODE_SET (virtio 1.4 "Device parts", "Capabilities", "Resource objects";
//! spec-decisions §17). The seed-004 commands are not offered under this profile.
//!
//! | Status / qualifier | When |
//! |---|---|
//! | EINVAL / Q_INVALID_GROUP, Q_INVALID_OPCODE, Q_INVALID_MEMBER | the framework's validation, per group |
//! | EINVAL / Q_INVALID_FIELD | unknown capability, object type or request type; an id beyond the limits; a cap value beyond the device's; a SET whose parts are out of order, of the wrong length, or do not match the device; DEV_MODE_SET with reserved flags |
//! | EEXIST (17) / Q_INVALID_FIELD | RESOURCE_OBJ_CREATE of an id in use |
//! | ENXIO / Q_INVALID_FIELD | the object does not exist (for this member) |
//! | ENOSPC / Q_NORESOURCE | the limit of objects of that type is reached |
//! | EBUSY / Q_INVALID_COMMAND | DRIVER_CAP_SET while objects exist; DEV_PARTS_SET while the member runs; METADATA/GET on a SET object or SET on a GET object |
//! | ENOMEM / Q_NORESOURCE | the result does not fit the buffer (no side effect) |

mod client;
mod codec;
mod commands;
mod objects;
mod positions;

use std::collections::BTreeMap;

use virtio_lm_device::context::DeviceContext;
use virtio_lm_spec::admin::opcode::{v1_4, LIST_QUERY, LIST_USE};
use virtio_lm_spec::admin::{group_type, qualifier, status};
use vm_memory::GuestMemory;

pub use codec::{DevicePartsCodec, NoDeviceParts};
pub use positions::check_ring_positions;

use super::decode::{AdminCommand, AdminResult};
use super::dispatch::Outcome;
use super::sriov::SriovGroup;
use codec::Vectors;

/// Limits of the DEV_PARTS capability this device offers.
pub const DEVICE_GET_LIMIT: u8 = 4;
/// See [`DEVICE_GET_LIMIT`].
pub const DEVICE_SET_LIMIT: u8 = 4;

/// Opcodes of the self group: the list commands and the capability commands.
pub const SELF_SUPPORTED: u64 = 1 << LIST_QUERY
    | 1 << LIST_USE
    | 1 << v1_4::CAP_ID_LIST_QUERY
    | 1 << v1_4::DEVICE_CAP_GET
    | 1 << v1_4::DRIVER_CAP_SET;

/// Opcodes of the SR-IOV group: the list commands, resource objects, device parts and
/// DEV_MODE_SET ("all of them or none").
pub const SRIOV_SUPPORTED: u64 = 1 << LIST_QUERY
    | 1 << LIST_USE
    | 1 << v1_4::RESOURCE_OBJ_CREATE
    | 1 << v1_4::RESOURCE_OBJ_MODIFY
    | 1 << v1_4::RESOURCE_OBJ_QUERY
    | 1 << v1_4::RESOURCE_OBJ_DESTROY
    | 1 << v1_4::DEV_PARTS_METADATA_GET
    | 1 << v1_4::DEV_PARTS_GET
    | 1 << v1_4::DEV_PARTS_SET
    | 1 << v1_4::DEV_MODE_SET;

const INITIAL_USED: u64 = 1 << LIST_QUERY | 1 << LIST_USE;

/// Test-only defects (the negative control of the conformance checks): each breaks one
/// family of statements.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defects {
    /// DEV_MODE_SET ignores the STOPPED flag (the member keeps running).
    pub ignore_stopped: bool,
    /// DEV_PARTS_SET accepts parts whose length does not match their type.
    pub accept_wrong_length: bool,
    /// Duplicate RESOURCE_OBJ_CREATE succeeds.
    pub accept_duplicate_id: bool,
    /// DEV_PARTS_GET returns the parts in reverse order.
    pub reverse_order: bool,
}

/// A device-parts object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) member: u64,
    /// `DEV_PARTS_TYPE_GET` or `DEV_PARTS_TYPE_SET`.
    pub(crate) kind: u8,
}

/// Parts set on a stopped member, applied when it resumes.
pub(crate) struct Staged {
    pub(crate) ctx: DeviceContext,
    pub(crate) vectors: Vectors,
    /// The member's reset count when staged: a member reset or FLR since discards them.
    pub(crate) resets: u64,
}

/// The owner's v1.4 state: used lists, the driver's capability, objects and staged parts.
pub(crate) struct PartsState {
    used_self: u64,
    used_sriov: u64,
    /// The DEV_PARTS capability the driver set (both limits 0 until DRIVER_CAP_SET).
    pub(crate) cap: (u8, u8),
    pub(crate) objects: BTreeMap<u32, Object>,
    pub(crate) staged: BTreeMap<u64, Staged>,
    /// The group generation the objects belong to: clearing VF Enable destroys them.
    generation: u64,
    pub(crate) codec: Box<dyn DevicePartsCodec>,
    /// Codecs of particular members, over `codec`: an owner whose members are of several
    /// device types (a VM's blk and net functions) has one per member.
    pub(crate) member_codecs: BTreeMap<u64, Box<dyn DevicePartsCodec>>,
    pub(crate) defects: Defects,
}

pub(crate) fn einval(q: u16) -> AdminResult {
    AdminResult::error(status::EINVAL, q)
}

impl PartsState {
    pub(crate) fn new() -> Self {
        Self {
            used_self: INITIAL_USED,
            used_sriov: INITIAL_USED,
            cap: (0, 0),
            objects: BTreeMap::new(),
            staged: BTreeMap::new(),
            generation: 0,
            codec: Box::new(NoDeviceParts),
            member_codecs: BTreeMap::new(),
            defects: Defects::default(),
        }
    }

    /// The codec of `member`'s device type.
    pub(crate) fn codec_for(&self, member: u64) -> &dyn DevicePartsCodec {
        self.member_codecs
            .get(&member)
            .unwrap_or(&self.codec)
            .as_ref()
    }

    /// Owner reset: "a device reset destroys all resource objects"; the driver's capability
    /// and the used lists are back to their initial values.
    pub(crate) fn reset(&mut self) {
        self.used_self = INITIAL_USED;
        self.used_sriov = INITIAL_USED;
        self.cap = (0, 0);
        self.objects.clear();
        self.staged.clear();
    }

    /// Validates and executes one command (group type, then opcode, then member id).
    pub(crate) fn dispatch<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        group: &mut SriovGroup<M>,
        cmd: &AdminCommand,
        capacity: usize,
        others: bool,
    ) -> Outcome {
        if group.generation != self.generation {
            // spec-decisions §17: the members are gone, and their objects with them.
            self.generation = group.generation;
            self.objects.clear();
            self.staged.clear();
        }
        let (supported, used) = match cmd.group_type {
            group_type::SELF => (SELF_SUPPORTED, self.used_self),
            group_type::SRIOV if group.cap.vf_enable => (SRIOV_SUPPORTED, self.used_sriov),
            _ => return Outcome::Done(einval(qualifier::Q_INVALID_GROUP)),
        };
        let op = cmd.opcode;
        if op >= 64 || (supported & used) >> op & 1 == 0 {
            return Outcome::Done(einval(qualifier::Q_INVALID_OPCODE));
        }
        let list = op == LIST_QUERY || op == LIST_USE;
        let member_ok = match cmd.group_type {
            group_type::SELF => cmd.group_member_id == 0,
            _ => list || group.member(cmd.group_member_id).is_some(),
        };
        if !member_ok {
            return Outcome::Done(einval(qualifier::Q_INVALID_MEMBER));
        }
        let result = match op {
            LIST_QUERY => AdminResult::ok(supported.to_le_bytes().to_vec()),
            LIST_USE => self.list_use(cmd, supported, others),
            v1_4::CAP_ID_LIST_QUERY | v1_4::DEVICE_CAP_GET | v1_4::DRIVER_CAP_SET => {
                self.capability(op, cmd)
            }
            v1_4::RESOURCE_OBJ_CREATE
            | v1_4::RESOURCE_OBJ_MODIFY
            | v1_4::RESOURCE_OBJ_QUERY
            | v1_4::RESOURCE_OBJ_DESTROY => self.object(op, cmd),
            _ => return self.member_command(group, cmd, capacity),
        };
        Outcome::Done(result)
    }

    fn list_use(&mut self, cmd: &AdminCommand, supported: u64, others: bool) -> AdminResult {
        if others {
            return AdminResult::error(status::EBUSY, qualifier::Q_INVALID_COMMAND);
        }
        let mut bytes = [0u8; 8];
        let n = cmd.data.len().min(8);
        bytes[..n].copy_from_slice(&cmd.data[..n]);
        let list = u64::from_le_bytes(bytes);
        let beyond = cmd.data.get(8..).is_some_and(|r| r.iter().any(|&b| b != 0));
        if list & !supported != 0 || beyond {
            return einval(qualifier::Q_INVALID_FIELD);
        }
        match cmd.group_type {
            group_type::SELF => self.used_self = list,
            _ => self.used_sriov = list,
        }
        AdminResult::ok(Vec::new())
    }
}
