//! A simulated VM for virtio-lm: the guest a live migration moves.
//!
//! - [`memory`]: guest RAM as vm-memory regions over one memfd, each with an `AtomicBitmap`
//!   that every write through vm-memory marks (device data, used rings and packed
//!   descriptors, the guest drivers' own writes), and the dirty log a migration harvests:
//!   [`VmMemory::start_dirty_log`], [`DirtyLog::harvest`] (get-and-clear, as coalesced
//!   [`DirtyRange`]s), stop on [`DirtyLog::stop`] or drop (a cancelled migration).
//! - [`Machine`]: an SR-IOV owner (the host's PF with its admin queue, in host memory) whose
//!   members are the guest's virtio-blk and virtio-net functions, a device worker per member,
//!   and vCPU threads running the verifying blk and net workloads through the guest drivers
//!   plus a memory dirtier ([`MachineOptions`], the flags of `virtio-lm vm`). The
//!   vCPUs pause at a safe point ([`pause`]) and resume.
//! - Continuing a guest elsewhere: [`Machine::vcpu_state`] (driver ring bookkeeping, workload
//!   ledgers, the dirtier's position: [`VcpuState`], postcard bytes) and
//!   [`Machine::freeze_devices`] (seed 004 Stop, Freeze, DEV_CTX_READ) on the source;
//!   [`Machine::incoming`], a copy of guest memory and [`Machine::restore`] on the destination.
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
//!
//! A machine with only the dirtier (blk and net need an image and an echo peer; see the
//! crate's tests):
//!
//! ```
//! use std::time::Duration;
//! use virtio_lm_vm::{Machine, MachineOptions, MIB};
//!
//! let options = MachineOptions { memory: 20 * MIB, dirty_rate_mib: 4, working_set_mib: 1, ..MachineOptions::default() };
//! let machine = Machine::start(options).unwrap();
//! machine.pause().unwrap();
//! let state = machine.vcpu_state().unwrap();
//! assert!(state.blk.is_none() && state.net.is_none());
//! machine.resume();
//! let report = machine.finish(Duration::from_secs(1)).unwrap();
//! assert!(report.blk.is_none(), "no blk function");
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod build;
mod ctrl_replay;
mod ctrl_shadow;
pub mod dirty;
pub mod guest;
mod handover;
mod inband;
mod machine;
pub mod memory;
pub mod options;
mod parts;
pub mod pause;
mod progress;
mod registers;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use dirty::DirtyRange;
pub use guest::VcpuState;
pub use handover::MemberInfo;
pub use inband::StatusBit;
pub use machine::{Machine, MachineError, MachineReport, PAUSE_TIMEOUT};
pub use memory::{DirtyLog, GuestRam, MemoryError, RamRange, VmMemory, PAGE_SIZE};
pub use options::{GuestLayout, MachineOptions, NetEndpoints, RingFormat, MIB};
pub use virtio_lm_pci::FunctionRegisters;
