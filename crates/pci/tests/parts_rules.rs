//! Device-parts rules written from the mutation run of the `parts` group (docs/mutants.md):
//! parts of a member with two queues, part flags and types, staging across an FLR, and object
//! limits (virtio 1.4 "Device parts", "Resource objects"; spec-decisions §17, §18).

use std::sync::Arc;

use virtio_lm_device::context::DeviceContext;
use virtio_lm_device::CoreOptions;
use virtio_lm_pci::admin::{
    AdminClient, AdminCommand, DevicePartsCodec, MemberFactory, OwnerFunction,
};
use virtio_lm_pci::testing::*;
use virtio_lm_pci::{QueueSetup, VirtioPciFunction};
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{group_type, status};
use virtio_lm_spec::parts::{
    part_type, DevPartHdr, DevPartsCap, DevPartsObjData, Part, VqCfg, VqNotifyCfg,
    DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET, PART_F_OPTIONAL,
};
use virtio_lm_spec::pci::offset::{QUEUE_DESC, QUEUE_MSIX_VECTOR, QUEUE_NOTIFY_OFF, QUEUE_SELECT};
use virtio_lm_spec::zerocopy::{FromBytes, IntoBytes};
use virtio_lm_spec::Feature;

const GET: u32 = 0;
const SET: u32 = 1;
/// Where each queue's ring starts in guest memory.
const RINGS: [u64; 2] = [0x1000, 0x4000];

/// A v1.4 owner with two members built by `factory`, a GET object on member 1 and a SET
/// object on member 2.
fn rig_with_objects(factory: MemberFactory<Mem>) -> (OwnerFunction<Mem>, AdminClient<Mem>) {
    let owner = v14_owner_of(2, factory);
    let mut client = v14_client(&owner);
    client
        .parts_object_create(1, GET, DEV_PARTS_TYPE_GET)
        .unwrap();
    client
        .parts_object_create(2, SET, DEV_PARTS_TYPE_SET)
        .unwrap();
    (owner, client)
}

/// A v1.4 owner with two [`TwoQueueDevice`] members (queues of 16), a GET object on member
/// 1 and a SET object on member 2, and member 1 running both queues.
fn two_queue_rig() -> (OwnerFunction<Mem>, AdminClient<Mem>) {
    let (owner, client) = rig_with_objects(Box::new(|_| {
        let device = TwoQueueDevice::new(16);
        VirtioPciFunction::with_device(Box::new(device), memory(), v14_options(), 4, false)
    }));
    let function: Arc<VirtioPciFunction<Mem>> = owner.member(1).unwrap();
    let mem = function.core().lock().unwrap().mem().clone();
    // Vectors of their own (not the default), so the parts' vectors are seen to be read.
    let queues = [
        QueueSetup {
            msix_vector: 2,
            ..QueueSetup::new(0, 16, RINGS[0])
        },
        QueueSetup {
            msix_vector: 3,
            ..QueueSetup::new(1, 16, RINGS[1])
        },
    ];
    v14_driver(&function, &mem)
        .init(v14_features(&[Feature::Version1]), &queues)
        .unwrap();
    (owner, client)
}

fn queue_part<T: FromBytes>(parts: &[Part], t: u16, index: u16) -> T {
    let part = parts
        .iter()
        .find(|p| p.hdr.part_type() == t && p.hdr.selector[..2] == index.to_le_bytes())
        .unwrap();
    T::read_from_bytes(&part.value).unwrap()
}

/// 1.4 "Device parts": VQ_CFG and VQ_NOTIFY_CFG are "one per vq", selected by
/// `vq_index.index`; SR-IOV, when stopped, the device "MUST answer PCI reads with valid
/// values". Each queue's parts carry that queue's registers (its own `queue_notify_off` and
/// ring addresses and MSI-X vector), and set on another member they configure the same queue
/// there.
#[test]
fn each_queue_travels_in_its_own_parts() {
    let (owner, mut client) = two_queue_rig();
    // Registers first: a stopped member ignores the driver's queue_select writes.
    let source = owner.member(1).unwrap();
    let registers: Vec<(u16, u64, u16)> = (0u16..2)
        .map(|index| {
            source.w16(QUEUE_SELECT, index);
            let vector = source.r16(QUEUE_MSIX_VECTOR);
            (source.r16(QUEUE_NOTIFY_OFF), source.r64(QUEUE_DESC), vector)
        })
        .collect();
    assert_ne!(registers[0], registers[1]);
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    for (index, &(notify_off, desc, vector)) in (0u16..).zip(&registers) {
        let notify: VqNotifyCfg = queue_part(&parts, part_type::VQ_NOTIFY_CFG, index);
        assert_eq!(notify.queue_notify_off.get(), notify_off, "queue {index}");
        let cfg: VqCfg = queue_part(&parts, part_type::VQ_CFG, index);
        assert_eq!(cfg.queue_desc.get(), desc, "queue {index}");
        assert_eq!(cfg.vector.get(), vector, "queue {index}");
    }
    client.dev_mode_stopped(2, true).unwrap();
    client.parts_set(2, SET, &parts).unwrap();
    client.dev_mode_stopped(2, false).unwrap();
    let target = owner.member(2).unwrap();
    for (index, (ring, &(_, _, vector))) in (0u16..2).zip(RINGS.iter().zip(&registers)) {
        target.w16(QUEUE_SELECT, index);
        assert_eq!(target.r64(QUEUE_DESC), *ring, "queue {index}");
        assert_eq!(target.r16(QUEUE_MSIX_VECTOR), vector, "queue {index}");
    }
}

/// 1.4 `virtio_dev_part_hdr`: bit 0 of `flags` is OPTIONAL, the other bits and `reserved`
/// are reserved (spec-decisions §17: a part using them is refused). A DRV_FEATURES part the
/// member takes as it is is refused once a reserved flag bit, or its reserved byte, is set.
#[test]
fn reserved_flag_bits_fail_a_part_otherwise_taken() {
    let (_owner, mut client) = two_queue_rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    let features = first_part(&parts, part_type::DRV_FEATURES);
    client.dev_mode_stopped(2, true).unwrap();
    client
        .parts_set(2, SET, std::slice::from_ref(&features))
        .unwrap();
    let mut flagged = features.clone();
    flagged.hdr.flags = 0x02;
    assert!(client.parts_set(2, SET, &[flagged]).is_err(), "flag bit 1");
    let mut reserved = features;
    reserved.hdr.reserved = 1;
    assert!(
        client.parts_set(2, SET, &[reserved]).is_err(),
        "reserved byte"
    );
}

/// 1.4 "Device parts": PCI_COMMON_CFG is "one per unique offset", and the device "MAY
/// ignore parts flagged OPTIONAL" (spec-decisions §17: we carry offsets 16 and 18 only). A
/// part for another offset (queue_select, 22) is refused unless flagged OPTIONAL.
#[test]
fn a_common_cfg_offset_not_carried_is_refused_unless_optional() {
    let (_owner, mut client) = two_queue_rig();
    client.dev_mode_stopped(2, true).unwrap();
    let sel = DevPartHdr::offset_selector(QUEUE_SELECT as u32);
    let mut part = Part::new(part_type::PCI_COMMON_CFG, 0, sel, vec![0, 0]);
    assert!(client.parts_set(2, SET, &[part.clone()]).is_err());
    part.hdr.flags = PART_F_OPTIONAL;
    client.parts_set(2, SET, &[part]).unwrap();
}

/// A device type whose codec takes every device-type part.
struct TakesEverything;

impl DevicePartsCodec for TakesEverything {
    fn save(&self, _: &DeviceContext) -> Vec<Part> {
        Vec::new()
    }

    fn load(&self, _: &[Part], _: &mut DeviceContext) -> Result<(), &'static str> {
        Ok(())
    }
}

/// 1.4 part types: 0x0000–0x01FF are common, 0x0200–0x05FF device-type specific. A
/// mandatory part of type 0x200 (the first device-type type) goes to the device type's codec,
/// which takes it here, rather than being refused as an unknown common part.
#[test]
fn type_0x200_is_the_device_types() {
    let (owner, mut client) = two_queue_rig();
    owner.set_parts_codec(Box::new(TakesEverything));
    client.dev_mode_stopped(2, true).unwrap();
    let part = Part::new(0x200, 0, [0; 8], vec![1]);
    client
        .parts_set(2, SET, std::slice::from_ref(&part))
        .unwrap();
    let common = Part::new(0x1ff, 0, [0; 8], vec![1]);
    assert!(client.parts_set(2, SET, &[common]).is_err());
}

/// 1.4 "Device parts": the device "MUST allow the same or different parts to be set multiple
/// times", and an FLR "MUST clear all parts to their defaults" (spec-decisions §18: parts
/// staged before a member's FLR are discarded). A SET after the FLR stages afresh over the
/// reset member, so the resume runs a reset device; without the FLR the same two SETs
/// refine one staged whole, which the resume applies.
#[test]
fn a_set_after_an_flr_does_not_refine_what_was_staged_before() {
    let (owner, mut client) = two_queue_rig();
    let parts = client.parts_get(1, GET, None).unwrap();
    let vector = first_part(&parts, part_type::PCI_COMMON_CFG);
    let target = owner.member(2).unwrap();
    for flr in [false, true] {
        client.dev_mode_stopped(2, true).unwrap();
        client.parts_set(2, SET, &parts).unwrap();
        if flr {
            target.function_level_reset();
        }
        client
            .parts_set(2, SET, std::slice::from_ref(&vector))
            .unwrap();
        client.dev_mode_stopped(2, false).unwrap();
        let status = target.core().lock().unwrap().status();
        assert_eq!(status.is_empty(), flr, "FLR {flr}: status {status:?}");
        target.function_level_reset();
    }
}

/// 1.4 "Resource objects": the driver "MUST NOT exceed the limit" of each object type, and
/// the device "SHOULD fail with ENOSPC when out of space"; ids are the driver's (spec-decisions
/// §17: one id space for both types, valid below the sum of the two limits). With limits of 1
/// GET and 2 SET objects: ids 0–2 are valid and 3 is not; a second GET object is out of
/// space while two SET objects fit; MODIFY to an unknown object type fails with EINVAL, and
/// to the other type when that type is full with ENOSPC.
#[test]
fn object_limits_are_per_type_and_ids_below_their_sum() {
    let owner = v14_owner(1);
    let mut client = v14_client(&owner);
    client
        .dev_parts_cap_set(DevPartsCap {
            get_parts_resource_objects_limit: 1,
            set_parts_resource_objects_limit: 2,
        })
        .unwrap();
    // In this order: (id, type, whether the object is created).
    for (id, kind, created) in [
        (3, DEV_PARTS_TYPE_SET, false),
        (2, DEV_PARTS_TYPE_SET, true),
        (0, DEV_PARTS_TYPE_GET, true),
        (1, DEV_PARTS_TYPE_GET, false),
        (1, DEV_PARTS_TYPE_SET, true),
    ] {
        let result = client.parts_object_create(1, id, kind);
        assert_eq!(
            result.is_ok(),
            created,
            "object {id} of type {kind}: {result:?}"
        );
    }
    let modify = AdminCommand::new(
        v1_4::RESOURCE_OBJ_MODIFY,
        group_type::SRIOV,
        1,
        DevPartsObjData::new(0, 5).as_bytes().to_vec(),
    );
    assert_eq!(client.command(&modify, 0).unwrap().status, status::EINVAL);
    assert_eq!(client.parts_object_query(1, 0).unwrap(), DEV_PARTS_TYPE_GET);
    // Both types full: MODIFY to the other type is out of space, to its own type is not.
    for (kind, want) in [
        (DEV_PARTS_TYPE_SET, status::ENOSPC),
        (DEV_PARTS_TYPE_GET, status::OK),
    ] {
        let modify = AdminCommand::new(
            v1_4::RESOURCE_OBJ_MODIFY,
            group_type::SRIOV,
            1,
            DevPartsObjData::new(0, kind).as_bytes().to_vec(),
        );
        assert_eq!(
            client.command(&modify, 0).unwrap().status,
            want,
            "to type {kind}"
        );
    }
}

/// virtio 1.4 has no part for a virtqueue's runtime state (spec-decisions §32): a packed
/// ring's position is recovered from the device event suppression structure the stopped
/// source wrote, which needs EVENT_IDX; without it a DEV_PARTS_SET that would run a packed
/// queue is refused (EINVAL).
#[test]
fn a_set_that_would_run_a_packed_queue_is_refused() {
    let packed = || CoreOptions {
        features: vec![Feature::Version1, Feature::RingPacked],
        ..v14_options()
    };
    let (owner, mut client) = rig_with_objects(Box::new(move |vf| {
        let device = virtio_lm_device::testing::CountingDevice::new(u64::from(vf) << 16, 16);
        VirtioPciFunction::with_device(Box::new(device), memory(), packed(), 2, false)
    }));
    let function = owner.member(1).unwrap();
    let mem = function.core().lock().unwrap().mem().clone();
    v14_driver(&function, &mem)
        .init(
            v14_features(&[Feature::Version1, Feature::RingPacked]),
            &[QueueSetup::new(0, 16, RINGS[0])],
        )
        .unwrap();
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    client.dev_mode_stopped(2, true).unwrap();
    assert!(client.parts_set(2, SET, &parts).is_err());
}
