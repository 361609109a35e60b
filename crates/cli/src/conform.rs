//! `virtio-lm conform`: runs the normative checks live against a device built in-process —
//! an SR-IOV owner with two members of the chosen type — and prints one row per statement
//! (see [`virtio_lm_devices::conformance`]). Exits non-zero when a row fails.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::json;
use virtio_lm_devices::conformance::Defects;
use virtio_lm_devices::conformance::{run as run_checks, DeviceKind, Outcome, Row};
use virtio_lm_spec::Profile;

use crate::args::parse_profile;

/// The device types `conform` can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// virtio-blk over a temporary image.
    Blk,
    /// virtio-net over a loopback UDP tunnel.
    Net,
    /// virtio-rng.
    Rng,
}

impl From<DeviceArg> for DeviceKind {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Blk => DeviceKind::Blk,
            DeviceArg::Net => DeviceKind::Net,
            DeviceArg::Rng => DeviceKind::Rng,
        }
    }
}

/// Arguments of `conform`.
#[derive(Debug, Args)]
pub struct ConformArgs {
    /// Numbering profile: `seeds` (the proposals) or `v1.4` (the published specification).
    #[arg(long, default_value = "v1.4", value_parser = parse_profile)]
    pub profile: Profile,
    /// Device type of the members.
    #[arg(long, value_enum, default_value = "rng")]
    pub device: DeviceArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The report as JSON: `{"profile", "device", "rows": [{"section", "statement", "result",
/// "observed"}]}`.
pub fn to_json(profile: Profile, device: DeviceKind, rows: &[Row]) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "section": r.section,
                "statement": r.statement,
                "result": r.result.name(),
                "observed": r.observed,
            })
        })
        .collect();
    json!({ "profile": profile.name(), "device": device.name(), "rows": rows })
}

/// Runs `conform`.
pub fn run(args: &ConformArgs) -> anyhow::Result<()> {
    let kind = DeviceKind::from(args.device);
    let rows = run_checks(args.profile, kind, Defects::default())
        .map_err(anyhow::Error::msg)
        .context("building the device under test")?;
    if args.json {
        println!("{}", to_json(args.profile, kind, &rows));
    } else {
        println!("profile {}, device {}", args.profile, kind.name());
        for row in &rows {
            println!("{row}");
        }
    }
    let failed = rows.iter().filter(|r| r.result == Outcome::Fail).count();
    if failed > 0 {
        bail!("{failed} of {} statements failed", rows.len());
    }
    Ok(())
}
