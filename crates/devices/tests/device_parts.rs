//! Device-type parts under the v1.4 profile: virtio-net's control-queue parts (virtio 1.4
//! `VIRTIO_NET_DEV_PART_CVQ_CFG_PART`, 0x200 with class/command selectors) and blk's optional
//! configuration parts and net's announcement part, this project's extensions (spec-decisions
//! §17, §28).

use virtio_lm_devices::blk::config::offset as blk_offset;
use virtio_lm_devices::conformance::{DeviceKind, Target};
use virtio_lm_devices::net::config::{ctrl, features, offset as net_offset, status};
use virtio_lm_spec::parts::{
    part_type, DevPartHdr, Part, BLK_CAPACITY, BLK_WRITEBACK, DEV_PARTS_TYPE_GET,
    DEV_PARTS_TYPE_SET, NET_ANNOUNCE_PENDING, NET_CVQ_CFG, PART_F_OPTIONAL,
};
use virtio_lm_spec::Profile;

/// A v1.4 target of `kind` with a GET object (0) on member 1 and a SET object (1) on member 2,
/// member 1 initialised by a guest, member 2 stopped; returns member 1's parts.
fn stopped_pair(kind: DeviceKind) -> (Target, Vec<Part>) {
    let mut t = Target::build(Profile::V1_4, kind).unwrap();
    t.client.use_v1_4_commands().unwrap();
    let cap = t.client.dev_parts_cap_get().unwrap();
    t.client.dev_parts_cap_set(cap).unwrap();
    t.client
        .parts_object_create(1, 0, DEV_PARTS_TYPE_GET)
        .unwrap();
    t.client
        .parts_object_create(2, 1, DEV_PARTS_TYPE_SET)
        .unwrap();
    let _guest = t.guest(1, &[]).unwrap();
    t.client.dev_mode_stopped(1, true).unwrap();
    let parts = t.client.parts_get(1, 0, None).unwrap();
    t.client.dev_mode_stopped(2, true).unwrap();
    (t, parts)
}

fn config(t: &Target, member: u16, offset: usize, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    let f = t.owner.member(member).unwrap();
    f.core().lock().unwrap().read_config(offset, &mut bytes);
    bytes
}

fn cvq(class: u8, command: u8, value: Vec<u8>) -> Part {
    Part::new(
        NET_CVQ_CFG,
        0,
        DevPartHdr::cvq_selector(class, command),
        value,
    )
}

/// 1.4 net device parts: one CVQ_CFG part per (class, command) for the RX modes, the MAC
/// table and address, the VLAN table and the queue pairs; set on a stopped member they take
/// effect on resume (the address reaches the configuration space).
#[test]
fn net_control_queue_parts_travel() {
    let (mut t, parts) = stopped_pair(DeviceKind::Net);
    let selectors: Vec<(u8, u8)> = parts
        .iter()
        .filter(|p| p.hdr.part_type() == NET_CVQ_CFG)
        .map(|p| (p.hdr.selector[0], p.hdr.selector[1]))
        .collect();
    for want in [
        (ctrl::CLASS_RX, ctrl::RX_PROMISC),
        (ctrl::CLASS_RX, ctrl::RX_NOBCAST),
        (ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET),
        (ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET),
        (ctrl::CLASS_VLAN, ctrl::VLAN_ADD),
        (ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET),
    ] {
        assert!(selectors.contains(&want), "{want:?} in {selectors:?}");
    }
    let mac = vec![2, 0, 0, 0, 0, 0x42];
    let mut set = parts.clone();
    // The parts added below come after the last control-queue part (the required order).
    set.retain(|p| p.hdr.part_type() == NET_CVQ_CFG || p.hdr.part_type() < NET_CVQ_CFG);
    set.push(cvq(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, mac.clone()));
    set.push(cvq(
        ctrl::CLASS_VLAN,
        ctrl::VLAN_ADD,
        [5u16, 100].iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    t.client.parts_set(2, 1, &set).unwrap();
    assert_ne!(config(&t, 2, net_offset::MAC, 6), mac, "not before resume");
    t.client.dev_mode_stopped(2, false).unwrap();
    assert_eq!(config(&t, 2, net_offset::MAC, 6), mac);
    let bad = cvq(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, vec![1, 0, 0, 0, 0, 1]);
    t.client.dev_mode_stopped(2, true).unwrap();
    assert!(
        t.client.parts_set(2, 1, &[bad]).is_err(),
        "a multicast address"
    );
    let short = cvq(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, vec![1]);
    assert!(
        t.client.parts_set(2, 1, &[short]).is_err(),
        "a length mismatch"
    );
}

/// spec-decisions §17 (1.4 defines no configuration-space part): blk's OPTIONAL BLK_WRITEBACK
/// part is applied on resume, and BLK_CAPACITY is validated, never applied — a destination of
/// another capacity refuses it.
#[test]
fn blk_writeback_travels_and_capacity_is_checked() {
    let (mut t, parts) = stopped_pair(DeviceKind::Blk);
    let find = |ty: u16| {
        parts
            .iter()
            .find(|p| p.hdr.part_type() == ty)
            .unwrap()
            .clone()
    };
    let (mut writeback, mut capacity) = (find(BLK_WRITEBACK), find(BLK_CAPACITY));
    assert!(writeback.hdr.is_optional() && capacity.hdr.is_optional());
    assert_eq!(config(&t, 2, blk_offset::WRITEBACK, 1), [1]);
    writeback.value = vec![0];
    let mut set = parts.clone();
    set.retain(|p| p.hdr.part_type() != BLK_WRITEBACK && p.hdr.part_type() != BLK_CAPACITY);
    set.push(writeback);
    t.client.parts_set(2, 1, &set).unwrap();
    t.client.dev_mode_stopped(2, false).unwrap();
    assert_eq!(config(&t, 2, blk_offset::WRITEBACK, 1), [0]);
    capacity.value[0] ^= 1;
    t.client.dev_mode_stopped(2, true).unwrap();
    assert!(t.client.parts_set(2, 1, &[capacity]).is_err());
}

fn net_status(t: &Target, member: u16) -> u16 {
    let b = config(t, member, net_offset::STATUS, 2);
    u16::from_le_bytes([b[0], b[1]])
}

/// spec-decisions §28 (1.4 has no part that says "announcement pending"): the OPTIONAL
/// NET_ANNOUNCE_PENDING part carries it. Set on a stopped member it takes effect on resume
/// (`status` shows ANNOUNCE, and the parts read back say pending, with no ANNOUNCE ACK part);
/// it needs GUEST_ANNOUNCE and the control queue among the driver features, and is refused
/// without them.
#[test]
fn net_announce_state_travels_and_is_applied_on_resume() {
    let (mut t, parts) = stopped_pair(DeviceKind::Net);
    let pending = parts
        .iter()
        .find(|p| p.hdr.part_type() == NET_ANNOUNCE_PENDING)
        .unwrap();
    assert!(pending.hdr.is_optional());
    assert_eq!(pending.value, [0], "nothing pending on the source");
    assert_eq!(parts.last().unwrap().hdr.part_type(), NET_ANNOUNCE_PENDING);
    let mut set: Vec<Part> = parts
        .iter()
        .filter(|p| p.hdr.part_type() != NET_ANNOUNCE_PENDING)
        .cloned()
        .collect();
    let announce = Part::new(NET_ANNOUNCE_PENDING, PART_F_OPTIONAL, [0; 8], vec![1]);
    set.push(announce.clone());
    assert!(
        t.client.parts_set(2, 1, &set).is_err(),
        "pending without GUEST_ANNOUNCE negotiated"
    );
    let drv = set
        .iter_mut()
        .find(|p| p.hdr.part_type() == part_type::DRV_FEATURES)
        .unwrap();
    let word = u64::from_le_bytes(drv.value[..8].try_into().unwrap())
        | features::GUEST_ANNOUNCE
        | features::CTRL_VQ;
    drv.value = word.to_le_bytes().to_vec();
    t.client.parts_set(2, 1, &set).unwrap();
    assert_eq!(net_status(&t, 2) & status::ANNOUNCE, 0, "not before resume");
    t.client.dev_mode_stopped(2, false).unwrap();
    assert_ne!(net_status(&t, 2) & status::ANNOUNCE, 0);

    t.client
        .parts_object_create(2, 2, DEV_PARTS_TYPE_GET)
        .unwrap();
    let again = t.client.parts_get(2, 2, None).unwrap();
    assert!(again.contains(&announce), "pending reads back");
    assert!(
        !again.iter().any(|p| p.hdr.part_type() == NET_CVQ_CFG
            && p.hdr.selector[..2] == [ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK]),
        "no ANNOUNCE ACK part while pending"
    );
    let bad = Part::new(NET_ANNOUNCE_PENDING, PART_F_OPTIONAL, [0; 8], vec![2]);
    t.client.dev_mode_stopped(2, true).unwrap();
    assert!(t.client.parts_set(2, 1, &[bad]).is_err(), "not 0 or 1");
}

/// 1.4 net selectors MQ RSS_CONFIG and HASH_CONFIG (spec-decisions §28): the device offers
/// neither RSS nor hash reports, so it has no such parts; a mandatory part for them is
/// refused as a command the device does not know, an OPTIONAL one ignored.
#[test]
fn net_rss_parts_are_refused_unless_optional() {
    let (mut t, parts) = stopped_pair(DeviceKind::Net);
    // VIRTIO_NET_CTRL_MQ_RSS_CONFIG 1, VIRTIO_NET_CTRL_MQ_HASH_CONFIG 2.
    for command in [1u8, 2] {
        assert!(!parts.iter().any(|p| p.hdr.part_type() == NET_CVQ_CFG
            && p.hdr.selector[..2] == [ctrl::CLASS_MQ, command]));
        let mut rss = cvq(ctrl::CLASS_MQ, command, vec![0; 16]);
        assert!(t.client.parts_set(2, 1, &[rss.clone()]).is_err());
        rss.hdr.flags = PART_F_OPTIONAL;
        t.client.parts_set(2, 1, &[rss]).unwrap();
    }
}
