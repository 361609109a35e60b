//! The receive filter the control queue programs (virtio spec 5.1.6.5.1 and 5.1.6.5.2): RX
//! mode, MAC table and VLAN table, applied as QEMU applies them.

use super::config::{ctrl, MAC_TABLE_ENTRIES, VLAN_IDS};

/// Receive mode flags (control class RX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RxMode {
    pub(crate) promisc: bool,
    pub(crate) allmulti: bool,
    pub(crate) alluni: bool,
    pub(crate) nomulti: bool,
    pub(crate) nouni: bool,
    pub(crate) nobcast: bool,
}

impl Default for RxMode {
    /// Promiscuous until the driver says otherwise, as QEMU ("for compatibility"): a driver
    /// without CTRL_RX receives everything.
    fn default() -> Self {
        Self {
            promisc: true,
            allmulti: false,
            alluni: false,
            nomulti: false,
            nouni: false,
            nobcast: false,
        }
    }
}

impl RxMode {
    /// Bit `i` of the NET_RX_MODE encoding, in command order (PROMISC = bit 0 ... NOBCAST = 5).
    pub(crate) fn bits(&self) -> u8 {
        [
            self.promisc,
            self.allmulti,
            self.alluni,
            self.nomulti,
            self.nouni,
            self.nobcast,
        ]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &on)| acc | (u8::from(on) << i))
    }

    /// The flags from [`Self::bits`]; `None` if a bit above 5 is set.
    pub(crate) fn from_bits(bits: u8) -> Option<Self> {
        if bits >> 6 != 0 {
            return None;
        }
        let on = |i: u8| bits & (1 << i) != 0;
        Some(Self {
            promisc: on(0),
            allmulti: on(1),
            alluni: on(2),
            nomulti: on(3),
            nouni: on(4),
            nobcast: on(5),
        })
    }

    /// Sets the flag of RX command `cmd`; false for an unknown command.
    pub(crate) fn set(&mut self, cmd: u8, on: bool) -> bool {
        let flag = match cmd {
            ctrl::RX_PROMISC => &mut self.promisc,
            ctrl::RX_ALLMULTI => &mut self.allmulti,
            ctrl::RX_ALLUNI => &mut self.alluni,
            ctrl::RX_NOMULTI => &mut self.nomulti,
            ctrl::RX_NOUNI => &mut self.nouni,
            ctrl::RX_NOBCAST => &mut self.nobcast,
            _ => return false,
        };
        *flag = on;
        true
    }
}

/// A MAC address.
pub(crate) type Mac = [u8; 6];

/// Whether `mac` is a multicast (or broadcast) address.
pub(crate) fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// The MAC filter table (MAC TABLE_SET).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MacTable {
    pub(crate) unicast: Vec<Mac>,
    pub(crate) multicast: Vec<Mac>,
    /// More unicast addresses than fit: every unicast address is accepted.
    pub(crate) uni_overflow: bool,
    /// More multicast addresses than fit: every multicast address is accepted.
    pub(crate) multi_overflow: bool,
}

impl MacTable {
    /// The table for `unicast` and `multicast` as the driver sent them: a kind that does not
    /// fit (with the kinds before it) in [`MAC_TABLE_ENTRIES`] overflows and keeps no entry.
    pub(crate) fn new(unicast: Vec<Mac>, multicast: Vec<Mac>) -> Self {
        let mut table = Self::default();
        if unicast.len() <= MAC_TABLE_ENTRIES {
            table.unicast = unicast;
        } else {
            table.uni_overflow = true;
        }
        if table.unicast.len() + multicast.len() <= MAC_TABLE_ENTRIES {
            table.multicast = multicast;
        } else {
            table.multi_overflow = true;
        }
        table
    }
}

/// The VLAN filter: one bit per VLAN id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VlanTable(pub(crate) [u8; VLAN_IDS / 8]);

impl Default for VlanTable {
    fn default() -> Self {
        Self([0; VLAN_IDS / 8])
    }
}

impl VlanTable {
    /// Whether `vid` (< 4096) is in the table.
    pub(crate) fn contains(&self, vid: u16) -> bool {
        self.0
            .get(usize::from(vid / 8))
            .is_some_and(|b| b & (1 << (vid % 8)) != 0)
    }

    /// Adds or removes `vid`; false if it is not a VLAN id.
    pub(crate) fn set(&mut self, vid: u16, on: bool) -> bool {
        let Some(byte) = self.0.get_mut(usize::from(vid / 8)) else {
            return false;
        };
        if on {
            *byte |= 1 << (vid % 8);
        } else {
            *byte &= !(1 << (vid % 8));
        }
        true
    }
}

/// Everything the filter decides with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Filter<'a> {
    pub(crate) mode: &'a RxMode,
    pub(crate) macs: &'a MacTable,
    /// `None`: VLAN filtering off (CTRL_VLAN not negotiated), every tag passes.
    pub(crate) vlans: Option<&'a VlanTable>,
    pub(crate) own: &'a Mac,
}

/// 802.1Q tag protocol identifier.
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];

impl Filter<'_> {
    /// Whether the device delivers `frame` (at least an Ethernet header long): promiscuous
    /// accepts everything; then a tagged frame needs its VLAN in the table; then broadcast,
    /// multicast and unicast destinations are checked against the modes and tables.
    pub(crate) fn accepts(&self, frame: &[u8]) -> bool {
        if self.mode.promisc {
            return true;
        }
        if let (Some(vlans), Some(tpid), Some(tci)) =
            (self.vlans, frame.get(12..14), frame.get(14..16))
        {
            let vid = u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff;
            if tpid == ETH_P_8021Q && !vlans.contains(vid) {
                return false;
            }
        }
        let Some(dst) = frame.get(..6).and_then(|d| <&Mac>::try_from(d).ok()) else {
            return false;
        };
        if dst == &[0xff; 6] {
            !self.mode.nobcast
        } else if is_multicast(dst) {
            !self.mode.nomulti
                && (self.mode.allmulti
                    || self.macs.multi_overflow
                    || self.macs.multicast.contains(dst))
        } else {
            !self.mode.nouni
                && (self.mode.alluni
                    || self.macs.uni_overflow
                    || dst == self.own
                    || self.macs.unicast.contains(dst))
        }
    }
}
