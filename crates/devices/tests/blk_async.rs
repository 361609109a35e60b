//! Asynchronous completion: out of order, multi-queue (VIRTIO_BLK_F_MQ, virtio spec 5.2.3/5.2.5),
//! the completion eventfd, and two devices sharing one image.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_same_ids, initial_sector, pattern, Req, Rig, TempImage, TestCore};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::{features, status};
use virtio_lm_devices::{BlkOptions, Faults, RequestInfo};
use virtio_lm_spec::DeviceStatus;

const SECTORS: u64 = 512;

/// [`Rig::on_image`] of [`SECTORS`].
fn rig_with(tune: impl FnOnce(BlkOptions) -> BlkOptions) -> (TempImage, Rig) {
    Rig::on_image(SECTORS, tune)
}

fn slow_sector_zero() -> Faults {
    Faults {
        delay: Some(Arc::new(|info: &RequestInfo| {
            if info.sector == 0 {
                Duration::from_millis(300)
            } else {
                Duration::ZERO
            }
        })),
        ..Faults::default()
    }
}

/// Requests complete in the order the backend finishes them, not the order they were taken
/// (virtio spec 2.7.14/2.8.21: used buffers may be returned in any order unless IN_ORDER is
/// negotiated, which this device does not offer). A slow first request finishes last.
#[test]
fn slow_request_completes_after_later_ones() {
    for packed in [false, true] {
        let (_image, mut r) = rig_with(|o| BlkOptions {
            backend_threads: 2,
            faults: slow_sector_zero(),
            ..o
        });
        r.start_all(packed);
        let slow = r.add(0, 0, &Req::read(0, 1));
        let fast: Vec<u16> = (1..6).map(|s| r.add(0, s, &Req::read(s, 1))).collect();
        r.publish(0);
        r.core.kick(0);
        let used: Vec<u16> = r.wait_used(0, 6).iter().map(|u| u.id).collect();
        assert_eq!(used.last(), Some(&slow), "packed={packed}: {used:?}");
        assert_same_ids(used[..5].iter().copied(), &fast);
        for s in 0..6 {
            assert_eq!(r.in_data(s, &Req::read(s, 1)), initial_sector(s));
        }
    }
}

/// Many requests in flight at once with random latencies: each completes exactly once (the
/// ring driver rejects a buffer used twice) with the right data.
#[test]
fn many_requests_in_flight_complete_once() {
    let (image, mut r) = rig_with(|o| BlkOptions {
        backend_threads: 4,
        faults: Faults {
            delay: Some(Arc::new(|info: &RequestInfo| {
                Duration::from_micros((info.sector * 7919) % 3000)
            })),
            ..Faults::default()
        },
        ..o
    });
    r.start_all(false);
    for s in 0..40 {
        r.add(0, s, &Req::write(s * 2, pattern(s, 1024)));
    }
    r.publish(0);
    r.core.kick(0);
    assert_eq!(r.wait_used(0, 40).len(), 40);
    for s in 0..40 {
        assert_eq!(r.status_of(s, &Req::flush()), status::OK);
        assert_eq!(image.sector(s * 2, 2), pattern(s, 1024));
    }
    assert!(r.collect(0).is_empty(), "nothing used twice");
    assert_eq!(r.stats.executed(), 40);
}

/// VIRTIO_BLK_F_MQ (virtio spec 5.2.5): each queue serves its own requests; completions are
/// returned on the queue the request came from.
#[test]
fn multi_queue_requests_complete_on_their_queue() {
    for packed in [false, true] {
        let (_image, mut r) = rig_with(|o| BlkOptions {
            num_queues: 4,
            queue_size: 64,
            ..o
        });
        let f = r.start_all(packed);
        assert_ne!(f & features::MQ, 0);
        let mut ids = Vec::new();
        for q in 0..4u16 {
            let slot = u64::from(q) * 4;
            let id = r.submit(
                q,
                slot,
                &Req::write(u64::from(q) * 8, pattern(u64::from(q), 2048)),
            );
            ids.push(id);
        }
        for q in 0..4u16 {
            let used = r.wait_used(q, 1);
            assert_eq!(used.len(), 1, "queue {q}");
            assert_eq!(used[0].id, ids[usize::from(q)]);
        }
        for q in 0..4u16 {
            let slot = u64::from(q) * 4 + 1;
            let req = Req::read(u64::from(q) * 8, 4);
            r.submit(q, slot, &req);
            assert_eq!(r.wait_used(q, 1).len(), 1);
            assert_eq!(
                r.in_data(slot, &req),
                pattern(u64::from(q), 2048),
                "packed={packed}"
            );
        }
    }
}

/// The core hands `poll` only live queues, without their indices. With a lower queue left
/// disabled, completions that arrive in the background still go to the right queue (found
/// through the queue's in-flight list), including while a stop drains them.
#[test]
fn background_completion_with_a_disabled_lower_queue() {
    let (_image, mut r) = rig_with(|o| BlkOptions {
        num_queues: 3,
        queue_size: 32,
        faults: Faults {
            delay: Some(Arc::new(|_: &RequestInfo| Duration::from_millis(20))),
            ..Faults::default()
        },
        ..o
    });
    let f = r.all_features(false);
    r.negotiate(f);
    r.setup_queues();
    r.core.write_queue(0, |regs| regs.enabled = false);
    r.core.write_status(common::RUNNING);
    let a = r.submit(2, 0, &Req::read(2, 1));
    let used = r.wait_used(2, 1);
    assert_eq!(used[0].id, a);
    assert_eq!(r.in_data(0, &Req::read(2, 1)), initial_sector(2));
    // Now queue 1 too, and stop while both are in process: the drain completes both.
    let b = r.submit(1, 1, &Req::read(3, 1));
    let c = r.submit(2, 2, &Req::read(4, 1));
    r.core.set_and_wait(
        common::RUNNING | DeviceStatus::DEVICE_STOPPED,
        common::RUNNING | DeviceStatus::DEVICE_STOPPED,
    );
    assert_eq!(
        r.collect(1).iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![b]
    );
    assert_eq!(
        r.collect(2).iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![c]
    );
    assert_eq!(r.in_data(1, &Req::read(3, 1)), initial_sector(3));
    assert_eq!(r.in_data(2, &Req::read(4, 1)), initial_sector(4));
}

/// `Blk::completion_fd` becomes readable when a backend request finishes, so a worker can sleep
/// on it; nothing is returned used until the core processes.
#[test]
fn completion_fd_signals_finished_requests() {
    let image = TempImage::new(SECTORS);
    let mut r = Rig::new(image.options(), QuiesceMode::Drain);
    r.start_all(false);
    while r.wake.read().is_ok() {}
    let id = r.submit(0, 0, &Req::read(7, 1));
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        if r.wake.read().is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "completion eventfd never signalled"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(
        r.collect(0).is_empty(),
        "not used before the core processes"
    );
    r.core.process_pending();
    assert_eq!(
        r.collect(0).iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![id]
    );
}

/// Two devices may open one image (the migration source and destination do): each sees the
/// other's completed writes.
#[test]
fn two_devices_share_one_image() {
    let image = TempImage::new(SECTORS);
    let mut a = Rig::new(image.options(), QuiesceMode::Drain);
    let mut b = Rig::new(image.options(), QuiesceMode::Drain);
    a.start_all(false);
    b.start_all(true);
    assert_eq!(a.run(0, &Req::write(20, pattern(9, 512))).0, status::OK);
    let read = Req::read(20, 1);
    assert_eq!(b.run(0, &read).0, status::OK);
    assert_eq!(b.in_data(0, &read), pattern(9, 512));
    assert_eq!(b.run(1, &Req::write(21, pattern(10, 512))).0, status::OK);
    let read = Req::read(21, 1);
    assert_eq!(a.run(1, &read).0, status::OK);
    assert_eq!(a.in_data(1, &read), pattern(10, 512));
}

/// O_DIRECT (`BlkOptions::direct`): requests go through aligned bounce buffers. Skipped where
/// the temporary directory's file system refuses O_DIRECT.
#[test]
fn direct_io_reads_and_writes() {
    let image = TempImage::new(SECTORS);
    let options = BlkOptions {
        direct: true,
        ..image.options()
    };
    let Ok(blk) = virtio_lm_devices::Blk::open(options) else {
        eprintln!("O_DIRECT not supported here; skipped");
        return;
    };
    let mut r = Rig::with_blk(blk, QuiesceMode::Drain, common::memory());
    r.start_all(false);
    let (st, _) = r.run(0, &Req::write(8, pattern(11, 4096)));
    if st == status::IOERR {
        eprintln!("O_DIRECT with 512-byte alignment refused here; skipped");
        return;
    }
    assert_eq!(st, status::OK);
    let read = Req::read(8, 8);
    assert_eq!(r.run(1, &read).0, status::OK);
    assert_eq!(r.in_data(1, &read), pattern(11, 4096));
    assert_eq!(r.run(2, &Req::segments(true, &[(8, 8, 0)])).0, status::OK);
    assert_eq!(image.sector(8, 8), vec![0; 4096]);
}
