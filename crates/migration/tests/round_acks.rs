//! Per-round acknowledgements (protocol version 2; docs/stream-format.md, "RoundEnd and
//! RoundAck"; spec-decisions §19): the source ends every pre-copy round with RoundEnd and waits
//! for the destination's RoundAck before it measures the round, and never waits during the
//! downtime. The version rule still holds ("the destination accepts its own version and the
//! previous one"): a version 2 destination answers a version 1 source in version 1, and a
//! stream in version 1 carries no RoundEnd.

use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use virtio_lm_migration::testing::{assert_clean, test_options, Destination};
use virtio_lm_migration::{
    migrate, Message, MigrationControl, Outcome, Phase, StreamReader, StreamWriter,
    PROTOCOL_VERSION,
};
use virtio_lm_vm::testing::{image, localhost, run_for, start_machine};
use virtio_lm_vm::{MachineOptions, RingFormat, MIB};

/// What a scripted destination saw of one migration.
#[derive(Debug, Default)]
struct Seen {
    /// Rounds of the RoundEnd sections, in order.
    round_ends: Vec<u32>,
    /// How many RoundEnds came after the first final Memory section (must be none).
    after_final: usize,
}

/// A destination that answers Start with `version`, acknowledges each RoundEnd, and at
/// Complete refuses with Error so the source runs on.
fn scripted_peer(listener: TcpListener, version: u32) -> Seen {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rx = StreamReader::new(BufReader::new(stream.try_clone().unwrap()));
    let mut tx = StreamWriter::new(stream.try_clone().unwrap());
    let mut seen = Seen::default();
    let mut final_seen = false;
    loop {
        match rx.read_message().unwrap() {
            Message::Start { .. } => tx.write(&Message::Start { version }).unwrap(),
            Message::RoundEnd { round } => {
                seen.round_ends.push(round);
                seen.after_final += usize::from(final_seen);
                tx.write(&Message::RoundAck {
                    round,
                    bytes_received: rx.position().offset,
                })
                .unwrap();
            }
            Message::Memory(chunk) if chunk.phase == Phase::Final => final_seen = true,
            Message::Complete => break,
            _ => {}
        }
    }
    tx.write(&Message::Error {
        message: "scripted destination: stops here".into(),
    })
    .unwrap();
    seen
}

fn migrate_to_scripted(version: u32) -> (Seen, u32) {
    let tag = format!("v{version}");
    let (_image, _echo, _, source) = start_machine("mig-acks", &tag, RingFormat::Split, 1);
    run_for(&source, 20);
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || scripted_peer(listener, version));
    let report = migrate(
        &source,
        TcpStream::connect(addr).unwrap(),
        &test_options(),
        &MigrationControl::new(),
    );
    let seen = peer.join().unwrap();
    assert!(
        matches!(&report.outcome, Outcome::Failed(why) if why.contains("stops here")),
        "{}",
        report.result
    );
    // Refused before Commit: the source runs on, intact.
    run_for(&source, 20);
    let after = source.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 0, &tag);
    (seen, report.precopy_rounds)
}

/// Version 2: one RoundEnd per pre-copy round, numbered as the rounds, none once the source
/// stopped (the downtime never waits for an acknowledgement).
#[test]
fn every_precopy_round_is_acknowledged() {
    let (seen, rounds) = migrate_to_scripted(PROTOCOL_VERSION);
    let expected: Vec<u32> = (0..rounds).collect();
    assert_eq!(seen.round_ends, expected, "{seen:?}");
    assert_eq!(seen.after_final, 0);
}

/// A destination that answers Start with version 1 (the version both speak when the source is
/// the older side) gets a version 1 stream: no RoundEnd, which a version 1 reader would refuse
/// as an unknown type; the source then measures its rate to its last write.
#[test]
fn a_destination_answering_version_1_gets_no_round_end() {
    let (seen, rounds) = migrate_to_scripted(1);
    assert!(rounds >= 1);
    assert!(seen.round_ends.is_empty(), "{seen:?}");
}

/// The destination answers a version 1 source's Start with version 1 (the version both speak),
/// so that source's reader accepts the answer.
#[test]
fn destination_answers_a_version_1_start_with_1() {
    let image = image("mig-acks", "answer");
    let dst = Destination::spawn(MachineOptions {
        memory: 17 * MIB,
        blk: Some(image.path().to_path_buf()),
        working_set_mib: 1,
        ..MachineOptions::default()
    });
    let stream = TcpStream::connect(dst.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut tx = StreamWriter::new(stream.try_clone().unwrap());
    tx.write(&Message::Start { version: 1 }).unwrap();
    let mut rx = StreamReader::with_version(BufReader::new(stream.try_clone().unwrap()), 1);
    assert_eq!(rx.read_message().unwrap(), Message::Start { version: 1 });
    // Then the source goes away: the destination discards everything.
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(dst.join().is_err());
}
