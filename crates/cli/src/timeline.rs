//! `--timeline FILE.svg`: a migration drawn from its report — the pre-copy rounds (bytes each
//! sent, over time), the guest's dirty rate and the stream's rate per round, and the downtime
//! phases as bars with the boundaries named after QEMU's downtime checkpoints
//! (`src-downtime-start`, `src-vm-stopped`, `src-iterable-saved`, `src-non-iterable-saved`,
//! `dst-precopy-loadvm-completed`, `src-downtime-end`).
//!
//! plotters with only its SVG backend: text goes into the SVG as `<text>` elements and is
//! measured with plotters' built-in estimate, so no font library is needed.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde_json::Value;

use crate::summary::num;

/// One pre-copy round as the report lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// Round number.
    pub round: u64,
    /// The pages sent after the stop.
    pub final_round: bool,
    /// Start, ms since the migration began.
    pub start_ms: f64,
    /// End, ms.
    pub end_ms: f64,
    /// Wire bytes.
    pub bytes: f64,
    /// Pages sent.
    pub pages: f64,
    /// Guest dirty rate, bytes/s.
    pub dirty_rate: f64,
    /// Stream rate, bytes/s.
    pub transfer_rate: f64,
}

/// One phase span.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// Start, ms since the migration began.
    pub start_ms: f64,
    /// End, ms.
    pub end_ms: f64,
}

/// The rounds and phases of a report.
pub fn parse(report: &Value) -> (Vec<Round>, Vec<Phase>) {
    let list = |field: &str| {
        report
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let rounds = list("rounds")
        .iter()
        .map(|r| Round {
            round: r.get("round").and_then(Value::as_u64).unwrap_or(0),
            final_round: r.get("final_round").and_then(Value::as_bool) == Some(true),
            start_ms: num(r, "start_ms"),
            end_ms: num(r, "end_ms"),
            bytes: num(r, "bytes"),
            pages: num(r, "pages"),
            dirty_rate: num(r, "dirty_rate"),
            transfer_rate: num(r, "transfer_rate"),
        })
        .collect();
    let phases = list("phases")
        .iter()
        .map(|p| Phase {
            name: p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            start_ms: num(p, "start_ms"),
            end_ms: num(p, "end_ms"),
        })
        .collect();
    (rounds, phases)
}

/// QEMU's downtime checkpoints placed on our phases: each is the end (or, for the first,
/// the start) of the first phase of its list the report has.
const CHECKPOINTS: &[(&str, &[&str], bool)] = &[
    ("src-downtime-start", &["src-vm-stop"], false),
    ("src-vm-stopped", &["src-device-stop", "src-vm-stop"], true),
    ("src-iterable-saved", &["final-memory"], true),
    (
        "src-non-iterable-saved",
        &["vcpu-state", "device-state"],
        true,
    ),
    ("dst-precopy-loadvm-completed", &["dst-load"], true),
    ("src-downtime-end", &["commit"], true),
];

/// The checkpoints found in `phases`, with their times.
pub fn checkpoints(phases: &[Phase]) -> Vec<(&'static str, f64)> {
    CHECKPOINTS
        .iter()
        .filter_map(|&(checkpoint, names, at_end)| {
            let p = names
                .iter()
                .find_map(|n| phases.iter().find(|p| p.name == *n))?;
            Some((checkpoint, if at_end { p.end_ms } else { p.start_ms }))
        })
        .collect()
}

const MIB: f64 = (1u64 << 20) as f64;

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("timeline: {e:?}")
}

/// Writes the timeline of `report` to `path` (SVG).
pub fn write(path: &Path, report: &Value) -> anyhow::Result<()> {
    let svg = render(report)?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
}

/// The timeline of `report` as an SVG document.
pub fn render(report: &Value) -> anyhow::Result<String> {
    let (rounds, phases) = parse(report);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 820)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let title = format!(
            "virtio-lm migration: {} MiB, {} rings, {} in-flight, downtime {:.2} ms, {}",
            num(report, "memory_bytes") / MIB,
            report["ring"].as_str().unwrap_or("?"),
            report["inflight"].as_str().unwrap_or("?"),
            num(report, "downtime_ms"),
            report["result"].as_str().unwrap_or("?"),
        );
        let root = root.titled(&title, ("sans-serif", 18)).map_err(plot_err)?;
        let areas = root.split_evenly((3, 1));
        draw_rounds(&areas[0], &rounds)?;
        draw_rates(&areas[1], &rounds)?;
        draw_phases(&areas[2], &phases)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn end_of(rounds: &[Round]) -> f64 {
    rounds.iter().map(|r| r.end_ms).fold(1.0, f64::max)
}

type RoundChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The rounds' charts share one time axis (from 0 past the last round) and one layout; only
/// the caption and the y axis differ.
fn round_chart<'a, 'b>(
    area: &'a Area<'b>,
    rounds: &[Round],
    caption: &str,
    y_desc: &str,
    top: f64,
) -> anyhow::Result<RoundChart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end_of(rounds) * 1.15, 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("ms since the migration began")
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

fn draw_rounds(area: &Area<'_>, rounds: &[Round]) -> anyhow::Result<()> {
    let top = rounds.iter().map(|r| r.bytes / MIB).fold(0.1, f64::max) * 1.15;
    let mut chart = round_chart(
        area,
        rounds,
        "pre-copy rounds: MiB sent (label: dirty pages sent)",
        "MiB",
        top,
    )?;
    chart
        .draw_series(rounds.iter().map(|r| {
            let color = if r.final_round { RED } else { BLUE };
            Rectangle::new(
                [(r.start_ms, 0.0), (r.end_ms.max(r.start_ms), r.bytes / MIB)],
                color.mix(0.5).filled(),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(rounds.iter().map(|r| {
            let label = if r.final_round {
                format!("final: {} pages", r.pages)
            } else {
                format!("#{}: {} pages", r.round, r.pages)
            };
            Text::new(
                label,
                (r.start_ms, r.bytes / MIB + top * 0.03),
                ("sans-serif", 11),
            )
        }))
        .map_err(plot_err)?;
    Ok(())
}

fn draw_rates(area: &Area<'_>, rounds: &[Round]) -> anyhow::Result<()> {
    let top = rounds
        .iter()
        .map(|r| r.dirty_rate.max(r.transfer_rate) / MIB)
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = round_chart(
        area,
        rounds,
        "per round: stream rate (blue) and guest dirty rate (red), MiB/s",
        "MiB/s",
        top,
    )?;
    let mid = |r: &Round| (r.start_ms + r.end_ms) / 2.0;
    for (color, rate) in [
        (BLUE, (|r: &Round| r.transfer_rate) as fn(&Round) -> f64),
        (RED, |r: &Round| r.dirty_rate),
    ] {
        let points: Vec<_> = rounds.iter().map(|r| (mid(r), rate(r) / MIB)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    Ok(())
}

fn draw_phases(area: &Area<'_>, phases: &[Phase]) -> anyhow::Result<()> {
    // The downtime phases only: the pre-copy would dwarf them.
    let shown: Vec<&Phase> = phases.iter().filter(|p| p.name != "precopy").collect();
    let from = shown.iter().map(|p| p.start_ms).fold(f64::MAX, f64::min);
    let from = if from == f64::MAX { 0.0 } else { from };
    let to = shown.iter().map(|p| p.end_ms).fold(from + 0.01, f64::max);
    let span = to - from;
    let rows = shown.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "downtime phases (ms since the migration began; dashed: QEMU checkpoints)",
            ("sans-serif", 14),
        )
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(from - span * 0.02..to + span * 0.35, 0.0..rows + 2.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ms")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(shown.iter().enumerate().map(|(i, p)| {
            let y = rows - i as f64;
            Rectangle::new(
                [(p.start_ms, y - 0.35), (p.end_ms.max(p.start_ms), y + 0.35)],
                Palette99::pick(i).mix(0.7).filled(),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(shown.iter().enumerate().map(|(i, p)| {
            let y = rows - i as f64;
            let label = format!("{} {:.3} ms", p.name, p.end_ms - p.start_ms);
            Text::new(label, (p.end_ms + span * 0.01, y + 0.2), ("sans-serif", 11))
        }))
        .map_err(plot_err)?;
    let marks = checkpoints(phases);
    for (i, &(name, at)) in marks.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new(
                [(at, 0.0), (at, rows + 0.6)],
                4,
                3,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?;
        let y = rows + 1.9 - (i % 3) as f64 * 0.45;
        chart
            .draw_series(std::iter::once(Text::new(
                name.to_string(),
                (at, y),
                ("sans-serif", 10),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report() -> Value {
        json!({
            "memory_bytes": 64u64 << 20, "ring": "packed", "inflight": "transfer",
            "downtime_ms": 3.5, "result": "ok",
            "rounds": [
                {"round": 0, "final_round": false, "start_ms": 0.0, "end_ms": 80.0, "pages": 16384,
                 "bytes": 64u64 << 20, "dirty_rate": 10u64 << 20, "transfer_rate": 800u64 << 20},
                {"round": 1, "final_round": false, "start_ms": 80.0, "end_ms": 85.0, "pages": 200,
                 "bytes": 800_000, "dirty_rate": 9u64 << 20, "transfer_rate": 700u64 << 20},
                {"round": 2, "final_round": true, "start_ms": 86.0, "end_ms": 86.5, "pages": 20,
                 "bytes": 80_000, "dirty_rate": 0, "transfer_rate": 600u64 << 20}
            ],
            "phases": [
                {"name": "precopy", "start_ms": 0.0, "end_ms": 85.0},
                {"name": "src-vm-stop", "start_ms": 85.0, "end_ms": 85.2},
                {"name": "src-device-stop", "start_ms": 85.2, "end_ms": 85.6},
                {"name": "final-memory", "start_ms": 85.6, "end_ms": 86.5},
                {"name": "device-state", "start_ms": 86.5, "end_ms": 86.8},
                {"name": "vcpu-state", "start_ms": 86.8, "end_ms": 86.9},
                {"name": "dst-load", "start_ms": 86.9, "end_ms": 88.0},
                {"name": "commit", "start_ms": 88.0, "end_ms": 88.5}
            ]
        })
    }

    /// The SVG names every phase and every QEMU checkpoint, as text (no font library).
    #[test]
    fn the_svg_names_phases_and_checkpoints() {
        let svg = render(&report()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for name in [
            "final-memory",
            "dst-load",
            "src-vm-stopped",
            "src-downtime-end",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.contains("#1: 200 pages"));
        assert_eq!(checkpoints(&parse(&report()).1).len(), 6);
    }

    /// A report without rounds or phases (a migration that failed early) still draws.
    #[test]
    fn an_empty_report_draws() {
        let svg = render(&json!({"result": "failed: refused"})).unwrap();
        assert!(svg.contains("failed: refused"));
    }
}
