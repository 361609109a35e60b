//! The checks of the seeds profile: numbering, DEVICE_STOPPED (seed 000), SUSPEND (seed 003)
//! and the seed-004 command set. The full seed suites are the crates' tests; these are the
//! statements a device vendor checks first.

use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::opcode::DEVICE_MIGRATION;
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::Feature;

use super::target::DATA;
use super::{expect, observed, sriov_list, suspend, Check, DeviceKind, Row, Target};

pub(super) fn checks(t: &mut Target) -> Vec<Row> {
    let quiet = "when stopped the device uses no buffer; the notified buffer is used after resume";
    vec![
        Row::of(
            "000",
            "VIRTIO_F_DEVICE_STOP is bit 39, QUEUE_STATE 40 and SUSPEND 42",
            numbering(t),
        ),
        Row::of(
            "003",
            "after SUSPEND the device presents SUSPEND=1 and DRIVER_OK=0; DRIVER_OK resumes it",
            suspend(t),
        ),
        Row::of(
            "004",
            "the seven device migration commands are supported all or none",
            list(t),
        ),
        match t.kind {
            DeviceKind::Rng => Row::of("000", quiet, device_stopped(t)),
            _ => Row::not_applicable(
                "000",
                quiet,
                "checked with the rng member, whose buffers need no request format",
            ),
        },
        match t.kind {
            DeviceKind::Rng => Row::of(
                "004",
                "in Stop the device uses no buffer; the notified buffer is used in Active",
                admin_stop(t),
            ),
            _ => Row::not_applicable(
                "004",
                "in Stop the device uses no buffer; the notified buffer is used in Active",
                "checked with the rng member",
            ),
        },
    ]
}

fn numbering(t: &mut Target) -> Check {
    let offered = t.guest(1, &[]).map_err(observed)?.device_features();
    expect(
        "bits 39, 40, 42 not all offered",
        [39, 40, 42].iter().all(|b| offered >> b & 1 == 1),
    )
}

fn list(t: &mut Target) -> Check {
    let word = sriov_list(t)?;
    expect(
        "a device migration command missing",
        DEVICE_MIGRATION.iter().all(|&op| word >> op & 1 == 1),
    )
}

fn device_stopped(t: &mut Target) -> Check {
    let mut driver = t.guest(1, &[Feature::DeviceStop]).map_err(observed)?;
    driver.stop().map_err(observed)?;
    driver
        .submit(0, &[BufferSpec::writable(DATA, 8)])
        .map_err(observed)?;
    let stopped = driver.collect_used(0).map_err(observed)?.len();
    driver.resume().map_err(observed)?;
    let after = driver.collect_used(0).map_err(observed)?.len();
    expect(
        &format!("{stopped} used while stopped, {after} after resume"),
        (stopped, after) == (0, 1),
    )
}

fn admin_stop(t: &mut Target) -> Check {
    let mut driver = t.guest(2, &[]).map_err(observed)?;
    t.client.use_migration_commands().map_err(observed)?;
    t.client.dev_mode_set(2, DevMode::Stop).map_err(observed)?;
    driver
        .submit(0, &[BufferSpec::writable(DATA, 8)])
        .map_err(observed)?;
    let stopped = driver.collect_used(0).map_err(observed)?.len();
    t.client
        .dev_mode_set(2, DevMode::Active)
        .map_err(observed)?;
    let after = driver.collect_used(0).map_err(observed)?.len();
    expect(
        &format!("{stopped} used in Stop, {after} after Active"),
        (stopped, after) == (0, 1),
    )
}
