//! `virtio-lm demo --stress` (issue 13, "Stress": "N migrations back and forth at random points
//! of the seeded workload, random strategy, ring and in-flight mode per migration …, every few
//! with an injected fault or cancel; at the end the totals as a line and, with `--json`, as one
//! object with these fields: migrations_ok, cancelled, faults_survived, requests_completed,
//! requests_verified, lost, duplicated, corrupted"; "CI runs at least 100"; "The goal is 0 lost,
//! 0 duplicated, 0 corrupted"). The seed 004 admin strategy and the in-band status strategy
//! (seeds 000, 001, 003), spec-decisions §27; and (issue 15, spec-decisions §39) guests of the
//! virtio 1.4 profile, moved with device parts or with 1.4's SUSPEND, each ring's position taken
//! from guest memory.

mod common;
use common::binary;

#[test]
fn one_hundred_migrations_lose_nothing() {
    let out = binary()
        .args(["demo", "--stress", "100", "--seed", "13", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let totals: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let object = totals.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cancelled",
            "corrupted",
            "duplicated",
            "faults_survived",
            "lost",
            "migrations_ok",
            "requests_completed",
            "requests_verified"
        ]
    );
    let n = |k: &str| totals[k].as_u64().unwrap();
    assert_eq!(
        n("migrations_ok") + n("cancelled") + n("faults_survived"),
        100
    );
    // Every fourth migration has a fault or a cancel.
    assert_eq!(n("cancelled") + n("faults_survived"), 25);
    assert_eq!((n("lost"), n("duplicated"), n("corrupted")), (0, 0, 0));
    assert!(n("requests_verified") > 0 && n("requests_completed") >= n("requests_verified"));
}

/// Without `--json`, the totals line.
#[test]
fn the_totals_line() {
    let out = binary()
        .args(["demo", "--stress", "4", "--seed", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("stress: ") && stdout.contains("lost 0, duplicated 0, corrupted 0"),
        "{stdout}"
    );
}

/// `--seed` belongs to `--stress`.
#[test]
fn seed_needs_stress() {
    let out = binary().args(["demo", "--seed", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
