//! Runs the `stream_receiver` fuzz body (`virtio_lm_migration::fuzzing`) over generated and
//! mutated input, so stable CI exercises exactly the code the coverage-guided fuzzer in `fuzz/`
//! runs (issue 13: "A fuzz target for the destination's stream receiver (its body also runs in
//! `cargo test`)").

mod common;

use proptest::prelude::*;
use virtio_lm_migration::fuzzing::{repair_framing, stream_receiver, typed_section};
use virtio_lm_migration::{Message, MessageType, PROTOCOL_VERSION};

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(mut wire: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = wire.len().max(1);
        match m {
            Mutation::Flip { at, mask } => {
                if let Some(b) = wire.get_mut(at % n) {
                    *b ^= mask;
                }
            }
            Mutation::Set { at, value } => {
                if let Some(b) = wire.get_mut(at % n) {
                    *b = *value;
                }
            }
            Mutation::Truncate { at } => wire.truncate(at % n),
            Mutation::Insert { at, bytes } => {
                let at = at % (wire.len() + 1);
                wire.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = at % n;
                let end = (at + len).min(wire.len());
                if at < end {
                    wire.drain(at..end);
                }
            }
        }
    }
    wire
}

/// Framing repair makes a stream whose framing was broken readable again: each section's magic,
/// sequence number and crc are right, so the fuzzer's mutations reach the payload decoders.
#[test]
fn repair_framing_restores_a_valid_stream() {
    let (msgs, wire) = common::small_stream();
    let mut broken = wire.clone();
    broken[0] = b'X'; // magic
    broken[12] = 9; // sequence
    let last = broken.len() - 1;
    broken[last] ^= 0xff; // last crc
    assert_eq!(repair_framing(&broken), wire);
    let mut r = virtio_lm_migration::StreamReader::new(&wire[..]);
    for m in msgs {
        assert_eq!(r.read_message().unwrap(), m);
    }
}

/// The typed mode frames one section of the picked type around the payload exactly as the
/// writer would: a FunctionState (type 14, spec-decisions §37) picked with its own payload is
/// the writer's stream byte for byte, so the fuzzer reaches that decoder directly.
#[test]
fn typed_mode_frames_the_picked_type() {
    let start = Message::Start {
        version: PROTOCOL_VERSION,
    };
    let state = common::one_of_each()
        .into_iter()
        .find(|m| matches!(m, Message::FunctionState(_)))
        .unwrap();
    let wire = common::encode(&[start.clone(), state]);
    let head = common::encode(&[start]).len() + virtio_lm_migration::HEADER_LEN;
    let payload = &wire[head..wire.len() - virtio_lm_migration::CRC_LEN];
    let pick = MessageType::ALL
        .iter()
        .position(|t| *t == MessageType::FunctionState)
        .unwrap() as u8;
    let mut data = vec![pick];
    data.extend_from_slice(payload);
    assert_eq!(typed_section(&data), wire);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Typed mode: every type's payload decoder (FunctionState's included) gets arbitrary bytes
    /// in a well-framed section and never panics the receiver.
    #[test]
    fn receiver_survives_typed_sections(
        pick in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut data = vec![2u8, pick];
        data.extend(payload);
        stream_receiver(&data);
    }

    /// Raw bytes, with and without framing repair, never panic the receiver.
    #[test]
    fn receiver_survives_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        stream_receiver(&data);
    }

    /// Valid streams with mutations applied, read raw and after framing repair (so that the
    /// mutated payloads reach the decoders), never panic the receiver, and what it accepts
    /// round-trips.
    #[test]
    fn receiver_survives_mutated_streams(
        msgs in common::arb_stream(),
        mutations in prop::collection::vec(arb_mutation(), 0..4),
        repair in any::<bool>(),
    ) {
        let wire = mutate(common::encode(&msgs), &mutations);
        let mut data = vec![u8::from(repair)];
        data.extend(wire);
        stream_receiver(&data);
    }
}
