//! The human-readable summary of a migration report (the engine's `MigrationReport` as the VM
//! sent it over the control socket, in JSON), printed by `migrate` and `demo` without
//! `--json`.

use std::fmt::Write;

use serde_json::Value;

/// A number field of the report (0 if absent).
pub fn num(report: &Value, field: &str) -> f64 {
    report.get(field).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A string field of the report ("" if absent).
pub fn text<'a>(report: &'a Value, field: &str) -> &'a str {
    report.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}

/// The summary lines. `with_workloads`: the verification counts are known (the demo, which
/// asked the destination); `migrate` alone only knows the migration's own figures.
pub fn render(report: &Value, with_workloads: bool) -> String {
    let mut s = String::new();
    let n = |f: &str| num(report, f);
    let _ = writeln!(
        s,
        "migration {}: {} guest, {} rings, in-flight requests {}, strategy {}",
        text(report, "result"),
        mib(n("memory_bytes")),
        text(report, "ring"),
        text(report, "inflight"),
        text(report, "strategy"),
    );
    let _ = writeln!(
        s,
        "  total {:.1} ms; downtime {:.2} ms (device {:.3} ms){}",
        n("total_ms"),
        n("downtime_ms"),
        n("device_downtime_ms"),
        if with_workloads {
            format!("; longest guest stall {:.2} ms", n("guest_stall_ms"))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  downtime phases: stop {:.2} ms, final memory {:.2} ms, device state {:.2} ms, restore {:.2} ms",
        n("stop_ms"),
        n("final_memory_ms"),
        n("device_state_ms"),
        n("restore_ms"),
    );
    let _ = writeln!(
        s,
        "  pre-copy rounds {}, {} on the wire, device contexts {} bytes",
        n("precopy_rounds"),
        mib(n("bytes_sent")),
        n("device_context_bytes"),
    );
    if with_workloads {
        let _ = writeln!(
            s,
            "  guest requests: {} completed, {} verified; lost {}, duplicated {}, corrupted {}; \
             net frames lost on the wire {}",
            n("requests_completed"),
            n("requests_verified"),
            n("lost"),
            n("duplicated"),
            n("corrupted"),
            n("frames_lost_on_wire"),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_names_the_figures() {
        let report = json!({"result": "ok", "memory_bytes": 256u64 << 20, "ring": "split",
            "inflight": "drain", "strategy": "admin", "downtime_ms": 4.25, "lost": 0});
        let s = render(&report, true);
        assert!(
            s.starts_with("migration ok: 256.0 MiB guest, split rings"),
            "{s}"
        );
        assert!(
            s.contains("downtime 4.25 ms") && s.contains("lost 0"),
            "{s}"
        );
        assert!(!render(&report, false).contains("lost"));
    }
}
