//! DEVICE_STATE through our own frontend (QEMU's blk device does not use it;
//! docs/spec-decisions.md §25): a stopped backend's state — our device context (seed 004) —
//! saved from one backend and loaded into another on the same image, the rings continuing there
//! from their vring bases; hostile state bytes fail CHECK_DEVICE_STATE, never panic, and change
//! nothing.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use vhost::vhost_user::message::{
    VhostTransferStateDirection as Direction, VhostTransferStatePhase as Phase,
    VhostUserConfigFlags,
};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio_lm_devices::blk::config::{offset, request_type, status};
use virtio_lm_vhost_user::engine::ring_bits;
use virtio_lm_vhost_user::testing::{TestBackend, TestFrontend};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 13) as u8))
        .collect()
}

/// SAVE: the backend's state, read to EOF, and CHECK_DEVICE_STATE's verdict.
fn save(fe: &TestFrontend) -> (Vec<u8>, bool) {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let own = fe
        .frontend
        .set_device_state_fd(Direction::SAVE, Phase::STOPPED, OwnedFd::from(writer))
        .unwrap();
    assert!(own.is_none(), "the backend uses our pipe");
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    (bytes, fe.frontend.check_device_state().is_ok())
}

/// LOAD of `bytes`; CHECK_DEVICE_STATE's verdict.
fn load(fe: &TestFrontend, bytes: &[u8]) -> bool {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let own = fe
        .frontend
        .set_device_state_fd(Direction::LOAD, Phase::STOPPED, OwnedFd::from(reader))
        .unwrap();
    assert!(own.is_none(), "the backend uses our pipe");
    // The state is far below the pipe's capacity: written whole, then EOF.
    writer.write_all(bytes).unwrap();
    drop(writer);
    fe.frontend.check_device_state().is_ok()
}

fn writeback(fe: &mut TestFrontend) -> u8 {
    let at = offset::WRITEBACK as u32;
    let (_, value) = fe
        .frontend
        .get_config(at, 1, VhostUserConfigFlags::WRITABLE, &[0])
        .unwrap();
    value[0]
}

/// vhost-user SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE (spec-decisions §25): "the back-end
/// must be stopped"; SAVE writes the state and leaves the device as it was (saving twice gives
/// the same bytes and the source ring resumes); LOAD into a second backend on the same image
/// applies it (the driver's writeback choice travels) and the ring continues from its vring
/// base: requests completed before the move stay completed once, data written before is read
/// back after, and new requests complete.
fn save_then_load(tag: &str, features: u64) {
    let a = TestBackend::start(&format!("{tag}-a"), 1, |_| {});
    let image = a.image.path().to_path_buf();
    let b = TestBackend::start(&format!("{tag}-b"), 1, move |o| o.blk.path = image);
    let mut fe = a.connect();
    fe.negotiate(features);
    fe.start_queue(0, 8);
    for round in 0..5u8 {
        fe.write_and_verify(0, u64::from(round) * 8, &pattern(round, 2048));
    }
    let base = fe.frontend.get_vring_base(0).unwrap();
    let (state, ok) = save(&fe);
    assert!(ok, "SAVE reported an error");
    let (again, ok) = save(&fe);
    assert!(ok && again == state, "SAVE changed the device");
    // SAVE left the source as it was: it resumes (what a failed migration does).
    fe.restart_queue(0, base);
    fe.write_and_verify(0, 80, &pattern(7, 512));
    // Not the default (a started device writes back): only the state can bring it over.
    set_writeback(&mut fe, 0);
    // Two requests submitted just before the stop: completed by this backend, or left in the
    // ring for the next one — each exactly once either way (the driver refuses a buffer used
    // twice).
    for slot in 0..2 {
        fe.submit(
            0,
            slot,
            request_type::OUT,
            64 + slot * 8,
            &pattern(9 + slot as u8, 512),
        );
    }
    let base = fe.frontend.get_vring_base(0).unwrap();
    let (state, ok) = save(&fe);
    assert!(ok);

    fe.reconnect(&b.socket);
    fe.negotiate(features);
    assert!(
        load(&fe, &state),
        "LOAD refused a state of an identical backend"
    );
    fe.restart_queue(0, base);
    assert_eq!(fe.wait_used(0, 2).len(), 2);
    for slot in 0..2 {
        assert_eq!(fe.result(slot, 512).0, status::OK);
    }
    assert_eq!(writeback(&mut fe), 0, "the device state was not applied");
    for round in 0..5u8 {
        let (st, data) = fe.request(0, request_type::IN, u64::from(round) * 8, &[0; 2048]);
        assert_eq!((st, data), (status::OK, pattern(round, 2048)));
    }
    for slot in 0..2u64 {
        let (st, data) = fe.request(0, request_type::IN, 64 + slot * 8, &[0; 512]);
        assert_eq!((st, data), (status::OK, pattern(9 + slot as u8, 512)));
    }
    fe.write_and_verify(0, 96, &pattern(3, 4096));
}

fn set_writeback(fe: &mut TestFrontend, value: u8) {
    fe.frontend
        .set_config(
            offset::WRITEBACK as u32,
            VhostUserConfigFlags::WRITABLE,
            &[value],
        )
        .unwrap();
}

#[test]
fn split_state_saved_from_one_backend_loads_into_another() {
    save_then_load("ds-split", ring_bits::EVENT_IDX | ring_bits::INDIRECT_DESC);
}

#[test]
fn packed_state_saved_from_one_backend_loads_into_another() {
    save_then_load("ds-packed", ring_bits::RING_PACKED | ring_bits::EVENT_IDX);
}

/// vhost-user CHECK_DEVICE_STATE: errors in the transfer reach the frontend there. Garbage,
/// every truncation and three bit patterns flipped in every byte of a valid state, a state of a backend with
/// other queues, and a CHECK without a transfer: none panics, a failing load changes nothing
/// (the restarted device keeps its default writeback), and the backend keeps serving on the same connection.
#[test]
fn hostile_state_bytes_fail_check_device_state_and_change_nothing() {
    let two = TestBackend::start("ds-two", 2, |_| {});
    let mut fe2 = two.connect();
    fe2.negotiate(ring_bits::EVENT_IDX);
    let (two_queues, ok) = save(&fe2);
    assert!(ok);

    let backend = TestBackend::start("ds-hostile", 1, |_| {});
    let mut fe = backend.connect();
    fe.negotiate(ring_bits::EVENT_IDX);
    fe.start_queue(0, 8);
    set_writeback(&mut fe, 0);
    let base = fe.frontend.get_vring_base(0).unwrap();
    let (valid, ok) = save(&fe);
    assert!(ok);

    assert!(
        fe.frontend.check_device_state().is_err(),
        "CHECK without a transfer"
    );
    assert!(!load(&fe, b"not a device context"));
    assert!(!load(&fe, &two_queues), "a state of another queue count");
    for len in 0..valid.len() {
        assert!(!load(&fe, &valid[..len]), "truncated to {len} bytes");
    }
    // Nothing that failed was applied: the restarted device has its default writeback (1),
    // not the state's 0.
    fe.restart_queue(0, base);
    fe.write_and_verify(0, 0, &pattern(5, 1024));
    assert_eq!(writeback(&mut fe), 1);
    let base = fe.frontend.get_vring_base(0).unwrap();
    for at in 0..valid.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = valid.clone();
            bytes[at] ^= flip;
            // Some bytes are padding or reserved: a change there may load. Either way no
            // panic, and the connection keeps answering.
            let _ = load(&fe, &bytes);
        }
    }
    // The connection still answers: the valid state loads.
    assert!(load(&fe, &valid));
    fe.restart_queue(0, base);
    fe.write_and_verify(0, 8, &pattern(6, 1024));
    assert_eq!(writeback(&mut fe), 0);
}
