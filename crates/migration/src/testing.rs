//! The engine's test rig (feature `test-utils`): a destination on a loopback TCP port in a
//! thread of this process, a source migrating to it, and the checks every migration test makes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_lm_vm::{Machine, MachineOptions, MachineReport};

use crate::{incoming, migrate, Incoming, MigrateOptions, MigrationControl, MigrationError};
use crate::{Message, MigrationReport, Outcome, StreamReader};

/// A destination waiting on a loopback port (chosen by binding port 0) in its own thread.
pub struct Destination {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its control (cancel it, read its progress).
    pub control: MigrationControl,
    thread: JoinHandle<Result<Incoming, MigrationError>>,
}

impl Destination {
    /// Starts a destination that builds its machine from `options` and takes one migration.
    pub fn spawn(options: MachineOptions) -> Self {
        Self::spawn_with(options, MigrationControl::new())
    }

    /// As [`Self::spawn`], with the destination's control given (test switches set on it).
    pub fn spawn_with(options: MachineOptions, control: MigrationControl) -> Self {
        let listener = TcpListener::bind(virtio_lm_vm::testing::localhost()).expect("bind");
        let addr = listener.local_addr().expect("local address");
        let theirs = control.clone();
        let thread = std::thread::Builder::new()
            .name("destination".into())
            .spawn(move || {
                let (stream, _) = listener.accept()?;
                incoming(stream, options, &theirs)
            })
            .expect("destination thread");
        Destination {
            addr,
            control,
            thread,
        }
    }

    /// Waits for the destination's end.
    pub fn join(self) -> Result<Incoming, MigrationError> {
        self.thread.join().expect("the destination panicked")
    }
}

/// Writes `wire` (a hand-made stream) to a fresh destination built from `options`, then reads
/// its answers to the end. Returns what the destination returned and the messages it sent.
pub fn feed(options: &MachineOptions, wire: &[u8]) -> (Result<(), MigrationError>, Vec<Message>) {
    let dst = Destination::spawn(options.clone());
    let mut stream = TcpStream::connect(dst.addr).expect("connect");
    // The destination may stop reading early (a refused section); what it did not read is
    // its business, the answer is what counts.
    let _ = stream.write_all(wire);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let result = dst.join().map(drop);
    let mut rx = StreamReader::new(&answer[..]);
    let mut got = Vec::new();
    while let Ok(m) = rx.read_message() {
        got.push(m);
    }
    (result, got)
}

/// Migrates `source` to a new destination built from `destination`; returns the source's
/// report and what the destination returned.
pub fn migrate_to(
    source: &Machine,
    destination: MachineOptions,
    options: &MigrateOptions,
    control: &MigrationControl,
) -> (MigrationReport, Result<Incoming, MigrationError>) {
    migrate_to_destination(source, Destination::spawn(destination), options, control)
}

/// Migrates `source` to `dst`.
pub fn migrate_to_destination(
    source: &Machine,
    dst: Destination,
    options: &MigrateOptions,
    control: &MigrationControl,
) -> (MigrationReport, Result<Incoming, MigrationError>) {
    let stream = TcpStream::connect(dst.addr).expect("connect");
    let report = migrate(source, stream, options, control);
    (report, dst.join())
}

/// Options for tests: generous timeouts (only a hang reaches them), converging by force rather
/// than cancelling on a slow machine.
pub fn test_options() -> MigrateOptions {
    MigrateOptions {
        timeout: Duration::from_secs(20),
        force: true,
        link_timeout: Duration::from_secs(60),
        ..MigrateOptions::default()
    }
}

/// Asserts the workloads lost, duplicated and corrupted nothing at the virtqueue (net echoes
/// may be lost on the UDP path: at most those in the air each of the `moves` times the tunnel
/// moved to another machine).
pub fn assert_clean(after: &MachineReport, moves: u64, context: &str) {
    if let Some(blk) = &after.blk {
        assert_eq!(
            (blk.lost, blk.duplicated, blk.corrupted, blk.failed),
            (0, 0, 0, 0),
            "{context}: blk {blk:?}"
        );
    }
    if let Some(net) = &after.net {
        assert_eq!(
            (net.duplicated, net.corrupted),
            (0, 0),
            "{context}: net {net:?}"
        );
        assert!(
            net.lost <= moves * virtio_lm_vm::guest::net::WINDOW,
            "{context}: more echoes lost than the window: {net:?}"
        );
    }
}

/// Asserts the migration completed.
pub fn assert_completed(report: &MigrationReport, context: &str) {
    assert_eq!(
        report.outcome,
        Outcome::Completed,
        "{context}: {}",
        report.result
    );
    assert_eq!(report.result, "ok");
}

/// `base` made small (17 MiB of RAM, a 1 MiB working set dirtied at 8 MiB/s): quick to migrate
/// in a debug build on a loaded machine.
pub fn small(base: MachineOptions) -> MachineOptions {
    MachineOptions {
        memory: 17 * virtio_lm_vm::MIB,
        working_set_mib: 1,
        dirty_rate_mib: 8,
        ..base
    }
}

/// Asserts an abandoned migration left `source` running (issue 9: "dirty logging stopped,
/// vCPUs resumed"): then lets its workloads move on.
pub fn assert_running_again(source: &Machine, context: &str) {
    assert!(
        !source.memory().is_logging(),
        "{context}: dirty logging stopped"
    );
    assert!(!source.all_parked(), "{context}: vCPUs resumed");
    virtio_lm_vm::testing::run_for(source, 50);
}

/// The second attempt after an abandoned one: migrates `source` to a fresh destination built
/// from `destination`, which must complete; the destination runs on and its guest's whole
/// history verifies (one move).
pub fn migrate_again_and_verify(
    source: Machine,
    destination: MachineOptions,
    options: &MigrateOptions,
    context: &str,
) {
    let (report, incoming) = migrate_to(&source, destination, options, &MigrationControl::new());
    assert_completed(&report, context);
    drop(source);
    let machine = incoming
        .unwrap_or_else(|e| panic!("{context}: {e}"))
        .machine;
    virtio_lm_vm::testing::run_for(&machine, 50);
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, context);
    assert!(
        after.blk.is_some_and(|b| b.verified > 0),
        "{context}: {after:?}"
    );
}
