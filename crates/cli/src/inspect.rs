//! `virtio-lm inspect FILE`: decodes a device context (the bytes DEV_CTX_READ returns, spec-decisions
//! §5) into a readable listing, or JSON with `--json`. The framing is listed field by field
//! first, so a context that fails the semantic checks can still be looked at; any malformed input
//! ends in an error naming the byte offset, never a panic.
//!
//! `FILE` may be `-` (standard input). At most [`MAX_INPUT_LEN`] bytes are read: anything longer
//! is refused before it is read whole, so `/dev/zero` or a runaway pipe cannot exhaust memory.
//! `--sample blk|net` builds a real device, drives it to DRIVER_OK, stops it and lists its
//! context — or, with `--output PATH`, writes the context bytes there (see [`sample`]).

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use virtio_lm_device::context::{decode, ContextReader, DeviceContext, Field, MAX_FIELD_LEN};
use virtio_lm_queue::{RingPosition, SavedChain};
use virtio_lm_spec::context::{padded_len, FieldType, FIELD_HEADER_LEN};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};

use crate::UsageError;

pub mod sample;

/// Largest input `inspect` reads: two maximal fields ([`MAX_FIELD_LEN`] each). Every context a
/// device of this project produces is far smaller (the largest, a virtio-net one with full
/// tables and in-flight chains, is tens of kilobytes), and the decoder refuses any single field
/// over [`MAX_FIELD_LEN`] anyway.
pub const MAX_INPUT_LEN: u64 = 2 * MAX_FIELD_LEN as u64;

/// Which device `--sample` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SampleKind {
    /// virtio-blk on a temporary 1 MiB image.
    Blk,
    /// virtio-net on a loopback UDP tunnel.
    Net,
}

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The context file (binary, as read with DEV_CTX_READ); `-` reads standard input.
    #[arg(required_unless_present = "sample", conflicts_with = "sample")]
    pub file: Option<PathBuf>,
    /// Print JSON instead of the listing.
    #[arg(long)]
    pub json: bool,
    /// Numbering profile for feature and status names (and of the device `--sample` builds):
    /// `seeds` or `v1.4`.
    #[arg(long, default_value = "seeds")]
    pub profile: Profile,
    /// Instead of reading a file, build this device, drive it to DRIVER_OK, stop it and use its
    /// context.
    #[arg(long, value_name = "DEVICE")]
    pub sample: Option<SampleKind>,
    /// With `--sample`: the sample negotiates the packed ring format (default split).
    #[arg(long)]
    pub packed: bool,
    /// With `--sample`: write the context bytes to PATH (`-`: standard output) instead of
    /// listing them.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Runs `inspect`, printing to stdout (warnings to stderr).
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    if args.sample.is_none() && (args.packed || args.output.is_some()) {
        return Err(UsageError("--packed and --output only go with --sample".into()).into());
    }
    let bytes = match (args.sample, &args.file) {
        (Some(kind), _) => sample::build(kind, args.profile, args.packed)?,
        (None, Some(file)) => read_bounded(file)?,
        (None, None) => bail!("no context file given"),
    };
    if let Some(path) = &args.output {
        return write_output(path, &bytes);
    }
    let report = inspect_report(&bytes, args.json, args.profile)?;
    for warning in &report.warnings {
        eprintln!("virtio-lm inspect: warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing standard output")
}

fn write_output(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).context("writing standard output")?;
        return out.flush().context("writing standard output");
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Reads `path` (`-`: standard input), refusing more than [`MAX_INPUT_LEN`] bytes without
/// reading them all, and an empty input.
pub fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let bytes = if stdin {
        read_at_most(std::io::stdin().lock()).context("reading standard input")?
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            bail!("{name} is a directory, not a device context file");
        }
        read_at_most(file).with_context(|| format!("reading {name}"))?
    };
    match bytes {
        None => bail!(
            "{name} is larger than {MAX_INPUT_LEN} bytes: no device context is that large (refused without reading it whole)"
        ),
        Some(b) if b.is_empty() => bail!(
            "{name} is empty: a device context holds at least a START_MARKER and an END_MARKER"
        ),
        Some(b) => Ok(b),
    }
}

/// Up to [`MAX_INPUT_LEN`] bytes of `input`; `None` if there are more.
fn read_at_most(input: impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    input.take(MAX_INPUT_LEN + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_INPUT_LEN).then_some(bytes))
}

/// What `inspect` prints: the listing (or JSON) and warnings for standard error.
#[derive(Debug)]
pub struct Report {
    /// The listing or the JSON text.
    pub text: String,
    /// Doubts about the reading, e.g. names from the wrong numbering profile.
    pub warnings: Vec<String>,
}

/// Decodes `bytes` and renders the listing (or JSON). Fails with the first framing or
/// semantic error, which names its byte offset.
pub fn inspect(bytes: &[u8], as_json: bool, profile: Profile) -> anyhow::Result<String> {
    inspect_report(bytes, as_json, profile).map(|r| r.text)
}

/// [`inspect`] with its warnings.
pub fn inspect_report(bytes: &[u8], as_json: bool, profile: Profile) -> anyhow::Result<Report> {
    if bytes.is_empty() {
        bail!("empty input: a device context holds at least a START_MARKER and an END_MARKER");
    }
    let mut fields = Vec::new();
    for field in ContextReader::new(bytes) {
        let field = field.map_err(|e| anyhow::anyhow!("malformed context: {e}"))?;
        let end = field.field_type == FieldType::END_MARKER;
        let after = field.offset + FIELD_HEADER_LEN + padded_len(field.value.len());
        fields.push(field);
        if end && after < bytes.len() {
            bail!(
                "malformed context: {} trailing byte(s) after END_MARKER, from byte {after}",
                bytes.len() - after
            );
        }
        if end {
            break;
        }
    }
    let context = decode(bytes).map_err(|e| anyhow::anyhow!("invalid context: {e}"))?;
    let warnings: Vec<String> = profile_warning(&context, profile).into_iter().collect();
    let text = if as_json {
        let mut text = serde_json::to_string_pretty(&to_json(
            bytes.len(),
            &fields,
            &context,
            profile,
            &warnings,
        ))?;
        text.push('\n');
        text
    } else {
        listing(bytes.len(), &fields, &context, profile)
    };
    Ok(Report { text, warnings })
}

/// Bits 24–63 of `features` and the status bits that `profile` leaves unnamed: what a context
/// saved under the other profile shows (spec-decisions §1: the profiles put DEVICE_STOP,
/// QUEUE_STATE and SUSPEND on different bits, and v1.4 has no DEVICE_STOPPED).
fn unnamed(c: &DeviceContext, profile: Profile) -> u32 {
    let transport = !((1u64 << 24) - 1);
    let features = c.device_features.first().copied().unwrap_or(0);
    let status = DeviceStatus::from_bits_retain(c.device_status);
    (features & transport & !profile.all_features_mask()).count_ones()
        + (status & !profile.status_mask()).bits().count_ones()
}

/// A warning when the context reads better under the other profile.
fn profile_warning(c: &DeviceContext, profile: Profile) -> Option<String> {
    let other = Profile::ALL.into_iter().find(|p| *p != profile)?;
    let (here, there) = (unnamed(c, profile), unnamed(c, other));
    (here > there).then(|| {
        format!(
            "{here} feature/status bit(s) have no name in the {profile} profile but {there} in {other}: \
             this context was probably saved under {other} (try --profile {other})"
        )
    })
}

fn type_name(t: FieldType) -> String {
    match t.name() {
        Some(name) => name.to_string(),
        None if t.0 == 0x0113 => "VQ_INFLIGHT_CHAINS".to_string(),
        None => format!("{:#06x}", t.0),
    }
}

/// The meaning of a blk or net device-specific value (spec-decisions §5 tables), when it is
/// well-formed; `None` for anything else (the hex is always shown).
fn describe_device_field(t: FieldType, v: &[u8]) -> Option<String> {
    let le16 = |at: usize| v.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let mac = |m: &[u8]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    match (t, v) {
        (FieldType::BLK_WRITEBACK, [0]) => Some("writethrough".into()),
        (FieldType::BLK_WRITEBACK, [1]) => Some("writeback".into()),
        (FieldType::NET_RX_MODE, [bits]) => {
            let names = [
                "PROMISC", "ALLMULTI", "ALLUNI", "NOMULTI", "NOUNI", "NOBCAST",
            ];
            let on: Vec<&str> = (0..6)
                .filter(|i| bits >> i & 1 != 0)
                .map(|i| names[i])
                .collect();
            Some(format!("modes [{}]", on.join(", ")))
        }
        (FieldType::NET_MAC_TABLE, _) if v.len() >= 12 => {
            let flags = v[6];
            let mut words = vec![format!("mac {}", mac(&v[..6]))];
            for (bit, name) in [
                (1, "unicast overflow"),
                (2, "multicast overflow"),
                (4, "set by the driver"),
            ] {
                if flags & bit != 0 {
                    words.push(name.into());
                }
            }
            words.push(format!("{} unicast, {} multicast", le16(8)?, le16(10)?));
            Some(words.join(", "))
        }
        (FieldType::NET_VLAN_TABLE, _) if v.len() == 512 => {
            let vids = v.iter().map(|b| b.count_ones()).sum::<u32>();
            Some(format!("{vids} VLAN id(s)"))
        }
        (FieldType::NET_MQ_PAIRS, [_, _]) => Some(format!("{} queue pair(s)", le16(0)?)),
        (FieldType::NET_ANNOUNCE, [a @ (0 | 1)]) => Some(
            if *a == 1 {
                "announce pending"
            } else {
                "no announce"
            }
            .into(),
        ),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`hex`] of the first 32 bytes, and how many more there are (the listing is for people;
/// `--json` has every byte).
fn hex_short(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    match bytes.get(SHOWN..) {
        Some(rest) if !rest.is_empty() => {
            format!("{}… (+{} bytes)", hex(&bytes[..SHOWN]), rest.len())
        }
        _ => hex(bytes),
    }
}

fn feature_names(words: &[u64], profile: Profile) -> Vec<String> {
    let low = words.first().copied().unwrap_or(0);
    let named = profile.decode(low);
    let mut names: Vec<String> = named.iter().map(|f| f.name().to_string()).collect();
    let known = named
        .iter()
        .fold(0u64, |m, f| m | profile.mask(*f).unwrap_or(0));
    for bit in (0..64).filter(|b| (low & !known) >> b & 1 != 0) {
        names.push(format!("bit {bit}"));
    }
    for (word, value) in words.iter().enumerate().skip(1) {
        for bit in (0..64).filter(|b| value >> b & 1 != 0) {
            names.push(format!("bit {}", word * 64 + bit));
        }
    }
    names
}

/// A seed 001 position: in a packed ring bit 15 is the wrap counter; a split ring has none (its
/// state is the plain 16-bit index).
fn position(state: u16, packed: bool) -> String {
    if !packed {
        return format!("{state}");
    }
    let p = RingPosition::from_state(state);
    format!(
        "{state:#06x} (index {}, wrap {})",
        p.index,
        u8::from(p.wrap_counter)
    )
}

/// Whether the context's driver negotiated the packed ring (VIRTIO_F_RING_PACKED has bit 34 in
/// both profiles).
fn is_packed(c: &DeviceContext, profile: Profile) -> bool {
    let driver = c.driver_features.first().copied().unwrap_or(0);
    profile
        .mask(Feature::RingPacked)
        .is_some_and(|m| driver & m != 0)
}

/// The status bits by name, e.g. `ACKNOWLEDGE | DRIVER`; bits the profile does not define print
/// as `unassigned 0x20`; no bit prints as `RESET (0)`.
fn status_names(status: u8, profile: Profile) -> String {
    let status = DeviceStatus::from_bits_retain(status);
    if status.is_empty() {
        return "RESET (0)".into();
    }
    let known = status & profile.status_mask();
    let mut names: Vec<String> = known.iter_names().map(|(n, _)| n.to_string()).collect();
    for bit in (0..8).map(|b| 1u8 << b) {
        if (status.bits() & !known.bits()) & bit != 0 {
            names.push(format!("unassigned {bit:#04x}"));
        }
    }
    names.join(" | ")
}

fn chain_summary(chain: &SavedChain) -> String {
    format!(
        "id {} ({} slot(s), {} buffer(s), {} readable / {} writable bytes)",
        chain.id,
        chain.ring_slots,
        chain.segments.len(),
        chain.readable_len(),
        chain.writable_len()
    )
}

fn listing(len: usize, fields: &[Field<'_>], c: &DeviceContext, profile: Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "device context: {len} bytes, {} fields", fields.len());
    let _ = writeln!(
        out,
        "{:>8}  {:<22} {:<9} {:>7}",
        "offset", "type", "flags", "length"
    );
    for f in fields {
        let flags = if f.is_optional() { "optional" } else { "" };
        let _ = writeln!(
            out,
            "{:>8}  {:<22} {:<9} {:>7}",
            f.offset,
            type_name(f.field_type),
            flags,
            f.value.len()
        );
    }
    let _ = writeln!(out, "\ndecoded ({profile} numbering):");
    let _ = writeln!(
        out,
        "  device features: {}",
        feature_names(&c.device_features, profile).join(", ")
    );
    let _ = writeln!(
        out,
        "  driver features: {}",
        feature_names(&c.driver_features, profile).join(", ")
    );
    let _ = writeln!(
        out,
        "  device status:   {:#04x} {}",
        c.device_status,
        status_names(c.device_status, profile)
    );
    let _ = writeln!(out, "  config generation: {}", c.config_generation);
    let _ = writeln!(
        out,
        "  device config: {} bytes {}",
        c.device_config.len(),
        hex(&c.device_config)
    );
    let _ = writeln!(out, "  config msix vector: {:#06x}", c.config_msix_vector);
    let packed = is_packed(c, profile);
    let _ = writeln!(
        out,
        "  ring format: {}",
        if packed { "packed" } else { "split" }
    );
    for (index, q) in c.queues.iter().enumerate() {
        let v = &q.config;
        let _ = writeln!(
            out,
            "  queue {index}: size {}, {}, desc {:#x}, driver {:#x}, device {:#x}, msix {:#06x}",
            v.size,
            if v.enabled { "enabled" } else { "disabled" },
            v.desc,
            v.driver,
            v.device,
            v.msix_vector
        );
        let s = &q.state;
        let _ = writeln!(
            out,
            "    avail state {}, used state {}, notification owed: {}",
            position(s.avail_state, packed),
            position(s.used_state, packed),
            if s.notification_owed { "yes" } else { "no" }
        );
        for chain in &s.inflight {
            let _ = writeln!(out, "    in flight: {}", chain_summary(chain));
        }
    }
    for f in &c.device_fields {
        let _ = write!(
            out,
            "  {} = {}",
            type_name(f.field_type),
            hex_short(&f.value)
        );
        if let Some(text) = describe_device_field(f.field_type, &f.value) {
            let _ = write!(out, " ({text})");
        }
        let _ = writeln!(out);
    }
    out
}

fn to_json(
    len: usize,
    fields: &[Field<'_>],
    c: &DeviceContext,
    profile: Profile,
    warnings: &[String],
) -> Value {
    let fields: Vec<Value> = fields
        .iter()
        .map(|f| json!({"offset": f.offset, "type": type_name(f.field_type), "type_id": f.field_type.0, "optional": f.is_optional(), "length": f.value.len()}))
        .collect();
    let queues: Vec<Value> = c
        .queues
        .iter()
        .enumerate()
        .map(|(index, q)| {
            let inflight: Vec<Value> = q
                .state
                .inflight
                .iter()
                .map(|chain| {
                    let segments: Vec<Value> = chain
                        .segments
                        .iter()
                        .map(|s| json!({"addr": s.addr.0, "len": s.len, "writable": s.writable}))
                        .collect();
                    json!({"id": chain.id, "ring_slots": chain.ring_slots, "segments": segments})
                })
                .collect();
            json!({
                "index": index,
                "size": q.config.size,
                "enabled": q.config.enabled,
                "msix_vector": q.config.msix_vector,
                "desc": q.config.desc,
                "driver": q.config.driver,
                "device": q.config.device,
                "avail_state": q.state.avail_state,
                "used_state": q.state.used_state,
                "notification_owed": q.state.notification_owed,
                "inflight": inflight,
            })
        })
        .collect();
    let device_fields: Vec<Value> = c
        .device_fields
        .iter()
        .map(|f| json!({"type": type_name(f.field_type), "type_id": f.field_type.0, "flags": f.flags, "value": hex(&f.value), "decoded": describe_device_field(f.field_type, &f.value)}))
        .collect();
    json!({
        "length": len,
        "profile": profile.to_string(),
        "fields": fields,
        "device_features": c.device_features,
        "device_feature_names": feature_names(&c.device_features, profile),
        "driver_features": c.driver_features,
        "driver_feature_names": feature_names(&c.driver_features, profile),
        "device_status": c.device_status,
        "device_status_names": status_names(c.device_status, profile),
        "ring_format": if is_packed(c, profile) { "packed" } else { "split" },
        "config_generation": c.config_generation,
        "device_config": hex(&c.device_config),
        "config_msix_vector": c.config_msix_vector,
        "queues": queues,
        "device_fields": device_fields,
        "warnings": warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blk and net device-specific values are decoded by name (spec-decisions §5 tables),
    /// including NET_MAC_TABLE's "set by the driver" flag; malformed values are not described.
    #[test]
    fn device_fields_are_described() {
        let d = describe_device_field;
        assert_eq!(d(FieldType::BLK_WRITEBACK, &[1]).unwrap(), "writeback");
        assert_eq!(d(FieldType::BLK_WRITEBACK, &[0]).unwrap(), "writethrough");
        assert_eq!(d(FieldType::BLK_WRITEBACK, &[2]), None);
        let table = [2, 0xaa, 0, 0, 0, 1, 4, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 9];
        assert_eq!(
            d(FieldType::NET_MAC_TABLE, &table).unwrap(),
            "mac 02:aa:00:00:00:01, set by the driver, 1 unicast, 0 multicast"
        );
        assert_eq!(d(FieldType::NET_MAC_TABLE, &table[..11]), None);
        assert_eq!(
            d(FieldType::NET_RX_MODE, &[0b10_0001]).unwrap(),
            "modes [PROMISC, NOBCAST]"
        );
        assert_eq!(
            d(FieldType::NET_MQ_PAIRS, &[3, 0]).unwrap(),
            "3 queue pair(s)"
        );
        assert_eq!(
            d(FieldType::NET_ANNOUNCE, &[1]).unwrap(),
            "announce pending"
        );
        let mut vlans = [0u8; 512];
        vlans[1] = 0b11;
        assert_eq!(
            d(FieldType::NET_VLAN_TABLE, &vlans).unwrap(),
            "2 VLAN id(s)"
        );
        assert_eq!(d(FieldType(0x0280), &[1]), None);
    }

    /// Status by flag names; v1.4 has no DEVICE_STOPPED (spec-decisions §1), so its bit prints
    /// as unassigned there. A split position is a plain index; a packed one shows bit 15, the
    /// wrap counter (seed 001).
    #[test]
    fn status_and_positions_read_as_people_write_them() {
        assert_eq!(status_names(0, Profile::Seeds), "RESET (0)");
        assert_eq!(
            status_names(0x27, Profile::Seeds),
            "ACKNOWLEDGE | DRIVER | DRIVER_OK | DEVICE_STOPPED"
        );
        assert_eq!(
            status_names(0x27, Profile::V1_4),
            "ACKNOWLEDGE | DRIVER | DRIVER_OK | unassigned 0x20"
        );
        assert_eq!(position(0x8005, false), "32773");
        assert_eq!(position(0x8005, true), "0x8005 (index 5, wrap 1)");
        assert_eq!(
            hex_short(&[0xab; 33]),
            format!("{}… (+1 bytes)", "ab".repeat(32))
        );
    }
}
