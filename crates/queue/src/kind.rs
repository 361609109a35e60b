//! The two ring formats: a leaf that the configuration and the errors both name.

/// The two virtqueue formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RingKind {
    /// Split virtqueue: descriptor table, available ring, used ring.
    Split,
    /// Packed virtqueue (VIRTIO_F_RING_PACKED): one descriptor ring and two event structures.
    Packed,
}
