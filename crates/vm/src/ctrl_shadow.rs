//! The hypervisor's shadow of a net device's control queue under the status strategy
//! (spec-decisions §21): which commands the guest sent and the device accepted, folded into the
//! state they leave (RX modes, MAC table, MAC address, VLAN table, queue pairs), as QEMU's
//! vhost-vdpa keeps it from its shadow control virtqueue. It travels in the in-band context as
//! one hypervisor field and is replayed into the destination device through its control queue
//! before the guest resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use virtio_lm_device::context::DeviceField;
use virtio_lm_devices::net::config::ctrl;
use virtio_lm_devices::net::ControlTap;
use virtio_lm_spec::context::FieldType;

/// The context field carrying the shadow in an in-band context: the top of the device-specific
/// range, which no device type of this project uses; only the in-band restore reads it.
pub(crate) const SHADOW_FIELD: FieldType = FieldType(0x03FF);

/// Longest shadow accepted from a stream: 4096 VLANs and a full MAC table fit many times.
const MAX_SHADOW: usize = 64 * 1024;

/// One control command: class, command, data.
pub(crate) type Command = (u8, u8, Vec<u8>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    /// RX class command → its data byte, the last accepted.
    rx: BTreeMap<u8, Vec<u8>>,
    mac_addr: Option<Vec<u8>>,
    mac_table: Option<Vec<u8>>,
    vlans: BTreeSet<u16>,
    pairs: Option<Vec<u8>>,
}

/// The shadow of one net device's control queue, fed by the device's [`ControlTap`].
#[derive(Debug, Default)]
pub(crate) struct CtrlShadow {
    state: Mutex<State>,
}

impl ControlTap for CtrlShadow {
    fn command(&self, class: u8, cmd: u8, data: &[u8], accepted: bool) {
        // Only what the device accepted changed its state (an ERR leaves it as it was).
        if !accepted {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (class, cmd) {
            (ctrl::CLASS_RX, _) => {
                s.rx.insert(cmd, data.to_vec());
            }
            (ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET) => s.mac_addr = Some(data.to_vec()),
            (ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET) => s.mac_table = Some(data.to_vec()),
            (ctrl::CLASS_VLAN, _) => {
                if let Ok(vid) = <[u8; 2]>::try_from(data) {
                    let vid = u16::from_le_bytes(vid);
                    if cmd == ctrl::VLAN_ADD {
                        s.vlans.insert(vid);
                    } else {
                        s.vlans.remove(&vid);
                    }
                }
            }
            (ctrl::CLASS_MQ, _) => s.pairs = Some(data.to_vec()),
            // An announcement acknowledgement is transient: the destination announces anew.
            _ => {}
        }
    }

    fn reset(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::default();
    }
}

impl CtrlShadow {
    /// The commands that rebuild the shadowed state on a freshly initialised device: the MAC
    /// address and table before the modes that refer to them, VLANs, then the queue pairs.
    pub(crate) fn commands(&self) -> Vec<Command> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        if let Some(mac) = &s.mac_addr {
            out.push((ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, mac.clone()));
        }
        if let Some(table) = &s.mac_table {
            out.push((ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, table.clone()));
        }
        for (&cmd, data) in &s.rx {
            out.push((ctrl::CLASS_RX, cmd, data.clone()));
        }
        for vid in &s.vlans {
            out.push((ctrl::CLASS_VLAN, ctrl::VLAN_ADD, vid.to_le_bytes().to_vec()));
        }
        if let Some(pairs) = &s.pairs {
            out.push((ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, pairs.clone()));
        }
        out
    }

    /// The shadow as a context field (none when there is nothing to replay).
    pub(crate) fn field(&self) -> Option<DeviceField> {
        let commands = self.commands();
        (!commands.is_empty()).then(|| DeviceField::new(SHADOW_FIELD, encode(&commands)))
    }
}

/// `u8 class; u8 cmd; le16 len; data[len]`, repeated.
fn encode(commands: &[Command]) -> Vec<u8> {
    let mut out = Vec::new();
    for (class, cmd, data) in commands {
        out.extend_from_slice(&[*class, *cmd]);
        // Each datum is far below 64 KiB (the largest, a MAC table, is capped by the device).
        out.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&data[..data.len().min(usize::from(u16::MAX))]);
    }
    out
}

/// The commands of a shadow field; an error for bytes that do not parse whole.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Command>, String> {
    if bytes.len() > MAX_SHADOW {
        return Err(format!("control shadow of {} bytes", bytes.len()));
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let [class, cmd, l0, l1, tail @ ..] = rest else {
            return Err("control shadow: truncated command header".into());
        };
        let len = usize::from(u16::from_le_bytes([*l0, *l1]));
        let data = tail
            .get(..len)
            .ok_or("control shadow: truncated command data")?;
        out.push((*class, *cmd, data.to_vec()));
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accepted_commands_and_round_trips() {
        let s = CtrlShadow::default();
        s.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[0], true);
        s.command(ctrl::CLASS_RX, ctrl::RX_ALLMULTI, &[1], false);
        s.command(ctrl::CLASS_VLAN, ctrl::VLAN_ADD, &5u16.to_le_bytes(), true);
        s.command(ctrl::CLASS_VLAN, ctrl::VLAN_ADD, &6u16.to_le_bytes(), true);
        s.command(ctrl::CLASS_VLAN, ctrl::VLAN_DEL, &6u16.to_le_bytes(), true);
        s.command(
            ctrl::CLASS_MQ,
            ctrl::MQ_VQ_PAIRS_SET,
            &2u16.to_le_bytes(),
            true,
        );
        let commands = s.commands();
        assert_eq!(
            commands,
            vec![
                (ctrl::CLASS_RX, ctrl::RX_PROMISC, vec![0]),
                (ctrl::CLASS_VLAN, ctrl::VLAN_ADD, vec![5, 0]),
                (ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, vec![2, 0]),
            ]
        );
        assert_eq!(decode(&encode(&commands)), Ok(commands));
        s.reset();
        assert!(s.field().is_none());
    }

    #[test]
    fn hostile_shadows_are_refused() {
        assert!(decode(&[1, 2, 5, 0, 1]).is_err());
        assert!(decode(&[1, 2, 0]).is_err());
        assert!(decode(&vec![0; MAX_SHADOW + 1]).is_err());
        assert_eq!(decode(&[]), Ok(Vec::new()));
    }
}
