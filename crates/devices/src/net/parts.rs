//! virtio-net's device parts (virtio 1.4 `VIRTIO_NET_DEV_PART_CVQ_CFG_PART`, type 0x200): the
//! control-queue state as the commands that would recreate it, one part per (class, command),
//! each value in that command's own data format (spec-decisions §17).
//!
//! | Selector | Value |
//! |---|---|
//! | RX PROMISC … NOBCAST (class 0, commands 0–5) | `u8 on` |
//! | MAC TABLE_SET (1, 0) | `le32 entries; u8 macs[entries][6]` unicast, then the same for multicast; an overflowed kind is sent as 65 entries, which overflows the receiver's table the same way |
//! | MAC ADDR_SET (1, 1) | `u8 mac[6]` |
//! | VLAN ADD (2, 0) | `le16 vids[]`: every accepted VLAN (the whole table) |
//! | ANNOUNCE ACK (3, 0) | empty; present only when no announcement is pending (replaying the ACK) |
//! | MQ VQ_PAIRS_SET (4, 0) | `le16 pairs` |
//!
//! Then this project's OPTIONAL NET_ANNOUNCE_PENDING part (0x5FF, `u8`: 1 while an
//! announcement waits for the driver's ANNOUNCE_ACK), so a pending announcement travels too;
//! a standard receiver ignores it (spec-decisions §28). RSS_CONFIG and HASH_CONFIG have no
//! part: the device offers neither RSS nor hash reports, so a mandatory part for them is
//! refused like any command the device does not know.
//!
//! Loading starts from the destination's own state and replays the parts over it; the
//! configuration space follows from the result (address, ANNOUNCE, the destination's
//! `max_virtqueue_pairs`), and the device's own state check then validates the whole.

use virtio_lm_device::context::DeviceContext;
use virtio_lm_pci::admin::DevicePartsCodec;
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::parts::{DevPartHdr, Part, NET_ANNOUNCE_PENDING, NET_CVQ_CFG, PART_F_OPTIONAL};

use super::config::{config_space, ctrl, features, offset, MAC_TABLE_ENTRIES, VLAN_IDS};
use super::filter::{is_multicast, Mac, MacTable};

/// The net codec of device parts.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetParts;

/// Bytes of the NET_MAC_TABLE context field before its entries, and its flags.
const TABLE_HEADER: usize = 12;
const UNI_OVERFLOW: u8 = 1;
const MULTI_OVERFLOW: u8 = 2;
const MAC_SET: u8 = 4;

/// The net state as plain values (the context fields' contents).
struct Cvq {
    mode: u8,
    mac: Mac,
    macs: MacTable,
    vlans: Vec<u8>,
    pairs: u16,
    announce: bool,
}

fn field(ctx: &DeviceContext, t: FieldType) -> &[u8] {
    ctx.device_fields
        .iter()
        .find(|f| f.field_type == t)
        .map_or(&[], |f| f.value.as_slice())
}

fn macs_of(bytes: &[u8]) -> Vec<Mac> {
    bytes
        .chunks_exact(6)
        .map(|c| c.try_into().unwrap_or_default())
        .collect()
}

impl Cvq {
    fn from_ctx(ctx: &DeviceContext) -> Self {
        let table = field(ctx, FieldType::NET_MAC_TABLE);
        let header = table.get(..TABLE_HEADER).unwrap_or(&[0; TABLE_HEADER]);
        let uni = usize::from(u16::from_le_bytes([header[8], header[9]]));
        let entries = macs_of(table.get(TABLE_HEADER..).unwrap_or_default());
        let split = uni.min(entries.len());
        let macs = MacTable {
            unicast: entries[..split].to_vec(),
            multicast: entries[split..].to_vec(),
            uni_overflow: header[6] & UNI_OVERFLOW != 0,
            multi_overflow: header[6] & MULTI_OVERFLOW != 0,
        };
        let pairs = field(ctx, FieldType::NET_MQ_PAIRS);
        Self {
            mode: field(ctx, FieldType::NET_RX_MODE)
                .first()
                .copied()
                .unwrap_or(0),
            mac: header[..6].try_into().unwrap_or_default(),
            macs,
            vlans: field(ctx, FieldType::NET_VLAN_TABLE).to_vec(),
            pairs: u16::from_le_bytes([
                pairs.first().copied().unwrap_or(1),
                pairs.get(1).copied().unwrap_or(0),
            ]),
            announce: field(ctx, FieldType::NET_ANNOUNCE).first() == Some(&1),
        }
    }
}

fn part(class: u8, command: u8, value: Vec<u8>) -> Part {
    Part::new(
        NET_CVQ_CFG,
        0,
        DevPartHdr::cvq_selector(class, command),
        value,
    )
}

/// One kind of the MAC table in TABLE_SET's format; an overflowed kind as one entry more
/// than any table holds.
fn table_kind(entries: &[Mac], overflow: bool, filler: Mac, out: &mut Vec<u8>) {
    let list: Vec<Mac> = if overflow {
        vec![filler; MAC_TABLE_ENTRIES + 1]
    } else {
        entries.to_vec()
    };
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for mac in &list {
        out.extend_from_slice(mac);
    }
}

/// Reads one TABLE_SET kind from `bytes`: its entries and the rest.
fn read_kind(bytes: &[u8]) -> Option<(Vec<Mac>, &[u8])> {
    let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let len = n.checked_mul(6)?;
    let body = bytes.get(4..4 + len)?;
    Some((macs_of(body), &bytes[4 + len..]))
}

impl DevicePartsCodec for NetParts {
    fn save(&self, ctx: &DeviceContext) -> Vec<Part> {
        let s = Cvq::from_ctx(ctx);
        let mut parts: Vec<Part> = (0..6)
            .map(|cmd| part(ctrl::CLASS_RX, cmd, vec![s.mode >> cmd & 1]))
            .collect();
        let mut table = Vec::new();
        table_kind(
            &s.macs.unicast,
            s.macs.uni_overflow,
            [2, 0, 0, 0, 0, 0],
            &mut table,
        );
        table_kind(
            &s.macs.multicast,
            s.macs.multi_overflow,
            [1, 0, 0x5e, 0, 0, 0],
            &mut table,
        );
        parts.push(part(ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, table));
        parts.push(part(ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, s.mac.to_vec()));
        let vids: Vec<u8> = (0..VLAN_IDS as u16)
            .filter(|&v| {
                s.vlans
                    .get(usize::from(v / 8))
                    .is_some_and(|b| b >> (v % 8) & 1 != 0)
            })
            .flat_map(u16::to_le_bytes)
            .collect();
        parts.push(part(ctrl::CLASS_VLAN, ctrl::VLAN_ADD, vids));
        if !s.announce {
            parts.push(part(ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK, Vec::new()));
        }
        parts.push(part(
            ctrl::CLASS_MQ,
            ctrl::MQ_VQ_PAIRS_SET,
            s.pairs.to_le_bytes().to_vec(),
        ));
        parts.push(Part::new(
            NET_ANNOUNCE_PENDING,
            PART_F_OPTIONAL,
            [0; 8],
            vec![u8::from(s.announce)],
        ));
        parts
    }

    fn load(&self, parts: &[Part], ctx: &mut DeviceContext) -> Result<(), &'static str> {
        let mut s = Cvq::from_ctx(ctx);
        let own: Mac = ctx
            .device_config
            .get(offset::MAC..offset::MAC + 6)
            .and_then(|m| m.try_into().ok())
            .unwrap_or_default();
        let own = if s.macs_mac_set(ctx) { s.mac } else { own };
        let max_pairs = ctx
            .device_config
            .get(offset::MAX_VIRTQUEUE_PAIRS..offset::MAX_VIRTQUEUE_PAIRS + 2)
            .map_or(1, |b| u16::from_le_bytes([b[0], b[1]]));
        for p in parts {
            let sel = p.hdr.selector;
            if p.hdr.part_type() == NET_ANNOUNCE_PENDING && sel == [0; 8] {
                s.announce = match p.value.as_slice() {
                    [0] => false,
                    [1] if announce_negotiated(ctx) => true,
                    [1] => return Err("an announcement pending without GUEST_ANNOUNCE"),
                    _ => return Err("NET_ANNOUNCE_PENDING part: not one byte 0 or 1"),
                };
                continue;
            }
            if p.hdr.part_type() != NET_CVQ_CFG || sel[2..] != [0; 6] {
                if p.hdr.is_optional() {
                    continue;
                }
                return Err("a net part this device does not know");
            }
            let v = p.value.as_slice();
            match (sel[0], sel[1]) {
                (ctrl::CLASS_RX, cmd @ 0..=5) => match v {
                    [on @ (0 | 1)] => s.mode = s.mode & !(1 << cmd) | on << cmd,
                    _ => return Err("RX part: not one byte 0 or 1"),
                },
                (ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET) => {
                    let (uni, rest) = read_kind(v).ok_or("MAC TABLE_SET part malformed")?;
                    let (multi, rest) = read_kind(rest).ok_or("MAC TABLE_SET part malformed")?;
                    if !rest.is_empty() {
                        return Err("MAC TABLE_SET part longer than its entries");
                    }
                    s.macs = MacTable::new(uni, multi);
                }
                (ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET) => {
                    let mac: Mac = v.try_into().map_err(|_| "MAC ADDR_SET part not 6 bytes")?;
                    if is_multicast(&mac) {
                        return Err("MAC ADDR_SET part is a multicast address");
                    }
                    s.mac = mac;
                }
                (ctrl::CLASS_VLAN, ctrl::VLAN_ADD) => {
                    if v.len() % 2 != 0 {
                        return Err("VLAN part length odd");
                    }
                    let mut table = vec![0u8; VLAN_IDS / 8];
                    for vid in v.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])) {
                        let slot = table
                            .get_mut(usize::from(vid / 8))
                            .ok_or("VLAN id beyond 4095")?;
                        *slot |= 1 << (vid % 8);
                    }
                    s.vlans = table;
                }
                (ctrl::CLASS_ANNOUNCE, ctrl::ANNOUNCE_ACK) if v.is_empty() => s.announce = false,
                (ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET) => {
                    let pairs: [u8; 2] = v.try_into().map_err(|_| "MQ part not 2 bytes")?;
                    s.pairs = u16::from_le_bytes(pairs);
                }
                _ if p.hdr.is_optional() => {}
                _ => return Err("a net control command part this device does not know"),
            }
        }
        let mac_set = s.mac != own;
        let flags = [
            (s.macs.uni_overflow, UNI_OVERFLOW),
            (s.macs.multi_overflow, MULTI_OVERFLOW),
            (mac_set, MAC_SET),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit);
        let mut table = s.mac.to_vec();
        table.extend_from_slice(&[flags, 0]);
        table.extend_from_slice(&(s.macs.unicast.len() as u16).to_le_bytes());
        table.extend_from_slice(&(s.macs.multicast.len() as u16).to_le_bytes());
        for mac in s.macs.unicast.iter().chain(&s.macs.multicast) {
            table.extend_from_slice(mac);
        }
        let values = [
            (FieldType::NET_RX_MODE, vec![s.mode]),
            (FieldType::NET_MAC_TABLE, table),
            (FieldType::NET_VLAN_TABLE, s.vlans.clone()),
            (FieldType::NET_MQ_PAIRS, s.pairs.to_le_bytes().to_vec()),
            (FieldType::NET_ANNOUNCE, vec![u8::from(s.announce)]),
        ];
        for (t, value) in values {
            if let Some(f) = ctx.device_fields.iter_mut().find(|f| f.field_type == t) {
                f.value = value;
            }
        }
        ctx.device_config = config_space(&s.mac, s.announce, max_pairs).to_vec();
        Ok(())
    }
}

impl Cvq {
    /// Whether the context's address was set by the driver (NET_MAC_TABLE flag).
    fn macs_mac_set(&self, ctx: &DeviceContext) -> bool {
        field(ctx, FieldType::NET_MAC_TABLE)
            .get(6)
            .is_some_and(|f| f & MAC_SET != 0)
    }
}

/// Whether the staged driver features let the device ask for an announcement (GUEST_ANNOUNCE
/// with the control queue it is acknowledged on).
fn announce_negotiated(ctx: &DeviceContext) -> bool {
    let wanted = features::GUEST_ANNOUNCE | features::CTRL_VQ;
    ctx.driver_features
        .first()
        .is_some_and(|w| w & wanted == wanted)
}
