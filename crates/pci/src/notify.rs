//! Driver notifications: the value written to a queue's notify address.

/// A decoded driver notification (virtio 1.4 "Driver Notifications"). Without VIRTIO_F_NOTIFICATION_DATA only the
/// queue index is sent; with it a 32-bit value also carries where the driver's ring stands:
/// `le32 { vq_index : 16; next_off : 15; next_wrap : 1; }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotificationData {
    /// The queue notified.
    pub queue: u16,
    /// Split: low 15 bits of `avail.idx`. Packed: offset of the next available descriptor.
    /// `None` for a 16-bit notification.
    pub next_off: Option<u16>,
    /// Split: bit 15 of `avail.idx`. Packed: the driver ring wrap counter. `false` for a 16-bit
    /// notification.
    pub next_wrap: bool,
}

impl NotificationData {
    /// A 16-bit notification of `queue`.
    pub fn index_only(queue: u16) -> Self {
        Self {
            queue,
            next_off: None,
            next_wrap: false,
        }
    }

    /// Decodes a 32-bit NOTIFICATION_DATA value.
    pub fn decode(value: u32) -> Self {
        Self {
            queue: value as u16,
            next_off: Some(((value >> 16) & 0x7fff) as u16),
            next_wrap: value & (1 << 31) != 0,
        }
    }

    /// Encodes a 32-bit NOTIFICATION_DATA value (a missing `next_off` encodes as 0).
    pub fn encode(&self) -> u32 {
        u32::from(self.queue)
            | u32::from(self.next_off.unwrap_or(0) & 0x7fff) << 16
            | u32::from(self.next_wrap) << 31
    }

    /// The notification of a split ring whose `avail.idx` is `avail_idx`.
    pub fn split(queue: u16, avail_idx: u16) -> Self {
        Self::decode(u32::from(queue) | u32::from(avail_idx) << 16)
    }

    /// The notification of a packed ring whose next available slot is `next_off` with driver
    /// wrap counter `wrap`.
    pub fn packed(queue: u16, next_off: u16, wrap: bool) -> Self {
        Self {
            queue,
            next_off: Some(next_off & 0x7fff),
            next_wrap: wrap,
        }
    }
}
