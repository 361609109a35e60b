//! The status strategy's control-queue shadow (issue 10, spec-decisions §21): net state that
//! no register shows — the receive filter's RX mode, MAC table and VLAN table, and the queue
//! pairs in use — set by the guest through its control queue before the migration, holds after
//! it, checked by what the destination device filters and how it steers.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use virtio_lm_devices::net::config::ctrl;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{MigrateOptions, MigrationControl, StatusBit, Strategy};
use virtio_lm_spec::Profile;
use virtio_lm_vm::testing::{run_for, start_machine_with};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};

/// A unicast address the guest puts in its MAC table.
const LISTED: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
/// A unicast address in no table.
const UNLISTED: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
/// The VLAN the guest adds; another one it does not.
const VLAN_IN: u16 = 5;
const VLAN_OUT: u16 = 7;
/// An ethertype the guest's workload does not use: such frames count as foreign there.
const PROBE_ETHERTYPE: [u8; 2] = [0x88, 0xb6];

fn frame(dst: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    if let Some(vid) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&PROBE_ETHERTYPE);
    f.extend_from_slice(&[0xa5; 46]);
    f
}

/// Frames the filter must drop and deliver, in that order, under the guest's programming.
fn probes(own: [u8; 6]) -> [(Vec<u8>, bool); 4] {
    [
        (frame(UNLISTED, None), false),
        (frame(LISTED, None), true),
        (frame(own, Some(VLAN_IN)), true),
        (frame(own, Some(VLAN_OUT)), false),
    ]
}

/// Sends `frame` to `machine`'s net device from the wire and returns whether the device
/// delivered it to the guest (it counts as foreign there) rather than filtering it. A frame
/// dropped for want of a receive buffer is sent again: only the filter's verdict counts.
fn delivered(machine: &Machine, socket: &UdpSocket, frame: &[u8]) -> bool {
    let stats = machine.net_stats().unwrap().clone();
    let foreign = || machine.report().net.unwrap().foreign;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (filtered0, full0, foreign0) = (
            stats.rx_dropped_filtered(),
            stats.rx_dropped_no_buffer(),
            foreign(),
        );
        socket
            .send_to(frame, machine.net_local_addr().unwrap())
            .unwrap();
        loop {
            if stats.rx_dropped_filtered() > filtered0 {
                return false;
            }
            if foreign() > foreign0 {
                return true;
            }
            if stats.rx_dropped_no_buffer() > full0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no verdict for a probe frame: datagrams {}, frames {}, malformed {}, {:?}",
                stats.rx_datagrams(),
                stats.rx_frames(),
                stats.rx_dropped_malformed(),
                machine.report().net
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn check_filter(machine: &Machine, tag: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, (frame, want)) in probes(machine.options().mac).iter().enumerate() {
        assert_eq!(
            delivered(machine, &socket, frame),
            *want,
            "{tag}: probe {i}"
        );
    }
}

fn command(machine: &Machine, class: u8, cmd: u8, data: &[u8]) {
    assert_eq!(machine.net_command(class, cmd, data).unwrap(), ctrl::OK);
}

/// Issue 10: "Control-queue state (promiscuous mode, a MAC table, VLANs, MQ pairs) set before
/// migration holds after it, checked by what the device filters and steers" — seed 000 / seed
/// 003 stop, seed 001 queue state: the state the registers do not show travels as the
/// hypervisor's shadow of the accepted commands and is replayed through the destination
/// device's control queue before the guest resumes. The destination filters as the source did
/// (a frame to an unlisted MAC and one on a VLAN not added are dropped, a listed MAC and an
/// added VLAN delivered, promiscuous mode off), steers over both queue pairs (no echo comes
/// back on another pair than it left on), and the guest's workloads lose nothing.
fn control_state_holds(profile: Profile, ring: RingFormat, bit: StatusBit) {
    let tag = format!("{profile}-{ring:?}-{}", bit.name());
    // Two queue pairs: the guest's driver set VQ_PAIRS_SET 2 at boot.
    let with_profile = |o| MachineOptions { profile, ..o };
    let (_image, _echo, to, source) = start_machine_with("mig-shadow", &tag, ring, 2, with_profile);
    let mut table = 1u32.to_le_bytes().to_vec();
    table.extend_from_slice(&LISTED);
    table.extend_from_slice(&0u32.to_le_bytes());
    command(&source, ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, &table);
    command(
        &source,
        ctrl::CLASS_VLAN,
        ctrl::VLAN_ADD,
        &VLAN_IN.to_le_bytes(),
    );
    command(&source, ctrl::CLASS_RX, ctrl::RX_PROMISC, &[0]);
    check_filter(&source, &format!("{tag} at the source"));
    run_for(&source, 50);

    let options = MigrateOptions {
        strategy: Strategy::Status(bit),
        ..test_options()
    };
    let (report, incoming) = migrate_to(&source, to, &options, &MigrationControl::new());
    assert_completed(&report, &tag);
    drop(source);
    let destination = incoming.unwrap().machine;
    check_filter(&destination, &format!("{tag} at the destination"));
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, &tag);
    let net = after.net.unwrap();
    assert_eq!(net.misrouted, 0, "{tag}: steering over both pairs: {net:?}");
}

virtio_lm_device::test_cases! { control_state_holds:
    /// Seed 000 (DEVICE_STOPPED), split ring.
    fn ctrl_shadow_stopped_split(Profile::Seeds, RingFormat::Split, StatusBit::Stopped);
    /// Seed 003 (SUSPEND), packed ring.
    fn ctrl_shadow_suspend_packed(Profile::Seeds, RingFormat::Packed, StatusBit::Suspend);
    /// virtio 1.4 SUSPEND, split ring: no queue state, so the replay rewinds the control queue
    /// from the position in guest memory (`used.idx`) and sets the rewound position through
    /// the hypervisor's call before DRIVER_OK (spec-decisions §38).
    fn ctrl_shadow_suspend_split_v1_4(Profile::V1_4, RingFormat::Split, StatusBit::Suspend);
    /// virtio 1.4 SUSPEND, packed ring: rewound from the position in the device event
    /// suppression structure, which the replay puts back (spec-decisions §38).
    fn ctrl_shadow_suspend_packed_v1_4(Profile::V1_4, RingFormat::Packed, StatusBit::Suspend);
}
