//! The ring position of a v1.4 member moved by device parts (spec-decisions §32): virtio 1.4 has
//! no part for a queue's runtime state, so the stopped source records a packed ring's position
//! in guest memory, and the destination takes every queue's position from memory, checked, at
//! the resume after DEV_PARTS_SET ("Device parts"; 2.4.1: a stopped device has written back
//! "any associated descriptors for all observed buffers").

use virtio_lm_device::testing::CountingDevice;
use virtio_lm_device::CoreOptions;
use virtio_lm_pci::admin::{check_ring_positions, AdminCommand};
use virtio_lm_pci::testing::*;
use virtio_lm_pci::{PciDriver, QueueSetup, VirtioPciFunction};
use virtio_lm_queue::{packed_position, BufferSpec, QueueConfig, RingKind, RingPosition};
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{group_type, status, DevMode};
use virtio_lm_spec::parts::{part_type, Part, VqCfg, DEV_PARTS_TYPE_GET, DEV_PARTS_TYPE_SET};
use virtio_lm_spec::zerocopy::FromBytes;
use virtio_lm_spec::Feature;
use vm_memory::{Bytes, GuestAddress};

const GET: u32 = 0;
const SET: u32 = 1;
const PACKED: [Feature; 3] = [Feature::Version1, Feature::RingPacked, Feature::EventIdx];

/// A v1.4 owner whose two members offer `features` (one counting queue of 16), a GET object
/// on member 1, a SET object on member 2, and a guest driver of member 1 that negotiated
/// `features` and set up queue 0 at [`RING`].
fn rig(
    features: &'static [Feature],
) -> (
    virtio_lm_pci::admin::OwnerFunction<Mem>,
    virtio_lm_pci::admin::AdminClient<Mem>,
    PciDriver<Mem>,
) {
    let options = move || CoreOptions {
        features: features.to_vec(),
        ..v14_options()
    };
    let owner = v14_owner_of(
        2,
        Box::new(move |vf| {
            let device = CountingDevice::new(u64::from(vf) << 16, 16);
            VirtioPciFunction::with_device(Box::new(device), memory(), options(), 2, false)
        }),
    );
    let mut client = v14_client(&owner);
    client
        .parts_object_create(1, GET, DEV_PARTS_TYPE_GET)
        .unwrap();
    client
        .parts_object_create(2, SET, DEV_PARTS_TYPE_SET)
        .unwrap();
    let function = owner.member(1).unwrap();
    let mem = function.core().lock().unwrap().mem().clone();
    let mut driver = v14_driver(&function, &mem);
    driver
        .init(v14_features(features), &[QueueSetup::new(0, 16, RING)])
        .unwrap();
    (owner, client, driver)
}

/// Submits `n` requests one at a time and collects each.
fn run_requests(driver: &mut PciDriver<Mem>, n: u64) {
    for i in 0..n {
        driver
            .submit(0, &[BufferSpec::writable(DATA + 0x40 * (i % 16), 0x40)])
            .unwrap();
        assert_eq!(driver.collect_used(0).unwrap().len(), 1);
    }
}

/// Queue 0's configuration as its VQ_CFG part says.
fn queue0(parts: &[Part], kind: RingKind, event_idx: bool) -> QueueConfig {
    let cfg = VqCfg::read_from_bytes(&first_part(parts, part_type::VQ_CFG).value).unwrap();
    QueueConfig {
        kind,
        size: cfg.queue_size.get(),
        desc_table: GuestAddress(cfg.queue_desc.get()),
        driver_area: GuestAddress(cfg.queue_driver.get()),
        device_area: GuestAddress(cfg.queue_device.get()),
        features: virtio_lm_queue::RingFeatures {
            event_idx,
            indirect_desc: false,
        },
    }
}

fn resume(client: &mut virtio_lm_pci::admin::AdminClient<Mem>, member: u64) -> u16 {
    let cmd = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, member, vec![0]);
    client.command(&cmd, 0).unwrap().status
}

/// 1.4 "Device parts" with spec-decisions §32, packed ring with EVENT_IDX: DEV_MODE_SET
/// STOPPED records the member's next position (here past the wrap of its 16 descriptors) in
/// the device event suppression structure; the destination's check on the received parts and
/// memory passes; after DEV_PARTS_SET the resumed destination member takes the buffers made
/// available after the stop, and later ones, each once. Without EVENT_IDX the check names the
/// missing feature.
#[test]
fn a_stopped_packed_member_resumes_on_the_destination_at_its_recorded_position() {
    let (owner, mut client, mut driver) = rig(&PACKED);
    run_requests(&mut driver, 20);
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    let source_mem = driver.mem().clone();
    let config = queue0(&parts, RingKind::Packed, true);
    let expected = RingPosition {
        index: 4,
        wrap_counter: false,
    };
    assert_eq!(packed_position(&*source_mem, &config), Ok(expected));

    // Made available after the stop: the stopped member does not take them.
    for i in 0..2 {
        driver
            .submit(0, &[BufferSpec::writable(DATA + 0x800 + 0x40 * i, 0x40)])
            .unwrap();
    }
    assert!(driver.collect_used(0).unwrap().is_empty());

    let target = owner.member(2).unwrap();
    let target_mem = target.core().lock().unwrap().mem().clone();
    copy_memory(&source_mem, &target_mem);
    assert_eq!(check_ring_positions(&parts, &*target_mem), Ok(()));
    let mut without = parts.clone();
    for p in &mut without {
        if p.hdr.part_type() == part_type::DRV_FEATURES {
            p.value = v14_features(&[Feature::Version1, Feature::RingPacked])
                .to_le_bytes()
                .to_vec();
        }
    }
    let err = check_ring_positions(&without, &*target_mem).unwrap_err();
    assert!(
        err.contains("Queue 0") && err.contains("EVENT_IDX"),
        "{err}"
    );

    client.dev_mode_stopped(2, true).unwrap();
    client.parts_set(2, SET, &parts).unwrap();
    assert_eq!(resume(&mut client, 2), status::OK);
    driver.migrate_to(target.clone(), target_mem).unwrap();
    let late = driver.collect_used(0).unwrap();
    assert_eq!(
        late.len(),
        2,
        "the buffers made available after the stop, once"
    );
    run_requests(&mut driver, 20);
    assert!(driver.collect_used(0).unwrap().is_empty(), "nothing twice");
}

/// 1.4 "Device parts" with spec-decisions §32 and §29, split ring: a destination whose memory
/// has `avail.idx` more than the queue size past `used.idx` fails the destination's check,
/// naming the queue and the values, and the resume after DEV_PARTS_SET with EINVAL; the
/// member stays stopped with its staged parts, and resumes once the ring is consistent.
#[test]
fn an_inconsistent_split_ring_fails_the_check_and_the_resume() {
    let (owner, mut client, mut driver) = rig(&[Feature::Version1, Feature::EventIdx]);
    run_requests(&mut driver, 5);
    client.dev_mode_stopped(1, true).unwrap();
    let parts = client.parts_get(1, GET, None).unwrap();
    let config = queue0(&parts, RingKind::Split, true);
    let target = owner.member(2).unwrap();
    let target_mem = target.core().lock().unwrap().mem().clone();
    copy_memory(driver.mem(), &target_mem);
    let avail_idx = GuestAddress(config.driver_area.0 + 2);
    target_mem.write_obj(5u16 + 17, avail_idx).unwrap();

    let err = check_ring_positions(&parts, &*target_mem).unwrap_err();
    assert!(err.contains("Queue 0"), "{err}");
    assert!(
        err.contains("avail.idx 22") && err.contains("used.idx 5"),
        "{err}"
    );

    client.dev_mode_stopped(2, true).unwrap();
    client.parts_set(2, SET, &parts).unwrap();
    assert_eq!(resume(&mut client, 2), status::EINVAL);
    assert_eq!(target.core().lock().unwrap().admin_mode(), DevMode::Freeze);

    target_mem.write_obj(5u16, avail_idx).unwrap();
    assert_eq!(check_ring_positions(&parts, &*target_mem), Ok(()));
    assert_eq!(
        resume(&mut client, 2),
        status::OK,
        "the staged parts were kept"
    );
    driver.migrate_to(target.clone(), target_mem).unwrap();
    run_requests(&mut driver, 20);
}

/// spec-decisions §32: the destination's check on received parts never panics and bounds its
/// work: parts of the wrong length are skipped, a running queue whose ring lies outside memory
/// is refused with its index, a VQ_CFG beyond 1024 queues is refused.
#[test]
fn the_check_refuses_hostile_parts_without_panicking() {
    let mem = memory();
    let running = Part::new(part_type::DEVICE_STATUS, 0, [0; 8], vec![0x0f]);
    let drv = |features: &[Feature]| {
        let value = v14_features(features).to_le_bytes().to_vec();
        Part::new(part_type::DRV_FEATURES, 0, [0; 8], value)
    };
    let vq = |index: u16, desc: u64| {
        let mut value = vec![0u8; 32];
        value[0..2].copy_from_slice(&16u16.to_le_bytes());
        value[4..6].copy_from_slice(&1u16.to_le_bytes());
        for (at, addr) in [(8, desc), (16, desc + 0x100), (24, desc + 0x200)] {
            value[at..at + 8].copy_from_slice(&addr.to_le_bytes());
        }
        let selector = virtio_lm_spec::parts::DevPartHdr::vq_selector(index);
        Part::new(part_type::VQ_CFG, 0, selector, value)
    };
    let garbage = [
        Part::new(part_type::DRV_FEATURES, 0, [0; 8], vec![1, 2, 3]),
        Part::new(part_type::DEVICE_STATUS, 0, [0; 8], vec![]),
        Part::new(part_type::VQ_CFG, 0, [0xff; 8], vec![0xff; 7]),
    ];
    assert_eq!(
        check_ring_positions(&garbage, &*mem),
        Ok(()),
        "nothing runs"
    );
    let outside = [drv(&PACKED), running.clone(), vq(3, u64::MAX - 0x1000)];
    let err = check_ring_positions(&outside, &*mem).unwrap_err();
    assert!(err.contains("Queue 3"), "{err}");
    let split = [drv(&[Feature::Version1]), running.clone(), vq(0, 0x1000)];
    assert_eq!(
        check_ring_positions(&split, &*mem),
        Ok(()),
        "a zeroed split ring"
    );
    let many = [drv(&PACKED), running, vq(4000, 0x1000)];
    let err = check_ring_positions(&many, &*mem).unwrap_err();
    assert!(err.contains("queue 4000"), "{err}");
}
