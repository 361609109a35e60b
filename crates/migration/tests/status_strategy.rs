//! The in-band status strategy (issue 10) between two machines in this process over loopback
//! TCP, with the guest's blk and net workloads and the memory dirtier running: no owner device
//! on the source, the devices stopped through their own status registers, their state read
//! through the transport and re-initialised on the destination as a driver would. Under the
//! v1.4 profile (issue 15, spec-decisions §38) the stop is virtio 1.4's SUSPEND and each ring's
//! position comes from guest memory on the destination.

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl, Outcome, StatusBit};
use virtio_lm_migration::{MigrationReport, MigrationState, Strategy};
use virtio_lm_spec::{Feature, Profile};
use virtio_lm_vm::testing::{run_for, start_machine, start_machine_with};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};

/// A running guest of `profile` whose drivers left out `omits`, for the test case `tag`, with
/// its options, blk image and echo peer (which must outlive every machine built from them).
fn start_guest(
    tag: &str,
    ring: RingFormat,
    profile: Profile,
    omits: Vec<Feature>,
) -> (ImageFile, EchoPeer, MachineOptions, Machine) {
    start_machine_with("mig-status", tag, ring, 2, |o| MachineOptions {
        profile,
        guest_omits: omits,
        ..o
    })
}

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
fn status_migration(profile: Profile, ring: RingFormat, bit: StatusBit) {
    let tag = format!("{profile}-{ring:?}-{}", bit.name());
    let (_image, _echo, machine_options, source) = start_guest(&tag, ring, profile, Vec::new());
    run_for(&source, 50);
    let (destination, report) = hop(source, &machine_options, Strategy::Status(bit), &tag);
    assert!(report.device_context_bytes > 0);
    assert!(report.phases.iter().any(|p| p.name == "src-device-stop"));
    runs_clean(destination, 1, &tag);
}

virtio_lm_device::test_cases! { status_migration:
    /// Seed 000 (DEVICE_STOPPED) with seed 001 queue state, split ring.
    fn status_stopped_split(Profile::Seeds, RingFormat::Split, StatusBit::Stopped);
    /// Seed 000 (DEVICE_STOPPED) with seed 001 queue state, packed ring.
    fn status_stopped_packed(Profile::Seeds, RingFormat::Packed, StatusBit::Stopped);
    /// Seed 003 (SUSPEND, merged form) with seed 001 queue state, split ring.
    fn status_suspend_split(Profile::Seeds, RingFormat::Split, StatusBit::Suspend);
    /// Seed 003 (SUSPEND, merged form) with seed 001 queue state, packed ring.
    fn status_suspend_packed(Profile::Seeds, RingFormat::Packed, StatusBit::Suspend);
    /// virtio 1.4 SUSPEND (feature bit 43; "the driver MUST re-read device status to verify
    /// SUSPEND is set and DRIVER_OK is cleared"), no queue state: the split ring's position is
    /// `used.idx` in the received memory, set into the device before DRIVER_OK
    /// (spec-decisions §38).
    fn status_suspend_split_v1_4(Profile::V1_4, RingFormat::Split, StatusBit::Suspend);
    /// virtio 1.4 SUSPEND, packed ring with EVENT_IDX: the position the stopping device wrote
    /// into the device event suppression structure (spec-decisions §38).
    fn status_suspend_packed_v1_4(Profile::V1_4, RingFormat::Packed, StatusBit::Suspend);
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
    let options = status_options(StatusBit::Stopped, Inflight::Transfer);
    let why = refused_at_start(
        "refused",
        RingFormat::Split,
        Profile::Seeds,
        vec![],
        options,
    );
    assert!(why.contains("--inflight transfer"), "{why}");
}

/// Cancels once the source is stopped in-band with each of `bits`, checks the source runs on
/// each time, then migrates it with the last bit and verifies the destination.
fn cancel_then_migrate(profile: Profile, bits: &[StatusBit]) {
    let tag = format!("cancel-{profile}");
    let (_image, _echo, machine_options, source) =
        start_guest(&tag, RingFormat::Packed, profile, Vec::new());
    for &bit in bits {
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
            "{tag} {}: {}",
            bit.name(),
            report.result
        );
        assert!(incoming.is_err(), "the destination discards");
        assert!(!source.all_parked(), "{tag} {}: vCPUs resumed", bit.name());
        // Running again: the devices left the stop (otherwise no request completes).
        run_for(&source, 100);
    }
    let strategy = Strategy::Status(StatusBit::Suspend);
    let (destination, _) = hop(source, &machine_options, strategy, &tag);
    runs_clean(destination, 1, &tag);
}

/// Seed 000 ("the driver clears DEVICE_STOPPED … the device resumes") and seed 003 (a suspended
/// device resumes when the driver sets DRIVER_OK again): a cancel once the source is stopped
/// in-band, honoured at the next step, resumes every device through its status
/// register and the vCPUs; the guest runs on, and the next migration completes.
#[test]
fn status_cancel_before_commit_resumes_through_the_status_register() {
    cancel_then_migrate(Profile::Seeds, &[StatusBit::Stopped, StatusBit::Suspend]);
}

/// virtio 1.4 ("to resume, the driver sets DRIVER_OK … MUST wait for SUSPEND == 0 and
/// DRIVER_OK == 1"): the same cancel under the v1.4 profile, packed ring; the guest's rings were
/// not touched, so the next migration takes its positions from them (spec-decisions §38).
#[test]
fn status_cancel_before_commit_resumes_v1_4() {
    cancel_then_migrate(Profile::V1_4, &[StatusBit::Suspend]);
}

/// Issue 10, "Preconditions are checked at Start and refused with a clear message: the guest
/// must have negotiated the chosen status-bit feature and VIRTIO_F_QUEUE_STATE" — seed 000
/// (DEVICE_STOPPED may be set only once VIRTIO_F_DEVICE_STOP is negotiated), seed 003 (SUSPEND
/// only with VIRTIO_F_SUSPEND) and seed 001 (queue state only with VIRTIO_F_QUEUE_STATE): a
/// guest whose drivers left one out is refused before anything is sent, the message naming the
/// feature, and the source runs on untouched.
#[test]
fn start_refuses_a_guest_without_the_status_features() {
    let cases = [
        (Feature::DeviceStop, StatusBit::Stopped),
        (Feature::Suspend, StatusBit::Suspend),
        (Feature::QueueState, StatusBit::Suspend),
    ];
    for (omitted, bit) in cases {
        let tag = format!("omits-{}", omitted.name());
        let options = status_options(bit, Inflight::Drain);
        let why = refused_at_start(
            &tag,
            RingFormat::Split,
            Profile::Seeds,
            vec![omitted],
            options,
        );
        assert!(
            why.contains(omitted.name()) && why.contains("did not negotiate"),
            "{tag}: {why}"
        );
    }
}

/// The status strategy with `bit` and `inflight`, the test timeouts.
fn status_options(bit: StatusBit, inflight: Inflight) -> MigrateOptions {
    MigrateOptions {
        strategy: Strategy::Status(bit),
        inflight,
        ..test_options()
    }
}

/// Starts a guest of `profile` whose drivers left out `omits`, migrates it with `options`, and
/// returns why the source refused at Start (checking it sent no memory,
/// the destination got nothing and the source runs on clean).
fn refused_at_start(
    tag: &str,
    ring: RingFormat,
    profile: Profile,
    omits: Vec<Feature>,
    options: MigrateOptions,
) -> String {
    let (_image, _echo, machine_options, source) = start_guest(tag, ring, profile, omits);
    run_for(&source, 20);
    let (report, incoming) =
        migrate_to(&source, machine_options, &options, &MigrationControl::new());
    let Outcome::Failed(why) = &report.outcome else {
        panic!("{tag}: expected a refusal, got {:?}", report.outcome);
    };
    assert!(
        incoming.is_err(),
        "{tag}: the destination got nothing to run"
    );
    assert_eq!(report.precopy_rounds, 0, "{tag}: refused before any memory");
    run_for(&source, 20);
    let after = source.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 0, tag);
    why.clone()
}

/// virtio 1.4 (SUSPEND: "the driver SHOULD NOT set SUSPEND unless … VIRTIO_F_SUSPEND is
/// negotiated"; 1.4 numbers no DEVICE_STOPPED; packed rings: the ring position is recorded only
/// with EVENT_IDX, spec-decisions §32) under the v1.4 profile, each refused at Start with a
/// message naming what is missing, before any memory is sent, the source running on: a guest
/// without VIRTIO_F_SUSPEND, `--status-bit stopped`, a packed ring without VIRTIO_F_EVENT_IDX,
/// and `--inflight transfer` (1.4 carries no in-flight buffers; spec-decisions §36, §38).
#[test]
fn v1_4_start_refuses_what_the_position_cannot_come_from() {
    use Inflight::{Drain, Transfer};
    let cases = [
        (
            RingFormat::Split,
            Some(Feature::Suspend),
            StatusBit::Suspend,
            Drain,
            "VIRTIO_F_SUSPEND",
        ),
        (
            RingFormat::Split,
            None,
            StatusBit::Stopped,
            Drain,
            "DEVICE_STOPPED",
        ),
        (
            RingFormat::Packed,
            Some(Feature::EventIdx),
            StatusBit::Suspend,
            Drain,
            "VIRTIO_F_EVENT_IDX",
        ),
        (
            RingFormat::Split,
            None,
            StatusBit::Suspend,
            Transfer,
            "--inflight transfer",
        ),
    ];
    for (ring, omitted, bit, inflight, named) in cases {
        let tag = format!("v1.4-{ring:?}-{omitted:?}-{}-{inflight:?}", bit.name());
        let omits = omitted.into_iter().collect();
        let options = status_options(bit, inflight);
        let why = refused_at_start(&tag, ring, Profile::V1_4, omits, options);
        assert!(why.contains(named), "{tag}: {why}");
    }
}
