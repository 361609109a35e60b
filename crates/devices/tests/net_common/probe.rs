//! A fixture for the receive filter tests: a running device whose peer is a plain socket,
//! and a probe that tells which frames the filter lets through.

use std::net::UdpSocket;
use std::time::Duration;

use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::NetOptions;

use super::{frame, options, peer_socket, NetRig, MAC};

pub const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
pub const MULTI: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];
pub const MULTI2: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 2];
pub const BCAST: [u8; 6] = [0xff; 6];
pub const ON: &[u8] = &[1];
pub const OFF: &[u8] = &[0];

pub struct Fixture {
    pub rig: NetRig,
    pub peer: UdpSocket,
}

pub fn fixture_with(drop_features: u64, pairs: u16) -> Fixture {
    let peer = peer_socket();
    let mut rig = NetRig::new(
        NetOptions {
            queue_pairs: pairs,
            ..options(peer.local_addr().unwrap())
        },
        QuiesceMode::Drain,
    );
    let f = rig.all_features(false, true) & !drop_features;
    rig.start(f, 2048);
    Fixture { rig, peer }
}

pub fn fixture() -> Fixture {
    fixture_with(0, 1)
}

impl Fixture {
    /// Sends each frame from the peer, then a marker frame the filter passes (`marker_dst`),
    /// and reports which frames the driver received before the marker.
    pub fn probe_with(&mut self, frames: &[Vec<u8>], marker_dst: [u8; 6]) -> Vec<bool> {
        let marker = frame(marker_dst, OTHER, 0x88b7, b"marker");
        for f in frames.iter().chain(std::iter::once(&marker)) {
            self.peer.send_to(f, self.rig.local).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(self.rig.receive(0, 1, Duration::from_millis(100)));
            if got.contains(&marker) {
                break;
            }
        }
        assert_eq!(got.last(), Some(&marker), "marker delivered last");
        frames.iter().map(|f| got.contains(f)).collect()
    }

    pub fn probe(&mut self, frames: &[Vec<u8>]) -> Vec<bool> {
        self.probe_with(frames, MAC)
    }

    pub fn to(dst: [u8; 6], tag: u8) -> Vec<u8> {
        frame(dst, OTHER, 0x88b6, &[tag; 20])
    }
}
/// A MAC TABLE_SET command body.
pub fn mac_table(unicast: &[[u8; 6]], multicast: &[[u8; 6]]) -> Vec<u8> {
    let mut d = Vec::new();
    for list in [unicast, multicast] {
        d.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for mac in list {
            d.extend_from_slice(mac);
        }
    }
    d
}
