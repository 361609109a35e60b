//! Split and packed virtqueues, device side and driver side, whose state can be read out and
//! restored at any moment (seed 001, "virtqueue state").
//!
//! The device side ([`SplitQueue`], [`PackedQueue`], both [`DeviceQueue`]) takes descriptor
//! chains, validates them completely (a hostile driver gets a typed [`ChainError`], never a panic
//! or an unbounded loop), returns them used in any order, and decides about notifications. Its
//! [`QueueState`] carries the seed 001 available/used state plus what an exact resume also needs:
//! the notification still owed and the chains in flight, in the order they were taken.
//!
//! The driver side ([`SplitDriver`], [`PackedDriver`]) is the guest driver model used by tests,
//! the simulated VM and the conformance suite.
//!
//! virtio 1.4 has no queue state: [`read_position`] recovers a stopped device's ring position
//! from guest memory, checked ([`QueuePosition`], [`PositionError`]); a stopping packed device
//! records its own with [`write_packed_position`] (spec-decisions §32).
//!
//! ```
//! use virtio_lm_queue::{BufferSpec, DeviceQueue, PackedDriver, PackedQueue, QueueConfig, RingFeatures, RingKind};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
//! let (config, _) = QueueConfig::contiguous(RingKind::Packed, 5, GuestAddress(0), RingFeatures::default());
//! let mut driver = PackedDriver::new(config, &mem).unwrap();
//! let mut device = PackedQueue::new(config, &mem).unwrap();
//!
//! let id = driver.add_chain(&mem, &[BufferSpec::writable(0x8000, 512)]).unwrap();
//! driver.publish(&mem).unwrap();
//! let chain = device.pop(&mem).unwrap().expect("one chain");
//!
//! // Save mid-flight, resume on a fresh queue, and complete the request there.
//! let state = device.state().unwrap();
//! let mut resumed = PackedQueue::from_state(config, &state, &mem).unwrap();
//! assert_eq!(resumed.inflight(), vec![chain]);
//! resumed.add_used(&mem, id, 512).unwrap();
//! resumed.publish_used(&mem).unwrap();
//! assert_eq!(driver.collect_used(&mem).unwrap()[0].id, id);
//! ```

#![deny(missing_docs)]

/// Runs `$e` on the queue or driver of either format inside `$enum`, bound to `$x`: the one
/// dispatch [`Virtqueue`] and [`RingDriver`] share.
macro_rules! each_format {
    ($enum:ident, $self:expr, $x:ident => $e:expr) => {
        match $self {
            $enum::Split($x) => $e,
            $enum::Packed($x) => $e,
        }
    };
}

mod any;
mod chain;
mod config;
mod device_queue;
mod driver_io;
mod driver_state;
mod error;
mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod inflight;
mod kind;
mod packed;
mod position;
mod ring_driver;
mod split;
mod state;
#[cfg(test)]
mod test_rig;
mod view;
mod walk;

pub use any::Virtqueue;
pub use chain::{BufferSpec, DescriptorChain, SavedChain, Segment, UsedBuffer};
pub use config::{QueueConfig, RingFeatures, MAX_QUEUE_SIZE};
pub use device_queue::DeviceQueue;
pub use error::{ChainError, ConfigError, DriverError, QueueError, RingArea, StateError};
pub use event::{need_event, packed_need_event, RingPosition};
pub use kind::RingKind;
pub use packed::{PackedDriver, PackedQueue};
pub use position::{
    packed_position, read_position, split_position, withdraw_packed_position,
    write_packed_position, PositionError, QueuePosition,
};
pub use ring_driver::RingDriver;
pub use split::{SplitDriver, SplitQueue};
pub use state::QueueState;
