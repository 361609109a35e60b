//! `virtio-lm inspect FILE`: decodes a device context (the bytes DEV_CTX_READ returns, spec-decisions
//! §5) into a readable listing, or JSON with `--json`. The framing is listed field by field
//! first, so a context that fails the semantic checks can still be looked at; any malformed input
//! ends in an error naming the byte offset, never a panic.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use virtio_lm_device::context::{decode, ContextReader, DeviceContext, Field};
use virtio_lm_queue::{RingPosition, SavedChain};
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
        let _ = write!(out, "  {} = {}", type_name(f.field_type), hex(&f.value));
        if let Some(text) = describe_device_field(f.field_type, &f.value) {
            let _ = write!(out, " ({text})");
        }
        let _ = writeln!(out);
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
        "config_generation": c.config_generation,
        "device_config": hex(&c.device_config),
        "config_msix_vector": c.config_msix_vector,
        "queues": queues,
        "device_fields": device_fields,
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
}
