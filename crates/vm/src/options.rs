//! What a machine is built from — the options of `virtio-lm vm` (`--memory`, `--blk`, `--net
//! LOCAL,REMOTE`, `--ring`, `--queues`, `--dirty-rate`, `--working-set`) — and where the guest
//! lays its drivers out in RAM.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use virtio_lm_device::QuiesceMode;
use virtio_lm_spec::{Feature, Profile};

use crate::memory::PAGE_SIZE;

/// One MiB.
pub const MIB: u64 = 1 << 20;

/// The ring format the guest drivers ask for (`--ring split|packed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingFormat {
    /// Split virtqueues.
    #[default]
    Split,
    /// Packed virtqueues (VIRTIO_F_RING_PACKED).
    Packed,
}

/// The net function's tunnel (`--net LOCAL,REMOTE`): its own UDP address and the echo peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEndpoints {
    /// The device's local UDP address (a destination uses its own).
    pub local: SocketAddr,
    /// The echo peer.
    pub remote: SocketAddr,
}

/// How a [`Machine`](crate::Machine) is built.
#[derive(Clone, Debug)]
pub struct MachineOptions {
    /// Guest RAM in bytes (`--memory`), a multiple of [`PAGE_SIZE`].
    pub memory: u64,
    /// The blk function's image (`--blk`); no blk function without one.
    pub blk: Option<PathBuf>,
    /// The net function's tunnel (`--net`); no net function without one.
    pub net: Option<NetEndpoints>,
    /// Split or packed rings (`--ring`).
    pub ring: RingFormat,
    /// Request queues of blk and queue pairs of net (`--queues`).
    pub queues: u16,
    /// Bytes the dirtying guest thread writes per second, in MiB (`--dirty-rate`); 0: idle.
    pub dirty_rate_mib: u64,
    /// The dirtying thread's working set in MiB (`--working-set`).
    pub working_set_mib: u64,
    /// How the members quiesce on Stop: drain, or record in-flight (`--inflight`).
    pub quiesce: QuiesceMode,
    /// Seed of the workloads' plans.
    pub seed: u64,
    /// The net function's MAC address.
    pub mac: [u8; 6],
    /// Fill the RAM the guest does not use with pseudo-random bytes at boot (`--fill-random`),
    /// so a migration carries incompressible, non-zero pages: what the stream benchmark
    /// measures. Idle RAM is otherwise zero and travels as markers.
    pub fill_random: bool,
    /// Transport features the guest's drivers leave out of what they ask for (none by default;
    /// e.g. a guest without VIRTIO_F_SUSPEND, which the status strategy refuses at Start).
    pub guest_omits: Vec<Feature>,
    /// The numbering profile of every device, the owner's admin client and the guest drivers
    /// (`--profile seeds|v1.4`, spec-decisions §1): under v1.4 the owner speaks device parts
    /// instead of the seed-004 commands, and the drivers ask for SUSPEND on bit 43 and neither
    /// DEVICE_STOP nor QUEUE_STATE (spec-decisions §35).
    pub profile: Profile,
}

impl Default for MachineOptions {
    fn default() -> Self {
        Self {
            memory: 256 * MIB,
            blk: None,
            net: None,
            ring: RingFormat::Split,
            queues: 1,
            dirty_rate_mib: 0,
            working_set_mib: 32,
            quiesce: QuiesceMode::Drain,
            seed: 1,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            fill_random: false,
            guest_omits: Vec::new(),
            profile: Profile::Seeds,
        }
    }
}

/// Why the options cannot make a machine.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// RAM is not a whole number of pages, or too small for the layout.
    #[error("Guest memory of {memory:#x} bytes: {why}")]
    Memory {
        /// The size asked for.
        memory: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// `queues` is 0 or more than the devices support.
    #[error("{0} queues: between 1 and {MAX_QUEUES}")]
    Queues(u16),
}

/// Most request queues (blk) and queue pairs (net) a machine has.
pub const MAX_QUEUES: u16 = 8;

/// Where the guest's drivers live in RAM. Fixed addresses, so a destination rebuilt from the
/// same options finds the rings where the source's guest put them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// The blk driver's rings, then its request slots.
    pub blk_at: u64,
    /// The net driver's rings.
    pub net_rings_at: u64,
    /// The net driver's buffers.
    pub net_buffers_at: u64,
    /// The dirtying thread's working set: its first byte.
    pub working_set_at: u64,
    /// Bytes of the working set.
    pub working_set_len: u64,
}

/// Below this the guest keeps its drivers (the first MiB stays unused, like a real guest's).
const BLK_AT: u64 = MIB;
const NET_RINGS_AT: u64 = 8 * MIB;
const NET_BUFFERS_AT: u64 = 9 * MIB;
const WORKING_SET_AT: u64 = 16 * MIB;

impl MachineOptions {
    /// Checks the options and computes the layout.
    pub fn layout(&self) -> Result<GuestLayout, OptionsError> {
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(OptionsError::Queues(self.queues));
        }
        let bad = |why| OptionsError::Memory {
            memory: self.memory,
            why,
        };
        if !self.memory.is_multiple_of(PAGE_SIZE) {
            return Err(bad("not a whole number of pages"));
        }
        let working_set_len = self
            .working_set_mib
            .checked_mul(MIB)
            .ok_or(bad("the working set does not fit"))?;
        let end = WORKING_SET_AT
            .checked_add(working_set_len)
            .ok_or(bad("the working set does not fit"))?;
        if end > self.memory {
            return Err(bad("the drivers take 16 MiB and the working set the rest"));
        }
        Ok(GuestLayout {
            blk_at: BLK_AT,
            net_rings_at: NET_RINGS_AT,
            net_buffers_at: NET_BUFFERS_AT,
            working_set_at: WORKING_SET_AT,
            working_set_len,
        })
    }
}
