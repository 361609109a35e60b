//! The owner driver's side of the virtio 1.4 commands: typed calls over [`AdminClient`], and
//! [`AdminClient::command`], which returns the device's status instead of failing on it (for
//! conformance checks).

use virtio_lm_spec::admin::group_type;
use virtio_lm_spec::admin::opcode::{v1_4, LIST_QUERY, LIST_USE};
use virtio_lm_spec::parts::{
    CapIdData, DevPartHdr, DevPartsCap, DevPartsObj, DevPartsObjData, DevPartsTypedData,
    MetadataHead, Part, ResourceObjHdr, DEV_MODE_FLAGS_STOPPED, DEV_PARTS_CAP, GET_TYPE_ALL,
    GET_TYPE_SELECTED, METADATA_TYPE_LIST, METADATA_TYPE_SIZE,
};
use vm_memory::GuestMemory;
use zerocopy::{FromBytes, IntoBytes};

use super::{SELF_SUPPORTED, SRIOV_SUPPORTED};
use crate::admin::decode::{AdminCommand, AdminResult};
use crate::admin::error::AdminError;
use crate::admin::{AdminClient, OwnerFunction};
use crate::admin::{Defects, DevicePartsCodec};

/// Room asked for in results whose size the caller does not give.
const RESULT_ROOM: usize = 0x1000;

fn protocol(reason: &'static str) -> AdminError {
    AdminError::Protocol {
        command: "device parts",
        member: 0,
        reason,
    }
}

impl<M: GuestMemory> AdminClient<M> {
    /// Runs `cmd` with `result_len` bytes for the result and returns what the device
    /// answered, whatever the status (EAGAIN is retried as by [`Self::execute`]).
    pub fn command(
        &mut self,
        cmd: &AdminCommand,
        result_len: usize,
    ) -> Result<AdminResult, AdminError> {
        match self.execute(cmd, result_len) {
            Ok(result) => Ok(result),
            Err(AdminError::Command {
                status, qualifier, ..
            }) => Ok(AdminResult::error(status, qualifier)),
            Err(e) => Err(e),
        }
    }

    fn ok(&mut self, cmd: AdminCommand, result_len: usize) -> Result<Vec<u8>, AdminError> {
        self.execute(&cmd, result_len).map(|r| r.result)
    }

    /// LIST_QUERY then LIST_USE of every v1.4 command, in the self group and the SR-IOV group.
    pub fn use_v1_4_commands(&mut self) -> Result<(), AdminError> {
        for (group, wanted) in [
            (group_type::SELF, SELF_SUPPORTED),
            (group_type::SRIOV, SRIOV_SUPPORTED),
        ] {
            let list = self.ok(AdminCommand::new(LIST_QUERY, group, 0, Vec::new()), 8)?;
            let supported = list
                .get(..8)
                .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
            if supported & wanted != wanted {
                return Err(protocol(
                    "the device lacks virtio 1.4 device-parts commands",
                ));
            }
            let data = wanted.to_le_bytes().to_vec();
            self.ok(AdminCommand::new(LIST_USE, group, 0, data), 0)?;
        }
        Ok(())
    }

    /// DEVICE_CAP_GET of the DEV_PARTS capability.
    pub fn dev_parts_cap_get(&mut self) -> Result<DevPartsCap, AdminError> {
        let data = CapIdData::new(DEV_PARTS_CAP).as_bytes().to_vec();
        let cmd = AdminCommand::new(v1_4::DEVICE_CAP_GET, group_type::SELF, 0, data);
        let result = self.ok(cmd, 8)?;
        DevPartsCap::read_from_prefix(&result)
            .map(|(cap, _)| cap)
            .map_err(|_| protocol("DEVICE_CAP_GET result too short"))
    }

    /// DRIVER_CAP_SET of the DEV_PARTS capability.
    pub fn dev_parts_cap_set(&mut self, cap: DevPartsCap) -> Result<(), AdminError> {
        let mut data = CapIdData::new(DEV_PARTS_CAP).as_bytes().to_vec();
        data.extend_from_slice(cap.as_bytes());
        data.resize(16, 0);
        let cmd = AdminCommand::new(v1_4::DRIVER_CAP_SET, group_type::SELF, 0, data);
        self.ok(cmd, 0).map(|_| ())
    }

    /// RESOURCE_OBJ_CREATE of device-parts object `id` of `kind` for `member`.
    pub fn parts_object_create(
        &mut self,
        member: u64,
        id: u32,
        kind: u8,
    ) -> Result<(), AdminError> {
        let data = DevPartsObjData::new(id, kind).as_bytes().to_vec();
        let cmd = AdminCommand::new(v1_4::RESOURCE_OBJ_CREATE, group_type::SRIOV, member, data);
        self.ok(cmd, 0).map(|_| ())
    }

    /// RESOURCE_OBJ_QUERY: the object's type.
    pub fn parts_object_query(&mut self, member: u64, id: u32) -> Result<u8, AdminError> {
        let mut data = ResourceObjHdr::dev_parts(id).as_bytes().to_vec();
        data.extend_from_slice(&[0; 8]);
        let cmd = AdminCommand::new(v1_4::RESOURCE_OBJ_QUERY, group_type::SRIOV, member, data);
        let result = self.ok(cmd, 8)?;
        DevPartsObj::read_from_prefix(&result)
            .map(|(o, _)| o.obj_type)
            .map_err(|_| protocol("RESOURCE_OBJ_QUERY result too short"))
    }

    /// RESOURCE_OBJ_DESTROY.
    pub fn parts_object_destroy(&mut self, member: u64, id: u32) -> Result<(), AdminError> {
        let data = ResourceObjHdr::dev_parts(id).as_bytes().to_vec();
        let cmd = AdminCommand::new(v1_4::RESOURCE_OBJ_DESTROY, group_type::SRIOV, member, data);
        self.ok(cmd, 0).map(|_| ())
    }

    /// DEV_PARTS_METADATA_GET of `kind` on object `id`, with `room` bytes for the result.
    fn metadata_get(
        &mut self,
        member: u64,
        id: u32,
        kind: u8,
        room: usize,
    ) -> Result<Vec<u8>, AdminError> {
        let data = DevPartsTypedData::new(id, kind).as_bytes().to_vec();
        let cmd = AdminCommand::new(
            v1_4::DEV_PARTS_METADATA_GET,
            group_type::SRIOV,
            member,
            data,
        );
        self.ok(cmd, room)
    }

    /// DEV_PARTS_METADATA_GET LIST: every part header.
    pub fn parts_list(&mut self, member: u64, id: u32) -> Result<Vec<DevPartHdr>, AdminError> {
        let result = self.metadata_get(member, id, METADATA_TYPE_LIST, RESULT_ROOM)?;
        let (head, rest) = MetadataHead::read_from_prefix(&result)
            .map_err(|_| protocol("METADATA_GET result too short"))?;
        let count = head.value.get() as usize;
        let hdrs: Vec<DevPartHdr> = rest
            .chunks_exact(size_of::<DevPartHdr>())
            .take(count)
            .filter_map(|c| DevPartHdr::read_from_bytes(c).ok())
            .collect();
        if hdrs.len() != count {
            return Err(protocol(
                "METADATA_GET LIST holds fewer headers than its count",
            ));
        }
        Ok(hdrs)
    }

    /// DEV_PARTS_METADATA_GET SIZE: the bytes DEV_PARTS_GET ALL would return now (what a
    /// driver sizes the GET's result buffer with, as Linux's virtio-vfio-pci does).
    pub fn parts_size(&mut self, member: u64, id: u32) -> Result<u32, AdminError> {
        let room = size_of::<MetadataHead>();
        let result = self.metadata_get(member, id, METADATA_TYPE_SIZE, room)?;
        MetadataHead::read_from_prefix(&result)
            .map(|(head, _)| head.value.get())
            .map_err(|_| protocol("METADATA_GET SIZE result too short"))
    }

    /// DEV_PARTS_GET ALL (with `selected`, SELECTED with those headers).
    pub fn parts_get(
        &mut self,
        member: u64,
        id: u32,
        selected: Option<&[DevPartHdr]>,
    ) -> Result<Vec<Part>, AdminError> {
        self.parts_get_sized(member, id, selected, RESULT_ROOM)
    }

    /// [`Self::parts_get`] with `room` bytes for the result (METADATA_GET SIZE's answer; a
    /// result that no longer fits fails with ENOMEM).
    pub fn parts_get_sized(
        &mut self,
        member: u64,
        id: u32,
        selected: Option<&[DevPartHdr]>,
        room: usize,
    ) -> Result<Vec<Part>, AdminError> {
        let kind = if selected.is_some() {
            GET_TYPE_SELECTED
        } else {
            GET_TYPE_ALL
        };
        let mut data = DevPartsTypedData::new(id, kind).as_bytes().to_vec();
        for h in selected.unwrap_or_default() {
            data.extend_from_slice(h.as_bytes());
        }
        let cmd = AdminCommand::new(v1_4::DEV_PARTS_GET, group_type::SRIOV, member, data);
        let result = self.ok(cmd, room)?;
        // The device pads the result to a multiple of 8 bytes with zeros.
        let mut body = result.as_slice();
        let mut parts = Vec::new();
        while body.len() >= size_of::<DevPartHdr>() && body.iter().any(|&b| b != 0) {
            let (hdr, rest) = DevPartHdr::read_from_prefix(body)
                .map_err(|_| protocol("DEV_PARTS_GET result malformed"))?;
            let len = hdr.length() as usize;
            let value = rest
                .get(..len)
                .ok_or(protocol("DEV_PARTS_GET part truncated"))?;
            parts.push(Part {
                hdr,
                value: value.to_vec(),
            });
            body = &rest[len..];
        }
        Ok(parts)
    }

    /// DEV_PARTS_SET of `parts`.
    pub fn parts_set(&mut self, member: u64, id: u32, parts: &[Part]) -> Result<(), AdminError> {
        let mut data = ResourceObjHdr::dev_parts(id).as_bytes().to_vec();
        for p in parts {
            p.encode_into(&mut data);
        }
        let cmd = AdminCommand::new(v1_4::DEV_PARTS_SET, group_type::SRIOV, member, data);
        self.ok(cmd, 0).map(|_| ())
    }

    /// DEV_MODE_SET: stop (`stopped`) or resume the member.
    pub fn dev_mode_stopped(&mut self, member: u64, stopped: bool) -> Result<(), AdminError> {
        let flags = if stopped { DEV_MODE_FLAGS_STOPPED } else { 0 };
        let cmd = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, member, vec![flags]);
        self.ok(cmd, 0).map(|_| ())
    }
}

impl<M: GuestMemory + Send + Sync + 'static> OwnerFunction<M> {
    /// The device-type half of the parts of this owner's members (default: none). Only for
    /// an owner built with the v1.4 profile; ignored otherwise.
    pub fn set_parts_codec(&self, codec: Box<dyn DevicePartsCodec>) {
        if let Some(v14) = crate::admin::device::lock(&self.shared).v14.as_mut() {
            v14.codec = codec;
        }
    }

    /// The device-type half of the parts of member `vf` only, over [`Self::set_parts_codec`]'s
    /// (an owner whose members are of several device types). Only for an owner built with the
    /// v1.4 profile; ignored otherwise.
    pub fn set_member_parts_codec(&self, vf: u64, codec: Box<dyn DevicePartsCodec>) {
        if let Some(v14) = crate::admin::device::lock(&self.shared).v14.as_mut() {
            v14.member_codecs.insert(vf, codec);
        }
    }

    /// How many device-parts resource objects exist (0 for an owner without the v1.4 profile):
    /// what a migration that ended must have left.
    pub fn parts_object_count(&self) -> usize {
        crate::admin::device::lock(&self.shared)
            .v14
            .as_ref()
            .map_or(0, |v14| v14.objects.len())
    }

    /// Breaks this owner on purpose (the conformance checks' negative control).
    #[doc(hidden)]
    pub fn inject_defects(&self, defects: Defects) {
        if let Some(v14) = crate::admin::device::lock(&self.shared).v14.as_mut() {
            v14.defects = defects;
        }
    }
}
