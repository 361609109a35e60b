//! Packed virtqueues (VIRTIO_F_RING_PACKED): one descriptor ring shared by driver and device,
//! whose slots change hands by the AVAIL/USED flag bits and the two wrap counters, plus a driver
//! and a device event suppression structure.

mod device;
mod driver;
pub(crate) mod layout;

pub use device::PackedQueue;
pub use driver::PackedDriver;

#[cfg(test)]
mod tests;
