//! The device-status and feature-negotiation rules of the core, each pinned so that breaking it
//! fails a test (found by `scripts/mutants`: these mutants survived the seed tests).

use std::sync::Arc;

use virtio_lm_device::testing::{self, ConfigDevice, RUNNING, SETUP};
use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
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
