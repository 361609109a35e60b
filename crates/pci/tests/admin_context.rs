//! Seed 004 device context commands: DEV_CTX_SIZE_GET, DEV_CTX_READ, DEV_CTX_WRITE,
//! DEV_CTX_DISCARD and DEV_CTX_FIELDS_QUERY on SR-IOV members, with the context format of
//! spec-decisions §5, and the bad contexts each refused with the status spec-decisions §4 names.

use std::sync::{Arc, Mutex};

use virtio_lm_device::context::{decode, encode, parse_fields, ContextWriter, DeviceContext};
use virtio_lm_pci::admin::{AdminClient, OwnerFunction};
use virtio_lm_pci::testing::admin::*;
use virtio_lm_spec::admin::{opcode, qualifier, status, DevMode};
use virtio_lm_spec::context::FieldType;

/// Owner with three rng members; member 1 used by a guest (3 buffers) and stopped; member 2
/// used by a guest and running; member 3 untouched. Returns member 1's context.
fn setup() -> (OwnerFunction<Mem>, AdminClient<Mem>, Vec<Guest>, Vec<u8>) {
    let owner = owner(3, Kind::Counting);
    let mut client = client(&owner);
    let mut guests = Vec::new();
    for (m, n) in [(1, 3), (2, 1)] {
        let mut guest = Guest::new(owner.member(m).unwrap());
        guest.submit(n);
        guest.collect();
        guests.push(guest);
    }
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    let ctx = client.dev_ctx_read_all(1, 64).unwrap();
    (owner, client, guests, ctx)
}

fn read_back(client: &mut AdminClient<Mem>, member: u64) -> Vec<u8> {
    client.dev_ctx_discard(member).unwrap();
    client.dev_ctx_read_all(member, 256).unwrap()
}

/// The configuration generation in the context `member` reports now.
fn generation(client: &mut AdminClient<Mem>, member: u64) -> u8 {
    decode(&read_back(client, member))
        .unwrap()
        .config_generation
}

/// `(type, flags, value)` of every field of a context.
fn fields(ctx: &[u8]) -> Vec<(FieldType, u16, Vec<u8>)> {
    parse_fields(ctx)
        .unwrap()
        .into_iter()
        .map(|f| (f.field_type, f.flags, f.value.to_vec()))
        .collect()
}

/// Encodes fields, markers included, as they are listed.
fn build(list: &[(FieldType, u16, Vec<u8>)]) -> Vec<u8> {
    let mut w = ContextWriter::new();
    for (ty, flags, value) in list {
        w.field(*ty, *flags, value).unwrap();
    }
    w.into_bytes()
}

fn with(ctx: &DeviceContext, edit: impl FnOnce(&mut DeviceContext)) -> Vec<u8> {
    let mut ctx = ctx.clone();
    edit(&mut ctx);
    encode(&ctx).unwrap()
}

/// Seed 004: "The device MUST support reading the device context when the device is in any
/// mode Active or Stop or Freeze", and "the device MUST respond field[0] in struct virtio_dev_ctx
/// of type VIRTIO_DEV_CTX_START_MARKER" and "MUST end the device context ... with last entry of
/// fields[] with type VIRTIO_DEV_CTX_END_MARKER".
#[test]
fn read_works_in_every_mode() {
    let (_owner, mut client, _guests, _) = setup();
    for mode in [DevMode::Active, DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(2, mode).unwrap();
        let bytes = client.dev_ctx_read_all(2, 64).unwrap();
        let list = fields(&bytes);
        assert_eq!(list.first().unwrap().0, FieldType::START_MARKER, "{mode:?}");
        assert_eq!(list.last().unwrap().0, FieldType::END_MARKER, "{mode:?}");
        let ctx = decode(&bytes).unwrap();
        assert_eq!(ctx.queues.len(), 1);
    }
}

/// Seed 004: "the device MAY respond VIRTIO_DEV_CTX_START_MARKER followed by
/// VIRTIO_DEV_CTX_END_MARKER in two different command responses" (or in a single one): the
/// context splits at any byte across DEV_CTX_READ commands and `remaining_ctx_size` counts down
/// (v4: "added remaining context size bytes in read response").
#[test]
fn context_splits_at_any_byte() {
    let (_owner, mut client, _guests, whole) = setup();
    for piece in [1usize, 3, 5, 8, 13] {
        client.dev_ctx_discard(1).unwrap();
        let mut got = Vec::new();
        while got.len() < whole.len() {
            // A writable part of 16 + piece bytes: the read result header and `piece` bytes.
            let r = run(
                &mut client,
                &cmd(opcode::DEV_CTX_READ, 1, &[]),
                8 + piece as u32,
            );
            assert!(r.is_ok());
            let remaining = u32::from_le_bytes(r.result[0..4].try_into().unwrap()) as usize;
            let size = u32::from_le_bytes(r.result[4..8].try_into().unwrap()) as usize;
            assert_eq!(size, piece.min(whole.len() - got.len()));
            got.extend_from_slice(&r.result[8..8 + size]);
            assert_eq!(remaining, whole.len() - got.len());
        }
        assert_eq!(got, whole, "pieces of {piece}");
    }
    // And in one response.
    client.dev_ctx_discard(1).unwrap();
    let one = client.dev_ctx_read(1, 4096).unwrap();
    assert_eq!((one.remaining, one.data), (0, whole));
}

/// Seed 004: "When VIRTIO_ADMIN_CMD_DEV_CTX_READ command is received multiple times in a given
/// mode, and when the complete device context is already read by the driver, on subsequent
/// reception of command VIRTIO_ADMIN_CMD_DEV_CTX_READ, the device MUST complete the command
/// successfully with size and remaining_ctx_size set to zero."
#[test]
fn fully_read_context_reads_empty() {
    let (_owner, mut client, _guests, _) = setup();
    for _ in 0..3 {
        let chunk = client.dev_ctx_read(1, 64).unwrap();
        assert_eq!((chunk.remaining, chunk.data.len()), (0, 0));
    }
    assert_eq!(client.dev_ctx_size_get(1).unwrap(), 0);
}

/// Seed 004: "if the device context is read partially using VIRTIO_ADMIN_CMD_DEV_CTX_READ
/// command, the device MUST discard the device context when VIRTIO_ADMIN_CMD_DEV_CTX_DISCARD
/// command is executed; In subsequent execution of VIRTIO_ADMIN_CMD_DEV_CTX_READ and
/// VIRTIO_ADMIN_CMD_DEV_CTX_SIZE_GET, the device MUST return the remaining estimated device
/// context size and the device context respectively for the current mode as if
/// VIRTIO_ADMIN_CMD_DEV_CTX_READ was never received by the device for the current device mode."
#[test]
fn discard_after_partial_read_restarts_reading() {
    let (_owner, mut client, _guests, whole) = setup();
    read_first_16(&mut client, 1, &whole);
    assert_eq!(
        client.dev_ctx_size_get(1).unwrap() as usize,
        whole.len() - 16
    );
    client.dev_ctx_discard(1).unwrap();
    assert_eq!(client.dev_ctx_size_get(1).unwrap() as usize, whole.len());
    assert_eq!(client.dev_ctx_read_all(1, 24).unwrap(), whole);
}

/// Seed 004: DEV_CTX_SIZE_GET returns "the remaining estimated device context size ... for the
/// current mode": the bytes left of the read in progress, and after a mode change the size of
/// the context of the new mode, whose reading starts over.
#[test]
fn size_get_answers_for_the_current_mode() {
    let (_owner, mut client, _guests, _) = setup();
    let active = client.dev_ctx_size_get(2).unwrap();
    let part = client.dev_ctx_read(2, 8).unwrap();
    assert_eq!(part.remaining, active - 8);
    assert_eq!(client.dev_ctx_size_get(2).unwrap(), active - 8);
    client.dev_mode_set(2, DevMode::Stop).unwrap();
    let stop = client.dev_ctx_size_get(2).unwrap();
    let all = client.dev_ctx_read_all(2, 64).unwrap();
    assert_eq!(all.len(), stop as usize);
    assert_eq!(fields(&all)[0].0, FieldType::START_MARKER);
}

/// Seed 004: "The device MUST set VIRTIO_DEV_CTX_START_MARKER, VIRTIO_DEV_CTX_END_MARKER and
/// VIRTIO_DEV_CTX_DISCARD in VIRTIO_ADMIN_CMD_DEV_CTX_FIELDS_QUERY command result" — and every
/// field type the member's context carries, with the lengths it requires.
#[test]
fn fields_query_lists_markers_and_every_field() {
    let (_owner, mut client, _guests, whole) = setup();
    let list = client.dev_ctx_fields_query(1).unwrap();
    let types: Vec<FieldType> = list.iter().map(|i| i.field_type()).collect();
    for ty in [
        FieldType::START_MARKER,
        FieldType::END_MARKER,
        FieldType::DISCARD,
    ] {
        assert!(types.contains(&ty), "{ty:?}");
    }
    for (ty, _, _) in fields(&whole) {
        assert!(types.contains(&ty), "{ty:?} read but not listed");
    }
    let vq_state = list
        .iter()
        .find(|i| i.field_type() == FieldType::VQ_STATE)
        .unwrap();
    assert_eq!(vq_state.length.get(), 8);
}

/// Seed 004: "The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command when the device mode
/// is not Freeze." (EBUSY, nothing written.)
#[test]
fn write_fails_unless_freeze() {
    let (_owner, mut client, _guests, whole) = setup();
    for mode in [DevMode::Active, DevMode::Stop] {
        client.dev_mode_set(3, mode).unwrap();
        let before = read_back(&mut client, 3);
        let err = client.dev_ctx_write(3, &whole).unwrap_err();
        assert_eq!(err.status(), Some(status::EBUSY), "{mode:?}");
        assert_eq!(read_back(&mut client, 3), before);
    }
}

/// Seed 004: "The device MUST support writing the complete device context multiple times by
/// the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE" — each complete context replaces the previous
/// one; the context read back is the one written last.
#[test]
fn complete_context_can_be_written_many_times() {
    let (_owner, mut client, _guests, ctx1) = setup();
    client.dev_mode_set(2, DevMode::Stop).unwrap();
    let ctx2 = client.dev_ctx_read_all(2, 64).unwrap();
    assert_ne!(ctx1, ctx2);
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    for (ctx, chunk) in [(&ctx1, 7), (&ctx2, 64), (&ctx1, 1000)] {
        client.dev_ctx_write_all(3, ctx, chunk).unwrap();
        assert_eq!(&read_back(&mut client, 3), ctx);
    }
}

/// Seed 004: "When the device receives multiple device context struct virtio_dev_ctx in
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command data, the device MUST apply all the device context
/// struct virtio_dev_ctx fields in the order these fields are received" and "When the device
/// receives same field type multiple times ... MUST apply the device context fields in the
/// order these fields are received by the device."
#[test]
fn contexts_and_repeated_fields_apply_in_order() {
    let (_owner, mut client, _guests, ctx1) = setup();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    let model = decode(&ctx1).unwrap();
    let gen7 = with(&model, |c| c.config_generation = 7);
    let gen9 = with(&model, |c| c.config_generation = 9);
    // Two contexts in one command: the second is applied last.
    let mut both = gen7.clone();
    both.extend_from_slice(&gen9);
    client.dev_ctx_write(3, &both).unwrap();
    assert_eq!(generation(&mut client, 3), 9);
    // CONFIG_GENERATION twice in one context: the later value wins.
    let mut list = Vec::new();
    for f in fields(&gen9) {
        let again = f.0 == FieldType::CONFIG_GENERATION;
        list.push(f);
        if again {
            list.push((FieldType::CONFIG_GENERATION, 0, vec![5]));
        }
    }
    client.dev_ctx_write(3, &build(&list)).unwrap();
    assert_eq!(generation(&mut client, 3), 5);
}

/// Seed 004: "When the device receives multiple device context struct virtio_dev_ctx in
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command data, the device MUST apply all the device context
/// struct virtio_dev_ctx fields in the order these fields are received by the device." Observed
/// at each application, not only in the end state: the member's device logs every state
/// restored into it, so three contexts in one write (values out of numeric order) must show up
/// as three applications in the order written; a context a DISCARD field dropped is never
/// applied, and one invalid context makes the command apply none of them.
#[test]
fn each_context_of_one_write_is_applied_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let owner = owner(1, Kind::StateLog(log.clone()));
    let mut client = client(&owner);
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let model = decode(&client.dev_ctx_read_all(1, 256).unwrap()).unwrap();
    let ctx = |n: u8| {
        with(&model, |c| {
            c.config_generation = n;
            c.device_fields[0].value = vec![n];
        })
    };
    assert_eq!(model.device_fields[0].field_type, LOG_FIELD);
    let write = |client: &mut AdminClient<Mem>, data: &[u8]| {
        log.lock().unwrap().clear();
        client.dev_ctx_write(1, data).unwrap();
        std::mem::take(&mut *log.lock().unwrap())
    };
    let three = [ctx(7), ctx(9), ctx(5)].concat();
    assert_eq!(write(&mut client, &three), [7, 9, 5]);
    assert_eq!(generation(&mut client, 1), 5);
    let reversed = [ctx(5), ctx(9), ctx(7)].concat();
    assert_eq!(write(&mut client, &reversed), [5, 9, 7]);
    assert_eq!(generation(&mut client, 1), 7);
    // A context, then one that a DISCARD field drops before its END_MARKER, then its
    // replacement: 3 and 4 are applied, 8 never.
    let eight = ctx(8);
    let mut data = ctx(3);
    data.extend_from_slice(&eight[..eight.len() - 8]);
    data.extend_from_slice(&build(&[(FieldType::DISCARD, 0, Vec::new())]));
    data.extend_from_slice(&ctx(4)[8..]);
    assert_eq!(write(&mut client, &data), [3, 4]);
    assert_eq!(generation(&mut client, 1), 4);
    // An invalid context between two valid ones: nothing is applied.
    let bad = with(&model, |c| c.device_features[0] ^= 1 << 3);
    let data = [ctx(1), bad, ctx(2)].concat();
    assert_einval(&mut client, 1, &data, "invalid middle context");
    assert!(log.lock().unwrap().is_empty());
    assert_eq!(generation(&mut client, 1), 4);
}

/// Seed 004 / spec-decisions §5: a DISCARD field makes "the receiver drop every field received
/// since the last START_MARKER of this write sequence, then continue (lets a source resend a
/// newer context after pre-copy)" — even when the dropped part came in an earlier command.
#[test]
fn discard_field_drops_what_came_before() {
    let (_owner, mut client, _guests, ctx1) = setup();
    let model = decode(&ctx1).unwrap();
    let old = with(&model, |c| c.config_generation = 1);
    let new = with(&model, |c| c.config_generation = 2);
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    // START + the old context's fields (no END), in one command.
    client.dev_ctx_write(3, &old[..old.len() - 8]).unwrap();
    // DISCARD + the new context's fields after its START, END included.
    let mut rest = build(&[(FieldType::DISCARD, 0, Vec::new())]);
    rest.extend_from_slice(&new[8..]);
    client.dev_ctx_write(3, &rest).unwrap();
    assert_eq!(read_back(&mut client, 3), new);
}

/// Seed 004: "The device MUST respond with an error for the command
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if there is a mismatch between the device context field
/// length supplied in the VIRTIO_ADMIN_CMD_DEV_CTX_WRITE data and the length of the field in
/// the device." The failing command changes nothing: what was written before it still
/// continues correctly.
#[test]
fn field_length_mismatch_fails_the_write() {
    let (owner, mut client, _guests, ctx1) = setup();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    // Looked at from the host side: a DEV_CTX_DISCARD would drop the partial write.
    let member = owner.member(3).unwrap();
    let state = || member.core().lock().unwrap().snapshot_context().unwrap();
    let before = state();
    let list = fields(&ctx1);
    let start = build(&list[..1]);
    client.dev_ctx_write(3, &start).unwrap();
    for (ty, length) in [
        (FieldType::DEVICE_STATUS, 2u32),
        (FieldType::CONFIG_GENERATION, 0),
        (FieldType::PCI_COMMON_CFG, 16),
        (FieldType::VQ_STATE, 4),
        (FieldType::VQ_CONFIG, 24),
        (FieldType::END_MARKER, 8),
        (FieldType::DEVICE_FEATURES, 4),
    ] {
        let bad = raw_field(ty, length, &vec![0; length as usize]);
        assert_einval(&mut client, 3, &bad, &format!("{ty:?} length {length}"));
    }
    assert_eq!(state(), before);
    client.dev_ctx_write(3, &build(&list[1..])).unwrap();
    assert_eq!(read_back(&mut client, 3), ctx1);
}

/// Seed 004: "When the device is in Freeze mode, and if any device context is written
/// partially by VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, the device MUST discard the device context when
/// VIRTIO_ADMIN_CMD_DEV_CTX_DISCARD command is executed, i.e. the device functions as if the
/// command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE was never received."
#[test]
fn discard_command_after_partial_write() {
    let (_owner, mut client, _guests, ctx1) = setup();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    let before = read_back(&mut client, 3);
    client.dev_ctx_write(3, &ctx1[..ctx1.len() / 2]).unwrap();
    client.dev_ctx_discard(3).unwrap();
    assert_eq!(read_back(&mut client, 3), before);
    client.dev_mode_set(3, DevMode::Stop).unwrap();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    // A new context starts from scratch (the old half is gone).
    client.dev_ctx_write_all(3, &ctx1, 16).unwrap();
    assert_eq!(read_back(&mut client, 3), ctx1);
}

/// Seed 004: "The device MUST fail VIRTIO_ADMIN_CMD_DEV_MODE_SET command when mode is set to
/// Active or Stop and if the device context is partially written using
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE commands" (EBUSY, the mode stays Freeze; Freeze itself is
/// accepted), and "if the command fails, the device MUST retain the current device mode".
#[test]
fn mode_set_fails_while_partially_written() {
    let (_owner, mut client, _guests, ctx1) = setup();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    client.dev_ctx_write(3, &ctx1[..8]).unwrap();
    for mode in [DevMode::Active, DevMode::Stop] {
        // Sent raw: the client itself refuses this (admin_driver tests); the device must too.
        let r = run(
            &mut client,
            &cmd(opcode::DEV_MODE_SET, 3, &mode_data(mode)),
            0,
        );
        assert_eq!(
            (r.status, r.qualifier),
            (status::EBUSY, qualifier::Q_INVALID_COMMAND),
            "{mode:?}"
        );
        assert_eq!(client.dev_mode_get(3).unwrap(), DevMode::Freeze);
    }
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    client.dev_ctx_write(3, &ctx1[8..]).unwrap();
    client.dev_mode_set(3, DevMode::Active).unwrap();
}

/// Seed 004 / spec-decisions §5: "Every value is validated before any of it is applied (indices <
/// size, addresses inside guest memory with the ring's alignment, features ⊆ offered, lengths
/// exact); a context that fails validation changes nothing and the command fails with EINVAL /
/// Q_INVALID_FIELD" — bad input of every kind, each refused without effect (not even a partial
/// write: DEV_MODE_SET to Stop still succeeds afterwards).
#[test]
fn bad_contexts_are_refused_and_change_nothing() {
    let (owner, mut client, _guests, ctx1) = setup();
    let model = decode(&ctx1).unwrap();
    let list = fields(&ctx1);
    let no_end = &ctx1[..ctx1.len() - 8];
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ring outside guest memory",
            with(&model, |c| c.queues[0].config.desc = 0x1_0000_0000),
        ),
        (
            "misaligned ring",
            with(&model, |c| c.queues[0].config.driver += 1),
        ),
        (
            "queue size above the maximum",
            with(&model, |c| c.queues[0].config.size = 64),
        ),
        (
            "split queue with a used state",
            with(&model, |c| c.queues[0].state.used_state = 3),
        ),
        (
            "features not offered",
            with(&model, |c| c.driver_features[0] |= 1 << 63),
        ),
        (
            "device features differ",
            with(&model, |c| c.device_features[0] ^= 1),
        ),
        (
            "unreachable status",
            with(&model, |c| c.device_status = 0x04),
        ),
        (
            "MSI-X vector the member lacks",
            with(&model, |c| c.config_msix_vector = 9),
        ),
        (
            "two queues for a one-queue device",
            with(&model, |c| c.queues.push(c.queues[0].clone())),
        ),
    ];
    // Out-of-range queue index: VQ_STATE for queue 5 with num_queues 1.
    let mut out_of_range = list.clone();
    for f in out_of_range
        .iter_mut()
        .filter(|f| f.0 == FieldType::VQ_STATE)
    {
        f.2[0] = 5;
    }
    cases.push(("queue index out of range", build(&out_of_range)));
    // Wrong order: a device field after the queue fields.
    let mut reordered = list.clone();
    let status_field = reordered
        .iter()
        .position(|f| f.0 == FieldType::DEVICE_STATUS)
        .unwrap();
    let moved = reordered.remove(status_field);
    reordered.insert(reordered.len() - 1, moved);
    cases.push(("device field after queue fields", build(&reordered)));
    // Duplicate START_MARKER, END without START, a field before START, unknown mandatory type.
    let mut dup = ctx1[..8].to_vec();
    dup.extend_from_slice(&ctx1);
    cases.push(("duplicate START_MARKER", dup));
    cases.push(("END_MARKER without START", ctx1[ctx1.len() - 8..].to_vec()));
    cases.push(("field before START_MARKER", ctx1[8..].to_vec()));
    let mut unknown = no_end.to_vec();
    unknown.extend_from_slice(&raw_field(FieldType(0x0777), 4, &[1, 2, 3, 4]));
    unknown.extend_from_slice(&ctx1[ctx1.len() - 8..]);
    cases.push(("unknown mandatory field", unknown));
    let mut missing = build(
        &list[..list.len() - 1]
            .iter()
            .filter(|f| f.0 != FieldType::VQ_STATE)
            .cloned()
            .collect::<Vec<_>>(),
    );
    missing.extend_from_slice(&ctx1[ctx1.len() - 8..]);
    cases.push(("VQ_STATE missing", missing));
    // A header claiming a value longer than the format allows.
    let mut huge = ctx1[..8].to_vec();
    huge.extend_from_slice(&raw_field(FieldType::DEVICE_CONFIG, 1 << 30, &[]));
    cases.push(("length above the limit", huge));

    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    let before = read_back(&mut client, 3);
    for (what, bytes) in &cases {
        assert_einval(&mut client, 3, bytes, what);
        assert_eq!(read_back(&mut client, 3), before, "{what}");
        client.dev_mode_set(3, DevMode::Stop).unwrap();
        client.dev_mode_set(3, DevMode::Freeze).unwrap();
    }
    // Too much data for the device's buffer: ENOMEM, no side effect.
    let written = owner.execute_direct(&cmd(opcode::DEV_CTX_WRITE, 3, &vec![0; 5 << 20]), 8);
    let r = virtio_lm_pci::admin::AdminResult::decode(&written);
    assert_eq!(
        (r.status, r.qualifier),
        (status::ENOMEM, qualifier::Q_NORESOURCE)
    );
    // The good context is still accepted.
    client.dev_ctx_write(3, &ctx1).unwrap();
    assert_eq!(read_back(&mut client, 3), ctx1);
}
