//! Migration at random points of a seeded workload (issue 9, "Tests": "Migration at random
//! points of a seeded workload, at least 100 per CI run"). One guest hops from machine to
//! machine, 50 times per ring format: before each hop its workloads run a seeded random number
//! of steps (zero included, so some hops follow the previous one at once), and each hop drains
//! or transfers in-flight requests at random. Every hop must complete; at the end the guest's
//! whole history verifies: 0 lost, 0 duplicated, 0 corrupted blk requests, no duplicated or
//! corrupted echo, the dirtier's working set intact.
//!
//! The seed 004 admin-command strategy (spec-decisions §13).

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl};
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

fn hop_around(ring: RingFormat, seed: u64) {
    let tag = format!("{ring:?}");
    let image = image("mig-random", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    // The rig's blk-and-net machine, smaller and with a lighter dirtier: 50 hops per format.
    let options = MachineOptions {
        memory: 17 * MIB,
        dirty_rate_mib: 8,
        working_set_mib: 1,
        seed,
        ..testing::options(&image, &echo, ring, 2)
    };
    let mut rng = Rng(seed | 1);
    let mut machine = Machine::start(options.clone()).unwrap();
    for hop in 0..HOPS {
        let steps = rng.next() % 25;
        if steps > 0 {
            run_for(&machine, steps);
        }
        let inflight = if rng.next().is_multiple_of(2) {
            Inflight::Drain
        } else {
            Inflight::Transfer
        };
        let migrate = MigrateOptions {
            inflight,
            ..test_options()
        };
        let context = format!("{tag} hop {hop} after {steps} steps, {inflight:?}");
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
    assert_clean(&after, u64::from(HOPS), &tag);
    assert!(after.blk.unwrap().verified > 0);
}

#[test]
fn split_guest_hops_50_times() {
    hop_around(RingFormat::Split, 0x5eed_0009);
}

#[test]
fn packed_guest_hops_50_times() {
    hop_around(RingFormat::Packed, 0x5eed_0010);
}
