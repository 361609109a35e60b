//! virtio-blk numbers (virtio spec 5.2) and the device configuration layout
//! (`struct virtio_blk_config`, 5.2.4).
//!
//! The numbers come from `virtio-bindings` where it has them; the configuration offsets are
//! those of the bindings' `virtio_blk_config` struct.

use std::mem::offset_of;

use virtio_bindings::virtio_blk as vb;

/// virtio device id of a block device (virtio spec 5, "Device Types").
pub const VIRTIO_ID_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

/// Bytes per sector: the unit of `sector`, `capacity` and the discard/write-zeroes ranges,
/// whatever `blk_size` says (virtio spec 5.2.4).
pub const SECTOR_SIZE: u64 = 512;

/// Size of the request header `le32 type; le32 reserved; le64 sector` (virtio spec 5.2.6).
pub const REQUEST_HEADER_LEN: u32 = 16;

/// Size of one discard / write-zeroes segment `le64 sector; le32 num_sectors; le32 flags`.
pub const DISCARD_SEGMENT_LEN: u32 = 16;

/// Length of the device id string a GET_ID request returns (NUL-padded, not terminated).
pub const VIRTIO_BLK_ID_BYTES: usize = vb::VIRTIO_BLK_ID_BYTES as usize;

/// Request types (`type` of the request header, virtio spec 5.2.6).
pub mod request_type {
    use super::vb;

    /// Read sectors into the device-writable data buffers.
    pub const IN: u32 = vb::VIRTIO_BLK_T_IN;
    /// Write the device-readable data buffers to sectors.
    pub const OUT: u32 = vb::VIRTIO_BLK_T_OUT;
    /// Make every completed write stable.
    pub const FLUSH: u32 = vb::VIRTIO_BLK_T_FLUSH;
    /// Return the 20-byte device id string.
    pub const GET_ID: u32 = vb::VIRTIO_BLK_T_GET_ID;
    /// Discard sector ranges (readable payload: discard segments).
    pub const DISCARD: u32 = vb::VIRTIO_BLK_T_DISCARD;
    /// Zero sector ranges (readable payload: write-zeroes segments).
    pub const WRITE_ZEROES: u32 = vb::VIRTIO_BLK_T_WRITE_ZEROES;
}

/// Request status values (the last device-writable byte of a request, virtio spec 5.2.6).
pub mod status {
    use super::vb;

    /// Success.
    pub const OK: u8 = vb::VIRTIO_BLK_S_OK as u8;
    /// Device or driver error (bad sector, I/O error, write to a read-only device).
    pub const IOERR: u8 = vb::VIRTIO_BLK_S_IOERR as u8;
    /// Request type or flags not supported.
    pub const UNSUPP: u8 = vb::VIRTIO_BLK_S_UNSUPP as u8;
}

/// `flags` bit 0 of a write-zeroes segment: the device may deallocate the range.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = vb::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;

/// Device feature bits as masks (virtio spec 5.2.3). None of them is in the range of ring and
/// transport features (24–41), so they never collide with a profile's features.
pub mod features {
    use super::vb;

    /// `size_max` is valid: the largest segment the driver may use.
    pub const SIZE_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SIZE_MAX;
    /// `seg_max` is valid: the most data segments in one request.
    pub const SEG_MAX: u64 = 1 << vb::VIRTIO_BLK_F_SEG_MAX;
    /// The device is read-only.
    pub const RO: u64 = 1 << vb::VIRTIO_BLK_F_RO;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << vb::VIRTIO_BLK_F_BLK_SIZE;
    /// FLUSH requests are supported.
    pub const FLUSH: u64 = 1 << vb::VIRTIO_BLK_F_FLUSH;
    /// The driver may switch `writeback` in the configuration space.
    pub const CONFIG_WCE: u64 = 1 << vb::VIRTIO_BLK_F_CONFIG_WCE;
    /// More than one request queue; `num_queues` is valid.
    pub const MQ: u64 = 1 << vb::VIRTIO_BLK_F_MQ;
    /// DISCARD requests are supported; the discard limits are valid.
    pub const DISCARD: u64 = 1 << vb::VIRTIO_BLK_F_DISCARD;
    /// WRITE_ZEROES requests are supported; the write-zeroes limits are valid.
    pub const WRITE_ZEROES: u64 = 1 << vb::VIRTIO_BLK_F_WRITE_ZEROES;
}

/// Offsets of the configuration fields the device fills in (virtio spec 5.2.4), from the
/// bindings' struct layout.
pub mod offset {
    use std::mem::offset_of;

    type C = super::vb::virtio_blk_config;

    /// `le64 capacity` in 512-byte sectors.
    pub const CAPACITY: usize = offset_of!(C, capacity);
    /// `le32 size_max`.
    pub const SIZE_MAX: usize = offset_of!(C, size_max);
    /// `le32 seg_max`.
    pub const SEG_MAX: usize = offset_of!(C, seg_max);
    /// `le32 blk_size`.
    pub const BLK_SIZE: usize = offset_of!(C, blk_size);
    /// `u8 writeback` (0 writethrough, 1 writeback).
    pub const WRITEBACK: usize = offset_of!(C, wce);
    /// `le16 num_queues`.
    pub const NUM_QUEUES: usize = offset_of!(C, num_queues);
    /// `le32 max_discard_sectors`.
    pub const MAX_DISCARD_SECTORS: usize = offset_of!(C, max_discard_sectors);
    /// `le32 max_discard_seg`.
    pub const MAX_DISCARD_SEG: usize = offset_of!(C, max_discard_seg);
    /// `le32 discard_sector_alignment`.
    pub const DISCARD_SECTOR_ALIGNMENT: usize = offset_of!(C, discard_sector_alignment);
    /// `le32 max_write_zeroes_sectors`.
    pub const MAX_WRITE_ZEROES_SECTORS: usize = offset_of!(C, max_write_zeroes_sectors);
    /// `le32 max_write_zeroes_seg`.
    pub const MAX_WRITE_ZEROES_SEG: usize = offset_of!(C, max_write_zeroes_seg);
    /// `u8 write_zeroes_may_unmap`.
    pub const WRITE_ZEROES_MAY_UNMAP: usize = offset_of!(C, write_zeroes_may_unmap);
}

/// Length of the configuration space the device exposes (through `write_zeroes_may_unmap` and
/// its 3 padding bytes; the secure-erase and zoned parts are not offered).
pub const CONFIG_LEN: usize = 60;

// The exposed space ends where the secure-erase fields begin.
const _: () = assert!(offset_of!(vb::virtio_blk_config, max_secure_erase_sectors) == CONFIG_LEN);

/// Largest data segment the driver may use (`size_max`): 64 KiB.
pub const SIZE_MAX: u32 = 64 * 1024;
/// Upper bound of `seg_max` (it is also at most the queue size minus header and status).
pub const SEG_MAX_LIMIT: u32 = 64;
/// `blk_size`: the logical block size reported to the driver.
pub const BLK_SIZE: u32 = 512;
/// `max_discard_sectors`: 2 GiB per discard segment.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// `max_discard_seg`.
pub const MAX_DISCARD_SEG: u32 = 32;
/// `max_write_zeroes_sectors`: 32 MiB per segment (bounds the zero-writing fallback).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 16;
/// `max_write_zeroes_seg`.
pub const MAX_WRITE_ZEROES_SEG: u32 = 32;

/// The values a device instance reports in its configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConfigValues {
    pub(crate) capacity: u64,
    pub(crate) seg_max: u32,
    pub(crate) num_queues: u16,
    pub(crate) writeback: u8,
    pub(crate) read_only: bool,
}

impl ConfigValues {
    /// `seg_max` for a queue of `queue_size` descriptors: a request needs one descriptor for
    /// the header and one for the status besides its data segments.
    pub(crate) fn seg_max_for(queue_size: u16) -> u32 {
        u32::from(queue_size)
            .saturating_sub(2)
            .clamp(1, SEG_MAX_LIMIT)
    }

    /// Largest data transfer of one IN or OUT request the device accepts: what a driver that
    /// honours `seg_max` and `size_max` can send. Bounds the bounce buffer of a request.
    pub(crate) fn max_transfer(&self) -> u32 {
        self.seg_max.saturating_mul(SIZE_MAX)
    }

    /// The configuration space bytes.
    pub(crate) fn bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        let mut put = |at: usize, value: &[u8]| b[at..at + value.len()].copy_from_slice(value);
        put(offset::CAPACITY, &self.capacity.to_le_bytes());
        put(offset::SIZE_MAX, &SIZE_MAX.to_le_bytes());
        put(offset::SEG_MAX, &self.seg_max.to_le_bytes());
        put(offset::BLK_SIZE, &BLK_SIZE.to_le_bytes());
        put(offset::WRITEBACK, &[self.writeback]);
        put(offset::NUM_QUEUES, &self.num_queues.to_le_bytes());
        if !self.read_only {
            put(
                offset::MAX_DISCARD_SECTORS,
                &MAX_DISCARD_SECTORS.to_le_bytes(),
            );
            put(offset::MAX_DISCARD_SEG, &MAX_DISCARD_SEG.to_le_bytes());
            put(offset::DISCARD_SECTOR_ALIGNMENT, &1u32.to_le_bytes());
            put(
                offset::MAX_WRITE_ZEROES_SECTORS,
                &MAX_WRITE_ZEROES_SECTORS.to_le_bytes(),
            );
            put(
                offset::MAX_WRITE_ZEROES_SEG,
                &MAX_WRITE_ZEROES_SEG.to_le_bytes(),
            );
            put(offset::WRITE_ZEROES_MAY_UNMAP, &[1]);
        }
        b
    }
}
