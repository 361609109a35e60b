//! virtio-net numbers (virtio spec 5.1) and the device configuration layout
//! (`struct virtio_net_config`, 5.1.4).
//!
//! The numbers come from `virtio-bindings`; the configuration offsets are those of the
//! bindings' `virtio_net_config` struct.

use std::mem::offset_of;

use virtio_bindings::virtio_net as vn;

/// virtio device id of a network device (virtio spec 5, "Device Types").
pub const VIRTIO_ID_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;

/// Size of `struct virtio_net_hdr_v1` (virtio spec 5.1.6): with VIRTIO_F_VERSION_1 the header
/// always has `num_buffers`, MRG_RXBUF or not.
pub const NET_HDR_LEN: usize = size_of::<vn::virtio_net_hdr_v1>();

/// Offset of `le16 num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = offset_of!(vn::virtio_net_hdr_v1, num_buffers);

/// Largest frame the device delivers or transmits: a 1514-byte Ethernet frame plus an 802.1Q
/// tag (no offloads and no VIRTIO_NET_F_MTU are offered, so this is the standard MTU).
pub const MAX_FRAME_LEN: usize = 1518;

/// Smallest frame: an Ethernet header (destination, source, EtherType).
pub const ETH_HLEN: usize = 14;

/// Receive buffer size a driver must post per chain without MRG_RXBUF (header + largest frame).
pub const RX_BUF_MIN_NO_MRG: usize = NET_HDR_LEN + MAX_FRAME_LEN;

/// Device feature bits as masks (virtio spec 5.1.3). None is in the ring/transport range
/// (24–41) and bit 42 (legacy VIRTIO_NET_F_GUEST_RSC6, SUSPEND in the seeds profile) is never
/// offered (spec-decisions §1).
pub mod features {
    use super::vn;

    /// `mac` in the configuration space is valid.
    pub const MAC: u64 = 1 << vn::VIRTIO_NET_F_MAC;
    /// The driver can merge receive buffers (`num_buffers` > 1).
    pub const MRG_RXBUF: u64 = 1 << vn::VIRTIO_NET_F_MRG_RXBUF;
    /// `status` in the configuration space is valid.
    pub const STATUS: u64 = 1 << vn::VIRTIO_NET_F_STATUS;
    /// There is a control queue.
    pub const CTRL_VQ: u64 = 1 << vn::VIRTIO_NET_F_CTRL_VQ;
    /// Control class RX: PROMISC, ALLMULTI, and MAC filter tables.
    pub const CTRL_RX: u64 = 1 << vn::VIRTIO_NET_F_CTRL_RX;
    /// Control class VLAN: VLAN filtering.
    pub const CTRL_VLAN: u64 = 1 << vn::VIRTIO_NET_F_CTRL_VLAN;
    /// Control class RX extra: ALLUNI, NOMULTI, NOUNI, NOBCAST.
    pub const CTRL_RX_EXTRA: u64 = 1 << vn::VIRTIO_NET_F_CTRL_RX_EXTRA;
    /// The driver can announce itself (`status` ANNOUNCE, control class ANNOUNCE).
    pub const GUEST_ANNOUNCE: u64 = 1 << vn::VIRTIO_NET_F_GUEST_ANNOUNCE;
    /// Several queue pairs; control class MQ.
    pub const MQ: u64 = 1 << vn::VIRTIO_NET_F_MQ;
    /// Control command MAC ADDR_SET.
    pub const CTRL_MAC_ADDR: u64 = 1 << vn::VIRTIO_NET_F_CTRL_MAC_ADDR;
}

/// `status` bits of the configuration space.
pub mod status {
    use super::vn;

    /// The link is up.
    pub const LINK_UP: u16 = vn::VIRTIO_NET_S_LINK_UP as u16;
    /// The device asks the driver to announce itself (after a migration).
    pub const ANNOUNCE: u16 = vn::VIRTIO_NET_S_ANNOUNCE as u16;
}

/// Control queue classes, commands and acknowledgements (virtio spec 5.1.6.5).
pub mod ctrl {
    use super::vn;

    /// Acknowledgement: the command was executed.
    pub const OK: u8 = vn::VIRTIO_NET_OK as u8;
    /// Acknowledgement: the command was rejected (nothing changed).
    pub const ERR: u8 = vn::VIRTIO_NET_ERR as u8;

    /// Class RX: receive modes.
    pub const CLASS_RX: u8 = vn::VIRTIO_NET_CTRL_RX as u8;
    /// `u8 on`: receive every frame.
    pub const RX_PROMISC: u8 = vn::VIRTIO_NET_CTRL_RX_PROMISC as u8;
    /// `u8 on`: receive every multicast frame.
    pub const RX_ALLMULTI: u8 = vn::VIRTIO_NET_CTRL_RX_ALLMULTI as u8;
    /// `u8 on`: receive every unicast frame (RX_EXTRA).
    pub const RX_ALLUNI: u8 = vn::VIRTIO_NET_CTRL_RX_ALLUNI as u8;
    /// `u8 on`: receive no multicast frame (RX_EXTRA).
    pub const RX_NOMULTI: u8 = vn::VIRTIO_NET_CTRL_RX_NOMULTI as u8;
    /// `u8 on`: receive no unicast frame (RX_EXTRA).
    pub const RX_NOUNI: u8 = vn::VIRTIO_NET_CTRL_RX_NOUNI as u8;
    /// `u8 on`: receive no broadcast frame (RX_EXTRA).
    pub const RX_NOBCAST: u8 = vn::VIRTIO_NET_CTRL_RX_NOBCAST as u8;

    /// Class MAC: address filtering.
    pub const CLASS_MAC: u8 = vn::VIRTIO_NET_CTRL_MAC as u8;
    /// Two tables `le32 entries; u8 macs[entries][6]`: unicast, then multicast.
    pub const MAC_TABLE_SET: u8 = vn::VIRTIO_NET_CTRL_MAC_TABLE_SET as u8;
    /// `u8 mac[6]`: the device's own address.
    pub const MAC_ADDR_SET: u8 = vn::VIRTIO_NET_CTRL_MAC_ADDR_SET as u8;

    /// Class VLAN: VLAN filtering.
    pub const CLASS_VLAN: u8 = vn::VIRTIO_NET_CTRL_VLAN as u8;
    /// `le16 vid`: accept tagged frames of this VLAN.
    pub const VLAN_ADD: u8 = vn::VIRTIO_NET_CTRL_VLAN_ADD as u8;
    /// `le16 vid`: stop accepting them.
    pub const VLAN_DEL: u8 = vn::VIRTIO_NET_CTRL_VLAN_DEL as u8;

    /// Class ANNOUNCE.
    pub const CLASS_ANNOUNCE: u8 = vn::VIRTIO_NET_CTRL_ANNOUNCE as u8;
    /// No data: the driver has announced itself; the device clears `status` ANNOUNCE.
    pub const ANNOUNCE_ACK: u8 = vn::VIRTIO_NET_CTRL_ANNOUNCE_ACK as u8;

    /// Class MQ.
    pub const CLASS_MQ: u8 = vn::VIRTIO_NET_CTRL_MQ as u8;
    /// `le16 virtqueue_pairs`: how many queue pairs the driver uses.
    pub const MQ_VQ_PAIRS_SET: u8 = vn::VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET as u8;
}

/// Offsets of the configuration fields (virtio spec 5.1.4), from the bindings' struct layout.
pub mod offset {
    use std::mem::offset_of;

    type C = super::vn::virtio_net_config;

    /// `u8 mac[6]`.
    pub const MAC: usize = offset_of!(C, mac);
    /// `le16 status`.
    pub const STATUS: usize = offset_of!(C, status);
    /// `le16 max_virtqueue_pairs`.
    pub const MAX_VIRTQUEUE_PAIRS: usize = offset_of!(C, max_virtqueue_pairs);
    /// `le16 mtu` (VIRTIO_NET_F_MTU, not offered: reads 0).
    pub const MTU: usize = offset_of!(C, mtu);
}

/// Length of the configuration space the device exposes (through `mtu`).
pub const CONFIG_LEN: usize = 12;

/// The configuration space of a device with address `mac`, `max_pairs` queue pairs and, when
/// `announce`, the driver asked to announce itself. The link is always up; `mtu` reads 0.
pub(crate) fn config_space(mac: &[u8; 6], announce: bool, max_pairs: u16) -> [u8; CONFIG_LEN] {
    let mut b = [0u8; CONFIG_LEN];
    let status = status::LINK_UP | if announce { status::ANNOUNCE } else { 0 };
    b[offset::MAC..offset::MAC + 6].copy_from_slice(mac);
    b[offset::STATUS..offset::STATUS + 2].copy_from_slice(&status.to_le_bytes());
    b[offset::MAX_VIRTQUEUE_PAIRS..offset::MAX_VIRTQUEUE_PAIRS + 2]
        .copy_from_slice(&max_pairs.to_le_bytes());
    b
}

/// Most entries of the MAC filter table (unicast and multicast together), as QEMU; a longer
/// table sets the overflow flag of its kind, which then accepts every address of that kind.
pub const MAC_TABLE_ENTRIES: usize = 64;

/// Number of VLAN ids (12-bit VID).
pub const VLAN_IDS: usize = 4096;

/// Largest `max_virtqueue_pairs` a device accepts (1..=this).
pub const MAX_QUEUE_PAIRS: u16 = 16;

// The exposed space ends where `speed` begins.
const _: () = assert!(offset_of!(vn::virtio_net_config, speed) == CONFIG_LEN);
const _: () = assert!(NET_HDR_LEN == 12 && NUM_BUFFERS_OFFSET == 10);
