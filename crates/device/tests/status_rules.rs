//! The device-status and feature-negotiation rules of the core, each pinned so that breaking it
//! fails a test (found by `scripts/mutants`: these mutants survived the seed tests).

use std::sync::Arc;

use virtio_lm_device::testing::{self, ConfigDevice, RUNNING, SETUP};
use virtio_lm_device::{CoreOptions, DeviceCore, DeviceError, InterruptCounter};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

const ACK_DRIVER: DeviceStatus = DeviceStatus::ACKNOWLEDGE.union(DeviceStatus::DRIVER);

fn core_with(options: CoreOptions) -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
    let mem = Arc::new(Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let irq = Arc::new(InterruptCounter::default());
    let core = DeviceCore::new(Box::new(ConfigDevice::new()), mem, irq.clone(), options).unwrap();
    (core, irq)
}

/// Negotiates VERSION_1 plus `extra`, lays out and enables the queue, sets DRIVER_OK.
fn start(core: &mut DeviceCore<Mem>, extra: &[Feature]) {
    let features = extra
        .iter()
        .fold(bit(Feature::Version1), |f, x| f | bit(*x));
    let kind = testing::negotiate(core, features);
    let ring = testing::ring_features(core, features);
    let mem = core.mem().clone();
    testing::setup_queues(core, &*mem, kind, ring, 0x1000, 0x10000);
    core.write_status(RUNNING);
    assert_eq!(core.status(), RUNNING);
}

fn new_core() -> (DeviceCore<Mem>, Arc<InterruptCounter>) {
    core_with(CoreOptions::default())
}

fn bit(feature: Feature) -> u64 {
    Profile::Seeds.mask(feature).unwrap()
}

/// ACKNOWLEDGE, DRIVER, `features`, then a write asking for FEATURES_OK; returns the status.
fn offer_features(core: &mut DeviceCore<Mem>, features: u64) -> DeviceStatus {
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    core.write_status(ACK_DRIVER);
    core.set_driver_features(features);
    core.write_status(SETUP);
    core.status()
}

/// spec-decisions §2: "FEATURES_OK after DRIVER and only if the driver's features are a subset
/// of the offer and include VERSION_1". A driver accepting a bit the device did not offer gets
/// no FEATURES_OK, even with VERSION_1 among its features.
#[test]
fn features_ok_refused_for_a_feature_not_offered() {
    let (mut core, _) = new_core();
    let not_offered = 1u64 << 0; // ConfigDevice offers no device-type feature
    assert_eq!(core.device_features() & not_offered, 0);
    let status = offer_features(&mut core, bit(Feature::Version1) | not_offered);
    assert_eq!(status, ACK_DRIVER, "FEATURES_OK must not be set");
}

/// spec-decisions §2: FEATURES_OK only if the driver's features "include VERSION_1". Offered
/// features without VERSION_1 are refused; the same with VERSION_1 are accepted.
#[test]
fn features_ok_refused_without_version_1() {
    let (mut core, _) = new_core();
    let event_idx = bit(Feature::EventIdx);
    assert_eq!(offer_features(&mut core, event_idx), ACK_DRIVER);
    let (mut core, _) = new_core();
    let status = offer_features(&mut core, event_idx | bit(Feature::Version1));
    assert_eq!(status, SETUP);
}

/// spec-decisions §1: the profile a core is built with numbers its status and feature bits;
/// the transport asks the core for it (e.g. where VIRTIO_F_QUEUE_STATE sits), so the core must
/// report the profile it was built with, not the default.
#[test]
fn core_reports_the_profile_it_was_built_with() {
    let options = CoreOptions {
        profile: Profile::V1_4,
        features: vec![Feature::Version1, Feature::Suspend],
        ..CoreOptions::default()
    };
    let (core, _) = core_with(options);
    assert_eq!(core.profile(), Profile::V1_4);
    let suspend = Profile::V1_4.mask(Feature::Suspend).unwrap();
    assert_eq!(core.device_features() & suspend, suspend);
}

/// spec-decisions §2: "DRIVER after ACKNOWLEDGE". ACKNOWLEDGE sets only itself, and DRIVER
/// written from 0 is not set.
#[test]
fn driver_is_set_only_after_acknowledge() {
    let (mut core, _) = new_core();
    core.write_status(DeviceStatus::DRIVER);
    assert_eq!(core.status(), DeviceStatus::RESET, "DRIVER from 0");
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    assert_eq!(core.status(), DeviceStatus::ACKNOWLEDGE);
    core.write_status(ACK_DRIVER);
    assert_eq!(core.status(), ACK_DRIVER);
}

/// spec-decisions §2: "SUSPEND once presented [is] the device's: the driver can [not] clear
/// [it]" and "a write that clears any other bit the driver set is ignored whole". A write of
/// DRIVER_OK without SUSPEND does not resume a suspended device; the same with SUSPEND does.
#[test]
fn a_write_clearing_suspend_is_ignored_whole() {
    let (mut core, _) = new_core();
    start(&mut core, &[Feature::Suspend]);
    core.write_status(RUNNING | DeviceStatus::SUSPEND);
    let suspended = SETUP | DeviceStatus::SUSPEND;
    assert_eq!(core.status(), suspended);
    core.write_status(RUNNING);
    assert_eq!(core.status(), suspended, "SUSPEND cleared by the driver");
    core.write_status(suspended | DeviceStatus::DRIVER_OK);
    assert_eq!(core.status(), RUNNING, "resumed by DRIVER_OK");
}

/// Seed 000 lets the driver clear only DEVICE_STOPPED (spec-decisions §2: "a write that clears
/// any other bit the driver set is ignored whole"): a write that clears DRIVER_OK together
/// with DEVICE_STOPPED leaves the device stopped, and so does writing DEVICE_STOPPED again
/// ("re-writing a bit that is already set has no side effect"); clearing DEVICE_STOPPED alone
/// resumes it.
#[test]
fn a_write_clearing_driver_ok_does_not_resume_a_stop() {
    let (mut core, _) = new_core();
    start(&mut core, &[Feature::DeviceStop]);
    let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
    core.write_status(stopped);
    assert_eq!(core.status(), stopped);
    core.write_status(stopped);
    assert_eq!(
        core.status(),
        stopped,
        "re-writing DEVICE_STOPPED has no side effect"
    );
    core.write_status(SETUP);
    assert_eq!(core.status(), stopped, "DRIVER_OK cleared by the driver");
    assert!(core.quiesced_in_band());
    core.write_status(RUNNING);
    assert_eq!(core.status(), RUNNING, "resumed by clearing DEVICE_STOPPED");
}

/// Seed 002 / spec-decisions §2: DEVICE_NEEDS_RESET raised during initialisation (DRIVER_OK
/// clear, not suspended) does not stop the driver from setting DRIVER_OK: the status then reads
/// DRIVER_OK with DEVICE_NEEDS_RESET, which is how the driver learns of the error.
#[test]
fn driver_ok_is_set_after_needs_reset_during_initialisation() {
    let (mut core, _) = new_core();
    testing::negotiate(&mut core, bit(Feature::Version1));
    core.needs_reset(DeviceError::MalformedRequest("test"));
    assert_eq!(core.status(), SETUP | DeviceStatus::DEVICE_NEEDS_RESET);
    core.write_status(RUNNING);
    assert_eq!(core.status(), RUNNING | DeviceStatus::DEVICE_NEEDS_RESET);
}

/// Seed 000: "the device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set"; spec-decisions
/// §2: "a stopped device that is then suspended stays stopped; the driver clears
/// DEVICE_STOPPED after resuming from SUSPEND". One write that suspends the stopped device and
/// clears DEVICE_STOPPED leaves it stopped: once SUSPEND is presented DRIVER_OK is clear.
#[test]
fn suspending_a_stopped_device_keeps_it_stopped() {
    let (mut core, _) = new_core();
    start(&mut core, &[Feature::DeviceStop, Feature::Suspend]);
    core.write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    assert_eq!(core.status(), RUNNING | DeviceStatus::DEVICE_STOPPED);
    core.write_status(RUNNING | DeviceStatus::SUSPEND);
    let both = SETUP | DeviceStatus::SUSPEND | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(
        core.status(),
        both,
        "DEVICE_STOPPED cleared while suspended"
    );
    core.write_status(both | DeviceStatus::DRIVER_OK);
    let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(
        core.status(),
        stopped,
        "resumed from SUSPEND, still stopped"
    );
    core.write_status(RUNNING);
    assert_eq!(core.status(), RUNNING);
}
