//! Overlapping requests in flight on virtio-blk (spec-decisions §7): the virtio spec does not
//! order requests in flight, so a read that overlaps an uncompleted write may return, per
//! sector, the old or the new data — and never anything else. A buffered file write is not
//! atomic with respect to a concurrent buffered read of the same bytes (the kernel copies into
//! the page cache while the reader copies out), so the device keeps overlapping requests from
//! running at once. `WriteSplit` slows a write down in its middle so the race is
//! deterministic.

mod common;

use std::time::{Duration, Instant};

use common::{assert_same_ids, initial_sector, pattern, Req, Rig, TempImage, TIMEOUT};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::status;
use virtio_lm_devices::blk::WriteSplit;
use virtio_lm_devices::{BlkOptions, Faults, Gate};

/// spec-decisions §7 (virtio-blk): "a read that overlaps an uncompleted write returns, per
/// sector, the old or the new data, never anything else". A two-sector write is held after
/// its first 700 bytes (inside its second sector) are on the image; a read of the same two
/// sectors submitted then must not see that half-written sector. Before the device kept
/// overlapping requests apart, the read ran at once and returned bytes 0..700 new and
/// 700..1024 old: sector 1 held bytes of both versions.
#[test]
fn read_overlapping_a_running_write_sees_whole_sectors() {
    for packed in [false, true] {
        let image = TempImage::new(64);
        let gate = Gate::new();
        gate.close();
        let options = BlkOptions {
            backend_threads: 2,
            faults: Faults {
                write_split: Some(WriteSplit {
                    at: 700,
                    pause: Duration::ZERO,
                    gate: Some(gate.clone()),
                }),
                ..Faults::default()
            },
            ..image.options()
        };
        let mut r = Rig::new(options, QuiesceMode::Drain);
        r.start_all(packed);
        let new = pattern(7, 1024);
        let write = Req::write(10, new.clone());
        let write_id = r.submit(0, 0, &write);
        let deadline = Instant::now() + TIMEOUT;
        while image.sector(10, 2)[..700] != new[..700] {
            assert!(Instant::now() < deadline, "the write never started");
            std::thread::sleep(Duration::from_micros(200));
        }
        let read = Req::read(10, 2);
        let read_id = r.submit(0, 1, &read);
        // Wait until the read either ran (the defect) or waits for the write.
        let mut used = Vec::new();
        while r.stats.overlap_waits() == 0 && !used.iter().any(|u: &_| u == &read_id) {
            assert!(Instant::now() < deadline, "the read neither ran nor waited");
            let _ = r.wake.read();
            r.core.process_pending();
            used.extend(r.collect(0).iter().map(|u| u.id));
            std::thread::sleep(Duration::from_micros(200));
        }
        gate.open();
        let rest = 2 - used.len();
        used.extend(r.wait_used(0, rest).iter().map(|u| u.id));
        assert_same_ids(used, &[write_id, read_id]);
        assert_eq!(r.status_of(0, &write), status::OK);
        assert_eq!(r.status_of(1, &read), status::OK);
        let data = r.in_data(1, &read);
        for (k, sector) in data.chunks(512).enumerate() {
            let old = initial_sector(10 + k as u64);
            let new = &new[k * 512..(k + 1) * 512];
            assert!(
                sector == old.as_slice() || sector == new,
                "packed={packed}: sector {k} of the read is neither old nor new"
            );
        }
        assert_eq!(r.stats.overlap_waits(), 1, "the read waited for the write");
        assert_eq!(image.sector(10, 2), new);
    }
}
