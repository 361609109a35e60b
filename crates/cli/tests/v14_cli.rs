//! `--profile v1.4` on the binary (issue 15, "The engine under v1.4"): two-process migrations
//! with the admin strategy moving device parts, split and packed, verified at the destination
//! after the guest ran on there (0 lost, 0 duplicated, 0 corrupted); and the combinations v1.4
//! cannot honour refused with the reason.

mod common;
use common::{assert_usage_errors, binary, json_output};

/// Issue 15: "The two-process tests … cover v1.4: both strategies, split and packed: 0 lost, 0
/// duplicated, 0 corrupted" — the admin strategy's half: `demo --profile v1.4` runs the echo
/// peer, the destination and the source as processes of the binary, both VMs with the v1.4
/// numbering, and verifies at the destination (spec-decisions §35, §36, §37).
#[test]
fn two_process_v14_admin_migrations_lose_nothing() {
    for ring in ["split", "packed"] {
        let out = binary()
            .args(["demo", "--json", "--profile", "v1.4", "--strategy", "admin"])
            .args(["--ring", ring, "--memory", "32M", "--working-set", "8"])
            .args(["--dirty-rate", "10", "--force", "--run-ms", "300"])
            .output()
            .unwrap();
        let report = json_output(out, &format!("v1.4 admin {ring}"));
        assert_eq!(report["result"], "ok", "{report:#}");
        assert_eq!(report["profile"], "v1.4", "{report:#}");
        assert_eq!(report["strategy"], "admin", "{report:#}");
        assert_eq!(report["ring"], ring);
        for zero in ["lost", "duplicated", "corrupted"] {
            assert_eq!(report[zero], 0, "{ring}: {report:#}");
        }
        assert!(report["requests_verified"].as_u64() > Some(0), "{report:#}");
        assert!(
            report["device_context_bytes"].as_u64() > Some(0),
            "{report:#}"
        );
    }
}

/// spec-decisions §36: `--inflight transfer` under v1.4 is a usage error before any VM
/// starts (no 1.4 part carries in-flight buffers); so is `--stress` with `--profile`, as the
/// stress run draws each guest's profile itself (spec-decisions §39).
#[test]
fn v14_flags_that_cannot_work_are_usage_errors() {
    let cases: [(&[&str], &str); 2] = [
        (
            &["demo", "--profile", "v1.4", "--inflight", "transfer"],
            "--inflight transfer is not possible under the v1.4 profile",
        ),
        (
            &["demo", "--profile", "v1.4", "--stress", "1"],
            "--stress draws each guest's profile",
        ),
    ];
    assert_usage_errors(&cases);
}
