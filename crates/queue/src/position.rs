//! The ring position of a stopped virtio 1.4 device, recovered from guest memory
//! (spec-decisions §32).
//!
//! virtio 1.4 has no register or device part for a queue's runtime position. A stopped device
//! has used every buffer it observed, so its next buffer to take is its next buffer to use:
//!
//! - split: the position is `used.idx`, checked against `avail.idx` and the queue size
//!   ([`split_position`]);
//! - packed: the descriptor flags cannot tell where the device stands (a used chain leaves its
//!   later slots looking like fresh available descriptors, a used descriptor carries no chain
//!   length, and with IN_ORDER one used descriptor covers several chains). With EVENT_IDX the
//!   stopping device writes its position into the device event suppression structure
//!   ([`write_packed_position`]): flags DESC, `desc` = next index | wrap counter << 15, which
//!   asks the driver for a notification at exactly the descriptor the device takes next, a
//!   legal write the dirty log sees. The destination reads it back and checks it against every
//!   descriptor of the ring ([`packed_position`]).
//!
//! Nothing here comes from guest-driver state, and hostile memory gives a [`PositionError`],
//! never a panic.

use std::sync::atomic::Ordering;

use thiserror::Error;
use virtio_lm_spec::ring::{RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE};
use vm_memory::{Address, GuestAddress, GuestMemory};

use crate::config::QueueConfig;
use crate::error::ConfigError;
use crate::event::RingPosition;
use crate::kind::RingKind;
use crate::packed::layout;
use crate::state::QueueState;
use crate::view::RingView;

/// Where a stopped queue stands: the next buffer to take, which is also the next to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueuePosition {
    /// Split: the free-running available/used index (`last_avail_idx` = `used.idx`).
    Split(u16),
    /// Packed: the next descriptor slot and the wrap counter there, for both the available
    /// and the used side.
    Packed(RingPosition),
}

impl QueuePosition {
    /// The queue state a device starts from at this position: nothing in flight, no
    /// notification owed (the stop notified what it used).
    pub fn queue_state(self) -> QueueState {
        let (avail_state, used_state) = match self {
            Self::Split(idx) => (idx, 0),
            Self::Packed(position) => (position.to_state(), position.to_state()),
        };
        QueueState {
            avail_state,
            used_state,
            notification_owed: false,
            inflight: Vec::new(),
        }
    }
}

/// Why a ring position could not be recovered from guest memory. The values are the ones read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PositionError {
    /// The ring itself is not usable: bad size, misaligned or outside guest memory.
    #[error("the ring is not usable: {0}")]
    Ring(#[from] ConfigError),
    /// A ring field could not be read or written (cannot happen after the ring was checked,
    /// unless memory changed under us).
    #[error("guest memory at {addr:#x} is not accessible")]
    Memory {
        /// The address.
        addr: u64,
    },
    /// Split: the driver made more buffers available than the ring holds past the used index.
    #[error(
        "split ring: avail.idx {avail_idx} is {ahead} entries past used.idx {used_idx}, more \
         than the queue size {size}: not the ring of a stopped device"
    )]
    SplitAhead {
        /// `avail.idx` read from the driver area.
        avail_idx: u16,
        /// `used.idx` read from the device area.
        used_idx: u16,
        /// `(avail_idx - used_idx) mod 2^16`.
        ahead: u16,
        /// The queue size.
        size: u16,
    },
    /// Packed without VIRTIO_F_EVENT_IDX: DESC mode is not allowed, so no position is recorded.
    #[error("packed ring without VIRTIO_F_EVENT_IDX: the device cannot record its position")]
    NoEventIdx,
    /// Packed: the device event suppression structure does not hold a recorded position.
    #[error(
        "packed ring: device event suppression flags are {flags:#06x}, not DESC (0x0002): the \
         stopped device recorded no position"
    )]
    NotRecorded {
        /// The `flags` field read.
        flags: u16,
    },
    /// Packed: the recorded index is not a slot of the ring.
    #[error(
        "packed ring: recorded position {index} (wrap {wrap}) is not below the queue size {size}"
    )]
    IndexOutOfRange {
        /// The recorded index.
        index: u16,
        /// The recorded wrap counter.
        wrap: bool,
        /// The queue size.
        size: u16,
    },
    /// Packed: a descriptor is used in a lap the device had not reached at the recorded
    /// position: the device used past it (a stale position), or the ring is not this
    /// queue's.
    #[error(
        "packed ring: descriptor {slot} has flags {flags:#06x}, used with wrap counter {wrap}, \
         which the device cannot have written before position {index} (wrap {position_wrap})"
    )]
    UsedPast {
        /// The descriptor slot.
        slot: u16,
        /// Its flags.
        flags: u16,
        /// The wrap counter its AVAIL and USED bits both show.
        wrap: bool,
        /// The recorded index.
        index: u16,
        /// The recorded wrap counter.
        position_wrap: bool,
    },
}

/// The position of a stopped split queue: `used.idx`, after checking that `avail.idx` is at
/// most the queue size ahead of it (the driver may have made buffers available the device
/// never observed; more than the ring holds is an inconsistent ring) and that the ring lies in
/// guest memory.
pub fn split_position<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
) -> Result<u16, PositionError> {
    config.validate_as(RingKind::Split, mem)?;
    let view = RingView::new(mem, config);
    // `idx` follows `flags` in both the available and the used ring.
    let avail_idx = load(&view, config.driver_area.unchecked_add(2))?;
    let used_idx = load(&view, config.device_area.unchecked_add(2))?;
    let ahead = avail_idx.wrapping_sub(used_idx);
    if ahead > config.size {
        return Err(PositionError::SplitAhead {
            avail_idx,
            used_idx,
            ahead,
            size: config.size,
        });
    }
    Ok(used_idx)
}

/// What a stopping device with nothing in flight writes on a packed queue with EVENT_IDX:
/// `desc` = `position` (index | wrap counter << 15), then `flags` = DESC, through the same
/// guest-memory path as every ring write (so the dirty log sees it).
pub fn write_packed_position<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
    position: RingPosition,
) -> Result<(), PositionError> {
    check_packed(mem, config)?;
    if position.index >= config.size {
        return Err(PositionError::IndexOutOfRange {
            index: position.index,
            wrap: position.wrap_counter,
            size: config.size,
        });
    }
    let view = RingView::new(mem, config);
    store(
        &view,
        layout::device_event_desc(config),
        position.to_state(),
    )?;
    // Release: a driver that reads DESC in `flags` sees the `desc` written before it.
    store(
        &view,
        layout::device_event_flags(config),
        RING_EVENT_FLAGS_DESC,
    )
}

/// What a stopping device writes when it has no position to give (chains still in flight):
/// `flags` = DISABLE, so the destination refuses the queue ([`PositionError::NotRecorded`])
/// instead of starting it from a stale `desc`.
pub fn withdraw_packed_position<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
) -> Result<(), PositionError> {
    check_packed(mem, config)?;
    let view = RingView::new(mem, config);
    store(
        &view,
        layout::device_event_flags(config),
        RING_EVENT_FLAGS_DISABLE,
    )
}

/// The position a stopped packed queue recorded with [`write_packed_position`], checked
/// against every descriptor of the ring (spec-decisions §32): the flags must be exactly DESC,
/// the index below the size, and no descriptor may read as used in a lap the device had not
/// reached at that position. For each slot the device last passed in lap `w` (slots before the
/// position: the current lap; from the position on: the previous one, or none before the first
/// wrap, where the ring is still zero), a used descriptor of lap `!w` is impossible: the
/// driver only ever writes AVAIL != USED, and the device writes used descriptors only at its
/// used position, which never passed the recorded one. Nothing else is refused: a chain's later
/// slots, descriptors the driver made available after the stop and IN_ORDER batches all fit.
pub fn packed_position<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
) -> Result<RingPosition, PositionError> {
    check_packed(mem, config)?;
    let view = RingView::new(mem, config);
    let flags = load(&view, layout::device_event_flags(config))?;
    if flags != RING_EVENT_FLAGS_DESC {
        return Err(PositionError::NotRecorded { flags });
    }
    let position = RingPosition::from_state(load(&view, layout::device_event_desc(config))?);
    let (index, wrap) = (position.index, position.wrap_counter);
    if index >= config.size {
        return Err(PositionError::IndexOutOfRange {
            index,
            wrap,
            size: config.size,
        });
    }
    for slot in 0..config.size {
        let last_pass = if slot < index { wrap } else { !wrap };
        let flags = load(&view, layout::desc_flags(config, slot))?;
        if layout::is_used(flags, !last_pass) {
            return Err(PositionError::UsedPast {
                slot,
                flags,
                wrap: !last_pass,
                index,
                position_wrap: wrap,
            });
        }
    }
    Ok(position)
}

/// [`split_position`] or [`packed_position`], as the configuration's ring format says.
pub fn read_position<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
) -> Result<QueuePosition, PositionError> {
    match config.kind {
        RingKind::Split => split_position(mem, config).map(QueuePosition::Split),
        RingKind::Packed => packed_position(mem, config).map(QueuePosition::Packed),
    }
}

fn check_packed<M: GuestMemory + ?Sized>(
    mem: &M,
    config: &QueueConfig,
) -> Result<(), PositionError> {
    config.validate_as(RingKind::Packed, mem)?;
    if !config.features.event_idx {
        return Err(PositionError::NoEventIdx);
    }
    Ok(())
}

fn load<M: GuestMemory + ?Sized>(
    view: &RingView<'_, M>,
    addr: GuestAddress,
) -> Result<u16, PositionError> {
    view.load_u16(addr, Ordering::Acquire)
        .map_err(|a| PositionError::Memory { addr: a.0 })
}

fn store<M: GuestMemory + ?Sized>(
    view: &RingView<'_, M>,
    addr: GuestAddress,
    value: u16,
) -> Result<(), PositionError> {
    view.store_u16(addr, value, Ordering::Release)
        .map_err(|a| PositionError::Memory { addr: a.0 })
}
