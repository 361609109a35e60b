//! The net part of the device context (spec-decisions §5, types 0x0300–0x03FF) as a typed
//! state ([`Persist`]): all the control queue state, which is in neither the configuration
//! space nor the queues. The device crate's context codec frames the fields; the values are
//! ours:
//!
//! | Type | Name | Value |
//! |---|---|---|
//! | 0x0300 | NET_RX_MODE | `u8 modes`: bit *n* set = RX command *n* on (PROMISC 0, ALLMULTI 1, ALLUNI 2, NOMULTI 3, NOUNI 4, NOBCAST 5); bits 6–7 zero |
//! | 0x0301 | NET_MAC_TABLE | `u8 mac[6]` (the device address); `u8 flags` (bit 0 unicast overflow, bit 1 multicast overflow, bit 2 the driver set the address with MAC ADDR_SET); `u8 reserved`; `le16 unicast`; `le16 multicast`; `u8 macs[unicast + multicast][6]`, unicast first |
//! | 0x0302 | NET_VLAN_TABLE | `u8 vids[512]`: bit *v % 8* of byte *v / 8* set = VLAN *v* accepted |
//! | 0x0303 | NET_MQ_PAIRS | `le16 pairs`, 1..=`max_virtqueue_pairs` |
//! | 0x0304 | NET_ANNOUNCE | `u8`: 1 = `status` ANNOUNCE set, the driver's ANNOUNCE_ACK pending; 0 = none |
//!
//! Rules: all five are mandatory and appear exactly once; every type is in 0x0300–0x03FF; flags
//! bits other than OPTIONAL must be 0; an unknown optional type is skipped, an unknown mandatory
//! one rejected; lengths are exact; the device address is unicast, the unicast entries are
//! unicast and the multicast entries multicast, at most 64 entries together, none of a kind that
//! overflowed; reserved bytes are zero.
//!
//! DEVICE_CONFIG (`mac`, `status`, `max_virtqueue_pairs`, `mtu`) is read-only and checked here
//! against what this device would present with the decoded state: `max_virtqueue_pairs` must
//! be this device's, `status` must show ANNOUNCE exactly when NET_ANNOUNCE does, and `mac` must
//! be this device's own address unless the driver set it (flag bit 2), in which case the
//! driver's address travels and is adopted. The address counts as driver-set when it differs
//! from the device's own (a driver that set the device's own address back needs nothing).

use virtio_lm_device::context::persist::check_read_only_config;
use virtio_lm_device::context::{DeviceField, Persist, StateFields};
use virtio_lm_device::DeviceError;
use virtio_lm_spec::context::FieldType;

use super::config::{config_space, MAC_TABLE_ENTRIES, VLAN_IDS};
use super::filter::{is_multicast, Mac, MacTable, RxMode, VlanTable};
use super::Net;

/// The control queue state a net device saves: its [`Persist::State`], a validated value
/// (only [`Persist::decode`] and [`Persist::save`] make one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    mode: RxMode,
    mac: Mac,
    /// The driver set `mac` (MAC ADDR_SET): it travels with the state.
    mac_set: bool,
    macs: MacTable,
    vlans: VlanTable,
    pairs: u16,
    announce: bool,
}

impl NetState {
    /// The device address (MAC ADDR_SET, or the device's own).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the driver set the address.
    pub fn mac_set(&self) -> bool {
        self.mac_set
    }

    /// Queue pairs in use (MQ VQ_PAIRS_SET).
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// Whether the device asks the driver to announce itself.
    pub fn announce(&self) -> bool {
        self.announce
    }
}

/// Bytes of NET_MAC_TABLE before the entries.
const MAC_TABLE_HEADER: usize = 12;

/// NET_MAC_TABLE flags: unicast overflow, multicast overflow, address set by the driver.
const TABLE_UNI_OVERFLOW: u8 = 1;
const TABLE_MULTI_OVERFLOW: u8 = 2;
const TABLE_MAC_SET: u8 = 4;

/// The net-specific types this device knows, all mandatory.
const KNOWN: [FieldType; 5] = [
    FieldType::NET_RX_MODE,
    FieldType::NET_MAC_TABLE,
    FieldType::NET_VLAN_TABLE,
    FieldType::NET_MQ_PAIRS,
    FieldType::NET_ANNOUNCE,
];

impl NetState {
    /// The state as device-specific fields, in type order.
    fn fields(&self) -> Vec<DeviceField> {
        let flags = [
            (self.macs.uni_overflow, TABLE_UNI_OVERFLOW),
            (self.macs.multi_overflow, TABLE_MULTI_OVERFLOW),
            (self.mac_set, TABLE_MAC_SET),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit);
        let mut table = self.mac.to_vec();
        table.extend_from_slice(&[flags, 0]);
        // At most MAC_TABLE_ENTRIES entries (MacTable::new): the counts fit.
        table.extend_from_slice(&(self.macs.unicast.len() as u16).to_le_bytes());
        table.extend_from_slice(&(self.macs.multicast.len() as u16).to_le_bytes());
        for mac in self.macs.unicast.iter().chain(&self.macs.multicast) {
            table.extend_from_slice(mac);
        }
        let values = [
            vec![self.mode.bits()],
            table,
            self.vlans.0.to_vec(),
            self.pairs.to_le_bytes().to_vec(),
            vec![u8::from(self.announce)],
        ];
        KNOWN
            .into_iter()
            .zip(values)
            .map(|(field_type, value)| DeviceField {
                field_type,
                flags: 0,
                value,
            })
            .collect()
    }

    /// Decodes and validates the fields for a device with `max_pairs` queue pairs.
    fn decode(fields: &[DeviceField], max_pairs: u16) -> Result<Self, DeviceError> {
        let fields = StateFields::new(fields, &KNOWN, FieldType::is_net_specific)?;
        let mode =
            decode_mode(fields.require(FieldType::NET_RX_MODE, "net state: NET_RX_MODE missing")?)?;
        let (mac, mac_set, macs) = decode_table(
            fields.require(FieldType::NET_MAC_TABLE, "net state: NET_MAC_TABLE missing")?,
        )?;
        let vlans = decode_vlans(fields.require(
            FieldType::NET_VLAN_TABLE,
            "net state: NET_VLAN_TABLE missing",
        )?)?;
        let pairs = decode_pairs(
            fields.require(FieldType::NET_MQ_PAIRS, "net state: NET_MQ_PAIRS missing")?,
            max_pairs,
        )?;
        let announce = decode_announce(
            fields.require(FieldType::NET_ANNOUNCE, "net state: NET_ANNOUNCE missing")?,
        )?;
        Ok(Self {
            mode,
            mac,
            mac_set,
            macs,
            vlans,
            pairs,
            announce,
        })
    }
}

impl Persist for Net {
    type State = NetState;

    fn save(&self) -> NetState {
        let mac = self.shared.mac();
        NetState {
            mode: self.mode,
            mac,
            mac_set: mac != self.initial_mac,
            macs: self.macs.clone(),
            vlans: self.vlans.clone(),
            pairs: self.pairs,
            announce: self.shared.announcing(),
        }
    }

    fn encode(state: &NetState) -> Vec<DeviceField> {
        state.fields()
    }

    fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<NetState, DeviceError> {
        let state = NetState::decode(fields, self.max_pairs)?;
        let mac = if state.mac_set {
            state.mac
        } else {
            self.initial_mac
        };
        check_read_only_config(&config_space(&mac, state.announce, self.max_pairs), config)?;
        if state.mac != mac {
            return Err(DeviceError::BadState(
                "net state: NET_MAC_TABLE address is neither driver-set nor the device's own",
            ));
        }
        Ok(state)
    }

    fn restore(&mut self, state: NetState) {
        self.mode = state.mode;
        self.shared.set_mac(state.mac);
        self.macs = state.macs;
        self.vlans = state.vlans;
        self.pairs = state.pairs;
        self.shared.set_announcing(state.announce);
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

fn decode_table(value: &[u8]) -> Result<(Mac, bool, MacTable), DeviceError> {
    let bad = DeviceError::BadState;
    let header = value
        .get(..MAC_TABLE_HEADER)
        .ok_or(bad("net state: NET_MAC_TABLE shorter than its header"))?;
    let mac: Mac = header[..6].try_into().unwrap_or_default();
    let (flags, reserved) = (header[6], header[7]);
    let uni = usize::from(u16::from_le_bytes([header[8], header[9]]));
    let multi = usize::from(u16::from_le_bytes([header[10], header[11]]));
    if flags & !(TABLE_UNI_OVERFLOW | TABLE_MULTI_OVERFLOW | TABLE_MAC_SET) != 0 || reserved != 0 {
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
    let (uni_overflow, multi_overflow) = (
        flags & TABLE_UNI_OVERFLOW != 0,
        flags & TABLE_MULTI_OVERFLOW != 0,
    );
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
    Ok((mac, flags & TABLE_MAC_SET != 0, macs))
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
