//! A→B→A→B with the same devices (issue 13: "A→B→A→B ping-pong with the same devices:
//! negotiated features, ring format, queue state, the net device's control-queue state and the
//! blk writeback mode are checked after every hop").
//!
//! The seed 004 admin-command strategy (spec-decisions §13), in-flight requests recorded and
//! drained on alternate hops. After each hop the paused source's final contexts (members in
//! Freeze) are compared with the running destination's (a DEV_CTX_READ in Active): the same
//! negotiated features, device status, queue configuration (ring addresses, sizes, enables),
//! net control-queue state (RX mode, MAC and VLAN tables, queue pairs) and blk writeback mode.
//! Queue state moves on as soon as the destination runs; that it travelled exactly is what the
//! workloads prove: every blk request completed once and verified, every echo answered once.

use std::time::Duration;

use virtio_lm_device::context::{decode, DeviceContext};
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl};
use virtio_lm_spec::context::FieldType;
use virtio_lm_vm::testing::{run_for, start_machine};
use virtio_lm_vm::{Machine, RingFormat};

/// The device-specific state that must travel unchanged (NET_ANNOUNCE does not: the
/// destination announces on its own).
const KEPT: [FieldType; 5] = [
    FieldType::BLK_WRITEBACK,
    FieldType::NET_RX_MODE,
    FieldType::NET_MAC_TABLE,
    FieldType::NET_VLAN_TABLE,
    FieldType::NET_MQ_PAIRS,
];

/// What must be the same on both sides of a hop, per member.
#[derive(Debug, PartialEq)]
struct Kept {
    member: u64,
    driver_features: Vec<u64>,
    device_status: u8,
    queues: Vec<(u16, bool, u64, u64, u64)>,
    fields: Vec<(u16, Vec<u8>)>,
}

fn kept(machine: &Machine) -> Vec<Kept> {
    machine
        .read_contexts()
        .unwrap()
        .into_iter()
        .map(|(member, bytes)| {
            let ctx: DeviceContext = decode(&bytes).unwrap();
            Kept {
                member,
                driver_features: ctx.driver_features,
                device_status: ctx.device_status,
                queues: ctx
                    .queues
                    .iter()
                    .map(|q| {
                        let c = &q.config;
                        (c.size, c.enabled, c.desc, c.driver, c.device)
                    })
                    .collect(),
                fields: ctx
                    .device_fields
                    .iter()
                    .filter(|f| KEPT.contains(&f.field_type))
                    .map(|f| (f.field_type.0, f.value.clone()))
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn a_b_a_b_keeps_the_devices_state() {
    let (_image, _echo, machine_options, mut machine) =
        start_machine("mig-pingpong", "abab", RingFormat::Packed, 2);
    let hops = ["A→B", "B→A", "A→B"];
    for (i, hop) in hops.iter().enumerate() {
        run_for(&machine, 50);
        let before = machine.report();
        let options = MigrateOptions {
            inflight: if i % 2 == 0 {
                Inflight::Transfer
            } else {
                Inflight::Drain
            },
            ..test_options()
        };
        let (report, incoming) = migrate_to(
            &machine,
            machine_options.clone(),
            &options,
            &MigrationControl::new(),
        );
        assert_completed(&report, hop);
        assert!(machine.all_parked(), "{hop}: the source ran on");
        let source = kept(&machine);
        let destination = incoming.unwrap().machine;
        let here = kept(&destination);
        assert_eq!(here, source, "{hop}: the devices changed on the way");
        assert!(
            source.iter().all(|k| !k.fields.is_empty()),
            "{hop}: no device state compared: {source:?}"
        );
        assert_eq!(destination.options().ring, RingFormat::Packed);
        drop(std::mem::replace(&mut machine, destination));
        run_for(&machine, 50);
        let now = machine.report();
        assert_clean(&now, i as u64 + 1, hop);
        assert!(
            now.blk.unwrap().verified > before.blk.unwrap().verified,
            "{hop}"
        );
    }
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, hops.len() as u64, "ping-pong");
}
