//! The admin strategy under the v1.4 profile (spec-decisions §36): the members move as virtio
//! 1.4 device parts through the owner, in the order Linux's virtio-vfio-pci driver drives them
//! (drivers/vfio/pci/virtio/migrate.c; docs/architecture.md has the sequence with its function
//! names).
//!
//! Source: a GET resource object per member, created at the first read and kept to the last
//! (`virtiovf_pci_alloc_obj_id`); each read is DEV_PARTS_METADATA_GET SIZE then DEV_PARTS_GET
//! ALL into a result of that size (`virtiovf_read_device_context_chunk`), once while the member
//! runs (pre-copy) and once after DEV_MODE_SET STOPPED (the final read); then the object is
//! destroyed (`virtiovf_clean_migf_resources`), as on a cancel.
//!
//! Destination: members stopped from the start; per member a SET object, DEV_PARTS_SET of the
//! parts received, the object destroyed (`virtiovf_pci_resume_device_data`,
//! `virtiovf_resume_write`, then the RESUMING → STOP arc); the parts stay staged until
//! DEV_MODE_SET running on Commit applies them (spec-decisions §17).

use std::collections::BTreeSet;

use virtio_lm_pci::admin::{check_ring_positions, AdminClient};
use virtio_lm_spec::parts::{
    decode_parts, part_type, Part, DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET,
};
use virtio_lm_spec::pci::offset;

use crate::guest::lock;
use crate::machine::{Machine, MachineError};
use crate::memory::GuestRam;

/// How often a GET whose result outgrew the size just read is tried again (a running member's
/// parts may grow between METADATA_GET and GET: a control command, say).
const GET_ATTEMPTS: usize = 3;

/// The id of `member`'s GET object. Ids are the owner's, one space for both types, valid below
/// the sum of the limits (4 + 4): GET objects take 0–3, SET objects 4–7.
fn get_id(member: u64) -> u32 {
    (member.saturating_sub(1) as u32) & 3
}

fn set_id(member: u64) -> u32 {
    4 + get_id(member)
}

/// Members whose GET object exists (the source side of a migration in progress).
#[derive(Debug, Default)]
pub(crate) struct GetObjects(BTreeSet<u64>);

/// The parts as the stream carries them: each header then its value, in the device's order.
pub(crate) fn encode_parts(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        p.encode_into(&mut out);
    }
    out
}

fn admin_error(member: u64, what: &str, e: impl std::fmt::Display) -> MachineError {
    MachineError::Device(format!("member {member}: {what}: {e}"))
}

/// METADATA_GET SIZE, then GET ALL into a result of that size.
fn read_sized(admin: &mut AdminClient<GuestRam>, member: u64) -> Result<Vec<Part>, MachineError> {
    let id = get_id(member);
    let mut last = None;
    for _ in 0..GET_ATTEMPTS {
        let size = admin.parts_size(member, id)?;
        if size == 0 {
            // Linux refuses an empty device state the same way.
            return Err(admin_error(member, "DEV_PARTS_METADATA_GET", "size 0"));
        }
        match admin.parts_get_sized(member, id, None, size as usize) {
            Ok(parts) => return Ok(parts),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || admin_error(member, "DEV_PARTS_GET", "no attempt"),
        MachineError::from,
    ))
}

impl Machine {
    /// Every member's parts as they stand (the GET object of each created at its first read):
    /// a pre-copy while the members run, the final state once they are stopped.
    pub(crate) fn read_parts(&self) -> Result<Vec<(u64, Vec<u8>)>, MachineError> {
        let mut admin = lock(&self.admin);
        let mut objects = lock(&self.get_objects);
        let mut out = Vec::new();
        for member in self.members() {
            if !objects.0.contains(&member) {
                admin.parts_object_create(member, get_id(member), DEV_PARTS_TYPE_GET)?;
                objects.0.insert(member);
            }
            let parts = read_sized(&mut admin, member)?;
            out.push((member, encode_parts(&parts)));
        }
        Ok(out)
    }

    /// Destroys the GET objects of the migration (after the final read, or when it is
    /// abandoned); tries each and reports the first failure.
    pub(crate) fn destroy_get_objects(&self) -> Result<(), MachineError> {
        let mut admin = lock(&self.admin);
        let mut objects = lock(&self.get_objects);
        let mut first = Ok(());
        for member in std::mem::take(&mut objects.0) {
            if let Err(e) = admin.parts_object_destroy(member, get_id(member)) {
                first = first.and(Err(e.into()));
            }
        }
        first
    }

    /// Checks `bytes` (a member's parts as received) without applying anything: they decode,
    /// and what the member here has fixed matches (DEV_FEATURES, `num_queues`). DEV_PARTS_SET
    /// checks the rest when the guest is loaded.
    pub(crate) fn check_parts(&self, member: u64, bytes: &[u8]) -> Result<Vec<Part>, String> {
        let parts = decode_parts(bytes).map_err(|e| e.to_string())?;
        let function = self.member_function(member).map_err(|_| "no such member")?;
        let (features, queues) = {
            let core = lock(function.core());
            (core.device_features(), core.num_queues())
        };
        let first = |t: u16, selector: Option<[u8; 8]>| {
            parts
                .iter()
                .find(|p| p.hdr.part_type() == t && selector.is_none_or(|s| p.hdr.selector == s))
        };
        let word = |p: &Part| <[u8; 8]>::try_from(p.value.as_slice()).map(u64::from_le_bytes);
        match first(part_type::DEV_FEATURES, None).map(word) {
            Some(Ok(theirs)) if theirs != features => {
                return Err(format!(
                    "the source's device offers features {theirs:#x}, this one {features:#x}"
                ))
            }
            Some(Err(_)) => return Err("a DEV_FEATURES part of the wrong length".into()),
            _ => {}
        }
        let selector =
            virtio_lm_spec::parts::DevPartHdr::offset_selector(offset::NUM_QUEUES as u32);
        if let Some(p) = first(part_type::PCI_COMMON_CFG, Some(selector)) {
            let theirs = <[u8; 2]>::try_from(p.value.as_slice())
                .map(u16::from_le_bytes)
                .map_err(|_| "a num_queues part of the wrong length")?;
            if theirs != queues {
                return Err(format!("{theirs} queues on the source, {queues} here"));
            }
        }
        if first(part_type::DEVICE_STATUS, None).is_none() {
            return Err("no DEVICE_STATUS part".into());
        }
        Ok(parts)
    }

    /// Destination, before Ready: stages `bytes` on the stopped `member` (a SET object, one
    /// DEV_PARTS_SET, the object destroyed, also when the SET fails); DEV_MODE_SET running on
    /// Commit applies them.
    pub(crate) fn load_parts(&self, member: u64, bytes: &[u8]) -> Result<(), MachineError> {
        let parts = decode_parts(bytes).map_err(|e| admin_error(member, "parts", e))?;
        let mut admin = lock(&self.admin);
        let id = set_id(member);
        admin.parts_object_create(member, id, DEV_PARTS_TYPE_SET)?;
        let set = admin
            .parts_set(member, id, &parts)
            .map_err(|e| admin_error(member, "DEV_PARTS_SET refused the parts", e));
        let destroyed = admin.parts_object_destroy(member, id);
        set?;
        destroyed?;
        Ok(())
    }
}

impl Machine {
    /// The ring check before Ready: every queue the parts run must have a sound position in
    /// the received memory, as the resume on Commit will find it (split: `used.idx` against
    /// `avail.idx` and the size; packed: the position the stopped source recorded;
    /// spec-decisions §32, §36), so an inconsistent ring is refused before Ready.
    pub(crate) fn check_parts_rings(&self, parts: &[Part]) -> Result<(), String> {
        check_ring_positions(parts, &**self.memory.ram())
            .map_err(|e| format!("against the received memory: {e}"))
    }
}
