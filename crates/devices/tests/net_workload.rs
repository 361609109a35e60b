//! DEVICE_STOPPED (seed 000) and SUSPEND (seed 003) cycles — hundreds, with transmit frames
//! held by a busy socket at some of them — in the middle of the verifying echo workload, split
//! and packed, EVENT_IDX on and off, MRG_RXBUF on and off, two queue pairs, draining or
//! recording in-flight (some cycles moving the device to a fresh one on another port through
//! the device context). Every echo is verified: 0 duplicated, 0 corrupted (spec-decisions §7
//! pitfall 2), frames lost only where a socket dropped them, and the device is quiet while
//! stopped (pitfall 5). No receive buffer is ever returned with used length 0, which Linux
//! counts as a receive error (spec-decisions §7: a receive buffer is taken only when a frame is
//! ready for it, so a drained stop has used everything it took and returns nothing empty).

mod net_common;

use std::time::{Duration, Instant};

use net_common::{localhost, options, NetRig, Runner, SocketDrops, RUNNING, TIMEOUT};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::workload::Xorshift64;
use virtio_lm_devices::net::config::{ctrl, features as nf};
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::{Gate, NetFaults, NetOptions};
use virtio_lm_spec::DeviceStatus;

struct Case {
    packed: bool,
    event_idx: bool,
    mrg: bool,
    mode: QuiesceMode,
    cycles: u32,
    seed: u64,
    /// Every n-th stop moves the device to a fresh one (context transfer + announcement).
    migrate_every: Option<u32>,
}

fn run(case: Case) {
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let gate = Gate::new();
    let net_options = NetOptions {
        queue_pairs: 2,
        faults: NetFaults {
            tx_gate: Some(gate.clone()),
        },
        ..options(echo.addr())
    };
    let mut rig = NetRig::new(net_options.clone(), case.mode);
    let mut features = rig.all_features(case.packed, case.event_idx);
    if !case.mrg {
        features &= !nf::MRG_RXBUF;
    }
    rig.start(features, if case.mrg { 512 } else { 1536 });
    assert_eq!(
        rig.command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &2u16.to_le_bytes()),
        ctrl::OK
    );
    let mut r = Runner::new(rig, 24, 2);
    let mut rng = Xorshift64(case.seed);
    let mut drops = SocketDrops::default();
    let (mut held_at_stop, mut migrations) = (0, 0);
    for cycle in 0..case.cycles {
        for _ in 0..(rng.next_u64() % 4 + 1) {
            r.step();
            std::thread::sleep(Duration::from_micros(100));
        }
        let mut busy = rng.next_u64().is_multiple_of(4);
        if busy {
            // Frames sent from here on are held (the socket "is full") when the stop comes.
            gate.close();
            let sent = r.w.report.sent;
            r.collect();
            r.step();
            busy = r.w.report.sent > sent;
        }
        let migrate = case.migrate_every.is_some_and(|n| cycle % n == n - 1);
        let suspend = !migrate && rng.next_u64().is_multiple_of(2);
        let (request, presented) = virtio_lm_device::testing::quiesce_request(suspend);
        r.rig.core.write_status(request);
        if case.mode == QuiesceMode::Drain && busy {
            std::thread::sleep(Duration::from_micros(300));
            assert_ne!(
                r.rig.core.status(),
                presented,
                "cycle {cycle}: drain waits for the socket"
            );
            gate.open();
        }
        let deadline = Instant::now() + TIMEOUT;
        while r.rig.core.status() != presented {
            assert!(Instant::now() < deadline, "cycle {cycle}: never quiesced");
            std::thread::sleep(Duration::from_micros(50));
        }
        let in_flight: usize = (0..r.rig.core.num_queues())
            .map(|q| r.rig.core.queue_state(q).unwrap().inflight_ids().len())
            .sum();
        if case.mode == QuiesceMode::Drain {
            assert_eq!(in_flight, 0, "cycle {cycle}: drained before presenting");
        }
        held_at_stop += u32::from(busy);
        if cycle % 16 == 0 {
            let (sum, irq) = (r.rig.device_area_checksum(), r.rig.irq.used());
            std::thread::sleep(Duration::from_millis(1));
            r.rig.pump();
            r.rig.core.kick(0);
            r.rig.core.kick(1);
            assert_eq!(r.rig.core.status(), presented);
            assert_eq!(
                r.rig.device_area_checksum(),
                sum,
                "cycle {cycle}: quiet while stopped"
            );
            assert_eq!(r.rig.irq.used(), irq);
        }
        gate.open();
        if migrate {
            let dest = r.rig.migrate_context(NetOptions {
                faults: NetFaults::default(),
                ..net_options.clone()
            });
            let source = std::mem::replace(&mut r.rig, dest);
            let stats = source.stats.clone();
            drop(source);
            drops.add(&stats);
            migrations += 1;
            r.rig.core.write_status(RUNNING);
        } else if suspend {
            r.rig.core.write_status(presented | DeviceStatus::DRIVER_OK);
        } else {
            r.rig.core.write_status(RUNNING);
        }
        assert_eq!(r.rig.core.status(), RUNNING, "cycle {cycle}: resumed");
    }
    r.settle(Duration::from_secs(30));
    let report = r.w.report;
    let stats = r.rig.stats.clone();
    let healthy = !r.rig.needs_reset();
    let rx_length_errors = r.rig.driver().rx_length_errors();
    drop(r);
    drops.add(&stats);
    let socket_drops = drops.total(echo.stats());
    eprintln!(
        "{:?} packed={} event_idx={} mrg={}: {report:?}, held at stop {held_at_stop}, \
         {migrations} migrations, socket drops {socket_drops}",
        case.mode, case.packed, case.event_idx, case.mrg
    );
    assert_eq!(report.duplicated, 0);
    assert_eq!(report.corrupted, 0);
    assert_eq!(
        rx_length_errors, 0,
        "no receive buffer was ever returned empty (Linux counts those as errors)"
    );
    assert!(
        report.lost <= socket_drops,
        "{} lost, only {socket_drops} dropped by sockets",
        report.lost
    );
    assert_eq!(
        report.completed, report.sent,
        "every transmit buffer came back once"
    );
    assert!(
        report.verified > u64::from(case.cycles),
        "the workload made progress"
    );
    assert!(
        report.misrouted == 0,
        "echoes come back on the pair they were sent on"
    );
    assert!(held_at_stop > 0, "some stops caught frames held");
    assert_eq!(migrations > 0, case.migrate_every.is_some());
    assert!(healthy);
}

/// Split ring, EVENT_IDX, MRG_RXBUF with 512-byte buffers, draining.
#[test]
fn cycles_drain_split_event_idx_mrg() {
    run(Case {
        packed: false,
        event_idx: true,
        mrg: true,
        mode: QuiesceMode::Drain,
        cycles: 200,
        seed: 0x9e3779b97f4a7c15,
        migrate_every: None,
    });
}

/// Packed ring, no EVENT_IDX, one buffer per frame, draining.
#[test]
fn cycles_drain_packed_no_mrg() {
    run(Case {
        packed: true,
        event_idx: false,
        mrg: false,
        mode: QuiesceMode::Drain,
        cycles: 200,
        seed: 0x2545f4914f6cdd1d,
        migrate_every: None,
    });
}

/// Split ring, no EVENT_IDX, MRG_RXBUF, recording in-flight, moving to a fresh device every
/// 25th cycle.
#[test]
fn cycles_record_inflight_split_with_moves() {
    run(Case {
        packed: false,
        event_idx: false,
        mrg: true,
        mode: QuiesceMode::RecordInflight,
        cycles: 200,
        seed: 0x853c49e6748fea9b,
        migrate_every: Some(25),
    });
}

/// Packed ring, EVENT_IDX, one buffer per frame, recording in-flight, with moves.
#[test]
fn cycles_record_inflight_packed_with_moves() {
    run(Case {
        packed: true,
        event_idx: true,
        mrg: false,
        mode: QuiesceMode::RecordInflight,
        cycles: 200,
        seed: 0xda3e39cb94b95bdb,
        migrate_every: Some(25),
    });
}
