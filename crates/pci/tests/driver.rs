//! `PciDriver` against an rng function: the initialisation sequence, real buffers, and the
//! lifecycle facilities — DEVICE_STOPPED (seed 000), SUSPEND (seed 003 as merged), queue state
//! validation (seed 001, spec-decisions §3), recovery from DEVICE_NEEDS_RESET (seed 002).

use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::CoreOptions;
use virtio_lm_pci::testing::*;
use virtio_lm_pci::{PciDriver, PciError, PciTransport, PollPolicy, QueueSetup, VirtioPciFunction};
use virtio_lm_queue::{BufferSpec, QueueConfig, RingFeatures, RingKind, SplitDriver};
use virtio_lm_spec::pci::offset::*;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{Bytes, GuestAddress};

/// A driver of `function` through a [`Recorder`] of its register accesses.
fn recorded(
    function: &Arc<VirtioPciFunction<Mem>>,
    mem: &Arc<Mem>,
) -> (Arc<Recorder>, PciDriver<Mem>) {
    let rec = Recorder::new(function.clone());
    let driver = PciDriver::new(rec.clone(), mem.clone(), Profile::Seeds).unwrap();
    (rec, driver)
}

/// [`recorded`], initialised with the [`migration_features`] and queue 0 of 4 at [`RING`].
fn recorded_running(
    function: &Arc<VirtioPciFunction<Mem>>,
    mem: &Arc<Mem>,
) -> (Arc<Recorder>, PciDriver<Mem>) {
    let (rec, mut driver) = recorded(function, mem);
    driver
        .init(migration_features(false), &[QueueSetup::new(0, 4, RING)])
        .unwrap();
    (rec, driver)
}

/// virtio 1.4 "Device Initialization" init order through the registers: reset (write 0, read back 0), ACKNOWLEDGE,
/// DRIVER, both device feature windows read, both driver feature windows written, FEATURES_OK
/// and a re-read that shows it, queue setup, then DRIVER_OK last.
#[test]
fn init_follows_the_spec_sequence() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let (rec, mut driver) = recorded(&f, &mem);
    let wanted = features(&[Feature::Version1, Feature::EventIdx]);
    driver.init(wanted, &[QueueSetup::new(0, 4, RING)]).unwrap();
    let log = rec.take();
    let writes: Vec<u8> = Recorder::status_accesses(&log)
        .into_iter()
        .filter_map(|(w, v)| w.then_some(v))
        .collect();
    assert_eq!(writes, vec![0, 1, 3, 11, 15]);
    let pos = |pred: &dyn Fn(&Access) -> bool| log.iter().position(pred).unwrap();
    let reset_read = pos(&|a| *a == Access::Read(DEVICE_STATUS as u64, vec![0]));
    let driver_written = pos(&|a| *a == Access::Write(DEVICE_STATUS as u64, vec![3]));
    let features_read = pos(&|a| matches!(a, Access::Read(o, _) if *o == DEVICE_FEATURE as u64));
    let features_written =
        pos(&|a| matches!(a, Access::Write(o, _) if *o == DRIVER_FEATURE as u64));
    let features_ok = pos(&|a| *a == Access::Write(DEVICE_STATUS as u64, vec![11]));
    let features_ok_read = pos(&|a| *a == Access::Read(DEVICE_STATUS as u64, vec![11]));
    let enable = pos(&|a| matches!(a, Access::Write(o, _) if *o == QUEUE_ENABLE as u64));
    let driver_ok = pos(&|a| *a == Access::Write(DEVICE_STATUS as u64, vec![15]));
    assert!(reset_read < driver_written);
    assert!(driver_written < features_read && features_read < features_written);
    assert!(features_written < features_ok && features_ok < features_ok_read);
    assert!(features_ok_read < enable && enable < driver_ok);
    assert_eq!(driver.status().bits(), 15);
    assert_eq!(driver.features(), wanted);
    assert!(!driver.negotiated(Feature::RingPacked));
}

/// Real buffers through the rng: chains of two writable segments on a split ring of 8 and a
/// packed ring of 5 (not a power of 2) are filled with the entropy stream in order, every byte
/// of every segment, and returned with the full length.
#[test]
fn rng_fills_real_buffers_split_and_packed() {
    for packed in [false, true] {
        let mem = memory();
        let f = counting_function_with(&mem, 8, CoreOptions::default(), false, 100);
        let mut driver = driver_for(&f, &mem);
        let mut wanted = vec![Feature::Version1];
        if packed {
            wanted.push(Feature::RingPacked);
        }
        let size = if packed { 5 } else { 8 };
        driver
            .init(features(&wanted), &[QueueSetup::new(0, size, RING)])
            .unwrap();
        let mut expected = 100u8;
        for round in 0..12u64 {
            let a = DATA + round * 0x100;
            let chain = [
                BufferSpec::writable(a, 16),
                BufferSpec::writable(a + 0x80, 32),
            ];
            let id = driver.submit(0, &chain).unwrap();
            let used = driver.collect_used(0).unwrap();
            assert_eq!(used.len(), 1);
            assert_eq!((used[0].id, used[0].len), (id, 48));
            for (addr, len) in [(a, 16usize), (a + 0x80, 32)] {
                let mut bytes = vec![0u8; len];
                mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
                for b in bytes {
                    assert_eq!(b, expected, "packed {packed} round {round}");
                    expected = expected.wrapping_add(1);
                }
            }
        }
        assert!(driver.outstanding().is_empty());
        assert_eq!(f.interrupts().vector_count(1), 12);
    }
}

/// Seed 000 (device text it keeps): "The device MUST NOT consume buffers or send any used
/// buffer notifications to the driver before DRIVER_OK." A buffer made available and notified
/// during setup is untouched and unannounced; after DRIVER_OK the next notification completes
/// it.
#[test]
fn nothing_is_consumed_before_driver_ok() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    f.w8(DEVICE_STATUS, DeviceStatus::ACKNOWLEDGE.bits());
    f.w8(
        DEVICE_STATUS,
        (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER).bits(),
    );
    f.w32(DRIVER_FEATURE_SELECT, 1);
    f.w32(DRIVER_FEATURE, 1); // VERSION_1 (bit 32)
    f.w8(DEVICE_STATUS, 11);
    let (config, _) = QueueConfig::contiguous(
        RingKind::Split,
        4,
        GuestAddress(RING),
        RingFeatures::default(),
    );
    let mut ring = SplitDriver::new(config, &*mem).unwrap();
    f.w16(QUEUE_SIZE, 4);
    f.w64(QUEUE_DESC, config.desc_table.0);
    f.w64(QUEUE_DRIVER, config.driver_area.0);
    f.w64(QUEUE_DEVICE, config.device_area.0);
    f.w16(QUEUE_MSIX_VECTOR, 1);
    f.w16(QUEUE_ENABLE, 1);
    ring.add_chain(&*mem, &[BufferSpec::writable(DATA, 8)])
        .unwrap();
    ring.publish(&*mem).unwrap();
    let before = snapshot(&mem);
    f.bar_write(0x3000, &0u16.to_le_bytes());
    assert!(
        snapshot(&mem) == before,
        "device touched memory before DRIVER_OK"
    );
    assert_eq!(f.interrupts().total(), 0);
    f.w8(DEVICE_STATUS, 15);
    f.bar_write(0x3000, &0u16.to_le_bytes());
    assert_eq!(ring.collect_used(&*mem).unwrap().len(), 1);
    assert_eq!(f.interrupts().vector_count(1), 1);
}

/// Seed 000: "The driver MUST NOT set or clear DEVICE_STOPPED when DRIVER_OK is not set."
/// While suspended (DRIVER_OK clear) `stop()` and `resume()` fail without writing the status;
/// before DRIVER_OK likewise.
#[test]
fn driver_never_touches_device_stopped_without_driver_ok() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let (rec, mut driver) = recorded_running(&f, &mem);
    driver.suspend().unwrap();
    rec.take();
    assert!(matches!(driver.stop(), Err(PciError::NotRunning { .. })));
    assert!(matches!(driver.resume(), Err(PciError::NotRunning { .. })));
    assert!(Recorder::status_accesses(&rec.take())
        .iter()
        .all(|&(write, _)| !write));
    driver.resume_from_suspend().unwrap();
    driver.stop().unwrap();
    assert!(driver.status().contains(DeviceStatus::DEVICE_STOPPED));
}

/// Seed 000: "The device MUST ignore DEVICE_STOPPED when DRIVER_OK is not set." Written with
/// FEATURES_OK (F_DEVICE_STOP negotiated) it does not stick; nor after DRIVER_OK when
/// F_DEVICE_STOP was not negotiated (spec-decisions §2).
#[test]
fn device_ignores_device_stopped_without_driver_ok() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    f.w8(DEVICE_STATUS, 1);
    f.w8(DEVICE_STATUS, 3);
    let wanted = migration_features(false);
    f.w32(DRIVER_FEATURE_SELECT, 0);
    f.w32(DRIVER_FEATURE, wanted as u32);
    f.w32(DRIVER_FEATURE_SELECT, 1);
    f.w32(DRIVER_FEATURE, (wanted >> 32) as u32);
    f.w8(DEVICE_STATUS, 11);
    f.w8(DEVICE_STATUS, 11 | DeviceStatus::DEVICE_STOPPED.bits());
    assert_eq!(f.status().bits(), 11);

    let mut driver = driver_started(&f, &mem, features(&[Feature::Version1]));
    f.w8(DEVICE_STATUS, 15 | DeviceStatus::DEVICE_STOPPED.bits());
    assert_eq!(f.status().bits(), 15);
    assert!(matches!(
        driver.stop(),
        Err(PciError::FeatureNotNegotiated(Feature::DeviceStop))
    ));
}

/// Seed 000: "In order to stop the device, the driver MUST set DEVICE_STOPPED first and re-read
/// status to check whether DEVICE_STOPPED is set by the device. In order to resume the device,
/// the driver MUST clear DEVICE_STOPPED first and read status to ensure whether DEVICE_STOPPED
/// is cleared by the device." The status accesses of `stop()` and `resume()` are exactly: a
/// write setting the bit then reads until it shows; a write clearing it then reads until it
/// is clear. Clearing DEVICE_STOPPED is the one clear a driver makes.
#[test]
fn stop_and_resume_write_then_reread_the_status() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let (rec, mut driver) = recorded_running(&f, &mem);
    rec.take();
    driver.stop().unwrap();
    let stopped = DeviceStatus::DEVICE_STOPPED.bits() | 15;
    assert_eq!(
        Recorder::status_accesses(&rec.take()),
        vec![(false, 15), (true, stopped), (false, stopped)]
    );
    driver.resume().unwrap();
    assert_eq!(
        Recorder::status_accesses(&rec.take()),
        vec![(false, stopped), (true, 15), (false, 15)]
    );
}

/// Seed 000: "When driver is trying to set DEVICE_STOPPED, the device MUST not process new
/// avail requests and MUST complete all requests that is currently processing before setting
/// DEVICE_STOPPED." A device with an asynchronous backend holds three requests when the stop is
/// written; DEVICE_STOPPED reads set only once all three are used and notified, and a request
/// made available after the stop is not taken until resume.
#[test]
fn stop_completes_requests_in_process_first() {
    let mem = memory();
    let f = slow_function(&mem, false);
    let (rec, mut driver) = recorded(&f, &mem);
    // No EVENT_IDX: every used buffer is notified.
    let wanted = features(&[Feature::Version1, Feature::DeviceStop]);
    init_queue0(&mut driver, wanted);
    // One notification for three chains: the device takes all three into its backend.
    for i in 0..3 {
        driver
            .add_buffer(0, &[BufferSpec::writable(DATA + 0x100 * i, 16)])
            .unwrap();
    }
    driver.publish(0).unwrap();
    driver.notify(0).unwrap();
    assert!(driver.collect_used(0).unwrap().is_empty());
    rec.take();
    driver.stop().unwrap();
    let reads: Vec<u8> = Recorder::status_accesses(&rec.take())
        .into_iter()
        .filter_map(|(w, v)| (!w).then_some(v))
        .collect();
    // Every read before the last showed the stop still in progress.
    assert!(reads.len() >= 3, "{reads:?}");
    assert!(reads[1..reads.len() - 1]
        .iter()
        .all(|&s| !DeviceStatus::from(s).intersects(DeviceStatus::DEVICE_STOPPED)));
    assert_eq!(driver.collect_used(0).unwrap().len(), 3);
    assert_eq!(f.interrupts().vector_count(1), 3);
    push(&mut driver, 0, &[BufferSpec::writable(DATA + 0x400, 16)]);
    let before = snapshot(&mem);
    for _ in 0..5 {
        driver.status();
    }
    assert!(
        snapshot(&mem) == before,
        "device took a buffer while stopped"
    );
    driver.resume().unwrap();
    let mut used = Vec::new();
    // The backend completes on the core's next entry; a (spurious) notification provides one.
    assert!(wait_until(Duration::from_secs(60), || {
        driver.notify(0).unwrap();
        used.extend(driver.collect_used(0).unwrap());
        used.len() == 1
    }));
}

/// Bounded retries: a device that never finishes its requests never presents DEVICE_STOPPED;
/// `stop()` gives up after the poll policy's attempts with a timeout naming what it waited
/// for, instead of looping forever.
#[test]
fn stop_gives_up_with_a_clear_error() {
    let mem = memory();
    let f = slow_function(&mem, true);
    let mut driver = driver_for(&f, &mem);
    init_queue0(&mut driver, migration_features(false));
    push(&mut driver, 0, &[BufferSpec::writable(DATA, 16)]);
    driver.set_poll_policy(PollPolicy {
        attempts: 50,
        spins: 10,
        interval: Duration::from_micros(20),
    });
    match driver.stop() {
        Err(PciError::Timeout {
            what,
            attempts: 50,
            status,
        }) => {
            assert_eq!(what, "DEVICE_STOPPED set");
            assert!(!status.intersects(DeviceStatus::DEVICE_STOPPED));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = driver.suspend().map(|_| ()).unwrap_err().to_string();
    assert!(text.contains("Timed out waiting for SUSPEND"), "{text}");
}

/// Seed 000: "The device MUST keep the config space unchanged when DEVICE_STOPPED is set." A
/// configuration change while stopped leaves config_generation as it was and sends no
/// notification; on resume it is applied, the generation moves and the notification goes out.
#[test]
fn config_space_is_unchanged_while_stopped() {
    let (_, f, mut driver) = running(migration_features(false), 4, false);
    driver.stop().unwrap();
    let generation = driver.config_generation();
    let mut config = [0u8; 8];
    driver.read_config(0, &mut config);
    f.core().lock().unwrap().change_config(|_| {});
    driver.write_config(0, &[1, 2, 3, 4]);
    assert_eq!(driver.config_generation(), generation);
    let mut again = [0u8; 8];
    driver.read_config(0, &mut again);
    assert_eq!(again, config);
    assert_eq!(f.interrupts().vector_count(0), 0);
    driver.resume().unwrap();
    assert_eq!(driver.config_generation(), generation.wrapping_add(1));
    assert_eq!(f.interrupts().vector_count(0), 1);
}

/// Seed 003 as merged (spec-decisions §2): the device clears DRIVER_OK and presents SUSPEND; while
/// suspended it takes no buffer, sends no notification and changes no config field (a change
/// is notified on resume); the driver resumes by setting DRIVER_OK and waits for SUSPEND=0,
/// DRIVER_OK=1, after which the buffer made available meanwhile completes. Review of seed 003:
/// "Setting a bit that is already set should not have side effects": rewriting the status with
/// SUSPEND still set does not resume.
#[test]
fn suspend_clears_driver_ok_and_driver_ok_resumes() {
    for packed in [false, true] {
        let (mem, f, mut driver) = running(migration_features(packed), 4, false);
        driver.suspend().unwrap();
        let s = driver.status();
        assert_eq!(
            s & (DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK),
            DeviceStatus::SUSPEND
        );
        let id = driver
            .add_buffer(0, &[BufferSpec::writable(DATA, 8)])
            .unwrap();
        driver.publish(0).unwrap();
        let before = snapshot(&mem);
        driver.notify(0).unwrap();
        f.core().lock().unwrap().change_config(|_| {});
        f.w8(DEVICE_STATUS, s.bits());
        assert_eq!(driver.status(), s);
        assert!(snapshot(&mem) == before, "suspended device touched memory");
        assert_eq!(f.interrupts().total(), 0);
        assert_eq!(driver.config_generation(), 0);
        driver.resume_from_suspend().unwrap();
        assert_eq!(
            driver.status() & (DeviceStatus::SUSPEND | DeviceStatus::DRIVER_OK),
            DeviceStatus::DRIVER_OK
        );
        let used = driver.collect_used(0).unwrap();
        assert_eq!(used.iter().map(|u| u.id).collect::<Vec<_>>(), vec![id]);
        assert_eq!(driver.config_generation(), 1);
        assert_eq!(f.interrupts().vector_count(0), 1);
        assert_eq!(f.interrupts().vector_count(1), 1);
        assert!(matches!(
            driver.resume_from_suspend(),
            Err(PciError::NotSuspended { .. })
        ));
    }
}

/// Seed 003 review: "let's just forbid driver from setting it" — the driver does not set
/// SUSPEND unless F_SUSPEND was negotiated (and DRIVER_OK is set).
#[test]
fn suspend_needs_the_feature() {
    let (_, _, mut driver) = running(features(&[Feature::Version1]), 4, false);
    assert!(matches!(
        driver.suspend(),
        Err(PciError::FeatureNotNegotiated(Feature::Suspend))
    ));
    assert!(!driver.status().intersects(DeviceStatus::SUSPEND));
}

/// Seed 001: "If VIRTIO_F_QUEUE_STATE has been negotiated, a driver MUST set the state of each
/// virtqueue after setting the FEATURE_OK status bit but before setting the DRIVER_OK status
/// bit." The state written in that window is validated when the queue starts (spec-decisions §3):
/// a split last_avail_idx more than the queue size behind avail.idx makes DRIVER_OK fail with
/// DEVICE_NEEDS_RESET and a configuration change notification; the initial state is accepted.
#[test]
fn queue_state_set_before_driver_ok_is_validated() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let mut driver = driver_for(&f, &mem);
    let err = driver
        .init(
            migration_features(false),
            &[QueueSetup::new(0, 4, RING).with_state(9, 0)],
        )
        .unwrap_err();
    assert!(matches!(err, PciError::NeedsReset { .. }), "{err}");
    assert!(driver.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(f.interrupts().vector_count(0), 1);
    driver
        .init(
            migration_features(true),
            &[QueueSetup::new(0, 4, RING).with_state(0x8000, 0x8000)],
        )
        .unwrap();
    push(&mut driver, 0, &[BufferSpec::writable(DATA, 8)]);
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
    // Outside the window the state is refused.
    assert!(matches!(
        driver.set_queue_state(0, 1, 0),
        Err(PciError::StateNotAccepted { index: 0 })
    ));
}

/// Seed 002: "The driver SHOULD NOT rely on completion of operations of a device if
/// DEVICE_NEEDS_RESET is set. ... A good implementation will try to recover by issuing a
/// reset." A malformed chain puts the device into NEEDS_RESET with a good chain ahead of it;
/// `recover_from_needs_reset` resets, re-initialises the same layout and hands back both
/// chains as outstanding (whether the device finished the good one is unknown); re-adding the
/// good one completes it on the recovered device.
#[test]
fn recovery_from_needs_reset_returns_outstanding_chains() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let mut driver = driver_for(&f, &mem);
    let wanted = features(&[Feature::Version1, Feature::RingPacked]);
    driver.init(wanted, &[QueueSetup::new(0, 4, RING)]).unwrap();
    let good = [BufferSpec::writable(DATA, 8)];
    let bad = [BufferSpec::writable(0xffff_0000, 8)];
    driver.add_buffer(0, &good).unwrap();
    driver.add_buffer(0, &bad).unwrap();
    driver.publish(0).unwrap();
    driver.kick(0).unwrap();
    assert!(matches!(
        driver.stop(),
        Err(PciError::FeatureNotNegotiated(_))
    ));
    assert!(driver.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    let outstanding = driver.recover_from_needs_reset().unwrap();
    let buffers: Vec<_> = outstanding.iter().map(|c| c.buffers.clone()).collect();
    assert_eq!(buffers, vec![good.to_vec(), bad.to_vec()]);
    assert_eq!(driver.status().bits(), 15);
    assert_eq!(driver.features(), wanted);
    driver.submit(0, &outstanding[0].buffers).unwrap();
    let used = driver.collect_used(0).unwrap();
    assert_eq!((used.len(), used[0].len), (1, 8));
}

/// The driver refuses what the device cannot do: a queue that does not exist (queue_size reads
/// 0), a size above the maximum, and a feature set without VERSION_1.
#[test]
fn init_reports_unusable_setups() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let mut driver = driver_for(&f, &mem);
    let v1 = features(&[Feature::Version1]);
    assert!(matches!(
        driver.init(v1, &[QueueSetup::new(1, 4, RING)]),
        Err(PciError::NoSuchQueue(1))
    ));
    assert!(matches!(
        driver.init(v1, &[QueueSetup::new(0, 16, RING)]),
        Err(PciError::QueueTooLarge { max: 8, .. })
    ));
    assert!(matches!(
        driver.init(0, &[QueueSetup::new(0, 4, RING)]),
        Err(PciError::NotModern)
    ));
    assert!(driver.status().contains(DeviceStatus::FAILED));
    let transport: Arc<dyn PciTransport> = f.clone();
    assert!(PciDriver::new(transport, mem.clone(), Profile::Seeds).is_ok());
}

/// virtio 1.4 "Device Initialization" with the driver interrupted between any two steps
/// (spec-decisions §40: a guest whose vCPU pauses, or migrates, in the middle): `init_steps`
/// run one at a time after a running device make exactly the register writes `init` made in one
/// go, the status after each step is the one the sequence has reached (0 after the reset, then
/// ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK), and the device runs again.
#[test]
fn init_one_step_at_a_time_writes_what_init_writes() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let (rec, mut driver) = recorded_running(&f, &mem);
    let writes = |log: Vec<Access>| -> Vec<Access> {
        log.into_iter()
            .filter(|a| matches!(a, Access::Write(..)))
            .collect()
    };
    let at_once = writes(rec.take());
    let mut statuses = Vec::new();
    for step in driver.init_steps() {
        driver.init_step(step).unwrap();
        statuses.push(driver.status().bits());
    }
    assert_eq!(writes(rec.take()), at_once);
    assert_eq!(statuses, vec![0, 1, 3, 3, 11, 11, 11, 15]);
    assert_eq!(driver.features(), migration_features(false));
}
