//! Device context format (spec-decisions §5) and decoding rules: framing, markers, DISCARD, order,
//! repeats, unknown fields, exact lengths, and VQ_INFLIGHT / VQ_INFLIGHT_CHAINS. Every
//! malformed input gets its typed error with the byte offset of the offending field.

mod common;

use common::context::{build, fields, offset_of, position, RawField};
use virtio_lm_device::context::{
    decode, encode, parse_fields, ContextError, ContextReader, ContextWriter, DeviceContext,
    DeviceField, QueueContext, VqConfig, MAX_FIELD_LEN, VQ_INFLIGHT_CHAINS,
};
use virtio_lm_queue::{QueueState, SavedChain, Segment};
use virtio_lm_spec::context::{FieldType, FIELD_FLAG_OPTIONAL};
use vm_memory::GuestAddress;

fn chain(id: u16, slots: u16, segs: &[(u64, u32, bool)]) -> SavedChain {
    SavedChain {
        id,
        ring_slots: slots,
        segments: segs
            .iter()
            .map(|&(addr, len, writable)| Segment {
                addr: GuestAddress(addr),
                len,
                writable,
            })
            .collect(),
    }
}

/// Two queues, the first with two chains in flight; one device-specific field.
fn sample() -> DeviceContext {
    DeviceContext {
        device_features: vec![0x0000_0781_3000_0000],
        driver_features: vec![0x0000_0001_0000_0000],
        device_status: 0x2f,
        config_generation: 3,
        device_config: vec![1, 2, 3],
        config_msix_vector: 1,
        queues: vec![
            QueueContext {
                config: VqConfig {
                    size: 8,
                    msix_vector: 2,
                    enabled: true,
                    desc: 0x1000,
                    driver: 0x1080,
                    device: 0x10c0,
                },
                state: QueueState {
                    avail_state: 5,
                    used_state: 0,
                    notification_owed: true,
                    inflight: vec![
                        chain(3, 1, &[(0x8000, 16, false), (0x9000, 64, true)]),
                        chain(1, 1, &[(0xa000, 32, true)]),
                    ],
                },
            },
            QueueContext {
                config: VqConfig {
                    size: 4,
                    msix_vector: 0xffff,
                    enabled: false,
                    desc: 0,
                    driver: 0,
                    device: 0,
                },
                state: QueueState::initial(virtio_lm_queue::RingKind::Split),
            },
        ],
        device_fields: vec![DeviceField {
            field_type: FieldType::BLK_WRITEBACK,
            flags: 0,
            value: vec![1],
        }],
    }
}

fn sample_fields() -> Vec<RawField> {
    fields(&encode(&sample()).unwrap())
}

fn decode_fields(f: &[RawField]) -> Result<DeviceContext, ContextError> {
    decode(&build(f))
}

/// Decoding `f` fails with the error `want` makes of the offset of field `at`.
fn assert_refused_at(f: &[RawField], at: usize, want: impl FnOnce(usize) -> ContextError) {
    assert_eq!(decode_fields(f).unwrap_err(), want(offset_of(f, at)));
}

/// `f` is refused when its END_MARKER (the last field) closes the context without
/// `field_type` (of queue `queue`).
fn assert_missing_at_end(f: &[RawField], field_type: FieldType, queue: Option<u16>) {
    assert_refused_at(f, f.len() - 1, |offset| ContextError::MissingField {
        offset,
        field_type,
        queue,
    });
}

/// spec-decisions §5: "each `le16 type; le16 flags; le32 length; u8 value[length]` (8-byte header,
/// value padded to 8 bytes; length excludes padding)" — the writer lays fields out so, with
/// zero padding, and the reader returns each value without its padding.
#[test]
fn field_framing_and_padding() {
    let mut w = ContextWriter::new();
    w.start_marker();
    w.field(FieldType(0x0200), 0x8001, &[0xaa, 0xbb, 0xcc])
        .unwrap();
    w.end_marker();
    let bytes = w.into_bytes();
    assert_eq!(
        bytes,
        [
            0, 0, 0, 0, 0, 0, 0, 0, // START
            0x00, 0x02, 0x01, 0x80, 3, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0, 0, 0, 0, 0, // 0x0200
            1, 0, 0, 0, 0, 0, 0, 0, // END
        ]
    );
    let parsed = parse_fields(&bytes).unwrap();
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[1].offset, 8);
    assert_eq!(parsed[1].value, &[0xaa, 0xbb, 0xcc]);
    assert_eq!(parsed[1].flags, 0x8001);
    assert!(parsed[1].is_optional());
}

/// spec-decisions §5 order: "features, status, config generation, device config, common cfg, then
/// per queue VQ_CONFIG, VQ_STATE, VQ_INFLIGHT, then device-specific fields", framed by
/// START_MARKER and END_MARKER. VQ_INFLIGHT is sent OPTIONAL, VQ_INFLIGHT_CHAINS mandatory.
#[test]
fn encoder_writes_the_spec_notes_order() {
    let f = sample_fields();
    let types: Vec<FieldType> = f.iter().map(|f| f.0).collect();
    use FieldType as T;
    assert_eq!(
        types,
        [
            T::START_MARKER,
            T::DEVICE_FEATURES,
            T::DRIVER_FEATURES,
            T::DEVICE_STATUS,
            T::CONFIG_GENERATION,
            T::DEVICE_CONFIG,
            T::PCI_COMMON_CFG,
            T::VQ_CONFIG,
            T::VQ_STATE,
            T::VQ_INFLIGHT,
            VQ_INFLIGHT_CHAINS,
            T::VQ_CONFIG,
            T::VQ_STATE,
            T::BLK_WRITEBACK,
            T::END_MARKER,
        ]
    );
    assert_eq!(f[9].1, FIELD_FLAG_OPTIONAL);
    assert_eq!(f[10].1, 0);
    assert_eq!(
        f[9].2,
        [0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 1, 0],
        "index, count, heads"
    );
    assert_eq!(decode(&build(&f)).unwrap(), sample());
}

/// spec-decisions §5 (our decision): padding bytes must be present but may hold anything.
#[test]
fn nonzero_padding_is_accepted() {
    let mut bytes = encode(&sample()).unwrap();
    let f = sample_fields();
    let config = offset_of(&f, position(&f, FieldType::DEVICE_CONFIG));
    bytes[config + 8 + 3..config + 16].fill(0xee);
    assert_eq!(decode(&bytes).unwrap(), sample());
}

/// spec-decisions §7 pitfall 10, truncated context: every cut of a valid context is refused with a
/// typed error — a cut inside a header is TruncatedHeader, inside a value TruncatedValue, at a
/// field boundary MissingEndMarker — and nothing panics.
#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = encode(&sample()).unwrap();
    let f = sample_fields();
    let starts: Vec<usize> = (0..f.len()).map(|i| offset_of(&f, i)).collect();
    for cut in 0..bytes.len() {
        let err = decode(&bytes[..cut]).unwrap_err();
        let field = starts.iter().rposition(|&s| s <= cut).unwrap();
        let start = starts[field];
        match err {
            ContextError::MissingStartMarker { offset: 0 } => assert_eq!(cut, 0),
            ContextError::MissingEndMarker { offset } => {
                assert_eq!((offset, start), (cut, cut), "cut at a field boundary")
            }
            ContextError::TruncatedHeader { offset, remaining } => {
                assert_eq!((offset, remaining), (start, cut - start));
                assert!(cut - start < 8);
            }
            ContextError::TruncatedValue {
                offset, field_type, ..
            } => {
                assert_eq!((offset, field_type), (start, f[field].0));
                assert!(cut - start >= 8);
            }
            other => panic!("cut {cut}: unexpected {other:?}"),
        }
    }
}

/// spec-decisions §5 with our limit: a length larger than the bytes left is TruncatedValue, and a
/// length over 16 MiB is LengthOverflow before anything is allocated for it.
#[test]
fn oversized_lengths_are_refused() {
    let mut bytes = build(&[(FieldType::START_MARKER, 0, vec![])]);
    bytes.extend_from_slice(&[0x04, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        decode(&bytes).unwrap_err(),
        ContextError::LengthOverflow {
            offset: 8,
            field_type: FieldType::DEVICE_CONFIG,
            length: u64::from(u32::MAX),
            max: MAX_FIELD_LEN,
        }
    );
    let len = 64u32.to_le_bytes();
    bytes.truncate(12);
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&[0; 16]);
    assert_eq!(
        decode(&bytes).unwrap_err(),
        ContextError::TruncatedValue {
            offset: 8,
            field_type: FieldType::DEVICE_CONFIG,
            needed: 64,
            remaining: 16,
        }
    );
    let mut reader = ContextReader::new(&bytes);
    assert!(reader.next().unwrap().is_ok());
    assert!(reader.next().unwrap().is_err());
    assert!(reader.next().is_none(), "the reader stops after an error");
}

/// Seed 004: "the device MUST respond field[0] in struct virtio_dev_ctx of type
/// VIRTIO_DEV_CTX_START_MARKER" and "the driver MUST end the device context ... with last entry
/// of fields[] with type VIRTIO_DEV_CTX_END_MARKER": a context without its START_MARKER first,
/// with a second one, without END_MARKER, or with data after it is refused.
#[test]
fn markers_frame_exactly_one_context() {
    let f = sample_fields();
    assert_eq!(
        decode(&[]).unwrap_err(),
        ContextError::MissingStartMarker { offset: 0 }
    );
    assert_eq!(
        decode_fields(&f[1..]).unwrap_err(),
        ContextError::MissingStartMarker { offset: 0 }
    );
    let mut dup = f.clone();
    dup.insert(3, (FieldType::START_MARKER, 0, vec![]));
    assert_refused_at(&dup, 3, |offset| ContextError::DuplicateStartMarker {
        offset,
    });
    let no_end = &f[..f.len() - 1];
    assert_eq!(
        decode_fields(no_end).unwrap_err(),
        ContextError::MissingEndMarker {
            offset: build(no_end).len()
        }
    );
    let mut trailing = f.clone();
    trailing.push((FieldType(0x7777), FIELD_FLAG_OPTIONAL, vec![]));
    assert_eq!(
        decode_fields(&trailing).unwrap_err(),
        ContextError::TrailingData {
            offset: build(&f).len()
        }
    );
    let mut marker_value = f.clone();
    marker_value[0].2 = vec![0; 8];
    assert!(matches!(
        decode_fields(&marker_value).unwrap_err(),
        ContextError::BadLength {
            offset: 0,
            expected: 0,
            ..
        }
    ));
}

/// spec-decisions §5: DISCARD — "the receiver drops every field received since the last
/// START_MARKER of this write sequence, then continues (lets a source resend a newer context
/// after pre-copy)".
#[test]
fn discard_drops_everything_since_start() {
    let f = sample_fields();
    let mut older = sample();
    older.device_status = 0x0f;
    older.queues[0].state.avail_state = 2;
    let old = fields(&encode(&older).unwrap());
    // START, an older partial context, DISCARD, the newer context's fields, END.
    let mut stream = old[..10].to_vec();
    stream.push((FieldType::DISCARD, 0, vec![]));
    stream.extend_from_slice(&f[1..]);
    assert_eq!(decode_fields(&stream).unwrap(), sample());
    // A DISCARD also drops the fields it follows: without resending them they are missing.
    let mut dropped = f[..14].to_vec();
    dropped.push((FieldType::DISCARD, 0, vec![]));
    dropped.push((FieldType::END_MARKER, 0, vec![]));
    assert_missing_at_end(&dropped, FieldType::DEVICE_FEATURES, None);
}

/// spec-decisions §5: "a receiver skips an unknown optional field and rejects an unknown mandatory
/// one" (spec-decisions §7 pitfall 10, unknown fields).
#[test]
fn unknown_fields_optional_skipped_mandatory_rejected() {
    let f = sample_fields();
    let mut optional = f.clone();
    optional.insert(4, (FieldType(0x0150), FIELD_FLAG_OPTIONAL, vec![9; 13]));
    optional.insert(1, (FieldType(0x9000), FIELD_FLAG_OPTIONAL, vec![]));
    assert_eq!(decode_fields(&optional).unwrap(), sample());
    let mut mandatory = f.clone();
    mandatory.insert(4, (FieldType(0x0150), 0, vec![9; 13]));
    assert_refused_at(&mandatory, 4, |offset| {
        ContextError::UnknownMandatoryField {
            offset,
            field_type: FieldType(0x0150),
        }
    });
}

/// Seed 004: "The device MUST respond with an error for the command
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if there is a mismatch between the device context field
/// length supplied ... and the length of the field in the device." Fixed-size fields must have
/// exactly their size; variable ones must match their own counts.
#[test]
fn field_lengths_are_exact() {
    let f = sample_fields();
    for (t, len) in [
        (FieldType::DEVICE_STATUS, 2),
        (FieldType::CONFIG_GENERATION, 0),
        (FieldType::PCI_COMMON_CFG, 4),
        (FieldType::VQ_CONFIG, 31),
        (FieldType::VQ_STATE, 16),
    ] {
        let mut bad = f.clone();
        let i = position(&bad, t);
        let expected = bad[i].2.len();
        bad[i].2.resize(len, 0);
        assert_eq!(
            decode_fields(&bad).unwrap_err(),
            ContextError::BadLength {
                offset: offset_of(&bad, i),
                field_type: t,
                length: len,
                expected,
            },
            "{t:?}",
        );
    }
    for (t, cut) in [
        (FieldType::DEVICE_FEATURES, 4),
        (FieldType::VQ_INFLIGHT, 2),
        (VQ_INFLIGHT_CHAINS, 16),
        (VQ_INFLIGHT_CHAINS, 1),
    ] {
        let mut bad = f.clone();
        let i = position(&bad, t);
        let len = bad[i].2.len();
        bad[i].2.truncate(len - cut);
        assert!(
            matches!(decode_fields(&bad).unwrap_err(), ContextError::InvalidValue { offset, field_type, .. } if offset == offset_of(&bad, i) && field_type == t),
            "{t:?} cut by {cut}"
        );
    }
    let mut long = f.clone();
    let i = position(&long, VQ_INFLIGHT_CHAINS);
    long[i].2.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode_fields(&long).unwrap_err(),
        ContextError::InvalidValue {
            reason: "bytes after the last chain",
            ..
        }
    ));
    let mut config = f.clone();
    let i = position(&config, FieldType::DEVICE_CONFIG);
    config[i].2 = vec![0; 4097];
    assert!(matches!(
        decode_fields(&config).unwrap_err(),
        ContextError::LengthOverflow { max: 4096, .. }
    ));
}

/// spec-decisions §5 (values validated): unknown flag bits in VQ_STATE or a segment, `enabled`
/// other than 0/1, a queue size of 0 or over 32768, and empty feature arrays are refused.
#[test]
fn invalid_values_are_refused() {
    let f = sample_fields();
    let edits: [(FieldType, usize, &[u8]); 6] = [
        (FieldType::VQ_STATE, 6, &[2, 0]),
        (FieldType::VQ_CONFIG, 6, &[2, 0]),
        (FieldType::VQ_CONFIG, 2, &[0, 0]),
        (FieldType::VQ_CONFIG, 2, &[1, 0x80]),
        (VQ_INFLIGHT_CHAINS, 8 + 8 + 12, &[2, 0, 0, 0]),
        (FieldType::VQ_INFLIGHT, 2, &[3, 0]),
    ];
    for (t, at, bytes) in edits {
        let mut bad = f.clone();
        let i = position(&bad, t);
        bad[i].2[at..at + bytes.len()].copy_from_slice(bytes);
        assert!(
            matches!(decode_fields(&bad).unwrap_err(), ContextError::InvalidValue { offset, field_type, .. } if offset == offset_of(&bad, i) && field_type == t),
            "{t:?} byte {at}"
        );
    }
    let mut empty = f.clone();
    let i = position(&empty, FieldType::DRIVER_FEATURES);
    empty[i].2.clear();
    let invalid = ContextError::InvalidValue {
        offset: offset_of(&empty, i),
        field_type: FieldType::DRIVER_FEATURES,
        reason: "not a non-empty array of le64 words",
    };
    assert_eq!(decode_fields(&empty).unwrap_err(), invalid);
}

/// Seed 004: "When the device receives same field type multiple times ..., the device MUST
/// apply the device context fields in the order these fields are received": a repeated field
/// replaces the earlier one (spec-decisions §7 pitfall 10, duplicated fields).
#[test]
fn repeated_fields_later_wins() {
    let f = sample_fields();
    let mut repeated = f.clone();
    repeated.insert(4, (FieldType::DEVICE_STATUS, 0, vec![0x0f]));
    repeated.insert(2, (FieldType::DEVICE_STATUS, 0, vec![0x01]));
    let mut want = sample();
    want.device_status = 0x0f;
    assert_eq!(decode_fields(&repeated).unwrap(), want);
    // A re-sent VQ_STATE (with its in-flight fields after it) replaces the queue's state.
    let mut newer = sample();
    newer.queues[0].state.avail_state = 6;
    newer.queues[0].state.inflight.push(chain(0, 1, &[]));
    let nf = fields(&encode(&newer).unwrap());
    let mut resent = f.clone();
    resent.splice(11..11, nf[8..11].iter().cloned());
    assert_eq!(decode_fields(&resent).unwrap(), newer);
    // A re-sent VQ_STATE alone drops the in-flight fields that belonged to the old one.
    let mut alone = f.clone();
    alone.insert(11, nf[8].clone());
    newer.queues[0].state.inflight.clear();
    assert_eq!(decode_fields(&alone).unwrap(), newer);
}

/// spec-decisions §5 order, and §7 pitfall 10 (reordered fields): a queue's VQ_STATE before its
/// VQ_CONFIG, in-flight fields before VQ_STATE, queue fields before PCI_COMMON_CFG, device
/// fields after queue fields and queue fields after device-specific ones are refused.
#[test]
fn reordered_fields_are_refused() {
    let f = sample_fields();
    // (fields to swap, position of the refused field after the swap)
    let cases = [
        ((7, 8), 7),    // VQ_STATE before its VQ_CONFIG
        ((8, 9), 8),    // VQ_INFLIGHT before VQ_STATE
        ((8, 10), 8),   // VQ_INFLIGHT_CHAINS before VQ_STATE
        ((6, 7), 6),    // VQ_CONFIG before PCI_COMMON_CFG
        ((6, 11), 6),   // another queue's VQ_CONFIG before PCI_COMMON_CFG
        ((12, 13), 13), // VQ_STATE after a device-specific field
        ((3, 8), 3),    // VQ_STATE among the device fields
    ];
    for ((a, b), at) in cases {
        let mut g = f.clone();
        g.swap(a, b);
        let want = ContextError::OutOfOrder {
            offset: offset_of(&g, at),
            field_type: g[at].0,
            reason: "",
        };
        match (decode_fields(&g).unwrap_err(), want) {
            (
                ContextError::OutOfOrder {
                    offset, field_type, ..
                },
                ContextError::OutOfOrder {
                    offset: o,
                    field_type: t,
                    ..
                },
            ) => assert_eq!((offset, field_type), (o, t), "swap {a} {b}"),
            (other, _) => panic!("swap {a} {b}: {other:?}"),
        }
    }
    // A device field after the queue fields.
    let mut late = f.clone();
    let status = late.remove(3);
    late.insert(10, status);
    assert!(matches!(
        decode_fields(&late).unwrap_err(),
        ContextError::OutOfOrder { offset, field_type: FieldType::DEVICE_STATUS, .. } if offset == offset_of(&late, 10)
    ));
    // Queues may interleave: both VQ_CONFIGs, then both VQ_STATEs.
    let mut interleaved = f.clone();
    let config1 = interleaved.remove(11);
    interleaved.insert(8, config1);
    assert_eq!(decode_fields(&interleaved).unwrap(), sample());
    // Within the device section any order is accepted.
    let mut shuffled = f.clone();
    shuffled[1..7].reverse();
    assert_eq!(decode_fields(&shuffled).unwrap(), sample());
    // A re-sent VQ_CONFIG reopens the queue: its VQ_STATE must follow again.
    let mut reopened = f.clone();
    reopened.insert(11, f[7].clone());
    assert_missing_at_end(&reopened, FieldType::VQ_STATE, Some(0));
}

/// spec-decisions §5: "indices < size" — a queue field whose index is not below num_queues is
/// refused, and every queue below num_queues needs VQ_CONFIG and VQ_STATE.
#[test]
fn queue_indices_are_checked() {
    let f = sample_fields();
    let mut bad = f.clone();
    bad[12].2[0] = 2;
    assert_refused_at(&bad, 12, |offset| ContextError::QueueIndexOutOfRange {
        offset,
        field_type: FieldType::VQ_STATE,
        index: 2,
        num_queues: 2,
    });
    let mut missing = f.clone();
    missing.remove(12);
    missing.remove(11);
    assert_missing_at_end(&missing, FieldType::VQ_CONFIG, Some(1));
    for t in [
        FieldType::DEVICE_FEATURES,
        FieldType::DEVICE_STATUS,
        FieldType::DEVICE_CONFIG,
        FieldType::PCI_COMMON_CFG,
    ] {
        let mut g = f.clone();
        if t == FieldType::PCI_COMMON_CFG {
            g.truncate(6);
            g.push((FieldType::END_MARKER, 0, vec![]));
        } else {
            g.remove(position(&g, t));
        }
        assert!(
            matches!(decode_fields(&g).unwrap_err(), ContextError::MissingField { field_type, queue: None, .. } if field_type == t),
            "{t:?}"
        );
    }
}

/// spec-decisions §5 VQ_INFLIGHT plus our VQ_INFLIGHT_CHAINS (see the `context` module docs):
/// chains alone are enough, heads must agree with chains (same ids, same order), heads without
/// chains are refused unless empty.
#[test]
fn inflight_heads_and_chains_must_agree() {
    let f = sample_fields();
    let mut chains_only = f.clone();
    chains_only.remove(9);
    assert_eq!(decode_fields(&chains_only).unwrap(), sample());
    let mut reversed = f.clone();
    reversed[9].2[8..12].copy_from_slice(&[1, 0, 3, 0]);
    assert_refused_at(&reversed, 10, |offset| ContextError::InflightMismatch {
        offset,
        index: 0,
    });
    let mut heads_only = f.clone();
    heads_only.remove(10);
    assert_refused_at(&heads_only, 9, |offset| {
        ContextError::InflightWithoutChains { offset, index: 0 }
    });
    let mut empty_heads = f.clone();
    empty_heads.insert(
        13,
        (
            FieldType::VQ_INFLIGHT,
            FIELD_FLAG_OPTIONAL,
            vec![1, 0, 0, 0, 0, 0, 0, 0],
        ),
    );
    assert_eq!(decode_fields(&empty_heads).unwrap(), sample());
}

/// spec-decisions §5: the encoder refuses a model the format cannot carry (instead of writing a
/// context the receiver would refuse), and writes nothing for the refused field.
#[test]
fn unencodable_models_are_refused() {
    let mut ctx = sample();
    ctx.device_features.clear();
    assert!(matches!(
        encode(&ctx).unwrap_err(),
        ContextError::Unencodable {
            field_type: FieldType::DEVICE_FEATURES,
            ..
        }
    ));
    let mut ctx = sample();
    ctx.device_fields[0].field_type = FieldType::VQ_STATE;
    assert!(matches!(
        encode(&ctx).unwrap_err(),
        ContextError::Unencodable { .. }
    ));
    let mut ctx = sample();
    ctx.queues[1].config.size = 0;
    assert!(matches!(
        encode(&ctx).unwrap_err(),
        ContextError::Unencodable { .. }
    ));
    let mut w = ContextWriter::new();
    let big = vec![0u8; MAX_FIELD_LEN + 1];
    assert!(w.field(FieldType(0x0200), 0, &big).is_err());
    assert!(w.as_bytes().is_empty());
}
