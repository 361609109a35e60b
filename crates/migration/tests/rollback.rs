//! Cancel and rollback at every step (issue 13, "Cancel and rollback at every step": "Each time
//! the source returns to running intact (after a Stop with transfer it takes its recorded
//! in-flight chains back and completes each exactly once), the destination discards everything
//! and exits with a clear message, and a second migration to a fresh destination succeeds and
//! verifies"; "After Commit: the link cut after Commit leaves the source paused with outcome
//! `unknown` and the destination running alone").
//!
//! Each row cancels at one [`FaultPoint`] of the source (the engine's named steps,
//! spec-decisions §26), with the seed 004 admin strategy (drain and transfer) or the in-band
//! status strategy (seed 000 DEVICE_STOPPED, seed 003 SUSPEND; spec-decisions §15).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::testing::{
    assert_clean, assert_running_again, migrate_again_and_verify, migrate_to, small, test_options,
};
use virtio_lm_migration::{
    Fault, FaultPoint, Inflight, MigrateOptions, MigrationControl, MigrationState, Outcome,
    StatusBit, Strategy,
};
use virtio_lm_vm::testing::{image, localhost, options, run_for};
use virtio_lm_vm::{Machine, RingFormat};

/// A control whose hook answers `fault` the first time the source reaches `at`. For a cancel in
/// a dirty round, the guest is first made to dirty memory after round 0 (so a dirty round
/// comes: the migration's downtime target is 0 then).
fn fault_at(
    at: FaultPoint,
    fault: Fault,
    machine: &Arc<Machine>,
) -> (MigrationControl, Arc<AtomicBool>) {
    let control = MigrationControl::new();
    let hit = Arc::new(AtomicBool::new(false));
    let seen = hit.clone();
    let machine = machine.clone();
    control.set_fault_hook(move |p| {
        if at == FaultPoint::MidDirtyRound && p == FaultPoint::AfterDevicePrecopy {
            run_for(&machine, 1);
        }
        if p == at && !seen.swap(true, Ordering::SeqCst) {
            fault
        } else {
            Fault::Continue
        }
    });
    (control, hit)
}

fn options_for(at: FaultPoint, strategy: Strategy, inflight: Inflight) -> MigrateOptions {
    MigrateOptions {
        strategy,
        inflight,
        downtime_ms: if at == FaultPoint::MidDirtyRound {
            0
        } else {
            10
        },
        timeout: Duration::from_secs(5),
        ..test_options()
    }
}

/// Cancels at `at`; checks the rollback, then migrates again to a fresh destination and
/// verifies the guest's whole history there.
fn cancel_at(at: FaultPoint, strategy: Strategy, inflight: Inflight, ring: RingFormat) {
    let tag = format!("{at:?}-{}-{inflight:?}-{ring:?}", strategy.name());
    let image = image("mig-rollback", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = small(options(&image, &echo, ring, 2));
    let source = Arc::new(Machine::start(machine_options.clone()).unwrap());
    run_for(&source, 30);
    let (control, hit) = fault_at(at, Fault::Cancel, &source);
    let options = options_for(at, strategy, inflight);
    let (report, incoming) = migrate_to(&source, machine_options.clone(), &options, &control);
    assert!(hit.load(Ordering::SeqCst), "{tag}: the step never came");
    assert!(
        matches!(report.outcome, Outcome::Cancelled(_)),
        "{tag}: {}",
        report.result
    );
    assert_eq!(control.progress().state, MigrationState::Cancelled, "{tag}");
    drop(control);
    // The destination discarded what it had, with its reason (the Cancel it read, or the
    // link the source closed after it).
    let err = incoming.expect_err("the destination ran a cancelled guest");
    eprintln!("{tag}: destination: {err}");
    assert!(!err.to_string().is_empty());
    assert_running_again(&source, &tag);
    let again = MigrateOptions {
        downtime_ms: 10,
        ..options
    };
    let source = Arc::into_inner(source).expect("no other owner once the migration is over");
    // Every request recorded in flight at the cancelled Stop completed once on the source,
    // those of the second migration once on the destination: nothing lost, nothing twice.
    migrate_again_and_verify(source, machine_options, &again, &tag);
}

use FaultPoint::*;
const ADMIN: Strategy = Strategy::Admin;
const STOPPED: Strategy = Strategy::Status(StatusBit::Stopped);
const SUSPEND: Strategy = Strategy::Status(StatusBit::Suspend);
use Inflight::{Drain, Transfer};
use RingFormat::{Packed, Split};

virtio_lm_device::test_cases! { cancel_at:
    /// Admin, drained: Start exchanged, nothing of the guest sent.
    fn admin_after_start(AfterStart, ADMIN, Drain, Split);
    /// Admin, drained: in the middle of round 0.
    fn admin_mid_round_0(MidRound0, ADMIN, Drain, Packed);
    /// Admin, drained: in the middle of a dirty round.
    fn admin_mid_dirty_round(MidDirtyRound, ADMIN, Drain, Split);
    /// Admin, drained: the pre-copy contexts sent.
    fn admin_after_device_precopy(AfterDevicePrecopy, ADMIN, Drain, Packed);
    /// Admin, drained: vCPUs paused, devices still Active.
    fn admin_after_vcpu_pause(AfterVcpuPause, ADMIN, Drain, Split);
    /// Admin, drained: members in Stop.
    fn admin_drain_after_stop(AfterStop, ADMIN, Drain, Packed);
    /// Admin, drained: members in Freeze.
    fn admin_drain_after_freeze(AfterFreeze, ADMIN, Drain, Split);
    /// Admin, drained: in the middle of the final memory.
    fn admin_drain_mid_final_memory(MidFinalMemory, ADMIN, Drain, Packed);
    /// Admin, drained: in the middle of the final contexts.
    fn admin_drain_mid_final_context(MidFinalContext, ADMIN, Drain, Split);
    /// Admin, drained: Complete sent, the destination loading.
    fn admin_drain_after_complete(AfterComplete, ADMIN, Drain, Packed);
    /// Admin, drained: the destination Ready, still paused.
    fn admin_drain_after_ready(AfterReady, ADMIN, Drain, Split);
    /// Admin, in flight recorded: members in Stop; the recorded chains complete on the source.
    fn admin_transfer_after_stop(AfterStop, ADMIN, Transfer, Split);
    /// Admin, in flight recorded: members in Freeze.
    fn admin_transfer_after_freeze(AfterFreeze, ADMIN, Transfer, Packed);
    /// Admin, in flight recorded: in the middle of the final memory.
    fn admin_transfer_mid_final_memory(MidFinalMemory, ADMIN, Transfer, Split);
    /// Admin, in flight recorded: the contexts holding the chains partly sent.
    fn admin_transfer_mid_final_context(MidFinalContext, ADMIN, Transfer, Packed);
    /// Admin, in flight recorded: Complete sent.
    fn admin_transfer_after_complete(AfterComplete, ADMIN, Transfer, Split);
    /// Admin, in flight recorded: the destination Ready with the chains loaded.
    fn admin_transfer_after_ready(AfterReady, ADMIN, Transfer, Packed);
    /// Status (DEVICE_STOPPED): Start exchanged.
    fn status_after_start(AfterStart, STOPPED, Drain, Packed);
    /// Status (SUSPEND): in the middle of round 0.
    fn status_mid_round_0(MidRound0, SUSPEND, Drain, Split);
    /// Status (DEVICE_STOPPED): in the middle of a dirty round.
    fn status_mid_dirty_round(MidDirtyRound, STOPPED, Drain, Packed);
    /// Status (SUSPEND): where the device pre-copy would be (none in-band).
    fn status_after_device_precopy(AfterDevicePrecopy, SUSPEND, Drain, Split);
    /// Status (DEVICE_STOPPED): vCPUs paused, devices running.
    fn status_after_vcpu_pause(AfterVcpuPause, STOPPED, Drain, Packed);
    /// Status (DEVICE_STOPPED): every device presents the bit.
    fn status_stopped_after_stop(AfterStop, STOPPED, Drain, Split);
    /// Status (SUSPEND): every device suspended.
    fn status_suspend_after_stop(AfterStop, SUSPEND, Drain, Packed);
    /// Status (SUSPEND): in the middle of the final memory.
    fn status_mid_final_memory(MidFinalMemory, SUSPEND, Drain, Split);
    /// Status (DEVICE_STOPPED): in the middle of the final contexts.
    fn status_mid_final_context(MidFinalContext, STOPPED, Drain, Packed);
    /// Status (SUSPEND): Complete sent.
    fn status_after_complete(AfterComplete, SUSPEND, Drain, Split);
    /// Status (DEVICE_STOPPED): the destination Ready.
    fn status_after_ready(AfterReady, STOPPED, Drain, Packed);
}

/// The link lost right after Commit (issue 13; issue 9: "After Commit the source never resumes
/// by itself: if the link is lost it stays paused and reports the outcome as `unknown`"): with a
/// real destination, which took Commit and runs the guest alone. The guest never runs in two
/// places: while the destination's workloads move on, the source's do not take one step.
fn link_lost_after_commit(strategy: Strategy, inflight: Inflight) {
    let tag = format!("commit-{}-{inflight:?}", strategy.name());
    let image = image("mig-rollback", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = small(options(&image, &echo, RingFormat::Split, 2));
    let source = Arc::new(Machine::start(machine_options.clone()).unwrap());
    run_for(&source, 30);
    let (control, hit) = fault_at(AfterCommit, Fault::Fail, &source);
    let options = options_for(AfterCommit, strategy, inflight);
    let (report, incoming) = migrate_to(&source, machine_options, &options, &control);
    assert!(hit.load(Ordering::SeqCst));
    assert_eq!(report.outcome, Outcome::Unknown, "{tag}: {}", report.result);
    assert_eq!(control.progress().state, MigrationState::Unknown);
    assert!(
        source.all_parked(),
        "{tag}: the source resumed after Commit"
    );
    let paused = source.report();
    let destination = incoming.expect("the destination took Commit").machine;
    run_for(&destination, 100);
    assert!(
        source.all_parked(),
        "{tag}: the source resumed after Commit"
    );
    assert_eq!(
        source.report(),
        paused,
        "{tag}: the guest ran in two places"
    );
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, &tag);
}

virtio_lm_device::test_cases! { link_lost_after_commit:
    /// Admin, in flight recorded: the destination completes the chains, the source never does.
    fn admin_link_lost_after_commit(ADMIN, Transfer);
    /// Status (SUSPEND).
    fn status_link_lost_after_commit(SUSPEND, Drain);
}
