//! The checks of the virtio 1.4 profile: numbering, SUSPEND, RING_RESET, capabilities,
//! resource objects and device parts (spec-decisions §16–§18, §29).

use virtio_lm_pci::admin::{AdminCommand, AdminResult, V1_4_SRIOV_SUPPORTED};
use virtio_lm_pci::PciDriver;
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::opcode::{v1_4, DEVICE_MIGRATION};
use virtio_lm_spec::admin::{group_type, status};
use virtio_lm_spec::parts::{
    order_rank, part_type, DevPartsObjData, DevPartsTypedData, Part, ResourceObjHdr,
    DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET, METADATA_TYPE_COUNT, STATUS_EEXIST,
};
use virtio_lm_spec::zerocopy::IntoBytes;
use virtio_lm_spec::Feature;

use super::target::{Mem, DATA};
use super::{expect, observed, sriov_list, suspend, Check, DeviceKind, Row, Target};

const PARTS: &str = "1.4 device parts";
const OBJECTS: &str = "1.4 resource objects";
const GET: u32 = 0;
const SET: u32 = 1;

fn status_of(r: &AdminResult) -> String {
    format!("status {} qualifier {}", r.status, r.qualifier)
}

fn sriov(
    t: &mut Target,
    op: u16,
    member: u64,
    data: Vec<u8>,
    room: usize,
) -> Result<AdminResult, String> {
    let cmd = AdminCommand::new(op, group_type::SRIOV, member, data);
    t.client.command(&cmd, room).map_err(observed)
}

/// Every check, in order; a setup failure fails the rows that need it.
pub(super) fn checks(t: &mut Target) -> Vec<Row> {
    let mut rows = vec![
        Row::of("1.4 feature bits", "VIRTIO_F_SUSPEND is offered on bit 43, and no seed-only feature", numbering(t)),
        Row::of("1.4 SUSPEND", "after SUSPEND the device presents SUSPEND=1 and DRIVER_OK=0; DRIVER_OK resumes it", suspend(t)),
        Row::of("1.4 virtqueue reset", "after queue_reset=1 the device presents 0 in queue_reset and queue_enable", ring_reset(t)),
        Row::of(PARTS, "METADATA_GET, PARTS_GET, PARTS_SET, RESOURCE_OBJ_* and DEV_MODE_SET are supported all or none; no seed-004 opcode", list(t)),
    ];
    if let Err(e) = setup(t) {
        rows.push(Row::of(
            OBJECTS,
            "DRIVER_CAP_SET of the DEV_PARTS capability and object creation succeed",
            Err(e),
        ));
        return rows;
    }
    rows.extend([
        Row::of(
            OBJECTS,
            "a duplicate RESOURCE_OBJ_CREATE fails with EEXIST",
            duplicate(t),
        ),
        Row::of(
            OBJECTS,
            "a command on an object that does not exist fails with ENXIO",
            missing(t),
        ),
        Row::of(
            OBJECTS,
            "RESOURCE_OBJ_QUERY returns the data of the last CREATE or MODIFY",
            query(t),
        ),
        Row::of(
            PARTS,
            "METADATA_GET COUNT is the number of parts PARTS_GET ALL returns",
            metadata(t),
        ),
        Row::of(
            PARTS,
            "PARTS_GET returns parts in table order, and may be repeated",
            order(t),
        ),
        Row::of(
            PARTS,
            "PARTS_SET fails while the device is not stopped",
            set_running(t),
        ),
        Row::of(PARTS, "PARTS_SET fails on a length mismatch", length(t)),
        Row::of(
            PARTS,
            "DEV_FEATURES is verified on PARTS_SET, never applied",
            dev_features(t),
        ),
        Row::of(
            PARTS,
            "stopping a stopped device and resuming a running one succeed",
            idempotent(t),
        ),
    ]);
    rows.push(match t.kind {
        DeviceKind::Rng => Row::of(PARTS, "when stopped the device uses no buffer and sends no notification; it accepts notifications", stopped(t)),
        _ => Row::not_applicable(PARTS, "when stopped the device uses no buffer and sends no notification; it accepts notifications", "checked with the rng member, whose buffers need no request format"),
    });
    rows.extend([
        Row::of(
            PARTS,
            "when stopped the device sends no config-change notification; it sends one on resume",
            config_change(t),
        ),
        Row::of(
            PARTS,
            "parts set on a stopped device take effect when it resumes",
            round_trip(t),
        ),
        Row::of(
            PARTS,
            "member reset or FLR clears all parts to their defaults",
            flr(t),
        ),
    ]);
    rows
}

fn numbering(t: &mut Target) -> Check {
    let driver = t.guest(1, &[]).map_err(observed)?;
    let offered = driver.device_features();
    expect("SUSPEND not on bit 43", offered >> 43 & 1 == 1)?;
    expect("bit 42 (seed SUSPEND) offered", offered >> 42 & 1 == 0)?;
    expect("RING_RESET not on bit 40", offered >> 40 & 1 == 1)
}

fn ring_reset(t: &mut Target) -> Check {
    let mut driver = t.guest(1, &[Feature::RingReset]).map_err(observed)?;
    expect(
        "queue_reset not 0 after enable",
        driver.queue_reset_register(0) == 0,
    )?;
    driver
        .reset_queue(virtio_lm_pci::QueueSetup::new(0, 8, 0x3000))
        .map_err(observed)
}

fn list(t: &mut Target) -> Check {
    let word = sriov_list(t)?;
    let all = V1_4_SRIOV_SUPPORTED;
    expect("not all device-parts commands", word & all == all)?;
    expect(
        "a seed-004 opcode listed",
        DEVICE_MIGRATION.iter().all(|&op| word >> op & 1 == 0),
    )
}

fn setup(t: &mut Target) -> Check {
    t.client.use_v1_4_commands().map_err(observed)?;
    let cap = t.client.dev_parts_cap_get().map_err(observed)?;
    t.client.dev_parts_cap_set(cap).map_err(observed)?;
    t.client
        .parts_object_create(1, GET, DEV_PARTS_TYPE_GET)
        .map_err(observed)?;
    t.client
        .parts_object_create(2, SET, DEV_PARTS_TYPE_SET)
        .map_err(observed)
}

fn duplicate(t: &mut Target) -> Check {
    let data = DevPartsObjData::new(GET, DEV_PARTS_TYPE_GET)
        .as_bytes()
        .to_vec();
    let r = sriov(t, v1_4::RESOURCE_OBJ_CREATE, 1, data, 0)?;
    expect(&status_of(&r), r.status == STATUS_EEXIST)
}

fn missing(t: &mut Target) -> Check {
    let mut data = ResourceObjHdr::dev_parts(5).as_bytes().to_vec();
    data.resize(16, 0);
    let r = sriov(t, v1_4::RESOURCE_OBJ_QUERY, 1, data, 8)?;
    expect(&status_of(&r), r.status == status::ENXIO)
}

fn query(t: &mut Target) -> Check {
    t.client
        .parts_object_create(1, 2, DEV_PARTS_TYPE_GET)
        .map_err(observed)?;
    let data = DevPartsObjData::new(2, DEV_PARTS_TYPE_SET)
        .as_bytes()
        .to_vec();
    let r = sriov(t, v1_4::RESOURCE_OBJ_MODIFY, 1, data, 0)?;
    expect(&status_of(&r), r.is_ok())?;
    let kind = t.client.parts_object_query(1, 2).map_err(observed)?;
    t.client.parts_object_destroy(1, 2).map_err(observed)?;
    expect(
        &format!("QUERY returned type {kind}"),
        kind == DEV_PARTS_TYPE_SET,
    )
}

fn parts_of(t: &mut Target, member: u64, id: u32) -> Result<Vec<Part>, String> {
    t.client.parts_get(member, id, None).map_err(observed)
}

fn metadata(t: &mut Target) -> Check {
    let parts = parts_of(t, 1, GET)?;
    let data = DevPartsTypedData::new(GET, METADATA_TYPE_COUNT)
        .as_bytes()
        .to_vec();
    let r = sriov(t, v1_4::DEV_PARTS_METADATA_GET, 1, data, 8)?;
    let count = r
        .result
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    expect(
        &format!("COUNT {count:?}, GET ALL {} parts", parts.len()),
        count == Some(parts.len() as u32),
    )
}

fn order(t: &mut Target) -> Check {
    let parts = parts_of(t, 1, GET)?;
    let ranks: Vec<u32> = parts
        .iter()
        .map(|p| order_rank(p.hdr.part_type()))
        .collect();
    expect(
        &format!(
            "part types in order {:x?}",
            parts.iter().map(|p| p.hdr.part_type()).collect::<Vec<_>>()
        ),
        ranks.windows(2).all(|w| w[0] <= w[1]),
    )?;
    expect(
        "a repeated PARTS_GET differs",
        parts_of(t, 1, GET)? == parts,
    )
}

fn set_raw(t: &mut Target, member: u64, parts: &[Part]) -> Result<AdminResult, String> {
    let mut data = ResourceObjHdr::dev_parts(SET).as_bytes().to_vec();
    for p in parts {
        p.encode_into(&mut data);
    }
    sriov(t, v1_4::DEV_PARTS_SET, member, data, 0)
}

fn find(parts: &[Part], ty: u16) -> Result<Part, String> {
    parts
        .iter()
        .find(|p| p.hdr.part_type() == ty)
        .cloned()
        .ok_or_else(|| format!("no part {ty:#x}"))
}

fn set_running(t: &mut Target) -> Check {
    let parts = parts_of(t, 1, GET)?;
    t.client.dev_mode_stopped(2, false).map_err(observed)?;
    let r = set_raw(t, 2, &[find(&parts, part_type::DEVICE_STATUS)?])?;
    expect(&status_of(&r), !r.is_ok())
}

fn length(t: &mut Target) -> Check {
    let mut status_part = find(&parts_of(t, 1, GET)?, part_type::DEVICE_STATUS)?;
    status_part.value.push(0);
    status_part.hdr.length = (status_part.value.len() as u32).into();
    t.client.dev_mode_stopped(2, true).map_err(observed)?;
    let r = set_raw(t, 2, &[status_part])?;
    t.client.dev_mode_stopped(2, false).map_err(observed)?;
    expect(&status_of(&r), r.status == status::EINVAL)
}

fn dev_features(t: &mut Target) -> Check {
    let mut part = find(&parts_of(t, 1, GET)?, part_type::DEV_FEATURES)?;
    part.value[0] ^= 1;
    t.client.dev_mode_stopped(2, true).map_err(observed)?;
    let r = set_raw(t, 2, &[part])?;
    t.client.dev_mode_stopped(2, false).map_err(observed)?;
    expect(
        &format!("mismatching DEV_FEATURES: {}", status_of(&r)),
        r.status == status::EINVAL,
    )
}

fn idempotent(t: &mut Target) -> Check {
    for stopped in [true, true, false, false] {
        t.client.dev_mode_stopped(1, stopped).map_err(observed)?;
    }
    Ok(())
}

fn used(driver: &mut PciDriver<Mem>) -> Result<usize, String> {
    driver.collect_used(0).map(|u| u.len()).map_err(observed)
}

fn stopped(t: &mut Target) -> Check {
    let mut driver = t.guest(1, &[]).map_err(observed)?;
    let irq = t.owner.member(1).ok_or("no member 1")?.interrupts().total();
    t.client.dev_mode_stopped(1, true).map_err(observed)?;
    driver
        .submit(0, &[BufferSpec::writable(DATA, 8)])
        .map_err(observed)?;
    let while_stopped = used(&mut driver)?;
    let irq_stopped = t.owner.member(1).ok_or("no member 1")?.interrupts().total();
    t.client.dev_mode_stopped(1, false).map_err(observed)?;
    let after = used(&mut driver)?;
    expect(
        &format!("{while_stopped} buffers used while stopped"),
        while_stopped == 0,
    )?;
    expect("a notification while stopped", irq_stopped == irq)?;
    expect("the notified buffer was not used after resume", after == 1)
}

fn config_change(t: &mut Target) -> Check {
    let _driver = t.guest(1, &[]).map_err(observed)?;
    let member = t.owner.member(1).ok_or("no member 1")?;
    let before = member.interrupts().config_notifications();
    t.client.dev_mode_stopped(1, true).map_err(observed)?;
    member
        .core()
        .lock()
        .map_err(observed)?
        .change_config(|_| {});
    let stopped = member.interrupts().config_notifications();
    t.client.dev_mode_stopped(1, false).map_err(observed)?;
    let after = member.interrupts().config_notifications();
    expect(
        "a config-change notification while stopped",
        stopped == before,
    )?;
    expect(
        &format!(
            "{} config-change notifications after resume",
            after - stopped
        ),
        after == stopped + 1,
    )
}

fn round_trip(t: &mut Target) -> Check {
    let result = move_parts(t);
    // Both members run again whatever happened, so the next check starts from a live device.
    let resumed = [1, 2].map(|m| t.client.dev_mode_stopped(m, false));
    result?;
    resumed.into_iter().try_for_each(|r| r.map_err(observed))
}

fn move_parts(t: &mut Target) -> Check {
    let _driver = t.guest(1, &[]).map_err(observed)?;
    t.client.dev_mode_stopped(1, true).map_err(observed)?;
    let parts = parts_of(t, 1, GET)?;
    t.client.dev_mode_stopped(2, true).map_err(observed)?;
    t.client.parts_set(2, SET, &parts).map_err(observed)?;
    let destination = t.owner.member(2).ok_or("no member 2")?;
    let before = destination.core().lock().map_err(observed)?.status();
    t.client.dev_mode_stopped(2, false).map_err(observed)?;
    let after = destination.core().lock().map_err(observed)?.status();
    expect("applied before the resume", before.is_empty())?;
    let want = find(&parts, part_type::DEVICE_STATUS)?.value;
    expect(
        &format!("status {:#x} after resume, {want:x?} set", after.bits()),
        [after.bits()] == want.as_slice(),
    )
}

fn flr(t: &mut Target) -> Check {
    let _driver = t.guest(1, &[]).map_err(observed)?;
    t.flr(1);
    let status = find(&parts_of(t, 1, GET)?, part_type::DEVICE_STATUS)?.value;
    expect(
        &format!("DEVICE_STATUS {status:x?} after FLR"),
        status == [0],
    )
}
