//! Seed 004, the admin command framework it builds on (as merged; spec-decisions §6, reference
//! virtio 1.4 "Administration Facilities"): admin queue discovery, validation order and qualifiers, EINVAL without side
//! effects, buffer lengths, in-order completion, LIST_QUERY / LIST_USE, and the driver side
//! (`AdminClient`): retries, timeouts and errors that name command, member and status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_device::QuiesceMode;
use virtio_lm_pci::admin::{
    AdminClient, AdminClientConfig, AdminCommand, AdminError, AdminResult, OwnerFunction,
    OwnerOptions, Ticket,
};
use virtio_lm_pci::testing::admin::*;
use virtio_lm_pci::PciTransport;
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::{group_type, opcode, qualifier, status, DevMode};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress};

fn read16(owner: &virtio_lm_pci::admin::OwnerFunction<Mem>, field: usize) -> u16 {
    let mut b = [0u8; 2];
    owner.function().read(field as u64, &mut b);
    u16::from_le_bytes(b)
}

/// An owner with two admin queues over one member holding `outstanding` guest requests until
/// the returned flag is set, and a client (two admin queues, `edit` applied to its
/// configuration) that has submitted DEV_MODE_SET to `mode` on admin queue 0: the command is
/// still pending, waiting for the member's requests to drain.
fn mode_set_pending(
    outstanding: usize,
    mode: DevMode,
    edit: impl FnOnce(&mut AdminClientConfig),
) -> (
    Arc<AtomicBool>,
    OwnerFunction<Mem>,
    AdminClient<Mem>,
    Guest,
    Ticket,
) {
    let release = Arc::new(AtomicBool::new(false));
    let options = OwnerOptions {
        admin_queue_num: 2,
        ..OwnerOptions::default()
    };
    let owner = owner_with(1, Kind::Delay(release.clone(), QuiesceMode::Drain), options);
    let mut config = client_config();
    config.admin_queues = 2;
    edit(&mut config);
    let mut client = client_with(&owner, config);
    client.use_migration_commands().unwrap();
    let mut guest = Guest::new(owner.member(1).unwrap());
    guest.submit(outstanding);
    let pending = client
        .submit_raw(0, &cmd(opcode::DEV_MODE_SET, 1, &mode_data(mode)), 8)
        .unwrap();
    (release, owner, client, guest, pending)
}

/// Every member's mode, status and context, as the host sees them: what an EINVAL must not
/// change.
fn state(
    owner: &virtio_lm_pci::admin::OwnerFunction<Mem>,
) -> Vec<(DevMode, DeviceStatus, Vec<u8>)> {
    (1..=owner.sriov().num_vfs)
        .filter_map(|m| owner.member(m))
        .map(|f| {
            let mut core = f.core().lock().unwrap();
            let ctx = core.snapshot_context().unwrap();
            let bytes = virtio_lm_device::context::encode(&ctx).unwrap();
            (core.admin_mode(), core.status(), bytes)
        })
        .collect()
}

fn modes(owner: &virtio_lm_pci::admin::OwnerFunction<Mem>, n: u16) -> Vec<DevMode> {
    (1..=n)
        .map(|m| owner.member(m).unwrap().core().lock().unwrap().admin_mode())
        .collect()
}

/// Seed 004 framework (virtio 1.4 "Administration Facilities"): "admin_queue_index (offset 60) and admin_queue_num (offset
/// 62)"; the admin queues follow from admin_queue_index and "are configured like normal vqs:
/// select, size, addresses, enable"; "num_queues excludes the admin vqs". The owner offers
/// VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV, and the admin queue exists for the driver only once
/// VIRTIO_F_ADMIN_VQ is negotiated.
#[test]
fn admin_queue_is_discovered_at_offsets_60_and_62() {
    let options = OwnerOptions {
        admin_queue_num: 2,
        ..OwnerOptions::default()
    };
    let owner = owner_with(1, Kind::Counting, options);
    let offered = owner.function().core().lock().unwrap().device_features();
    let want = Profile::Seeds
        .feature_set(&[Feature::AdminVq, Feature::SrIov])
        .unwrap();
    assert_eq!(offered & want, want);
    assert_eq!(read16(&owner, offset::NUM_QUEUES), 1, "rng queue only");
    assert_eq!(read16(&owner, offset::ADMIN_QUEUE_INDEX), 1);
    assert_eq!(read16(&owner, offset::ADMIN_QUEUE_NUM), 2);
    // Before negotiation the admin queues do not exist: queue_size reads 0.
    owner
        .function()
        .write(offset::QUEUE_SELECT as u64, &1u16.to_le_bytes());
    assert_eq!(read16(&owner, offset::QUEUE_SIZE), 0);

    let mut config = client_config();
    config.admin_queues = 2;
    let mut client = client_with(&owner, config);
    assert_eq!(client.admin_queue_index(), 1);
    assert_eq!(client.driver().admin_queue_info(), (1, 2));
    owner
        .function()
        .write(offset::QUEUE_SELECT as u64, &2u16.to_le_bytes());
    assert_eq!(read16(&owner, offset::QUEUE_SIZE), 16);
    assert_eq!(read16(&owner, offset::QUEUE_ENABLE), 1);
    // Both admin queues carry commands.
    client.use_migration_commands().unwrap();
    client.use_queue(1);
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
}

/// Seed 004 framework: "Validate group_type, then opcode, then group_member_id. On any failure:
/// status = EINVAL. The qualifier is Q_INVALID_GROUP, Q_INVALID_OPCODE or Q_INVALID_MEMBER, in
/// that order of precedence."
#[test]
fn validation_order_is_group_then_opcode_then_member() {
    let owner = owner(2, Kind::Counting);
    let mut client = client(&owner);
    let _guest = Guest::new(owner.member(1).unwrap());
    let before = state(&owner);
    let cases = [
        // (group type, opcode, member, qualifier)
        (7, 0x7777, 99, qualifier::Q_INVALID_GROUP),
        (
            group_type::SELF,
            opcode::DEV_MODE_GET,
            1,
            qualifier::Q_INVALID_GROUP,
        ),
        (group_type::SRIOV, 0x7777, 99, qualifier::Q_INVALID_OPCODE),
        (group_type::SRIOV, 0x0011, 1, qualifier::Q_INVALID_OPCODE),
        (
            group_type::SRIOV,
            opcode::DEV_MODE_GET,
            0,
            qualifier::Q_INVALID_MEMBER,
        ),
        (
            group_type::SRIOV,
            opcode::DEV_MODE_SET,
            3,
            qualifier::Q_INVALID_MEMBER,
        ),
        (
            group_type::SRIOV,
            opcode::DEV_MODE_GET,
            u64::MAX,
            qualifier::Q_INVALID_MEMBER,
        ),
    ];
    for (group, op, member, q) in cases {
        // Data that would freeze a member if the command ran.
        let data = mode_data(DevMode::Freeze);
        let readable = AdminCommand::new(op, group, member, data).to_bytes();
        let r = run(&mut client, &readable, 8);
        assert_eq!(
            (r.status, r.qualifier),
            (status::EINVAL, q),
            "{group} {op:#x} {member}"
        );
        assert_eq!(state(&owner), before, "EINVAL changed the device");
    }
}

/// Seed 004 framework: "No SR-IOV capability, or VF Enable clear ⇒ fail all commands with
/// EINVAL / Q_INVALID_GROUP" — LIST_QUERY included; the members exist only while VF Enable is
/// set, with ids 1..=NumVFs.
#[test]
fn vf_enable_clear_fails_every_command_with_invalid_group() {
    let owner = owner(2, Kind::Counting);
    let mut client = client(&owner);
    assert!(owner.member(2).is_some() && owner.member(3).is_none());
    let held = owner.member(1).unwrap();
    owner.set_vf_enable(false).unwrap();
    assert!(owner.member(1).is_none());
    for op in [opcode::LIST_QUERY, opcode::LIST_USE, opcode::DEV_MODE_SET] {
        let r = run(&mut client, &cmd(op, 1, &mode_data(DevMode::Stop)), 8);
        assert_eq!(
            (r.status, r.qualifier),
            (status::EINVAL, qualifier::Q_INVALID_GROUP)
        );
    }
    assert_eq!(held.core().lock().unwrap().admin_mode(), DevMode::Active);
    // NumVFs changes only while VF Enable is clear, up to TotalVFs.
    assert!(owner.set_num_vfs(9).is_err());
    owner.set_num_vfs(3).unwrap();
    owner.set_vf_enable(true).unwrap();
    assert!(owner.set_num_vfs(1).is_err());
    assert_eq!(owner.sriov().num_vfs, 3);
    assert_eq!(client.dev_mode_get(3).unwrap(), DevMode::Active);
}

/// Seed 004 framework: "After reset, the used list is {LIST_QUERY, LIST_USE}. Commands not in
/// the used list ⇒ EINVAL with Q_INVALID_OPCODE"; LIST_QUERY reports bits 0 and 1 and the seven
/// migration commands (seed 004: "A device MUST either support all of, or none of" them).
#[test]
fn commands_outside_the_used_list_fail() {
    let owner = owner(1, Kind::Counting);
    let mut client = bare_client(&owner);
    let before = state(&owner);
    let stop = mode_data(DevMode::Stop);
    let r = run(&mut client, &cmd(opcode::DEV_MODE_SET, 1, &stop), 8);
    assert_eq!(state(&owner), before);
    assert_eq!(
        (r.status, r.qualifier),
        (status::EINVAL, qualifier::Q_INVALID_OPCODE)
    );
    let list = client.list_query().unwrap();
    assert_eq!(list, vec![all_opcodes()]);
    // Use only DEV_MODE_GET: DEV_MODE_SET stays refused.
    let some = 1 << opcode::LIST_QUERY | 1 << opcode::LIST_USE | 1 << opcode::DEV_MODE_GET;
    client.list_use(&[some]).unwrap();
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
    let r = run(
        &mut client,
        &cmd(opcode::DEV_MODE_SET, 1, &mode_data(DevMode::Stop)),
        8,
    );
    assert_eq!(
        (r.status, r.qualifier),
        (status::EINVAL, qualifier::Q_INVALID_OPCODE)
    );
    assert_eq!(modes(&owner, 1), [DevMode::Active]);
}

/// Seed 004 framework: LIST_USE "MAY fail ... with EINVAL and Q_INVALID_FIELD" for a list the
/// device does not support (nothing changes); the driver "MAY block use of LIST_QUERY and
/// LIST_USE by issuing LIST_USE with respective bits cleared"; and "after a device or system
/// reset, SHOULD accept the same LIST_USE again".
#[test]
fn list_use_rules() {
    let owner = owner(1, Kind::Counting);
    let mut client = bare_client(&owner);
    // Opcode 0x11 (1.4 DEV_MODE_SET) and a bit in a second word are not supported.
    for list in [vec![all_opcodes() | 1 << 0x11], vec![all_opcodes(), 1]] {
        let err = client.list_use(&list).unwrap_err();
        assert_eq!(err.status(), Some(status::EINVAL));
        assert_eq!(err.qualifier(), Some(qualifier::Q_INVALID_FIELD));
    }
    // Still the initial list.
    let r = run(&mut client, &cmd(opcode::DEV_MODE_GET, 1, &[]), 8);
    assert_eq!(r.qualifier, qualifier::Q_INVALID_OPCODE);
    // Extra all-zero words are allowed.
    client.list_use(&[all_opcodes(), 0, 0]).unwrap();
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
    // Blocking LIST_USE itself.
    client
        .list_use(&[all_opcodes() & !(1 << opcode::LIST_USE)])
        .unwrap();
    let err = client.list_use(&[all_opcodes()]).unwrap_err();
    assert_eq!(err.qualifier(), Some(qualifier::Q_INVALID_OPCODE));
    // An owner reset restores the initial list, and the same LIST_USE is accepted again.
    client.recover().unwrap();
    let r = run(&mut client, &cmd(opcode::DEV_MODE_GET, 1, &[]), 8);
    assert_eq!(r.qualifier, qualifier::Q_INVALID_OPCODE);
    client.use_migration_commands().unwrap();
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
}

/// Seed 004 framework: the driver "MUST NOT issue VIRTIO_ADMIN_CMD_LIST_USE commands if any
/// other command has been submitted to the device and has not yet completed" — the device
/// answers such a LIST_USE EBUSY and keeps its used list.
#[test]
fn list_use_with_a_command_outstanding_fails() {
    let (release, _owner, mut client, _guest, pending) = mode_set_pending(2, DevMode::Stop, |_| {});
    assert!(client.try_complete(&pending).unwrap().is_none());
    client.use_queue(1);
    let err = client.list_use(&[all_opcodes()]).unwrap_err();
    assert_eq!(err.status(), Some(status::EBUSY));
    release.store(true, Ordering::SeqCst);
    let done = client.wait(&pending).unwrap().result();
    assert!(done.is_ok());
    client.list_use(&[all_opcodes()]).unwrap();
}

/// Seed 004 framework: "MUST accept buffers that are shorter or longer than expected: missing
/// readable data counts as 0, excess readable data is ignored, writes are truncated to the
/// buffer, the used length is the number of bytes written, MUST NOT fail a command only because
/// of buffer length."
#[test]
fn short_and_long_buffers() {
    let owner = owner(1, Kind::Counting);
    let mut client = client(&owner);
    // DEV_MODE_SET without data: the mode byte reads as 0 = Active, success.
    let r = raw(&mut client, &cmd(opcode::DEV_MODE_SET, 1, &[]), 8);
    assert_eq!((r.used_len, r.result().status), (8, status::OK));
    // A readable part cut inside the header: group type and member read as 0 → group SELF.
    let short = &cmd(opcode::DEV_MODE_GET, 1, &[])[..2];
    let r = raw(&mut client, short, 8).result();
    assert_eq!(r.qualifier, qualifier::Q_INVALID_GROUP);
    // Excess data after the mode is ignored.
    let mut data = mode_data(DevMode::Stop);
    data.extend_from_slice(&[0xee; 56]);
    assert!(run(&mut client, &cmd(opcode::DEV_MODE_SET, 1, &data), 0).is_ok());
    assert_eq!(modes(&owner, 1), [DevMode::Stop]);
    // A writable part of 4 bytes: status and qualifier only, used length 4.
    let r = raw(&mut client, &cmd(opcode::DEV_MODE_GET, 1, &[]), 4);
    assert_eq!(r.used_len, 4);
    assert_eq!(r.result().status, status::OK);
    // A long writable part: only the 16-byte structure is written.
    let r = raw(&mut client, &cmd(opcode::DEV_MODE_GET, 1, &[]), 256);
    assert_eq!(r.used_len, 16);
    assert_eq!(r.bytes[8], DevMode::Stop as u8);
    assert!(r.bytes[16..].iter().all(|&b| b == 0));
    // Without a writable part the command still runs (used length 0).
    let ticket = client
        .submit_raw(
            0,
            &cmd(opcode::DEV_MODE_SET, 1, &mode_data(DevMode::Active)),
            0,
        )
        .unwrap();
    assert_eq!(client.wait(&ticket).unwrap().used_len, 0);
    assert_eq!(modes(&owner, 1), [DevMode::Active]);
}

/// Seed 004 framework: "MUST process the commands on one admin vq in order" — a DEV_MODE_SET
/// waiting for its member's requests keeps the commands queued after it (for other members too)
/// from completing; they complete afterwards, in order.
#[test]
fn commands_on_one_queue_complete_in_order() {
    let release = Arc::new(AtomicBool::new(false));
    let owner = owner(2, Kind::Delay(release.clone(), QuiesceMode::Drain));
    let mut client = client(&owner);
    let mut guest = Guest::new(owner.member(1).unwrap());
    guest.submit(3);
    let index = client.admin_queue_index();
    let mem = owner.function().core().lock().unwrap().mem().clone();
    let commands = [
        cmd(opcode::DEV_MODE_SET, 1, &mode_data(DevMode::Stop)),
        cmd(opcode::DEV_MODE_GET, 2, &[]),
        cmd(opcode::DEV_MODE_SET, 2, &mode_data(DevMode::Freeze)),
        cmd(opcode::DEV_MODE_GET, 1, &[]),
    ];
    let driver = client.driver_mut();
    let mut ids = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let at = 0xc000 + i as u64 * 0x100;
        mem.write_slice(c, GuestAddress(at)).unwrap();
        let buffers = [
            BufferSpec::readable(at, c.len() as u32),
            BufferSpec::writable(at + 0x80, 16),
        ];
        ids.push((driver.add_buffer(index, &buffers).unwrap(), at + 0x80));
    }
    driver.publish(index).unwrap();
    driver.notify(index).unwrap();
    for _ in 0..5 {
        owner.poll();
        assert!(driver.collect_used(index).unwrap().is_empty());
    }
    // Member 2 was not touched while the first command waited.
    assert_eq!(modes(&owner, 2), [DevMode::Active, DevMode::Active]);
    release.store(true, Ordering::SeqCst);
    owner.poll();
    let used = driver.collect_used(index).unwrap();
    let order: Vec<u16> = used.iter().map(|u| u.id).collect();
    assert_eq!(order, ids.iter().map(|&(id, _)| id).collect::<Vec<_>>());
    let results: Vec<AdminResult> = ids
        .iter()
        .map(|&(_, at)| {
            let mut b = [0u8; 16];
            mem.read_slice(&mut b, GuestAddress(at)).unwrap();
            AdminResult::decode(&b)
        })
        .collect();
    assert!(results.iter().all(AdminResult::is_ok));
    assert_eq!(
        results[1].result[0],
        DevMode::Active as u8,
        "before the Freeze"
    );
    assert_eq!(results[3].result[0], DevMode::Stop as u8, "after the Stop");
    assert_eq!(modes(&owner, 2), [DevMode::Stop, DevMode::Freeze]);
    guest.drain();
}

/// Seed 004 framework: "EAGAIN or ENOMEM ⇒ MUST have no side effects, so the command is safe to
/// retry" and the driver "SHOULD retry on EAGAIN": a command for a member whose mode change is
/// still pending on another admin queue is answered EAGAIN; the client retries a bounded number
/// of times and then reports the command, member and status.
#[test]
fn eagain_is_retried_a_bounded_number_of_times() {
    let (release, _owner, mut client, _guest, pending) =
        mode_set_pending(1, DevMode::Freeze, |c| c.eagain_retries = 3);
    client.use_queue(1);
    let err = client.dev_mode_get(1).unwrap_err();
    assert!(matches!(
        err,
        AdminError::Retries {
            attempts: 4,
            member: 1,
            ..
        }
    ));
    assert_eq!(err.status(), Some(status::EAGAIN));
    let text = err.to_string();
    assert!(
        text.contains("DEV_MODE_GET") && text.contains("member 1"),
        "{text}"
    );
    release.store(true, Ordering::SeqCst);
    assert!(client.wait(&pending).unwrap().result().is_ok());
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Freeze);
}

/// Seed 004: "the member device MUST respond to commands VIRTIO_ADMIN_CMD_DEV_MODE_SET ... after
/// the device reset completes" — and a command never hangs the driver: a member that cannot
/// finish its requests makes DEV_MODE_SET time out on the client (bounded), the queue stays
/// unusable until `recover`, which resets the owner; the member stays Active.
#[test]
fn client_waits_are_bounded() {
    let release = Arc::new(AtomicBool::new(false));
    let owner = owner(1, Kind::Delay(release, QuiesceMode::Drain));
    let mut config = client_config();
    config.timeout = Duration::from_millis(100);
    let mut client = client_with(&owner, config);
    client.use_migration_commands().unwrap();
    let mut guest = Guest::new(owner.member(1).unwrap());
    guest.submit(1);
    let start = Instant::now();
    let err = client.dev_mode_set(1, DevMode::Stop).unwrap_err();
    // Bounded, not fast: the 100 ms limit with room for a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        matches!(err, AdminError::Timeout { member: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("DEV_MODE_SET"));
    assert!(matches!(
        client.dev_mode_get(1).unwrap_err(),
        AdminError::Stale { .. }
    ));
    client.recover().unwrap();
    client.use_migration_commands().unwrap();
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
    assert!(!owner
        .member(1)
        .unwrap()
        .core()
        .lock()
        .unwrap()
        .admin_mode_pending());
}

/// Seed 004 framework: errors name the command, the member and the status (and qualifier).
#[test]
fn errors_name_command_member_and_status() {
    let owner = owner(1, Kind::Counting);
    let mut client = client(&owner);
    let err = client.dev_mode_get(5).unwrap_err();
    let text = err.to_string();
    for part in ["DEV_MODE_GET", "member 5", "EINVAL", "Q_INVALID_MEMBER"] {
        assert!(text.contains(part), "{text}");
    }
    let err = client.dev_ctx_write(1, &[0; 8]).unwrap_err();
    assert!(err.to_string().contains("DEV_CTX_WRITE"));
    assert_eq!(err.status(), Some(status::EBUSY));
}
