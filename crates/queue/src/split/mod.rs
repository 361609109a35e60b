//! Split virtqueues: descriptor table, available ring, used ring.

mod device;
mod driver;
mod layout;

pub use device::SplitQueue;
pub use driver::SplitDriver;

#[cfg(test)]
mod tests;
