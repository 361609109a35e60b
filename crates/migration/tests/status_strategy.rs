//! The in-band status strategy (issue 10) between two machines in this process over loopback
//! TCP, with the guest's blk and net workloads and the memory dirtier running: no owner device
//! on the source, the devices stopped through their own status registers, their state read
//! through the transport and re-initialised on the destination as a driver would.

use std::time::Duration;

use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl, Outcome, StatusBit};
use virtio_lm_migration::{MigrationReport, MigrationState, Strategy};
use virtio_lm_vm::testing::{run_for, start_machine};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};

/// Migrates `source` with `strategy`; checks it completed and the source stayed paused;
/// returns the destination's machine, running.
fn hop(
    source: Machine,
    to: &MachineOptions,
    strategy: Strategy,
    tag: &str,
) -> (Machine, MigrationReport) {
    let options = MigrateOptions {
        strategy,
        ..test_options()
    };
    let (report, incoming) = migrate_to(&source, to.clone(), &options, &MigrationControl::new());
    assert_completed(&report, tag);
    eprintln!(
        "{tag}: downtime {:.2} ms, device downtime {:.3} ms, stop {:.3} ms, context {} bytes",
        report.downtime_ms, report.device_downtime_ms, report.stop_ms, report.device_context_bytes
    );
    assert_eq!(report.strategy, strategy.name());
    assert!(source.all_parked(), "{tag}: the source ran on after Commit");
    drop(source);
    (incoming.unwrap().machine, report)
}

/// Runs `destination` on and checks every workload moved on with nothing lost, duplicated or
/// corrupted since the guest started (`moves`: how many times the guest moved).
fn runs_clean(destination: Machine, moves: u64, tag: &str) {
    let before = destination.report();
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, moves, tag);
    let (b0, b1) = (before.blk.unwrap(), after.blk.unwrap());
    assert!(b1.completed >= b0.completed + 100, "{tag}: blk ran on");
    assert!(after.net.unwrap().verified > before.net.unwrap().verified);
}

/// Seed 000 ("the driver sets DEVICE_STOPPED … the device MUST finish processing of any
/// in-flight requests … and then set DEVICE_STOPPED"), seed 003 (SUSPEND, merged 1.4: the
/// device presents SUSPEND=1 with DRIVER_OK=0 once suspended) and seed 001 ("the driver MAY set
/// the queue state between FEATURES_OK and DRIVER_OK … the device MUST continue from that
/// state"): stopped through the status register, state read through the transport, the
/// destination re-initialised as a driver would; 0 lost, 0 duplicated, 0 corrupted.
fn status_migration(ring: RingFormat, bit: StatusBit) {
    let tag = format!("{ring:?}-{}", bit.name());
    let (_image, _echo, machine_options, source) = start_machine("mig-status", &tag, ring, 2);
    run_for(&source, 50);
    let (destination, report) = hop(source, &machine_options, Strategy::Status(bit), &tag);
    assert!(report.device_context_bytes > 0);
    assert!(report.phases.iter().any(|p| p.name == "src-device-stop"));
    runs_clean(destination, 1, &tag);
}

virtio_lm_device::test_cases! { status_migration:
    /// Seed 000 (DEVICE_STOPPED) with seed 001 queue state, split ring.
    fn status_stopped_split(RingFormat::Split, StatusBit::Stopped);
    /// Seed 000 (DEVICE_STOPPED) with seed 001 queue state, packed ring.
    fn status_stopped_packed(RingFormat::Packed, StatusBit::Stopped);
    /// Seed 003 (SUSPEND, merged form) with seed 001 queue state, split ring.
    fn status_suspend_split(RingFormat::Split, StatusBit::Suspend);
    /// Seed 003 (SUSPEND, merged form) with seed 001 queue state, packed ring.
    fn status_suspend_packed(RingFormat::Packed, StatusBit::Suspend);
}

/// Issue 10, "The same VM migrated admin → status → admin ping-pong keeps working": the
/// destination of one strategy is the source of the next (seed 004, then seed 003 with seed 001
/// queue state written before DRIVER_OK on a fresh device, then seed 004 again).
#[test]
fn admin_status_admin_ping_pong() {
    let (_image, _echo, machine_options, mut machine) =
        start_machine("mig-status", "ping-pong", RingFormat::Split, 1);
    let hops = [
        Strategy::Admin,
        Strategy::Status(StatusBit::Suspend),
        Strategy::Admin,
    ];
    for (i, strategy) in hops.into_iter().enumerate() {
        run_for(&machine, 50);
        let tag = format!("hop {i} ({})", strategy.name());
        machine = hop(machine, &machine_options, strategy, &tag).0;
    }
    runs_clean(machine, hops.len() as u64, "ping-pong");
}

/// Issue 10: "`--inflight transfer` with `--strategy status` is refused with a clear message
/// (the transport has no in-band path for in-flight chains)" — at Start, the source running on
/// (seed 000: setting DEVICE_STOPPED completes in-flight requests first, so they never travel).
#[test]
fn status_with_inflight_transfer_is_refused_at_start() {
    let (_image, _echo, machine_options, source) =
        start_machine("mig-status", "refused", RingFormat::Split, 1);
    let options = MigrateOptions {
        strategy: Strategy::Status(StatusBit::Stopped),
        inflight: Inflight::Transfer,
        ..test_options()
    };
    let (report, incoming) =
        migrate_to(&source, machine_options, &options, &MigrationControl::new());
    let Outcome::Failed(why) = &report.outcome else {
        panic!("expected a refusal, got {:?}", report.outcome);
    };
    assert!(why.contains("--inflight transfer"), "{why}");
    assert!(incoming.is_err());
    run_for(&source, 20);
    let after = source.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 0, "refused");
}

/// Seed 000 ("the driver clears DEVICE_STOPPED … the device resumes") and seed 003 (a suspended
/// device resumes when the driver sets DRIVER_OK again): a cancel once the source is stopped
/// in-band, honoured at the next step, resumes every device through its status
/// register and the vCPUs; the guest runs on, and the next migration completes.
#[test]
fn status_cancel_before_commit_resumes_through_the_status_register() {
    let (_image, _echo, machine_options, source) =
        start_machine("mig-status", "cancel", RingFormat::Packed, 1);
    for bit in [StatusBit::Stopped, StatusBit::Suspend] {
        run_for(&source, 50);
        let control = MigrationControl::new();
        let theirs = control.clone();
        control.set_observer(move |p| {
            if p.state == MigrationState::Stopped && !theirs.is_cancelled() {
                theirs.cancel();
            }
        });
        let options = MigrateOptions {
            strategy: Strategy::Status(bit),
            ..test_options()
        };
        let (report, incoming) = migrate_to(&source, machine_options.clone(), &options, &control);
        assert!(
            matches!(report.outcome, Outcome::Cancelled(_)),
            "{}: {}",
            bit.name(),
            report.result
        );
        assert!(incoming.is_err(), "the destination discards");
        assert!(!source.all_parked(), "{}: vCPUs resumed", bit.name());
        // Running again: the devices left the stop (otherwise no request completes).
        run_for(&source, 100);
    }
    let strategy = Strategy::Status(StatusBit::Suspend);
    let (destination, _) = hop(source, &machine_options, strategy, "after the cancels");
    runs_clean(destination, 1, "after the cancels");
}
