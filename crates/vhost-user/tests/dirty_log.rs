//! Dirty logging (docs/spec-decisions.md §14): while VHOST_F_LOG_ALL is negotiated every write
//! the backend makes into guest RAM — read data, the status byte, the used ring (split) or the
//! descriptors written back (packed) — sets its 4 KiB page's bit in the log given with
//! SET_LOG_BASE; pages the backend only reads stay clear; before LOG_ALL and after it is
//! cleared nothing is marked.

use virtio_lm_devices::blk::config::{request_type, status};
use virtio_lm_vhost_user::engine::ring_bits;
use virtio_lm_vhost_user::testing::{clear_log, dirty_pages, TestBackend, DATA_BASE};

const LOG_ALL: u64 = 1 << 26;

fn logging_follows_log_all(tag: &str, features: u64) {
    let backend = TestBackend::start(tag, 1, |_| {});
    let mut fe = backend.connect();
    fe.negotiate(features);
    fe.start_queue(0, 16);
    let log = fe.set_log();
    let read = |fe: &mut virtio_lm_vhost_user::testing::TestFrontend| {
        let (st, _) = fe.request(0, request_type::IN, 0, &[0; 8192]);
        assert_eq!(st, status::OK);
    };
    // A read while logging is off marks nothing.
    let read_unlogged = |fe: &mut virtio_lm_vhost_user::testing::TestFrontend, when: &str| {
        read(fe);
        assert_eq!(dirty_pages(&log), Vec::<u64>::new(), "marked {when}");
    };

    read_unlogged(&mut fe, "before LOG_ALL");

    fe.set_features(fe.features | LOG_ALL).unwrap();
    read(&mut fe);
    let pages = dirty_pages(&log);
    let header = DATA_BASE / 4096;
    let data = [header + 1, header + 2];
    let status_page = header + 3;
    // Queue 0's ring areas all lie in guest page 0 (a ring of 16 at address 0).
    for page in data.iter().chain(&[status_page, 0]) {
        assert!(pages.contains(page), "page {page} not marked: {pages:?}");
    }
    assert!(
        !pages.contains(&header),
        "the header is only read: {pages:?}"
    );
    assert_eq!(pages.len(), 4, "only written pages are marked: {pages:?}");

    fe.set_features(fe.features & !LOG_ALL).unwrap();
    clear_log(&log);
    read_unlogged(&mut fe, "after LOG_ALL was cleared");

    // Turned on again without a new SET_LOG_BASE: marks again.
    fe.set_features(fe.features | LOG_ALL).unwrap();
    read(&mut fe);
    assert!(dirty_pages(&log).contains(&status_page));
}

#[test]
fn split_ring_logs_its_writes_only_while_log_all() {
    logging_follows_log_all("log-split", ring_bits::EVENT_IDX);
}

#[test]
fn packed_ring_logs_its_writes_only_while_log_all() {
    logging_follows_log_all("log-packed", ring_bits::RING_PACKED | ring_bits::EVENT_IDX);
}

/// The test-only switch of the negative control: with it, nothing is ever marked.
#[test]
fn dropped_dirty_log_marks_nothing() {
    let backend = TestBackend::start("log-dropped", 1, |o| o.drop_dirty_log = true);
    let mut fe = backend.connect();
    fe.negotiate(LOG_ALL);
    fe.start_queue(0, 16);
    let log = fe.set_log();
    let (st, _) = fe.request(0, request_type::IN, 0, &[0; 4096]);
    assert_eq!(st, status::OK);
    assert_eq!(dirty_pages(&log), Vec::<u64>::new());
}
