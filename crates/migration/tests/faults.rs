//! Hostile and broken streams (issue 13, "Faults and hostile input": a corrupted section, a
//! truncated stream, a Start with an unknown version; the receiver "refuses with a clear error
//! naming the section"): each fault is its own typed error, names the section and the byte
//! offset where that section starts, and poisons the reader.

mod common;

use std::io::{self, Read};

use common::{encode, raw_section, small_stream, start_section};
use virtio_lm_migration::{
    accepts, Message, MessageType, Position, StreamError, StreamReader, CRC_LEN, FLAG_FINAL,
    HEADER_LEN, PROTOCOL_VERSION,
};

/// Reads until the first error; returns the messages accepted and that error.
fn read_until_error(wire: &[u8]) -> (Vec<Message>, StreamError) {
    read_until_error_as(wire, PROTOCOL_VERSION)
}

fn read_until_error_as(wire: &[u8], own: u32) -> (Vec<Message>, StreamError) {
    let mut r = StreamReader::with_version(wire, own);
    let mut ok = Vec::new();
    loop {
        match r.read_message() {
            Ok(m) => ok.push(m),
            Err(e) => {
                assert!(matches!(
                    r.read_message(),
                    Err(StreamError::Poisoned { .. })
                ));
                return (ok, e);
            }
        }
    }
}

/// Where each section of an encoded stream starts, and where it ends.
fn section_bounds(wire: &[u8]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        let len = u32::from_le_bytes(wire[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let end = pos + HEADER_LEN + len + CRC_LEN;
        bounds.push((pos, end));
        pos = end;
    }
    bounds
}

/// A corrupted byte at every offset of a small stream, with three different corruptions, is
/// detected: the reader accepts exactly the sections before it and refuses the section holding
/// it, naming that section and its start. A corrupted payload or trailer byte is a crc mismatch.
#[test]
fn corrupting_any_byte_is_detected_in_its_section() {
    let (msgs, wire) = small_stream();
    let bounds = section_bounds(&wire);
    assert_eq!(bounds.len(), msgs.len());
    for offset in 0..wire.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = wire.clone();
            bad[offset] ^= flip;
            let (ok, err) = read_until_error(&bad);
            let section = bounds
                .iter()
                .position(|&(s, e)| (s..e).contains(&offset))
                .unwrap();
            let where_ = Position {
                section: section as u32,
                offset: bounds[section].0 as u64,
            };
            assert_eq!(ok, msgs[..section], "byte {offset} ^ {flip:#x}: {err}");
            assert_eq!(err.position(), where_, "byte {offset} ^ {flip:#x}: {err}");
            if offset >= bounds[section].0 + HEADER_LEN {
                assert!(
                    matches!(err, StreamError::CrcMismatch { .. }),
                    "byte {offset}: {err}"
                );
            }
        }
    }
}

/// A stream cut at any length is refused: cleanly between sections (Closed), otherwise as
/// Truncated naming the cut section and where the bytes ended.
#[test]
fn truncation_at_every_length_is_detected() {
    let (msgs, wire) = small_stream();
    let bounds = section_bounds(&wire);
    for cut in 0..wire.len() {
        let (ok, err) = read_until_error(&wire[..cut]);
        let section = bounds
            .iter()
            .position(|&(s, e)| (s..e).contains(&cut))
            .unwrap();
        assert_eq!(ok, msgs[..section]);
        assert_eq!(
            err.position(),
            Position {
                section: section as u32,
                offset: bounds[section].0 as u64
            }
        );
        if cut == bounds[section].0 {
            assert!(
                matches!(err, StreamError::Closed { .. }),
                "cut {cut}: {err}"
            );
        } else {
            assert!(
                matches!(err, StreamError::Truncated { ended_at, .. } if ended_at == cut as u64),
                "cut {cut}: {err}"
            );
        }
    }
}

/// A type code this version does not define is refused as UnknownType, even with a right crc.
#[test]
fn unknown_type_is_refused() {
    // 12 is RoundEnd, a version 2 type: from a version 1 peer it is as unknown as 14.
    for code in [0u16, 12, 14, 0xffff] {
        let mut wire = start_section(1);
        wire.extend(raw_section(code, 0, 1, &[]));
        let (ok, err) = read_until_error(&wire);
        assert_eq!(ok.len(), 1);
        assert!(
            matches!(err, StreamError::UnknownType { code: c, at } if c == code && at.section == 1),
            "{err}"
        );
    }
}

/// Flags a type does not allow are refused: FINAL on anything but Memory and DeviceContext,
/// and any other bit on every type.
#[test]
fn unknown_flags_are_refused() {
    for (code, flags) in [
        (6u16, FLAG_FINAL),
        (3, 1 << 1),
        (4, 0x8000),
        (1, FLAG_FINAL),
    ] {
        let mut wire = if code == 1 {
            Vec::new()
        } else {
            start_section(1)
        };
        let seq = if code == 1 { 0 } else { 1 };
        wire.extend(raw_section(code, flags, seq, &[]));
        let (_, err) = read_until_error(&wire);
        assert!(
            matches!(err, StreamError::UnknownFlags { flags: f, .. } if f == flags),
            "{err}"
        );
    }
}

/// Counts the bytes the reader takes from an endless source.
struct Endless {
    header: Vec<u8>,
    taken: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for b in buf.iter_mut() {
            *b = self.header.get(self.taken).copied().unwrap_or(0xaa);
            self.taken += 1;
        }
        Ok(buf.len())
    }
}

/// A length above its type's limit is refused from the header alone: the reader takes the 16
/// header bytes and not one more (the allocation side is the unit test `reader::tests::oversized_length_allocates_nothing_for_the_payload`).
#[test]
fn oversized_length_is_refused_before_reading_the_payload() {
    for t in MessageType::ALL {
        for length in [t.max_payload() as u64 + 1, u64::from(u32::MAX)] {
            let Ok(length) = u32::try_from(length) else {
                continue;
            };
            let mut header = start_section(1);
            let start_len = header.len();
            header.extend_from_slice(&virtio_lm_migration::MAGIC);
            header.extend_from_slice(&t.code().to_le_bytes());
            header.extend_from_slice(&0u16.to_le_bytes());
            header.extend_from_slice(&length.to_le_bytes());
            header.extend_from_slice(&1u32.to_le_bytes());
            let mut r = StreamReader::new(Endless { header, taken: 0 });
            r.read_message().unwrap();
            let err = r.read_message().unwrap_err();
            assert!(
                matches!(err, StreamError::Oversized { msg_type, length: l, .. } if msg_type == t && l == length),
                "{t}: {err}"
            );
            assert_eq!(r.get_ref().taken, start_len + HEADER_LEN, "{t}");
        }
    }
}

/// A header without the magic is refused as BadMagic (a peer not speaking this protocol, or a
/// stream that lost its framing).
#[test]
fn bad_magic_is_refused() {
    let mut wire = start_section(1);
    wire[..4].copy_from_slice(b"HTTP");
    let (_, err) = read_until_error(&wire);
    assert!(
        matches!(err, StreamError::BadMagic { found, .. } if &found == b"HTTP"),
        "{err}"
    );
}

/// Well-formed sections in the wrong order, repeated or missing are refused as OutOfSequence.
#[test]
fn dropped_repeated_or_reordered_sections_are_refused() {
    let (_, wire) = small_stream();
    let b = section_bounds(&wire);
    let part = |i: usize| wire[b[i].0..b[i].1].to_vec();
    let dropped = [part(0), part(2)].concat();
    let repeated = [part(0), part(1), part(1)].concat();
    let swapped = [part(0), part(2), part(1)].concat();
    for (name, bad, section, found) in [
        ("dropped", dropped, 1, 2),
        ("repeated", repeated, 2, 1),
        ("swapped", swapped, 1, 2),
    ] {
        let (_, err) = read_until_error(&bad);
        assert!(
            matches!(err, StreamError::OutOfSequence { at, found: f, .. } if at.section == section && f == found),
            "{name}: {err}"
        );
    }
}

/// Start comes first and once.
#[test]
fn start_must_come_first_and_once() {
    let (_, err) = read_until_error(&encode(&[Message::Complete]));
    assert!(
        matches!(
            err,
            StreamError::ExpectedStart {
                found: MessageType::Complete,
                ..
            }
        ),
        "{err}"
    );
    let mut wire = start_section(1);
    let mut again = start_section(1);
    again[12] = 1; // sequence 1
    let crc_at = again.len() - CRC_LEN;
    let crc = common::crc32c_of(&again[..crc_at]);
    again[crc_at..].copy_from_slice(&crc.to_le_bytes());
    wire.extend(again);
    let (ok, err) = read_until_error(&wire);
    assert_eq!(ok.len(), 1);
    assert!(
        matches!(err, StreamError::RepeatedStart { at } if at.section == 1),
        "{err}"
    );
}

/// The version rule: a side accepts its own version and the previous one, nothing else; version
/// 1 therefore accepts exactly 1, and a side on 2 accepts 1 and 2.
#[test]
fn version_rule() {
    assert!(accepts(1, 1));
    for peer in [0, 2, 3, u32::MAX] {
        assert!(!accepts(1, peer), "{peer}");
    }
    assert!(accepts(2, 2) && accepts(2, 1));
    for peer in [0, 3, u32::MAX] {
        assert!(!accepts(2, peer), "{peer}");
    }
    assert!(!accepts(0, 0) && !accepts(0, u32::MAX));
    assert_eq!(PROTOCOL_VERSION, 2);

    for (own, peer, ok) in [
        (1, 1, true),
        (1, 2, false),
        (1, 0, false),
        (2, 1, true),
        (2, 2, true),
        (2, 3, false),
    ] {
        let wire = start_section(peer);
        let mut r = StreamReader::with_version(&wire[..], own);
        match r.read_message() {
            Ok(m) => {
                assert!(ok, "own {own} accepted {peer}");
                assert_eq!(m, Message::Start { version: peer });
                assert_eq!(r.peer_version(), Some(peer));
            }
            Err(StreamError::UnsupportedVersion {
                peer: p,
                own: o,
                at,
            }) => {
                assert!(!ok, "own {own} refused {peer}");
                assert_eq!((p, o, at.section, at.offset), (peer, own, 0, 0));
                assert_eq!(r.peer_version(), None);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Payloads that do not decode as their type says are Malformed, with a reason naming what.
#[test]
fn malformed_payloads_are_refused() {
    let range = |addr: u64, pages: u32, kind: u32| {
        let mut v = addr.to_le_bytes().to_vec();
        v.extend_from_slice(&pages.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v
    };
    let memory = |ranges: &[Vec<u8>], extra: &[u8]| {
        let mut v = 0u32.to_le_bytes().to_vec();
        v.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        ranges.iter().for_each(|r| v.extend_from_slice(r));
        v.extend_from_slice(extra);
        v
    };
    let mut too_many = memory(&[], &[]);
    too_many[4..8]
        .copy_from_slice(&(virtio_lm_migration::MAX_MEMORY_RANGES as u32 + 1).to_le_bytes());
    let cases: Vec<(&str, u16, Vec<u8>, &str)> = vec![
        (
            "unaligned range",
            3,
            memory(&[range(0x1001, 1, 1)], &[]),
            "not page aligned",
        ),
        (
            "empty range",
            3,
            memory(&[range(0x1000, 0, 1)], &[]),
            "no pages",
        ),
        (
            "overflowing range",
            3,
            memory(&[range(u64::MAX - 0xfff, 2, 1)], &[]),
            "overflows",
        ),
        (
            "unknown kind",
            3,
            memory(&[range(0x1000, 1, 2)], &[]),
            "unknown range kind",
        ),
        (
            "missing data",
            3,
            memory(&[range(0x1000, 1, 0)], &[0; 100]),
            "bytes left",
        ),
        (
            "trailing bytes",
            3,
            memory(&[range(0x1000, 1, 1)], &[0]),
            "after the last range",
        ),
        ("too many ranges", 3, too_many, "limit"),
        ("short memory header", 3, vec![0; 7], "shorter than"),
        ("config garbage", 2, vec![0xff; 9], "postcard"),
        ("short context", 4, vec![1, 2, 3], "shorter than"),
        (
            "unknown cancel reason",
            10,
            9u32.to_le_bytes().to_vec(),
            "unknown cancel reason",
        ),
        ("error not utf-8", 11, vec![b'o', b'k', 0xff], "not UTF-8"),
    ];
    for (name, code, payload, reason_has) in cases {
        let mut wire = start_section(1);
        wire.extend(raw_section(code, 0, 1, &payload));
        let (ok, err) = read_until_error(&wire);
        assert_eq!(ok.len(), 1, "{name}");
        match err {
            StreamError::Malformed {
                at,
                msg_type,
                reason,
            } => {
                assert_eq!(msg_type.code(), code, "{name}");
                assert_eq!(
                    at,
                    Position {
                        section: 1,
                        offset: 28
                    },
                    "{name}"
                );
                assert!(reason.contains(reason_has), "{name}: {reason}");
            }
            e => panic!("{name}: {e}"),
        }
    }
    let mut bad_start = start_section(1);
    bad_start[HEADER_LEN + 4] = 1; // reserved word not zero
    let n = bad_start.len() - CRC_LEN;
    let crc = common::crc32c_of(&bad_start[..n]);
    bad_start[n..].copy_from_slice(&crc.to_le_bytes());
    let (_, err) = read_until_error(&bad_start);
    assert!(
        matches!(
            err,
            StreamError::Malformed {
                msg_type: MessageType::Start,
                ..
            }
        ),
        "{err}"
    );
}

/// A Config that breaks its own rules (overlapping regions) is refused even when it decodes.
#[test]
fn invalid_config_is_refused() {
    let mut config = common::sample_config();
    config.memory[1].guest_addr = 0x8_0000; // inside region 0
    let payload = postcard_bytes(&config);
    let mut wire = start_section(1);
    wire.extend(raw_section(2, 0, 1, &payload));
    let (_, err) = read_until_error(&wire);
    assert!(
        matches!(&err, StreamError::Malformed { msg_type: MessageType::Config, reason, .. } if reason.contains("overlaps")),
        "{err}"
    );
}

/// The Config payload of a valid configuration with one field changed afterwards, taken from a
/// real stream so the test does not depend on postcard directly.
fn postcard_bytes(config: &virtio_lm_migration::VmConfig) -> Vec<u8> {
    let mut good = config.clone();
    good.memory[1].guest_addr = 0x1_0000_0000;
    let wire = encode(&[Message::Start { version: 1 }, Message::Config(good)]);
    let b = section_bounds(&wire);
    let payload = &wire[b[1].0 + HEADER_LEN..b[1].1 - CRC_LEN];
    // postcard writes u64 as a varint: 0x1_0000_0000 is 80 80 80 80 10, 0x8_0000 is 80 80 20.
    let needle = [0x80, 0x80, 0x80, 0x80, 0x10];
    let i = payload
        .windows(5)
        .position(|w| w == needle)
        .expect("region 1 address in payload");
    [&payload[..i], &[0x80, 0x80, 0x20][..], &payload[i + 5..]].concat()
}

/// A read failure (as a caller's read timeout produces) is an Io error naming the section, and
/// poisons the reader.
#[test]
fn read_timeout_is_an_io_error_naming_the_section() {
    struct Stall(Vec<u8>, usize);
    impl Read for Stall {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 == self.0.len() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no bytes"));
            }
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let mut wire = start_section(1);
    wire.extend_from_slice(&raw_section(6, 0, 1, &[])[..5]);
    let mut r = StreamReader::new(Stall(wire, 0));
    r.read_message().unwrap();
    let err = r.read_message().unwrap_err();
    assert!(
        matches!(&err, StreamError::Io { at, source } if at.section == 1 && at.offset == 28 && source.kind() == io::ErrorKind::TimedOut),
        "{err}"
    );
    assert!(matches!(
        r.read_message(),
        Err(StreamError::Poisoned { .. })
    ));
}
