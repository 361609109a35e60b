//! The control queue (virtio spec 5.1.6.5): `u8 class; u8 command; data[]` device-readable,
//! then a device-writable `u8 ack`. Every command is validated whole before anything changes,
//! so an ERR acknowledgement means nothing changed.
//!
//! Choices where the spec leaves room (as QEMU unless noted): a class whose feature was not
//! negotiated, an unknown command and data of the wrong length are ERR; an RX mode value other
//! than 0 or 1 is ERR (QEMU takes any non-zero as on); the MAC table's unicast list must hold
//! unicast addresses and its multicast list multicast ones, and ADDR_SET a unicast address
//! (QEMU does not check); a kind whose entries do not fit in 64 entries overflows (accept all of
//! that kind); ANNOUNCE_ACK without a pending announcement is ERR; VQ_PAIRS_SET takes
//! 1..=`max_virtqueue_pairs`.

use virtio_lm_device::{ChainFault, DeviceError, QueueAccess};
use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;

use super::config::{ctrl, features};
use super::filter::{is_multicast, Mac, MacTable};
use super::Net;
use crate::guest_io::{read_segments, write_segments};

/// Longest command the device reads (a MAC table far past the 64 entries it keeps); a longer
/// one is ERR.
const MAX_COMMAND_LEN: usize = 64 * 1024;

/// A command's outcome.
type Ack = Result<(), ()>;

impl Net {
    /// Executes one control chain and returns it used with the acknowledgement.
    pub(crate) fn control_chain<M: GuestMemory + ?Sized>(
        &mut self,
        chain: &DescriptorChain,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        if chain.writable_len() == 0 {
            return Err(Net::unanswerable(chain.id(), ChainFault::NoWritableByte));
        }
        let len = chain.readable_len() as usize;
        let ack = if (2..=MAX_COMMAND_LEN).contains(&len) {
            let mut bytes = vec![0u8; len];
            match read_segments(access.mem(), chain.readable(), 0, &mut bytes) {
                Ok(()) => {
                    let ack = self.command(bytes[0], bytes[1], &bytes[2..]);
                    if let Some(tap) = &self.tap {
                        tap.command(bytes[0], bytes[1], &bytes[2..], ack.is_ok());
                    }
                    ack
                }
                Err(_) => Err(()),
            }
        } else {
            Err(())
        };
        let ack = if ack.is_ok() { ctrl::OK } else { ctrl::ERR };
        write_segments(access.mem(), chain.writable(), 0, &[ack])
            .map_err(|_| Net::unanswerable(chain.id(), ChainFault::Unwritable))?;
        access.add_used(chain.id(), 1)?;
        Ok(())
    }

    fn negotiated(&self, feature: u64) -> Ack {
        if self.features & feature != 0 {
            Ok(())
        } else {
            Err(())
        }
    }

    /// Executes command `cmd` of class `class` with `data`.
    pub(crate) fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> Ack {
        match class {
            ctrl::CLASS_RX => self.rx_mode(cmd, data),
            ctrl::CLASS_MAC => match cmd {
                ctrl::MAC_TABLE_SET => {
                    self.negotiated(features::CTRL_RX)?;
                    let (unicast, multicast) = parse_mac_table(data)?;
                    self.macs = MacTable::new(unicast, multicast);
                    Ok(())
                }
                ctrl::MAC_ADDR_SET => {
                    self.negotiated(features::CTRL_MAC_ADDR)?;
                    let mac: Mac = data.try_into().map_err(|_| ())?;
                    if is_multicast(&mac) {
                        return Err(());
                    }
                    self.shared.set_mac(mac);
                    Ok(())
                }
                _ => Err(()),
            },
            ctrl::CLASS_VLAN => {
                self.negotiated(features::CTRL_VLAN)?;
                let on = match cmd {
                    ctrl::VLAN_ADD => true,
                    ctrl::VLAN_DEL => false,
                    _ => return Err(()),
                };
                let vid: [u8; 2] = data.try_into().map_err(|_| ())?;
                if self.vlans.set(u16::from_le_bytes(vid), on) {
                    Ok(())
                } else {
                    Err(())
                }
            }
            ctrl::CLASS_ANNOUNCE => {
                self.negotiated(features::GUEST_ANNOUNCE)?;
                if cmd != ctrl::ANNOUNCE_ACK || !data.is_empty() || !self.shared.announcing() {
                    return Err(());
                }
                self.shared.set_announcing(false);
                Ok(())
            }
            ctrl::CLASS_MQ => {
                self.negotiated(features::MQ)?;
                let pairs: [u8; 2] = data.try_into().map_err(|_| ())?;
                let pairs = u16::from_le_bytes(pairs);
                if cmd != ctrl::MQ_VQ_PAIRS_SET || !(1..=self.max_pairs).contains(&pairs) {
                    return Err(());
                }
                self.pairs = pairs;
                self.resteer();
                Ok(())
            }
            _ => Err(()),
        }
    }

    fn rx_mode(&mut self, cmd: u8, data: &[u8]) -> Ack {
        self.negotiated(features::CTRL_RX)?;
        let extra = !matches!(cmd, ctrl::RX_PROMISC | ctrl::RX_ALLMULTI);
        if extra {
            self.negotiated(features::CTRL_RX_EXTRA)?;
        }
        let on = match data {
            [0] => false,
            [1] => true,
            _ => return Err(()),
        };
        if self.mode.set(cmd, on) {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// `le32 entries; u8 macs[entries][6]` twice (unicast, then multicast), exactly filling `data`.
fn parse_mac_table(data: &[u8]) -> Result<(Vec<Mac>, Vec<Mac>), ()> {
    let (unicast, rest) = parse_macs(data)?;
    let (multicast, rest) = parse_macs(rest)?;
    let kinds_right = !unicast.iter().any(is_multicast) && multicast.iter().all(is_multicast);
    if rest.is_empty() && kinds_right {
        Ok((unicast, multicast))
    } else {
        Err(())
    }
}

fn parse_macs(data: &[u8]) -> Result<(Vec<Mac>, &[u8]), ()> {
    let count = data.get(..4).ok_or(())?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let len = count.checked_mul(6).ok_or(())?;
    let body = data.get(4..).ok_or(())?;
    if body.len() < len {
        return Err(());
    }
    let macs = body[..len]
        .chunks_exact(6)
        .map(|c| c.try_into().unwrap_or_default())
        .collect();
    Ok((macs, &body[len..]))
}
