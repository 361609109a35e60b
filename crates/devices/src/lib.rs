//! Device types of virtio-lm, built on the device core (`virtio-lm-device`): [`Blk`], a
//! virtio-blk device over an image file, [`Net`], a virtio-net device over a UDP datagram
//! tunnel (see [`net`]), and [`Rng`], virtio-rng over an [`EntropySource`].
//!
//! The blk device completes requests asynchronously and out of order on a small pool of
//! backend threads, and quiesces for migration either by draining or by recording in-flight
//! requests, which whoever resumes the queue state re-executes exactly once (see [`blk`] for
//! the design). Its blk-specific device context fields (spec-decisions §5, 0x02xx) are in
//! `save_state`.
//!
//! ```
//! use std::sync::Arc;
//! use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
//! use virtio_lm_devices::{blk::config, Blk, BlkOptions};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let path = std::env::temp_dir().join(format!("virtio-lm-doc-{}.img", std::process::id()));
//! std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
//!
//! let blk = Blk::open(BlkOptions::new(&path)).unwrap();
//! // Take the completion eventfd before the device moves into the core: the device's worker
//! // watches it and calls `process_pending` when backend requests finish.
//! let _wake = blk.completion_fd();
//!
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
//! let irq = Arc::new(InterruptCounter::default());
//! let core = DeviceCore::new(Box::new(blk), mem, irq, CoreOptions::default()).unwrap();
//! assert_eq!(core.device_type(), config::VIRTIO_ID_BLOCK);
//!
//! let mut capacity = [0u8; 8];
//! core.read_config(config::offset::CAPACITY, &mut capacity);
//! assert_eq!(u64::from_le_bytes(capacity), 2048, "1 MiB in 512-byte sectors");
//! drop(core);
//! std::fs::remove_file(&path).unwrap();
//! ```
//!
//! Wiring the completion eventfd: pass [`Blk::completion_fd`] (or [`Net::wake_fd`]) to
//! `Worker::spawn_with_wakers` beside the queue kicks; the worker then calls
//! `DeviceCore::service` under the core's lock whenever the device has finished work in the
//! background.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod blk;
pub mod conformance;
mod guest_io;
pub mod net;
mod rng;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use blk::{BackendStats, Blk, BlkError, BlkOptions, Faults, Gate, RequestInfo, RequestKind};
pub use net::{Announcer, Net, NetError, NetFaults, NetOptions, NetStats};
pub use rng::{CountingEntropy, EntropySource, HostEntropy, Rng, VIRTIO_ID_RNG};
