//! The backend through the `vhost` crate's frontend: block I/O on split and packed rings and on
//! several queues; GET_VRING_BASE completes the requests in flight before it returns the ring
//! state in the vhost-user encoding, and SET_VRING_BASE with that value resumes the ring where
//! it stopped; a stop, feature renegotiation and restart on one connection (what SeaBIOS then
//! Linux do) works (docs/spec-decisions.md §14).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::VhostBackend;
use virtio_lm_devices::blk::config::{request_type, status};
use virtio_lm_devices::blk::Faults;
use virtio_lm_vhost_user::engine::ring_bits;
use virtio_lm_vhost_user::testing::{TestBackend, DEADLINE};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

/// Write then read back on `queues` queues of the given ring features.
fn io_on(tag: &str, features: u64, queues: u16) {
    let backend = TestBackend::start(tag, queues, |_| {});
    let mut fe = backend.connect();
    fe.negotiate(features);
    for q in 0..usize::from(queues) {
        fe.start_queue(q, 16);
    }
    for round in 0..20u8 {
        let q = usize::from(round) % usize::from(queues);
        fe.write_and_verify(q, u64::from(round) * 8, &pattern(round, 4096));
    }
}

#[test]
fn split_ring_serves_reads_and_writes() {
    io_on("split", ring_bits::EVENT_IDX | ring_bits::INDIRECT_DESC, 1);
}

#[test]
fn packed_ring_serves_reads_and_writes() {
    io_on("packed", ring_bits::RING_PACKED | ring_bits::EVENT_IDX, 1);
}

#[test]
fn two_queues_without_event_idx_serve_reads_and_writes() {
    io_on("mq", 0, 2);
    io_on("mq-packed", ring_bits::RING_PACKED, 2);
}

/// GET_VRING_BASE with slow requests in flight: when it returns, every request has been used
/// (they were drained, not dropped), and the value is the ring position after them (split:
/// next avail index; packed: avail and used index with their wrap counters). The ring then
/// resumes from that value and serves more requests.
fn stop_drains_then_restores(tag: &str, features: u64) {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let backend = TestBackend::start(tag, 1, move |o| {
        o.blk.faults = Faults {
            delay: Some(Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                Duration::from_millis(100)
            })),
            ..Faults::default()
        };
    });
    let mut fe = backend.connect();
    fe.negotiate(features);
    fe.start_queue(0, 8);
    fe.write_and_verify(0, 0, &pattern(1, 512));
    for slot in 0..2 {
        fe.submit(0, slot, request_type::IN, slot * 8, &[0; 512]);
    }
    // Both requests are in the backend (taken from the ring) before the stop.
    let deadline = Instant::now() + DEADLINE;
    while started.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "requests never reached the backend"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let base = fe.frontend.get_vring_base(0).unwrap();
    let used = fe.wait_used(0, 2);
    assert_eq!(used.len(), 2);
    for slot in 0..2 {
        assert_eq!(
            fe.result(slot, 512).0,
            status::OK,
            "request {slot} completed"
        );
    }
    // Four requests of three descriptors each on a ring of 8.
    let expected = if features & ring_bits::RING_PACKED != 0 {
        // 12 slots: the ring wrapped once, so index 4 with wrap counter 0, both halves.
        0x0004_0004
    } else {
        4
    };
    assert_eq!(base, expected, "vring base {base:#x}");
    fe.restart_queue(0, base);
    fe.write_and_verify(0, 16, &pattern(2, 1024));
}

#[test]
fn split_stop_drains_in_flight_requests_then_resumes_from_the_base() {
    stop_drains_then_restores("drain-split", ring_bits::EVENT_IDX);
}

#[test]
fn packed_stop_drains_in_flight_requests_then_resumes_from_the_base() {
    stop_drains_then_restores(
        "drain-packed",
        ring_bits::RING_PACKED | ring_bits::EVENT_IDX,
    );
}

/// SeaBIOS then Linux: the ring runs split, is stopped, the features are renegotiated (packed)
/// and new rings start at base 0 on the same connection.
#[test]
fn stop_renegotiate_and_restart_on_one_connection() {
    let backend = TestBackend::start("renegotiate", 1, |_| {});
    let mut fe = backend.connect();
    fe.negotiate(0);
    fe.start_queue(0, 8);
    fe.write_and_verify(0, 0, &pattern(3, 512));
    fe.frontend.get_vring_base(0).unwrap();
    fe.set_features(fe.features | ring_bits::RING_PACKED | ring_bits::EVENT_IDX)
        .unwrap();
    fe.start_queue(0, 16);
    fe.write_and_verify(0, 8, &pattern(4, 2048));
}
