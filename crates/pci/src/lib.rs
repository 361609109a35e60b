//! The virtio-pci transport of virtio-lm: a virtio device core exposed as a PCI function, and
//! the driver that talks to it through registers only.
//!
//! - [`VirtioPciFunction`] is the device side: BAR 0 decoded into the common configuration
//!   (the 1.4 layout plus this project's seed 001 queue state registers at offsets 64 and 66),
//!   the ISR, the device-specific configuration and the notification area, over a
//!   [`virtio_lm_device::DeviceCore`] shared with its worker thread. Its PCI configuration space
//!   carries the virtio capability list ([`capabilities`]).
//! - [`MsixInterrupts`] is how the core's notifications leave: one eventfd per MSI-X vector, or
//!   the ISR and the INTx eventfd for a queue or configuration with no vector.
//! - [`PciDriver`] is the driver side over any [`PciTransport`]: it finds the regions in the
//!   capability list and runs the spec's initialisation, buffers and notifications, and the
//!   migration facilities — DEVICE_STOPPED (seed 000), queue state (seed 001), recovery from
//!   DEVICE_NEEDS_RESET (seed 002) and SUSPEND (seed 003).
//! - [`admin`] is seed 004's owner side: an SR-IOV owner function with admin virtqueues that
//!   sets its members' modes (Active, Stop, Freeze) and reads and writes their device
//!   contexts, and the driver's [`admin::AdminClient`] for those commands.
//!
//! ```
//! use std::sync::Arc;
//! use virtio_lm_device::testing::CountingDevice;
//! use virtio_lm_device::CoreOptions;
//! use virtio_lm_pci::{PciDriver, QueueSetup, VirtioPciFunction};
//! use virtio_lm_queue::BufferSpec;
//! use virtio_lm_spec::{Feature, Profile};
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
//! // A test device that writes a counted byte stream from 7 (virtio-rng's shape).
//! let device = CountingDevice::new(7, 16);
//! // Two MSI-X vectors (configuration, queue 0); kicks processed directly (no worker thread).
//! let function = Arc::new(
//!     VirtioPciFunction::with_device(Box::new(device), mem.clone(), CoreOptions::default(), 2, false)
//!         .unwrap(),
//! );
//!
//! let mut driver = PciDriver::new(function.clone(), mem.clone(), Profile::Seeds).unwrap();
//! let features = Profile::Seeds.feature_set(&[Feature::Version1]).unwrap();
//! driver.init(features, &[QueueSetup::new(0, 16, 0x1000)]).unwrap();
//!
//! driver.submit(0, &[BufferSpec::writable(0x8000, 4)]).unwrap();
//! let used = driver.collect_used(0).unwrap();
//! assert_eq!(used[0].len, 4);
//! let mut bytes = [0u8; 4];
//! mem.read_slice(&mut bytes, GuestAddress(0x8000)).unwrap();
//! assert_eq!(bytes, [7, 8, 9, 10]);
//! assert_eq!(function.interrupts().vector_count(1), 1);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
mod common;
mod driver;
mod error;
mod function;
mod interrupts;
pub mod layout;
mod notify;
mod pci_cfg;
#[cfg(feature = "test-utils")]
pub mod testing;
mod transport;

pub use driver::{
    discover, DriverQueue, DriverState, InitStep, Notifier, OutstandingChain, PciDriver,
    PollPolicy, QueueBookkeeping, QueueSetup, QueueStateRegs, Region, Regions, RingDriver,
    SavedState,
};
pub use error::PciError;
pub use function::{FunctionRegisters, KickMode, VirtioPciFunction};
pub use interrupts::MsixInterrupts;
pub use layout::{capabilities, VirtioCap};
pub use notify::NotificationData;
pub use transport::PciTransport;
