//! Device-context checks of the core (seed 004 context restore), each pinned so that breaking
//! it fails a test (found by `scripts/mutants`: these mutants survived the context tests).

use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};
use virtio_lm_device::testing::{self, ConfigDevice, SlowDevice, RUNNING, SETUP};

use virtio_lm_device::context::DeviceField;
use virtio_lm_device::{
    ContextError, CoreOptions, DeviceContext, DeviceCore, DeviceError, InterruptCounter,
    QueueAccess, VirtioDevice,
};
use virtio_lm_queue::{BufferSpec, QueueConfig, RingDriver, SavedChain, Segment};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

const RING: u64 = 0x1000;

fn core_on(mem: &Arc<Mem>, options: CoreOptions) -> DeviceCore<Mem> {
    core_and_irq(mem, options).0
}

fn core_and_irq(mem: &Arc<Mem>, options: CoreOptions) -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
    let irq = Arc::new(InterruptCounter::default());
    let core = DeviceCore::new(
        Box::new(ConfigDevice::new()),
        mem.clone(),
        irq.clone(),
        options,
    );
    (core.unwrap(), irq)
}

fn memory() -> Arc<Mem> {
    Arc::new(Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
}

fn bits(profile: Profile, features: &[Feature]) -> u64 {
    profile.feature_set(features).unwrap()
}

/// The context of a core (options `options`) negotiated to FEATURES_OK with `features`, queue
/// 0 laid out at [`RING`] and enabled, DRIVER_OK not set.
fn context_at_features_ok(mem: &Arc<Mem>, options: CoreOptions, features: u64) -> DeviceContext {
    let mut source = core_on(mem, options);
    let kind = testing::negotiate(&mut source, features);
    let ring = testing::ring_features(&source, features);
    let (config, _) = QueueConfig::contiguous(kind, 16, GuestAddress(RING), ring);
    testing::program_queue(&mut source, 0, &config);
    assert_eq!(source.status(), SETUP);
    source.save_context().unwrap()
}

fn seeds(features: &[Feature]) -> u64 {
    bits(Profile::Seeds, features)
}

/// Whether a fresh core with the default options takes `ctx`.
fn accepted(mem: &Arc<Mem>, ctx: &DeviceContext) -> bool {
    core_on(mem, CoreOptions::default())
        .validate_context(ctx)
        .is_ok()
}

/// spec-decisions §2 and §5: a restored status must be one the device can be in; SUSPEND is
/// presented only with VIRTIO_F_SUSPEND negotiated and DRIVER_OK clear.
#[test]
fn suspend_in_a_context_needs_the_feature_and_driver_ok_clear() {
    let mem = memory();
    let with = seeds(&[Feature::Version1, Feature::Suspend]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), with);
    ctx.device_status = (SETUP | DeviceStatus::SUSPEND).bits();
    assert!(accepted(&mem, &ctx), "suspended context");
    ctx.device_status = (SETUP | DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK).bits();
    assert!(!accepted(&mem, &ctx), "SUSPEND with DRIVER_OK");

    let without = seeds(&[Feature::Version1]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), without);
    ctx.device_status = (SETUP | DeviceStatus::SUSPEND).bits();
    assert!(!accepted(&mem, &ctx), "SUSPEND without VIRTIO_F_SUSPEND");
}

/// spec-decisions §1 and §5: a context is checked in the profile of the device; a v1.4 device
/// (which has no DEVICE_STOPPED) takes back its own context.
#[test]
fn a_v1_4_device_takes_its_own_context() {
    let mem = memory();
    let options = CoreOptions {
        profile: Profile::V1_4,
        features: vec![Feature::Version1, Feature::Suspend],
        ..CoreOptions::default()
    };
    let features = bits(Profile::V1_4, &[Feature::Version1]);
    let ctx = context_at_features_ok(&mem, options.clone(), features);
    core_on(&mem, options).restore_context(&ctx).unwrap();
}

/// spec-decisions §5: a queue that does not start with the restore (DRIVER_OK not set) is
/// "checked as far as it can be without a ring"; the ring in guest memory is read only when it
/// starts. A context taken before DRIVER_OK restores whatever the ring memory holds, and keeps
/// the queue's state.
#[test]
fn a_queue_not_started_is_restored_without_reading_its_ring() {
    let mem = memory();
    let features = seeds(&[Feature::Version1, Feature::QueueState]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), features);
    ctx.queues[0].state.avail_state = 7;
    // A split ring whose available index is far ahead of the state: it could not start.
    let driver_area = ctx.queues[0].config.driver;
    mem.write_obj(200u16, GuestAddress(driver_area + 2))
        .unwrap();
    let mut dest = core_on(&mem, CoreOptions::default());
    dest.restore_context(&ctx).unwrap();
    assert_eq!(dest.status(), SETUP);
    assert_eq!(dest.queue_avail_state(0), 7);
}

/// spec-decisions §5 / §3: a packed state is checked against the queue size even when the queue
/// does not start now (indices below the size).
#[test]
fn a_packed_state_out_of_range_is_refused_before_driver_ok() {
    let mem = memory();
    let features = seeds(&[Feature::Version1, Feature::RingPacked]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), features);
    assert!(accepted(&mem, &ctx));
    ctx.queues[0].state.avail_state = 0x8000 | 16; // index 16 in a queue of 16
    assert!(!accepted(&mem, &ctx));
}

fn chain(id: u16, ring_slots: u16) -> SavedChain {
    SavedChain {
        id,
        ring_slots,
        segments: vec![Segment {
            addr: GuestAddress(0x8_0000),
            len: 16,
            writable: true,
        }],
    }
}

/// spec-decisions §5: an in-flight chain occupies one ring slot in a split ring, and from one to
/// the queue size in a packed ring.
#[test]
fn in_flight_ring_slots_fit_the_ring_format() {
    let mem = memory();
    let split = seeds(&[Feature::Version1]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), split);
    ctx.queues[0].state.inflight = vec![chain(0, 1)];
    assert!(accepted(&mem, &ctx), "split, one slot");
    ctx.queues[0].state.inflight = vec![chain(0, 2)];
    assert!(!accepted(&mem, &ctx), "split, two slots");

    let packed = seeds(&[Feature::Version1, Feature::RingPacked]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), packed);
    for (slots, ok) in [(1, true), (16, true), (0, false), (17, false)] {
        ctx.queues[0].state.inflight = vec![chain(0, slots)];
        assert_eq!(accepted(&mem, &ctx), ok, "packed, {slots} slots");
    }
}

fn segment(addr: u64, writable: bool) -> Segment {
    Segment {
        addr: GuestAddress(addr),
        len: 16,
        writable,
    }
}

/// spec-decisions §5: an in-flight chain's buffers are "readable-then-writable" and "inside guest
/// memory", as a chain the device validated when it took it.
#[test]
fn in_flight_buffers_are_readable_then_writable_inside_memory() {
    let mem = memory();
    let split = seeds(&[Feature::Version1]);
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), split);
    let cases = [
        (
            vec![segment(0x8_0000, false), segment(0x8_0100, true)],
            true,
        ),
        (vec![segment(0x8_0000, true), segment(0x8_0100, true)], true),
        (
            vec![segment(0x8_0000, false), segment(0x8_0100, false)],
            true,
        ),
        (
            vec![segment(0x8_0000, true), segment(0x8_0100, false)],
            false,
        ),
        (vec![segment(0x20_0000, true)], false),
    ];
    for (segments, ok) in cases {
        let chain = SavedChain {
            id: 0,
            ring_slots: 1,
            segments: segments.clone(),
        };
        ctx.queues[0].state.inflight = vec![chain];
        assert_eq!(accepted(&mem, &ctx), ok, "{segments:?}");
    }
}

/// Seed 004: "the device MUST respond with an error … if there is a mismatch between the device
/// context field length … and the length of the field in the device". An empty DRIVER_FEATURES
/// is refused with that error (and nothing panics).
#[test]
fn empty_driver_features_are_a_length_mismatch() {
    let mem = memory();
    let mut ctx = context_at_features_ok(&mem, CoreOptions::default(), seeds(&[Feature::Version1]));
    ctx.driver_features.clear();
    let err = core_on(&mem, CoreOptions::default())
        .validate_context(&ctx)
        .unwrap_err();
    assert!(
        matches!(err, ContextError::FieldLength { length: 0, .. }),
        "{err:?}"
    );
}

/// spec-decisions §5: a running context starts only the queues the driver enabled; a queue
/// programmed but never enabled is not built against guest memory (its ring may be anywhere).
#[test]
fn a_running_context_starts_only_enabled_queues() {
    let mem = memory();
    let mut source = core_on(&mem, CoreOptions::default());
    testing::negotiate(&mut source, seeds(&[Feature::Version1]));
    source.write_queue(0, |r| r.desc = 0x4000_0000);
    source.write_status(RUNNING);
    assert_eq!(source.status(), RUNNING);
    source.set_admin_mode(DevMode::Stop).unwrap();
    let ctx = source.save_context().unwrap();
    let mut dest = core_on(&mem, CoreOptions::default());
    dest.restore_context(&ctx).unwrap();
    assert_eq!(dest.status(), RUNNING);
}

/// spec-decisions §3: "A queue started from a written state is re-checked at once and sends one
/// notification"; a queue state restored before DRIVER_OK counts as written (spec-decisions §5:
/// "as a driver-written state"), and an initial state as none.
#[test]
fn a_restored_written_state_notifies_once_at_driver_ok() {
    let mem = memory();
    let features = seeds(&[Feature::Version1, Feature::QueueState]);
    let base = context_at_features_ok(&mem, CoreOptions::default(), features);
    let (driver_area, device_area) = (base.queues[0].config.driver, base.queues[0].config.device);
    for (avail_state, notifications) in [(0, 0), (3, 1)] {
        let mut ctx = base.clone();
        ctx.queues[0].state.avail_state = avail_state;
        // `avail_state` buffers were made available and used (none in flight).
        mem.write_obj(avail_state, GuestAddress(driver_area + 2))
            .unwrap();
        mem.write_obj(avail_state, GuestAddress(device_area + 2))
            .unwrap();
        let (mut dest, irq) = core_and_irq(&mem, CoreOptions::default());
        dest.restore_context(&ctx).unwrap();
        dest.write_status(RUNNING);
        assert_eq!(dest.status(), RUNNING, "{:?}", dest.last_error());
        assert_eq!(irq.used(), notifications, "state {avail_state}");
    }
}

/// A device that counts its activations and saves the fields it is given.
struct Probe {
    activations: Arc<AtomicUsize>,
    fields: Vec<DeviceField>,
}

impl VirtioDevice<Mem> for Probe {
    virtio_lm_device::device_identity!(type: 0xfffc, queues: [16], config: 0);

    fn activate(&mut self, _features: u64) -> Result<(), DeviceError> {
        self.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn process_queue(&mut self, _: u16, _: &mut QueueAccess<'_, Mem>) -> Result<(), DeviceError> {
        Ok(())
    }

    fn save_state(&self) -> Vec<DeviceField> {
        self.fields.clone()
    }
}

fn probe_core(mem: &Arc<Mem>, fields: Vec<DeviceField>) -> (DeviceCore<Mem>, Arc<AtomicUsize>) {
    let activations = Arc::new(AtomicUsize::new(0));
    let probe = Probe {
        activations: activations.clone(),
        fields,
    };
    let irq = Arc::new(InterruptCounter::default());
    let core = DeviceCore::new(Box::new(probe), mem.clone(), irq, CoreOptions::default());
    (core.unwrap(), activations)
}

/// spec-decisions §5: the restore activates the device type as DRIVER_OK did on the source:
/// only for a context whose device runs (DRIVER_OK set, no DEVICE_NEEDS_RESET, not FAILED).
#[test]
fn restore_activates_the_device_only_for_a_running_context() {
    let mem = memory();
    let (mut source, _) = probe_core(&mem, Vec::new());
    testing::negotiate(&mut source, seeds(&[Feature::Version1]));
    let setup = source.save_context().unwrap();
    let mut running = setup.clone();
    running.device_status = RUNNING.bits();
    let mut broken = setup.clone();
    broken.device_status = (RUNNING | DeviceStatus::DEVICE_NEEDS_RESET).bits();
    for (ctx, activations) in [(&setup, 0), (&running, 1), (&broken, 0)] {
        let (mut dest, count) = probe_core(&mem, Vec::new());
        dest.restore_context(ctx).unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            activations,
            "{:?}",
            ctx.device_status
        );
    }
}

/// spec-decisions §5: a device type's saved fields are device-specific (0x0200–0x03FF); a
/// device that saves a generic field type has its context refused when it is saved, not when it
/// arrives.
#[test]
fn a_device_saving_a_generic_field_type_cannot_save_its_context() {
    let mem = memory();
    let field = DeviceField {
        field_type: FieldType(0x0102),
        flags: 0,
        value: vec![0; 8],
    };
    let (core, _) = probe_core(&mem, vec![field]);
    let err = core.save_context().unwrap_err();
    assert!(matches!(err, ContextError::Unencodable { .. }), "{err:?}");
}

/// Negotiates `features`, sets up the queues at [`RING`], sets DRIVER_OK and kicks queue 0 with
/// one writable buffer of 16 bytes at 0x8_0000; returns the ring drivers.
fn run_one_request(
    core: &mut DeviceCore<Mem>,
    mem: &Mem,
    features: u64,
) -> Vec<Option<RingDriver>> {
    let kind = testing::negotiate(core, features);
    let ring = testing::ring_features(core, features);
    let mut rings = testing::setup_queues(core, mem, kind, ring, RING, 0x10000);
    core.write_status(RUNNING);
    let ring = rings[0].as_mut().unwrap();
    ring.add_chain(mem, &[BufferSpec::writable(0x8_0000, 16)])
        .unwrap();
    ring.publish(mem).unwrap();
    core.kick(0);
    rings
}

/// spec-decisions §5: the context is saved only while the device is quiescent, "and no stop or
/// suspend still waiting for requests in process". A suspend waiting for a request refuses the
/// save; once the request is done and SUSPEND presents, the save succeeds.
#[test]
fn no_context_is_saved_while_a_suspend_waits_for_requests() {
    let mem = memory();
    let slow = SlowDevice::new();
    let release = slow.release.clone();
    let irq = Arc::new(InterruptCounter::default());
    let mut core =
        DeviceCore::new(Box::new(slow), mem.clone(), irq, CoreOptions::default()).unwrap();
    run_one_request(
        &mut core,
        &mem,
        seeds(&[Feature::Version1, Feature::Suspend]),
    );
    core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(core.status(), RUNNING, "suspend waits for the request");
    assert!(matches!(
        core.save_context(),
        Err(ContextError::NotQuiescent)
    ));
    release.store(true, Ordering::SeqCst);
    assert_eq!(core.status(), SETUP | DeviceStatus::SUSPEND);
    core.save_context().unwrap();
}

/// spec-decisions §5: a restored running queue is rebuilt with the ring features the context
/// negotiated. With VIRTIO_F_EVENT_IDX the driver's used_event decides notifications (spec-decisions
/// §8: a driver that disables them leaves used_event stale): after a restore the destination
/// keeps honouring it, and sends no notification the driver did not ask for.
#[test]
fn a_restored_queue_keeps_event_idx_suppression() {
    let mem = memory();
    let (mut source, source_irq) = core_and_irq(&mem, CoreOptions::default());
    let features = seeds(&[Feature::Version1, Feature::EventIdx]);
    assert!(testing::ring_features(&source, features).event_idx);
    let mut rings = run_one_request(&mut source, &mem, features);
    let ring = rings[0].as_mut().unwrap();
    assert_eq!(source_irq.used(), 1);
    ring.disable_interrupts(&*mem).unwrap();
    source.set_admin_mode(DevMode::Stop).unwrap();
    let ctx = source.save_context().unwrap();

    let (mut dest, dest_irq) = core_and_irq(&mem, CoreOptions::default());
    dest.restore_context(&ctx).unwrap();
    ring.add_chain(&*mem, &[BufferSpec::writable(0x8_0100, 16)])
        .unwrap();
    ring.publish(&*mem).unwrap();
    dest.kick(0);
    assert_eq!(ring.collect_used(&*mem).unwrap().len(), 2, "both used");
    assert_eq!(dest_irq.used(), 0, "notifications disabled by used_event");
}
