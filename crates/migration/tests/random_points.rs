//! Migration at random points of a seeded workload (issue 9, "Tests": "Migration at random
//! points of a seeded workload, at least 100 per CI run"). One guest hops from machine to
//! machine, 50 times per ring format: before each hop its workloads run a seeded random number
//! of steps (zero included, so some hops follow the previous one at once), and each hop drains
//! or transfers in-flight requests at random. Every hop must complete; at the end the guest's
//! whole history verifies: 0 lost, 0 duplicated, 0 corrupted blk requests, no duplicated or
//! corrupted echo, the dirtier's working set intact.
//!
//! Each hop takes the seed 004 admin-command strategy (spec-decisions §13) or the in-band
//! status strategy with either status bit (seed 000 DEVICE_STOPPED, seed 003 SUSPEND, seed 001
//! queue state; §15) at random. Every fourth hop or so the guest's
//! blk driver resets its device first and initialises it again, holding after a seeded step of
//! the initialisation until the hop is done (issue 10, "Random migration points include the
//! guest driver's initialisation and a device reset"; §40): the hop waits until the guest
//! reached that step, never for a time. Seed 001: a device "MUST reset the queue state when
//! the driver sets ACKNOWLEDGE status bit", so a device between ACKNOWLEDGE and DRIVER_OK needs
//! no ring position; the destination device must show the status and driver features the
//! source's did. The rest of the initialisation runs on the
//! destination, partly during the next hops, which so also land between its steps unheld.
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

/// Has the guest's blk driver reset its device and hold after a seeded step of its
/// initialisation — from the reset (status 0) to the last queue enabled, before DRIVER_OK —
/// and waits until it holds there. Returns the step.
fn hold_in_initialisation(machine: &Machine, holds: &mut u64) -> usize {
    let steps = machine.blk_init_steps().unwrap() as u64;
    // Every step in turn, so each ring format holds at each of them.
    let at = 1 + (*holds % (steps - 1)) as usize;
    *holds += 1;
    machine
        .blk_hold_in_initialisation(at, Duration::from_secs(60))
        .unwrap();
    at
}

/// The blk device's status and driver features, as its driver set them.
fn blk_registers(machine: &Machine) -> (u8, u64) {
    let blk = &machine.functions()[0];
    let mut core = blk.core().lock().unwrap();
    (core.status().bits(), core.driver_features())
}

/// The v1.4 hops per ring format.
const V1_4_HOPS: u32 = 30;

/// What a hop does under `profile`: admin, or the status strategy with a status bit the
/// profile has (v1.4 has no DEVICE_STOPPED); in-flight requests travel only with the seeds'
/// admin strategy (the status strategy always drains, §15; 1.4 carries no in-flight buffers).
fn plan(profile: Profile, rng: &mut Rng) -> (Strategy, Inflight) {
    let strategy = match (profile, rng.next() % 3) {
        (_, 0) => Strategy::Admin,
        (Profile::Seeds, 1) => Strategy::Status(StatusBit::Stopped),
        _ => Strategy::Status(StatusBit::Suspend),
    };
    let transfer =
        profile == Profile::Seeds && strategy == Strategy::Admin && rng.next().is_multiple_of(2);
    let inflight = if transfer {
        Inflight::Transfer
    } else {
        Inflight::Drain
    };
    (strategy, inflight)
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
    let mut holds = 0;
    let mut machine = Machine::start(options.clone()).unwrap();
    for hop in 0..hops {
        let steps = rng.next() % 25;
        if steps > 0 {
            run_for(&machine, steps);
        }
        let (strategy, inflight) = plan(profile, &mut rng);
        let migrate = MigrateOptions {
            strategy,
            inflight,
            ..test_options()
        };
        let held = (rng.next().is_multiple_of(4) && machine.blk_reinit_state().is_none())
            .then(|| hold_in_initialisation(&machine, &mut holds));
        let during = machine.blk_reinit_state();
        let registers = blk_registers(&machine);
        let context = format!(
            "{tag} (seed {seed:#x}) hop {hop} after {steps} steps, {}, {inflight:?}, \
             re-initialising: {during:?}",
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
        if let Some(at) = held {
            let state = machine.blk_reinit_state();
            assert!(state.is_some_and(|r| r.held()), "{context}: {state:?}");
            assert_eq!(state.unwrap().done, at, "{context}");
            assert_eq!(
                blk_registers(&machine),
                registers,
                "{context}: the device as it was"
            );
            machine.release_blk_reinit().unwrap();
        }
        assert!(
            machine.vcpu_errors().is_empty(),
            "{context}: {:?}",
            machine.vcpu_errors()
        );
    }
    let finished = machine.wait_blk_reinit(|r| r.is_none(), Duration::from_secs(60));
    assert!(finished, "{tag}: {:?}", machine.vcpu_errors());
    run_for(&machine, 50);
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    eprintln!("{tag}: {after:?}");
    assert_clean(&after, u64::from(hops), &tag);
    // Whether a hop may hold depends on the guest having finished its last initialisation,
    // so the count is not fixed; one hop in four is drawn.
    let least = u64::from(hops) / 15;
    assert!(
        holds >= least,
        "{tag}: only {holds} hops held in the initialisation (at least {least} expected)"
    );
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
