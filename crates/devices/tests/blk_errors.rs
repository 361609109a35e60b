//! virtio-blk error paths: every request the device cannot carry out fails on its own with
//! VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP (virtio spec 5.2.6), the device keeps working;
//! only a chain with no room for a status byte is malformed (spec-decisions §2: DEVICE_NEEDS_RESET).

mod common;

use common::{bit, initial_sector, pattern, Req, Rig, TempImage};
use proptest::prelude::*;
use virtio_lm_device::{ChainFault, DeviceError, QuiesceMode};
use virtio_lm_devices::blk::config::{
    features, request_type, status, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS,
    WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_lm_devices::{BlkOptions, Faults};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::{DeviceStatus, Feature};

const SECTORS: u64 = 128;

/// A fresh image and a started split-ring rig over it; the image lives as long as the test.
fn rig() -> (TempImage, Rig) {
    let (image, mut r) = Rig::on_image(SECTORS, |o| o);
    r.start_all(false);
    (image, r)
}

/// Asserts that DISCARD (in slot `slot`) and WRITE_ZEROES (in `slot + 1`) of `sectors` at
/// sector 0, sent although their features were not negotiated, complete with UNSUPP.
fn assert_discard_and_write_zeroes_unsupp(r: &mut Rig, slot: u64, sectors: u32) {
    for (i, zeroes) in [false, true].into_iter().enumerate() {
        let req = Req::segments(zeroes, &[(0, sectors, 0)]);
        assert_eq!(
            r.run(slot + i as u64, &req).0,
            status::UNSUPP,
            "zeroes {zeroes}"
        );
    }
}

/// Asserts that the device still serves a read after an error.
fn still_works(r: &mut Rig) {
    let req = Req::read(1, 1);
    assert_eq!(r.run(63, &req).0, status::OK, "device still works");
    assert_eq!(r.in_data(63, &req), initial_sector(1));
    assert!(!r.needs_reset());
}

/// A request beyond the capacity fails with IOERR and transfers nothing (virtio spec 5.2.6.2:
/// the driver must not submit it; the device reports the error in the status). Covers a range
/// straddling the end and a sector number whose byte offset overflows.
#[test]
fn out_of_range_sector_is_ioerr() {
    let (image, mut r) = rig();
    assert_eq!(r.run(0, &Req::read(SECTORS - 1, 2)).0, status::IOERR);
    assert_eq!(
        r.run(1, &Req::read(SECTORS, 0)).0,
        status::OK,
        "empty read at the end"
    );
    assert_eq!(r.run(2, &Req::read(u64::MAX, 1)).0, status::IOERR);
    let before = image.read();
    assert_eq!(
        r.run(3, &Req::write(SECTORS - 1, pattern(1, 1024))).0,
        status::IOERR
    );
    assert_eq!(
        r.run(4, &Req::write(u64::MAX / 256, pattern(1, 512))).0,
        status::IOERR
    );
    assert_eq!(image.read(), before, "nothing written");
    still_works(&mut r);
}

/// virtio spec 5.2.6: the header is 16 device-readable bytes; a shorter readable part (or none)
/// cannot be a request: IOERR.
#[test]
fn short_header_is_ioerr() {
    let (_image, mut r) = rig();
    for header_len in [0, 1, 8, 15] {
        let req = Req {
            header_len,
            in_len: 512,
            ..Req::read(0, 1)
        };
        assert_eq!(
            r.run(0, &req).0,
            status::IOERR,
            "header of {header_len} bytes"
        );
    }
    still_works(&mut r);
}

/// virtio spec 5.2.6: IN/OUT data is a multiple of 512 bytes. Short or odd buffers fail with
/// IOERR — including an IN whose only writable buffer doubles as the status byte, leaving 511
/// data bytes.
#[test]
fn partial_sector_buffers_are_ioerr() {
    let (image, mut r) = rig();
    let odd_read = Req {
        in_len: 100,
        ..Req::read(0, 1)
    };
    assert_eq!(r.run(0, &odd_read).0, status::IOERR);
    let before = image.read();
    assert_eq!(r.run(1, &Req::write(0, pattern(2, 513))).0, status::IOERR);
    assert_eq!(image.read(), before);
    let no_separate_status = Req {
        status: false,
        ..Req::read(0, 1)
    };
    let (st, len) = r.run(2, &no_separate_status);
    assert_eq!(len, 1, "only the status was written");
    assert_eq!(
        st, 0xee,
        "the separate status area is not part of this chain"
    );
    assert_eq!(
        r.in_data(2, &no_separate_status)[511],
        status::IOERR,
        "the last writable byte is the status"
    );
    still_works(&mut r);
}

/// A transfer larger than `seg_max` × `size_max` (what the device advertises it accepts) fails
/// with IOERR instead of making the device allocate an unbounded bounce buffer.
#[test]
fn oversized_transfer_is_ioerr() {
    let (_image, mut r) = Rig::on_image(SECTORS, |o| BlkOptions { queue_size: 4, ..o });
    r.start_all(false);
    // seg_max = 2, size_max = 64 KiB: at most 128 KiB per request.
    let base = Rig::slot_base(0);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&request_type::IN.to_le_bytes());
    vm_memory::Bytes::write_slice(&*r.mem, &header, vm_memory::GuestAddress(base)).unwrap();
    let mem = r.mem.clone();
    let id = r.rings[0]
        .as_mut()
        .unwrap()
        .add_chain(
            &*mem,
            &[
                BufferSpec::readable(base, 16),
                BufferSpec::writable(0x40_0000, 128 * 1024 + 512),
                BufferSpec::writable(base + 0x5800, 1),
            ],
        )
        .unwrap();
    r.publish(0);
    r.core.kick(0);
    let used = r.wait_used(0, 1);
    assert_eq!((used[0].id, used[0].len), (id, 1));
    assert_eq!(r.status_of(0, &Req::read(0, 1)), status::IOERR);
    still_works(&mut r);
}

/// spec-decisions §2: "malformed chain it cannot complete" → DEVICE_NEEDS_RESET (seed 002), with a
/// configuration change notification since DRIVER_OK is set. A chain with no device-writable
/// byte has no place for the status byte.
#[test]
fn chain_without_status_byte_needs_reset() {
    let (_image, mut r) = rig();
    let req = Req {
        status: false,
        ..Req::write(0, pattern(3, 512))
    };
    r.submit(0, 0, &req);
    assert!(r.needs_reset());
    assert_eq!(r.irq.config(), 1);
    assert!(
        matches!(
            r.core.last_error(),
            Some(DeviceError::MalformedChain {
                fault: ChainFault::NoWritableByte,
                ..
            })
        ),
        "{:?}",
        r.core.last_error()
    );
    assert!(r.collect(0).is_empty());
}

/// virtio spec 5.2.6.1: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write
/// request if the VIRTIO_BLK_F_RO feature if offered, and MUST NOT write any data." DISCARD and
/// WRITE_ZEROES are not offered on a read-only device, so they are unsupported (UNSUPP).
/// Reads, FLUSH and GET_ID work.
#[test]
fn read_only_image() {
    let (image, mut r) = Rig::on_image(SECTORS, |o| BlkOptions {
        read_only: true,
        ..o
    });
    let offered = r.core.device_features();
    assert_ne!(offered & features::RO, 0);
    assert_eq!(offered & (features::DISCARD | features::WRITE_ZEROES), 0);
    r.start_all(false);
    let before = image.read();
    assert_eq!(
        r.run(0, &Req::write(0, pattern(4, 512))),
        (status::IOERR, 1)
    );
    // A driver that sends them anyway (they were not negotiated).
    assert_discard_and_write_zeroes_unsupp(&mut r, 1, 8);
    assert_eq!(image.read(), before, "nothing written");
    assert_eq!(r.run(3, &Req::flush()).0, status::OK);
    let id = Req {
        in_len: 20,
        ..Req::new(request_type::GET_ID, 0)
    };
    assert_eq!(r.run(4, &id).0, status::OK);
    still_works(&mut r);
}

/// virtio spec 5.2.6: unknown request types, and FLUSH/DISCARD/WRITE_ZEROES whose feature was
/// not negotiated, complete with UNSUPP.
#[test]
fn unsupported_requests_are_unsupp() {
    let (image, mut r) = rig();
    for kind in [2, 3, 5, 14, 0xff, u32::MAX] {
        assert_eq!(
            r.run(0, &Req::new(kind, 0)).0,
            status::UNSUPP,
            "type {kind}"
        );
    }
    let mut bare = Rig::new(image.options(), QuiesceMode::Drain);
    bare.start(bit(Feature::Version1));
    assert_eq!(bare.run(0, &Req::flush()).0, status::UNSUPP);
    assert_discard_and_write_zeroes_unsupp(&mut bare, 1, 1);
    assert_eq!(bare.run(3, &Req::read(0, 1)).0, status::OK);
}

/// virtio spec 5.2.6.1: UNSUPP "for discard and write zeroes commands if any unknown flag is
/// set" and "for discard commands if the unmap flag is set"; malformed segment lists (none, a
/// partial segment, more than max_*_seg) are unsupported too; a segment beyond the capacity or
/// over max_*_sectors is IOERR. All segments are checked before any is carried out.
#[test]
fn discard_and_write_zeroes_validation() {
    let (image, mut r) = rig();
    let before = image.read();
    let cases: Vec<(Req, u8)> = vec![
        (
            Req::segments(false, &[(0, 1, WRITE_ZEROES_FLAG_UNMAP)]),
            status::UNSUPP,
        ),
        (Req::segments(true, &[(0, 1, 2)]), status::UNSUPP),
        (Req::segments(true, &[(0, 1, 0x8000_0000)]), status::UNSUPP),
        (Req::segments(true, &[]), status::UNSUPP),
        (
            Req {
                payload: vec![0; 24],
                ..Req::segments(true, &[])
            },
            status::UNSUPP,
        ),
        (
            Req::segments(true, &vec![(0, 1, 0); MAX_DISCARD_SEG as usize + 1]),
            status::UNSUPP,
        ),
        (
            Req::segments(true, &[(0, 4, 0), (SECTORS - 1, 2, 0)]),
            status::IOERR,
        ),
        (Req::segments(false, &[(u64::MAX, 1, 0)]), status::IOERR),
        (
            Req::segments(true, &[(0, MAX_WRITE_ZEROES_SECTORS + 1, 0)]),
            status::IOERR,
        ),
    ];
    for (i, (req, want)) in cases.iter().enumerate() {
        assert_eq!(r.run(i as u64, req).0, *want, "case {i}");
    }
    assert_eq!(
        image.read(),
        before,
        "no segment of a rejected request was carried out"
    );
    still_works(&mut r);
}

/// Injected backend errors (spec-decisions §2: "Per-request failures (e.g. a block I/O error) are
/// reported in the request status (VIRTIO_BLK_S_IOERR), not with NEEDS_RESET"): only requests
/// touching the failing sectors fail; a failed write changes nothing there.
#[test]
fn injected_eio_fails_only_those_requests() {
    let (image, mut r) = Rig::on_image(SECTORS, |o| BlkOptions {
        faults: Faults {
            fail_sectors: Some(40..44),
            ..Faults::default()
        },
        ..o
    });
    r.start_all(false);
    assert_eq!(r.run(0, &Req::read(38, 2)).0, status::OK, "just below");
    assert_eq!(
        r.run(1, &Req::read(39, 2)).0,
        status::IOERR,
        "overlaps the start"
    );
    assert_eq!(
        r.run(2, &Req::read(43, 4)).0,
        status::IOERR,
        "overlaps the end"
    );
    assert_eq!(r.run(3, &Req::read(44, 4)).0, status::OK, "just above");
    assert_eq!(r.run(4, &Req::write(41, pattern(5, 512))).0, status::IOERR);
    assert_eq!(image.sector(41, 1), initial_sector(41));
    assert_eq!(
        r.run(5, &Req::segments(true, &[(0, 2, 0), (42, 1, 0)])).0,
        status::IOERR
    );
    assert_eq!(
        image.sector(0, 1),
        initial_sector(0),
        "no segment carried out"
    );
    assert_eq!(r.run(6, &Req::write(50, pattern(6, 512))).0, status::OK);
    assert_eq!(image.sector(50, 1), pattern(6, 512));
    assert!(!r.core.status().intersects(DeviceStatus::DEVICE_NEEDS_RESET));
    still_works(&mut r);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// DESIGN.md: "No panic on any external input". Arbitrary headers and buffer shapes: every
    /// request completes with a defined status (or, with no writable byte, NEEDS_RESET), and
    /// the device never writes past the chain's buffers.
    #[test]
    fn hostile_requests_never_panic(
        kind in prop_oneof![0u32..16, any::<u32>()],
        sector in prop_oneof![0u64..200, any::<u64>()],
        header_len in 0u32..20,
        payload_len in 0usize..1200,
        in_len in 0u32..1100,
        has_status in any::<bool>(),
        fill in any::<u8>(),
    ) {
        let (_image, mut r) = rig();
        let req = Req {
            kind,
            sector,
            payload: vec![fill; payload_len],
            in_len,
            header_len: header_len.min(16),
            status: has_status,
            layout: common::Layout::Separate,
        };
        let writable = in_len + u32::from(has_status);
        let readable = req.header_len + payload_len as u32;
        prop_assume!(writable + readable > 0);
        r.submit(0, 0, &req);
        if writable == 0 {
            prop_assert!(r.needs_reset());
        } else {
            let used = r.wait_used(0, 1);
            prop_assert!(used[0].len >= 1 && used[0].len <= writable);
            prop_assert!(!r.needs_reset());
        }
    }
}
