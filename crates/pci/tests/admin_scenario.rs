//! Seed 004 end to end: an owner with three members; member 2 is stopped, frozen, its context
//! read in small pieces and written to a member of a second owner in Freeze, which is set Active;
//! the guest driver continues there and gets every buffer back exactly once, while members 1
//! and 3 keep working undisturbed throughout.

use std::sync::atomic::Ordering;

use virtio_lm_device::context::decode;
use virtio_lm_device::QuiesceMode;
use virtio_lm_pci::admin::AdminClient;
use virtio_lm_pci::testing::admin::*;
use virtio_lm_spec::admin::{opcode, DevMode};

/// Members 1 and 3 do a round of work: submit, notify, collect everything.
fn keep_busy(others: &mut [&mut Guest]) {
    for guest in others.iter_mut() {
        guest.submit(2);
        guest.drain();
    }
}

fn migrate_member_2(mode: QuiesceMode) {
    let releases_a = releases(3);
    let owner_a = owner(3, Kind::DelayEach(releases_a.clone(), mode));
    let owner_b = owner(2, Kind::DelayEach(releases(2), mode));
    let mut admin_a = client(&owner_a);
    let mut admin_b = client(&owner_b);
    let mut g1 = Guest::new(owner_a.member(1).unwrap());
    let mut g2 = Guest::new(owner_a.member(2).unwrap());
    let mut g3 = Guest::new(owner_a.member(3).unwrap());
    for g in [&mut g1, &mut g2, &mut g3] {
        g.submit(4);
        g.drain();
    }

    // Member 2 has requests in process when the owner stops it.
    releases_a[1].store(false, Ordering::SeqCst);
    g2.submit(3);
    let stop = admin_a
        .submit_raw(
            0,
            &cmd(opcode::DEV_MODE_SET, 2, &mode_data(DevMode::Stop)),
            8,
        )
        .unwrap();
    if mode == QuiesceMode::Drain {
        // Stop waits for member 2's requests; members 1 and 3 work on meanwhile.
        for _ in 0..3 {
            keep_busy(&mut [&mut g1, &mut g3]);
            owner_a.poll();
            assert!(admin_a.try_complete(&stop).unwrap().is_none());
        }
        releases_a[1].store(true, Ordering::SeqCst);
    }
    assert!(admin_a.wait(&stop).unwrap().result().is_ok());
    let expect_inflight = if mode == QuiesceMode::Drain { 0 } else { 3 };
    assert_eq!(g2.collect(), 3 - expect_inflight);
    // Made available while stopped: the destination must find them (no kick will come).
    g2.submit(2);
    g2.pump();
    keep_busy(&mut [&mut g1, &mut g3]);

    admin_a.dev_mode_set(2, DevMode::Freeze).unwrap();
    let size = admin_a.dev_ctx_size_get(2).unwrap() as usize;
    let context = admin_a.dev_ctx_read_all(2, 8).unwrap();
    assert_eq!(context.len(), size);
    let model = decode(&context).unwrap();
    assert_eq!(model.queues[0].state.inflight.len(), expect_inflight);
    let source_memory = snapshot(&g2.mem);

    // The destination: owner B's member 1, frozen, takes the context in small writes.
    let destination = owner_b.member(1).unwrap();
    let destination_mem = destination.core().lock().unwrap().mem().clone();
    copy_memory(&g2.mem, &destination_mem);
    admin_b.dev_mode_set(1, DevMode::Freeze).unwrap();
    admin_b.dev_ctx_write_all(1, &context, 24).unwrap();
    assert_eq!(read_whole(&mut admin_b, 1), context);
    admin_b.dev_mode_set(1, DevMode::Active).unwrap();
    g2.migrate_to(destination, destination_mem);

    // The guest driver continues on the destination: the buffers in flight and the ones made
    // available while stopped come back, then new ones.
    for _ in 0..3 {
        g2.pump();
        g2.collect();
        keep_busy(&mut [&mut g1, &mut g3]);
    }
    assert!(g2.inflight.is_empty(), "{:?} never came back", g2.inflight);
    g2.submit(5);
    g2.drain();
    assert_eq!(g2.done.len(), 4 + 3 + 2 + 5);
    g2.check_pattern();

    // The source stayed frozen and untouched; members 1 and 3 were never disturbed.
    assert_eq!(
        snapshot(
            &owner_a
                .member(2)
                .unwrap()
                .core()
                .lock()
                .unwrap()
                .mem()
                .clone()
        ),
        source_memory
    );
    assert_eq!(admin_a.dev_mode_get(2).unwrap(), DevMode::Freeze);
    for (id, g) in [(1, &mut g1), (3, &mut g3)] {
        assert_eq!(admin_a.dev_mode_get(id).unwrap(), DevMode::Active);
        assert!(g.inflight.is_empty());
        assert_eq!(g.done.len(), g.submitted());
        assert!(g.submitted() >= 4 + 2 * 4);
        g.check_pattern();
    }
    // Owner B's other member was not touched either.
    assert_eq!(admin_b.dev_mode_get(2).unwrap(), DevMode::Active);
}

fn read_whole(client: &mut AdminClient<Mem>, member: u64) -> Vec<u8> {
    client.dev_ctx_discard(member).unwrap();
    client.dev_ctx_read_all(member, 64).unwrap()
}

virtio_lm_device::test_cases! { migrate_member_2:
    /// Seed 004 scenario, drain (the default): "the device MUST finish all the outstanding PCI
    /// transactions before completing the command VIRTIO_ADMIN_CMD_DEV_MODE_SET", the context read
    /// in 8-byte pieces ("The driver SHOULD read the complete device context using one or multiple
    /// VIRTIO_ADMIN_CMD_DEV_CTX_READ commands"), written in 24-byte pieces in Freeze ("the driver
    /// MUST write a complete device context using one or multiple VIRTIO_ADMIN_CMD_DEV_CTX_WRITE
    /// commands"), then Freeze → Active: the guest continues, every buffer used exactly once.
    fn member_moves_to_another_owner_drained(QuiesceMode::Drain);

    /// Seed 004 scenario with requests in flight (spec-decisions §3: "the device may stop without
    /// draining by reporting the heads it has taken but not used (VQ_INFLIGHT); the destination
    /// processes each exactly once").
    fn member_moves_to_another_owner_with_requests_in_flight(QuiesceMode::RecordInflight);
}
