//! Stopping, member reset and FLR during a v1.4 migration (virtio 1.4 "Device parts": "member reset or
//! FLR MUST clear all parts to their defaults"; spec-decisions §18).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_lm_pci::admin::AdminCommand;
use virtio_lm_pci::testing::admin::delay_device;
use virtio_lm_pci::testing::*;
use virtio_lm_pci::VirtioPciFunction;
use virtio_lm_spec::admin::group_type;
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::parts::{part_type, Part, DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET};
use virtio_lm_spec::DeviceStatus;

fn value(parts: &[Part], t: u16) -> Vec<u8> {
    parts
        .iter()
        .find(|p| p.hdr.part_type() == t)
        .unwrap()
        .value
        .clone()
}

/// 1.4 "Device parts": "SR-IOV: member reset or FLR MUST clear all parts to their defaults";
/// spec-decisions §18: the owner's objects survive it, and the member keeps its mode.
#[test]
fn flr_clears_parts_and_keeps_objects() {
    let (owner, mut client) = v14_with_get_object(1, 0);
    let mut guest = V14Guest::new(owner.member(1).unwrap());
    guest.submit(0x8000, 4);
    assert_eq!(guest.collect(), 1);
    let running = client.parts_get(1, 0, None).unwrap();
    assert_ne!(value(&running, part_type::DEVICE_STATUS), [0]);

    owner.member(1).unwrap().function_level_reset();
    let parts = client.parts_get(1, 0, None).unwrap();
    assert_eq!(value(&parts, part_type::DEVICE_STATUS), [0]);
    assert_eq!(value(&parts, part_type::DRV_FEATURES), [0; 8]);
    let vq = value(&parts, part_type::VQ_CFG);
    assert_eq!(vq[4..6], [0, 0], "queue_enable back to 0");
    assert_eq!(vq[16..32], [0; 16], "ring addresses back to 0");
    assert_eq!(client.parts_object_query(1, 0).unwrap(), DEV_PARTS_TYPE_GET);
}

/// spec-decisions §18, a guest resetting its VF mid-migration: an FLR of the stopped source
/// makes the parts read afterwards those of a reset device; an FLR of the destination between
/// DEV_PARTS_SET and the resume discards the staged parts, so the destination resumes as a
/// reset device instead of a half-applied one. Both members stay stopped until resumed.
#[test]
fn guest_resetting_its_vf_mid_migration() {
    let (owner, mut client) = v14_with_get_object(2, 0);
    client
        .parts_object_create(2, 1, DEV_PARTS_TYPE_SET)
        .unwrap();
    let mut guest = V14Guest::new(owner.member(1).unwrap());
    guest.submit(0x8000, 4);
    assert_eq!(guest.collect(), 1);
    client.dev_mode_stopped(1, true).unwrap();
    client.dev_mode_stopped(2, true).unwrap();
    let parts = client.parts_get(1, 0, None).unwrap();
    client.parts_set(2, 1, &parts).unwrap();

    let destination = owner.member(2).unwrap();
    destination.function_level_reset();
    client.dev_mode_stopped(2, false).unwrap();
    assert_eq!(
        destination.core().lock().unwrap().status(),
        DeviceStatus::RESET
    );

    owner.member(1).unwrap().function_level_reset();
    let after = client.parts_get(1, 0, None).unwrap();
    assert_eq!(value(&after, part_type::DEVICE_STATUS), [0]);
    client
        .parts_object_create(2, 2, DEV_PARTS_TYPE_SET)
        .unwrap();
    client.dev_mode_stopped(2, true).unwrap();
    client.parts_set(2, 2, &after).unwrap();
    client.dev_mode_stopped(2, false).unwrap();
    assert_eq!(
        destination.core().lock().unwrap().status(),
        DeviceStatus::RESET
    );
    client.dev_mode_stopped(1, false).unwrap();
    let mut fresh = V14Guest::new(owner.member(1).unwrap());
    fresh.submit(0x8000, 4);
    assert_eq!(fresh.collect(), 1, "the source works again once resumed");
}

/// 1.4 "Device parts", SR-IOV: the device "MUST finish outstanding PCI transactions before
/// completing DEV_MODE_SET" — the stop waits (without blocking the owner) while the member's
/// requests are in process and completes once they are used.
#[test]
fn stop_waits_for_requests_in_process() {
    let release = Arc::new(AtomicBool::new(false));
    let held = release.clone();
    let owner = v14_owner_of(
        1,
        Box::new(move |_| {
            let device = delay_device(held.clone());
            VirtioPciFunction::with_device(Box::new(device), memory(), v14_options(), 2, false)
        }),
    );
    let mut client = v14_client(&owner);
    let mut guest = V14Guest::new(owner.member(1).unwrap());
    guest.submit(0x4000, 8);
    guest.submit(0x4100, 8);
    let stop = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, 1, vec![1]);
    let ticket = client.submit_raw(0, &stop.to_bytes(), 8).unwrap();
    for _ in 0..10 {
        owner.poll();
        assert!(client.try_complete(&ticket).unwrap().is_none());
    }
    assert_eq!(guest.collect(), 0);
    release.store(true, Ordering::SeqCst);
    assert!(client.wait(&ticket).unwrap().result().is_ok());
    assert_eq!(
        guest.collect(),
        2,
        "every request used before the stop completed"
    );
    client.dev_mode_stopped(1, false).unwrap();
}
