//! The net-specific device context (spec-decisions §5, 0x0300–0x0304; value formats in
//! `virtio_lm_devices::net` state docs): exact encoding, round trip into a fresh device, and
//! validation — bad lengths, values and framing are rejected, and a rejected restore changes
//! nothing (spec-decisions §5: "a context that fails validation changes nothing").

mod net_common;

use net_common::{localhost, options, Mem, MAC};
use virtio_lm_device::context::{parse_fields, ValidatedState};
use virtio_lm_device::testing::context::{device_fields, field_bytes, framed_state};
use virtio_lm_device::{DeviceError, VirtioDevice};
use virtio_lm_devices::net::config::{offset, status};
use virtio_lm_devices::{Net, NetOptions};

fn net(pairs: u16) -> Net {
    Net::new(NetOptions {
        queue_pairs: pairs,
        ..options(localhost())
    })
    .unwrap()
}

/// The saved state framed as context fields (the device crate's one codec).
fn save(d: &Net) -> Vec<u8> {
    framed_state::<Mem>(d)
}

/// The configuration space a source with framed state `s` presents: its address and
/// announcement, `pairs` queue pairs at most.
fn source_config(s: &[u8], max_pairs: u16) -> Vec<u8> {
    let fields = parse_fields(s).unwrap_or_default();
    let value = |ty: u16| {
        fields
            .iter()
            .find(|f| f.field_type.0 == ty)
            .map(|f| f.value)
    };
    let mut c = vec![0u8; 12];
    if let Some(mac) = value(0x0301).and_then(|t| t.get(..6)) {
        c[offset::MAC..offset::MAC + 6].copy_from_slice(mac);
    }
    let announce = value(0x0304) == Some(&[1][..]);
    let st = status::LINK_UP | if announce { status::ANNOUNCE } else { 0 };
    c[offset::STATUS..offset::STATUS + 2].copy_from_slice(&st.to_le_bytes());
    c[offset::MAX_VIRTQUEUE_PAIRS..offset::MAX_VIRTQUEUE_PAIRS + 2]
        .copy_from_slice(&max_pairs.to_le_bytes());
    c
}

fn decode(d: &Net, s: &[u8]) -> Result<ValidatedState, DeviceError> {
    let fields = device_fields(s)?;
    let max_pairs = u16::from_le_bytes([config(d)[8], config(d)[9]]);
    VirtioDevice::<Mem>::decode_state(d, &fields, &source_config(s, max_pairs))
}

fn validate(d: &Net, s: &[u8]) -> bool {
    decode(d, s).is_ok()
}

fn restore(d: &mut Net, s: &[u8]) -> bool {
    match decode(d, s) {
        Ok(valid) => {
            VirtioDevice::<Mem>::restore_state(d, valid);
            true
        }
        Err(_) => false,
    }
}

fn config(d: &Net) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    VirtioDevice::<Mem>::read_config(d, 0, &mut b);
    b
}

/// The five values of a state.
#[derive(Clone)]
struct Values {
    mode: Vec<u8>,
    table: Vec<u8>,
    vlans: Vec<u8>,
    pairs: Vec<u8>,
    announce: Vec<u8>,
}

impl Values {
    fn defaults() -> Self {
        let mut table = MAC.to_vec();
        table.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        Self {
            mode: vec![1],
            table,
            vlans: vec![0; 512],
            pairs: vec![1, 0],
            announce: vec![0],
        }
    }

    /// A state with every field set away from its default (the address set by the driver:
    /// NET_MAC_TABLE flag bit 2).
    fn busy() -> Self {
        let mut table = [0x02, 9, 9, 9, 9, 9].to_vec();
        table.extend_from_slice(&[4, 0, 2, 0, 1, 0]);
        for mac in [
            [0x02, 0, 0, 0, 0, 1],
            [0x02, 0, 0, 0, 0, 2],
            [0x01, 0, 0x5e, 0, 0, 1],
        ] {
            table.extend_from_slice(&mac);
        }
        let mut vlans = vec![0; 512];
        vlans[0] = 0b10_0000;
        vlans[511] = 0x80;
        Self {
            mode: vec![0b10_1010],
            table,
            vlans,
            pairs: vec![2, 0],
            announce: vec![1],
        }
    }

    fn encode(&self) -> Vec<u8> {
        [
            field_bytes(0x0300, 0, &self.mode),
            field_bytes(0x0301, 0, &self.table),
            field_bytes(0x0302, 0, &self.vlans),
            field_bytes(0x0303, 0, &self.pairs),
            field_bytes(0x0304, 0, &self.announce),
        ]
        .concat()
    }
}

/// spec-decisions §5: a fresh device saves the five fields in order with their default values
/// (promiscuous, its own address, empty tables, one pair, no announcement).
#[test]
fn default_state_encoding() {
    let d = net(2);
    assert_eq!(save(&d), Values::defaults().encode());
    assert_eq!(save(&d).len(), 16 + 24 + 520 + 16 + 16);
}

/// spec-decisions §5 and §7 pitfall 9: a state restored into a fresh device is saved back
/// byte-for-byte, and what it holds is visible (address and ANNOUNCE in the configuration).
#[test]
fn state_round_trips_into_a_fresh_device() {
    let state = Values::busy().encode();
    let mut d = net(2);
    assert!(validate(&d, &state));
    assert!(restore(&mut d, &state));
    assert_eq!(save(&d), state);
    let cfg = config(&d);
    assert_eq!(cfg[offset::MAC..offset::MAC + 6], [0x02, 9, 9, 9, 9, 9]);
    let st = u16::from_le_bytes([cfg[offset::STATUS], cfg[offset::STATUS + 1]]);
    assert_eq!(st, status::LINK_UP | status::ANNOUNCE);
    let mut again = net(2);
    assert!(restore(&mut again, &save(&d)));
    assert_eq!(save(&again), state);
    // A reset returns to the defaults.
    VirtioDevice::<Mem>::reset(&mut d);
    assert_eq!(save(&d), Values::defaults().encode());
}

/// spec-decisions §5: every bad length or value, and every framing error (the codec's), is
/// rejected by validation and by restore, and a rejected restore changes nothing. Padding
/// follows the codec's one rule (present, contents ignored: spec-decisions §5).
#[test]
fn bad_states_are_rejected_and_change_nothing() {
    let good = Values::busy();
    let mut variants: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut with = |name: &'static str, edit: &dyn Fn(&mut Values)| {
        let mut v = good.clone();
        edit(&mut v);
        variants.push((name, v.encode()));
    };
    with("mode length", &|v| v.mode = vec![0, 0]);
    with("mode bit 6", &|v| v.mode = vec![0x40]);
    with("table shorter than header", &|v| v.table.truncate(11));
    with("table length", &|v| {
        v.table.pop();
    });
    with("table count", &|v| v.table[8] = 3);
    with("table multicast own address", &|v| v.table[0] = 0x03);
    with("table unicast entry is multicast", &|v| v.table[12] = 0x01);
    with("table multicast entry is unicast", &|v| v.table[24] = 0x02);
    with("table flags", &|v| v.table[6] = 8);
    with("table reserved", &|v| v.table[7] = 1);
    with("table overflow with entries", &|v| v.table[6] |= 1);
    with("address neither driver-set nor own", &|v| v.table[6] = 0);
    with("table over 64 entries", &|v| {
        v.table[8] = 64;
        v.table[10] = 1;
        v.table.truncate(12);
        for i in 0..64u8 {
            v.table.extend_from_slice(&[0x02, 0, 0, 0, 1, i]);
        }
        v.table.extend_from_slice(&[0x01, 0, 0, 0, 0, 1]);
    });
    with("vlan length", &|v| {
        v.vlans.pop();
    });
    with("pairs 0", &|v| v.pairs = vec![0, 0]);
    with("pairs above max", &|v| v.pairs = vec![3, 0]);
    with("pairs length", &|v| v.pairs = vec![1]);
    with("announce 2", &|v| v.announce = vec![2]);
    with("announce length", &|v| v.announce = vec![1, 0]);
    let encoded = good.encode();
    let first = field_bytes(0x0300, 0, &good.mode);
    variants.push(("empty", Vec::new()));
    variants.push(("missing field", encoded[first.len()..].to_vec()));
    variants.push((
        "duplicated field",
        [first.clone(), encoded.clone()].concat(),
    ));
    variants.push((
        "unknown mandatory",
        [encoded.clone(), field_bytes(0x03ff, 0, &[1])].concat(),
    ));
    variants.push((
        "outside net range",
        [encoded.clone(), field_bytes(0x0200, 1, &[1])].concat(),
    ));
    variants.push((
        "reserved flag bits",
        [
            field_bytes(0x0300, 2, &good.mode),
            encoded[first.len()..].to_vec(),
        ]
        .concat(),
    ));
    variants.push(("truncated header", [encoded.clone(), vec![0; 4]].concat()));
    variants.push(("truncated value", encoded[..encoded.len() - 1].to_vec()));
    let mut huge = field_bytes(0x0300, 0, &[1]);
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    variants.push((
        "huge length",
        [huge, encoded[first.len()..].to_vec()].concat(),
    ));

    let mut d = net(2);
    assert!(restore(&mut d, &encoded));
    for (name, state) in variants {
        assert!(!validate(&d, &state), "{name}: validation accepted it");
        assert!(!restore(&mut d, &state), "{name}: restore accepted it");
        assert_eq!(
            save(&d),
            encoded,
            "{name}: a rejected restore changed the device"
        );
    }
    // An unknown optional field is skipped.
    let optional = [encoded.clone(), field_bytes(0x03ff, 1, &[7, 7, 7])].concat();
    assert!(validate(&d, &optional));
    // Non-zero padding is accepted: one padding rule for every field.
    let mut padding = encoded.clone();
    padding[9] = 1;
    assert!(validate(&d, &padding));
}
