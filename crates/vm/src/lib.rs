//! A simulated VM for virtio-lm: the guest a live migration moves.
//!
//! - [`memory`]: guest RAM as vm-memory regions over one memfd, each with an `AtomicBitmap`
//!   that every write through vm-memory marks (device data, used rings and packed
//!   descriptors, the guest drivers' own writes), and the dirty log a migration harvests:
//!   [`VmMemory::start_dirty_log`], [`DirtyLog::harvest`] (get-and-clear, as coalesced
//!   [`DirtyRange`]s), stop on [`DirtyLog::stop`] or drop (a cancelled migration).
//!
//! ```
//! use virtio_lm_vm::{DirtyRange, VmMemory, PAGE_SIZE};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let memory = VmMemory::new(1 << 20).unwrap();
//! let mut log = memory.start_dirty_log().unwrap();
//! memory.ram().write_obj(7u64, GuestAddress(0x3008)).unwrap();
//! assert_eq!(log.harvest(), vec![DirtyRange { gpa: 0x3000, len: PAGE_SIZE }]);
//! assert!(log.harvest().is_empty(), "a harvest clears what it took");
//! log.stop();
//! assert!(!memory.is_logging());
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod build;
pub mod dirty;
pub mod guest;
mod machine;
pub mod memory;
pub mod options;
pub mod pause;

pub use dirty::DirtyRange;
pub use guest::VcpuState;
pub use machine::{Machine, MachineError, MachineReport, PAUSE_TIMEOUT, PROFILE};
pub use memory::{DirtyLog, GuestRam, MemoryError, RamRange, VmMemory, PAGE_SIZE};
pub use options::{GuestLayout, MachineOptions, NetEndpoints, RingFormat, MIB};
