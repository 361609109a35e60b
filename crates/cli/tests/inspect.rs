//! `virtio-lm inspect`: a context a device really produced is listed and rendered as JSON;
//! malformed input (spec-decisions §7 pitfall 10: truncated, reordered, unknown fields) exits
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

mod common;
use common::assert_stdout_mentions;

/// The sample contexts in `docs/samples/` (written by `virtio-lm inspect --sample KIND --output
/// docs/samples/KIND.ctx`).
fn committed_sample(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/samples/{kind}.ctx"))
}

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
    assert_stdout_mentions(
        out,
        &[
            "START_MARKER",
            "END_MARKER",
            "VQ_CONFIG",
            "VQ_STATE",
            "VIRTIO_F_DEVICE_STOP",
            "DEVICE_STOPPED",
            "queue 0: size 16, enabled, desc 0x1000",
        ],
    );
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

/// The samples in the repository stay decodable, and list their device-specific fields, the
/// status by flag names and split-ring positions without wrap counters (a split ring has none:
/// seed 001 gives the packed wrap counter bit 15 only).
#[test]
fn committed_samples_stay_decodable() {
    let status =
        "device status:   0x2f ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | DEVICE_STOPPED";
    for (kind, field) in [
        ("blk", "BLK_WRITEBACK = 01 (writeback)"),
        ("net", "NET_MQ_PAIRS"),
    ] {
        let path = committed_sample(kind);
        let bytes = std::fs::read(&path).unwrap();
        let ctx = virtio_lm_device::context::decode(&bytes).unwrap();
        assert_eq!(
            encode(&ctx).unwrap(),
            bytes,
            "{kind}: re-encodes byte for byte"
        );
        let out = run(&["inspect", path.to_str().unwrap()]);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_stdout_mentions(
            out,
            &[
                field,
                status,
                "ring format: split",
                "avail state 0, used state 0,",
            ],
        );
    }
}

/// `--sample` builds a real device each time: its context decodes, a packed one shows the wrap
/// counters, and one saved under v1.4 (stopped by SUSPEND) read with the seeds names warns.
#[test]
fn samples_from_real_devices() {
    let out = run(&["inspect", "--sample", "net", "--packed"]);
    assert_stdout_mentions(
        out,
        &[
            "ring format: packed",
            "avail state 0x8000 (index 0, wrap 1)",
            "NET_MAC_TABLE",
        ],
    );

    let path = std::env::temp_dir().join(format!("virtio-lm-inspect-{}-v14", std::process::id()));
    let out = run(&[
        "inspect",
        "--sample",
        "blk",
        "--profile",
        "v1.4",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let as_seeds = run(&["inspect", path.to_str().unwrap()]);
    let as_v14 = run(&["inspect", "--profile", "v1.4", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let warning = String::from_utf8_lossy(&as_seeds.stderr).to_string();
    assert!(warning.contains("try --profile v1.4"), "{warning}");
    assert_stdout_mentions(as_seeds, &["bit 43"]);
    assert!(
        as_v14.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&as_v14.stderr)
    );
    assert_stdout_mentions(as_v14, &["ACKNOWLEDGE | DRIVER | FEATURES_OK | SUSPEND"]);
}
