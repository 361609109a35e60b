//! Announcing after a move (virtio spec 5.1.6.5.4, VIRTIO_NET_F_GUEST_ANNOUNCE; issue 5): the
//! echo workload runs on a device, the device is stopped and its context restored into a fresh
//! device and core on the same memory with another tunnel port (a "second host"), and whoever
//! resumes it announces it. The announcement waits for the resume (seed 000: no config change
//! while stopped, notified on resume), then sets VIRTIO_NET_S_ANNOUNCE with a configuration
//! interrupt, and its gratuitous RARP is the first frame the peer gets from the new address —
//! so the echo peer follows the device. The driver acknowledges with ANNOUNCE_ACK, and the
//! workload goes on: nothing duplicated, nothing corrupted.

mod net_common;

use std::time::{Duration, Instant};

use net_common::{localhost, options, NetRig, Runner, TestCore, RUNNING, TIMEOUT};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::net::config::{ctrl, offset, status as ns};
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::net::rarp_frame;
use virtio_lm_spec::DeviceStatus;

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);

fn net_status(rig: &NetRig) -> u16 {
    let b = rig.config(offset::STATUS, 2);
    u16::from_le_bytes([b[0], b[1]])
}

fn run_for(r: &mut Runner, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        r.step();
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// See the file documentation.
#[test]
fn device_announces_itself_on_the_second_host() {
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let mut src = NetRig::new(options(echo.addr()), QuiesceMode::RecordInflight);
    src.start_default();
    let mut r = Runner::new(src, 16, 1);
    run_for(&mut r, Duration::from_millis(100));
    assert_eq!(echo.stats().peer(), Some(r.rig.local));
    let before = r.w.report.verified;
    assert!(before > 0);

    r.rig.core.set_and_wait(STOPPED, STOPPED);
    let src_local = r.rig.local;
    let dst = r.rig.migrate_context(options(echo.addr()));
    let source = std::mem::replace(&mut r.rig, dst);
    drop(source);
    assert_ne!(r.rig.local, src_local, "another tunnel address");

    // Stopped: the announcement waits.
    let (irq, generation) = (r.rig.irq.config(), r.rig.core.config_generation());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(net_status(&r.rig), ns::LINK_UP);
    assert_eq!(r.rig.stats.announces(), 0);
    assert_eq!(echo.stats().peer(), Some(src_local));

    // Resumed: ANNOUNCE, a configuration interrupt, and the RARP first.
    r.rig.core.write_status(RUNNING);
    assert_eq!(r.rig.core.status(), RUNNING);
    assert_eq!(net_status(&r.rig), ns::LINK_UP | ns::ANNOUNCE);
    assert_eq!(r.rig.irq.config(), irq + 1);
    assert_ne!(r.rig.core.config_generation(), generation);
    assert_eq!(r.rig.stats.announces(), 1);
    let deadline = Instant::now() + TIMEOUT;
    while echo.stats().peer() != Some(r.rig.local) {
        assert!(
            Instant::now() < deadline,
            "the echo never learned the new address"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let learned = echo.stats().learned();
    let last = learned.last().unwrap();
    assert_eq!(last.addr, r.rig.local);
    assert_eq!(
        last.first,
        rarp_frame(&net_common::MAC),
        "learned from the announcement"
    );

    // The driver announces itself (here: nothing to send) and acknowledges.
    assert_eq!(
        r.rig.command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[]),
        ctrl::OK
    );
    assert_eq!(net_status(&r.rig), ns::LINK_UP);

    run_for(&mut r, Duration::from_millis(100));
    r.settle(Duration::from_secs(1));
    let report = r.w.report;
    eprintln!("{report:?}");
    assert!(
        report.verified > before,
        "echoes continue on the second host"
    );
    assert_eq!((report.duplicated, report.corrupted), (0, 0));
    assert!(
        report.foreign >= 1,
        "the echo of the RARP came back as a broadcast"
    );
    assert_eq!(echo.stats().peer_changes(), 2);
    assert!(!r.rig.needs_reset());
}
