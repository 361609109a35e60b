//! The receive path with and without VIRTIO_NET_F_MRG_RXBUF (virtio spec 5.1.6.3 and 5.1.6.4):
//! `num_buffers`, frames spread over several buffers, buffers too small, and frames that
//! arrive while no buffer is posted.

mod net_common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use net_common::{frame, peer_socket, rig_on, rig_without_mrg, send_frames, NetRig, MAC, TIMEOUT};
use virtio_lm_devices::net::config::features as nf;

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

fn frames(lens: &[usize]) -> Vec<Vec<u8>> {
    lens.iter()
        .enumerate()
        .map(|(i, &len)| {
            let payload: Vec<u8> = (0..len - 14).map(|j| (i * 31 + j) as u8).collect();
            frame(MAC, SRC, 0x88b6, &payload)
        })
        .collect()
}

/// virtio spec 5.1.6.4: with MRG_RXBUF a frame larger than one buffer is spread over as many
/// buffers as it needs, the first header's `num_buffers` saying how many; the driver joins them
/// back to the frame sent.
#[test]
fn mrg_rxbuf_spreads_frames_over_buffers() {
    let peer = peer_socket();
    let mut rig = rig_on(&peer);
    let f = rig.all_features(false, true);
    assert_ne!(f & nf::MRG_RXBUF, 0);
    rig.start(f, 256);
    let sent = frames(&[60, 244, 245, 1000, 1514, 500]);
    send_frames(&peer, rig.local, &sent);
    let got = rig.receive(0, sent.len(), TIMEOUT);
    assert_eq!(got, sent);
    // Buffers of 256 bytes: header + frame needs ceil((12 + len) / 256) of them.
    let buffers: u64 = sent
        .iter()
        .map(|f| (12 + f.len()).div_ceil(256) as u64)
        .sum();
    assert_eq!(buffers, 1 + 1 + 2 + 4 + 6 + 2);
    assert_eq!(rig.stats.rx_frames(), sent.len() as u64);
}

/// A device started without MRG_RXBUF (`ring` = packed, event_idx) with receive buffers of
/// `buf_len` bytes, to which a peer (returned, to keep it open) has sent frames of `sizes`.
fn sent_without_mrg(
    ring: (bool, bool),
    buf_len: u32,
    sizes: &[usize],
) -> (UdpSocket, NetRig, Vec<Vec<u8>>) {
    let peer = peer_socket();
    let (mut rig, f) = rig_without_mrg(&peer, ring.0, ring.1);
    rig.start(f, buf_len);
    let sent = frames(sizes);
    send_frames(&peer, rig.local, &sent);
    (peer, rig, sent)
}

/// virtio spec 5.1.6.3.1 / 5.1.6.4: without MRG_RXBUF every frame takes one buffer and
/// `num_buffers` is 1 (the driver rejects anything else); with VERSION_1 the header is 12 bytes
/// either way.
#[test]
fn without_mrg_rxbuf_one_buffer_per_frame() {
    let (_peer, mut rig, sent) = sent_without_mrg((true, false), 1530, &[60, 1514, 777, 1518]);
    assert_eq!(rig.receive(0, sent.len(), TIMEOUT), sent);
}

/// Without MRG_RXBUF a frame that does not fit the posted buffer cannot be delivered: it is
/// dropped and counted, and the buffer takes the next frame (virtio spec 5.1.6.3.1: the driver
/// should post buffers of at least 1526 bytes).
#[test]
fn without_mrg_rxbuf_too_small_buffers_drop_large_frames() {
    let (_peer, mut rig, sent) = sent_without_mrg((false, true), 600, &[100, 1200, 588, 589]);
    let got = rig.receive(0, 2, TIMEOUT);
    assert_eq!(got, vec![sent[0].clone(), sent[2].clone()]);
    let deadline = Instant::now() + TIMEOUT;
    while rig.stats.rx_dropped_malformed() < 2 {
        assert!(Instant::now() < deadline);
        rig.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        rig.receive(0, 1, Duration::from_millis(50)),
        Vec::<Vec<u8>>::new()
    );
}

/// Frames that arrive before any receive buffer is posted wait (in the tunnel's channel and the
/// device's backlog) and are delivered once buffers come; past that they are dropped and
/// counted, never delivered twice or out of order.
#[test]
fn frames_wait_for_buffers_then_overflow_is_counted() {
    let peer = peer_socket();
    let mut rig = rig_on(&peer);
    let f = rig.all_features(false, true);
    rig.start_bare(f, 2048);
    let sent = frames(&vec![100; 300]);
    for (i, f) in sent.iter().enumerate() {
        peer.send_to(f, rig.local).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + TIMEOUT;
    while rig.stats.rx_datagrams() + 2 < sent.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let arrived = rig.stats.rx_datagrams();
    let got = rig.receive(0, sent.len(), Duration::from_millis(500));
    let dropped = rig.stats.rx_dropped_no_buffer();
    assert!(dropped > 0, "more frames than the channel holds");
    assert_eq!(got.len() as u64 + dropped, arrived);
    // What was delivered is a prefix of what was sent, in order.
    assert_eq!(got[..], sent[..got.len()]);
    assert!(got.len() >= 256, "the channel's worth arrived");
    // And the device keeps receiving.
    let more = frames(&[70]);
    peer.send_to(&more[0], rig.local).unwrap();
    assert_eq!(rig.receive(0, 1, TIMEOUT), more);
}
