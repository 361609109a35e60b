//! Admin command rules of the owner (seed 004 context streams across a member reset), each
//! pinned so that breaking it fails a test (found by `scripts/mutants`: these mutants survived
//! the admin tests).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use virtio_lm_device::testing::context::{AdoptingDevice, ADOPTING_CONFIG_LEN};
use virtio_lm_device::testing::{ConfigDevice, CountingDevice};
use virtio_lm_device::VirtioDevice;
use virtio_lm_pci::admin::{AdminResult, OwnerOptions, MAX_COMMAND_DATA};
use virtio_lm_pci::testing::admin::*;
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::{opcode, qualifier, status, DevMode};
use virtio_lm_spec::context::FieldType;
use vm_memory::{Bytes, GuestAddress};

/// Owner with two counting members; member 1 used by a guest and stopped. Returns member 1's
/// context.
fn setup() -> (
    virtio_lm_pci::admin::OwnerFunction<Mem>,
    virtio_lm_pci::admin::AdminClient<Mem>,
    Guest,
    Vec<u8>,
) {
    stopped_member(2)
}

/// spec-decisions §4: "A member reset discards a partial context in the device": after an FLR,
/// DEV_MODE_SET to Active succeeds although half a context had been written before it.
#[test]
fn a_member_reset_drops_a_partial_write() {
    let (owner, mut client, _guest, ctx) = setup();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    client.dev_ctx_write(2, &ctx[..ctx.len() / 2]).unwrap();
    owner.member(2).unwrap().function_level_reset();
    // Sent raw: the client still believes the context is partly written.
    let r = run(
        &mut client,
        &cmd(opcode::DEV_MODE_SET, 2, &mode_data(DevMode::Active)),
        0,
    );
    assert_eq!(r.status, status::OK);
}

/// spec-decisions §4 ("Writing a context. Data accumulates"): after a member reset, a context
/// written in two commands is still put together and applied.
#[test]
fn a_context_written_in_two_commands_after_a_reset_applies() {
    let (owner, mut client, _guest, ctx) = setup();
    owner.member(2).unwrap().function_level_reset();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    let half = ctx.len() / 2;
    client.dev_ctx_write(2, &ctx[..half]).unwrap();
    client.dev_ctx_write(2, &ctx[half..]).unwrap();
    client.dev_mode_set(2, DevMode::Stop).unwrap();
    client.dev_ctx_discard(2).unwrap();
    assert_eq!(client.dev_ctx_read_all(2, 64).unwrap(), ctx);
}

/// spec-decisions §4: "a mode change, DISCARD, reset or applied WRITE starts a new stream": a
/// read begun before a member reset starts over after it (SIZE_GET reports a whole context).
#[test]
fn a_member_reset_restarts_a_partial_read() {
    let (owner, mut client, _guest, ctx) = setup();
    read_first_16(&mut client, 1, &ctx);
    owner.member(1).unwrap().function_level_reset();
    let after_reset = client.dev_ctx_size_get(1).unwrap();
    client.dev_ctx_discard(1).unwrap();
    assert_eq!(after_reset, client.dev_ctx_size_get(1).unwrap());
}

/// Seed 004: after a mode change DEV_CTX_READ reads "the device context respectively for the
/// current mode as if VIRTIO_ADMIN_CMD_DEV_CTX_READ was never received by the device for the
/// current device mode": a read begun in Freeze starts over after Freeze → Active → Freeze,
/// though the mode is Freeze again.
#[test]
fn a_read_starts_over_after_leaving_the_mode_and_coming_back() {
    let (_owner, mut client, _guest, _) = setup();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    client.dev_ctx_discard(1).unwrap();
    let whole = client.dev_ctx_size_get(1).unwrap();
    client.dev_ctx_read(1, 16).unwrap();
    assert_eq!(client.dev_ctx_size_get(1).unwrap(), whole - 16);
    // Sent raw, so nothing but the device itself decides where the read stands.
    for mode in [DevMode::Active, DevMode::Freeze] {
        let r = run(
            &mut client,
            &cmd(opcode::DEV_MODE_SET, 1, &mode_data(mode)),
            0,
        );
        assert_eq!(r.status, status::OK, "{mode:?}");
    }
    assert_eq!(client.dev_ctx_size_get(1).unwrap(), whole);
}

/// spec-decisions §4 / §5: every MSI-X vector in a written context must be one the member has
/// (or NO_VECTOR); members have two, so vector 1 is taken and vector 2 refused (EINVAL).
#[test]
fn written_msix_vectors_must_exist_in_the_member() {
    let (_owner, mut client, _guest, ctx) = setup();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    let decoded = virtio_lm_device::context::decode(&ctx).unwrap();
    for (vector, expect) in [(1, status::OK), (2, status::EINVAL)] {
        let mut edited = decoded.clone();
        edited.config_msix_vector = vector;
        let data = virtio_lm_device::context::encode(&edited).unwrap();
        let r = run(&mut client, &cmd(opcode::DEV_CTX_WRITE, 2, &data), 0);
        assert_eq!(r.status, expect, "vector {vector}");
    }
}

/// spec-decisions §4: DEV_CTX_WRITE data beyond the device's 4 MiB buffer fails with ENOMEM /
/// Q_NORESOURCE (no side effect) — and data of exactly 4 MiB, alone or added to what earlier
/// commands left pending, is not refused for its size (here the framing refuses it instead).
#[test]
fn context_data_of_exactly_4_mib_is_not_refused_for_its_size() {
    let (owner, mut client, _guest, _) = setup();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let write = |data: &[u8]| {
        let written = owner.execute_direct(&cmd(opcode::DEV_CTX_WRITE, 1, data), 8);
        let r = AdminResult::decode(&written);
        (r.status, r.qualifier)
    };
    let invalid = (status::EINVAL, qualifier::Q_INVALID_FIELD);
    let no_room = (status::ENOMEM, qualifier::Q_NORESOURCE);
    // Zeros are START_MARKERs: the second one is refused, for its framing.
    assert_eq!(write(&vec![0; MAX_COMMAND_DATA]), invalid);
    assert_eq!(write(&vec![0; MAX_COMMAND_DATA + 1]), no_room);
    let start = raw_field(FieldType::START_MARKER, 0, &[]);
    assert_eq!(write(&start), (status::OK, qualifier::Q_OK));
    assert_eq!(write(&vec![0; MAX_COMMAND_DATA - start.len()]), invalid);
    assert_eq!(write(&vec![0; MAX_COMMAND_DATA - start.len() + 1]), no_room);
}

/// Seed 004: "the device MUST respond with an error … if there is a mismatch between the device
/// context field length … and the length of the field in the device", and a second START_MARKER
/// before the END_MARKER breaks the framing: the DEV_CTX_WRITE that carries the field fails,
/// not the later one that would complete the context.
#[test]
fn a_bad_field_fails_the_write_that_carries_it() {
    let (_owner, mut client, _guest, _) = setup();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let start = raw_field(FieldType::START_MARKER, 0, &[]);
    for (what, field) in [
        (
            "DEVICE_FEATURES of 0 bytes",
            raw_field(FieldType::DEVICE_FEATURES, 0, &[]),
        ),
        // The header alone: its length is refused before the value arrives.
        (
            "DEVICE_CONFIG of 4097 bytes",
            raw_field(FieldType::DEVICE_CONFIG, 4097, &[]),
        ),
        ("a second START_MARKER", start.clone()),
    ] {
        assert_einval(&mut client, 1, &[start.as_slice(), &field].concat(), what);
    }
}

/// Seed 004: the driver "MUST set field[0] ... of type START_MARKER": a DEV_CTX_WRITE whose
/// first field is another type (here with a value) fails at once.
#[test]
fn a_write_not_starting_with_start_marker_fails() {
    let (owner, mut client, _guest, _) = setup();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let data = raw_field(FieldType::DEVICE_FEATURES, 16, &[0xff; 16]);
    let r = AdminResult::decode(&owner.execute_direct(&cmd(opcode::DEV_CTX_WRITE, 1, &data), 8));
    assert_eq!(
        (r.status, r.qualifier),
        (status::EINVAL, qualifier::Q_INVALID_FIELD)
    );
}

/// Seed 004: DEV_CTX_FIELDS_QUERY lists the field types the device supports — the
/// device-specific type the member's device saves included, once.
#[test]
fn fields_query_lists_the_device_types_own_field_once() {
    let owner = owner(1, Kind::StateLog(Arc::new(Mutex::new(Vec::new()))));
    let mut client = client(&owner);
    let list = client.dev_ctx_fields_query(1).unwrap();
    let listed = list.iter().filter(|i| i.field_type() == LOG_FIELD).count();
    assert_eq!(listed, 1, "{list:?}");
}

/// virtio 1.4 "Administration Facilities": a command is one buffer, its device-readable part
/// then its device-writable part, however the driver splits them into descriptors. The device
/// reads at most the header and 4 MiB of data plus one byte, to notice more (spec-decisions §4:
/// ENOMEM): a DEV_CTX_WRITE with its header and 4 MiB + 2 of data in two descriptors is refused
/// for its size, not for the framing of its data (EINVAL), and the device reads no further. A LIST_QUERY answered into an
/// 8-byte status descriptor and a longer one gets the status in the first and its 8-byte bitmap
/// in the second (used length 16).
#[test]
fn a_command_split_over_descriptors_is_read_and_answered_whole() {
    const BUFFERS: u64 = 0x10000;
    let data_len = MAX_COMMAND_DATA + 2;
    let mem = virtio_lm_pci::testing::memory_of(BUFFERS as usize + data_len + 0x1000);
    let counting = Box::new(CountingDevice::new(0, 8));
    let owner = owner_of(
        counting,
        mem.clone(),
        1,
        Kind::Counting,
        OwnerOptions::default(),
    );
    let mut client = client(&owner);
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let queue = client.admin_queue_index();
    let (status_at, result_at) = (BUFFERS - 0x100, BUFFERS - 0x80);
    let mut exchange = |readable: &[(&[u8], u64)], writable: &[(u64, u32)]| {
        let mut buffers = Vec::new();
        for &(bytes, at) in readable {
            mem.write_slice(bytes, GuestAddress(at)).unwrap();
            buffers.push(BufferSpec::readable(at, bytes.len() as u32));
        }
        for &(at, len) in writable {
            mem.write_slice(&vec![0xee; len as usize], GuestAddress(at))
                .unwrap();
            buffers.push(BufferSpec::writable(at, len));
        }
        let driver = client.driver_mut();
        let id = driver.submit(queue, &buffers).unwrap();
        let mut used = Vec::new();
        // A deadline that only a hang reaches: the device answers when notified.
        let deadline = std::time::Duration::from_secs(60);
        assert!(virtio_lm_pci::testing::wait_until(deadline, || {
            used.extend(driver.collect_used(queue).unwrap());
            !used.is_empty()
        }));
        assert_eq!(used[0].id, id);
        let mut status_header = [0u8; 8];
        mem.read_slice(&mut status_header, GuestAddress(status_at))
            .unwrap();
        (used[0].len, AdminResult::decode(&status_header))
    };

    let header = &cmd(opcode::DEV_CTX_WRITE, 1, &[])[..24];
    let data = vec![0; data_len];
    let (len, r) = exchange(
        &[(header, BUFFERS), (&data, BUFFERS + 0x100)],
        &[(status_at, 8)],
    );
    assert_eq!(
        (len, r.status, r.qualifier),
        (8, status::ENOMEM, qualifier::Q_NORESOURCE)
    );

    let list_query = cmd(opcode::LIST_QUERY, 0, &[]);
    let (len, r) = exchange(
        &[(&list_query, BUFFERS)],
        &[(status_at, 8), (result_at, 64)],
    );
    assert_eq!((len, r.status), (16, status::OK));
    let mut bitmap = [0u8; 8];
    mem.read_slice(&mut bitmap, GuestAddress(result_at))
        .unwrap();
    assert_eq!(u64::from_le_bytes(bitmap), all_opcodes());
}

/// The owner function is a device of its own type besides the group owner (virtio 1.4
/// "Administration Facilities": the admin queues are the owner's additional queues): its device
/// type, device-type features, activation, configuration space and device-type state are its
/// device's, around the admin queues the owner adds.
#[test]
fn the_owner_is_its_own_device_type_around_the_admin_queues() {
    let owner_around = |device: Box<dyn VirtioDevice<Mem>>| {
        owner_of(device, memory(), 1, Kind::Counting, OwnerOptions::default())
    };
    let counting = CountingDevice::new(0, 8).offering(1 << 3);
    let activations = counting.activations.clone();
    let activated = owner_around(Box::new(counting));
    let _client = client(&activated);
    assert_eq!(
        activations.lock().unwrap().len(),
        1,
        "activated at DRIVER_OK"
    );
    let core = activated.function().core().lock().unwrap();
    assert_eq!(core.device_features() & 0xff_ffff, 1 << 3);
    drop(core);

    let configured = owner_around(Box::new(ConfigDevice::new()));
    let mut core = configured.function().core().lock().unwrap();
    core.write_config(2, &[0xa5]);
    let mut config = [0u8; 8];
    core.read_config(0, &mut config);
    assert_eq!(config, [0, 1, 0xa5, 3, 4, 5, 6, 7]);
    drop(core);

    let adopting = AdoptingDevice::new(true);
    let mode = adopting.mode.clone();
    mode.store(2, Ordering::SeqCst);
    let stateful = owner_around(Box::new(adopting));
    let mut core = stateful.function().core().lock().unwrap();
    assert_eq!(core.device_type(), AdoptingDevice::DEVICE_TYPE);
    let mut ctx = core.snapshot_context().unwrap();
    assert_eq!(ctx.device_config, [0, 1, 2, 3][..ADOPTING_CONFIG_LEN]);
    assert_eq!(ctx.device_fields.len(), 1, "the mode saved");
    ctx.device_fields[0].value = vec![3];
    core.set_admin_mode(DevMode::Stop).unwrap();
    core.set_admin_mode(DevMode::Freeze).unwrap();
    core.restore_context(&ctx).unwrap();
    assert_eq!(mode.load(Ordering::SeqCst), 3, "the mode restored");
}
