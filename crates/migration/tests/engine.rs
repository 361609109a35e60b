//! Live migration between two machines in this process over loopback TCP, with the guest's blk
//! and net workloads and the memory dirtier running (issue 9, "Tests": split and packed × drain
//! and transfer, 0 lost, 0 duplicated, 0 corrupted, workloads verified on the destination after
//! it resumes; docs/stream-format.md, "One migration").

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl, MigrationState};
use virtio_lm_vm::testing::{image, localhost, options, run_for};
use virtio_lm_vm::{Machine, RingFormat};

/// Seed 004 admin-command strategy end to end: pre-copy, Stop then Freeze, final pages,
/// contexts and vCPU state, Ready, Commit, CommitAck; the destination runs on and verifies.
fn migrate_running_guest(ring: RingFormat, inflight: Inflight, queues: u16) {
    let tag = format!("{ring:?}-{inflight:?}-{queues}");
    let image = image("mig-engine", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = options(&image, &echo, ring, queues);
    let source = Machine::start(machine_options.clone()).unwrap();
    run_for(&source, 50);
    let before = source.report();
    let control = MigrationControl::new();
    let options = MigrateOptions {
        inflight,
        ..test_options()
    };
    let (report, incoming) = migrate_to(&source, machine_options, &options, &control);
    assert_completed(&report, &tag);
    assert_eq!(control.progress().state, MigrationState::Completed);
    assert!(source.all_parked(), "{tag}: the source ran on after Commit");
    drop(source);
    let incoming = incoming.unwrap();
    let destination = incoming.machine;
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    eprintln!("{tag}: {report:?}\n{after:?}");
    assert_clean(&after, &tag);
    let (b0, b1) = (before.blk.unwrap(), after.blk.unwrap());
    assert!(b1.completed > b0.completed + 100, "{tag}: ran on");
    assert!(after.net.unwrap().verified > before.net.unwrap().verified);
    assert!(after.dirtier.stamped > before.dirtier.stamped);
    assert!(report.precopy_rounds >= 1);
    assert!(report.device_context_bytes > 0);
    assert!(report.bytes_sent > 0);
}

#[test]
fn split_drain() {
    migrate_running_guest(RingFormat::Split, Inflight::Drain, 1);
}

#[test]
fn split_transfer() {
    migrate_running_guest(RingFormat::Split, Inflight::Transfer, 2);
}

#[test]
fn packed_drain() {
    migrate_running_guest(RingFormat::Packed, Inflight::Drain, 2);
}

#[test]
fn packed_transfer() {
    migrate_running_guest(RingFormat::Packed, Inflight::Transfer, 1);
}

/// Cancel before Commit returns the source to running, and a second migration succeeds
/// (issue 9: "Before Commit any failure or `cancel` returns the source to running (DEV_MODE
/// Active, vCPUs resumed, dirty logging stopped, in-flight requests completed exactly once
/// there) and the destination discards everything"). The cancel comes at the latest point it
/// can: once the source is stopped (vCPUs paused, members in Freeze, requests in flight
/// recorded in their contexts), so it is honoured only at the check before Commit.
#[test]
fn cancel_before_commit_returns_the_source_to_running() {
    let tag = "cancel";
    let image = image("mig-engine", tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = options(&image, &echo, RingFormat::Split, 2);
    let source = Machine::start(machine_options.clone()).unwrap();
    run_for(&source, 50);
    let options = MigrateOptions {
        inflight: Inflight::Transfer,
        ..test_options()
    };
    let control = MigrationControl::new();
    let canceller = control.clone();
    control.set_observer(move |p| {
        if p.state == MigrationState::Stopped {
            canceller.cancel();
        }
    });
    let (report, incoming) = migrate_to(&source, machine_options.clone(), &options, &control);
    assert!(
        matches!(report.outcome, virtio_lm_migration::Outcome::Cancelled(_)),
        "{}",
        report.result
    );
    assert_eq!(control.progress().state, MigrationState::Cancelled);
    assert!(
        matches!(
            incoming,
            Err(virtio_lm_migration::MigrationError::Cancelled(_))
        ),
        "the destination discards: {incoming:?}"
    );
    assert!(!source.memory().is_logging(), "dirty logging stopped");
    assert!(!source.all_parked(), "vCPUs resumed");
    // Running again: the workloads move on (the recorded requests completed here).
    run_for(&source, 100);

    let control = MigrationControl::new();
    let (report, incoming) = migrate_to(&source, machine_options, &options, &control);
    assert_completed(&report, tag);
    drop(source);
    let destination = incoming.unwrap().machine;
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, tag);
}
