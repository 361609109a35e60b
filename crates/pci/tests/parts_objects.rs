//! Capabilities and device-parts resource objects of a v1.4 owner (virtio 1.4
//! "Capabilities" and "Resource objects", and the framework rules they run under;
//! spec-decisions §17).

use virtio_lm_pci::admin::{
    AdminClient, AdminCommand, AdminResult, DEVICE_GET_LIMIT, DEVICE_SET_LIMIT,
};
use virtio_lm_pci::testing::*;
use virtio_lm_spec::admin::opcode::{v1_4, DEVICE_MIGRATION, LIST_QUERY, LIST_USE};
use virtio_lm_spec::admin::{group_type, qualifier, status};
use virtio_lm_spec::parts::{
    CapIdData, DevPartsCap, DevPartsObjData, ResourceObjHdr, DEV_PARTS_TYPE_GET,
    DEV_PARTS_TYPE_SET, STATUS_EEXIST,
};
use virtio_lm_spec::zerocopy::IntoBytes;

fn sriov(client: &mut AdminClient<Mem>, op: u16, member: u64, data: Vec<u8>) -> AdminResult {
    let cmd = AdminCommand::new(op, group_type::SRIOV, member, data);
    client.command(&cmd, 64).unwrap()
}

fn create(client: &mut AdminClient<Mem>, member: u64, id: u32, kind: u8) -> AdminResult {
    let data = DevPartsObjData::new(id, kind).as_bytes().to_vec();
    sriov(client, v1_4::RESOURCE_OBJ_CREATE, member, data)
}

fn by_hdr(client: &mut AdminClient<Mem>, op: u16, member: u64, id: u32) -> AdminResult {
    let mut data = ResourceObjHdr::dev_parts(id).as_bytes().to_vec();
    data.resize(16, 0);
    sriov(client, op, member, data)
}

fn cap_set(client: &mut AdminClient<Mem>, get: u8, set: u8) -> AdminResult {
    let mut data = CapIdData::new(0).as_bytes().to_vec();
    data.extend_from_slice(&[get, set]);
    let cmd = AdminCommand::new(v1_4::DRIVER_CAP_SET, group_type::SELF, 0, data);
    client.command(&cmd, 0).unwrap()
}

fn is(result: &AdminResult, status: u16, qualifier: u16) -> bool {
    (result.status, result.qualifier) == (status, qualifier)
}

/// 1.4 "Device parts": the device "MUST support all of METADATA_GET, PARTS_GET, PARTS_SET,
/// RESOURCE_OBJ_{CREATE, DESTROY, MODIFY, QUERY} and DEV_MODE_SET, or none of them"; the v1.4
/// profile offers no seed-004 opcode, and the self group offers the capability commands.
#[test]
fn v1_4_owner_lists_all_device_parts_commands_and_no_seed_ones() {
    let owner = v14_owner(1);
    let mut client = v14_bare_client(&owner);
    let list = |client: &mut AdminClient<Mem>, group| {
        let r = client
            .command(&AdminCommand::new(LIST_QUERY, group, 0, Vec::new()), 8)
            .unwrap();
        u64::from_le_bytes(r.result[..8].try_into().unwrap())
    };
    let sriov_list = list(&mut client, group_type::SRIOV);
    for op in 0x0a..=0x11 {
        assert_ne!(sriov_list >> op & 1, 0, "opcode {op:#x}");
    }
    for op in DEVICE_MIGRATION {
        assert_eq!(sriov_list >> op & 1, 0, "seed-004 opcode {op:#x}");
    }
    let self_list = list(&mut client, group_type::SELF);
    for op in [
        v1_4::CAP_ID_LIST_QUERY,
        v1_4::DEVICE_CAP_GET,
        v1_4::DRIVER_CAP_SET,
    ] {
        assert_ne!(self_list >> op & 1, 0, "opcode {op:#x}");
    }
    client.use_v1_4_commands().unwrap();
}

/// 1.4 "Capabilities": CAP_ID_LIST_QUERY reports the DEV_PARTS capability (id 0) and
/// DEVICE_CAP_GET its limits; an unknown capability id, a driver capability beyond the
/// device's, and a self-group command with a non-zero member id fail with EINVAL.
#[test]
fn capabilities_report_dev_parts_and_refuse_what_exceeds_them() {
    let owner = v14_owner(1);
    let mut client = v14_bare_client(&owner);
    client.use_v1_4_commands().unwrap();
    let cmd = AdminCommand::new(v1_4::CAP_ID_LIST_QUERY, group_type::SELF, 0, Vec::new());
    let ids = client.command(&cmd, 8).unwrap();
    assert_eq!(ids.result[..8], 1u64.to_le_bytes());
    let cap = client.dev_parts_cap_get().unwrap();
    assert_eq!(
        cap,
        DevPartsCap {
            get_parts_resource_objects_limit: DEVICE_GET_LIMIT,
            set_parts_resource_objects_limit: DEVICE_SET_LIMIT,
        }
    );
    let unknown = CapIdData::new(5).as_bytes().to_vec();
    let cmd = AdminCommand::new(v1_4::DEVICE_CAP_GET, group_type::SELF, 0, unknown);
    assert!(is(
        &client.command(&cmd, 8).unwrap(),
        status::EINVAL,
        qualifier::Q_INVALID_FIELD
    ));
    let r = cap_set(&mut client, DEVICE_GET_LIMIT + 1, 1);
    assert!(is(&r, status::EINVAL, qualifier::Q_INVALID_FIELD));
    let cmd = AdminCommand::new(v1_4::CAP_ID_LIST_QUERY, group_type::SELF, 1, Vec::new());
    let r = client.command(&cmd, 8).unwrap();
    assert!(is(&r, status::EINVAL, qualifier::Q_INVALID_MEMBER));
}

/// 1.4 "Resource objects": the driver "MUST send DRIVER_CAP_SET before using related
/// resources": before it both limits are 0 and no id is valid.
#[test]
fn objects_need_driver_cap_set_first() {
    let owner = v14_owner(1);
    let mut client = v14_bare_client(&owner);
    client.use_v1_4_commands().unwrap();
    let r = create(&mut client, 1, 0, DEV_PARTS_TYPE_GET);
    assert!(is(&r, status::EINVAL, qualifier::Q_INVALID_FIELD));
    cap_set(&mut client, 1, 1);
    assert!(create(&mut client, 1, 0, DEV_PARTS_TYPE_GET).is_ok());
}

/// 1.4 "Resource objects": the device "SHOULD fail a duplicate create with EEXIST", "SHOULD
/// fail with ENXIO when the object does not exist" (also for another member's object) and
/// "SHOULD fail with ENOSPC when out of space".
#[test]
fn duplicate_missing_and_full_fail_as_recommended() {
    let owner = v14_owner(2);
    let mut client = v14_client(&owner);
    assert!(create(&mut client, 1, 0, DEV_PARTS_TYPE_GET).is_ok());
    let dup = create(&mut client, 1, 0, DEV_PARTS_TYPE_SET);
    assert_eq!(dup.status, STATUS_EEXIST);
    for op in [v1_4::RESOURCE_OBJ_QUERY, v1_4::RESOURCE_OBJ_DESTROY] {
        assert_eq!(by_hdr(&mut client, op, 1, 3).status, status::ENXIO);
        assert_eq!(
            by_hdr(&mut client, op, 2, 0).status,
            status::ENXIO,
            "member 2"
        );
    }
    let modify = DevPartsObjData::new(3, DEV_PARTS_TYPE_GET)
        .as_bytes()
        .to_vec();
    assert_eq!(
        sriov(&mut client, v1_4::RESOURCE_OBJ_MODIFY, 1, modify).status,
        status::ENXIO
    );
    for id in 1..u32::from(DEVICE_GET_LIMIT) {
        assert!(create(&mut client, 2, id, DEV_PARTS_TYPE_GET).is_ok());
    }
    let full = create(
        &mut client,
        2,
        u32::from(DEVICE_GET_LIMIT),
        DEV_PARTS_TYPE_GET,
    );
    assert!(is(&full, status::ENOSPC, qualifier::Q_NORESOURCE));
}

/// 1.4 "Resource objects": "QUERY MUST return the data of the last CREATE or MODIFY".
#[test]
fn query_returns_the_last_create_or_modify() {
    let (_owner, mut client) = v14_with_get_object(1, 2);
    assert_eq!(client.parts_object_query(1, 2).unwrap(), DEV_PARTS_TYPE_GET);
    let modify = DevPartsObjData::new(2, DEV_PARTS_TYPE_SET)
        .as_bytes()
        .to_vec();
    assert!(sriov(&mut client, v1_4::RESOURCE_OBJ_MODIFY, 1, modify).is_ok());
    assert_eq!(client.parts_object_query(1, 2).unwrap(), DEV_PARTS_TYPE_SET);
    client.parts_object_destroy(1, 2).unwrap();
    assert_eq!(
        by_hdr(&mut client, v1_4::RESOURCE_OBJ_QUERY, 1, 2).status,
        status::ENXIO
    );
}

/// 1.4 "Resource objects": the driver "MUST NOT change the capability while such objects
/// exist"; the device refuses it with EBUSY (the objects depend on it), and accepts it again
/// once they are destroyed.
#[test]
fn capability_change_with_objects_is_busy() {
    let (_owner, mut client) = v14_with_get_object(1, 0);
    let r = cap_set(&mut client, 1, 1);
    assert!(is(&r, status::EBUSY, qualifier::Q_INVALID_COMMAND));
    client.parts_object_destroy(1, 0).unwrap();
    assert!(cap_set(&mut client, 1, 1).is_ok());
}

/// 1.4 "Resource objects": "a device reset destroys all resource objects" (the owner's reset);
/// spec-decisions §17: clearing VF Enable destroys the members' objects too.
#[test]
fn owner_reset_and_vf_disable_destroy_objects() {
    let (owner, mut client) = v14_with_get_object(1, 0);
    client.recover().unwrap();
    let mut client = v14_client(&owner);
    assert_eq!(
        by_hdr(&mut client, v1_4::RESOURCE_OBJ_QUERY, 1, 0).status,
        status::ENXIO
    );

    client
        .parts_object_create(1, 0, DEV_PARTS_TYPE_GET)
        .unwrap();
    owner.set_vf_enable(false).unwrap();
    owner.set_vf_enable(true).unwrap();
    assert_eq!(
        by_hdr(&mut client, v1_4::RESOURCE_OBJ_QUERY, 1, 0).status,
        status::ENXIO
    );
}

/// 1.4 "Administration Facilities" under the v1.4 command set: commands not in the used list
/// (before LIST_USE), unsupported opcodes (seed-004 ones, ≥ 64) fail with EINVAL /
/// Q_INVALID_OPCODE; LIST_USE of an unsupported opcode (also in a later bitmap word) fails
/// with EINVAL / Q_INVALID_FIELD; with VF Enable clear, or an unknown group type, every
/// command fails with EINVAL / Q_INVALID_GROUP.
#[test]
fn framework_rules_hold_under_the_v1_4_command_set() {
    let owner = v14_owner(1);
    let mut client = v14_bare_client(&owner);
    let invalid = |client: &mut AdminClient<Mem>, group, op, data: Vec<u8>, q| {
        let r = client
            .command(&AdminCommand::new(op, group, 0, data), 8)
            .unwrap();
        assert!(is(&r, status::EINVAL, q), "{op:#x}: {r:?}");
    };
    let op = qualifier::Q_INVALID_OPCODE;
    invalid(
        &mut client,
        group_type::SELF,
        v1_4::CAP_ID_LIST_QUERY,
        vec![],
        op,
    );
    let use_all = |list: u64| list.to_le_bytes().to_vec();
    let supported = virtio_lm_pci::admin::SELF_SUPPORTED;
    let field = qualifier::Q_INVALID_FIELD;
    invalid(
        &mut client,
        group_type::SELF,
        LIST_USE,
        use_all(supported | 1 << 0x10),
        field,
    );
    let mut two_words = use_all(supported);
    two_words.extend_from_slice(&1u64.to_le_bytes());
    invalid(&mut client, group_type::SELF, LIST_USE, two_words, field);
    client.use_v1_4_commands().unwrap();
    invalid(
        &mut client,
        group_type::SRIOV,
        DEVICE_MIGRATION[0],
        vec![],
        op,
    );
    invalid(&mut client, group_type::SRIOV, 0x40, vec![], op);
    invalid(
        &mut client,
        group_type::SELF,
        v1_4::DEV_PARTS_GET,
        vec![],
        op,
    );
    invalid(
        &mut client,
        7,
        LIST_QUERY,
        vec![],
        qualifier::Q_INVALID_GROUP,
    );
    owner.set_vf_enable(false).unwrap();
    invalid(
        &mut client,
        group_type::SRIOV,
        LIST_QUERY,
        vec![],
        qualifier::Q_INVALID_GROUP,
    );
}
