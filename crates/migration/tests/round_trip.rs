//! Every message type survives the stream unchanged, page data travels without a copy of zero
//! pages, and big page runs are split into sections that fit the limits
//! (docs/stream-format.md).

mod common;

use common::{data_page, encode, one_of_each, sample_config};
use proptest::prelude::*;
use virtio_lm_migration::{
    Message, Pages, Phase, StreamError, StreamReader, StreamWriter, WriteError, CRC_LEN,
    HEADER_LEN, MAX_MEMORY_DATA, MEMORY_HEADER_LEN, PAGE_SIZE, PROTOCOL_VERSION, RANGE_HEADER_LEN,
};

fn read_all(wire: &[u8]) -> Vec<Message> {
    let mut r = StreamReader::new(wire);
    let mut out = Vec::new();
    loop {
        match r.read_message() {
            Ok(m) => out.push(m),
            Err(StreamError::Closed { at }) => {
                assert_eq!(at.offset, wire.len() as u64);
                return out;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Each of the fourteen message types, including both phases of Memory and DeviceContext, reads
/// back equal to what was written.
#[test]
fn every_message_type_round_trips() {
    let msgs = one_of_each();
    let types: std::collections::HashSet<_> = msgs.iter().map(Message::msg_type).collect();
    assert_eq!(types.len(), virtio_lm_migration::MessageType::ALL.len());
    assert_eq!(read_all(&encode(&msgs)), msgs);
}

/// The writer counts sections and bytes exactly as they appear on the wire, and the reader
/// reports the version the peer announced.
#[test]
fn writer_and_reader_account_for_every_byte() {
    let msgs = one_of_each();
    let mut wire = Vec::new();
    let mut w = StreamWriter::new(&mut wire);
    for m in &msgs {
        w.write(m).unwrap();
    }
    assert_eq!(w.sections() as usize, msgs.len());
    assert_eq!(w.bytes_written(), wire.len() as u64);
    let mut r = StreamReader::new(&wire[..]);
    assert_eq!(r.peer_version(), None);
    r.read_message().unwrap();
    assert_eq!(r.peer_version(), Some(PROTOCOL_VERSION));
    assert_eq!(r.position().section, 1);
}

/// An all-zero page travels as a 16-byte marker, not 4 KiB of zeros; a page with one non-zero
/// byte travels as data, and the runs keep their guest addresses.
#[test]
fn zero_pages_travel_as_markers() {
    let mut pages = vec![0u8; 5 * PAGE_SIZE];
    pages[2 * PAGE_SIZE + 100] = 1; // page 2 is data, pages 0-1 and 3-4 are zero
    let mut wire = Vec::new();
    let mut w = StreamWriter::new(&mut wire);
    w.write(&Message::Start {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    let start_len = w.bytes_written();
    assert_eq!(
        w.write_memory(0, Phase::PreCopy, 0x40_0000, &pages)
            .unwrap(),
        1
    );
    let memory_len = (w.bytes_written() - start_len) as usize;
    assert_eq!(
        memory_len,
        HEADER_LEN + MEMORY_HEADER_LEN + 3 * RANGE_HEADER_LEN + PAGE_SIZE + CRC_LEN
    );

    let msgs = read_all(&wire);
    let Message::Memory(chunk) = &msgs[1] else {
        panic!("{:?}", msgs[1])
    };
    let got: Vec<_> = chunk
        .ranges
        .iter()
        .map(|r| (r.guest_addr, r.pages.clone()))
        .collect();
    let mut page2 = vec![0u8; PAGE_SIZE];
    page2[100] = 1;
    assert_eq!(
        got,
        vec![
            (0x40_0000, Pages::Zero(2)),
            (0x40_2000, Pages::Data(page2)),
            (0x40_3000, Pages::Zero(2)),
        ]
    );
}

/// A run of page data larger than one section's limit is split across sections at a page
/// boundary, and together they carry every page exactly once, in order.
#[test]
fn large_runs_split_into_sections_within_the_limit() {
    let pages = MAX_MEMORY_DATA / PAGE_SIZE + 3;
    let data: Vec<u8> = (0..pages).flat_map(|p| data_page(p as u8 | 1)).collect();
    let mut wire = Vec::new();
    let mut w = StreamWriter::new(&mut wire);
    w.write(&Message::Start {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    assert_eq!(w.write_memory(2, Phase::Final, 0x1000, &data).unwrap(), 2);
    let msgs = read_all(&wire);
    let mut joined = Vec::new();
    let mut next = 0x1000;
    for m in &msgs[1..] {
        let Message::Memory(c) = m else {
            panic!("{m:?}")
        };
        assert_eq!((c.round, c.phase), (2, Phase::Final));
        for r in &c.ranges {
            assert_eq!(r.guest_addr, next);
            let Pages::Data(d) = &r.pages else {
                panic!("zero run in non-zero data")
            };
            assert!(d.len() <= MAX_MEMORY_DATA);
            next += d.len() as u64;
            joined.extend_from_slice(d);
        }
    }
    assert_eq!(joined, data);
}

/// The writer refuses what a reader would refuse (partial pages, unaligned addresses,
/// overlong text, an invalid configuration) and writes nothing for it.
#[test]
fn writer_refuses_invalid_messages() {
    let mut wire = Vec::new();
    let mut w = StreamWriter::new(&mut wire);
    let partial = w.write_memory(0, Phase::PreCopy, 0, &[1u8; PAGE_SIZE + 1]);
    assert!(
        matches!(partial, Err(WriteError::Invalid { .. })),
        "{partial:?}"
    );
    let unaligned = w.write_memory(0, Phase::PreCopy, 0x800, &data_page(1));
    assert!(
        matches!(unaligned, Err(WriteError::Invalid { .. })),
        "{unaligned:?}"
    );
    let long = Message::Error {
        message: "x".repeat(virtio_lm_migration::MAX_TEXT + 1),
    };
    assert!(matches!(w.write(&long), Err(WriteError::Invalid { .. })));
    let mut config = sample_config();
    config.devices[1].id = config.devices[0].id;
    assert!(matches!(
        w.write(&Message::Config(config)),
        Err(WriteError::Invalid { .. })
    ));
    assert_eq!(w.sections(), 0);
    assert!(wire.is_empty());
}

/// A failed write poisons the writer: the peer would otherwise see a cut section followed by a
/// fresh one.
#[test]
fn write_error_poisons_the_writer() {
    let mut buf = [0u8; 10];
    let mut w = StreamWriter::new(&mut buf[..]);
    let err = w.write(&Message::Start { version: 1 }).unwrap_err();
    assert!(matches!(err, WriteError::Io { section: 0, .. }), "{err:?}");
    assert!(matches!(
        w.write(&Message::Complete),
        Err(WriteError::Poisoned { section: 0 })
    ));
}

proptest! {
    /// Arbitrary streams of every type read back equal.
    #[test]
    fn generated_streams_round_trip(msgs in common::arb_stream()) {
        prop_assert_eq!(read_all(&encode(&msgs)), msgs);
    }
}
