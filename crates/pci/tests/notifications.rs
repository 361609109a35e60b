//! Driver notifications through the notify region: 16-bit queue index writes, the 32-bit
//! VIRTIO_F_NOTIFICATION_DATA format (virtio 1.4 "Driver Notifications"), per-queue notify addresses, and the two kick
//! modes (direct and eventfd for a worker).

use std::time::Duration;

use virtio_lm_pci::testing::*;
use virtio_lm_pci::{NotificationData, QueueSetup};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::Feature;

/// The 32-bit notification value: `le32 { vq_index : 16; next_off : 15; next_wrap : 1; }`;
/// split rings send `avail.idx` (low 15 bits and bit 15), packed rings the next offset and the
/// driver wrap counter.
#[test]
fn notification_data_encoding() {
    let split = NotificationData::split(2, 0x8003);
    assert_eq!(
        (split.queue, split.next_off, split.next_wrap),
        (2, Some(3), true)
    );
    assert_eq!(split.encode(), 0x8003_0002);
    let packed = NotificationData::packed(1, 5, false);
    assert_eq!(NotificationData::decode(packed.encode()), packed);
    assert_eq!(NotificationData::decode(0xffff_ffff).next_off, Some(0x7fff));
    assert_eq!(NotificationData::index_only(4).next_off, None);
}

/// With VIRTIO_F_NOTIFICATION_DATA negotiated the driver writes 32-bit values; the device
/// decodes the queue from the low 16 bits and kicks it, and records the ring position: split
/// `avail.idx`, packed next offset and wrap counter (here after the packed ring of 3 wrapped).
#[test]
fn notification_data_kicks_decode_the_ring_position() {
    for packed in [false, true] {
        let mem = memory();
        let options = options_with(&[Feature::NotificationData]);
        let f = counting_function_with(&mem, 8, options, false, 1);
        let mut driver = driver_for(&f, &mem);
        let mut wanted = vec![Feature::Version1, Feature::NotificationData];
        if packed {
            wanted.push(Feature::RingPacked);
        }
        driver
            .init(
                features(&wanted),
                &[QueueSetup::new(0, 3 + u16::from(!packed), RING)],
            )
            .unwrap();
        for i in 0..4 {
            driver
                .submit(0, &[BufferSpec::writable(DATA + 64 * i, 8)])
                .unwrap();
            assert_eq!(driver.collect_used(0).unwrap().len(), 1);
        }
        let expect = if packed {
            // Four buffers on a ring of 3: next slot 1, driver wrap counter flipped to 0.
            NotificationData::packed(0, 1, false)
        } else {
            NotificationData::split(0, 4)
        };
        assert_eq!(f.last_notification(0), Some(expect), "packed {packed}");
    }
}

/// Without VIRTIO_F_NOTIFICATION_DATA only a 16-bit index write notifies: a 32-bit write, a
/// write of another queue's index, or a write at another queue's address is ignored.
#[test]
fn malformed_notifications_are_ignored() {
    let (_, f, mut driver) = running(features(&[Feature::Version1]), 4, false);
    driver
        .add_buffer(0, &[BufferSpec::writable(DATA, 8)])
        .unwrap();
    driver.publish(0).unwrap();
    let address = driver.notify_address(0).unwrap();
    f.bar_write(address, &0u32.to_le_bytes());
    f.bar_write(address, &1u16.to_le_bytes());
    f.bar_write(address + 4, &0u16.to_le_bytes());
    f.bar_write(address, &[0]);
    assert!(driver.collect_used(0).unwrap().is_empty());
    assert_eq!(f.last_notification(0), None);
    f.bar_write(address, &0u16.to_le_bytes());
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
    assert_eq!(
        f.last_notification(0),
        Some(NotificationData::index_only(0))
    );
}

/// Worker mode: a notification signals the queue's kick eventfd and returns without touching
/// the core; a `Worker` on those eventfds then processes the queue.
#[test]
fn worker_mode_signals_the_kick_eventfd() {
    let (mem, f, mut driver) = running(features(&[Feature::Version1]), 4, true);
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    assert!(driver.collect_used(0).unwrap().is_empty());
    let worker = f.spawn_worker().unwrap();
    let mut used = Vec::new();
    assert!(wait_until(Duration::from_secs(60), || {
        used.extend(driver.collect_used(0).unwrap());
        !used.is_empty()
    }));
    assert_eq!(used.len(), 1);
    worker.stop();
    let direct = counting_function(&mem, 8, false);
    assert!(direct.spawn_worker().is_err());
}
