//! Typed errors for every way a ring, a chain or a saved state can be wrong.
//!
//! Errors carry plain numbers (no `vm_memory` error values) so they are `Clone` and comparable:
//! tests assert the exact rejection, and a device core can store the first error it saw.

use thiserror::Error;
use vm_memory::GuestAddress;

use crate::kind::RingKind;

/// Which guest-memory area of a virtqueue an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingArea {
    /// Descriptor table (split) or descriptor ring (packed).
    Descriptors,
    /// Driver area: split available ring, packed driver event suppression.
    Driver,
    /// Device area: split used ring, packed device event suppression.
    Device,
}

/// A queue configuration that the device cannot operate.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The queue type does not match the ring format of the configuration.
    #[error("Configuration is for a {0:?} ring")]
    WrongKind(RingKind),
    /// Split sizes must be a power of two in 1..=32768; packed sizes any value in 1..=32768.
    #[error("Invalid queue size {size}")]
    InvalidSize {
        /// The size the driver configured.
        size: u16,
    },
    /// A ring area does not have the alignment its layout requires.
    #[error("{area:?} area at {addr:#x} is not aligned to {align}")]
    Misaligned {
        /// The area.
        area: RingArea,
        /// Its guest address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
    /// A ring area is not entirely inside guest memory.
    #[error("{area:?} area {addr:#x}+{len:#x} is outside guest memory")]
    OutOfMemory {
        /// The area.
        area: RingArea,
        /// Its guest address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
}

/// A descriptor chain the device refuses to process.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// A head or `next` index points past the table it indexes.
    #[error("Descriptor index {index} is outside a table of {limit} entries")]
    IndexOutOfRange {
        /// The offending index.
        index: u32,
        /// Number of entries in the table.
        limit: u32,
    },
    /// More descriptors than the table holds: a loop, or a chain longer than the queue.
    #[error("Descriptor chain longer than {limit} descriptors (loop or overlong chain)")]
    ChainTooLong {
        /// The bound that was exceeded.
        limit: u32,
    },
    /// An indirect descriptor inside an indirect table.
    #[error("Indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// INDIRECT and NEXT set on one descriptor, which the driver must not do.
    #[error("Descriptor sets both INDIRECT and NEXT")]
    IndirectWithNext,
    /// INDIRECT used although VIRTIO_F_INDIRECT_DESC was not negotiated.
    #[error("Indirect descriptor without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// An indirect table whose length is zero, not a multiple of 16 or over 32768 entries.
    #[error("Indirect table length {len} is not a positive multiple of 16 up to 32768 entries")]
    BadIndirectTableLength {
        /// The `len` of the indirect descriptor.
        len: u32,
    },
    /// A device-readable descriptor after a device-writable one.
    #[error("Device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// The readable or writable lengths of a chain do not fit in 32 bits.
    #[error("Total buffer length of the chain overflows 32 bits")]
    LengthOverflow,
    /// A buffer that is not entirely inside guest memory.
    #[error("Buffer {addr:#x}+{len:#x} is outside guest memory")]
    BufferOutOfMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A descriptor (in the table or an indirect table) that cannot be read.
    #[error("Descriptor at {addr:#x} is outside guest memory")]
    DescriptorOutOfMemory {
        /// Guest address of the descriptor.
        addr: u64,
    },
}

/// Errors of the device side of a queue at run time.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QueueError {
    /// The next available chain is malformed.
    #[error("Malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// The driver moved `avail.idx` further than the queue size past the device.
    #[error("avail.idx {avail_idx} is more than {size} entries past last_avail_idx {next_avail}")]
    AvailIndexJump {
        /// The index the driver published.
        avail_idx: u16,
        /// The device's next available index.
        next_avail: u16,
        /// The queue size.
        size: u16,
    },
    /// A ring access outside guest memory (the ring moved or memory shrank).
    #[error("Ring access at {addr:#x} failed")]
    RingAccess {
        /// Guest address that could not be accessed.
        addr: u64,
    },
    /// `add_used` for a buffer the device does not hold.
    #[error("Buffer id {id} is not in flight")]
    NotInFlight {
        /// The id passed to `add_used`.
        id: u16,
    },
    /// A packed buffer id that is already in flight, or out of range for tracking.
    #[error("Buffer id {id} is already in flight or not below the queue size")]
    BadBufferId {
        /// The id from the chain's last descriptor.
        id: u16,
    },
    /// `add_used` with a length larger than the chain's writable part.
    #[error("Used length {len} exceeds the {writable} writable bytes of buffer {id}")]
    UsedLenTooLarge {
        /// Buffer id.
        id: u16,
        /// Length passed to `add_used`.
        len: u32,
        /// Writable bytes of the chain.
        writable: u32,
    },
    /// Queue state was requested while used entries are written but not published.
    #[error("{count} used entries are not yet published")]
    UnpublishedUsed {
        /// How many entries wait for `publish_used`.
        count: u16,
    },
}

/// A saved queue state that cannot be restored; the queue is left unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// The configuration the state belongs to is itself invalid.
    #[error("Invalid queue configuration: {0}")]
    Config(#[from] ConfigError),
    /// A packed ring position at or past the queue size.
    #[error("{which} index {index} is not below the queue size {size}")]
    IndexOutOfRange {
        /// `avail_state` or `used_state`.
        which: &'static str,
        /// The decoded index.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// Split: the used state must be zero (split has none).
    #[error("Split queues have no used state, got {0:#x}")]
    SplitUsedState(u16),
    /// The driver's published index is more than a queue size ahead of the state.
    #[error("avail.idx {avail_idx} is more than {size} entries past last_avail_idx {last_avail}")]
    AvailAhead {
        /// avail.idx read from guest memory.
        avail_idx: u16,
        /// The restored last_avail_idx.
        last_avail: u16,
        /// The queue size.
        size: u16,
    },
    /// The in-flight list does not account for the distance between the available and used
    /// positions: some buffer would be lost or completed twice.
    #[error(
        "{inflight} in-flight ring slots, but available and used positions are {distance} apart"
    )]
    InflightMismatch {
        /// Ring slots (split: buffers) recorded in flight.
        inflight: u32,
        /// Distance from the used position to the available position.
        distance: u32,
    },
    /// An in-flight entry that is malformed: duplicate or out-of-range id, bad segments.
    #[error("In-flight buffer {id} is invalid: {reason}")]
    BadInflight {
        /// The buffer id.
        id: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Ring memory could not be read while validating.
    #[error("Ring access at {addr:#x} failed")]
    RingAccess {
        /// Guest address that could not be read.
        addr: u64,
    },
}

/// Errors of the driver side (the guest driver model).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DriverError {
    /// The ring cannot take a chain of this many descriptors now.
    #[error("Not enough free descriptors ({free} free, {needed} needed)")]
    QueueFull {
        /// Free descriptors.
        free: u16,
        /// Descriptors the chain needs.
        needed: u16,
    },
    /// A chain needs at least one buffer.
    #[error("A chain needs at least one buffer")]
    EmptyChain,
    /// A readable buffer was listed after a writable one.
    #[error("Readable buffers must precede writable ones")]
    ReadableAfterWritable,
    /// The device returned an id the driver has not made available.
    #[error("Device used buffer id {id}, which is not outstanding")]
    UnknownUsedId {
        /// The id in the used entry.
        id: u32,
    },
    /// The device moved used.idx further than the queue size.
    #[error("used.idx moved {distance} entries, more than the queue size")]
    UsedIndexJump {
        /// Distance moved.
        distance: u16,
    },
    /// Ring or table access failed.
    #[error("Guest memory access at {addr:#x} failed")]
    MemoryAccess {
        /// Guest address.
        addr: u64,
    },
    /// The configuration given to the driver is unusable.
    #[error("Invalid queue configuration: {0}")]
    Config(#[from] ConfigError),
}

/// The error of a failed ring access at `addr` on the device side.
pub(crate) fn ring_err(addr: GuestAddress) -> QueueError {
    QueueError::RingAccess { addr: addr.0 }
}

/// The error of a failed guest-memory access at `addr` on the driver side.
pub(crate) fn mem_err(addr: GuestAddress) -> DriverError {
    DriverError::MemoryAccess { addr: addr.0 }
}
