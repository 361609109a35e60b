//! Context codec rules pinned by mutation testing (docs/mutants.md, group `codec`): the limits
//! at their exact bounds, and the writer's framing (spec-decisions §5).

use virtio_lm_device::context::{
    decode, encode, parse_fields, ContextWriter, DeviceContext, QueueContext, VqConfig,
    MAX_DEVICE_CONFIG_LEN,
};
use virtio_lm_queue::{QueueState, RingKind, MAX_QUEUE_SIZE};
use virtio_lm_spec::context::FieldType;

/// A minimal context: one split queue, nothing in flight.
fn context(device_config: Vec<u8>, queue_size: u16) -> DeviceContext {
    DeviceContext {
        device_features: vec![0x0000_0001_0000_0000],
        driver_features: vec![0x0000_0001_0000_0000],
        device_status: 0x0f,
        config_generation: 0,
        device_config,
        config_msix_vector: 0xffff,
        queues: vec![QueueContext {
            config: VqConfig {
                size: queue_size,
                msix_vector: 0xffff,
                enabled: true,
                desc: 0x1000,
                driver: 0x2000,
                device: 0x3000,
            },
            state: QueueState::initial(RingKind::Split),
        }],
        device_fields: Vec::new(),
    }
}

/// spec-decisions §5 (limits): DEVICE_CONFIG holds at most `MAX_DEVICE_CONFIG_LEN` (4096)
/// bytes — a config of exactly that length is taken, one byte more is refused.
#[test]
fn device_config_of_exactly_the_maximum_length_is_taken() {
    let ctx = context(vec![0x5a; MAX_DEVICE_CONFIG_LEN], 8);
    let decoded = decode(&encode(&ctx).unwrap()).unwrap();
    assert_eq!(decoded.device_config, ctx.device_config);

    // One byte more: build the field by hand (encode refuses it too).
    let mut over = ContextWriter::new();
    over.start_marker();
    over.field(FieldType::DEVICE_CONFIG, 0, &[0; MAX_DEVICE_CONFIG_LEN + 1])
        .unwrap();
    over.end_marker();
    assert!(decode(over.as_bytes()).is_err());
}

/// spec-decisions §5 (limits): a VQ_CONFIG queue size is in 1..=32768 — 32768 itself is a
/// valid size.
#[test]
fn queue_size_of_exactly_32768_is_taken() {
    let ctx = context(Vec::new(), MAX_QUEUE_SIZE);
    let decoded = decode(&encode(&ctx).unwrap()).unwrap();
    assert_eq!(decoded.queues[0].config.size, MAX_QUEUE_SIZE);
}

/// spec-decisions §5 (field framing): `with_buffer` appends to the buffer it is given, keeping
/// what the buffer already holds in front of the new fields.
#[test]
fn a_writer_with_a_buffer_appends_to_it() {
    let mut w = ContextWriter::with_buffer(vec![0xaa; 8]);
    w.start_marker();
    let bytes = w.into_bytes();
    assert_eq!(bytes.len(), 16);
    assert_eq!(&bytes[..8], &[0xaa; 8]);
    let fields = parse_fields(&bytes[8..]).unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].field_type, FieldType::START_MARKER);
}

/// spec-decisions §5 (field framing): DISCARD is an empty field of type DISCARD — an 8-byte
/// header with length 0 and no value.
#[test]
fn discard_writes_an_empty_discard_field() {
    let mut w = ContextWriter::new();
    w.discard();
    assert_eq!(w.as_bytes().len(), 8);
    let fields = parse_fields(w.as_bytes()).unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].field_type, FieldType::DISCARD);
    assert!(fields[0].value.is_empty());
}

/// spec-decisions §5 (field framing, padding): `as_bytes` shows everything written so far —
/// each field an 8-byte header and its value padded with zeros to a multiple of 8 — the same
/// bytes `into_bytes` hands over.
#[test]
fn as_bytes_shows_every_field_written_so_far() {
    let mut w = ContextWriter::new();
    w.start_marker();
    w.field(FieldType::DEVICE_STATUS, 0, &[0x0f]).unwrap();
    assert_eq!(w.as_bytes().len(), 8 + 8 + 8);
    assert_eq!(&w.as_bytes()[16..], &[0x0f, 0, 0, 0, 0, 0, 0, 0]);
    let seen = w.as_bytes().to_vec();
    assert_eq!(w.into_bytes(), seen);
}

/// spec-decisions §5 (field framing, lengths): `length` is the value's own length, and a value
/// written with `put_u8` is that one byte (padded with zeros to 8).
#[test]
fn put_u8_writes_one_byte_of_value() {
    let mut w = ContextWriter::new();
    w.field_with(FieldType::CONFIG_GENERATION, 0, |v| v.put_u8(0x7e))
        .unwrap();
    let fields = parse_fields(w.as_bytes()).unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].field_type, FieldType::CONFIG_GENERATION);
    assert_eq!(fields[0].value, &[0x7e]);
    assert_eq!(w.as_bytes().len(), 16);
}
