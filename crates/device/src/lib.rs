//! The virtio device core of virtio-lm: the device status state machine with the migration
//! facilities of the five seed proposals, the device context a device migrates in, and the
//! [`VirtioDevice`] trait device types implement. [`DeviceCore`]'s documentation is the
//! embedding guide: the whole host-side migration sequence as a runnable example.
//!
//! - seed 002 DEVICE_NEEDS_RESET: an unrecoverable error stops all processing and notifies a
//!   configuration change; the driver recovers by reset.
//! - seed 000 DEVICE_STOPPED: the driver stops the device (in-process requests complete first)
//!   and resumes it by clearing the bit.
//! - seed 001 queue state: kept across reset, initial after ACKNOWLEDGE, readable while the
//!   device does not run, writable between FEATURES_OK and DRIVER_OK, validated at start.
//! - seed 003 SUSPEND (with the merged resolution of its review): the device finishes its work,
//!   records queue state, clears DRIVER_OK and presents SUSPEND; DRIVER_OK resumes it.
//!
//! - seed 004 admin device migration, device side: the owner's admin modes Active, Stop and
//!   Freeze ([`DeviceCore::set_admin_mode`]) and the device context ([`context`]: format,
//!   [`DeviceContext`], [`DeviceCore::save_context`] and [`DeviceCore::restore_context`]). The
//!   admin virtqueue and its commands are the pci crate's.
//!
//! While stopped, suspended or in admin Stop or Freeze the core touches no guest memory and
//! raises no interrupt; kicks are latched and processed on resume, and every queue is re-checked
//! so no notification is lost. [`Worker`] runs a core on eventfds.
//!
//! ```
//! use std::sync::Arc;
//! use virtio_lm_device::{CoreOptions, DeviceCore, DeviceError, InterruptCounter};
//! use virtio_lm_device::{QueueAccess, VirtioDevice};
//! use virtio_lm_spec::DeviceStatus;
//! use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};
//!
//! /// A device type with one queue of 64 that returns every buffer unwritten.
//! struct Sink;
//!
//! impl<M: GuestMemory + ?Sized> VirtioDevice<M> for Sink {
//!     fn device_type(&self) -> u32 {
//!         0xfffc
//!     }
//!     fn queue_max_sizes(&self) -> Vec<u16> {
//!         vec![64]
//!     }
//!     fn config_len(&self) -> usize {
//!         0 // no configuration space
//!     }
//!     fn process_queue(&mut self, _: u16, q: &mut QueueAccess<'_, M>) -> Result<(), DeviceError> {
//!         while let Some(chain) = q.pop()? {
//!             q.add_used(chain.id(), 0)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
//! let irq = Arc::new(InterruptCounter::default());
//! let mut core = DeviceCore::new(Box::new(Sink), mem, irq, CoreOptions::default()).unwrap();
//!
//! core.write_status(DeviceStatus::ACKNOWLEDGE);
//! core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
//! core.set_driver_features(core.device_features());
//! core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
//! assert!(core.status().contains(DeviceStatus::FEATURES_OK));
//! ```

#![deny(missing_docs)]

pub mod context;
mod core;
mod counter;
mod device;
mod error;
mod interrupt;
mod queues;
mod stoppable;
#[cfg(feature = "test-utils")]
pub mod testing;
mod worker;

pub use crate::context::{ContextError, DeviceContext};
pub use crate::core::{
    AdminModeChange, AdminModeError, AdminModeStatus, CoreError, CoreOptions, DeviceCore,
};
pub use counter::Counter;
pub use device::{
    read_config_bytes, AccessObserver, Handover, QueueAccess, Quiesce, QuiesceMode, VirtioDevice,
};
pub use error::{ChainFault, DeviceError};
pub use interrupt::{InterruptCounter, Interrupts};
pub use queues::QueueRegisters;
pub use stoppable::StoppableThread;
pub use worker::Worker;
