//! Control queue commands other than the receive filter's (virtio spec 5.1.6.5: ANNOUNCE, MQ,
//! unknown and short commands), the features and configuration space, and the chains a control
//! or data queue cannot take. The filter commands are in net_filter.rs.

mod net_common;

use std::time::Duration;

use net_common::probe::{fixture, fixture_with, Fixture, OFF, OTHER};
use net_common::{options, peer_socket, recv, rig_without_mrg, MAC};
use virtio_lm_device::{ChainFault, DeviceError};
use virtio_lm_devices::net::config::{ctrl, features as nf, offset, status as ns};
use virtio_lm_devices::net::driver::NetDriver;
use virtio_lm_devices::net::ETH_P_RARP;
use virtio_lm_queue::BufferSpec;

/// A chain of `readable` device-readable bytes at `at`, then `writable` device-writable bytes
/// 64 bytes on.
fn readable_then_writable(at: u64, readable: u32, writable: u32) -> Vec<BufferSpec> {
    vec![
        BufferSpec::readable(at, readable),
        BufferSpec::writable(at + 64, writable),
    ]
}

/// virtio spec 5.1.3 and 5.1.4, spec-decisions §1: the features offered (never bit 42, legacy
/// VIRTIO_NET_F_GUEST_RSC6, which is SUSPEND in the seeds profile, nor 41), MRG_RXBUF as
/// configured, MQ only with several pairs; the configuration space (mac, status LINK_UP,
/// max_virtqueue_pairs) is read-only.
#[test]
fn features_and_configuration_space() {
    let mut fx = fixture_with(0, 2);
    let offered = fx.rig.core.device_features();
    let device = nf::MAC
        | nf::STATUS
        | nf::CTRL_VQ
        | nf::CTRL_RX
        | nf::CTRL_RX_EXTRA
        | nf::CTRL_VLAN
        | nf::GUEST_ANNOUNCE
        | nf::MQ
        | nf::CTRL_MAC_ADDR
        | nf::MRG_RXBUF;
    assert_eq!(offered & 0xff_ffff, device);
    let suspend = net_common::bit(virtio_lm_spec::Feature::Suspend);
    assert_eq!(suspend, 1 << 42);
    assert_ne!(
        offered & suspend,
        0,
        "bit 42 is the core's SUSPEND, not GUEST_RSC6"
    );
    let one = virtio_lm_devices::Net::new(virtio_lm_devices::NetOptions {
        mrg_rxbuf: false,
        ..options(fx.peer.local_addr().unwrap())
    })
    .unwrap();
    let bits = virtio_lm_device::VirtioDevice::<net_common::Mem>::device_features(&one);
    assert_eq!(bits, device & !nf::MQ & !nf::MRG_RXBUF);
    assert_eq!(
        bits >> 24,
        0,
        "no device bit in the ring and transport range (24-42)"
    );
    assert_eq!(fx.rig.config(offset::MAC, 6), MAC);
    assert_eq!(fx.rig.config(offset::STATUS, 2), ns::LINK_UP.to_le_bytes());
    assert_eq!(
        fx.rig.config(offset::MAX_VIRTQUEUE_PAIRS, 2),
        2u16.to_le_bytes()
    );
    assert_eq!(fx.rig.config(offset::MTU, 4), [0; 4]);
    fx.rig.core.write_config(offset::MAC, &[0x02; 6]);
    assert_eq!(
        fx.rig.config(offset::MAC, 6),
        MAC,
        "read-only with VERSION_1"
    );
}

/// virtio spec 5.1.6.5.4: an announcement sets VIRTIO_NET_S_ANNOUNCE with a configuration
/// change notification (and the device sends a gratuitous RARP, as QEMU); ANNOUNCE_ACK clears
/// the bit. An ACK with nothing pending is ERR (as QEMU).
#[test]
fn announce_ack() {
    let mut fx = fixture();
    let status = |fx: &Fixture| {
        let b = fx.rig.config(offset::STATUS, 2);
        u16::from_le_bytes([b[0], b[1]])
    };
    assert_eq!(status(&fx), ns::LINK_UP);
    let ack = |fx: &mut Fixture| {
        fx.rig
            .command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[])
    };
    assert_eq!(ack(&mut fx), ctrl::ERR, "nothing to acknowledge");
    let (irq, generation) = (fx.rig.irq.config(), fx.rig.core.config_generation());
    fx.rig.announcer.clone().announce(&mut fx.rig.core);
    assert_eq!(status(&fx), ns::LINK_UP | ns::ANNOUNCE);
    assert_eq!(
        fx.rig.irq.config(),
        irq + 1,
        "configuration change notified"
    );
    assert_ne!(fx.rig.core.config_generation(), generation);
    let (rarp, from) = recv(&fx.peer).expect("gratuitous frame");
    assert_eq!(from, fx.rig.local);
    assert_eq!(rarp, virtio_lm_devices::net::rarp_frame(&MAC));
    assert_eq!(u16::from_be_bytes([rarp[12], rarp[13]]), ETH_P_RARP);
    assert_eq!(
        fx.rig
            .command(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, &[0]),
        ctrl::ERR
    );
    assert_eq!(ack(&mut fx), ctrl::OK);
    assert_eq!(status(&fx), ns::LINK_UP);
    assert_eq!(ack(&mut fx), ctrl::ERR);

    // Without GUEST_ANNOUNCE the device still announces itself, but not through the status.
    let mut plain = fixture_with(nf::GUEST_ANNOUNCE, 1);
    plain.rig.announcer.clone().announce(&mut plain.rig.core);
    assert_eq!(status(&plain), ns::LINK_UP);
    assert!(recv(&plain.peer).is_some());
    assert_eq!(ack(&mut plain), ctrl::ERR);
}

/// virtio spec 5.1.6.5.5: MQ VQ_PAIRS_SET takes 1..=max_virtqueue_pairs (ERR otherwise, and
/// ERR without VIRTIO_NET_F_MQ). Steering itself is in net_mq.rs.
#[test]
fn mq_vq_pairs_set() {
    let mut fx = fixture_with(0, 3);
    let set = |fx: &mut Fixture, n: u16| {
        fx.rig
            .command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &n.to_le_bytes())
    };
    assert_eq!(set(&mut fx, 0), ctrl::ERR);
    assert_eq!(set(&mut fx, 4), ctrl::ERR);
    assert_eq!(set(&mut fx, 3), ctrl::OK);
    assert_eq!(set(&mut fx, 1), ctrl::OK);
    assert_eq!(
        fx.rig.command(ctrl::CLASS_MQ, 1, &[]),
        ctrl::ERR,
        "RSS_CONFIG is not offered"
    );
    assert_eq!(
        fx.rig.command(ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, &[2]),
        ctrl::ERR
    );
    let mut one = fixture();
    assert_eq!(
        one.rig.core.device_features() & nf::MQ,
        0,
        "MQ only with several pairs"
    );
    assert_eq!(set(&mut one, 1), ctrl::ERR);
}

/// virtio spec 5.1.6.5: unknown classes and a command shorter than its class and command bytes
/// are ERR; the device keeps working.
#[test]
fn unknown_and_short_commands() {
    let mut fx = fixture();
    assert_eq!(fx.rig.command(9, 0, &[]), ctrl::ERR);
    assert_eq!(fx.rig.command(ctrl::CLASS_MAC, 7, &[]), ctrl::ERR);
    let mem = fx.rig.mem.clone();
    let q = fx.rig.driver().ctrl_queue().unwrap();
    let mut slot = 0;
    fx.rig
        .driver()
        .add_chain(&*mem, q, |at| {
            slot = at;
            readable_then_writable(at, 1, 1)
        })
        .unwrap();
    fx.rig.core.kick(q);
    let used = fx.rig.driver().collect_used(&*mem, q).unwrap();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 1);
    let ack: u8 = vm_memory::Bytes::read_obj(&*mem, vm_memory::GuestAddress(slot + 64)).unwrap();
    assert_eq!(ack, ctrl::ERR);
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    assert!(!fx.rig.needs_reset());
}

/// spec-decisions §2 (seed 002): a control chain with no device-writable byte cannot be
/// acknowledged; the device sets DEVICE_NEEDS_RESET instead of guessing.
#[test]
fn control_chain_without_ack_needs_reset() {
    let mut fx = fixture();
    let mem = fx.rig.mem.clone();
    let q = fx.rig.driver().ctrl_queue().unwrap();
    fx.rig
        .driver()
        .add_chain(&*mem, q, |at| vec![BufferSpec::readable(at, 3)])
        .unwrap();
    fx.rig.core.kick(q);
    assert!(fx.rig.needs_reset());
    assert!(
        matches!(
            fx.rig.core.last_error(),
            Some(DeviceError::MalformedChain {
                fault: ChainFault::NoWritableByte,
                ..
            })
        ),
        "{:?}",
        fx.rig.core.last_error()
    );
}

/// virtio spec 5.1.6.2 and 5.1.6.3: transmit chains with a device-writable buffer or without a
/// whole header and Ethernet header, and receive chains with a device-readable buffer or room
/// for less than a header, are returned without being used for a frame; nothing is sent, the
/// device keeps working (no NEEDS_RESET: they can be answered).
#[test]
fn malformed_data_chains_are_returned() {
    let mut fx = fixture();
    let mem = fx.rig.mem.clone();
    let tx = NetDriver::tx_queue(0);
    let bad_tx: [&dyn Fn(u64) -> Vec<BufferSpec>; 3] = [
        &|at| readable_then_writable(at, 40, 4),
        &|at| vec![BufferSpec::readable(at, 20)],
        &|at| vec![BufferSpec::readable(at, 12 + 1519)],
    ];
    for build in bad_tx {
        fx.rig
            .driver()
            .add_chain(&*mem, tx, build)
            .unwrap()
            .unwrap();
    }
    fx.rig.core.kick(tx);
    let used = fx.rig.driver().collect_used(&*mem, tx).unwrap();
    assert_eq!(used.len(), 3);
    assert_eq!(fx.rig.stats.tx_malformed(), 3);
    assert_eq!(fx.rig.stats.tx_frames(), 0);

    // A good frame still goes out.
    let good = Fixture::to(OTHER, 5);
    assert!(fx.rig.send(0, &good));
    let (got, _) = recv(&fx.peer).unwrap();
    assert_eq!(got, good);
    assert_eq!(fx.rig.collect_tx(0), 1);
    assert!(!fx.rig.needs_reset());
}

/// virtio spec 5.1.6.3.1: receive buffers are device-writable and hold at least a header. A
/// chain with a readable buffer, or room for less than a header, is returned empty (used
/// length 0) and counted; the frame goes into the next good buffer.
#[test]
fn malformed_receive_chains_are_returned_empty() {
    let peer = peer_socket();
    let (mut rig, f) = rig_without_mrg(&peer, false, false);
    rig.start_bare(f, 2048);
    let mem = rig.mem.clone();
    let rx = NetDriver::rx_queue(0);
    let chains: [&dyn Fn(u64) -> Vec<BufferSpec>; 3] = [
        &|at| readable_then_writable(at, 64, 1600),
        &|at| vec![BufferSpec::writable(at, 8)],
        &|at| vec![BufferSpec::writable(at, 2048)],
    ];
    for build in chains {
        rig.driver().add_chain(&*mem, rx, build).unwrap().unwrap();
    }
    rig.core.kick(rx);
    let f = Fixture::to(MAC, 3);
    peer.send_to(&f, rig.local).unwrap();
    let mut used = Vec::new();
    for _ in 0..500 {
        rig.pump();
        used.extend(rig.driver().collect_used(&*mem, rx).unwrap());
        if used.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let lens: Vec<u32> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, [0, 0, 12 + f.len() as u32]);
    assert_eq!(rig.stats.rx_bad_chains(), 2);
    assert_eq!(rig.stats.rx_frames(), 1);
    assert!(!rig.needs_reset());
}
