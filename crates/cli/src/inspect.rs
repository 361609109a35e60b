//! `virtio-lm inspect FILE`: decodes a device context (the bytes DEV_CTX_READ returns, spec-notes
//! §5) into a readable listing, or JSON with `--json`. The framing is listed field by field
//! first, so a context that fails the semantic checks can still be looked at; any malformed input
//! ends in an error naming the byte offset, never a panic.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use virtio_lm_device::context::{decode, ContextReader, DeviceContext, Field};
use virtio_lm_queue::{DescriptorChain, RingPosition};
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::{DeviceStatus, Profile};

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The context file (binary, as read with DEV_CTX_READ).
    pub file: PathBuf,
    /// Print JSON instead of the listing.
    #[arg(long)]
    pub json: bool,
    /// Numbering profile for feature names: `seeds` or `v1.4`.
    #[arg(long, default_value = "seeds")]
    pub profile: Profile,
}

/// Runs `inspect`, printing to stdout.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    print!("{}", inspect(&bytes, args.json, args.profile)?);
    Ok(())
}

/// Decodes `bytes` and renders the listing (or JSON). Fails with the first framing or
/// semantic error, which names its byte offset.
pub fn inspect(bytes: &[u8], as_json: bool, profile: Profile) -> anyhow::Result<String> {
    let mut fields = Vec::new();
    for field in ContextReader::new(bytes) {
        match field {
            Ok(field) => fields.push(field),
            Err(e) => bail!("malformed context: {e}"),
        }
    }
    let context = decode(bytes).map_err(|e| anyhow::anyhow!("invalid context: {e}"))?;
    Ok(if as_json {
        let mut text =
            serde_json::to_string_pretty(&to_json(bytes.len(), &fields, &context, profile))?;
        text.push('\n');
        text
    } else {
        listing(bytes.len(), &fields, &context, profile)
    })
}

fn type_name(t: FieldType) -> String {
    match t.name() {
        Some(name) => name.to_string(),
        None if t.0 == 0x0113 => "VQ_INFLIGHT_CHAINS".to_string(),
        None => format!("{:#06x}", t.0),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

fn position(state: u16) -> String {
    let p = RingPosition::from_state(state);
    format!(
        "{state:#06x} (index {}, wrap {})",
        p.index,
        u8::from(p.wrap_counter)
    )
}

fn chain_summary(chain: &DescriptorChain) -> String {
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
        "  device status:   {:#04x} {:?}",
        c.device_status,
        DeviceStatus::from_bits_retain(c.device_status)
    );
    let _ = writeln!(out, "  config generation: {}", c.config_generation);
    let _ = writeln!(
        out,
        "  device config: {} bytes {}",
        c.device_config.len(),
        hex(&c.device_config)
    );
    let _ = writeln!(out, "  config msix vector: {:#06x}", c.config_msix_vector);
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
            position(s.avail_state),
            position(s.used_state),
            if s.notification_owed { "yes" } else { "no" }
        );
        for chain in &s.inflight {
            let _ = writeln!(out, "    in flight: {}", chain_summary(chain));
        }
    }
    for f in &c.device_fields {
        let _ = writeln!(out, "  {} = {}", type_name(f.field_type), hex(&f.value));
    }
    out
}

fn to_json(len: usize, fields: &[Field<'_>], c: &DeviceContext, profile: Profile) -> Value {
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
        .map(|f| json!({"type": type_name(f.field_type), "type_id": f.field_type.0, "flags": f.flags, "value": hex(&f.value)}))
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
        "config_generation": c.config_generation,
        "device_config": hex(&c.device_config),
        "config_msix_vector": c.config_msix_vector,
        "queues": queues,
        "device_fields": device_fields,
    })
}
