//! The announcement after a move (virtio 1.4 5.1.6.5.4, "Gratuitous Packet Sending"; issue
//! 13: "VIRTIO_NET_S_ANNOUNCE and the configuration change on the destination, the driver's
//! acknowledgement, and the echo peer answering the new address"; docs/spec-decisions.md §31).
//!
//! The destination announces its net device at Commit: the device sets VIRTIO_NET_S_ANNOUNCE
//! (the guest negotiated VIRTIO_NET_F_GUEST_ANNOUNCE and the control queue), sends a
//! configuration change notification and a gratuitous RARP through its new tunnel socket; the
//! guest's driver, on the configuration vector, sees the bit, sends its own gratuitous RARP and
//! acknowledges with VIRTIO_NET_CTRL_ANNOUNCE_ACK, which the device accepts only while the bit
//! is set and which clears it.

use std::time::Duration;

use virtio_lm_devices::net::config::{offset, status};
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::net::ETH_P_RARP;
use virtio_lm_migration::testing::{
    assert_clean, assert_completed, migrate_to, small, test_options,
};
use virtio_lm_migration::MigrationControl;
use virtio_lm_vm::testing::{image, localhost, options as machine_options, run_for};
use virtio_lm_vm::{Machine, RingFormat};

/// The net function's `status` and the interrupts on its configuration vector (MSI-X 0).
fn net_status(machine: &Machine) -> (u16, u64) {
    let net = machine.functions().pop().expect("a net function");
    let mut bytes = [0u8; 2];
    net.core()
        .lock()
        .unwrap()
        .read_config(offset::STATUS, &mut bytes);
    (u16::from_le_bytes(bytes), net.interrupts().vector_count(0))
}

/// virtio 1.4 5.1.6.5.4: "the device sets VIRTIO_NET_S_ANNOUNCE ... and sends a configuration change
/// notification"; the driver "sends gratuitous packets ... and acknowledges with
/// VIRTIO_NET_CTRL_ANNOUNCE_ACK", after which the device clears the bit. The source never
/// announces; the destination announces once; the echo peer follows the device to its new
/// tunnel address from the announcement and answers it there.
#[test]
fn the_destination_announces_and_the_driver_acknowledges() {
    let image = image("announce", "split");
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let options = small(machine_options(&image, &echo, RingFormat::Split, 1));
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 20);
    let (before_status, _) = net_status(&source);
    assert_eq!(
        before_status & status::ANNOUNCE,
        0,
        "the source never announces"
    );
    assert_eq!(source.report().announce_acks, 0);
    let first_peer = echo.stats().peer().expect("the echo knows the source");

    let (report, incoming) =
        migrate_to(&source, options, &test_options(), &MigrationControl::new());
    assert_completed(&report, "announce");
    drop(source);
    let machine = incoming.expect("the destination").machine;
    run_for(&machine, 50);

    // The ack the device accepted proves the bit was set when the driver looked (an ACK
    // without a pending announcement is answered ERR, not counted).
    assert_eq!(machine.report().announce_acks, 1, "{:?}", machine.report());
    let (after_status, config_irqs) = net_status(&machine);
    assert_eq!(
        after_status & status::ANNOUNCE,
        0,
        "the ack cleared the bit"
    );
    assert!(config_irqs >= 1, "a configuration change was notified");
    let stats = machine.net_stats().expect("net stats");
    assert_eq!(stats.announces(), 1, "the device announced once");

    let learned = echo.stats().learned();
    let last = learned.last().expect("learned addresses");
    assert_ne!(
        last.addr, first_peer,
        "the echo follows the new tunnel address"
    );
    assert_eq!(echo.stats().peer(), Some(last.addr));
    assert_eq!(
        last.first.get(12..14),
        Some(&ETH_P_RARP.to_be_bytes()[..]),
        "the echo learned the new address from an announcement"
    );
    // Echoes verified after the move came back to the new address.
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, "announce");
    assert_eq!(after.announce_acks, 1);
}
