//! Register-level rules of the common configuration structure (virtio 1.4 "Common configuration structure layout" (virtio-pci) layout plus the seed 001
//! queue state registers at 64/66, spec-decisions §3 and §6), exercised through
//! `VirtioPciFunction::bar_read` / `bar_write` directly.

use virtio_lm_pci::layout::{ISR_OFFSET, NOTIFY_OFFSET};
use virtio_lm_pci::testing::*;
use virtio_lm_pci::QueueSetup;
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::offset::*;
use virtio_lm_spec::pci::VIRTIO_MSI_NO_VECTOR;
use virtio_lm_spec::{DeviceStatus, Feature};

use std::sync::Arc;
use virtio_lm_pci::VirtioPciFunction;

type Function = Arc<VirtioPciFunction<Mem>>;

fn fresh() -> (std::sync::Arc<Mem>, Function) {
    let mem = memory();
    let function = counting_function(&mem, 8, false);
    (mem, function)
}

/// Programs queue 0 as a packed ring of 4 at [`RING`], enables it and sets DRIVER_OK, which
/// the device takes without DEVICE_NEEDS_RESET.
fn to_driver_ok_packed(f: &Function) {
    f.w16(QUEUE_SIZE, 4);
    f.w64(QUEUE_DESC, RING);
    f.w64(QUEUE_DRIVER, RING + 64);
    f.w64(QUEUE_DEVICE, RING + 68);
    f.w16(QUEUE_ENABLE, 1);
    let s = f.status();
    f.w8(DEVICE_STATUS, (s | DeviceStatus::DRIVER_OK).bits());
    assert!(!f.status().intersects(DeviceStatus::DEVICE_NEEDS_RESET));
}

/// Every field reads at its natural width and offset (virtio 1.4 "Common configuration structure layout" (virtio-pci): 32-bit fields with 32-bit
/// accesses, 16-bit with 16-bit, 8-bit with 8-bit), and the 64-bit queue addresses also as two
/// 32-bit halves and as one 64-bit access.
#[test]
fn fields_read_and_write_at_natural_widths() {
    let (_mem, f) = fresh();
    let offered = f.core().lock().unwrap().device_features();
    assert_eq!(f.r16(NUM_QUEUES), 1);
    f.w32(DEVICE_FEATURE_SELECT, 0);
    assert_eq!(f.r32(DEVICE_FEATURE), offered as u32);
    f.w32(DEVICE_FEATURE_SELECT, 1);
    assert_eq!(f.r32(DEVICE_FEATURE_SELECT), 1);
    assert_eq!(f.r32(DEVICE_FEATURE), (offered >> 32) as u32);
    assert_eq!(f.r8(DEVICE_STATUS), 0);
    assert_eq!(f.r8(CONFIG_GENERATION), 0);
    assert_eq!(f.r16(CONFIG_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    assert_eq!(f.r16(QUEUE_SELECT), 0);
    assert_eq!(f.r16(QUEUE_SIZE), 8);
    assert_eq!(f.r16(QUEUE_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    assert_eq!(f.r16(QUEUE_ENABLE), 0);
    assert_eq!(f.r16(QUEUE_NOTIFY_OFF), 0);

    f.to_features_ok(features(&[Feature::Version1]));
    for (field, value) in [
        (CONFIG_MSIX_VECTOR, 0),
        (QUEUE_SIZE, 4),
        (QUEUE_MSIX_VECTOR, 1),
    ] {
        f.w16(field, value);
        assert_eq!(f.r16(field), value, "field at {field}");
    }
    // queue_desc as two halves, queue_driver as one 64-bit access, queue_device as halves in
    // the other order.
    f.w32(QUEUE_DESC, 0x0000_1000);
    f.w32(QUEUE_DESC + 4, 0x2);
    f.w64(QUEUE_DRIVER, 0x3_0000_2000);
    f.w32(QUEUE_DEVICE + 4, 0x4);
    f.w32(QUEUE_DEVICE, 0x3000);
    assert_eq!(f.r64(QUEUE_DESC), 0x2_0000_1000);
    assert_eq!(f.r32(QUEUE_DESC), 0x1000);
    assert_eq!(f.r32(QUEUE_DESC + 4), 0x2);
    assert_eq!(f.r64(QUEUE_DRIVER), 0x3_0000_2000);
    assert_eq!(f.r32(QUEUE_DRIVER + 4), 0x3);
    assert_eq!(f.r64(QUEUE_DEVICE), 0x4_0000_3000);
    f.w16(QUEUE_ENABLE, 1);
    assert_eq!(f.r16(QUEUE_ENABLE), 1);
    let regs = *f.core().lock().unwrap().queue(0).unwrap();
    assert_eq!(
        (regs.size, regs.desc, regs.driver, regs.device, regs.enabled),
        (4, 0x2_0000_1000, 0x3_0000_2000, 0x4_0000_3000, true)
    );
}

/// virtio 1.4 "Common configuration structure layout" (virtio-pci) access column: device_feature, num_queues, config_generation, queue_notify_off and
/// the 1.4 fields at 56–62 are read-only; writes to them are ignored. queue_enable ignores 0
/// (the driver must not write 0).
#[test]
fn read_only_fields_ignore_writes() {
    let (_mem, f) = fresh();
    f.to_features_ok(features(&[Feature::Version1]));
    let offered = f.core().lock().unwrap().device_features();
    f.w32(DEVICE_FEATURE_SELECT, 0);
    f.w32(DEVICE_FEATURE, 0);
    assert_eq!(f.r32(DEVICE_FEATURE), offered as u32);
    f.w16(NUM_QUEUES, 9);
    assert_eq!(f.r16(NUM_QUEUES), 1);
    f.w8(CONFIG_GENERATION, 9);
    assert_eq!(f.r8(CONFIG_GENERATION), 0);
    f.w16(QUEUE_NOTIFY_OFF, 7);
    assert_eq!(f.r16(QUEUE_NOTIFY_OFF), 0);
    for field in [
        QUEUE_NOTIF_CONFIG_DATA,
        QUEUE_RESET,
        ADMIN_QUEUE_INDEX,
        ADMIN_QUEUE_NUM,
    ] {
        f.w16(field, 1);
        assert_eq!(f.r16(field), 0, "offset {field}");
    }
    f.w16(QUEUE_ENABLE, 1);
    f.w16(QUEUE_ENABLE, 0);
    assert_eq!(f.r16(QUEUE_ENABLE), 1);
    assert_eq!(f.core().lock().unwrap().device_features(), offered);
}

/// Only natural accesses write (spec: "The driver MUST access each field using the natural
/// access method"): a byte write into a 16-bit field, a 16-bit write into a 32-bit field, a
/// 2-byte write over device_status and config_generation, and a 16-bit write into a queue
/// address change nothing.
#[test]
fn unnatural_width_writes_are_ignored() {
    let (_mem, f) = fresh();
    f.to_features_ok(features(&[Feature::Version1]));
    f.wr(QUEUE_SELECT as u64, &[5]);
    assert_eq!(f.r16(QUEUE_SELECT), 0);
    f.w16(DEVICE_FEATURE_SELECT, 1);
    assert_eq!(f.r32(DEVICE_FEATURE_SELECT), 0);
    let before = f.status();
    f.w16(DEVICE_STATUS, 0);
    assert_eq!(f.status(), before);
    f.w32(QUEUE_SIZE, 2);
    assert_eq!(f.r16(QUEUE_SIZE), 8);
    f.w16(QUEUE_DESC, 0x1000);
    assert_eq!(f.r64(QUEUE_DESC), 0);
    f.wr(QUEUE_DESC as u64, &[0; 3]);
    f.wr(QUEUE_DESC as u64, &[0; 16]);
    assert_eq!(f.r64(QUEUE_DESC), 0);
}

/// Reads of unimplemented offsets return 0 and writes there change nothing: 56–62 (not
/// offered in the seeds profile; no admin queue), past the 68-byte structure, the ISR window
/// past its byte, the notify region, and past the BAR.
#[test]
fn unimplemented_offsets_read_zero() {
    let (_mem, f) = fresh();
    f.to_features_ok(features(&[Feature::Version1]));
    for at in [
        QUEUE_NOTIF_CONFIG_DATA as u64,
        QUEUE_RESET as u64,
        ADMIN_QUEUE_INDEX as u64,
        ADMIN_QUEUE_NUM as u64,
        68,
        100,
        0xffc,
        ISR_OFFSET + 1,
        ISR_OFFSET + 0x800,
        NOTIFY_OFFSET,
        NOTIFY_OFFSET + 0x10,
        0x4000,
        0x1_0000,
        u64::MAX - 8,
    ] {
        f.wr(at, &[0xff; 4]);
        assert_eq!(f.rd::<4>(at), [0; 4], "offset {at:#x}");
    }
    assert_eq!(
        f.status(),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK
    );
}

/// queue_select beyond num_queues: every queue field reads 0 (queue_size 0 tells the driver the
/// queue does not exist) and writes to them are ignored.
#[test]
fn queue_select_beyond_num_queues() {
    let (_mem, f) = fresh();
    f.to_features_ok(features(&[Feature::Version1, Feature::QueueState]));
    for select in [1u16, 2, 0x8000, 0xffff] {
        f.w16(QUEUE_SELECT, select);
        assert_eq!(f.r16(QUEUE_SELECT), select);
        f.w16(QUEUE_SIZE, 4);
        f.w16(QUEUE_MSIX_VECTOR, 1);
        f.w64(QUEUE_DESC, 0x1000);
        f.w64(QUEUE_DRIVER, 0x2000);
        f.w64(QUEUE_DEVICE, 0x3000);
        f.w16(QUEUE_AVAIL_STATE, 3);
        f.w16(QUEUE_ENABLE, 1);
        for field in [
            QUEUE_SIZE,
            QUEUE_MSIX_VECTOR,
            QUEUE_ENABLE,
            QUEUE_NOTIFY_OFF,
            QUEUE_AVAIL_STATE,
            QUEUE_USED_STATE,
        ] {
            assert_eq!(f.r16(field), 0, "select {select} field {field}");
        }
        for field in [QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE] {
            assert_eq!(f.r64(field), 0);
        }
    }
    f.w16(QUEUE_SELECT, 0);
    assert_eq!(f.r16(QUEUE_SIZE), 8);
    assert_eq!(f.r16(QUEUE_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    assert_eq!(f.r64(QUEUE_DESC), 0);
    assert_eq!(f.r16(QUEUE_ENABLE), 0);
    assert_eq!(f.r16(QUEUE_AVAIL_STATE), 0);
}

/// The feature select windows: device_feature shows word 0 or 1 of the 64 offered bits (words
/// past 1 read 0); driver_feature writes update only the selected half (read-modify-write),
/// read back through the same window, and a write through a window past 1 is ignored.
#[test]
fn feature_select_windows() {
    let (_mem, f) = fresh();
    let offered = f.core().lock().unwrap().device_features();
    for (select, expect) in [
        (0u32, offered as u32),
        (1, (offered >> 32) as u32),
        (2, 0),
        (u32::MAX, 0),
    ] {
        f.w32(DEVICE_FEATURE_SELECT, select);
        assert_eq!(f.r32(DEVICE_FEATURE), expect, "select {select}");
    }
    f.w8(DEVICE_STATUS, DeviceStatus::ACKNOWLEDGE.bits());
    f.w8(
        DEVICE_STATUS,
        (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits(),
    );
    let wanted = features(&[Feature::Version1, Feature::EventIdx, Feature::DeviceStop]);
    f.w32(DRIVER_FEATURE_SELECT, 1);
    f.w32(DRIVER_FEATURE, (wanted >> 32) as u32);
    assert_eq!(
        f.core().lock().unwrap().driver_features(),
        wanted & 0xffff_ffff_0000_0000
    );
    f.w32(DRIVER_FEATURE_SELECT, 0);
    f.w32(DRIVER_FEATURE, wanted as u32);
    assert_eq!(f.core().lock().unwrap().driver_features(), wanted);
    assert_eq!(f.r32(DRIVER_FEATURE), wanted as u32);
    f.w32(DRIVER_FEATURE_SELECT, 2);
    f.w32(DRIVER_FEATURE, 0xffff_ffff);
    assert_eq!(f.r32(DRIVER_FEATURE), 0);
    assert_eq!(f.core().lock().unwrap().driver_features(), wanted);
    f.w32(DRIVER_FEATURE_SELECT, 1);
    assert_eq!(f.r32(DRIVER_FEATURE), (wanted >> 32) as u32);
}

/// Seed 000 (unchanged device text): "The device MUST initialize device status to 0 upon
/// reset." Writing 0 to device_status resets: status reads 0 at once, accepted features, queue
/// registers, MSI-X routing and the selectors return to their reset values.
#[test]
fn status_zero_resets_the_device() {
    let (mem, f) = fresh();
    let mut driver = driver_started(&f, &mem, features(&[Feature::Version1]));
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
    f.w16(QUEUE_SELECT, 3);
    f.w32(DEVICE_FEATURE_SELECT, 1);
    f.w8(DEVICE_STATUS, 0);
    assert_eq!(f.status(), DeviceStatus::RESET);
    assert_eq!(f.r16(QUEUE_SELECT), 0);
    assert_eq!(f.r32(DEVICE_FEATURE_SELECT), 0);
    f.w32(DRIVER_FEATURE_SELECT, 1);
    assert_eq!(f.r32(DRIVER_FEATURE), 0);
    f.w16(QUEUE_SELECT, 0);
    assert_eq!(f.r16(QUEUE_SIZE), 8);
    assert_eq!(f.r16(QUEUE_ENABLE), 0);
    assert_eq!(f.r64(QUEUE_DESC), 0);
    assert_eq!(f.r16(QUEUE_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    assert_eq!(f.r16(CONFIG_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    assert_eq!(f.core().lock().unwrap().driver_features(), 0);
}

/// config_generation (offset 21) changes whenever the device changes its configuration and
/// ignores writes; the change is notified on the configuration vector.
#[test]
fn config_generation_follows_config_changes() {
    let (mem, f) = fresh();
    let driver = driver_started(&f, &mem, features(&[Feature::Version1]));
    assert_eq!(f.r8(CONFIG_GENERATION), 0);
    f.core().lock().unwrap().change_config(|_| {});
    assert_eq!(f.r8(CONFIG_GENERATION), 1);
    f.core().lock().unwrap().change_config(|_| {});
    assert_eq!(driver.config_generation(), 2);
    f.w8(CONFIG_GENERATION, 0);
    assert_eq!(f.r8(CONFIG_GENERATION), 2);
    assert_eq!(f.interrupts().vector_count(0), 2);
}

/// Seed 001: "When VIRTIO_F_QUEUE_STATE is negotiated, the driver can set and get the device
/// internal virtqueue state through the following fields. The way to access those fields is
/// transport specific." Here: queue_avail_state at 64 and queue_used_state at 66 (spec-decisions
/// §3). Without the feature they read 0 and writes are ignored (a write that took effect would
/// make DRIVER_OK fail validation); with it (packed) they read the initial state 0x8000 (wrap
/// counters start at 1) and take writes between FEATURES_OK and DRIVER_OK, not after.
#[test]
fn queue_state_registers_exist_only_with_queue_state() {
    // Without QUEUE_STATE.
    let (_mem, f) = fresh();
    f.to_features_ok(features(&[Feature::Version1, Feature::RingPacked]));
    f.w16(QUEUE_AVAIL_STATE, 5);
    f.w16(QUEUE_USED_STATE, 5);
    assert_eq!(f.r16(QUEUE_AVAIL_STATE), 0);
    assert_eq!(f.r16(QUEUE_USED_STATE), 0);
    to_driver_ok_packed(&f);
    assert!(f.status().contains(DeviceStatus::DRIVER_OK));

    // With QUEUE_STATE. A write before FEATURES_OK (with a value unlike the initial state) is
    // ignored, not kept for later.
    let (_mem, f) = fresh();
    f.w8(DEVICE_STATUS, DeviceStatus::ACKNOWLEDGE.bits());
    f.w8(
        DEVICE_STATUS,
        (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits(),
    );
    f.w16(QUEUE_AVAIL_STATE, 0x0005);
    f.w16(QUEUE_USED_STATE, 0x0005);
    f.to_features_ok(features(&[
        Feature::Version1,
        Feature::RingPacked,
        Feature::QueueState,
    ]));
    assert_eq!(f.r16(QUEUE_AVAIL_STATE), 0x8000);
    assert_eq!(f.r16(QUEUE_USED_STATE), 0x8000);
    f.w16(QUEUE_AVAIL_STATE, 0x0003);
    f.w16(QUEUE_USED_STATE, 0x8002);
    assert_eq!(f.r16(QUEUE_AVAIL_STATE), 0x0003);
    assert_eq!(f.r16(QUEUE_USED_STATE), 0x8002);
    f.w16(QUEUE_AVAIL_STATE, 0x8000);
    f.w16(QUEUE_USED_STATE, 0x8000);
    to_driver_ok_packed(&f);
    // Running: the state is not readable and not writable.
    f.w16(QUEUE_AVAIL_STATE, 0x0001);
    assert_eq!(f.r16(QUEUE_AVAIL_STATE), 0);
    assert_eq!(f.r16(QUEUE_USED_STATE), 0);
}

/// Seed 001: "If VIRTIO_F_QUEUE_STATE has been negotiated, a device MUST NOT clear the queue
/// state upon reset and MUST reset the queue state when the driver sets ACKNOWLEDGE status
/// bit." After five buffers on a packed ring of 4 the state read after reset is index 1 with
/// both wrap counters flipped to 0; after ACKNOWLEDGE (and renegotiation) it is 0x8000 again.
/// Split likewise: 5, then 0.
#[test]
fn queue_state_survives_reset_and_resets_on_acknowledge() {
    for packed in [false, true] {
        let (mem, f) = fresh();
        let mut driver = driver_for(&f, &mem);
        let wanted = migration_features(packed);
        driver.init(wanted, &[QueueSetup::new(0, 4, RING)]).unwrap();
        for i in 0..5 {
            push(&mut driver, 0, &[BufferSpec::writable(DATA + 64 * i, 8)]);
            assert_eq!(driver.collect_used(0).unwrap().len(), 1);
        }
        driver.reset().unwrap();
        let expect = if packed { (0x0001, 0x0001) } else { (5, 0) };
        assert_eq!(
            driver.read_queue_state(0).unwrap(),
            expect,
            "packed {packed}"
        );
        f.to_features_ok(wanted);
        let initial = if packed { (0x8000, 0x8000) } else { (0, 0) };
        assert_eq!(
            driver.read_queue_state(0).unwrap(),
            initial,
            "packed {packed}"
        );
    }
}

/// The queue registers take writes only between FEATURES_OK and DRIVER_OK: before it and while
/// the device runs, a write of queue_size or queue_desc changes nothing.
#[test]
fn queue_registers_are_writable_only_during_setup() {
    let (mem, f) = fresh();
    f.w8(DEVICE_STATUS, DeviceStatus::ACKNOWLEDGE.bits());
    f.w16(QUEUE_SIZE, 4);
    f.w64(QUEUE_DESC, 0x1000);
    assert_eq!((f.r16(QUEUE_SIZE), f.r64(QUEUE_DESC)), (8, 0));
    let _driver = driver_started(&f, &mem, features(&[Feature::Version1]));
    f.w16(QUEUE_SELECT, 0);
    f.w16(QUEUE_SIZE, 2);
    f.w64(QUEUE_DESC, 0x4000);
    assert_eq!((f.r16(QUEUE_SIZE), f.r64(QUEUE_DESC)), (4, RING));
}

/// Seed 003 review: "what about queue select and all related queue fields? — For now they are
/// forbidden." (spec-decisions §2: while suspended, queue_select and queue field reads are allowed;
/// writes other than queue state are ignored.) The state write is taken and reads back.
#[test]
fn suspended_device_takes_only_queue_state_writes() {
    let (mem, f) = fresh();
    let mut driver = driver_started(&f, &mem, migration_features(false));
    push(&mut driver, 0, &[BufferSpec::writable(DATA, 8)]);
    driver.collect_used(0).unwrap();
    driver.suspend().unwrap();
    f.w16(QUEUE_SELECT, 0);
    assert_eq!(f.r16(QUEUE_SIZE), 4);
    f.w16(QUEUE_SIZE, 2);
    f.w16(QUEUE_MSIX_VECTOR, 3);
    f.w64(QUEUE_DESC, 0x4000);
    assert_eq!(f.r16(QUEUE_SIZE), 4);
    assert_eq!(f.r16(QUEUE_MSIX_VECTOR), 1);
    assert_eq!(f.r64(QUEUE_DESC), RING);
    assert_eq!(driver.read_queue_state(0).unwrap(), (1, 0));
    driver.set_queue_state(0, 0, 0).unwrap();
    assert_eq!(driver.read_queue_state(0).unwrap(), (0, 0));
    driver.set_queue_state(0, 1, 0).unwrap();
    driver.resume_from_suspend().unwrap();
    push(&mut driver, 0, &[BufferSpec::writable(DATA, 8)]);
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
}

const RUNNING: DeviceStatus = DeviceStatus::ACKNOWLEDGE
    .union(DeviceStatus::DRIVER)
    .union(DeviceStatus::FEATURES_OK)
    .union(DeviceStatus::DRIVER_OK);

/// Seed 000: "The device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set." — through the
/// device_status register, for setting and clearing, including while DRIVER_OK is clear because
/// the device is suspended; and (spec-decisions §2) a write that sets DRIVER_OK together with
/// DEVICE_STOPPED starts the device without stopping it.
#[test]
fn device_stopped_register_ignored_without_driver_ok_both_ways() {
    let (mem, f) = fresh();
    let _driver = driver_started(&f, &mem, migration_features(false));
    let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(f.write_status(stopped), stopped);
    let suspended = (stopped | DeviceStatus::SUSPEND).difference(DeviceStatus::DRIVER_OK);
    assert_eq!(f.write_status(stopped | DeviceStatus::SUSPEND), suspended);
    // Clearing DEVICE_STOPPED while DRIVER_OK is clear: ignored.
    let cleared = suspended.difference(DeviceStatus::DEVICE_STOPPED);
    assert_eq!(f.write_status(cleared), suspended);
    // DRIVER_OK resumes from SUSPEND; the DEVICE_STOPPED clear in the same write is ignored.
    assert_eq!(f.write_status(RUNNING | DeviceStatus::SUSPEND), stopped);
    assert_eq!(f.write_status(RUNNING), RUNNING);
    // Setting DEVICE_STOPPED while suspended: ignored.
    let suspended = (RUNNING | DeviceStatus::SUSPEND).difference(DeviceStatus::DRIVER_OK);
    assert_eq!(f.write_status(RUNNING | DeviceStatus::SUSPEND), suspended);
    let set = suspended | DeviceStatus::DEVICE_STOPPED;
    assert_eq!(f.write_status(set), suspended);

    // DRIVER_OK and DEVICE_STOPPED in one write at the end of initialisation.
    let (_mem, f) = fresh();
    f.to_features_ok(migration_features(false));
    assert_eq!(f.write_status(stopped), RUNNING);
}

/// Seed 003 review: "what about queue select and all related queue fields? — For now they are
/// forbidden." With spec-decisions §2 and the virtio-pci decisions: while the device is stopped
/// or suspended the driver's writes to the common configuration are ignored, except the
/// selectors (they only choose what reads show), the device status and, while suspended, the
/// queue state. Every
/// writable field is written with a value different from its own and must read back unchanged;
/// after resume the same config_msix_vector write takes effect.
#[test]
fn common_configuration_frozen_while_stopped_or_suspended() {
    for suspend in [false, true] {
        let (mem, f) = fresh();
        let mut driver = driver_started(&f, &mem, migration_features(false));
        push(&mut driver, 0, &[BufferSpec::writable(DATA, 8)]);
        driver.collect_used(0).unwrap();
        if suspend {
            driver.suspend().unwrap();
        } else {
            driver.stop().unwrap();
        }
        f.w16(QUEUE_SELECT, 0);
        let read = |f: &Function| {
            f.w32(DRIVER_FEATURE_SELECT, 0);
            let low = f.r32(DRIVER_FEATURE);
            f.w32(DRIVER_FEATURE_SELECT, 1);
            let high = f.r32(DRIVER_FEATURE);
            (
                (
                    low,
                    high,
                    f.r16(CONFIG_MSIX_VECTOR),
                    f.r16(QUEUE_MSIX_VECTOR),
                ),
                (f.r16(QUEUE_SIZE), f.r16(QUEUE_ENABLE)),
                (f.r64(QUEUE_DESC), f.r64(QUEUE_DRIVER), f.r64(QUEUE_DEVICE)),
                (f.r16(QUEUE_AVAIL_STATE), f.status()),
            )
        };
        let before = read(&f);
        let other = |v: u16| if v == 0 { 1 } else { 0 };
        let config_vector = f.r16(CONFIG_MSIX_VECTOR);
        f.w16(CONFIG_MSIX_VECTOR, other(config_vector));
        f.w16(QUEUE_MSIX_VECTOR, other(f.r16(QUEUE_MSIX_VECTOR)));
        for select in [0, 1] {
            f.w32(DRIVER_FEATURE_SELECT, select);
            f.w32(DRIVER_FEATURE, !f.r32(DRIVER_FEATURE));
        }
        f.w16(QUEUE_SIZE, 2);
        f.w16(QUEUE_ENABLE, 0);
        f.w64(QUEUE_DESC, RING + 0x4000);
        f.w64(QUEUE_DRIVER, RING + 0x5000);
        f.w64(QUEUE_DEVICE, RING + 0x6000);
        if !suspend {
            // Stopped: DRIVER_OK is set, so the queue state is not writable either.
            f.w16(QUEUE_AVAIL_STATE, f.r16(QUEUE_AVAIL_STATE) + 3);
        }
        assert_eq!(read(&f), before, "suspend={suspend}");

        if suspend {
            driver.resume_from_suspend().unwrap();
        } else {
            driver.resume().unwrap();
        }
        f.w16(CONFIG_MSIX_VECTOR, other(config_vector));
        assert_eq!(
            f.r16(CONFIG_MSIX_VECTOR),
            other(config_vector),
            "live again"
        );
    }
}
