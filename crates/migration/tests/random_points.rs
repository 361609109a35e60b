//! Migration at random points of a seeded workload (issue 9, "Tests": "Migration at random
//! points of a seeded workload, at least 100 per CI run"). One guest hops from machine to
//! machine, 50 times per ring format: before each hop its workloads run a seeded random number
//! of steps (zero included, so some hops follow the previous one at once), and each hop drains
//! or transfers in-flight requests at random. Every hop must complete; at the end the guest's
//! whole history verifies: 0 lost, 0 duplicated, 0 corrupted blk requests, no duplicated or
//! corrupted echo, the dirtier's working set intact.
//!
//! The seed 004 admin-command strategy (spec-decisions §13); and under the v1.4 profile (issue
//! 15, spec-decisions §39) both strategies, drawn per hop: device parts through the owner, or
//! virtio 1.4 SUSPEND in-band, each ring's position taken from guest memory on the destination.
//! 1.4 has no in-flight buffers to carry, so v1.4 hops always drain.

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl, StatusBit, Strategy};
use virtio_lm_spec::Profile;
use virtio_lm_vm::testing::{self, image, localhost, run_for};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat, MIB};

const HOPS: u32 = 50;

/// xorshift64*: the test's own seeded sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The v1.4 hops per ring format.
const V1_4_HOPS: u32 = 30;

/// What a hop does under `profile`, drawn from `draw`: the seeds profile keeps the admin
/// strategy and draws the in-flight mode; v1.4 draws the strategy and drains.
fn plan(profile: Profile, draw: u64) -> (Strategy, Inflight) {
    match (profile, draw % 2) {
        (Profile::Seeds, 0) => (Strategy::Admin, Inflight::Drain),
        (Profile::Seeds, _) => (Strategy::Admin, Inflight::Transfer),
        (Profile::V1_4, 0) => (Strategy::Admin, Inflight::Drain),
        (Profile::V1_4, _) => (Strategy::Status(StatusBit::Suspend), Inflight::Drain),
    }
}

fn hop_around(profile: Profile, ring: RingFormat, seed: u64, hops: u32) {
    let tag = format!("{profile}-{ring:?}");
    let image = image("mig-random", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    // The rig's blk-and-net machine, smaller and with a lighter dirtier: 50 hops per format.
    let options = MachineOptions {
        memory: 17 * MIB,
        dirty_rate_mib: 8,
        working_set_mib: 1,
        seed,
        profile,
        ..testing::options(&image, &echo, ring, 2)
    };
    let mut rng = Rng(seed | 1);
    let mut machine = Machine::start(options.clone()).unwrap();
    for hop in 0..hops {
        let steps = rng.next() % 25;
        if steps > 0 {
            run_for(&machine, steps);
        }
        let (strategy, inflight) = plan(profile, rng.next());
        let migrate = MigrateOptions {
            strategy,
            inflight,
            ..test_options()
        };
        let context = format!(
            "{tag} hop {hop} after {steps} steps, {}, {inflight:?}",
            strategy.name()
        );
        let (report, incoming) = migrate_to(
            &machine,
            options.clone(),
            &migrate,
            &MigrationControl::new(),
        );
        assert_completed(&report, &context);
        let next = incoming
            .unwrap_or_else(|e| panic!("{context}: {e}"))
            .machine;
        drop(std::mem::replace(&mut machine, next));
        assert!(
            machine.vcpu_errors().is_empty(),
            "{context}: {:?}",
            machine.vcpu_errors()
        );
    }
    run_for(&machine, 50);
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    eprintln!("{tag}: {after:?}");
    assert_clean(&after, u64::from(hops), &tag);
    assert!(after.blk.unwrap().verified > 0);
}

#[test]
fn split_guest_hops_50_times() {
    hop_around(Profile::Seeds, RingFormat::Split, 0x5eed_0009, HOPS);
}

#[test]
fn packed_guest_hops_50_times() {
    hop_around(Profile::Seeds, RingFormat::Packed, 0x5eed_0010, HOPS);
}

/// virtio 1.4, split ring: hops with device parts (DEV_MODE_SET STOPPED, PARTS_GET/SET) or
/// SUSPEND in-band at random points; a stopped 1.4 device has used every buffer it observed, so
/// each hop continues from `used.idx` in the received memory (spec-decisions §32, §38).
#[test]
fn v1_4_split_guest_hops_with_both_strategies() {
    hop_around(Profile::V1_4, RingFormat::Split, 0x5eed_0015, V1_4_HOPS);
}

/// virtio 1.4, packed ring with EVENT_IDX: each hop continues from the position the stopping
/// device wrote into the device event suppression structure (spec-decisions §32, §38).
#[test]
fn v1_4_packed_guest_hops_with_both_strategies() {
    hop_around(Profile::V1_4, RingFormat::Packed, 0x5eed_0016, V1_4_HOPS);
}
