//! Device context end to end (spec-notes §5, seed 004): save a quiescent core, encode, decode,
//! restore into a fresh core on the same guest memory (as after migration), resume, and check
//! that the device behaves from then on exactly as the source would have: every buffer completes
//! exactly once, in-flight ones included, and no notification is lost.

mod common;

use std::sync::atomic::Ordering;

use common::context::{collect_rearm, destination, record_inflight, AdoptingDevice, MODE_FIELD};
use common::{bit, CoreDriver, RUNNING, SETUP};
use virtio_lm_device::context::{decode, encode, DeviceContext, DeviceField};
use virtio_lm_device::testing::CountingDevice;
use virtio_lm_device::{CoreOptions, VirtioDevice};
use virtio_lm_queue::{RingPosition, UsedBuffer};
use virtio_lm_spec::{DeviceStatus, Feature};

use common::Mem;

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
const SUSPENDED: DeviceStatus = SETUP.union(DeviceStatus::SUSPEND);

fn features(packed: bool) -> u64 {
    let mut f = bit(Feature::Version1)
        | bit(Feature::DeviceStop)
        | bit(Feature::QueueState)
        | bit(Feature::Suspend)
        | bit(Feature::EventIdx);
    if packed {
        f |= bit(Feature::RingPacked);
    }
    f
}

fn sorted_ids(used: &[UsedBuffer]) -> Vec<u16> {
    let mut ids: Vec<u16> = used.iter().map(|u| u.id).collect();
    ids.sort_unstable();
    ids
}

fn sorted(mut ids: Vec<u16>) -> Vec<u16> {
    ids.sort_unstable();
    ids
}

/// The wire trip: encode, decode, and the decoded context is the saved one.
fn over_the_wire(ctx: &DeviceContext) -> DeviceContext {
    let decoded = decode(&encode(ctx).unwrap()).unwrap();
    assert_eq!(&decoded, ctx);
    decoded
}

fn rng() -> Box<dyn VirtioDevice<Mem>> {
    Box::new(CountingDevice::new(0, 16))
}

/// Seed 004: "The driver MAY write the device context before changing the device mode from
/// Freeze to Stop or from Freeze to Active" — the context alone carries the device: a fresh
/// device restored from it on the same guest memory continues where the source stopped, split
/// and packed, with requests in flight (QuiesceMode::RecordInflight): every buffer completes
/// exactly once (spec-notes §7 pitfall 2), kicks while stopped are latched, and the next
/// notification is not lost (pitfall 4).
#[test]
fn context_to_fresh_device_with_requests_in_flight() {
    for packed in [false, true] {
        let source_device = AdoptingDevice::new(true);
        let release = source_device.release.clone();
        let mut src = CoreDriver::with_options(Box::new(source_device), record_inflight());
        src.start(features(packed));
        let done = src.offer(3);
        src.core.kick(0);
        assert_eq!(sorted_ids(&collect_rearm(&mut src)), sorted(done));
        release.store(false, Ordering::SeqCst);
        let mut outstanding = src.offer(4);
        src.core.kick(0);
        assert!(src.collect().is_empty(), "held in process");

        src.core.write_status(STOPPED);
        assert_eq!(src.core.status(), STOPPED, "stopped without draining");
        let saved = src.core.save_context().unwrap();
        let inflight: Vec<u16> = saved.queues[0].state.inflight_ids();
        assert_eq!(sorted(inflight), sorted(outstanding.clone()));
        let ctx = over_the_wire(&saved);

        let mut dst = destination(
            &mut src,
            Box::new(AdoptingDevice::new(true)),
            record_inflight(),
        );
        dst.core.restore_context(&ctx).unwrap();
        assert_eq!(dst.core.status(), STOPPED);
        assert_eq!(
            dst.core.save_context().unwrap(),
            ctx,
            "the whole state arrived"
        );

        outstanding.extend(dst.offer(2));
        dst.core.kick(0);
        assert!(dst.collect().is_empty(), "still stopped: latched");
        assert_eq!(dst.irq.used(), 0, "no interrupt while stopped");

        dst.core.write_status(RUNNING);
        assert_eq!(dst.core.status(), RUNNING);
        let used = collect_rearm(&mut dst);
        assert_eq!(sorted_ids(&used), sorted(outstanding), "packed={packed}");
        assert!(used.iter().all(|u| u.len == 0x40));
        assert!(dst.irq.used() >= 1, "completions notified");

        let before = dst.irq.used();
        let next = dst.offer(1);
        dst.core.kick(0);
        assert_eq!(sorted_ids(&dst.collect()), next);
        assert_eq!(
            dst.irq.used(),
            before + 1,
            "the next notification is not lost"
        );
    }
}

/// spec-notes §5 VQ_STATE "flags bit 0 = a used-buffer notification is owed" and §7 pitfall 4:
/// an owed notification travels with the context and is sent once on resume; without it the
/// restored device sends none (no spurious one either).
#[test]
fn owed_notification_travels_with_the_context() {
    for packed in [false, true] {
        for owed in [false, true] {
            let mut src = CoreDriver::counting();
            src.start(features(packed));
            src.offer(2);
            src.core.kick(0);
            assert_eq!(src.collect().len(), 2);
            src.core.write_status(STOPPED);
            let mut ctx = src.core.save_context().unwrap();
            assert!(!ctx.queues[0].state.notification_owed);
            // As if the source stopped between publishing used entries and notifying.
            ctx.queues[0].state.notification_owed = owed;
            let ctx = over_the_wire(&ctx);
            let mut dst = destination(&mut src, rng(), CoreOptions::default());
            dst.core.restore_context(&ctx).unwrap();
            dst.core.write_status(RUNNING);
            assert_eq!(
                dst.irq.used(),
                u64::from(owed),
                "packed={packed} owed={owed}"
            );
        }
    }
}

/// Seed 003 ("Record Virtqueue State of each enabled virtqueue", as resolved in spec-notes §2)
/// with spec-notes §5: the context of a suspended device restores as suspended (DRIVER_OK
/// clear); setting DRIVER_OK resumes it at the destination, and kicks latched while suspended
/// are processed.
#[test]
fn suspended_context_resumes_with_driver_ok() {
    for packed in [false, true] {
        let mut src = CoreDriver::counting();
        src.start(features(packed));
        src.offer(3);
        src.core.kick(0);
        assert_eq!(collect_rearm(&mut src).len(), 3);
        src.core.write_status(RUNNING | DeviceStatus::SUSPEND);
        assert_eq!(src.core.status(), SUSPENDED);
        let ctx = over_the_wire(&src.core.save_context().unwrap());

        let mut dst = destination(&mut src, rng(), CoreOptions::default());
        dst.core.restore_context(&ctx).unwrap();
        assert_eq!(dst.core.status(), SUSPENDED);
        let ids = dst.offer(2);
        dst.core.kick(0);
        assert!(dst.collect().is_empty());
        dst.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
        assert_eq!(dst.core.status(), RUNNING);
        assert_eq!(sorted_ids(&dst.collect()), sorted(ids), "packed={packed}");
        assert_eq!(dst.irq.used(), 1);
    }
}

/// Seed 001: "a driver MUST set the state of each virtqueue after setting the FEATURE_OK status
/// bit but before setting the DRIVER_OK status bit" — the context of a device in that window
/// (queue state written, DRIVER_OK not yet set) restores the same window; DRIVER_OK then starts
/// the queues from the written state.
#[test]
fn setup_window_context_continues_at_driver_ok() {
    for packed in [false, true] {
        let f = features(packed);
        let mut src = CoreDriver::counting();
        src.start(f);
        for _ in 0..5 {
            src.offer(1);
            src.core.kick(0);
            assert_eq!(src.collect().len(), 1);
        }
        src.negotiate(f);
        src.reprogram_queues();
        let state = if packed {
            RingPosition {
                index: 5,
                wrap_counter: true,
            }
            .to_state()
        } else {
            5
        };
        src.core.set_queue_avail_state(0, state);
        if packed {
            src.core.set_queue_used_state(0, state);
        }
        assert_eq!(src.core.status(), SETUP);
        let ctx = over_the_wire(&src.core.save_context().unwrap());

        let mut dst = destination(&mut src, rng(), CoreOptions::default());
        dst.core.restore_context(&ctx).unwrap();
        assert_eq!(dst.core.status(), SETUP);
        assert_eq!(dst.core.queue_avail_state(0), state);
        dst.core.write_status(RUNNING);
        assert_eq!(dst.core.status(), RUNNING, "packed={packed}");
        let ids = dst.offer(2);
        dst.core.kick(0);
        assert_eq!(sorted_ids(&dst.collect()), sorted(ids));
    }
}

/// spec-notes §7 pitfall 9: "negotiated features and device-specific state survive" — driver
/// features, the packed ring, the configuration generation and the device type's own state
/// (a device-specific field) are the same after the restore.
#[test]
fn features_generation_and_device_state_survive() {
    let device = AdoptingDevice::new(true);
    let mode = device.mode.clone();
    let mut src = CoreDriver::with_options(Box::new(device), record_inflight());
    src.start(features(true));
    src.core
        .change_config(|_dev: &mut dyn VirtioDevice<Mem>| {});
    mode.store(2, Ordering::SeqCst);
    src.core.write_status(STOPPED);
    let ctx = over_the_wire(&src.core.save_context().unwrap());
    assert_eq!(
        ctx.device_fields,
        [DeviceField {
            field_type: MODE_FIELD,
            flags: 0,
            value: vec![2],
        }]
    );

    let device = AdoptingDevice::new(true);
    let restored_mode = device.mode.clone();
    let mut dst = destination(&mut src, Box::new(device), record_inflight());
    dst.core.restore_context(&ctx).unwrap();
    assert_eq!(restored_mode.load(Ordering::SeqCst), 2);
    assert_eq!(dst.core.driver_features(), features(true));
    assert!(dst.core.negotiated(Feature::RingPacked));
    assert_eq!(dst.core.config_generation(), 1);
    assert_eq!(dst.core.save_context().unwrap(), ctx);
}

/// spec-notes §7 pitfall 7: "cancel at every step; the source resumes; a second migration
/// succeeds" — saving changes nothing at the source, which resumes after a cancelled
/// migration; the next migration, and a migration onwards from the destination, both work.
#[test]
fn cancelled_then_repeated_migrations() {
    let mut src = CoreDriver::with_options(Box::new(AdoptingDevice::new(true)), record_inflight());
    src.start(features(false));
    src.core.write_status(STOPPED);
    let cancelled = src.core.save_context().unwrap();
    src.core.write_status(RUNNING);
    let ids = src.offer(2);
    src.core.kick(0);
    assert_eq!(sorted_ids(&src.collect()), ids, "the source resumed");

    src.core.write_status(STOPPED);
    let ctx = over_the_wire(&src.core.save_context().unwrap());
    assert_ne!(ctx, cancelled);
    let mut first = destination(
        &mut src,
        Box::new(AdoptingDevice::new(true)),
        record_inflight(),
    );
    first.core.restore_context(&ctx).unwrap();
    first.core.write_status(RUNNING);
    let ids = first.offer(3);
    first.core.kick(0);
    assert_eq!(sorted_ids(&first.collect()), sorted(ids));

    first.core.write_status(STOPPED);
    let onwards = over_the_wire(&first.core.save_context().unwrap());
    let mut second = destination(
        &mut first,
        Box::new(AdoptingDevice::new(true)),
        record_inflight(),
    );
    second.core.restore_context(&onwards).unwrap();
    second.core.write_status(RUNNING);
    let ids = second.offer(2);
    second.core.kick(0);
    assert_eq!(sorted_ids(&second.collect()), sorted(ids));
}

/// spec-notes §5 with seed 004 ("the device MUST discard the device context ... the device
/// functions as if the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE was never received"): a context
/// restored into a device that ran before replaces all of its state, including a reset
/// device's context (status 0) that returns it to its initial state.
#[test]
fn restore_replaces_a_used_device() {
    let fresh = CoreDriver::counting();
    let initial = fresh.core.save_context().unwrap();
    assert_eq!(initial.device_status, 0);
    let mut d = CoreDriver::counting();
    d.start(features(true));
    d.offer(3);
    d.core.kick(0);
    d.core.write_status(STOPPED);
    d.core.restore_context(&initial).unwrap();
    assert_eq!(d.core.status(), DeviceStatus::RESET);
    assert_eq!(d.core.save_context().unwrap(), initial);
    d.start(features(false));
    let ids = d.offer(2);
    d.core.kick(0);
    assert_eq!(sorted_ids(&d.collect()), ids);
}
