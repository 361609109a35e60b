//! The v1.4 profile's ring position (spec-decisions §32): a stopping device records each packed
//! queue's position in guest memory, and a destination's hypervisor sets every queue from
//! memory before DRIVER_OK (virtio 1.4 has no queue-state register; the analogue of vhost's
//! SET_VRING_BASE).

use std::sync::Arc;

use virtio_lm_device::testing::{CoreDriver, CountingDevice, Mem, SlowDevice, RUNNING};
use virtio_lm_device::{
    AdminModeChange, CoreOptions, DeviceCore, DeviceError, InterruptCounter, QuiesceMode,
};
use virtio_lm_queue::{packed_position, PositionError, QueuePosition, RingDriver, RingPosition};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const V14_FEATURES: [Feature; 4] = [
    Feature::Version1,
    Feature::RingPacked,
    Feature::EventIdx,
    Feature::Suspend,
];

fn v14_options() -> CoreOptions {
    CoreOptions {
        profile: Profile::V1_4,
        features: V14_FEATURES.to_vec(),
        ..CoreOptions::default()
    }
}

fn bits(features: &[Feature]) -> u64 {
    features
        .iter()
        .map(|f| Profile::V1_4.mask(*f).unwrap())
        .fold(0, |a, b| a | b)
}

fn copy_of(mem: &Mem) -> Arc<Mem> {
    let size = virtio_lm_device::testing::MEM_SIZE;
    let mut bytes = vec![0u8; size];
    mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
    let copy = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
    copy.write_slice(&bytes, GuestAddress(0)).unwrap();
    Arc::new(copy)
}

fn ids(used: &[virtio_lm_queue::UsedBuffer]) -> Vec<u16> {
    let mut ids: Vec<u16> = used.iter().map(|u| u.id).collect();
    ids.sort_unstable();
    ids
}

/// A fresh v1.4 core on `mem` that the driver (with `rings`, as they were on the source) has
/// negotiated `features` with and programmed the queues of, not yet DRIVER_OK.
fn destination(mem: Arc<Mem>, features: u64, rings: Vec<Option<RingDriver>>) -> CoreDriver {
    let irq = Arc::new(InterruptCounter::default());
    let device = Box::new(CountingDevice::new(0, 16));
    let core = DeviceCore::new(device, mem.clone(), irq.clone(), v14_options()).unwrap();
    let mut d = CoreDriver::around(core, mem, irq);
    d.negotiate(features);
    d.rings = rings;
    d.reprogram_queues();
    d
}

/// virtio 1.4 2.4.1 ("The device MUST ... write back any associated descriptors for all
/// observed buffers" when stopped; "SUSPEND": the device finishes its work first) with
/// spec-decisions §32: under the v1.4 profile a stop (admin Freeze, as DEV_MODE_SET STOPPED, or
/// SUSPEND) of a packed queue with EVENT_IDX leaves its next position, DESC-flagged, in the
/// device event suppression structure; a destination on a copy of memory whose hypervisor sets
/// the positions from memory before DRIVER_OK takes the buffers made available after the stop
/// and every later one, each once; the source resumed in place continues too.
#[test]
fn a_v1_4_stop_records_the_packed_position_and_a_destination_starts_there() {
    let features = bits(&V14_FEATURES);
    for suspend in [false, true] {
        let mut source =
            CoreDriver::with_options(Box::new(CountingDevice::new(0, 16)), v14_options());
        source.start(features);
        // 21 one-slot chains: the position crosses the wrap of the 16-entry ring.
        for batch in [5, 7, 9] {
            let offered = source.offer(batch);
            source.core.kick(0);
            assert_eq!(ids(&source.collect()), {
                let mut o = offered;
                o.sort_unstable();
                o
            });
        }
        // Only the stop's own write can make the position appear.
        let config = disable_in_memory(&source);
        if suspend {
            source.core.write_status(RUNNING | DeviceStatus::SUSPEND);
            assert!(source.core.status().contains(DeviceStatus::SUSPEND));
        } else {
            let change = source.core.set_admin_mode(DevMode::Freeze).unwrap();
            assert_eq!(change, AdminModeChange::Done);
        }
        let expected = RingPosition {
            index: 21 % 16,
            wrap_counter: false,
        };
        assert_eq!(
            packed_position(&*source.mem, &config),
            Ok(expected),
            "suspend {suspend}"
        );

        // Made available after the stop: latched, not taken.
        let mut late = source.offer(2);
        source.core.kick(0);
        assert!(source.collect().is_empty());
        let copy = copy_of(&source.mem);
        let rings_at_copy = source.rings.clone();

        // The source resumes in place (a migration rolled back): it takes the late buffers.
        if suspend {
            source.core.write_status(RUNNING | DeviceStatus::SUSPEND);
        } else {
            source.core.set_admin_mode(DevMode::Active).unwrap();
        }
        source.core.kick(0);
        assert_eq!(ids(&source.collect()), {
            late.sort_unstable();
            late.clone()
        });

        // The destination, on the copy taken while stopped, with the driver's rings as they
        // were then (the in-place run above wrote only to the source's memory).
        let mut dest = destination(copy, features, rings_at_copy);
        let [ring] = &mut dest.rings[..] else {
            panic!("one queue")
        };
        let ring = ring.as_mut().unwrap();
        assert_eq!(
            ring.outstanding(),
            2,
            "the late buffers are still outstanding"
        );
        dest.core.set_ring_positions_from_memory().unwrap();
        dest.core.write_status(RUNNING);
        assert_eq!(dest.core.status(), RUNNING);
        dest.core.kick(0);
        assert_eq!(ids(&dest.collect()), late, "the late buffers, once");
        for _ in 0..3 {
            let mut more = dest.offer(10);
            more.sort_unstable();
            dest.core.kick(0);
            assert_eq!(ids(&dest.collect()), more);
        }
        assert!(dest.collect().is_empty(), "nothing twice");
    }
}

/// spec-decisions §32: positions are set only under the v1.4 profile, after FEATURES_OK and
/// before DRIVER_OK, in the negotiated ring format; a packed ring without EVENT_IDX has no
/// recorded position and is refused with the queue named; a refusal changes nothing.
#[test]
fn ring_positions_are_set_only_in_their_window() {
    let features = bits(&V14_FEATURES);
    let mut d = CoreDriver::with_options(Box::new(CountingDevice::new(0, 16)), v14_options());
    d.prepare(features);
    let split = QueuePosition::Split(0);
    assert!(matches!(
        d.core.set_queue_position(0, split),
        Err(DeviceError::PositionWindow(_))
    ));
    assert!(matches!(
        d.core
            .set_queue_position(1, QueuePosition::Packed(RingPosition::INITIAL)),
        Err(DeviceError::PositionWindow(_))
    ));
    // Nothing recorded yet in a fresh ring: flags ENABLE (0).
    assert_eq!(
        d.core.set_ring_positions_from_memory(),
        Err(DeviceError::RingPosition {
            index: 0,
            source: PositionError::NotRecorded { flags: 0 }
        })
    );
    d.core.set_admin_mode(DevMode::Freeze).unwrap();
    assert!(matches!(
        d.core
            .set_queue_position(0, QueuePosition::Packed(RingPosition::INITIAL)),
        Err(DeviceError::PositionWindow(_))
    ));
    d.core.set_admin_mode(DevMode::Active).unwrap();
    d.core
        .set_queue_position(0, QueuePosition::Packed(RingPosition::INITIAL))
        .unwrap();
    d.core.write_status(RUNNING);
    assert!(matches!(
        d.core.set_ring_positions_from_memory(),
        Err(DeviceError::PositionWindow(_))
    ));

    let without = bits(&[Feature::Version1, Feature::RingPacked]);
    d.prepare(without);
    let err = d.core.set_ring_positions_from_memory().unwrap_err();
    assert_eq!(
        err,
        DeviceError::RingPosition {
            index: 0,
            source: PositionError::NoEventIdx
        }
    );
    assert!(err.to_string().contains("Queue 0"), "{err}");

    let mut seeds = CoreDriver::counting();
    seeds.prepare(virtio_lm_device::testing::default_features());
    assert!(matches!(
        seeds.core.set_ring_positions_from_memory(),
        Err(DeviceError::PositionWindow(_))
    ));
}

/// Writes flags DISABLE with a garbage `desc` into queue 0's device event suppression
/// structure, as a device type that disabled notifications would leave it, and returns the
/// queue's configuration.
fn disable_in_memory(d: &CoreDriver) -> virtio_lm_queue::QueueConfig {
    let config = *d.rings[0].as_ref().unwrap().config();
    d.mem
        .write_obj([0xffu8, 0xff, 1, 0], config.device_area)
        .unwrap();
    config
}

/// spec-decisions §32: a v1.4 stop that leaves chains in flight (a device recording them
/// instead of completing) has no position to give: it withdraws the structure (DISABLE), so a
/// destination refuses the queue instead of losing those chains. The seeds profile, which has
/// queue state, records nothing.
#[test]
fn a_stop_with_chains_in_flight_withdraws_and_the_seeds_profile_records_nothing() {
    let options = CoreOptions {
        quiesce_mode: QuiesceMode::RecordInflight,
        ..v14_options()
    };
    let mut d = CoreDriver::with_options(Box::new(SlowDevice::new()), options);
    d.start(bits(&V14_FEATURES));
    let config = *d.rings[0].as_ref().unwrap().config();
    d.offer(2);
    d.core.kick(0);
    let change = d.core.set_admin_mode(DevMode::Freeze).unwrap();
    assert_eq!(change, AdminModeChange::Done);
    assert_eq!(
        packed_position(&*d.mem, &config),
        Err(PositionError::NotRecorded { flags: 1 })
    );

    let mut seeds = CoreDriver::counting();
    seeds.start(virtio_lm_device::testing::features_of(
        &[Feature::Version1, Feature::EventIdx, Feature::DeviceStop],
        true,
    ));
    seeds.offer(3);
    seeds.core.kick(0);
    assert_eq!(seeds.collect().len(), 3);
    let config = disable_in_memory(&seeds);
    seeds.core.set_admin_mode(DevMode::Freeze).unwrap();
    assert_eq!(
        packed_position(&*seeds.mem, &config),
        Err(PositionError::NotRecorded { flags: 1 })
    );
}
