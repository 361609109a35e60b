//! Guest addresses of the split-ring fields, from the offsets in `virtio_lm_spec::ring`.

use virtio_lm_spec::ring::{
    desc_offset, split_avail_entry_offset, split_avail_event_offset, split_used_elem_offset,
    split_used_event_offset,
};
use vm_memory::{Address, GuestAddress};

use crate::config::QueueConfig;

fn at(area: GuestAddress, offset: usize) -> GuestAddress {
    area.unchecked_add(offset as u64)
}

pub(crate) fn desc(config: &QueueConfig, index: u16) -> GuestAddress {
    at(config.desc_table, desc_offset(index))
}

/// The field addresses of one ring, `le16 flags; le16 idx; entries[size]; le16 event`: the
/// avail ring in the driver area and the used ring in the device area share that shape.
macro_rules! split_ring {
    ($area:ident: $flags:ident, $idx:ident, $entry:ident @ $entry_offset:ident,
        $event:ident @ $event_offset:ident) => {
        pub(crate) fn $flags(config: &QueueConfig) -> GuestAddress {
            config.$area
        }

        pub(crate) fn $idx(config: &QueueConfig) -> GuestAddress {
            at(config.$area, 2)
        }

        /// Entry for free-running index `idx` (taken modulo the size, a power of two).
        pub(crate) fn $entry(config: &QueueConfig, idx: u16) -> GuestAddress {
            at(config.$area, $entry_offset(idx & (config.size - 1)))
        }

        /// The event field right after the last entry.
        pub(crate) fn $event(config: &QueueConfig) -> GuestAddress {
            at(config.$area, $event_offset(config.size))
        }
    };
}

split_ring!(driver_area: avail_flags, avail_idx, avail_entry @ split_avail_entry_offset,
    used_event @ split_used_event_offset);
split_ring!(device_area: used_flags, used_idx, used_entry @ split_used_elem_offset,
    avail_event @ split_avail_event_offset);
