//! The engine under the published virtio 1.4 numbering profile (issue 15, "The engine under
//! v1.4"; spec-decisions §35): a VM whose devices, owner and guest drivers use the v1.4
//! numbers, and what a destination refuses about one.

use std::time::Duration;

use virtio_lm_migration::testing::{
    assert_clean, assert_completed, migrate_to, small, test_options,
};
use virtio_lm_migration::{MigrationControl, Outcome};
use virtio_lm_spec::{Feature, Profile};
use virtio_lm_vm::testing::{image, localhost, options, run_for};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;

/// A small v1.4 VM's options for the case `tag`, with its image and echo peer.
fn v14_options(tag: &str, ring: RingFormat) -> (ImageFile, EchoPeer, MachineOptions) {
    let image = image("mig-v14", tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let base = options(&image, &echo, ring, 1);
    let options = small(MachineOptions {
        profile: Profile::V1_4,
        ..base
    });
    (image, echo, options)
}

/// spec-decisions §35: under v1.4 the guest drivers negotiate VERSION_1, EVENT_IDX, SUSPEND
/// on bit 43 and RING_RESET, never DEVICE_STOP or QUEUE_STATE (1.4 does not number them), and
/// the workloads run on the v1.4 devices.
#[test]
fn a_v14_guest_negotiates_the_published_bits_and_runs() {
    let (_image, _echo, options) = v14_options("boot", RingFormat::Split);
    let machine = Machine::start(options).unwrap();
    assert_eq!(machine.profile(), Profile::V1_4);
    run_for(&machine, 20);
    for info in machine.member_info() {
        let negotiated = info.driver_features;
        let bit = |f| 1u64 << Profile::V1_4.bit(f).unwrap();
        for f in [
            Feature::Version1,
            Feature::EventIdx,
            Feature::Suspend,
            Feature::RingReset,
        ] {
            assert_ne!(negotiated & bit(f), 0, "member {}: {f:?}", info.member);
        }
        assert_ne!(negotiated & (1 << 43), 0, "SUSPEND is bit 43 under v1.4");
        assert_eq!(
            negotiated & (1 << 42),
            0,
            "nothing on the seeds' SUSPEND bit"
        );
    }
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 0, "v1.4 boot");
}

/// spec-decisions §35: the Config section's profile code must match the destination's; a v1.4
/// source meeting a seeds destination is refused at Config with both names, before anything
/// else, and the source runs on.
#[test]
fn a_profile_mismatch_is_refused_at_config() {
    let (_image, _echo, options) = v14_options("mismatch", RingFormat::Split);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 10);
    let seeds = MachineOptions {
        profile: Profile::Seeds,
        ..options
    };
    let (report, incoming) = migrate_to(&source, seeds, &test_options(), &MigrationControl::new());
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{}",
        report.result
    );
    let err = incoming.unwrap_err().to_string();
    assert!(
        err.contains("numbering profile seeds here, v1.4 on the source"),
        "{err}"
    );
    assert!(!source.memory().is_logging());
    assert!(!source.all_parked());
    run_for(&source, 10);
}

/// Issue 15, "The engine under v1.4": the admin strategy moves a running v1.4 guest with device
/// parts (GET object, METADATA_GET SIZE, DEV_PARTS_GET ALL while running and after DEV_MODE_SET
/// STOPPED; SET object, DEV_PARTS_SET, DEV_MODE_SET running on Commit; spec-decisions §36) and
/// the function registers in their own section (§37): 0 lost, 0 duplicated, 0 corrupted, and
/// the destination runs on.
fn migrate_v14(ring: RingFormat) {
    let tag = format!("v14-admin-{ring:?}");
    let (_image, _echo, options) = v14_options(&tag, ring);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 30);
    let before = source.report();
    let (report, incoming) =
        migrate_to(&source, options, &test_options(), &MigrationControl::new());
    assert_completed(&report, &tag);
    assert!(report.device_context_bytes > 0);
    assert_eq!(
        source.owner().parts_object_count(),
        0,
        "{tag}: GET objects left"
    );
    drop(source);
    let destination = incoming.unwrap().machine;
    assert_eq!(
        destination.owner().parts_object_count(),
        0,
        "{tag}: objects left"
    );
    run_for(&destination, 50);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, &tag);
    let (b0, b1) = (before.blk.unwrap(), after.blk.unwrap());
    assert!(b1.completed > b0.completed, "{tag}: ran on");
}

#[test]
fn the_admin_strategy_moves_a_split_v14_guest_with_device_parts() {
    migrate_v14(RingFormat::Split);
}
