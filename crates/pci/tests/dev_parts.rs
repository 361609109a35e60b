//! Device parts of a v1.4 member: METADATA_GET, DEV_PARTS_GET, DEV_PARTS_SET and DEV_MODE_SET
//! (virtio 1.4 "Device parts" and its device and driver requirements; spec-decisions §17).

use virtio_lm_pci::admin::{AdminClient, AdminCommand, AdminResult, OwnerFunction};
use virtio_lm_pci::testing::*;
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{group_type, qualifier, status};
use virtio_lm_spec::parts::{
    order_rank, part_type, DevPartHdr, DevPartsTypedData, Part, ResourceObjHdr, DEV_PARTS_TYPE_SET,
    GET_TYPE_SELECTED, METADATA_TYPE_COUNT, METADATA_TYPE_SIZE, PART_F_OPTIONAL,
};
use virtio_lm_spec::pci::offset::{
    DEVICE_STATUS, QUEUE_DESC, QUEUE_ENABLE, QUEUE_SELECT, QUEUE_SIZE,
};
use virtio_lm_spec::zerocopy::IntoBytes;
use virtio_lm_spec::DeviceStatus;

const GET: u32 = 0;
const SET: u32 = 1;
const DATA: u64 = 0x8000;

/// An owner with two members, a client with a GET object (id 0) on member 1 and a SET object
/// (id 1) on member 2, and a guest running member 1 that had two buffers used.
fn rig() -> (OwnerFunction<Mem>, AdminClient<Mem>, V14Guest) {
    let (owner, mut client) = v14_with_get_object(2, GET);
    client
        .parts_object_create(2, SET, DEV_PARTS_TYPE_SET)
        .unwrap();
    let mut guest = V14Guest::new(owner.member(1).unwrap());
    guest.submit(DATA, 8);
    guest.submit(DATA + 8, 8);
    assert_eq!(guest.collect(), 2);
    (owner, client, guest)
}

/// The [`rig`] with member 1's parts read and member 2 stopped: ready for a DEV_PARTS_SET.
fn set_rig() -> (OwnerFunction<Mem>, AdminClient<Mem>, V14Guest, Vec<Part>) {
    let (owner, mut client, guest) = rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    client.dev_mode_stopped(2, true).unwrap();
    (owner, client, guest, parts)
}

fn typed(
    client: &mut AdminClient<Mem>,
    op: u16,
    member: u64,
    id: u32,
    kind: u8,
    room: usize,
) -> AdminResult {
    let data = DevPartsTypedData::new(id, kind).as_bytes().to_vec();
    let cmd = AdminCommand::new(op, group_type::SRIOV, member, data);
    client.command(&cmd, room).unwrap()
}

fn set_raw(client: &mut AdminClient<Mem>, member: u64, body: &[u8]) -> AdminResult {
    let mut data = ResourceObjHdr::dev_parts(SET).as_bytes().to_vec();
    data.extend_from_slice(body);
    let cmd = AdminCommand::new(v1_4::DEV_PARTS_SET, group_type::SRIOV, member, data);
    client.command(&cmd, 0).unwrap()
}

fn encode(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        p.encode_into(&mut out);
    }
    out
}

/// 1.4 "Device parts": PARTS_GET "MUST return parts in table order" (DEV_FEATURES,
/// DRV_FEATURES, PCI_COMMON_CFG, DEVICE_STATUS, VQ_CFG, VQ_NOTIFY_CFG) and "MUST allow
/// PARTS_GET to be repeated"; DEV_FEATURES is flagged OPTIONAL.
#[test]
fn get_all_returns_parts_in_table_order_repeatably() {
    let (_owner, mut client, _guest) = rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    let ranks: Vec<u32> = parts
        .iter()
        .map(|p| order_rank(p.hdr.part_type()))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert_eq!(parts[0].hdr.part_type(), part_type::DEV_FEATURES);
    assert!(parts[0].hdr.is_optional());
    let status = first_part(&parts, part_type::DEVICE_STATUS).value[0];
    assert!(DeviceStatus::from_bits_retain(status).contains(DeviceStatus::DRIVER_OK));
    assert_eq!(client.parts_get(1, GET, None).unwrap(), parts);
}

/// 1.4 "Device parts": METADATA_GET SIZE is the total size of all parts, COUNT the number of
/// headers LIST returns, LIST the headers of GET ALL; "result buffer too small → ENOMEM".
#[test]
fn metadata_matches_get_all_and_too_small_is_enomem() {
    let (_owner, mut client, _guest) = rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    let size = typed(
        &mut client,
        v1_4::DEV_PARTS_METADATA_GET,
        1,
        GET,
        METADATA_TYPE_SIZE,
        8,
    );
    let total: usize = parts.iter().map(Part::wire_len).sum();
    assert_eq!(size.result[..4], (total as u32).to_le_bytes());
    let count = typed(
        &mut client,
        v1_4::DEV_PARTS_METADATA_GET,
        1,
        GET,
        METADATA_TYPE_COUNT,
        8,
    );
    assert_eq!(count.result[..4], (parts.len() as u32).to_le_bytes());
    let hdrs = client.parts_list(1, GET).unwrap();
    assert_eq!(hdrs, parts.iter().map(|p| p.hdr).collect::<Vec<_>>());
    let small = typed(&mut client, v1_4::DEV_PARTS_METADATA_GET, 1, GET, 2, 16);
    assert_eq!(
        (small.status, small.qualifier),
        (status::ENOMEM, qualifier::Q_NORESOURCE)
    );
    let small = typed(&mut client, v1_4::DEV_PARTS_GET, 1, GET, 1, 16);
    assert_eq!(small.status, status::ENOMEM);
}

/// 1.4 "Device parts": SELECTED returns the requested parts in table order; "a requested
/// part that does not exist is skipped without error".
#[test]
fn get_selected_skips_unknown_parts_and_keeps_table_order() {
    let (_owner, mut client, _guest) = rig();
    let wanted = [
        DevPartHdr::new(part_type::VQ_CFG, 0, DevPartHdr::vq_selector(0), 0),
        DevPartHdr::new(part_type::VQ_CFG, 0, DevPartHdr::vq_selector(9), 0),
        DevPartHdr::new(0x1ff, 0, [0; 8], 0),
        DevPartHdr::new(part_type::DEVICE_STATUS, 0, [0; 8], 0),
    ];
    let parts = client.parts_get(1, GET, Some(&wanted)).unwrap();
    let types: Vec<u16> = parts.iter().map(|p| p.hdr.part_type()).collect();
    assert_eq!(types, [part_type::DEVICE_STATUS, part_type::VQ_CFG]);
    let _ = GET_TYPE_SELECTED;
}

/// 1.4 "Device parts": the device "SHOULD fail PARTS_SET if the device is not stopped"
/// (EBUSY), and GET and SET each need an object of their own type.
#[test]
fn set_needs_a_stopped_member_and_a_set_object() {
    let (_owner, mut client, _guest) = rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    let r = set_raw(&mut client, 2, &encode(&parts));
    assert_eq!(
        (r.status, r.qualifier),
        (status::EBUSY, qualifier::Q_INVALID_COMMAND)
    );
    let r = typed(&mut client, v1_4::DEV_PARTS_GET, 2, SET, 1, 64);
    assert_eq!(r.status, status::EBUSY, "GET on a SET object");
}

/// 1.4 "Device parts": the device "MUST fail on a length mismatch"; "MUST NOT set
/// DEV_FEATURES; it MUST only verify that it matches"; read-only fields (num_queues,
/// VQ_NOTIFY_CFG) are validated and not applied; the driver "MUST send parts in table order".
#[test]
fn set_refuses_wrong_length_features_read_only_fields_and_order() {
    let (_owner, mut client, _guest, parts) = set_rig();
    let mut status_part = first_part(&parts, part_type::DEVICE_STATUS);
    status_part.value.push(0);
    status_part.hdr.length = (2u32).into();
    let mut features = first_part(&parts, part_type::DEV_FEATURES);
    features.value[0] ^= 1;
    let mut num_queues = parts
        .iter()
        .find(|p| p.hdr.part_type() == part_type::PCI_COMMON_CFG && p.hdr.selector[0] == 18)
        .unwrap()
        .clone();
    num_queues.value[0] += 1;
    let mut notify = first_part(&parts, part_type::VQ_NOTIFY_CFG);
    notify.value[0] = 7;
    let out_of_order = vec![
        first_part(&parts, part_type::DEVICE_STATUS),
        first_part(&parts, part_type::DRV_FEATURES),
    ];
    for bad in [
        vec![status_part],
        vec![features],
        vec![num_queues],
        vec![notify],
        out_of_order,
    ] {
        let r = set_raw(&mut client, 2, &encode(&bad));
        assert_eq!(
            (r.status, r.qualifier),
            (status::EINVAL, qualifier::Q_INVALID_FIELD),
            "{bad:?}"
        );
    }
    client
        .parts_set(2, SET, &[first_part(&parts, part_type::DEV_FEATURES)])
        .unwrap();
}

/// 1.4 "Device parts": the device "MAY ignore parts flagged OPTIONAL"; an unknown part not so
/// flagged is refused.
#[test]
fn set_ignores_unknown_optional_parts_only() {
    let (_owner, mut client, _guest) = rig();
    client.dev_mode_stopped(2, true).unwrap();
    let optional = Part::new(0x1f0, PART_F_OPTIONAL, [0; 8], vec![1, 2, 3]);
    client.parts_set(2, SET, &[optional]).unwrap();
    let mandatory = Part::new(0x1f0, 0, [0; 8], vec![1, 2, 3]);
    assert_eq!(
        set_raw(&mut client, 2, &encode(&[mandatory])).status,
        status::EINVAL
    );
    let device = Part::new(0x300, 0, [0; 8], vec![1]);
    assert_eq!(
        set_raw(&mut client, 2, &encode(&[device])).status,
        status::EINVAL
    );
}

/// 1.4 "Device parts": "stopping an already-stopped device, or resuming a running one, MUST
/// succeed"; reserved DEV_MODE_SET flags are refused.
#[test]
fn dev_mode_set_is_idempotent_and_checks_flags() {
    let (_owner, mut client, _guest) = rig();
    client.dev_mode_stopped(1, false).unwrap();
    client.dev_mode_stopped(1, true).unwrap();
    client.dev_mode_stopped(1, true).unwrap();
    let cmd = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, 1, vec![0x02]);
    let r = client.command(&cmd, 0).unwrap();
    assert_eq!(
        (r.status, r.qualifier),
        (status::EINVAL, qualifier::Q_INVALID_FIELD)
    );
    client.dev_mode_stopped(1, false).unwrap();
}

/// 1.4 "Device parts", when stopped: the device "MUST NOT access virtqueue memory", "MUST NOT
/// send … vq notifications" and "MUST accept driver notifications"; the notified buffer is
/// used once the member resumes.
#[test]
fn stopped_member_uses_nothing_and_accepts_notifications() {
    let (_owner, mut client, mut guest) = rig();
    client.dev_mode_stopped(1, true).unwrap();
    let before = guest.function.interrupts().total();
    guest.submit(DATA + 0x100, 8);
    assert_eq!(guest.collect(), 0);
    assert_eq!(guest.function.interrupts().total(), before);
    client.dev_mode_stopped(1, false).unwrap();
    assert_eq!(guest.collect(), 1);
}

/// 1.4 "Device parts": parts set on a stopped device take effect when it is resumed (not
/// before); the device "MUST allow the same or different parts to be set multiple times".
/// Moved from member 1 to member 2 with the guest's memory, the guest's ring continues there.
#[test]
fn parts_set_take_effect_on_resume_and_the_guest_continues() {
    let (owner, mut client, mut guest) = rig();
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    client.dev_mode_stopped(2, true).unwrap();
    let target = owner.member(2).unwrap();
    client.parts_set(2, SET, &parts[..3]).unwrap();
    client.parts_set(2, SET, &parts).unwrap();
    client.parts_set(2, SET, &parts).unwrap();
    assert_eq!(
        target.core().lock().unwrap().status(),
        DeviceStatus::RESET,
        "not before resume"
    );
    let mem = target.core().lock().unwrap().mem().clone();
    copy_memory(&guest.mem, &mem);
    client.dev_mode_stopped(2, false).unwrap();
    let status = first_part(&parts, part_type::DEVICE_STATUS).value[0];
    assert_eq!(target.core().lock().unwrap().status().bits(), status);
    guest
        .driver
        .migrate_to(target.clone(), mem.clone())
        .unwrap();
    guest.function = target;
    guest.mem = mem;
    guest.submit(DATA + 0x200, 4);
    assert_eq!(guest.collect(), 1, "the third buffer, used on member 2");
}

/// 1.4 "Device parts", SR-IOV, when stopped: the device "MUST answer PCI reads with valid
/// values" — the member's registers read what its parts report (status, queue size and
/// enable, descriptor address).
#[test]
fn stopped_member_answers_register_reads_as_its_parts_say() {
    let (_owner, mut client, guest) = rig();
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    let f = &guest.function;
    assert_eq!(
        [f.r8(DEVICE_STATUS)],
        first_part(&parts, part_type::DEVICE_STATUS).value[..]
    );
    f.w16(QUEUE_SELECT, 0);
    let vq = first_part(&parts, part_type::VQ_CFG).value;
    assert_eq!(f.r16(QUEUE_SIZE).to_le_bytes(), vq[0..2]);
    assert_eq!(f.r16(QUEUE_ENABLE).to_le_bytes(), vq[4..6]);
    assert_eq!(f.r64(QUEUE_DESC).to_le_bytes(), vq[8..16]);
    client.dev_mode_stopped(1, false).unwrap();
}

/// 1.4 "Device parts" (spec-decisions §17): a part with reserved flag bits, a VQ_CFG whose
/// `enabled` is neither 0 nor 1, and an object used with another member's id are refused.
#[test]
fn set_refuses_reserved_bits_and_foreign_objects() {
    let (_owner, mut client, _guest, parts) = set_rig();
    let mut flagged = first_part(&parts, part_type::DEVICE_STATUS);
    flagged.hdr.flags = 0x02;
    let mut vq = first_part(&parts, part_type::VQ_CFG);
    vq.value[4] = 2;
    for bad in [flagged, vq] {
        let r = set_raw(&mut client, 2, &encode(&[bad]));
        assert_eq!(r.status, status::EINVAL);
    }
    let r = typed(&mut client, v1_4::DEV_PARTS_GET, 2, GET, 1, 256);
    assert_eq!(
        r.status,
        status::ENXIO,
        "member 1's object used for member 2"
    );
}

/// The framework: "If status is set to VIRTIO_ADMIN_STATUS_EINVAL, the device state MUST NOT
/// change" (spec-decisions §29). A resume whose staged parts do not make a consistent device
/// (a queue larger than the member's maximum, brought by a SET without DEVICE_STATUS) fails
/// with EINVAL, leaves the member stopped and keeps the staged parts: a SET correcting the one
/// part makes the next resume apply the whole.
#[test]
fn a_failed_resume_keeps_the_member_stopped_and_its_staged_parts() {
    let (owner, mut client, _guest, parts) = set_rig();
    client.parts_set(2, SET, &parts).unwrap();
    let good = first_part(&parts, part_type::VQ_CFG);
    let mut bad = good.clone();
    bad.value[0..2].copy_from_slice(&1024u16.to_le_bytes());
    client.parts_set(2, SET, &[bad]).unwrap();
    let resume = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, 2, vec![0]);
    let r = client.command(&resume, 0).unwrap();
    assert_eq!(r.status, status::EINVAL);
    let target = owner.member(2).unwrap();
    assert_eq!(
        target.core().lock().unwrap().admin_mode(),
        virtio_lm_spec::admin::DevMode::Freeze
    );
    client.parts_set(2, SET, &[good]).unwrap();
    client.dev_mode_stopped(2, false).unwrap();
    let status = first_part(&parts, part_type::DEVICE_STATUS).value[0];
    assert_eq!(target.core().lock().unwrap().status().bits(), status);
}
