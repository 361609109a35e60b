//! Split virtqueues: descriptor table, available ring, used ring.

mod device;
mod driver;
mod layout;

pub(crate) use device::validate_inflight;
pub use device::SplitQueue;
pub use driver::SplitDriver;

#[cfg(test)]
mod tests;
