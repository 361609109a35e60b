//! What a migration under the v1.4 numbering profile refuses, on both sides (spec-decisions
//! §36): 1.4 has no part for in-flight buffers, and a packed ring's position is only recorded
//! in guest memory when EVENT_IDX is negotiated.

use virtio_lm_spec::{Feature, Profile};
use virtio_lm_vm::Machine;

use super::{Inflight, MigrateOptions, MigrationError};
use crate::VmConfig;

/// Whether `negotiated` (v1.4 numbering) has a packed ring without EVENT_IDX.
fn packed_without_event_idx(negotiated: u64) -> bool {
    let has = |f| {
        Profile::V1_4
            .mask(f)
            .is_some_and(|mask| negotiated & mask != 0)
    };
    has(Feature::RingPacked) && !has(Feature::EventIdx)
}

fn packed_refusal(device: u64, negotiated: u64) -> MigrationError {
    MigrationError::Incompatible(format!(
        "device {device}: a packed ring under the v1.4 profile needs VIRTIO_F_EVENT_IDX \
         (negotiated {negotiated:#x}): without it the stopped device records no ring position \
         in guest memory, and 1.4 has no part that carries one"
    ))
}

/// The source's refusals at Start.
pub(crate) fn check_source(
    machine: &Machine,
    options: &MigrateOptions,
) -> Result<(), MigrationError> {
    if machine.profile() != Profile::V1_4 {
        return Ok(());
    }
    if options.inflight == Inflight::Transfer {
        return Err(MigrationError::Incompatible(
            "--inflight transfer is not possible under the v1.4 profile: no virtio 1.4 device \
             part carries in-flight buffers (a stopped device completes every buffer it took); \
             use --inflight drain"
                .into(),
        ));
    }
    for info in machine.member_info() {
        if packed_without_event_idx(info.driver_features) {
            return Err(packed_refusal(info.member, info.driver_features));
        }
    }
    Ok(())
}

/// The destination's refusal at Config (before anything else is accepted).
pub(crate) fn check_config(config: &VmConfig) -> Result<(), MigrationError> {
    if config.profile != Profile::V1_4 {
        return Ok(());
    }
    for device in &config.devices {
        if packed_without_event_idx(device.negotiated_features) {
            return Err(packed_refusal(
                u64::from(device.id),
                device.negotiated_features,
            ));
        }
    }
    Ok(())
}
