//! Hostile frontend messages (docs/spec-decisions.md §14): features never offered, ring
//! indices and sizes out of range, ring addresses outside the memory table or before it,
//! a vring base beyond the queue size, memory and log areas beyond their files, a kick without
//! an fd, a malformed message, descriptors outside guest memory. Each gets an error reply or a
//! closed connection — never a panic — and the backend serves I/O on the next connection.

use std::time::Instant;

use vhost::{VhostBackend, VhostUserDirtyLogRegion};
use virtio_lm_devices::blk::config::request_type;
use virtio_lm_queue::{BufferSpec, QueueConfig, RingKind};
use virtio_lm_vhost_user::engine::ring_bits;
use virtio_lm_vhost_user::testing::{
    vring_config, TestBackend, TestFrontend, DEADLINE, RAM_SIZE, USER_BASE,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Runs `attack` on a fresh, negotiated connection (ring features `features`); it returns
/// whether the backend refused (an error from the call). The backend must have refused and
/// closed the connection.
fn refused(backend: &TestBackend, features: u64, attack: impl FnOnce(&mut TestFrontend) -> bool) {
    let mut fe = backend.connect();
    fe.negotiate(features);
    assert!(attack(&mut fe), "the backend accepted a hostile message");
    assert!(
        fe.is_closed(),
        "the connection stays open after a refused message"
    );
}

/// A split ring of 16 at guest address 0.
fn split_ring() -> (QueueConfig, vm_memory::GuestAddress) {
    QueueConfig::contiguous(
        RingKind::Split,
        16,
        vm_memory::GuestAddress(0),
        Default::default(),
    )
}

#[test]
fn hostile_messages_are_refused_and_the_backend_keeps_serving() {
    let backend = TestBackend::start("hostile", 1, |_| {});
    let packed = ring_bits::RING_PACKED;

    // Features the backend never offered.
    refused(&backend, 0, |fe| {
        fe.set_features(fe.features | 1 << 63).is_err()
    });
    // A ring index beyond the device's queues, on each ring message.
    refused(&backend, 0, |fe| fe.frontend.set_vring_num(3, 16).is_err());
    refused(&backend, 0, |fe| fe.frontend.set_vring_base(7, 0).is_err());
    refused(&backend, 0, |fe| fe.frontend.get_vring_base(200).is_err());
    refused(&backend, 0, |fe| {
        fe.frontend
            .set_vring_kick(9, &EventFd::new(EFD_NONBLOCK).unwrap())
            .is_err()
    });
    // Ring sizes 0 and beyond the maximum (64).
    refused(&backend, 0, |fe| fe.frontend.set_vring_num(0, 0).is_err());
    refused(&backend, 0, |fe| fe.frontend.set_vring_num(0, 128).is_err());
    // A ring address outside the memory table.
    refused(&backend, 0, |fe| {
        let (mut config, _) = split_ring();
        config.device_area = vm_memory::GuestAddress(RAM_SIZE + 0x1000);
        fe.frontend.set_vring_num(0, 16).unwrap();
        fe.frontend
            .set_vring_addr(0, &vring_config(&config, None))
            .is_err()
    });
    // A log address that is not the used ring's.
    refused(&backend, 0, |fe| {
        let (config, _) = split_ring();
        fe.frontend
            .set_vring_addr(0, &vring_config(&config, Some(0x9000)))
            .is_err()
    });
    // A packed vring base whose index is beyond the queue size (16 of 16).
    refused(&backend, packed, |fe| {
        fe.frontend.set_vring_num(0, 16).unwrap();
        fe.raw_vring_base(0, 0x8000_8010) != Some(0)
    });
    // A split vring base wider than 16 bits.
    refused(&backend, 0, |fe| fe.raw_vring_base(0, 0x1_0000) != Some(0));
    // A memory region larger than its file.
    refused(&backend, 0, |fe| fe.set_mem_table(RAM_SIZE * 2).is_err());
    // A dirty log area beyond its file.
    refused(&backend, 0, |fe| {
        let log = memfd::MemfdOptions::default()
            .create("log")
            .unwrap()
            .into_file();
        log.set_len(4096).unwrap();
        let region = VhostUserDirtyLogRegion {
            mmap_size: 1 << 20,
            mmap_offset: 0,
            mmap_handle: std::os::fd::AsRawFd::as_raw_fd(&log),
        };
        fe.frontend.set_log_base(0, Some(region)).is_err()
    });
    // SET_VRING_KICK with the no-fd flag (polling), which the backend does not support.
    refused(&backend, 0, |fe| {
        fe.raw_request(12, &0x100u64.to_le_bytes()) != Some(0)
    });
    // A malformed message: SET_VRING_NUM with a 4-byte body.
    refused(&backend, 0, |fe| fe.raw_request(8, &[0; 4]) != Some(0));

    // Ring set-up before any memory table.
    let fe = backend.connect();
    fe.frontend.set_owner().unwrap();
    let (config, _) = split_ring();
    assert!(
        fe.frontend
            .set_vring_addr(0, &vring_config(&config, None))
            .is_err()
            || fe.is_closed()
    );
    assert!(fe.is_closed());
    drop(fe);

    // A descriptor outside guest memory: the ring is broken (error fd signalled), the
    // connection and the backend live on.
    let mut fe = backend.connect();
    fe.negotiate(0);
    fe.start_queue(0, 16);
    let err = EventFd::new(EFD_NONBLOCK).unwrap();
    fe.frontend.set_vring_err(0, &err).unwrap();
    let queue = fe.queues[0].as_mut().unwrap();
    queue
        .driver
        .add_chain(
            &fe.mem,
            &[
                BufferSpec::readable(USER_BASE, 16),
                BufferSpec::writable(RAM_SIZE * 4, 1),
            ],
        )
        .unwrap();
    queue.driver.publish(&fe.mem).unwrap();
    queue.kick.write(1).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while err.read().is_err() {
        assert!(Instant::now() < deadline, "error fd never signalled");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(fe);

    // After all of that, a well-behaved frontend is served.
    let mut fe = backend.connect();
    fe.negotiate(ring_bits::EVENT_IDX);
    fe.start_queue(0, 16);
    fe.write_and_verify(0, 0, &[0xa5; 4096]);
    let (st, _) = fe.request(0, request_type::GET_ID, 0, &[0; 20]);
    assert_eq!(st, virtio_lm_devices::blk::config::status::OK);
}
