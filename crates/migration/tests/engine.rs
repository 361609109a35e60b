//! Live migration between two machines in this process over loopback TCP, with the guest's blk
//! and net workloads and the memory dirtier running (issue 9, "Tests": split and packed × drain
//! and transfer, 0 lost, 0 duplicated, 0 corrupted, workloads verified on the destination after
//! it resumes; docs/stream-format.md, "One migration").
//!
//! The seed 004 admin-command strategy end to end (DEV_MODE_SET Stop, Freeze, Active;
//! DEV_CTX_READ, DEV_CTX_WRITE), with the engine's commit handshake (spec-decisions §13).

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;
use virtio_lm_migration::testing::{assert_clean, assert_completed, migrate_to, test_options};
use virtio_lm_migration::{Inflight, MigrateOptions, MigrationControl, MigrationState};
use virtio_lm_vm::testing::{localhost, run_for, start_machine};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};

/// A running source machine for the test case `tag`, with its blk image and echo peer.
fn start_source(
    tag: &str,
    ring: RingFormat,
    queues: u16,
) -> (ImageFile, EchoPeer, MachineOptions, Machine) {
    start_machine("mig-engine", tag, ring, queues)
}

/// Lets `machine` run on for `n` completions, stops it, and checks its workloads with the bound
/// of one tunnel move (UDP may drop an echo).
fn finish_clean(machine: Machine, n: u64, tag: &str) {
    run_for(&machine, n);
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, tag);
}

/// Seed 004 admin-command strategy end to end: pre-copy, Stop then Freeze, final pages,
/// contexts and vCPU state, Ready, Commit, CommitAck; the destination runs on and verifies.
fn migrate_running_guest(ring: RingFormat, inflight: Inflight, queues: u16) {
    let tag = format!("{ring:?}-{inflight:?}-{queues}");
    let (_image, _echo, machine_options, source) = start_source(&tag, ring, queues);
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
    eprintln!("{tag}: destination {:?}", incoming.report);
    let destination = incoming.machine;
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    eprintln!("{tag}: {report:?}\n{after:?}");
    assert_clean(&after, 1, &tag);
    let (b0, b1) = (before.blk.unwrap(), after.blk.unwrap());
    assert!(b1.completed > b0.completed + 100, "{tag}: ran on");
    assert!(after.net.unwrap().verified > before.net.unwrap().verified);
    assert!(after.dirtier.stamped > before.dirtier.stamped);
    let mut report = report;
    report.add_workloads(&after);
    assert_eq!(
        (report.lost, report.duplicated, report.corrupted),
        (0, 0, 0)
    );
    assert!(report.requests_verified > 0 && report.requests_completed > 0);
    assert!(
        report.guest_stall_ms > 0.0,
        "the clock travelled with the guest"
    );
    assert!(report.precopy_rounds >= 1);
    assert!(report.device_context_bytes > 0);
    assert!(report.bytes_sent > 0);
    assert_eq!(report.rounds.last().map(|r| r.final_round), Some(true));
    assert!(report.phases.iter().any(|p| p.name == "src-device-stop"));
}

/// The `--json` object has exactly the field names issue 9 fixes ("`--json` fields (these names
/// exactly)"), plus the timeline's `rounds` and `phases`.
#[test]
fn the_report_has_the_issue_field_names() {
    let json = serde_json::to_value(virtio_lm_migration::MigrationReport::default()).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    let mut expected = vec![
        "strategy",
        "ring",
        "inflight",
        "profile",
        "memory_bytes",
        "total_ms",
        "downtime_ms",
        "device_downtime_ms",
        "guest_stall_ms",
        "stop_ms",
        "final_memory_ms",
        "device_state_ms",
        "restore_ms",
        "precopy_rounds",
        "bytes_sent",
        "device_context_bytes",
    ];
    expected.extend(virtio_lm_migration::MigrationReport::WORKLOAD_FIELDS);
    expected.extend(["result", "rounds", "phases"]);
    expected.sort_unstable();
    assert_eq!(keys, expected);
}

virtio_lm_device::test_cases! { migrate_running_guest:
    /// Split ring, one queue, requests in process drained at Stop.
    fn split_drain(RingFormat::Split, Inflight::Drain, 1);
    /// Split ring, two queues, requests recorded in flight travel in the context.
    fn split_transfer(RingFormat::Split, Inflight::Transfer, 2);
    /// Packed ring, two queues, drained.
    fn packed_drain(RingFormat::Packed, Inflight::Drain, 2);
    /// Packed ring, one queue, recorded in flight.
    fn packed_transfer(RingFormat::Packed, Inflight::Transfer, 1);
}

/// Cancel before Commit returns the source to running, and a second migration succeeds
/// (issue 9: "Before Commit any failure or `cancel` returns the source to running (DEV_MODE
/// Active, vCPUs resumed, dirty logging stopped, in-flight requests completed exactly once
/// there) and the destination discards everything"). The cancel comes at the latest point it
/// can: once the source is stopped (vCPUs paused, members in Freeze, requests in flight
/// recorded in their contexts), so it is honoured at the next step (spec-decisions §26).
#[test]
fn cancel_before_commit_returns_the_source_to_running() {
    let tag = "cancel";
    let (_image, _echo, machine_options, source) = start_source(tag, RingFormat::Split, 2);
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
    finish_clean(incoming.unwrap().machine, 100, tag);
}

/// A cancel during a pre-copy paced by `--max-bandwidth` is honoured at the next paced write
/// (a 256 KiB piece), not after a whole 8 MiB section, and leaves the source running (issue 9: "`--max-bandwidth` limits
/// the stream as on a real link"; "Before Commit any failure or `cancel` returns the source to
/// running").
#[test]
fn cancel_during_a_paced_precopy() {
    let tag = "paced-cancel";
    let (_image, _echo, machine_options, source) = start_source(tag, RingFormat::Packed, 1);
    let options = MigrateOptions {
        max_bandwidth: Some(1 << 20),
        ..test_options()
    };
    let control = MigrationControl::new();
    let canceller = control.clone();
    control.set_observer(move |p| {
        if p.bytes_sent > 0 && p.state == MigrationState::PreCopy {
            canceller.cancel();
        }
    });
    let (report, incoming) = migrate_to(&source, machine_options, &options, &control);
    assert!(
        matches!(report.outcome, virtio_lm_migration::Outcome::Cancelled(_)),
        "{}",
        report.result
    );
    assert!(incoming.is_err());
    // The cancel comes as pre-copy begins: no Memory section may have gone out whole.
    assert!(
        report.bytes_sent < 4 << 20,
        "sent {} bytes after the cancel",
        report.bytes_sent
    );
    assert!(!source.memory().is_logging());
    // No tunnel move, but UDP may still drop an echo: the same bound as one move.
    finish_clean(source, 50, tag);
}

/// After Commit the source never resumes by itself: a destination that takes Commit and drops
/// the link without CommitAck leaves the source paused, its outcome `unknown` (issue 9: "After
/// Commit the source never resumes by itself: if the link is lost it stays paused and reports
/// the outcome as `unknown` for the operator"; docs/stream-format.md, source AwaitAck).
#[test]
fn link_lost_after_commit_leaves_the_source_paused() {
    use std::io::BufReader;
    use std::net::{TcpListener, TcpStream};
    use virtio_lm_migration::{Message, Outcome, StreamReader, StreamWriter, PROTOCOL_VERSION};

    let tag = "unknown";
    let (_image, _echo, _, source) = start_source(tag, RingFormat::Split, 1);
    run_for(&source, 20);
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    // A peer that follows the protocol up to Commit, then vanishes.
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut rx = StreamReader::new(BufReader::new(stream.try_clone().unwrap()));
        let mut tx = StreamWriter::new(stream.try_clone().unwrap());
        loop {
            match rx.read_message().unwrap() {
                Message::Start { .. } => tx
                    .write(&Message::Start {
                        version: PROTOCOL_VERSION,
                    })
                    .unwrap(),
                Message::RoundEnd { round } => tx
                    .write(&Message::RoundAck {
                        round,
                        bytes_received: 0,
                    })
                    .unwrap(),
                Message::Complete => tx.write(&Message::Ready).unwrap(),
                Message::Commit => break,
                _ => {}
            }
        }
        stream.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let control = MigrationControl::new();
    let stream = TcpStream::connect(addr).unwrap();
    let report = virtio_lm_migration::migrate(&source, stream, &test_options(), &control);
    peer.join().unwrap();
    assert_eq!(report.outcome, Outcome::Unknown, "{}", report.result);
    assert!(report.result.starts_with("unknown"), "{}", report.result);
    assert_eq!(control.progress().state, MigrationState::Unknown);
    assert!(
        source.all_parked(),
        "the source resumed by itself after Commit"
    );
    let paused = source.report();
    run_for_nothing(&source, &paused);
}

/// The guest stays where it is: its counters do not move while the test looks (a paused guest
/// takes no step; this checks the state, not a timing).
fn run_for_nothing(machine: &Machine, paused: &virtio_lm_vm::MachineReport) {
    for _ in 0..10 {
        std::thread::yield_now();
        assert!(machine.all_parked());
        assert_eq!(&machine.report(), paused, "a paused vCPU took a step");
    }
}

/// A destination that is not the same VM refuses the Config before anything else; the source
/// was never stopped and runs on, its dirty log stopped (docs/stream-format.md, destination
/// AwaitConfig; issue 9: "checked against the destination's own before anything else").
#[test]
fn a_different_destination_fails_the_migration_and_the_source_runs_on() {
    let tag = "mismatch";
    let (_image, _echo, machine_options, source) = start_source(tag, RingFormat::Split, 1);
    let other = virtio_lm_vm::MachineOptions {
        memory: machine_options.memory + (1 << 20),
        ..machine_options
    };
    let (report, incoming) = migrate_to(&source, other, &test_options(), &MigrationControl::new());
    assert!(
        matches!(report.outcome, virtio_lm_migration::Outcome::Failed(_)),
        "{}",
        report.result
    );
    let err = incoming.unwrap_err().to_string();
    assert!(err.contains("memory layout"), "{err}");
    assert!(!source.memory().is_logging());
    assert!(!source.all_parked());
    run_for(&source, 20);
}
