//! Body of the `stream_receiver` fuzz target in `fuzz/`, kept in the library so that `cargo test`
//! runs it over generated input on stable Rust and the fuzzer runs the very same code.

use zerocopy::IntoBytes;

use crate::header::{CRC_LEN, HEADER_LEN, MAGIC};
use crate::{
    Message, MessageType, SectionHeader, StreamError, StreamReader, StreamWriter, PROTOCOL_VERSION,
};

/// Fuzz body: the destination's stream receiver reads `data` until it refuses something or the
/// stream ends. The first byte picks the mode: odd means "repair the framing first" (magic,
/// sequence numbers and crcs rewritten, everything else left hostile) so the fuzzer reaches the
/// payload decoders instead of stopping at the crc; 2 modulo 4 means "typed": a valid Start, then
/// one well-framed section of the type the next byte picks (every type, FunctionState included)
/// carrying the rest as its payload, so each payload decoder sees arbitrary bytes at once; 0
/// modulo 4 means raw bytes.
///
/// Panics only when an invariant of ours breaks: an error names a position inside the input, a
/// section never starts past the bytes received, and every accepted message survives a
/// write/read round trip unchanged.
pub fn stream_receiver(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode & 3 {
        1 | 3 => repair_framing(rest),
        2 => typed_section(rest),
        _ => rest.to_vec(),
    };
    let mut reader = StreamReader::new(&bytes[..]);
    let mut accepted = Vec::new();
    // Every accepted section consumes at least HEADER_LEN + CRC_LEN bytes, so this bounds the loop.
    for _ in 0..=bytes.len() / (HEADER_LEN + CRC_LEN) {
        match reader.read_message() {
            Ok(msg) => accepted.push(msg),
            Err(err) => {
                let at = err.position();
                assert!(at.offset <= bytes.len() as u64, "{err} lies past the input");
                assert_eq!(
                    at.section as usize,
                    accepted.len(),
                    "{err} names the wrong section"
                );
                if let StreamError::Truncated { ended_at, .. } = err {
                    assert_eq!(ended_at, bytes.len() as u64);
                }
                assert!(matches!(
                    reader.read_message(),
                    Err(StreamError::Poisoned { .. })
                ));
                break;
            }
        }
    }
    round_trip(&accepted);
}

/// What was accepted re-encodes to a stream that reads back identically.
fn round_trip(accepted: &[Message]) {
    let mut wire = Vec::new();
    let mut writer = StreamWriter::new(&mut wire);
    for msg in accepted {
        writer.write(msg).expect("an accepted message re-encodes");
    }
    let mut reader = StreamReader::new(&wire[..]);
    for msg in accepted {
        assert_eq!(
            &reader.read_message().expect("re-encoded stream reads back"),
            msg
        );
    }
    assert!(matches!(
        reader.read_message(),
        Err(StreamError::Closed { .. })
    ));
}

/// Walks `data` as a sequence of sections, clamping each declared length to what is left, and
/// rewrites each section's magic, sequence number and crc trailer to be right.
pub fn repair_framing(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut pos = 0usize;
    let mut sequence = 0u32;
    while out.len().saturating_sub(pos) >= HEADER_LEN + CRC_LEN {
        out[pos..pos + 4].copy_from_slice(&MAGIC);
        out[pos + 12..pos + 16].copy_from_slice(&sequence.to_le_bytes());
        let declared =
            u32::from_le_bytes([out[pos + 8], out[pos + 9], out[pos + 10], out[pos + 11]]);
        let room = out.len() - pos - HEADER_LEN - CRC_LEN;
        let len = (declared as usize).min(room);
        out[pos + 8..pos + 12].copy_from_slice(&(len as u32).to_le_bytes());
        let end = pos + HEADER_LEN + len;
        let crc = crc32c::crc32c(&out[pos..end]);
        out[end..end + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        pos = end + CRC_LEN;
        sequence = sequence.wrapping_add(1);
    }
    out
}

/// A valid Start, then one section of the type `data[0]` picks (its allowed flags when bit 7 is
/// set) with the rest of `data`, cut to the type's limit, as its payload; header and crc right.
pub fn typed_section(data: &[u8]) -> Vec<u8> {
    let Some((&pick, payload)) = data.split_first() else {
        return Vec::new();
    };
    let types = MessageType::ALL;
    let t = types[usize::from(pick) % types.len()];
    let flags = if pick & 0x80 != 0 {
        t.allowed_flags()
    } else {
        0
    };
    let payload = &payload[..payload.len().min(t.max_payload())];
    let mut wire = Vec::new();
    StreamWriter::new(&mut wire)
        .write(&Message::Start {
            version: PROTOCOL_VERSION,
        })
        .expect("Start encodes");
    let header = SectionHeader::new(t, flags, payload.len() as u32, 1);
    let start = wire.len();
    wire.extend_from_slice(header.as_bytes());
    wire.extend_from_slice(payload);
    let crc = crc32c::crc32c(&wire[start..]);
    wire.extend_from_slice(&crc.to_le_bytes());
    wire
}
