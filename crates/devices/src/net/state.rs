//! The net-specific part of the device context (spec-notes §5, types 0x0300–0x03FF): all the
//! control queue state, which is in neither the configuration space nor the queues.
//!
//! Each field is `le16 type; le16 flags; le32 length; u8 value[length]` with zero padding to a
//! multiple of 8, as spec-notes §5 defines; the values are ours:
//!
//! | Type | Name | Value |
//! |---|---|---|
//! | 0x0300 | NET_RX_MODE | `u8 modes`: bit *n* set = RX command *n* on (PROMISC 0, ALLMULTI 1, ALLUNI 2, NOMULTI 3, NOUNI 4, NOBCAST 5); bits 6–7 zero |
//! | 0x0301 | NET_MAC_TABLE | `u8 mac[6]` (the device address, MAC ADDR_SET); `u8 flags` (bit 0 unicast overflow, bit 1 multicast overflow); `u8 reserved`; `le16 unicast`; `le16 multicast`; `u8 macs[unicast + multicast][6]`, unicast first |
//! | 0x0302 | NET_VLAN_TABLE | `u8 vids[512]`: bit *v % 8* of byte *v / 8* set = VLAN *v* accepted |
//! | 0x0303 | NET_MQ_PAIRS | `le16 pairs`, 1..=`max_virtqueue_pairs` |
//! | 0x0304 | NET_ANNOUNCE | `u8`: 1 = `status` ANNOUNCE set, the driver's ANNOUNCE_ACK pending; 0 = none |
//!
//! Rules: all five are mandatory and appear exactly once; every type is in 0x0300–0x03FF; flags
//! bits other than OPTIONAL must be 0; an unknown optional type is skipped, an unknown mandatory
//! one rejected; lengths are exact; the device address is unicast, the unicast entries are
//! unicast and the multicast entries multicast, at most 64 entries together, none of a kind that
//! overflowed; reserved bytes and padding are zero; nothing follows the last field.

use virtio_lm_device::DeviceError;
use virtio_lm_spec::context::{padded_len, FieldType, FIELD_FLAG_OPTIONAL, FIELD_HEADER_LEN};

use super::config::{MAC_TABLE_ENTRIES, VLAN_IDS};
use super::filter::{is_multicast, Mac, MacTable, RxMode, VlanTable};

/// The control queue state a net device saves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NetState {
    pub(crate) mode: RxMode,
    pub(crate) mac: Mac,
    pub(crate) macs: MacTable,
    pub(crate) vlans: VlanTable,
    pub(crate) pairs: u16,
    pub(crate) announce: bool,
}

/// Bytes of NET_MAC_TABLE before the entries.
const MAC_TABLE_HEADER: usize = 12;

impl NetState {
    /// Encodes the state as context fields.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        push_field(&mut out, FieldType::NET_RX_MODE, &[self.mode.bits()]);
        let flags = u8::from(self.macs.uni_overflow) | u8::from(self.macs.multi_overflow) << 1;
        let mut table = self.mac.to_vec();
        table.extend_from_slice(&[flags, 0]);
        table.extend_from_slice(&(self.macs.unicast.len() as u16).to_le_bytes());
        table.extend_from_slice(&(self.macs.multicast.len() as u16).to_le_bytes());
        for mac in self.macs.unicast.iter().chain(&self.macs.multicast) {
            table.extend_from_slice(mac);
        }
        push_field(&mut out, FieldType::NET_MAC_TABLE, &table);
        push_field(&mut out, FieldType::NET_VLAN_TABLE, &self.vlans.0);
        push_field(&mut out, FieldType::NET_MQ_PAIRS, &self.pairs.to_le_bytes());
        push_field(
            &mut out,
            FieldType::NET_ANNOUNCE,
            &[u8::from(self.announce)],
        );
        out
    }

    /// Decodes and validates a state for a device with `max_pairs` queue pairs; nothing is
    /// applied.
    pub(crate) fn decode(bytes: &[u8], max_pairs: u16) -> Result<Self, DeviceError> {
        let bad = DeviceError::BadState;
        let (mut mode, mut table, mut vlans, mut pairs, mut announce) =
            (None, None, None, None, None);
        for field in fields(bytes)? {
            let (ty, value) = (field.0, field.1);
            let slot_taken = match ty {
                FieldType::NET_RX_MODE => mode.replace(decode_mode(value)?).is_some(),
                FieldType::NET_MAC_TABLE => table.replace(decode_table(value)?).is_some(),
                FieldType::NET_VLAN_TABLE => vlans.replace(decode_vlans(value)?).is_some(),
                FieldType::NET_MQ_PAIRS => pairs.replace(decode_pairs(value, max_pairs)?).is_some(),
                FieldType::NET_ANNOUNCE => announce.replace(decode_announce(value)?).is_some(),
                _ => false,
            };
            if slot_taken {
                return Err(bad("net state: a field appears twice"));
            }
        }
        let ((mac, macs), mode) = (
            table.ok_or(bad("net state: NET_MAC_TABLE missing"))?,
            mode.ok_or(bad("net state: NET_RX_MODE missing"))?,
        );
        Ok(Self {
            mode,
            mac,
            macs,
            vlans: vlans.ok_or(bad("net state: NET_VLAN_TABLE missing"))?,
            pairs: pairs.ok_or(bad("net state: NET_MQ_PAIRS missing"))?,
            announce: announce.ok_or(bad("net state: NET_ANNOUNCE missing"))?,
        })
    }
}

fn decode_mode(value: &[u8]) -> Result<RxMode, DeviceError> {
    match value {
        [bits] => RxMode::from_bits(*bits).ok_or(DeviceError::BadState(
            "net state: NET_RX_MODE has unknown mode bits",
        )),
        _ => Err(DeviceError::BadState(
            "net state: NET_RX_MODE length is not 1",
        )),
    }
}

fn decode_table(value: &[u8]) -> Result<(Mac, MacTable), DeviceError> {
    let bad = DeviceError::BadState;
    let header = value
        .get(..MAC_TABLE_HEADER)
        .ok_or(bad("net state: NET_MAC_TABLE shorter than its header"))?;
    let mac: Mac = header[..6].try_into().unwrap_or_default();
    let (flags, reserved) = (header[6], header[7]);
    let uni = usize::from(u16::from_le_bytes([header[8], header[9]]));
    let multi = usize::from(u16::from_le_bytes([header[10], header[11]]));
    if flags > 3 || reserved != 0 {
        return Err(bad("net state: NET_MAC_TABLE reserved bits set"));
    }
    if uni + multi > MAC_TABLE_ENTRIES {
        return Err(bad("net state: NET_MAC_TABLE has more than 64 entries"));
    }
    if value.len() != MAC_TABLE_HEADER + 6 * (uni + multi) {
        return Err(bad(
            "net state: NET_MAC_TABLE length does not match its counts",
        ));
    }
    let (uni_overflow, multi_overflow) = (flags & 1 != 0, flags & 2 != 0);
    if (uni_overflow && uni > 0) || (multi_overflow && multi > 0) {
        return Err(bad(
            "net state: NET_MAC_TABLE keeps entries of an overflowed kind",
        ));
    }
    let entries: Vec<Mac> = value[MAC_TABLE_HEADER..]
        .chunks_exact(6)
        .map(|c| c.try_into().unwrap_or_default())
        .collect();
    let (unicast, multicast) = entries.split_at(uni);
    if is_multicast(&mac) || unicast.iter().any(is_multicast) || !multicast.iter().all(is_multicast)
    {
        return Err(bad("net state: NET_MAC_TABLE address of the wrong kind"));
    }
    let macs = MacTable {
        unicast: unicast.to_vec(),
        multicast: multicast.to_vec(),
        uni_overflow,
        multi_overflow,
    };
    Ok((mac, macs))
}

fn decode_vlans(value: &[u8]) -> Result<VlanTable, DeviceError> {
    <[u8; VLAN_IDS / 8]>::try_from(value)
        .map(VlanTable)
        .map_err(|_| DeviceError::BadState("net state: NET_VLAN_TABLE length is not 512"))
}

fn decode_pairs(value: &[u8], max_pairs: u16) -> Result<u16, DeviceError> {
    match value {
        [a, b] => match u16::from_le_bytes([*a, *b]) {
            p if (1..=max_pairs).contains(&p) => Ok(p),
            _ => Err(DeviceError::BadState(
                "net state: NET_MQ_PAIRS outside 1..=max_virtqueue_pairs",
            )),
        },
        _ => Err(DeviceError::BadState(
            "net state: NET_MQ_PAIRS length is not 2",
        )),
    }
}

fn decode_announce(value: &[u8]) -> Result<bool, DeviceError> {
    match value {
        [0] => Ok(false),
        [1] => Ok(true),
        [_] => Err(DeviceError::BadState(
            "net state: NET_ANNOUNCE is not 0 or 1",
        )),
        _ => Err(DeviceError::BadState(
            "net state: NET_ANNOUNCE length is not 1",
        )),
    }
}

/// Splits `bytes` into the fields this device knows, checking the framing rules; unknown
/// optional fields are skipped.
fn fields(bytes: &[u8]) -> Result<Vec<(FieldType, &[u8])>, DeviceError> {
    let bad = DeviceError::BadState;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = rest
            .get(..FIELD_HEADER_LEN)
            .ok_or(bad("net state: truncated field header"))?;
        let field_type = FieldType(u16::from_le_bytes([header[0], header[1]]));
        let flags = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = &rest[FIELD_HEADER_LEN..];
        // Checked before padding is added, so `padded_len` cannot overflow.
        if body.len() < len || body.len() < padded_len(len) {
            return Err(bad("net state: truncated field value"));
        }
        let (value, padding) = body[..padded_len(len)].split_at(len);
        if padding.iter().any(|&b| b != 0) {
            return Err(bad("net state: non-zero padding"));
        }
        if !field_type.is_net_specific() {
            return Err(bad("net state: field type outside 0x0300-0x03FF"));
        }
        if flags & !FIELD_FLAG_OPTIONAL != 0 {
            return Err(bad("net state: reserved field flags set"));
        }
        let known = (FieldType::NET_RX_MODE.0..=FieldType::NET_ANNOUNCE.0).contains(&field_type.0);
        if known {
            out.push((field_type, value));
        } else if flags & FIELD_FLAG_OPTIONAL == 0 {
            return Err(bad("net state: unknown mandatory field"));
        }
        rest = &body[padded_len(len)..];
    }
    Ok(out)
}

/// Appends one field in the spec-notes §5 encoding.
fn push_field(out: &mut Vec<u8>, field_type: FieldType, value: &[u8]) {
    out.extend_from_slice(&field_type.0.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + padded_len(value.len()) - value.len(), 0);
}
