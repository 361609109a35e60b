//! The blk-specific device context (spec-decisions §5: 0x0200 BLK_WRITEBACK, `u8`) and the
//! driver-writable `writeback` field behind it (virtio spec 5.2.4, VIRTIO_BLK_F_CONFIG_WCE).
//!
//! The state travels as context fields: the tests frame it with the device crate's one codec
//! (`ContextWriter` / `parse_fields`, spec-decisions §5) and hand the fields to the device's
//! typed-state seam (`save_state`, `decode_state`, `restore_state`).

mod common;

use common::{bit, Mem, Rig, TempImage};
use virtio_lm_device::testing::context::{device_fields, field_bytes, framed_state};
use virtio_lm_device::{DeviceError, QuiesceMode, VirtioDevice};
use virtio_lm_devices::blk::config::{features, offset};
use virtio_lm_devices::{Blk, BlkOptions};
use virtio_lm_spec::Feature;

fn blk(image: &TempImage, writeback: bool) -> Blk {
    Blk::open(BlkOptions {
        writeback,
        ..image.options()
    })
    .unwrap()
}

/// A [`blk`] device on an image of its own (which the caller keeps as long as the device).
fn blk_on_own_image(writeback: bool) -> (TempImage, Blk) {
    let image = TempImage::new(8);
    let d = blk(&image, writeback);
    (image, d)
}

/// The saved state framed as context fields.
fn save(d: &Blk) -> Vec<u8> {
    framed_state::<Mem>(d)
}

fn config(d: &Blk) -> Vec<u8> {
    let mut c = vec![0; VirtioDevice::<Mem>::config_len(d)];
    VirtioDevice::<Mem>::read_config(d, 0, &mut c);
    c
}

/// Validates framed `state` (with `d`'s own configuration space): framing errors are the
/// codec's, everything else the device's.
fn validate(d: &Blk, state: &[u8]) -> Result<(), DeviceError> {
    decode(d, state).map(|_| ())
}

fn decode(d: &Blk, state: &[u8]) -> Result<virtio_lm_device::context::ValidatedState, DeviceError> {
    let fields = device_fields(state)?;
    VirtioDevice::<Mem>::decode_state(d, &fields, &config(d))
}

/// Decodes and, if the device accepts it, restores `state`.
fn restore(d: &mut Blk, state: &[u8]) -> Result<(), DeviceError> {
    let valid = decode(d, state)?;
    VirtioDevice::<Mem>::restore_state(d, valid);
    Ok(())
}

fn writeback(d: &Blk) -> u8 {
    let mut b = [0u8];
    VirtioDevice::<Mem>::read_config(d, offset::WRITEBACK, &mut b);
    b[0]
}

/// spec-decisions §5: the state is one BLK_WRITEBACK field (type 0x0200, `u8`), 8-byte header plus
/// value padded to 8; restoring it into a fresh device reproduces the config byte.
#[test]
fn writeback_state_round_trips() {
    let image = TempImage::new(8);
    let mut src = blk(&image, true);
    assert_eq!(
        save(&src),
        [0x00, 0x02, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    );
    VirtioDevice::<Mem>::write_config(&mut src, offset::WRITEBACK, &[0]);
    let state = save(&src);
    assert_eq!(state, field_bytes(0x0200, 0, &[0]));
    let mut dst = blk(&image, true);
    assert_eq!(writeback(&dst), 1);
    validate(&dst, &state).unwrap();
    restore(&mut dst, &state).unwrap();
    assert_eq!(writeback(&dst), 0);
    assert_eq!(save(&dst), state);
}

/// spec-decisions §5: "Every value is validated before any of it is applied ... lengths exact; a
/// context that fails validation changes nothing." Bad lengths, values, types, flags,
/// duplicates, truncation and a missing field are all rejected, and a failed restore leaves
/// the device as it was. Padding follows the codec's one rule (present, contents ignored).
#[test]
fn invalid_states_are_rejected_without_effect() {
    let (_image, mut d) = blk_on_own_image(true);
    let good = field_bytes(0x0200, 0, &[0]);
    let mut nonzero_padding = good.clone();
    nonzero_padding[9] = 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("value 2", field_bytes(0x0200, 0, &[2])),
        ("value 0xff", field_bytes(0x0200, 0, &[0xff])),
        ("length 0", field_bytes(0x0200, 0, &[])),
        ("length 2", field_bytes(0x0200, 0, &[0, 0])),
        ("length 8", field_bytes(0x0200, 0, &[0; 8])),
        ("twice", [good.clone(), good.clone()].concat()),
        ("truncated header", good[..5].to_vec()),
        ("truncated value", good[..8].to_vec()),
        ("missing padding", good[..9].to_vec()),
        ("trailing bytes", [good.clone(), vec![0; 3]].concat()),
        (
            "unknown mandatory",
            [good.clone(), field_bytes(0x0201, 0, &[1])].concat(),
        ),
        (
            "net type",
            [good.clone(), field_bytes(0x0300, 1, &[1])].concat(),
        ),
        (
            "common type",
            [good.clone(), field_bytes(0x0102, 1, &[1])].concat(),
        ),
        ("reserved flags", field_bytes(0x0200, 2, &[0])),
        ("only optional", field_bytes(0x02ff, 1, &[1, 2, 3])),
        ("huge length", {
            let mut f = good.clone();
            f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            f
        }),
    ];
    for (name, state) in cases {
        assert!(validate(&d, &state).is_err(), "{name} accepted");
        assert!(restore(&mut d, &state).is_err());
        assert_eq!(writeback(&d), 1, "{name}: nothing applied");
    }
    // spec-decisions §5, one padding rule for every field: padding must be present but may
    // hold anything.
    restore(&mut d, &nonzero_padding).unwrap();
    assert_eq!(writeback(&d), 0);
}

/// spec-decisions §5: "flags bit 0 = OPTIONAL: a receiver skips an unknown optional field and
/// rejects an unknown mandatory one." An optional BLK_WRITEBACK is accepted too.
#[test]
fn unknown_optional_fields_are_skipped() {
    let (_image, mut d) = blk_on_own_image(true);
    let state = [
        field_bytes(0x0280, 1, &[9; 13]),
        field_bytes(0x0200, 1, &[0]),
        field_bytes(0x02ff, 1, &[]),
    ]
    .concat();
    restore(&mut d, &state).unwrap();
    assert_eq!(writeback(&d), 0);
}

/// virtio spec 5.2.4 with VIRTIO_BLK_F_CONFIG_WCE: the driver switches `writeback` (0
/// writethrough, 1 writeback); other values and other fields are not writable. A reset returns
/// it to the configured initial value.
#[test]
fn writeback_is_driver_writable_and_reset() {
    let (_image, mut d) = blk_on_own_image(false);
    let mut before = [0u8; 60];
    VirtioDevice::<Mem>::read_config(&d, 0, &mut before);
    VirtioDevice::<Mem>::write_config(&mut d, offset::WRITEBACK, &[1]);
    assert_eq!(writeback(&d), 1);
    VirtioDevice::<Mem>::write_config(&mut d, offset::WRITEBACK, &[2]);
    assert_eq!(writeback(&d), 1, "invalid value ignored");
    VirtioDevice::<Mem>::write_config(&mut d, 28, &[0xaa; 8]);
    assert_eq!(writeback(&d), 1, "0xaa ignored");
    VirtioDevice::<Mem>::write_config(&mut d, 30, &[0xaa, 0xaa, 0, 0xaa]);
    assert_eq!(writeback(&d), 0, "a wider write sets writeback only");
    VirtioDevice::<Mem>::write_config(&mut d, 0, &[0xaa; 8]);
    VirtioDevice::<Mem>::write_config(&mut d, usize::MAX, &[0]);
    let mut after = [0u8; 60];
    VirtioDevice::<Mem>::read_config(&d, 0, &mut after);
    assert_eq!(after, before, "capacity and limits unchanged");
    VirtioDevice::<Mem>::write_config(&mut d, offset::WRITEBACK, &[1]);
    VirtioDevice::<Mem>::reset(&mut d);
    assert_eq!(writeback(&d), 0, "back to the initial value");
}

/// virtio spec 5.2.5: "If VIRTIO_BLK_F_CONFIG_WCE is negotiated but VIRTIO_BLK_F_FLUSH is not,
/// the device MUST initialize writeback to 0" — the driver cannot flush, so the device is
/// writethrough.
#[test]
fn config_wce_without_flush_means_writethrough() {
    let image = TempImage::new(8);
    let mut r = Rig::new(image.options(), QuiesceMode::Drain);
    let mut wb = [0u8];
    r.core.read_config(offset::WRITEBACK, &mut wb);
    assert_eq!(wb, [1], "configured writeback");
    r.start(bit(Feature::Version1) | features::CONFIG_WCE);
    r.core.read_config(offset::WRITEBACK, &mut wb);
    assert_eq!(wb, [0]);
}
