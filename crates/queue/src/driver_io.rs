//! Guest-memory access and checks the split and packed driver models share.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::chain::BufferSpec;
use crate::config::QueueConfig;
use crate::error::{mem_err, DriverError};
use crate::kind::RingKind;

/// Checks that `config` lays out a `kind` ring inside `mem` and zeroes its three areas, as a
/// driver does before it hands the rings to the device.
pub(crate) fn zero_rings<M: GuestMemory + ?Sized>(
    config: &QueueConfig,
    kind: RingKind,
    mem: &M,
) -> Result<(), DriverError> {
    config.validate_as(kind, mem)?;
    let areas = [config.desc_table, config.driver_area, config.device_area];
    for (addr, len) in areas.into_iter().zip(config.area_lengths()) {
        mem.write_slice(&vec![0u8; len as usize], addr)
            .map_err(|_| mem_err(addr))?;
    }
    Ok(())
}

/// A chain needs at least one buffer, and its readable buffers come before the writable ones.
pub(crate) fn check_order(buffers: &[BufferSpec]) -> Result<(), DriverError> {
    if buffers.is_empty() {
        return Err(DriverError::EmptyChain);
    }
    if buffers.windows(2).any(|w| w[0].writable && !w[1].writable) {
        return Err(DriverError::ReadableAfterWritable);
    }
    Ok(())
}

/// Reads a little-endian ring field with Acquire: what the device wrote before it is seen too.
pub(crate) fn load_u16<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
) -> Result<u16, DriverError> {
    mem.load::<u16>(addr, Ordering::Acquire)
        .map(u16::from_le)
        .map_err(|_| mem_err(addr))
}

/// Stores a little-endian ring field with `order`.
pub(crate) fn store_u16<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    value: u16,
    order: Ordering,
) -> Result<(), DriverError> {
    mem.store(value.to_le(), addr, order)
        .map_err(|_| mem_err(addr))
}
