//! Dirty tracking is proven necessary (issue 9, "Tests": "a test-only switch that drops the
//! device's dirty marks must make the workload detect corruption after migration").
//!
//! Made deterministic rather than hoped for: the guest is paused with requests in flight at a
//! device held in DEV_MODE Stop, so nothing the guest writes changes after round 0; then, right
//! after round 0 has been sent, the device is set Active and completes those requests — read
//! data, status bytes and used-ring entries land in guest memory after round 0, written by the
//! device alone. Only the devices' dirty marks can bring those pages to the destination. With
//! the marks kept, the destination's guest collects every completion and verifies; with them
//! dropped, it cannot: its used ring and buffers are as they were at round 0, so the completions
//! never show. The destination's dry run of the ring checks against the received memory catches
//! that first (used index and ring positions disagree) and refuses the state; with that check
//! switched off too, the guest's own workload detects it after resume (its requests never
//! complete: counted lost, or the driver fails).
//!
//! The seed 004 admin-command strategy (spec-decisions §13).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_migration::testing::{migrate_to_destination, test_options, Destination};
use virtio_lm_migration::{MigrationControl, Outcome};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_vm::guest::blk::DEPTH;
use virtio_lm_vm::testing::{image, run_for};
use virtio_lm_vm::{Machine, MachineOptions, MachineReport, MIB};
use vm_memory::{Bytes, GuestAddress};

/// The blk member (the only one).
const BLK: u64 = 1;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The split ring's index in the area at `area` of `which` (the driver area for the available
/// ring, the device area for the used ring), as guest memory holds it.
fn ring_idx(machine: &Machine, which: fn(&virtio_lm_device::QueueRegisters) -> u64) -> u16 {
    let f = &machine.functions()[0];
    let area = which(virtio_lm_vm::guest::lock(f.core()).queue(0).unwrap());
    machine
        .memory()
        .ram()
        .read_obj::<u16>(GuestAddress(area + 2))
        .unwrap()
}

/// The split used ring's index.
fn used_idx(machine: &Machine) -> u16 {
    ring_idx(machine, |q| q.device)
}

/// Requests the driver made available that the device has not used.
fn waiting(machine: &Machine) -> u16 {
    ring_idx(machine, |q| q.driver).wrapping_sub(used_idx(machine))
}

/// How a migration with late device writes ended.
#[derive(Debug)]
enum Seen {
    /// The destination refused the final state (its ring dry run).
    Refused(String),
    /// The destination's guest ran; its settled counters, or the error that stopped it.
    Ran(Result<MachineReport, String>),
}

/// Migrates with the device's requests completing after round 0; `drop_device_marks` is the
/// switch, `ring_check` the destination's dry run.
fn migrate_with_late_device_writes(drop_device_marks: bool, ring_check: bool) -> Seen {
    let tag = format!("drop-{drop_device_marks}-check-{ring_check}");
    let image = image("mig-dirty", &tag);
    let options = MachineOptions {
        memory: 17 * MIB,
        blk: Some(image.path().to_path_buf()),
        working_set_mib: 1,
        dirty_rate_mib: 0,
        ..MachineOptions::default()
    };
    let source = Arc::new(Machine::start(options.clone()).unwrap());
    run_for(&source, 20);
    source
        .with_admin(|a| a.dev_mode_set(BLK, DevMode::Stop))
        .unwrap();
    // Filled as the ring shows it, not as the guest counts: requests the Stop drained are in
    // the used ring before the guest collects them, and the device would have nothing left to
    // complete after round 0 (the guest refills once it has collected them).
    wait_until("the guest to fill its queue", || {
        waiting(&source) == DEPTH as u16
    });
    source.pause().unwrap();
    let before = used_idx(&source);
    source.memory().set_drop_device_marks(drop_device_marks);

    let control = MigrationControl::new();
    let fired = AtomicBool::new(false);
    let machine = source.clone();
    control.set_observer(move |p| {
        if p.rounds_done == 1 && !fired.swap(true, Ordering::SeqCst) {
            machine
                .with_admin(|a| a.dev_mode_set(BLK, DevMode::Active))
                .unwrap();
            wait_until("the device to complete the requests", || {
                used_idx(&machine).wrapping_sub(before) == DEPTH as u16
            });
        }
    });
    let dst_control = MigrationControl::new();
    dst_control.set_skip_ring_check(!ring_check);
    let dst = Destination::spawn_with(options, dst_control);
    let (report, incoming) = migrate_to_destination(&source, dst, &test_options(), &control);
    drop(source);
    match report.outcome {
        Outcome::Completed => {}
        Outcome::Failed(why) => return Seen::Refused(why),
        other => panic!("{tag}: {other:?}"),
    }
    let destination = incoming.unwrap().machine;
    // The guest resumes with DEPTH requests out; a short settle is enough for completions that
    // are in memory, and counts lost those that never will be.
    let after = destination.finish(Duration::from_secs(2));
    eprintln!("{tag}: {after:?}");
    Seen::Ran(after.map_err(|e| e.to_string()))
}

/// With the devices' marks, every late completion reaches the destination's guest.
#[test]
fn device_writes_after_round_0_arrive_through_the_dirty_log() {
    let seen = migrate_with_late_device_writes(false, true);
    let Seen::Ran(Ok(after)) = seen else {
        panic!("{seen:?}")
    };
    let blk = after.blk.unwrap();
    assert_eq!(
        (blk.lost, blk.duplicated, blk.corrupted, blk.failed),
        (0, 0, 0, 0),
        "{blk:?}"
    );
}

/// Without them, the destination's ring dry run refuses the stale state.
#[test]
fn dropping_the_device_marks_is_refused_by_the_ring_dry_run() {
    let seen = migrate_with_late_device_writes(true, true);
    let Seen::Refused(why) = &seen else {
        panic!("stale device pages were accepted: {seen:?}")
    };
    assert!(why.contains("against the received memory"), "{why}");
}

/// Without them and without the dry run, the guest's workload detects it after resume.
#[test]
fn dropping_the_device_marks_is_detected_by_the_workload() {
    match migrate_with_late_device_writes(true, false) {
        Seen::Ran(Ok(after)) => {
            let blk = after.blk.unwrap();
            assert!(
                blk.lost + blk.duplicated + blk.corrupted > 0,
                "stale device pages went unnoticed: {blk:?}"
            );
        }
        // The driver itself failed on what it found: detected.
        Seen::Ran(Err(why)) => eprintln!("the guest failed: {why}"),
        Seen::Refused(why) => panic!("refused without the ring check: {why}"),
    }
}
