//! Multi-queue virtio-net (virtio spec 5.1.6.5.5, VIRTIO_NET_F_MQ): queue pairs enabled with
//! VQ_PAIRS_SET, automatic receive steering (the echo of a frame sent on transmitqN comes back
//! on receiveqN), and no frame on a receive queue past the pairs in use.

mod net_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use net_common::{localhost, options, NetRig, MAC, TIMEOUT};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::net::config::{ctrl, features as nf, offset};
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::net::workload::{NetWorkload, Verdict};
use virtio_lm_devices::NetOptions;

const PAIRS: u16 = 3;

/// Sends one workload frame per entry of `streams` (on that pair) and returns, per frame in
/// order, the pair its echo arrived on.
fn round_trip(rig: &mut NetRig, w: &mut NetWorkload, streams: &[u16]) -> Vec<u16> {
    let mut seqs = Vec::new();
    for &s in streams {
        seqs.push(w.next_seq);
        let f = w.next_frame(s);
        assert!(rig.send(s, &f));
    }
    let mut arrived: BTreeMap<u64, u16> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while arrived.len() < streams.len() {
        assert!(Instant::now() < deadline, "echoes missing: {arrived:?}");
        rig.pump();
        for pair in 0..PAIRS {
            for f in rig.receive(pair, 0, Duration::ZERO) {
                assert_eq!(w.receive(&f, pair), Verdict::Verified);
                let seq = u64::from_le_bytes(f[22..30].try_into().unwrap());
                arrived.insert(seq, pair);
            }
            rig.collect_tx(pair);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    seqs.iter().map(|s| arrived[s]).collect()
}

/// A device of `PAIRS` queue pairs whose peer echoes every frame (the peer lives as long as the
/// returned handle).
fn mq_rig() -> (EchoPeer, NetRig) {
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let rig = NetRig::new(
        NetOptions {
            queue_pairs: PAIRS,
            ..options(echo.addr())
        },
        QuiesceMode::Drain,
    );
    (echo, rig)
}

/// virtio spec 5.1.6.5.5: until VQ_PAIRS_SET only the first pair receives; after it, a flow's
/// frames are received on the pair its frames were sent on, among the pairs in use; frames of
/// flows last sent on a pair no longer in use go to receiveq1.
#[test]
fn receive_steering_follows_transmit_queue() {
    let (_echo, mut rig) = mq_rig();
    let f = rig.all_features(false, true);
    assert_ne!(f & nf::MQ, 0);
    rig.start(f, 2048);
    assert_eq!(
        rig.config(offset::MAX_VIRTQUEUE_PAIRS, 2),
        PAIRS.to_le_bytes()
    );
    assert_eq!(rig.core.num_queues(), 2 * PAIRS + 1);
    let mut w = NetWorkload::new(MAC);
    assert_eq!(
        round_trip(&mut rig, &mut w, &[0, 1, 2]),
        [0, 0, 0],
        "one pair in use"
    );

    let set = |rig: &mut NetRig, n: u16| {
        rig.command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &n.to_le_bytes())
    };
    assert_eq!(set(&mut rig, PAIRS), ctrl::OK);
    assert_eq!(
        round_trip(&mut rig, &mut w, &[0, 1, 2, 2, 1, 0]),
        [0, 1, 2, 2, 1, 0]
    );
    assert_eq!(set(&mut rig, 2), ctrl::OK);
    assert_eq!(
        round_trip(&mut rig, &mut w, &[2, 1, 0]),
        [0, 1, 0],
        "pair 2 not in use"
    );
    let r = w.report;
    assert_eq!((r.verified, r.duplicated, r.corrupted), (12, 0, 0));
    assert_eq!(r.misrouted, 3, "the frames sent on pairs not in use");
}

/// virtio spec 5.1.2: without VIRTIO_NET_F_MQ the control queue is queue 2, whatever
/// max_virtqueue_pairs says, and only the first pair carries frames.
#[test]
fn without_mq_the_control_queue_is_queue_2() {
    let (_echo, mut rig) = mq_rig();
    let f = rig.all_features(true, true) & !nf::MQ;
    rig.start(f, 2048);
    assert_eq!(rig.driver().ctrl_queue(), Some(2));
    assert_eq!(
        rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[0]),
        ctrl::OK
    );
    assert_eq!(
        rig.command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &2u16.to_le_bytes()),
        ctrl::ERR
    );
    let mut w = NetWorkload::new(MAC);
    let f = w.next_frame(0);
    assert!(rig.send(0, &f));
    let got = rig.receive(0, 1, TIMEOUT);
    assert_eq!(got.len(), 1);
    assert_eq!(w.receive(&got[0], 0), Verdict::Verified);
}
