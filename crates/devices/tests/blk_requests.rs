//! virtio-blk request types (virtio spec 5.2.6) and the configuration space (5.2.4), over both
//! ring formats and both descriptor layouts.

mod common;

use common::{initial_sector, pattern, Layout, Req, Rig, TempImage};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::{
    self, features, offset, request_type, status, SECTOR_SIZE, WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_lm_devices::BlkOptions;

const SECTORS: u64 = 256;

fn rig(image: &TempImage, packed: bool) -> Rig {
    let mut r = Rig::new(image.options(), QuiesceMode::Drain);
    r.start_all(packed);
    r
}

fn variants() -> [(bool, Layout); 4] {
    [
        (false, Layout::Separate),
        (false, Layout::Merged),
        (true, Layout::Separate),
        (true, Layout::Merged),
    ]
}

fn with_layout(req: Req, layout: Layout) -> Req {
    Req { layout, ..req }
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_IN): the device reads `sector` onwards into the writable
/// data buffers, sets VIRTIO_BLK_S_OK, and reports the data plus the status byte as written.
#[test]
fn read_returns_image_data() {
    for (packed, layout) in variants() {
        let image = TempImage::new(SECTORS);
        let mut r = rig(&image, packed);
        let req = with_layout(Req::read(3, 4), layout);
        let (st, len) = r.run(0, &req);
        assert_eq!(st, status::OK, "packed={packed} {layout:?}");
        assert_eq!(len, 4 * 512 + 1);
        let want: Vec<u8> = (3..7).flat_map(initial_sector).collect();
        assert_eq!(r.in_data(0, &req), want);
    }
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_OUT): the readable data after the header is written at
/// `sector`; only the status byte is written back (used length 1). A read sees the new data.
#[test]
fn write_reaches_image_and_reads_back() {
    for (packed, layout) in variants() {
        let image = TempImage::new(SECTORS);
        let mut r = rig(&image, packed);
        let data = pattern(7, 3 * 512);
        let (st, len) = r.run(0, &with_layout(Req::write(10, data.clone()), layout));
        assert_eq!((st, len), (status::OK, 1), "packed={packed} {layout:?}");
        assert_eq!(image.sector(10, 3), data);
        assert_eq!(
            image.sector(9, 1),
            initial_sector(9),
            "neighbours untouched"
        );
        assert_eq!(image.sector(13, 1), initial_sector(13));
        let read = with_layout(Req::read(10, 3), layout);
        assert_eq!(r.run(1, &read).0, status::OK);
        assert_eq!(r.in_data(1, &read), data);
    }
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_F_FLUSH negotiated): completes with OK.
#[test]
fn flush_completes_ok() {
    let image = TempImage::new(SECTORS);
    let mut r = rig(&image, false);
    assert_eq!(r.run(0, &Req::flush()), (status::OK, 1));
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_GET_ID): the device id string is 20 bytes, NUL-padded,
/// not NUL-terminated; a shorter buffer gets the beginning of it.
#[test]
fn get_id_returns_the_serial() {
    let image = TempImage::new(SECTORS);
    let options = BlkOptions {
        serial: Some("serial-0123456789abcdefXYZ".into()),
        ..image.options()
    };
    let mut r = Rig::new(options, QuiesceMode::Drain);
    r.start_all(false);
    let req = Req {
        in_len: 20,
        ..Req::new(request_type::GET_ID, 0)
    };
    assert_eq!(r.run(0, &req), (status::OK, 21));
    assert_eq!(r.in_data(0, &req), b"serial-0123456789abc");
    let short = Req { in_len: 6, ..req };
    assert_eq!(r.run(1, &short), (status::OK, 7));
    assert_eq!(r.in_data(1, &short), b"serial");

    // Default: the image's file name, NUL-padded.
    let mut d = rig(&image, false);
    let req = Req {
        in_len: 20,
        ..Req::new(request_type::GET_ID, 0)
    };
    d.run(0, &req);
    let name = image
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut want = [0u8; 20];
    let n = name.len().min(20);
    want[..n].copy_from_slice(&name.as_bytes()[..n]);
    assert_eq!(d.in_data(0, &req), want);
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_WRITE_ZEROES): "After a write zeroes command is completed,
/// reads of the specified ranges of sectors MUST return zeroes. This is true independent of
/// whether unmap was set or clear." Several segments in one request.
#[test]
fn write_zeroes_zeroes_every_segment() {
    for packed in [false, true] {
        let image = TempImage::new(SECTORS);
        let mut r = rig(&image, packed);
        let req = Req::segments(true, &[(5, 3, 0), (40, 9, WRITE_ZEROES_FLAG_UNMAP)]);
        assert_eq!(r.run(0, &req), (status::OK, 1));
        assert_eq!(image.sector(5, 3), vec![0; 3 * 512]);
        assert_eq!(image.sector(40, 9), vec![0; 9 * 512]);
        assert_eq!(image.sector(4, 1), initial_sector(4));
        assert_eq!(image.sector(8, 1), initial_sector(8));
        assert_eq!(image.sector(49, 1), initial_sector(49));
        let read = Req::read(40, 2);
        assert_eq!(r.run(1, &read).0, status::OK);
        assert_eq!(r.in_data(1, &read), vec![0; 1024]);
    }
}

/// virtio spec 5.2.6 (VIRTIO_BLK_T_DISCARD): completes with OK; the device "MAY deallocate"
/// the range, so only sectors outside it are checked.
#[test]
fn discard_completes_ok() {
    let image = TempImage::new(SECTORS);
    let mut r = rig(&image, false);
    let req = Req::segments(false, &[(16, 16, 0), (100, 8, 0)]);
    assert_eq!(r.run(0, &req), (status::OK, 1));
    assert_eq!(image.sector(15, 1), initial_sector(15));
    assert_eq!(image.sector(32, 1), initial_sector(32));
    assert_eq!(
        image.read().len() as u64,
        SECTORS * SECTOR_SIZE,
        "size kept"
    );
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// virtio spec 5.2.4: `struct virtio_blk_config` field by field (capacity in 512-byte sectors,
/// limits the offered features make valid), bytes past the structure read 0, and reads at any
/// offset see the same bytes.
#[test]
fn config_space_bytes() {
    let image = TempImage::new(SECTORS + 1);
    std::fs::OpenOptions::new()
        .append(true)
        .open(image.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[1; 100]))
        .unwrap();
    let options = BlkOptions {
        num_queues: 3,
        queue_size: 32,
        writeback: false,
        ..image.options()
    };
    let r = Rig::new(options, QuiesceMode::Drain);
    let mut c = [0xffu8; 64];
    r.core.read_config(0, &mut c);
    assert_eq!(
        u64::from_le_bytes(c[0..8].try_into().unwrap()),
        SECTORS + 1,
        "partial sector not counted"
    );
    assert_eq!(le32(&c, offset::SIZE_MAX), config::SIZE_MAX);
    assert_eq!(
        le32(&c, offset::SEG_MAX),
        30,
        "queue size minus header and status"
    );
    assert_eq!(&c[16..20], &[0; 4], "geometry not offered");
    assert_eq!(le32(&c, offset::BLK_SIZE), 512);
    assert_eq!(&c[24..32], &[0; 8], "topology not offered");
    assert_eq!(c[offset::WRITEBACK], 0);
    assert_eq!(u16::from_le_bytes([c[34], c[35]]), 3);
    assert_eq!(
        le32(&c, offset::MAX_DISCARD_SECTORS),
        config::MAX_DISCARD_SECTORS
    );
    assert_eq!(le32(&c, offset::MAX_DISCARD_SEG), config::MAX_DISCARD_SEG);
    assert_eq!(le32(&c, offset::DISCARD_SECTOR_ALIGNMENT), 1);
    assert_eq!(
        le32(&c, offset::MAX_WRITE_ZEROES_SECTORS),
        config::MAX_WRITE_ZEROES_SECTORS
    );
    assert_eq!(
        le32(&c, offset::MAX_WRITE_ZEROES_SEG),
        config::MAX_WRITE_ZEROES_SEG
    );
    assert_eq!(c[offset::WRITE_ZEROES_MAY_UNMAP], 1);
    assert_eq!(&c[57..64], &[0; 7], "padding and past the end read 0");
    let mut part = [0u8; 5];
    r.core.read_config(33, &mut part);
    assert_eq!(part, c[33..38]);
    let mut far = [0xffu8; 4];
    r.core.read_config(usize::MAX - 1, &mut far);
    assert_eq!(far, [0; 4]);

    let offered = r.core.device_features();
    for f in [
        features::SIZE_MAX,
        features::SEG_MAX,
        features::BLK_SIZE,
        features::FLUSH,
        features::CONFIG_WCE,
        features::MQ,
        features::DISCARD,
        features::WRITE_ZEROES,
    ] {
        assert_ne!(offered & f, 0, "feature {f:#x} offered");
    }
    assert_eq!(offered & features::RO, 0);
    assert_eq!(r.core.num_queues(), 3);
    assert_eq!(r.core.queue(2).unwrap().max_size, 32);
}

/// One queue: VIRTIO_BLK_F_MQ is not offered (virtio spec 5.2.3: num_queues is valid only
/// with it).
#[test]
fn single_queue_does_not_offer_mq() {
    let image = TempImage::new(8);
    let r = Rig::new(image.options(), QuiesceMode::Drain);
    assert_eq!(r.core.device_features() & features::MQ, 0);
    assert_eq!(r.core.device_type(), config::VIRTIO_ID_BLOCK);
}

/// DESIGN.md invariant: every device write is dirty-logged — IN data and the status byte go
/// through vm-memory, so their pages are marked dirty, as are the used-ring writes.
#[test]
fn completion_writes_are_dirty_logged() {
    let image = TempImage::new(SECTORS);
    let mut r = rig(&image, false);
    let req = Req::read(0, 8);
    r.add(0, 5, &req);
    r.publish(0);
    // Everything the driver wrote is behind us: what is dirty now, the device wrote.
    r.clear_dirty();
    r.core.kick(0);
    assert_eq!(r.wait_used(0, 1).len(), 1);
    assert_eq!(r.status_of(5, &req), status::OK);
    let base = Rig::slot_base(5);
    assert!(r.dirty(base + 0x3000), "IN data page");
    assert!(r.dirty(base + 0x5800), "status page");
    assert!(!r.dirty(base), "header page was only read");
    // Split ring of 128 at QUEUE_BASE: descriptors 0x800 bytes, then the available ring, then
    // the used ring at +0x908 (same page as the descriptors, so only the used write is checked).
    assert!(r.dirty(common::QUEUE_BASE + 0x908), "used ring");
}
