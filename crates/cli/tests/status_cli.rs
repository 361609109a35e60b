//! `--strategy status` on the binary (issue 10, "Tests"): two-process migrations, each VM its
//! own process, with both status bits × split and packed rings, verified at the destination
//! after the guest ran on there (0 lost, 0 duplicated, 0 corrupted); and the flag combinations
//! the strategy cannot honour refused as usage errors before anything starts.

mod common;
use common::{assert_usage_errors, binary, json_output};

/// `demo --strategy status --status-bit BIT --ring RING --profile PROFILE`: the echo peer, the
/// destination and the source as processes of the binary, verified at the destination.
fn demo_status(profile: &str, ring: &str, bit: &str) {
    let what = format!("{profile} {ring} {bit}");
    let out = binary()
        .args([
            "demo",
            "--json",
            "--strategy",
            "status",
            "--status-bit",
            bit,
        ])
        .args(["--profile", profile, "--ring", ring])
        .args(["--memory", "32M", "--working-set", "8"])
        .args(["--dirty-rate", "10", "--force", "--run-ms", "300"])
        .output()
        .unwrap();
    let report = json_output(out, &what);
    assert_eq!(report["result"], "ok", "{report:#}");
    assert_eq!(report["strategy"], format!("status-{bit}"), "{report:#}");
    assert_eq!(report["ring"], ring);
    for zero in ["lost", "duplicated", "corrupted"] {
        assert_eq!(report[zero], 0, "{what}: {report:#}");
    }
    assert!(report["requests_verified"].as_u64() > Some(0), "{report:#}");
    assert!(
        report["device_context_bytes"].as_u64() > Some(0),
        "{report:#}"
    );
}

/// Issue 10: "Two-process migrations with both status bits × split and packed: 0 lost, 0
/// duplicated, 0 corrupted" — seed 000 (DEVICE_STOPPED) and seed 003 (SUSPEND) stops, seed 001
/// queue state written before DRIVER_OK on the destination; `demo` runs the echo peer, the
/// destination and the source as processes of the binary and verifies at the destination.
#[test]
fn two_process_status_migrations_lose_nothing() {
    for (ring, bit) in [
        ("split", "stopped"),
        ("packed", "stopped"),
        ("split", "suspend"),
        ("packed", "suspend"),
    ] {
        demo_status("seeds", ring, bit);
    }
}

/// Issue 15: "The two-process tests … cover v1.4 … split and packed: 0 lost, 0 duplicated, 0
/// corrupted" — virtio 1.4 SUSPEND (feature bit 43) with no queue state: each ring's position
/// from the destination's guest memory, set into its device before DRIVER_OK (spec-decisions
/// §38).
#[test]
fn two_process_v1_4_suspend_migrations_lose_nothing() {
    for ring in ["split", "packed"] {
        demo_status("v1.4", ring, "suspend");
    }
}

/// Issue 10: "`--inflight transfer` with `--strategy status` is refused with a clear message";
/// `--status-bit` without `--strategy status` means nothing and is refused too; and (virtio 1.4
/// numbers no DEVICE_STOPPED, spec-decisions §38) the status strategy's default stop bit with
/// `--profile v1.4`. All are usage errors (exit status 2) before any VM starts (seed 000:
/// setting DEVICE_STOPPED completes the requests in flight first, so none could travel).
#[test]
fn status_flags_that_cannot_work_are_usage_errors() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["demo", "--profile", "v1.4", "--strategy", "status"],
            "virtio 1.4 has no DEVICE_STOPPED",
        ),
        (
            &[
                "demo",
                "--profile",
                "v1.4",
                "--strategy",
                "status",
                "--status-bit",
                "stopped",
            ],
            "--status-bit suspend",
        ),
        (
            &["demo", "--strategy", "status", "--inflight", "transfer"],
            "--inflight transfer needs --strategy admin",
        ),
        (&["demo", "--status-bit", "suspend"], "--status-bit needs"),
        (
            &[
                "migrate",
                "--control",
                "/nonexistent.sock",
                "--to",
                "tcp:127.0.0.1:1",
                "--strategy",
                "status",
                "--inflight",
                "transfer",
            ],
            "no in-band path for in-flight chains",
        ),
    ];
    assert_usage_errors(&cases);
}
