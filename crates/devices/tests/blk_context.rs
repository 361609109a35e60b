//! The blk device through the core's device context (spec-decisions §5): the source is stopped
//! recording in-flight requests, its context (with VQ_INFLIGHT and BLK_WRITEBACK) is restored
//! into a fresh core and `Blk` on the same memory and image, and the destination completes the
//! handed-over requests exactly once when the stop is lifted.

mod common;

use std::time::Duration;

use common::{assert_same_ids, initial_sector, pattern, Req, Rig, TempImage, TestCore, RUNNING};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::{offset, status};
use virtio_lm_devices::Gate;
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::DeviceStatus;

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);

/// spec-decisions §5 and §7 pitfalls 2 and 9: in-flight requests and the device-specific state
/// (BLK_WRITEBACK) survive a context transfer; each request completes once, on the destination.
#[test]
fn context_transfer_hands_over_inflight_and_writeback() {
    let image = TempImage::new(64);
    let gate = Gate::new();
    gate.close();
    let options = virtio_lm_devices::BlkOptions {
        faults: virtio_lm_devices::Faults {
            gate: Some(gate.clone()),
            ..Default::default()
        },
        ..image.options()
    };
    let mut src = Rig::new(options, QuiesceMode::RecordInflight);
    src.start_all(false);
    src.core.write_config(offset::WRITEBACK, &[0]);
    let write = Req::write(4, pattern(1, 1024));
    let read = Req::read(9, 2);
    let a = src.add(0, 0, &write);
    let b = src.add(0, 1, &read);
    src.publish(0);
    src.core.kick(0);
    src.core.set_and_wait(STOPPED, STOPPED);
    let ctx = src
        .core
        .save_context()
        .expect("context of a stopped device");
    let blk_fields: Vec<_> = ctx
        .device_fields
        .iter()
        .map(|f| (f.field_type, f.value.clone()))
        .collect();
    assert_eq!(blk_fields, vec![(FieldType::BLK_WRITEBACK, vec![0])]);
    assert_eq!(ctx.queues[0].state.inflight_ids(), vec![a, b]);
    gate.open();

    let mut dst = Rig::with_mem(
        image.options(),
        QuiesceMode::RecordInflight,
        src.mem.clone(),
    );
    dst.rings = std::mem::take(&mut src.rings);
    drop(src);
    dst.core.restore_context(&ctx).expect("restore");
    assert_eq!(dst.core.status(), STOPPED);
    let mut wb = [0xffu8];
    dst.core.read_config(offset::WRITEBACK, &mut wb);
    assert_eq!(wb, [0], "BLK_WRITEBACK restored");
    std::thread::sleep(Duration::from_millis(5));
    dst.core.process_pending();
    assert!(dst.collect(0).is_empty(), "nothing runs while stopped");
    dst.core.write_status(RUNNING);
    assert_same_ids(dst.wait_used(0, 2).iter().map(|u| u.id), &[a, b]);
    assert_eq!(dst.status_of(0, &write), status::OK);
    assert_eq!(dst.status_of(1, &read), status::OK);
    assert_eq!(image.sector(4, 2), pattern(1, 1024));
    let want: Vec<u8> = (9..11).flat_map(initial_sector).collect();
    assert_eq!(dst.in_data(1, &read), want);
    assert_eq!(dst.stats.executed(), 2);
}

/// A stopped source on a 64-sector image whose driver switched to writethrough, and its
/// context.
fn stopped_source(image: &TempImage) -> (Rig, virtio_lm_device::DeviceContext) {
    let mut src = Rig::new(image.options(), QuiesceMode::Drain);
    src.start_all(false);
    src.core.write_config(offset::WRITEBACK, &[0]);
    src.core.set_and_wait(STOPPED, STOPPED);
    let ctx = src.core.save_context().unwrap();
    (src, ctx)
}

/// Seed 004 device context with spec-decisions §5: DEVICE_CONFIG carries the whole
/// `struct virtio_blk_config` (60 bytes) as
/// the driver sees it, and its read-only part (here `capacity`) is compared with the receiving
/// device's: a destination on an image of another size refuses the context and stays as it
/// was.
#[test]
fn blk_config_travels_and_a_different_capacity_is_refused() {
    let image = TempImage::new(64);
    let (src, ctx) = stopped_source(&image);
    let mut config = vec![0u8; 60];
    src.core.read_config(0, &mut config);
    assert_eq!(ctx.device_config, config, "the whole configuration space");
    assert_eq!(ctx.device_config[offset::WRITEBACK], 0);
    let bigger = TempImage::new(128);
    let mut dst = Rig::with_mem(bigger.options(), QuiesceMode::Drain, src.mem.clone());
    let err = dst.core.restore_context(&ctx).unwrap_err();
    assert_eq!(
        err,
        virtio_lm_device::ContextError::DeviceConfigMismatch {
            offset: offset::CAPACITY
        }
    );
    assert_eq!(dst.core.status().bits(), 0, "nothing applied");
}

/// Seed 004: "the device MUST respond with an error ... if there is a mismatch between the
/// device context field length ... and the length of the field in the device": a DEVICE_CONFIG
/// of another length than blk's 60 bytes is refused.
#[test]
fn blk_config_of_another_length_is_refused() {
    let image = TempImage::new(64);
    let (src, ctx) = stopped_source(&image);
    let mut dst = Rig::with_mem(image.options(), QuiesceMode::Drain, src.mem.clone());
    for len in [0, 59, 61, 64] {
        let mut bad = ctx.clone();
        bad.device_config.resize(len, 0);
        assert_eq!(
            dst.core.restore_context(&bad).unwrap_err(),
            virtio_lm_device::ContextError::FieldLength {
                field_type: FieldType::DEVICE_CONFIG,
                length: len,
                device: 60,
            },
            "{len} bytes"
        );
    }
    dst.core.restore_context(&ctx).unwrap();
}

/// Seed 004 device context with spec-decisions §5: driver-writable configuration (`writeback`)
/// is applied after the device-type state (BLK_WRITEBACK), so the destination presents the context's configuration.
#[test]
fn blk_writeback_from_config_is_applied_after_the_state() {
    let image = TempImage::new(64);
    let (src, mut ctx) = stopped_source(&image);
    ctx.device_fields[0].value = vec![1];
    let mut dst = Rig::with_mem(image.options(), QuiesceMode::Drain, src.mem.clone());
    dst.core.restore_context(&ctx).unwrap();
    let mut wb = [0xffu8];
    dst.core.read_config(offset::WRITEBACK, &mut wb);
    assert_eq!(wb, [0], "DEVICE_CONFIG writeback holds");
    ctx.device_config[offset::WRITEBACK] = 2;
    assert_eq!(
        dst.core.restore_context(&ctx).unwrap_err(),
        virtio_lm_device::ContextError::DeviceConfigMismatch {
            offset: offset::WRITEBACK
        },
        "writeback 2 is not a value the driver can write"
    );
}
