//! Guest addresses of the packed-ring fields and the flag rules of the wrap counters.

use virtio_lm_spec::ring::{VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use vm_memory::{Address, GuestAddress};

use crate::config::QueueConfig;

/// Byte offset of `flags` in a packed descriptor.
const FLAGS_OFFSET: u64 = 14;
/// Byte offset of `len` in a packed descriptor (`len` and `id` follow each other).
pub(crate) const LEN_OFFSET: u64 = 8;
/// Byte offset of `flags` in an event suppression structure (`desc` is at 0).
const EVENT_FLAGS_OFFSET: u64 = 2;

/// Descriptor slot `index`, which the caller keeps below the size (the configuration was
/// validated, so the whole ring is inside guest memory).
pub(crate) fn desc(config: &QueueConfig, index: u16) -> GuestAddress {
    config.desc_table.unchecked_add(16 * u64::from(index))
}

pub(crate) fn desc_flags(config: &QueueConfig, index: u16) -> GuestAddress {
    desc(config, index).unchecked_add(FLAGS_OFFSET)
}

/// `desc` field of the driver event suppression structure (controls used notifications).
pub(crate) fn driver_event_desc(config: &QueueConfig) -> GuestAddress {
    config.driver_area
}

pub(crate) fn driver_event_flags(config: &QueueConfig) -> GuestAddress {
    config.driver_area.unchecked_add(EVENT_FLAGS_OFFSET)
}

/// `desc` field of the device event suppression structure (controls available notifications).
pub(crate) fn device_event_desc(config: &QueueConfig) -> GuestAddress {
    config.device_area
}

pub(crate) fn device_event_flags(config: &QueueConfig) -> GuestAddress {
    config.device_area.unchecked_add(EVENT_FLAGS_OFFSET)
}

/// AVAIL/USED bits of a descriptor the driver makes available with wrap counter `wrap`:
/// AVAIL = wrap, USED = its inverse.
pub(crate) fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// AVAIL/USED bits of a descriptor the device uses with wrap counter `wrap`: both equal to it.
pub(crate) fn used_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
    } else {
        0
    }
}

/// Whether `flags` mark a descriptor available for a device whose
/// `last_avail_wrap_counter` is `wrap`: AVAIL == wrap and USED != wrap.
pub(crate) fn is_avail(flags: u16, wrap: bool) -> bool {
    flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) == avail_bits(wrap)
}

/// Whether `flags` mark a descriptor used for a driver whose used wrap counter is `wrap`:
/// AVAIL == USED == wrap.
pub(crate) fn is_used(flags: u16, wrap: bool) -> bool {
    flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) == used_bits(wrap)
}
