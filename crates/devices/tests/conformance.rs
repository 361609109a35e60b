//! The conformance checks of `virtio-lm conform` (virtio 1.4 "Device parts", "Resource
//! objects", SUSPEND and virtqueue reset; seeds 000, 003 and 004): every row passes on the
//! devices built here, and on deliberately broken owners the rows of the statements they
//! break fail (the negative control: a suite that cannot fail proves nothing).

use virtio_lm_devices::conformance::{run, DeviceKind, Outcome, Row};
use virtio_lm_pci::admin::Defects;
use virtio_lm_spec::Profile;

const KINDS: [DeviceKind; 3] = [DeviceKind::Rng, DeviceKind::Blk, DeviceKind::Net];

fn failing(rows: &[Row]) -> Vec<&'static str> {
    rows.iter()
        .filter(|r| r.result == Outcome::Fail)
        .map(|r| r.statement)
        .collect()
}

/// 1.4 device parts, resource objects, SUSPEND (bit 43) and virtqueue reset: every check
/// passes on blk, net and rng members (the data-path row is n/a for blk and net).
#[test]
fn v1_4_rows_pass_on_every_device() {
    for kind in KINDS {
        let rows = run(Profile::V1_4, kind, Defects::default()).unwrap();
        assert!(rows.len() >= 15, "{kind:?}: {} rows", rows.len());
        assert_eq!(failing(&rows), Vec::<&str>::new(), "{kind:?}: {rows:#?}");
    }
}

/// Seeds 000, 003 and 004: the seeds profile's checks pass on every device type.
#[test]
fn seeds_rows_pass_on_every_device() {
    for kind in KINDS {
        let rows = run(Profile::Seeds, kind, Defects::default()).unwrap();
        assert_eq!(failing(&rows), Vec::<&str>::new(), "{kind:?}: {rows:#?}");
    }
}

/// 1.4 device parts, negative control: an owner that ignores the STOPPED flag, accepts a
/// wrong part length, accepts a duplicate object id, or returns parts out of order fails
/// exactly the rows of that statement.
#[test]
fn broken_owners_fail_their_rows() {
    let cases: [(Defects, &[&str]); 4] = [
        (
            Defects { ignore_stopped: true, ..Defects::default() },
            &[
                "PARTS_SET fails on a length mismatch",
                "DEV_FEATURES is verified on PARTS_SET, never applied",
                "when stopped the device uses no buffer and sends no notification; it accepts notifications",
                "when stopped the device sends no config-change notification; it sends one on resume",
                "parts set on a stopped device take effect when it resumes",
            ],
        ),
        (
            Defects { accept_wrong_length: true, ..Defects::default() },
            &[
                "PARTS_SET fails on a length mismatch",
                "DEV_FEATURES is verified on PARTS_SET, never applied",
            ],
        ),
        (
            Defects { accept_duplicate_id: true, ..Defects::default() },
            &["a duplicate RESOURCE_OBJ_CREATE fails with EEXIST"],
        ),
        (
            Defects { reverse_order: true, ..Defects::default() },
            &[
                "PARTS_GET returns parts in table order, and may be repeated",
                "parts set on a stopped device take effect when it resumes",
            ],
        ),
    ];
    for (defects, want) in cases {
        let rows = run(Profile::V1_4, DeviceKind::Rng, defects).unwrap();
        assert_eq!(failing(&rows), want, "{defects:?}: {rows:#?}");
    }
}
