//! The migration round trip through `PciDriver` with workers running: stop (or suspend) →
//! read queue state and config → reset → re-initialise a fresh device with that state, the
//! rings still holding outstanding buffers → resume; every buffer completes exactly once and
//! no notification is lost. Split and packed rings.

use std::collections::BTreeSet;
use std::time::Duration;

use virtio_lm_device::CoreOptions;
use virtio_lm_pci::testing::*;
use virtio_lm_pci::PciDriver;
use virtio_lm_queue::{BufferSpec, UsedBuffer};

fn collect(driver: &mut PciDriver<Mem>, want: usize) -> Vec<UsedBuffer> {
    let mut done = Vec::new();
    let ok = wait_until(Duration::from_secs(60), || {
        done.extend(driver.collect_used(0).unwrap());
        done.len() >= want
    });
    assert!(ok, "only {} of {want} buffers completed", done.len());
    done
}

fn round_trip(packed: bool, quiet: Quiet) {
    let size = if packed { 3 } else { 4 };
    let (mem, source, mut driver) = running(migration_features(packed), size, true);
    let source_worker = source.spawn_worker().unwrap();

    // Enough traffic that the indices wrap (packed: 25 slots on a ring of 3 flip the wrap
    // counters eight times).
    for i in 0..25u64 {
        push(
            &mut driver,
            0,
            &[BufferSpec::writable(DATA + 0x100 * (i % 4), 32)],
        );
        assert_eq!(collect(&mut driver, 1).len(), 1);
    }

    // Outstanding in the ring: one buffer made available without a notification before the
    // quiesce, one made available and notified while quiescent (the kick is latched).
    let silent = driver
        .add_buffer(0, &[BufferSpec::writable(DATA + 0x1000, 32)])
        .unwrap();
    driver.publish(0).unwrap();
    driver.enable_interrupts(0).unwrap();
    quiet.enter(&mut driver);
    let latched = push(&mut driver, 0, &[BufferSpec::writable(DATA + 0x2000, 32)]);

    // Read the queue state and the configuration of the quiescent source.
    let state = driver.read_queue_state(0).unwrap();
    let expected = if packed {
        // 25 = 8 * 3 + 1: index 1, wrap counters 1 (flipped an even number of times).
        (0x8001, 0x8001)
    } else {
        (25, 0)
    };
    assert_eq!(state, expected, "{quiet:?} packed {packed}");
    let saved = driver.save_state().unwrap();
    let mut config = [0u8; 16];
    driver.read_config(0, &mut config);

    // Seed 001: the state is read after a reset, and the reset keeps it.
    driver.reset().unwrap();
    assert_eq!(driver.read_queue_state(0).unwrap(), state);
    source_worker.stop();
    let source_interrupts = source.interrupts().total();

    // A fresh device, initialised with the saved state; no notification is sent to it.
    let destination = counting_function_with(&mem, 8, CoreOptions::default(), true, 1000);
    let _destination_worker = destination.spawn_worker().unwrap();
    driver.restore_onto(destination.clone(), &saved).unwrap();
    assert_eq!(driver.config_generation(), saved.config_generation);
    let mut destination_config = [0u8; 16];
    driver.read_config(0, &mut destination_config);
    assert_eq!(destination_config, config);

    let done = collect(&mut driver, 2);
    std::thread::sleep(Duration::from_millis(5));
    let mut ids: Vec<u16> = done.iter().map(|u| u.id).collect();
    ids.extend(driver.collect_used(0).unwrap().iter().map(|u| u.id));
    ids.sort_unstable();
    let mut expect = vec![silent, latched];
    expect.sort_unstable();
    assert_eq!(ids, expect, "each outstanding buffer exactly once");
    assert!(done.iter().all(|u| u.len == 32));
    // The destination announced the completions without being notified (pitfall 4).
    assert!(destination.interrupts().vector_count(1) >= 1);

    // The destination keeps working; the source stays silent.
    for i in 0..10u64 {
        push(
            &mut driver,
            0,
            &[BufferSpec::writable(DATA + 0x100 * (i % 4), 32)],
        );
        assert_eq!(collect(&mut driver, 1).len(), 1);
    }
    assert_eq!(source.interrupts().total(), source_interrupts);
    let unique: BTreeSet<u16> = ids.into_iter().collect();
    assert_eq!(unique.len(), 2);
}

virtio_lm_device::test_cases! { round_trip:
    /// Seed 001: "If VIRTIO_F_QUEUE_STATE has been negotiated. a driver MUST reset the device
    /// before getting the virtqueue state." and "a driver MUST set the state of each virtqueue
    /// after setting the FEATURE_OK status bit but before setting the DRIVER_OK status bit." —
    /// stop, read the state (also after the reset, unchanged), restore onto a fresh device with
    /// buffers outstanding in a split ring: each completes exactly once, and the destination
    /// notifies without a new kick.
    fn stop_round_trip_split(false, Quiet::Stop);
    /// Seed 001: "The used state is unnecessary when VIRTIO_RING_F_PACKED is not negotiated" — and
    /// necessary when it is: the packed round trip carries `last_avail_idx : 15;
    /// last_avail_wrap_counter : 1` and `used_idx : 15; used_wrap_counter : 1` after the counters
    /// wrapped, with buffers outstanding; each completes exactly once on the fresh device.
    fn stop_round_trip_packed(true, Quiet::Stop);
    /// Seed 003: "Record Virtqueue State of each enabled virtqueue" — suspend, read the recorded
    /// state, reset, restore onto a fresh device (split): each outstanding buffer completes exactly
    /// once and the destination notifies without a new kick.
    fn suspend_round_trip_split(false, Quiet::Suspend);
    /// Seed 003: "Record Virtqueue State of each enabled virtqueue" — as
    /// `suspend_round_trip_split`, packed ring of 3 with wrapped counters.
    fn suspend_round_trip_packed(true, Quiet::Suspend);
}
