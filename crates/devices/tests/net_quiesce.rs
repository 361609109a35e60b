//! Quiescing the net device for DEVICE_STOPPED (seed 000) and SUSPEND (seed 003): draining
//! sends every transmit frame already taken before the stop is presented, and no receive
//! buffer is ever taken without a frame for it, so none comes back empty; recording in-flight hands unsent transmit chains over, to be sent exactly once
//! by whoever resumes the queue; a stopped device is quiet (spec-decisions §7 pitfalls 2 and 5).

mod net_common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use net_common::{
    drain_peer, frame, options, peer_socket, send_frames, NetRig, TestCore, MAC, RUNNING, SETUP,
    TIMEOUT,
};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::net::driver::NetDriver;
use virtio_lm_devices::{Gate, NetFaults, NetOptions};
use virtio_lm_spec::DeviceStatus;

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

fn gated(peer: &UdpSocket, gate: &Gate) -> NetOptions {
    NetOptions {
        faults: NetFaults {
            tx_gate: Some(gate.clone()),
        },
        ..options(peer.local_addr().unwrap())
    }
}

fn frames(n: u8) -> Vec<Vec<u8>> {
    (0..n).map(|i| frame(DST, MAC, 0x88b6, &[i; 40])).collect()
}

/// A started device on a fresh peer socket, its transmit path held by a closed gate, with
/// `n` frames posted for sending on pair 0: the peer, the gate, the rig, its features, the frames.
fn held(mode: QuiesceMode, n: u8) -> (UdpSocket, Gate, NetRig, u64, Vec<Vec<u8>>) {
    let peer = peer_socket();
    let gate = Gate::new();
    gate.close();
    let mut rig = NetRig::new(gated(&peer, &gate), mode);
    let f = rig.start_default();
    let sent = frames(n);
    for f in &sent {
        assert!(rig.send(0, f));
    }
    (peer, gate, rig, f, sent)
}

/// Seed 000 with draining: transmit frames held for a busy socket keep the stop pending; once
/// the socket takes them they are sent and used, and only then is DEVICE_STOPPED presented —
/// with nothing left in flight and no receive buffer returned empty (spec-decisions §7: a
/// receive buffer is taken only when a frame is ready for it).
#[test]
fn drain_sends_held_frames_before_presenting_the_stop() {
    let (peer, gate, mut rig, _, sent) = held(QuiesceMode::Drain, 3);
    rig.core.write_status(STOPPED);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        rig.core.status(),
        RUNNING,
        "stop pending while frames are held"
    );
    assert!(drain_peer(&peer, Duration::from_millis(10)).is_empty());
    gate.open();
    let deadline = Instant::now() + TIMEOUT;
    while rig.core.status() != STOPPED {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(drain_peer(&peer, Duration::from_millis(50)), sent);
    assert_eq!(rig.collect_tx(0), 3);
    for q in 0..rig.core.num_queues() {
        assert!(
            rig.core.queue_state(q).unwrap().inflight_ids().is_empty(),
            "queue {q}"
        );
    }
    assert_eq!(rig.receive(0, 0, Duration::ZERO), Vec::<Vec<u8>>::new());
    assert_eq!(
        rig.driver().rx_length_errors(),
        0,
        "no receive buffer came back empty"
    );
    rig.core.write_status(RUNNING);
    assert_eq!(rig.core.status(), RUNNING);
    // The driver reposts and the device receives again.
    peer.send_to(&sent[0], rig.local).unwrap();
    assert_eq!(rig.receive(0, 1, TIMEOUT), vec![sent[0].clone()]);
}

/// Seed 003 with recording in-flight: the suspend is presented at once, the held transmit
/// chains stay in flight in the recorded queue state (the receive buffers were never taken:
/// no frame came for them); nothing is sent while suspended; on resume every held frame is
/// sent exactly once.
#[test]
fn record_inflight_suspend_sends_held_frames_once_on_resume() {
    let (peer, gate, mut rig, _, sent) = held(QuiesceMode::RecordInflight, 4);
    rig.core.set_and_wait(
        RUNNING | DeviceStatus::SUSPEND,
        SETUP | DeviceStatus::SUSPEND,
    );
    let tx = rig.core.queue_state(NetDriver::tx_queue(0)).unwrap();
    assert_eq!(tx.inflight_ids().len(), 4);
    let rx = rig.core.queue_state(NetDriver::rx_queue(0)).unwrap();
    assert_eq!(
        rx.inflight_ids().len(),
        0,
        "receive buffers are not taken before a frame comes"
    );
    gate.open();
    std::thread::sleep(Duration::from_millis(30));
    rig.pump();
    assert!(
        drain_peer(&peer, Duration::from_millis(10)).is_empty(),
        "quiet while suspended"
    );
    rig.core
        .write_status(SETUP | DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK);
    assert_eq!(rig.core.status(), RUNNING);
    assert_eq!(
        drain_peer(&peer, Duration::from_millis(50)),
        sent,
        "each frame once, in order"
    );
    assert_eq!(rig.collect_tx(0), 4);
    // The posted receive buffers take frames.
    peer.send_to(&sent[1], rig.local).unwrap();
    assert_eq!(rig.receive(0, 1, TIMEOUT), vec![sent[1].clone()]);
}

/// Seed 000 / pitfall 2: chains recorded in flight by a stopped device are sent by a fresh
/// device that resumes the queue state (a migration), exactly once; the source never sends them.
#[test]
fn record_inflight_hands_unsent_frames_to_a_new_device() {
    let (peer, gate, mut src, f, sent) = held(QuiesceMode::RecordInflight, 5);
    src.core.set_and_wait(STOPPED, STOPPED);
    let mut dst = src.migrate(
        options(peer.local_addr().unwrap()),
        QuiesceMode::RecordInflight,
    );
    drop(src);
    gate.open();
    let got = drain_peer(&peer, Duration::from_millis(100));
    assert_eq!(got, sent);
    assert_eq!(dst.collect_tx(0), 5);
    assert_eq!(dst.features, f);
    peer.send_to(&sent[2], dst.local).unwrap();
    assert_eq!(dst.receive(0, 1, TIMEOUT), vec![sent[2].clone()]);
}

/// Pitfall 5: while stopped the device writes no guest memory and raises no interrupt, even
/// with frames arriving and queues kicked; after resume the frames are delivered, each once.
#[test]
fn stopped_device_is_quiet_then_delivers() {
    let peer = peer_socket();
    let mut rig = NetRig::new(
        options(peer.local_addr().unwrap()),
        QuiesceMode::RecordInflight,
    );
    rig.start_default();
    rig.core.set_and_wait(STOPPED, STOPPED);
    let (sum, used, config) = (rig.device_area_checksum(), rig.irq.used(), rig.irq.config());
    let sent = frames(10);
    send_frames(&peer, rig.local, &sent);
    std::thread::sleep(Duration::from_millis(20));
    rig.pump();
    rig.core.kick(0);
    rig.core.kick(1);
    assert_eq!(rig.core.status(), STOPPED);
    assert_eq!(rig.device_area_checksum(), sum, "no guest memory written");
    assert_eq!(
        (rig.irq.used(), rig.irq.config()),
        (used, config),
        "no interrupt"
    );
    rig.core.write_status(RUNNING);
    let got = rig.receive(0, 10, TIMEOUT);
    assert_eq!(got, sent);
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), 10);
}

/// Draining against a socket that never takes the held frames gives up after DRAIN_LIMIT and
/// presents the stop with them in flight (instead of hanging); they are sent once on resume.
#[test]
fn drain_gives_up_on_a_stuck_socket() {
    let (peer, gate, mut rig, _, sent) = held(QuiesceMode::Drain, 2);
    let t0 = Instant::now();
    rig.core.write_status(STOPPED);
    while rig.core.status() != STOPPED {
        assert!(t0.elapsed() < virtio_lm_devices::net::DRAIN_LIMIT + TIMEOUT);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(t0.elapsed() >= virtio_lm_devices::net::DRAIN_LIMIT);
    let tx = rig.core.queue_state(NetDriver::tx_queue(0)).unwrap();
    assert_eq!(tx.inflight_ids().len(), 2);
    let rx = rig.core.queue_state(NetDriver::rx_queue(0)).unwrap();
    assert_eq!(rx.inflight_ids().len(), 0, "no receive buffer taken");
    gate.open();
    rig.core.write_status(RUNNING);
    assert_eq!(drain_peer(&peer, Duration::from_millis(50)), sent);
    assert_eq!(rig.collect_tx(0), 2);
    assert_eq!(rig.receive(0, 0, Duration::ZERO), Vec::<Vec<u8>>::new());
    assert_eq!(
        rig.driver().rx_length_errors(),
        0,
        "no receive buffer came back empty"
    );
}
