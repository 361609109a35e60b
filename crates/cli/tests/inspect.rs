//! `virtio-lm inspect`: a context a device really produced is listed and rendered as JSON;
//! malformed input (spec-notes §7 pitfall 10: truncated, reordered, unknown fields) exits
//! non-zero naming the byte offset, and never panics.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use virtio_lm_cli::inspect::inspect;
use virtio_lm_device::context::encode;
use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
use virtio_lm_devices::{CountingEntropy, Rng};
use virtio_lm_spec::{DeviceStatus, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// A context saved from a real rng device that was set up and then stopped.
fn real_context() -> Vec<u8> {
    let mem =
        Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let rng = Rng::new(Box::new(CountingEntropy::new(0)), 16);
    let mut core = DeviceCore::new(
        Box::new(rng),
        mem,
        Arc::new(InterruptCounter::default()),
        CoreOptions::default(),
    )
    .unwrap();
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    core.set_driver_features(core.device_features());
    let setup = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
    core.write_status(setup);
    core.write_queue(0, |r| {
        r.desc = 0x1000;
        r.driver = 0x2000;
        r.device = 0x3000;
        r.enabled = true;
    });
    core.write_status(setup | DeviceStatus::DRIVER_OK);
    core.write_status(setup | DeviceStatus::DRIVER_OK | DeviceStatus::DEVICE_STOPPED);
    encode(&core.save_context().unwrap()).unwrap()
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("virtio-lm-inspect-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtio-lm"))
        .args(args)
        .output()
        .unwrap()
}

/// Seed 004 context read by DEV_CTX_READ, decoded by `inspect`: every field is listed with its
/// offset and the decoded values are shown (features by name, status bits, queue state).
#[test]
fn lists_a_real_context() {
    let path = temp_file("good", &real_context());
    let out = run(&["inspect", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "START_MARKER",
        "END_MARKER",
        "VQ_CONFIG",
        "VQ_STATE",
        "VIRTIO_F_DEVICE_STOP",
        "DEVICE_STOPPED",
        "queue 0: size 16, enabled, desc 0x1000",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// `--json` gives the same content in machine-readable form.
#[test]
fn json_output_parses() {
    let path = temp_file("json", &real_context());
    let out = run(&["inspect", "--json", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["queues"][0]["size"], 16);
    assert_eq!(value["queues"][0]["desc"], 0x1000);
    assert_eq!(
        value["device_status"],
        u64::from(
            (DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK
                | DeviceStatus::DEVICE_STOPPED)
                .bits()
        )
    );
    assert_eq!(value["fields"][0]["type"], "START_MARKER");
}

/// Truncated input exits non-zero with the byte offset of the problem; so does a context with a
/// field out of order.
#[test]
fn malformed_input_names_the_offset() {
    let good = real_context();
    let truncated = temp_file("truncated", &good[..good.len() - 5]);
    let out = run(&["inspect", truncated.to_str().unwrap()]);
    std::fs::remove_file(&truncated).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("byte"), "no offset in: {err}");

    // START_MARKER (8 bytes) swapped with the 8-byte header of the next field: the framing
    // still parses, the order does not.
    let mut reordered = good.clone();
    let (start, rest) = reordered.split_at_mut(8);
    start.swap_with_slice(&mut rest[..8]);
    assert!(inspect(&reordered, false, Profile::Seeds).is_err());
}

proptest! {
    /// Arbitrary bytes and random corruptions of a real context never panic the decoder.
    #[test]
    fn arbitrary_input_never_panics(noise in prop::collection::vec(any::<u8>(), 0..512), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
        let _ = inspect(&noise, false, Profile::Seeds);
        let mut bytes = real_context();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = inspect(&bytes, true, Profile::Seeds);
    }
}
