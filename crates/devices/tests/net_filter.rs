//! The receive filter commands of the control queue and their effect on the frames the device
//! delivers (virtio spec 5.1.6.5.1 RX mode, 5.1.6.5.2 MAC table and address, 5.1.6.5.3 VLAN):
//! OK applies, ERR changes nothing.

mod net_common;

use net_common::probe::{
    fixture, fixture_with, mac_table, Fixture, BCAST, MULTI, MULTI2, OFF, ON, OTHER,
};
use net_common::{tagged, MAC};
use virtio_lm_devices::net::config::{ctrl, features as nf, offset};

/// One frame to each kind of address: another unicast, our own, broadcast, multicast.
fn four_kinds() -> [Vec<u8>; 4] {
    [
        Fixture::to(OTHER, 1),
        Fixture::to(MAC, 2),
        Fixture::to(BCAST, 3),
        Fixture::to(MULTI, 4),
    ]
}

/// virtio spec 5.1.6.5.1: PROMISC and ALLMULTI (VIRTIO_NET_F_CTRL_RX). The device starts
/// promiscuous (as QEMU); with PROMISC off it takes frames to its own address, broadcast, and
/// multicast only with ALLMULTI. `u8 on` other than 0/1 is ERR.
#[test]
fn rx_promisc_and_allmulti() {
    let mut fx = fixture();
    let frames = four_kinds();
    assert_eq!(fx.probe(&frames), [true; 4], "promiscuous by default");
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    assert_eq!(fx.probe(&frames), [false, true, true, false]);
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_ALLMULTI, ON),
        ctrl::OK
    );
    assert_eq!(fx.probe(&frames), [false, true, true, true]);
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[2]),
        ctrl::ERR
    );
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[]),
        ctrl::ERR
    );
    assert_eq!(
        fx.probe(&frames),
        [false, true, true, true],
        "ERR changed nothing"
    );
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, ON),
        ctrl::OK
    );
    assert_eq!(fx.probe(&frames), [true; 4]);
    assert!(fx.rig.stats.rx_dropped_filtered() >= 3);
}

/// virtio spec 5.1.6.5.1: ALLUNI, NOMULTI, NOUNI, NOBCAST (VIRTIO_NET_F_CTRL_RX_EXTRA), and
/// ERR for them when RX_EXTRA was not negotiated.
#[test]
fn rx_extra_modes() {
    let mut fx = fixture();
    let frames = four_kinds();
    let rx = |fx: &mut Fixture, cmd, on| fx.rig.command(ctrl::CLASS_RX, cmd, on);
    assert_eq!(rx(&mut fx, ctrl::RX_PROMISC, OFF), ctrl::OK);
    assert_eq!(rx(&mut fx, ctrl::RX_ALLUNI, ON), ctrl::OK);
    assert_eq!(fx.probe(&frames), [true, true, true, false]);
    assert_eq!(rx(&mut fx, ctrl::RX_ALLMULTI, ON), ctrl::OK);
    assert_eq!(rx(&mut fx, ctrl::RX_NOMULTI, ON), ctrl::OK);
    assert_eq!(fx.probe(&frames), [true, true, true, false], "NOMULTI wins");
    assert_eq!(rx(&mut fx, ctrl::RX_NOBCAST, ON), ctrl::OK);
    assert_eq!(fx.probe(&frames), [true, true, false, false]);
    assert_eq!(rx(&mut fx, ctrl::RX_NOBCAST, OFF), ctrl::OK);
    assert_eq!(rx(&mut fx, ctrl::RX_NOUNI, ON), ctrl::OK);
    assert_eq!(fx.probe_with(&frames, BCAST), [false, false, true, false]);
    assert_eq!(rx(&mut fx, 6, ON), ctrl::ERR, "no RX command 6");

    let mut plain = fixture_with(nf::CTRL_RX_EXTRA, 1);
    for cmd in [
        ctrl::RX_ALLUNI,
        ctrl::RX_NOMULTI,
        ctrl::RX_NOUNI,
        ctrl::RX_NOBCAST,
    ] {
        assert_eq!(plain.rig.command(ctrl::CLASS_RX, cmd, ON), ctrl::ERR);
    }
    assert_eq!(
        plain.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
}

/// virtio spec 5.1.6.5.2: MAC TABLE_SET replaces the unicast and multicast filter tables; a
/// table past the device's 64 entries accepts every address of that kind (as QEMU); a
/// malformed table (length, address of the wrong kind) is ERR and changes nothing.
#[test]
fn mac_table_set() {
    let mut fx = fixture();
    let frames = [
        Fixture::to(OTHER, 1),
        Fixture::to([0x02, 0, 0, 0, 0, 0x78], 2),
        Fixture::to(MULTI, 3),
        Fixture::to(MULTI2, 4),
    ];
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    let set =
        |fx: &mut Fixture, data: &[u8]| fx.rig.command(ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, data);
    assert_eq!(set(&mut fx, &mac_table(&[OTHER], &[MULTI])), ctrl::OK);
    assert_eq!(fx.probe(&frames), [true, false, true, false]);

    let mut short = mac_table(&[OTHER], &[MULTI]);
    short.pop();
    assert_eq!(set(&mut fx, &short), ctrl::ERR);
    assert_eq!(
        set(&mut fx, &mac_table(&[MULTI], &[])),
        ctrl::ERR,
        "multicast in the unicast list"
    );
    assert_eq!(
        set(&mut fx, &mac_table(&[], &[OTHER])),
        ctrl::ERR,
        "unicast in the multicast list"
    );
    let mut long = mac_table(&[OTHER], &[MULTI]);
    long.push(0);
    assert_eq!(set(&mut fx, &long), ctrl::ERR, "trailing bytes");
    assert_eq!(set(&mut fx, &[0xff; 4]), ctrl::ERR, "absurd count");
    assert_eq!(
        fx.probe(&frames),
        [true, false, true, false],
        "ERR changed nothing"
    );

    let many: Vec<[u8; 6]> = (0..65u8).map(|i| [0x02, 1, 0, 0, 0, i]).collect();
    assert_eq!(set(&mut fx, &mac_table(&many, &[MULTI2])), ctrl::OK);
    assert_eq!(
        fx.probe(&frames),
        [true, true, false, true],
        "unicast overflow"
    );
    assert_eq!(set(&mut fx, &mac_table(&[], &[])), ctrl::OK);
    assert_eq!(fx.probe(&frames), [false; 4]);

    let mut plain = fixture_with(nf::CTRL_RX, 1);
    assert_eq!(
        plain
            .rig
            .command(ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, &mac_table(&[], &[])),
        ctrl::ERR,
        "TABLE_SET needs VIRTIO_NET_F_CTRL_RX"
    );
}

/// virtio spec 5.1.6.5.2: MAC ADDR_SET (VIRTIO_NET_F_CTRL_MAC_ADDR) changes the device address
/// in the configuration space and in the filter; a multicast or short address is ERR; a reset
/// brings the original address back.
#[test]
fn mac_addr_set() {
    let mut fx = fixture();
    let new = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    let set =
        |fx: &mut Fixture, data: &[u8]| fx.rig.command(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, data);
    assert_eq!(set(&mut fx, &new), ctrl::OK);
    assert_eq!(fx.rig.config(offset::MAC, 6), new);
    let frames = [Fixture::to(MAC, 1), Fixture::to(new, 2)];
    assert_eq!(fx.probe_with(&frames, BCAST), [false, true]);
    assert_eq!(set(&mut fx, &MULTI), ctrl::ERR);
    assert_eq!(set(&mut fx, &new[..5]), ctrl::ERR);
    assert_eq!(fx.rig.config(offset::MAC, 6), new, "ERR changed nothing");
    fx.rig
        .core
        .write_status(virtio_lm_spec::DeviceStatus::RESET);
    assert_eq!(
        fx.rig.config(offset::MAC, 6),
        MAC,
        "reset restores the address"
    );

    let mut plain = fixture_with(nf::CTRL_MAC_ADDR, 1);
    assert_eq!(
        plain.rig.command(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, &new),
        ctrl::ERR
    );
    assert_eq!(plain.rig.config(offset::MAC, 6), MAC);
}

/// virtio spec 5.1.6.5.3: VLAN ADD and DEL (VIRTIO_NET_F_CTRL_VLAN). A tagged frame needs its
/// VLAN in the table (untagged frames are not affected); a VID of 4096 or more is ERR.
#[test]
fn vlan_add_del() {
    let mut fx = fixture();
    assert_eq!(
        fx.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    let frames = [
        tagged(MAC, 5, b"five"),
        tagged(MAC, 6, b"six"),
        Fixture::to(MAC, 9),
    ];
    assert_eq!(fx.probe(&frames), [false, false, true]);
    let vlan =
        |fx: &mut Fixture, cmd, vid: u16| fx.rig.command(ctrl::CLASS_VLAN, cmd, &vid.to_le_bytes());
    assert_eq!(vlan(&mut fx, ctrl::VLAN_ADD, 5), ctrl::OK);
    assert_eq!(fx.probe(&frames), [true, false, true]);
    assert_eq!(vlan(&mut fx, ctrl::VLAN_ADD, 4096), ctrl::ERR);
    assert_eq!(
        fx.rig.command(ctrl::CLASS_VLAN, ctrl::VLAN_ADD, &[6]),
        ctrl::ERR
    );
    assert_eq!(vlan(&mut fx, 2, 6), ctrl::ERR, "no VLAN command 2");
    assert_eq!(vlan(&mut fx, ctrl::VLAN_DEL, 5), ctrl::OK);
    assert_eq!(vlan(&mut fx, ctrl::VLAN_ADD, 6), ctrl::OK);
    assert_eq!(fx.probe(&frames), [false, true, true]);

    // Without CTRL_VLAN there is no VLAN filter: every tag passes.
    let mut plain = fixture_with(nf::CTRL_VLAN, 1);
    assert_eq!(
        plain.rig.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, OFF),
        ctrl::OK
    );
    assert_eq!(plain.probe(&frames), [true, true, true]);
    assert_eq!(vlan(&mut plain, ctrl::VLAN_ADD, 5), ctrl::ERR);
}
