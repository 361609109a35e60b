//! Restoring a device context validates everything before applying anything (spec-decisions §5:
//! "Every value is validated before any of it is applied (indices < size, addresses inside
//! guest memory with the ring's alignment, features ⊆ offered, lengths exact); a context that
//! fails validation changes nothing"). Each rejection has its typed error, `validate_context`
//! agrees with `restore_context`, and the target core is unchanged afterwards.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::context::{
    adopting_destination, destination, record_inflight, refused, snapshot, AdoptingDevice,
    MODE_FIELD,
};
use common::{bit, features_of, CoreDriver, SlowDevice, MEM_SIZE, QUEUE_BASE, RUNNING, STOPPED};
use virtio_lm_device::context::{DeviceContext, DeviceField};
use virtio_lm_device::{ContextError, CoreOptions};
use virtio_lm_queue::{ConfigError, RingArea, RingPosition, Segment, StateError};
use virtio_lm_spec::context::{FieldType, FIELD_FLAG_OPTIONAL};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestAddress;

fn features(packed: bool) -> u64 {
    use Feature::*;
    features_of(&[Version1, DeviceStop, QueueState, EventIdx], packed)
}

/// A stopped device on its own memory with two requests completed and three in flight; the
/// returned flag releases held requests.
fn stopped_with_inflight(packed: bool) -> (CoreDriver, Arc<AtomicBool>) {
    let device = AdoptingDevice::new(true);
    let release = device.release.clone();
    let mut d = CoreDriver::with_options(Box::new(device), record_inflight());
    d.start(features(packed));
    d.offer(2);
    d.core.kick(0);
    assert_eq!(d.collect().len(), 2);
    release.store(false, Ordering::SeqCst);
    d.offer(3);
    d.core.kick(0);
    d.core.write_status(STOPPED);
    assert_eq!(d.core.status(), STOPPED);
    (d, release)
}

/// The context of [`stopped_with_inflight`], and a fresh destination on the same guest memory.
fn migration(packed: bool) -> (DeviceContext, CoreDriver) {
    let (mut src, _) = stopped_with_inflight(packed);
    let ctx = src.core.save_context().unwrap();
    assert_eq!(ctx.queues[0].state.inflight.len(), 3);
    let dst = adopting_destination(&mut src);
    (ctx, dst)
}

/// Queue 0's registers refused for `reason`.
fn queue_0_config(reason: &'static str) -> ContextError {
    ContextError::QueueConfig { index: 0, reason }
}

/// Queue 0's ring layout refused.
fn queue_0_layout(source: ConfigError) -> ContextError {
    ContextError::QueueLayout { index: 0, source }
}

/// Queue 0's state refused.
fn queue_0_state(source: StateError) -> ContextError {
    ContextError::QueueState { index: 0, source }
}

type Edit = fn(&mut DeviceContext);
/// The expected error, from the unedited context.
type Want = fn(&DeviceContext) -> ContextError;

fn check_all(packed: bool, cases: &[(&str, Edit, Want)]) {
    let (ctx, mut dst) = migration(packed);
    for (name, edit, want) in cases {
        let want = want(&ctx);
        let mut bad = ctx.clone();
        edit(&mut bad);
        let before = snapshot(&mut dst);
        let got = dst.core.restore_context(&bad);
        assert_eq!(got.as_ref(), Err(&want), "{name}, packed={packed}");
        assert_eq!(dst.core.validate_context(&bad).as_ref(), Err(&want));
        assert_eq!(snapshot(&mut dst), before, "{name}: device changed");
    }
    // The unedited context is accepted after all those refusals.
    dst.core.validate_context(&ctx).unwrap();
    dst.core.restore_context(&ctx).unwrap();
    assert_eq!(dst.core.save_context().unwrap(), ctx);
}

/// spec-decisions §5 "features ⊆ offered", and DEVICE_FEATURES "verified against the device,
/// never applied": an offer that differs, a second word with bits, and driver features the
/// device does not offer are refused.
#[test]
fn features_are_verified() {
    let cases: [(&str, Edit, Want); 4] = [
        (
            "device feature flipped",
            |c| c.device_features[0] ^= 1 << 33,
            |c| ContextError::DeviceFeatures {
                context: c.device_features[0] ^ (1 << 33),
                device: c.device_features[0],
            },
        ),
        (
            "device feature word 1",
            |c| c.device_features.push(1),
            |c| ContextError::DeviceFeatures {
                context: c.device_features[0],
                device: c.device_features[0],
            },
        ),
        (
            "driver feature not offered",
            |c| c.driver_features[0] |= 1 << 60,
            |_| ContextError::DriverFeatures {
                word: 0,
                bits: 1 << 60,
            },
        ),
        (
            "driver feature word 1",
            |c| c.driver_features.push(4),
            |_| ContextError::DriverFeatures { word: 1, bits: 4 },
        ),
    ];
    check_all(false, &cases);
    check_all(true, &cases);
}

/// spec-decisions §2 status semantics (seed 000: DEVICE_STOPPED "only with DRIVER_OK set and
/// F_DEVICE_STOP negotiated"; seed 003: SUSPEND presented with DRIVER_OK clear): a status no
/// driver and device could have produced is refused.
#[test]
fn unreachable_status_is_refused() {
    let cases: [(Edit, &str); 6] = [
        (
            |c| {
                c.device_status =
                    (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK)
                        .bits()
            },
            "DRIVER_OK without FEATURES_OK",
        ),
        (
            |c| c.device_status |= DeviceStatus::SUSPEND.bits(),
            "SUSPEND needs VIRTIO_F_SUSPEND and DRIVER_OK clear",
        ),
        (
            |c| c.driver_features[0] &= !bit(Feature::DeviceStop),
            "DEVICE_STOPPED needs VIRTIO_F_DEVICE_STOP and a started device",
        ),
        (
            |c| c.driver_features[0] &= !bit(Feature::Version1),
            "FEATURES_OK without VIRTIO_F_VERSION_1",
        ),
        (
            |c| c.device_status = DeviceStatus::DRIVER.bits(),
            "DRIVER without ACKNOWLEDGE",
        ),
        (|c| c.device_status = 0, "driver features without DRIVER"),
    ];
    let (ctx, mut dst) = migration(false);
    for (edit, reason) in cases {
        let mut bad = ctx.clone();
        edit(&mut bad);
        let want = ContextError::InvalidStatus {
            status: bad.device_status,
            reason,
        };
        refused(&mut dst, &bad, &want);
    }
}

/// spec-decisions §5 "indices < size, addresses inside guest memory with the ring's alignment":
/// queue count, size bounds, alignment, ring areas outside guest memory and a split size that
/// is not a power of two are refused.
#[test]
fn queue_configuration_is_validated() {
    let cases: [(&str, Edit, Want); 6] = [
        (
            "one queue too few",
            |c| {
                c.queues.pop();
            },
            |_| ContextError::NumQueues {
                context: 0,
                device: 1,
            },
        ),
        (
            "size above the maximum",
            |c| c.queues[0].config.size = 16,
            |_| queue_0_config("size is 0 or above the device's maximum"),
        ),
        (
            "misaligned descriptors",
            |c| c.queues[0].config.desc += 8,
            |_| {
                queue_0_layout(ConfigError::Misaligned {
                    area: RingArea::Descriptors,
                    addr: QUEUE_BASE + 8,
                    align: 16,
                })
            },
        ),
        (
            "device area outside guest memory",
            |c| c.queues[0].config.device = MEM_SIZE as u64,
            |_| {
                queue_0_layout(ConfigError::OutOfMemory {
                    area: RingArea::Device,
                    addr: MEM_SIZE as u64,
                    len: 6 + 8 * 8,
                })
            },
        ),
        (
            "split size not a power of two",
            |c| c.queues[0].config.size = 6,
            |_| queue_0_layout(ConfigError::InvalidSize { size: 6 }),
        ),
        (
            "enabled before FEATURES_OK",
            |c| c.device_status = (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits(),
            |_| queue_0_config("enabled before FEATURES_OK"),
        ),
    ];
    check_all(false, &cases);
}

/// Seed 001 with spec-decisions §3 ("Validation on set: packed index < queue size; split:
/// (avail.idx − last_avail_idx) mod 2^16 ≤ queue size") and the in-flight rules: a state that
/// would lose or repeat a buffer is refused before anything is applied.
#[test]
fn queue_state_is_validated() {
    let split: [(&str, Edit, Want); 5] = [
        (
            "avail state one behind",
            |c| c.queues[0].state.avail_state -= 1,
            |_| {
                queue_0_state(StateError::InflightMismatch {
                    inflight: 3,
                    distance: 2,
                })
            },
        ),
        (
            "avail state ahead of avail.idx",
            |c| c.queues[0].state.avail_state += 1,
            |_| {
                queue_0_state(StateError::AvailAhead {
                    avail_idx: 5,
                    last_avail: 6,
                    size: 8,
                })
            },
        ),
        (
            "split with a used state",
            |c| c.queues[0].state.used_state = 1,
            |_| queue_0_state(StateError::SplitUsedState(1)),
        ),
        (
            "in-flight chain listed twice",
            |c| {
                let first = c.queues[0].state.inflight[0].clone();
                c.queues[0].state.inflight[1] = first;
            },
            |c| {
                queue_0_state(StateError::BadInflight {
                    id: c.queues[0].state.inflight[0].id,
                    reason: "id listed twice",
                })
            },
        ),
        (
            "in-flight buffer outside guest memory",
            |c| {
                c.queues[0].state.inflight[2].segments[0] = Segment {
                    addr: GuestAddress(MEM_SIZE as u64 - 4),
                    len: 0x40,
                    writable: true,
                };
            },
            |c| {
                queue_0_state(StateError::BadInflight {
                    id: c.queues[0].state.inflight[2].id,
                    reason: "segment out of order, overflowing or outside guest memory",
                })
            },
        ),
    ];
    check_all(false, &split);
    let packed: [(&str, Edit, Want); 2] = [
        (
            "avail index at the size",
            |c| {
                c.queues[0].state.avail_state = RingPosition {
                    index: 8,
                    wrap_counter: true,
                }
                .to_state()
            },
            |_| {
                queue_0_state(StateError::IndexOutOfRange {
                    which: "avail_state",
                    index: 8,
                    size: 8,
                })
            },
        ),
        (
            "in-flight chain dropped",
            |c| {
                c.queues[0].state.inflight.pop();
            },
            |_| {
                queue_0_state(StateError::InflightMismatch {
                    inflight: 2,
                    distance: 3,
                })
            },
        ),
    ];
    check_all(true, &packed);
}

/// Pitfall 9 (spec-decisions §7) and spec-decisions §5 "unknown mandatory rejected", applied by the
/// device type to its own fields: a device-specific value it refuses, or an unknown mandatory
/// device-specific field, fails the restore; an unknown optional one is skipped.
#[test]
fn device_specific_state_is_validated_by_the_device() {
    let cases: [(&str, Edit, Want); 2] = [
        (
            "bad mode",
            |c| c.device_fields[0].value = vec![9],
            |_| ContextError::DeviceState(virtio_lm_device::DeviceError::BadState("bad mode")),
        ),
        (
            "unknown mandatory",
            |c| {
                c.device_fields.push(DeviceField {
                    field_type: FieldType(0x0302),
                    flags: 0,
                    value: vec![],
                })
            },
            |_| {
                ContextError::DeviceState(virtio_lm_device::DeviceError::BadState(
                    "unknown mandatory field",
                ))
            },
        ),
    ];
    check_all(false, &cases);
    let (mut ctx, mut dst) = migration(false);
    ctx.device_fields.insert(
        0,
        DeviceField {
            field_type: FieldType(0x0302),
            flags: FIELD_FLAG_OPTIONAL,
            value: vec![1, 2, 3],
        },
    );
    dst.core.restore_context(&ctx).unwrap();
    assert_eq!(dst.core.save_context().unwrap().device_fields.len(), 1);
    // virtio-rng keeps no device-specific state: any such field is refused.
    let mut rng = CoreDriver::counting();
    let mut with_field = rng.core.save_context().unwrap();
    with_field.device_fields.push(DeviceField {
        field_type: MODE_FIELD,
        flags: 0,
        value: vec![0],
    });
    refused(
        &mut rng,
        &with_field,
        &ContextError::DeviceState(virtio_lm_device::DeviceError::BadState(
            "this device type keeps no state",
        )),
    );
}

/// spec-decisions §5 DEVICE_CONFIG "device-type config space bytes": the destination device must
/// present the same configuration space; a byte that differs is refused with its offset.
#[test]
fn device_config_must_match() {
    let (mut ctx, mut dst) = migration(false);
    ctx.device_config = vec![0, 1, 2, 3];
    dst.core.validate_context(&ctx).unwrap();
    ctx.device_config[2] = 9;
    refused(
        &mut dst,
        &ctx,
        &ContextError::DeviceConfigMismatch { offset: 2 },
    );
}

/// Seed 004 ("The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command when the device mode
/// is not Freeze"; "the device MUST NOT update any fields of the device context when the device
/// is in Freeze mode"), as far as the core goes without admin modes: neither save nor restore
/// while the device runs or a stop is still waiting for requests in process.
#[test]
fn save_and_restore_need_a_quiescent_device() {
    let (ctx, _) = migration(false);
    let mut running = CoreDriver::counting();
    running.start(features(false));
    assert_eq!(
        running.core.save_context().unwrap_err(),
        ContextError::NotQuiescent
    );
    assert_eq!(
        running.core.restore_context(&ctx).unwrap_err(),
        ContextError::NotQuiescent
    );
    assert_eq!(running.core.status(), RUNNING);

    let slow = SlowDevice::new();
    let release = slow.release.clone();
    let mut draining = CoreDriver::new(Box::new(slow));
    draining.start(features(false));
    draining.offer(2);
    draining.core.kick(0);
    draining.core.write_status(STOPPED);
    assert_eq!(draining.core.status(), RUNNING, "stop still in progress");
    assert_eq!(
        draining.core.save_context().unwrap_err(),
        ContextError::NotQuiescent
    );
    release.store(true, Ordering::SeqCst);
    assert_eq!(draining.core.status(), STOPPED);
    let drained = draining.core.save_context().unwrap();
    assert!(drained.queues[0].state.inflight.is_empty(), "drained");
}

/// spec-decisions §5 "a context that fails validation changes nothing" for a target that is not
/// fresh: a stopped device with requests in flight keeps all of its state when a context is
/// refused at the last check (the device-specific state), after every earlier check passed
/// against its own guest memory; it then resumes and completes its own requests.
#[test]
fn refused_context_leaves_a_stopped_device_untouched() {
    let (ctx, _) = migration(false);
    let (mut target, release) = stopped_with_inflight(false);
    let own = target.core.save_context().unwrap();
    let mut bad = ctx.clone();
    bad.device_fields[0].value = vec![7];
    refused(
        &mut target,
        &bad,
        &ContextError::DeviceState(virtio_lm_device::DeviceError::BadState("bad mode")),
    );
    assert_eq!(target.core.save_context().unwrap(), own);
    release.store(true, Ordering::SeqCst);
    target.core.write_status(RUNNING);
    let mut ids = target.offer(1);
    target.core.kick(0);
    ids.extend(own.queues[0].state.inflight_ids());
    ids.sort_unstable();
    let mut used: Vec<u16> = target.collect().iter().map(|u| u.id).collect();
    used.sort_unstable();
    assert_eq!(
        used, ids,
        "its own in-flight requests and a new one complete"
    );
}

/// spec-decisions §2 (DEVICE_NEEDS_RESET "failed restore") with §5: a restore whose context passes
/// validation but whose device type then fails sets DEVICE_NEEDS_RESET and reports it.
#[test]
fn device_failure_after_validation_sets_needs_reset() {
    struct Flaky(AdoptingDevice);
    impl virtio_lm_device::VirtioDevice<common::Mem> for Flaky {
        fn device_type(&self) -> u32 {
            self.0.device_type()
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![8]
        }
        fn read_config(&self, offset: usize, data: &mut [u8]) {
            self.0.read_config(offset, data)
        }
        fn process_queue(
            &mut self,
            index: u16,
            queue: &mut virtio_lm_device::QueueAccess<'_, common::Mem>,
        ) -> Result<(), virtio_lm_device::DeviceError> {
            self.0.process_queue(index, queue)
        }
        fn config_len(&self) -> usize {
            self.0.config_len()
        }
        fn decode_state(
            &self,
            fields: &[DeviceField],
            config: &[u8],
        ) -> Result<virtio_lm_device::context::ValidatedState, virtio_lm_device::DeviceError>
        {
            self.0.decode_state(fields, config)
        }
        fn activate(&mut self, _features: u64) -> Result<(), virtio_lm_device::DeviceError> {
            Err(virtio_lm_device::DeviceError::Backend("gone".into()))
        }
    }
    let (ctx, mut first) = migration(false);
    let mut dst = destination(
        &mut first,
        Box::new(Flaky(AdoptingDevice::new(true))),
        CoreOptions::default(),
    );
    let err = dst.core.restore_context(&ctx).unwrap_err();
    assert_eq!(
        err,
        ContextError::DeviceRestore(virtio_lm_device::DeviceError::Backend("gone".into()))
    );
    let status = dst.core.status();
    assert!(status.contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert!(
        status.contains(DeviceStatus::DEVICE_STOPPED),
        "restored stopped"
    );
    // A stopped device is quiet (spec-decisions §2): notified when the stop ends.
    assert_eq!(dst.irq.config(), 0, "nothing while stopped");
    dst.core.write_status(
        status.difference(DeviceStatus::DEVICE_STOPPED | DeviceStatus::DEVICE_NEEDS_RESET),
    );
    assert_eq!(dst.irq.config(), 1, "NEEDS_RESET notified");
}
