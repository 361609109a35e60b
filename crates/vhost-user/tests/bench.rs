//! The load generator of `virtio-lm bench-vhost-user-blk` against our backend, for correctness
//! only (never speed): every read returns the stamp of the sector it asked for, every write
//! lands on the sector it names, on split and packed rings; the backend's pid comes from
//! SO_PEERCRED (docs/spec-decisions.md §23). Runs are bounded by a request count, not by time.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use virtio_lm_queue::RingKind;
use virtio_lm_vhost_user::bench::{self, check_stamp, stamp, BenchOptions, ReadWrite, SECTOR};
use virtio_lm_vhost_user::testing::TestBackend;

/// The image size of the test backend.
const IMAGE: u64 = 1 << 20;

/// Our backend on an image stamped in generation 0, with rings as large as the bench's.
fn stamped_backend(tag: &str) -> TestBackend {
    let backend = TestBackend::start(tag, 1, |o| o.blk.queue_size = bench::QUEUE_SIZE);
    let mut bytes = vec![0u8; IMAGE as usize];
    stamp(&mut bytes, 0, 0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(backend.image.path())
        .unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    backend
}

fn options(rw: ReadWrite, ring: RingKind, qd: u16, ios: u64) -> BenchOptions {
    BenchOptions {
        qd,
        bs: 4096,
        rw,
        // Only a hang reaches it: the runs end by count.
        duration: Duration::from_secs(600),
        max_ios: Some(ios),
        ring,
        verify: true,
        backend_pid: None,
    }
}

/// Random reads at queue depth 8 check the stamp of every sector they read; then random writes
/// of generation-1 stamps land exactly on the sectors they name (the image holds only valid
/// stamps of generations 0 and 1, some of them 1), and reads still find every stamp in place.
fn reads_and_writes_land_where_they_say(tag: &str, ring: RingKind) {
    let backend = stamped_backend(tag);
    let read = bench::run(
        &backend.socket,
        &options(ReadWrite::RandRead, ring, 8, 1500),
    )
    .unwrap();
    assert_eq!(read.ios, 1500);
    assert_eq!(read.backend_pid, Some(std::process::id()));
    assert!(read.latency[0] <= read.latency[1] && read.latency[1] <= read.latency[2]);

    let write = bench::run(
        &backend.socket,
        &options(ReadWrite::RandWrite, ring, 4, 300),
    )
    .unwrap();
    assert_eq!(write.ios, 300);
    let mut image = vec![0u8; IMAGE as usize];
    std::fs::File::open(backend.image.path())
        .unwrap()
        .read_exact_at(&mut image, 0)
        .unwrap();
    let generations = check_stamp(&image, 0).unwrap_or_else(|s| panic!("sector {s} corrupt"));
    assert_eq!(generations.len() as u64, IMAGE / SECTOR);
    assert!(generations.iter().all(|&g| g <= 1));
    assert!(generations.contains(&1), "no write landed");

    let again = bench::run(&backend.socket, &options(ReadWrite::RandRead, ring, 1, 200)).unwrap();
    assert_eq!(again.ios, 200);
}

#[test]
fn split_ring_reads_and_writes_land_where_they_say() {
    reads_and_writes_land_where_they_say("bench-split", RingKind::Split);
}

#[test]
fn packed_ring_reads_and_writes_land_where_they_say() {
    reads_and_writes_land_where_they_say("bench-packed", RingKind::Packed);
}

/// Values outside the documented ranges are refused before connecting.
#[test]
fn options_outside_their_ranges_are_refused() {
    let good = options(ReadWrite::RandRead, RingKind::Split, 1, 1);
    assert!(good.check().is_ok());
    for (qd, bs) in [
        (0, 4096),
        (bench::MAX_QD + 1, 4096),
        (1, 0),
        (1, 1000),
        (1, 128 << 10),
    ] {
        let bad = BenchOptions {
            qd,
            bs,
            ..good.clone()
        };
        assert!(bad.check().is_err(), "qd {qd} bs {bs}");
    }
}
