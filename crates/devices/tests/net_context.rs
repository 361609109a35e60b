//! The net device through the core's device context (spec-decisions §5; seed 004 flow, §7
//! pitfall 9): control queue state set on a source — RX mode, MAC table, VLAN table, device
//! address, queue pairs, a pending announcement — and transmit chains in flight survive a
//! save into a fresh device and core on the same memory, which then behaves identically.

mod net_common;

use std::time::Duration;

use net_common::{
    drain_peer, frame, options, peer_socket, recv, rig_on, tagged, NetRig, TestCore, RUNNING,
};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::net::config::{ctrl, offset};
use virtio_lm_devices::net::driver::NetDriver;
use virtio_lm_devices::{Gate, NetFaults, NetOptions};
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::DeviceStatus;

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
const NEW_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const UNI: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const MULTI: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 9];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x55];

/// Probe frames: which of them the device delivers shows its whole receive filter.
fn probes() -> Vec<Vec<u8>> {
    let to = |dst: [u8; 6], tag: u8| frame(dst, SRC, 0x88b6, &[tag; 30]);
    vec![
        to(NEW_MAC, 1),
        to(net_common::MAC, 2),
        to(UNI, 3),
        to([0x02, 0xcc, 0, 0, 0, 3], 4),
        to(MULTI, 5),
        to([0x01, 0, 0x5e, 0, 0, 8], 6),
        to([0xff; 6], 7),
        tagged(NEW_MAC, 7, b"seven"),
        tagged(NEW_MAC, 8, b"eight"),
    ]
}

/// Sends the probes and a marker (to the current address) and returns which arrived.
fn filter_of(rig: &mut NetRig, peer: &std::net::UdpSocket) -> Vec<bool> {
    let marker = frame(NEW_MAC, SRC, 0x88b7, b"marker");
    let probes = probes();
    for f in probes.iter().chain(std::iter::once(&marker)) {
        peer.send_to(f, rig.local).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..50 {
        got.extend(rig.receive(0, 1, Duration::from_millis(100)));
        if got.contains(&marker) {
            break;
        }
    }
    assert_eq!(got.last(), Some(&marker));
    probes.iter().map(|f| got.contains(f)).collect()
}

fn table(unicast: &[[u8; 6]], multicast: &[[u8; 6]]) -> Vec<u8> {
    let mut d = Vec::new();
    for list in [unicast, multicast] {
        d.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for mac in list {
            d.extend_from_slice(mac);
        }
    }
    d
}

/// spec-decisions §5 and pitfall 9: every piece of control queue state, and transmit chains held
/// in flight, move with the context; the destination filters, steers, announces and sends
/// exactly as the source would have.
#[test]
fn control_state_and_inflight_frames_survive_a_context_transfer() {
    let peer = peer_socket();
    let gate = Gate::new();
    let src_options = NetOptions {
        queue_pairs: 2,
        faults: NetFaults {
            tx_gate: Some(gate.clone()),
        },
        ..options(peer.local_addr().unwrap())
    };
    let mut src = NetRig::new(src_options, QuiesceMode::RecordInflight);
    src.start_default();
    let cmds: [(u8, u8, Vec<u8>); 6] = [
        (ctrl::CLASS_RX, ctrl::RX_PROMISC, vec![0]),
        (ctrl::CLASS_RX, ctrl::RX_NOBCAST, vec![1]),
        (
            ctrl::CLASS_MAC,
            ctrl::MAC_TABLE_SET,
            table(&[UNI], &[MULTI]),
        ),
        (ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, NEW_MAC.to_vec()),
        (
            ctrl::CLASS_VLAN,
            ctrl::VLAN_ADD,
            7u16.to_le_bytes().to_vec(),
        ),
        (
            ctrl::CLASS_MQ,
            ctrl::MQ_VQ_PAIRS_SET,
            2u16.to_le_bytes().to_vec(),
        ),
    ];
    for (class, cmd, data) in &cmds {
        assert_eq!(src.command(*class, *cmd, data), ctrl::OK);
    }
    let filter = filter_of(&mut src, &peer);
    assert_eq!(
        filter,
        [true, false, true, false, true, false, false, true, false]
    );
    src.announcer.clone().announce(&mut src.core);
    let _rarp = recv(&peer).expect("source announced");

    // Two frames held for a busy socket when the source stops.
    gate.close();
    let held: Vec<Vec<u8>> = (0..2)
        .map(|i| frame(SRC, NEW_MAC, 0x88b6, &[0x40 + i; 50]))
        .collect();
    for f in &held {
        assert!(src.send(1, f));
    }
    src.core.set_and_wait(STOPPED, STOPPED);
    let ctx = src
        .core
        .save_context()
        .expect("context of a stopped device");
    let types: Vec<FieldType> = ctx.device_fields.iter().map(|f| f.field_type).collect();
    assert_eq!(
        types,
        [
            FieldType::NET_RX_MODE,
            FieldType::NET_MAC_TABLE,
            FieldType::NET_VLAN_TABLE,
            FieldType::NET_MQ_PAIRS,
            FieldType::NET_ANNOUNCE
        ]
    );
    assert_eq!(
        ctx.queues[usize::from(NetDriver::tx_queue(1))]
            .state
            .inflight_ids()
            .len(),
        2
    );
    let src_config = src.config(0, 12);

    // The destination: a fresh device (another tunnel port) and core on the same memory.
    let dst_options = NetOptions {
        queue_pairs: 2,
        ..options(peer.local_addr().unwrap())
    };
    let mut dst = NetRig::with_mem(dst_options, QuiesceMode::RecordInflight, src.mem.clone());
    dst.driver = src.driver.take();
    dst.features = src.features;
    assert_ne!(dst.local, src.local);
    dst.core.restore_context(&ctx).expect("restore");
    drop(src);
    gate.open();
    assert_eq!(dst.core.status(), STOPPED);
    assert_eq!(
        dst.config(0, 12),
        src_config,
        "address and ANNOUNCE restored"
    );
    assert_eq!(dst.config(offset::MAC, 6), NEW_MAC);
    let saved = dst.core.save_context().unwrap();
    assert_eq!(
        saved.device_fields, ctx.device_fields,
        "identical device state"
    );
    assert!(
        drain_peer(&peer, Duration::from_millis(30)).is_empty(),
        "nothing sent while stopped"
    );

    dst.core.write_status(RUNNING);
    assert_eq!(dst.core.status(), RUNNING);
    let mut out = Vec::new();
    while let Some((f, from)) = recv(&peer) {
        assert_eq!(from, dst.local);
        out.push(f);
        if out.len() == 2 {
            break;
        }
    }
    assert_eq!(out, held, "held frames sent once, by the destination");
    assert!(drain_peer(&peer, Duration::from_millis(30)).is_empty());
    assert_eq!(dst.collect_tx(1), 2);
    assert_eq!(filter_of(&mut dst, &peer), filter, "same receive filter");
    assert_eq!(
        dst.command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[]),
        ctrl::OK
    );
    assert_eq!(
        dst.command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[]),
        ctrl::ERR
    );
    assert_eq!(
        dst.command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &3u16.to_le_bytes()),
        ctrl::ERR
    );
}

/// spec-decisions §5: a context whose net fields fail validation is refused whole and the
/// destination keeps its own state.
#[test]
fn a_context_with_bad_net_fields_is_refused() {
    let peer = peer_socket();
    let mut src = rig_on(&peer);
    src.start_default();
    assert_eq!(
        src.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[0]),
        ctrl::OK
    );
    src.core.set_and_wait(STOPPED, STOPPED);
    let mut ctx = src.core.save_context().unwrap();
    let pairs = ctx
        .device_fields
        .iter_mut()
        .find(|f| f.field_type == FieldType::NET_MQ_PAIRS)
        .unwrap();
    pairs.value = 2u16.to_le_bytes().to_vec();
    let mut dst = NetRig::with_mem(
        options(peer.local_addr().unwrap()),
        QuiesceMode::Drain,
        src.mem.clone(),
    );
    let before = dst.core.save_context().unwrap();
    assert!(
        dst.core.restore_context(&ctx).is_err(),
        "2 pairs on a 1-pair device"
    );
    let after = dst.core.save_context().unwrap();
    assert_eq!(after.device_fields, before.device_fields);
    assert_eq!(dst.core.status(), DeviceStatus::RESET);
}

/// Seed 004 ("a mismatch between the device context field length ... and the length of the
/// field in the device" fails the write) and spec-decisions §5: DEVICE_CONFIG is net's whole
/// 12-byte configuration space, and another length is refused; the read-only configuration
/// (`mac` when the driver did not set it, `max_virtqueue_pairs`, `status`) is compared with the
/// receiving device's. A destination
/// with another own address refuses a context whose address the driver never set; once the
/// driver set it (MAC ADDR_SET) the address travels and the destination adopts it.
#[test]
fn the_own_address_must_match_unless_the_driver_set_it() {
    const OTHER: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
    let peer = peer_socket();
    let other = || NetOptions {
        mac: OTHER,
        ..options(peer.local_addr().unwrap())
    };
    let mut src = rig_on(&peer);
    src.start_default();
    src.core.set_and_wait(STOPPED, STOPPED);
    let ctx = src.core.save_context().unwrap();
    assert_eq!(ctx.device_config.len(), 12, "the whole configuration space");
    assert_eq!(
        ctx.device_config[offset::MAC..offset::MAC + 6],
        net_common::MAC
    );
    let mut dst = NetRig::with_mem(other(), QuiesceMode::Drain, src.mem.clone());
    assert_eq!(
        dst.core.restore_context(&ctx).unwrap_err(),
        virtio_lm_device::ContextError::DeviceConfigMismatch { offset: 5 }
    );
    assert_eq!(dst.core.status().bits(), 0, "nothing applied");
    let mut bad = ctx.clone();
    bad.device_config.push(0);
    let mut same = NetRig::with_mem(
        options(peer.local_addr().unwrap()),
        QuiesceMode::Drain,
        src.mem.clone(),
    );
    assert_eq!(
        same.core.restore_context(&bad).unwrap_err(),
        virtio_lm_device::ContextError::FieldLength {
            field_type: FieldType::DEVICE_CONFIG,
            length: 13,
            device: 12,
        }
    );

    src.core.write_status(RUNNING);
    assert_eq!(
        src.command(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, &NEW_MAC),
        ctrl::OK
    );
    src.core.set_and_wait(STOPPED, STOPPED);
    let ctx = src.core.save_context().unwrap();
    dst.core.restore_context(&ctx).unwrap();
    let mut mac = [0u8; 6];
    dst.core.read_config(offset::MAC, &mut mac);
    assert_eq!(mac, NEW_MAC, "the driver's address is adopted");
}
