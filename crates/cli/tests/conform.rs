//! `virtio-lm conform` (virtio 1.4 "Device parts" and "Resource objects"; seeds 000, 003,
//! 004): the table and the JSON object of the shape, from the real binary.

use std::process::Command;

mod common;
use common::assert_stdout_mentions;

fn conform(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtio-lm"))
        .arg("conform")
        .args(args)
        .output()
        .unwrap()
}

/// 1.4 device parts: `--json` prints one object `{"profile", "device", "rows": [{"section",
/// "statement", "result", "observed"}]}` whose rows all pass (or are n/a) on the built-in
/// device; the table names the profile and each statement.
#[test]
fn conform_prints_rows_as_table_and_json() {
    let out = conform(&["--profile", "v1.4", "--device", "rng", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["profile"], "v1.4");
    assert_eq!(report["device"], "rng");
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() >= 15);
    for row in rows {
        for key in ["section", "statement", "observed"] {
            assert!(row[key].is_string(), "{row}");
        }
        assert!(
            ["pass", "n/a"].contains(&row["result"].as_str().unwrap()),
            "{row}"
        );
    }
    assert_stdout_mentions(
        conform(&["--profile", "seeds", "--device", "blk"]),
        &["profile seeds, device blk", "pass 003"],
    );
    assert!(!conform(&["--profile", "v2"]).status.success());
}
