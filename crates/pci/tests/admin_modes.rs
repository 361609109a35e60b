//! Seed 004 device modes: DEV_MODE_GET / DEV_MODE_SET on SR-IOV members — Active, Stop and
//! Freeze, what each means for the member's PCI function, and pending mode changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_lm_device::context::decode;
use virtio_lm_device::QuiesceMode;
use virtio_lm_pci::admin::{AdminClient, OwnerFunction};
use virtio_lm_pci::testing::admin::*;
use virtio_lm_pci::{PciTransport, VirtioPciFunction};
use virtio_lm_spec::admin::{opcode, qualifier, status, DevMode};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};

/// Member 1 of a one-VF owner, the owner's admin client, and a guest that initialised the
/// member.
fn member_rig(
    kind: Kind,
) -> (
    OwnerFunction<Mem>,
    AdminClient<Mem>,
    Arc<VirtioPciFunction<Mem>>,
    Guest,
) {
    let owner = owner(1, kind);
    let client = client(&owner);
    let member = owner.member(1).unwrap();
    let guest = Guest::new(member.clone());
    (owner, client, member, guest)
}

fn mode_of(f: &VirtioPciFunction<Mem>) -> DevMode {
    f.core().lock().unwrap().admin_mode()
}

fn context(client: &mut AdminClient<Mem>, member: u64) -> Vec<u8> {
    client.dev_ctx_discard(member).unwrap();
    client.dev_ctx_read_all(member, 64).unwrap()
}

fn rd16(f: &VirtioPciFunction<Mem>, field: usize) -> u16 {
    let mut b = [0u8; 2];
    f.read(field as u64, &mut b);
    u16::from_le_bytes(b)
}

fn rd8(f: &VirtioPciFunction<Mem>, field: usize) -> u8 {
    let mut b = [0u8; 1];
    f.read(field as u64, &mut b);
    b[0]
}

/// Seed 004: "When the device mode supplied in the command VIRTIO_ADMIN_CMD_DEV_MODE_SET is same
/// as what the mode in the device, the device MUST complete the command successfully."
#[test]
fn setting_the_current_mode_succeeds() {
    let owner = owner(1, Kind::Counting);
    let mut client = client(&owner);
    let _guest = Guest::new(owner.member(1).unwrap());
    for mode in [DevMode::Active, DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        let before = context(&mut client, 1);
        client.dev_mode_set(1, mode).unwrap();
        assert_eq!(client.dev_mode_get(1).unwrap(), mode);
        assert_eq!(context(&mut client, 1), before);
    }
}

/// Seed 004: "The device MUST fail the command VIRTIO_ADMIN_CMD_DEV_MODE_SET when the mode is
/// other than Active or Stop or Freeze." and "if the command fails, the device MUST retain the
/// current device mode." (EINVAL / Q_INVALID_FIELD, spec-decisions §4.)
#[test]
fn unknown_mode_fails_and_keeps_the_mode() {
    let owner = owner(1, Kind::Counting);
    let mut client = client(&owner);
    for mode in [DevMode::Active, DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        for bad in [3u8, 0x80, 0xff] {
            let r = run(&mut client, &cmd(opcode::DEV_MODE_SET, 1, &[bad]), 0);
            assert_eq!(
                (r.status, r.qualifier),
                (status::EINVAL, qualifier::Q_INVALID_FIELD)
            );
            assert_eq!(client.dev_mode_get(1).unwrap(), mode);
        }
    }
}

/// Seed 004 (our reading, spec-decisions §4): the seed names only two reasons for DEV_MODE_SET to
/// fail — an unknown mode and a partially written context — so every transition between
/// Active, Stop and Freeze succeeds ("MAY update fields of the device context when the device
/// transitions from Stop to Freeze"; "changing the device mode from Freeze to Stop or from
/// Freeze to Active"). Active → Freeze does the Stop work first.
#[test]
fn every_transition_between_the_three_modes() {
    let (_owner, mut client, member, mut guest) = member_rig(Kind::Counting);
    use DevMode::*;
    for (from, to) in [
        (Active, Stop),
        (Stop, Freeze),
        (Freeze, Stop),
        (Stop, Active),
        (Active, Freeze),
        (Freeze, Active),
    ] {
        assert_eq!(client.dev_mode_get(1).unwrap(), from);
        client.dev_mode_set(1, to).unwrap();
        assert_eq!(mode_of(&member), to);
    }
    guest.submit(2);
    guest.collect();
    assert_eq!(guest.done.len(), 2);
}

/// Seed 004: "the device MUST finish all the outstanding PCI transactions before completing the
/// command VIRTIO_ADMIN_CMD_DEV_MODE_SET" — DEV_MODE_SET to Stop waits (pending, without
/// blocking the owner) while the member's requests are in process, and completes once they are
/// used; nothing is written to guest memory after that.
#[test]
fn stop_finishes_outstanding_requests_first() {
    let release = Arc::new(AtomicBool::new(false));
    let (owner, mut client, member, mut guest) =
        member_rig(Kind::Delay(release.clone(), QuiesceMode::Drain));
    guest.submit(4);
    let ticket = client
        .submit_raw(
            0,
            &cmd(opcode::DEV_MODE_SET, 1, &mode_data(DevMode::Stop)),
            8,
        )
        .unwrap();
    for _ in 0..10 {
        owner.poll();
        assert!(client.try_complete(&ticket).unwrap().is_none());
    }
    assert_eq!(mode_of(&member), DevMode::Active);
    assert!(member.core().lock().unwrap().admin_mode_pending());
    release.store(true, Ordering::SeqCst);
    let done = client.wait(&ticket).unwrap().result();
    assert!(done.is_ok());
    assert_eq!(mode_of(&member), DevMode::Stop);
    // Every request was used before the command completed.
    assert_eq!(guest.collect(), 4);
    guest.check_pattern();
    let memory = snapshot(&guest.mem);
    let interrupts = member.interrupts().total();
    guest.submit(2);
    let memory_after_submit = snapshot(&guest.mem);
    assert_ne!(memory, memory_after_submit);
    guest.pump();
    owner.poll();
    assert_eq!(snapshot(&guest.mem), memory_after_submit);
    assert_eq!(member.interrupts().total(), interrupts);
}

/// Seed 004 with the record-in-flight option (spec-decisions §3): "a member may enter Stop without
/// waiting for slow requests; they are recorded in VQ_INFLIGHT" — DEV_MODE_SET to Stop
/// completes at once and the context read afterwards lists the requests in flight.
#[test]
fn record_inflight_stop_completes_at_once() {
    let release = Arc::new(AtomicBool::new(false));
    let owner = owner(1, Kind::Delay(release, QuiesceMode::RecordInflight));
    let mut client = client(&owner);
    let mut guest = Guest::new(owner.member(1).unwrap());
    guest.submit(3);
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    let ctx = decode(&client.dev_ctx_read_all(1, 64).unwrap()).unwrap();
    let ids: Vec<u16> = ctx.queues[0].state.inflight.iter().map(|c| c.id).collect();
    assert_eq!(ids, guest.inflight.keys().copied().collect::<Vec<_>>());
}

/// Seed 004: "the device MUST not initiate any PCI transaction when the device mode is not
/// Active" and "the device MUST not access any virtqueue memory or any memory referred by the
/// virtqueue when the device mode is not Active" — buffers made available and notified in Stop
/// or Freeze are not touched and raise no interrupt.
#[test]
fn stop_and_freeze_touch_no_guest_memory() {
    let (owner, mut client, member, mut guest) = member_rig(Kind::Counting);
    guest.submit(1);
    assert_eq!(guest.collect(), 1);
    for mode in [DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        guest.submit(2);
        let memory = snapshot(&guest.mem);
        let interrupts = member.interrupts().total();
        for _ in 0..3 {
            guest.pump();
            owner.poll();
            let _ = rd8(&member, offset::DEVICE_STATUS);
        }
        assert_eq!(snapshot(&guest.mem), memory, "{mode:?}");
        assert_eq!(member.interrupts().total(), interrupts, "{mode:?}");
        assert_eq!(guest.collect(), 0);
    }
    client.dev_mode_set(1, DevMode::Active).unwrap();
    assert_eq!(guest.collect(), 4);
}

/// Seed 004: "when the device mode is Stop, the device MUST accept driver notifications" —
/// a notification in Stop is latched: back in Active the buffers are processed without another
/// notification (EVENT_IDX negotiated, pitfall 4).
#[test]
fn stop_accepts_and_latches_notifications() {
    let (_owner, mut client, member, mut guest) = member_rig(Kind::Counting);
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    guest.submit(3);
    guest.pump();
    let used_before = member.interrupts().used_notifications();
    client.dev_mode_set(1, DevMode::Active).unwrap();
    assert_eq!(guest.collect(), 3);
    assert!(member.interrupts().used_notifications() > used_before);
}

/// Seed 004: "the device MUST respond with valid values for PCI read requests when the device
/// mode is Stop" — every common configuration register reads as it did in Active.
#[test]
fn stop_answers_register_reads() {
    let (_owner, mut client, member, _guest) = member_rig(Kind::Counting);
    let fields = [
        offset::NUM_QUEUES,
        offset::QUEUE_SIZE,
        offset::QUEUE_ENABLE,
        offset::QUEUE_MSIX_VECTOR,
        offset::CONFIG_MSIX_VECTOR,
    ];
    let read = |f: &VirtioPciFunction<Mem>| {
        let mut v: Vec<u16> = fields.iter().map(|&o| rd16(f, o)).collect();
        v.push(u16::from(rd8(f, offset::DEVICE_STATUS)));
        v
    };
    let active = read(&member);
    assert_eq!(
        active[5],
        u16::from(
            (DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK)
                .bits()
        )
    );
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    assert_eq!(read(&member), active);
}

/// Seed 004: "When the device mode is not Active ... the device MUST not generate any
/// configuration change notification." A device-side configuration change waits for Active,
/// where it is applied (generation + 1) and notified once.
#[test]
fn no_config_change_notification_unless_active() {
    let (_owner, mut client, member, _guest) = member_rig(Kind::Counting);
    for mode in [DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        let generation = rd8(&member, offset::CONFIG_GENERATION);
        let notified = member.interrupts().config_notifications();
        member.core().lock().unwrap().change_config(|_| {});
        assert_eq!(member.interrupts().config_notifications(), notified);
        assert_eq!(rd8(&member, offset::CONFIG_GENERATION), generation);
        client.dev_mode_set(1, DevMode::Active).unwrap();
        assert_eq!(member.interrupts().config_notifications(), notified + 1);
        assert_eq!(
            rd8(&member, offset::CONFIG_GENERATION),
            generation.wrapping_add(1)
        );
    }
}

/// Seed 004: "when the device is in Freeze mode, any write access to virtio configuration space
/// MUST not update any fields" and "the device MUST NOT update any fields of the device context
/// when the device is in Freeze mode" — status (including a reset), feature, queue, MSI-X and
/// device-configuration writes and notifications leave registers and context unchanged. The
/// member has a driver-writable configuration space, and the same configuration write is shown
/// to take effect in Active first, so an ignored write is the Freeze rule at work.
#[test]
fn freeze_ignores_configuration_writes() {
    let (_owner, mut client, member, mut guest) = member_rig(Kind::Config);
    guest.submit(1);
    guest.collect();
    let device_config = || {
        let mut b = [0u8; 8];
        member.read(virtio_lm_pci::layout::DEVICE_OFFSET, &mut b);
        b
    };
    member.write(virtio_lm_pci::layout::DEVICE_OFFSET, &[9, 8]);
    assert_eq!(device_config()[..2], [9, 8], "written in Active");
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    let config_before = device_config();
    let ctx = context(&mut client, 1);
    // Byte by byte: each register as a driver reading one byte sees it.
    let common_registers = || -> Vec<u8> {
        (0..68u64)
            .map(|o| {
                let mut b = [0u8; 1];
                member.read(o, &mut b);
                b[0]
            })
            .collect()
    };
    let registers = common_registers();
    let writes: [(usize, &[u8]); 9] = [
        (offset::DEVICE_STATUS, &[0]),
        (offset::DEVICE_STATUS, &[0xff]),
        (offset::DEVICE_FEATURE_SELECT, &[1, 0, 0, 0]),
        (offset::DRIVER_FEATURE, &[0xff; 4]),
        (offset::QUEUE_SELECT, &[1, 0]),
        (offset::QUEUE_SIZE, &[4, 0]),
        (offset::QUEUE_MSIX_VECTOR, &[0xff, 0xff]),
        (offset::CONFIG_MSIX_VECTOR, &[0xff, 0xff]),
        (offset::QUEUE_DESC, &[0x10, 0, 0, 0]),
    ];
    for (at, data) in writes {
        member.write(at as u64, data);
    }
    member.write(virtio_lm_pci::layout::DEVICE_OFFSET, &[1, 2, 3, 4]);
    guest.submit(1);
    guest.pump();
    let after = common_registers();
    assert_eq!(after, registers);
    assert_eq!(
        device_config(),
        config_before,
        "configuration unchanged in Freeze"
    );
    assert_eq!(context(&mut client, 1), ctx);
    client.dev_mode_set(1, DevMode::Active).unwrap();
    assert_eq!(guest.collect(), 1);
}

/// Seed 004: "for the VIRTIO_PCI_CAP_PCI_CFG capability area, the device MUST ignore writes
/// when the device mode is set to Freeze and on receiving the reads, the device MUST function
/// same regardless of the device mode is Active or Stop or Freeze."
#[test]
fn pci_cfg_window_ignores_writes_in_freeze() {
    let (_owner, mut client, member, _guest) = member_rig(Kind::Counting);
    let at = member
        .pci_cfg_offset()
        .expect("members have a PCI_CFG window");
    let mut cap = [0u8; 20];
    member.config_read(at, &mut cap);
    assert_eq!(cap[3], virtio_lm_spec::pci::VIRTIO_PCI_CAP_PCI_CFG);
    // Window on queue_select (2 bytes at BAR 0 offset 22).
    member.config_write(at + 4, &[0]);
    member.config_write(at + 8, &(offset::QUEUE_SELECT as u32).to_le_bytes());
    member.config_write(at + 12, &2u32.to_le_bytes());
    let window_read = || {
        let mut data = [0u8; 2];
        member.config_read(at + 16, &mut data);
        u16::from_le_bytes(data)
    };
    // A write through the window works in Active.
    member.config_write(at + 16, &3u16.to_le_bytes());
    assert_eq!(rd16(&member, offset::QUEUE_SELECT), 3);
    assert_eq!(window_read(), 3);
    member.config_write(at + 16, &0u16.to_le_bytes());
    for mode in [DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        assert_eq!(window_read(), 0, "{mode:?}: reads work the same");
    }
    // In Freeze every write to the capability is ignored: its fields and the data.
    member.config_write(at + 8, &(offset::DEVICE_STATUS as u32).to_le_bytes());
    member.config_write(at + 16, &7u16.to_le_bytes());
    let mut now = [0u8; 20];
    member.config_read(at, &mut now);
    assert_eq!(
        u32::from_le_bytes(now[8..12].try_into().unwrap()),
        offset::QUEUE_SELECT as u32
    );
    assert_eq!(rd16(&member, offset::QUEUE_SELECT), 0);
    client.dev_mode_set(1, DevMode::Active).unwrap();
    member.config_write(at + 16, &5u16.to_le_bytes());
    assert_eq!(rd16(&member, offset::QUEUE_SELECT), 5);
}

/// Seed 004: "the device MUST function same for the PCI architected interfaces regardless of
/// the device mode" — PCI configuration space reads the same in every mode, and a Function
/// Level Reset works in Freeze (the mode is kept: FLR does not make the device Active, v2
/// changelog).
#[test]
fn pci_architected_interfaces_work_in_every_mode() {
    let (_owner, mut client, member, _guest) = member_rig(Kind::Counting);
    let space = |f: &VirtioPciFunction<Mem>| {
        let mut b = vec![0u8; 256];
        f.config_read(0, &mut b);
        b
    };
    let active = space(&member);
    for mode in [DevMode::Stop, DevMode::Freeze] {
        client.dev_mode_set(1, mode).unwrap();
        assert_eq!(space(&member), active, "{mode:?}");
    }
    // The guest's initialisation left a status for the FLR to clear.
    assert_ne!(rd8(&member, offset::DEVICE_STATUS), 0);
    member.function_level_reset();
    assert_eq!(rd8(&member, offset::DEVICE_STATUS), 0);
    assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Freeze);
}

fn pending_stop(
    owner: &OwnerFunction<Mem>,
    client: &mut AdminClient<Mem>,
) -> virtio_lm_pci::admin::Ticket {
    let ticket = client
        .submit_raw(
            0,
            &cmd(opcode::DEV_MODE_SET, 1, &mode_data(DevMode::Stop)),
            8,
        )
        .unwrap();
    owner.poll();
    assert!(client.try_complete(&ticket).unwrap().is_none());
    ticket
}

/// Seed 004: "the member device MUST respond to commands VIRTIO_ADMIN_CMD_DEV_MODE_SET ... after
/// the device reset completes in the device" and "... after the member VF device FLR completes"
/// — a reset or FLR while DEV_MODE_SET waits completes the command (ENXIO) after the reset; the
/// mode stays Active (a failed MODE_SET retains the mode) and the member works on.
#[test]
fn reset_or_flr_while_mode_set_waits_completes_it() {
    let release = Arc::new(AtomicBool::new(false));
    let owner = owner(1, Kind::Delay(release, QuiesceMode::Drain));
    let mut client = client(&owner);
    let member = owner.member(1).unwrap();
    for flr in [false, true] {
        let mut guest = Guest::new(member.clone());
        guest.submit(1);
        let ticket = pending_stop(&owner, &mut client);
        if flr {
            member.function_level_reset();
        } else {
            guest.driver.reset().unwrap();
        }
        let r = client.wait(&ticket).unwrap().result();
        assert_eq!(r.status, status::ENXIO, "flr {flr}");
        assert_eq!(client.dev_mode_get(1).unwrap(), DevMode::Active);
    }
}

/// Seed 004 (virtio 1.4 "Administration Facilities": "while a command is outstanding ... VF Enable MUST be set"): clearing
/// VF Enable while DEV_MODE_SET waits completes it with ENXIO instead of leaving it hanging.
#[test]
fn vf_disable_while_mode_set_waits_completes_it() {
    let release = Arc::new(AtomicBool::new(false));
    let (owner, mut client, member, mut guest) =
        member_rig(Kind::Delay(release, QuiesceMode::Drain));
    guest.submit(1);
    let ticket = pending_stop(&owner, &mut client);
    owner.set_vf_enable(false).unwrap();
    assert_eq!(client.wait(&ticket).unwrap().result().status, status::ENXIO);
    assert!(!member.core().lock().unwrap().admin_mode_pending());
}

/// Seed 004 with spec-decisions §2: "DEVICE_STOPPED and SUSPEND ... are in-band (the driver's);
/// admin DEV_MODE is out-of-band (the owner's). The device is quiescent while any of them
/// holds; each is resumed only by its own mechanism."
#[test]
fn admin_modes_and_in_band_stop_are_independent() {
    let (_owner, mut client, member, mut guest) = member_rig(Kind::Counting);
    let features = Profile::Seeds
        .feature_set(&[Feature::Version1, Feature::DeviceStop])
        .unwrap();
    guest
        .driver
        .init(
            features,
            &[virtio_lm_pci::QueueSetup::new(0, QUEUE_SIZE, RING)],
        )
        .unwrap();
    // In-band stop, then admin Stop and back to Active: still stopped in band.
    guest.driver.stop().unwrap();
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    client.dev_mode_set(1, DevMode::Active).unwrap();
    guest.submit(1);
    guest.pump();
    assert_eq!(guest.collect(), 0);
    guest.driver.resume().unwrap();
    guest.pump();
    assert_eq!(guest.collect(), 1);
    // Admin Stop: the driver's in-band resume (or stop) cannot undo it.
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    let s = rd8(&member, offset::DEVICE_STATUS);
    member.write(
        offset::DEVICE_STATUS as u64,
        &[s | DeviceStatus::DEVICE_STOPPED.bits()],
    );
    assert_eq!(rd8(&member, offset::DEVICE_STATUS), s);
    guest.submit(1);
    guest.pump();
    assert_eq!(guest.collect(), 0);
    client.dev_mode_set(1, DevMode::Active).unwrap();
    assert_eq!(guest.collect(), 1);
}
