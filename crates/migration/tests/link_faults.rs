//! The link between source and destination failing under a running migration (issue 13,
//! "Faults and hostile input": "the destination killed mid-stream, the connection cut (a test
//! proxy that drops or stalls at a chosen byte), a stall with no bytes (timeouts on every read
//! and write), a corrupted section (crc mismatch) … the destination refuses with a clear error
//! naming the section, applies nothing, and the source keeps running with nothing lost").
//!
//! A proxy sits between the source and a real destination and forwards both directions; at a
//! chosen byte of the source's stream it cuts both connections, stops forwarding (a stall), or
//! flips one byte and forwards on. Each time the source's outcome is Failed, it runs again, and
//! a second migration straight to a fresh destination completes and verifies. The seed 004
//! admin-command strategy (spec-decisions §13, §26).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_migration::testing::{
    assert_running_again, migrate_again_and_verify, small, test_options, Destination,
};
use virtio_lm_migration::{
    migrate, MigrateOptions, MigrationControl, MigrationState, Outcome, Progress, CRC_LEN,
    HEADER_LEN,
};
use virtio_lm_vm::testing::{image, localhost, options, run_for};
use virtio_lm_vm::{Machine, RingFormat};

/// What the proxy does once `at` bytes of the source's stream went through.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Shuts both connections down.
    Cut,
    /// Forwards nothing more (both connections stay open) until the test releases it.
    Stall,
    /// Flips the first payload byte of the first section past `at` and forwards on.
    Corrupt,
}

struct Proxy {
    addr: std::net::SocketAddr,
    release: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Proxy {
    fn spawn(to: std::net::SocketAddr, at: u64, act: Act) -> Self {
        let listener = TcpListener::bind(localhost()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let (source, _) = listener.accept().unwrap();
            let destination = TcpStream::connect(to).unwrap();
            let back = {
                let (mut from, mut to) = (
                    destination.try_clone().unwrap(),
                    source.try_clone().unwrap(),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                })
            };
            forward(&source, &destination, at, act);
            if matches!(act, Act::Stall) {
                // Hold both connections, silent, until the source gave up.
                let _ = released.recv();
            }
            let _ = source.shutdown(Shutdown::Both);
            let _ = destination.shutdown(Shutdown::Both);
            let _ = back.join();
        });
        Proxy {
            addr,
            release,
            thread,
        }
    }

    fn finish(self) {
        let _ = self.release.send(());
        self.thread.join().unwrap();
    }
}

/// Copies the source's stream to the destination up to byte `at`, then acts.
fn forward(mut from: &TcpStream, mut to: &TcpStream, at: u64, act: Act) {
    if let Act::Corrupt = act {
        return corrupt(from, to, at);
    }
    let mut done = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while done < at {
        let want = (at - done).min(buf.len() as u64) as usize;
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        done += n as u64;
    }
}

/// Forwards section by section and flips the first payload byte of the first section with a
/// payload that starts at or after byte `at`: always a crc mismatch, in a known section.
fn corrupt(mut from: &TcpStream, mut to: &TcpStream, at: u64) {
    let mut done = 0u64;
    let mut pending = true;
    loop {
        let mut header = [0u8; HEADER_LEN];
        if from.read_exact(&mut header).is_err() {
            return;
        }
        let len = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len + CRC_LEN];
        if from.read_exact(&mut rest).is_err() {
            return;
        }
        if pending && done >= at && len > 0 {
            rest[0] ^= 0xff;
            pending = false;
        }
        if to
            .write_all(&header)
            .and_then(|()| to.write_all(&rest))
            .is_err()
        {
            return;
        }
        done += (HEADER_LEN + len + CRC_LEN) as u64;
    }
}

/// Migrates a small running guest through a proxy acting at byte `at`; checks the source
/// failed and runs again, the destination refused, then migrates again directly.
fn through_proxy(at: u64, act: Act, expect: &str) {
    let tag = format!("{act:?}-at-{at}");
    let image = image("mig-link", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = small(options(&image, &echo, RingFormat::Split, 2));
    let source = Machine::start(machine_options.clone()).unwrap();
    run_for(&source, 30);
    let dst = Destination::spawn(machine_options.clone());
    let proxy = Proxy::spawn(dst.addr, at, act);
    let migrate_options = MigrateOptions {
        // A stall ends at the first read or write that waits this long.
        link_timeout: Duration::from_secs(3),
        ..test_options()
    };
    let control = MigrationControl::new();
    let report = migrate(
        &source,
        TcpStream::connect(proxy.addr).unwrap(),
        &migrate_options,
        &control,
    );
    proxy.finish();
    let incoming = dst.join();
    let Outcome::Failed(why) = &report.outcome else {
        panic!("{tag}: {:?}", report.outcome)
    };
    eprintln!("{tag}: source: {why}");
    assert_eq!(control.progress().state, MigrationState::Failed, "{tag}");
    let err = incoming
        .expect_err("a guest ran from a broken stream")
        .to_string();
    eprintln!("{tag}: destination: {err}");
    assert!(err.contains(expect), "{tag}: {err}");
    assert_running_again(&source, &tag);
    migrate_again_and_verify(source, machine_options, &test_options(), &tag);
}

/// The connection cut inside Start, inside Config and inside round 0: the destination names
/// where its stream ended.
#[test]
fn cut_at_a_chosen_byte() {
    for at in [5, 40, 300_000] {
        through_proxy(at, Act::Cut, "section");
    }
}

/// A stall with no bytes at all (the source's Start never arrives) and one in round 0: the
/// source's link timeout ends the wait, the source runs on.
#[test]
fn stall_at_a_chosen_byte() {
    for at in [0, 300_000] {
        through_proxy(at, Act::Stall, "");
    }
}

/// One byte flipped in a Memory section's payload of round 0: a crc mismatch, refused by the
/// destination naming the section; the source learns why from the destination's Error.
#[test]
fn a_corrupted_byte_is_a_crc_mismatch_naming_the_section() {
    through_proxy(300_000, Act::Corrupt, "crc mismatch");
}

/// The destination gone in the middle of the stream (its process killed: its end of the link
/// closes with bytes unread): the source fails at its next write or read and runs on.
#[test]
fn destination_gone_mid_stream() {
    let tag = "destination-gone";
    let image = image("mig-link", tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = small(options(&image, &echo, RingFormat::Packed, 2));
    let source = Machine::start(machine_options.clone()).unwrap();
    run_for(&source, 30);
    let dst_control = MigrationControl::new();
    let theirs = dst_control.clone();
    dst_control.set_observer(move |p: &Progress| {
        if p.state == MigrationState::PreCopy {
            theirs.cancel();
        }
    });
    let dst = Destination::spawn_with(machine_options.clone(), dst_control);
    let report = migrate(
        &source,
        TcpStream::connect(dst.addr).unwrap(),
        &test_options(),
        &MigrationControl::new(),
    );
    assert!(dst.join().is_err());
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{tag}: {:?}",
        report.outcome
    );
    assert_running_again(&source, tag);
    migrate_again_and_verify(source, machine_options, &test_options(), tag);
}
