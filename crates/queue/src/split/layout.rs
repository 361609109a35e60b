//! Guest addresses of the split-ring fields.

use vm_memory::{Address, GuestAddress};

use crate::config::QueueConfig;

pub(crate) fn desc(config: &QueueConfig, index: u16) -> GuestAddress {
    config.desc_table.unchecked_add(16 * u64::from(index))
}

pub(crate) fn avail_flags(config: &QueueConfig) -> GuestAddress {
    config.driver_area
}

pub(crate) fn avail_idx(config: &QueueConfig) -> GuestAddress {
    config.driver_area.unchecked_add(2)
}

/// Entry for free-running index `idx` (taken modulo the size, a power of two).
pub(crate) fn avail_entry(config: &QueueConfig, idx: u16) -> GuestAddress {
    let slot = u64::from(idx & (config.size - 1));
    config.driver_area.unchecked_add(4 + 2 * slot)
}

pub(crate) fn used_event(config: &QueueConfig) -> GuestAddress {
    config
        .driver_area
        .unchecked_add(4 + 2 * u64::from(config.size))
}

pub(crate) fn used_flags(config: &QueueConfig) -> GuestAddress {
    config.device_area
}

pub(crate) fn used_idx(config: &QueueConfig) -> GuestAddress {
    config.device_area.unchecked_add(2)
}

pub(crate) fn used_entry(config: &QueueConfig, idx: u16) -> GuestAddress {
    let slot = u64::from(idx & (config.size - 1));
    config.device_area.unchecked_add(4 + 8 * slot)
}

pub(crate) fn avail_event(config: &QueueConfig) -> GuestAddress {
    config
        .device_area
        .unchecked_add(4 + 8 * u64::from(config.size))
}
