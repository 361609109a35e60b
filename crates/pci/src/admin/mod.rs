//! The owner side of seed 004: an SR-IOV owner function (the PF) with admin virtqueues that
//! controls its member functions (the VFs) out of band — their mode (Active, Stop, Freeze) and
//! their device context.
//!
//! - [`OwnerFunction`]: a [`VirtioPciFunction`] offering VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV
//!   around any device type, its admin queues after that type's queues (common-config offsets
//!   60/62, left out of `num_queues`), and an SR-IOV group ([`SriovCapability`]) whose members
//!   1..=NumVFs exist while VF Enable is set and are ordinary virtio-pci functions built by a
//!   [`MemberFactory`].
//! - The command framework (virtio 1.4 "Administration Facilities", spec-decisions §4 and §6): [`AdminCommand`] and
//!   [`AdminResult`] on the wire, validation and statuses (see the table in `dispatch.rs`), the
//!   seven device migration commands and the context streams (`context_io.rs`).
//! - [`AdminClient`]: the owner's driver side, typed calls over the admin queue.

mod client;
mod commands;
mod context_io;
mod decode;
mod device;
mod dispatch;
mod error;
mod framing;
#[cfg(feature = "fuzzing")]
mod fuzz;
#[cfg(feature = "fuzzing")]
mod fuzz_v14;
mod parts;
mod sriov;

use std::sync::{Arc, Mutex};

use virtio_lm_device::{CoreOptions, VirtioDevice};
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;

pub use client::{AdminClient, AdminClientConfig, Completion, ReadChunk, Ticket};
pub use decode::{
    opcode_name, qualifier_name, status_name, AdminCommand, AdminResult, MAX_COMMAND_DATA,
};
pub use error::AdminError;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub use fuzz::{fuzz_admin_command, fuzz_template_context};
#[cfg(feature = "fuzzing")]
pub use fuzz_v14::{fuzz_v14_admin_command, fuzz_v14_owner_ready, fuzz_v14_set_header};
pub use parts::{
    check_ring_positions, Defects, DevicePartsCodec, NoDeviceParts, DEVICE_GET_LIMIT,
    DEVICE_SET_LIMIT, SELF_SUPPORTED, SRIOV_SUPPORTED as V1_4_SRIOV_SUPPORTED,
};
pub use sriov::{MemberFactory, SriovCapability, SriovError};

use device::{lock, OwnerDevice};
use dispatch::{Outcome, OwnerShared};
use sriov::SriovGroup;

use crate::error::PciError;
use crate::function::VirtioPciFunction;

/// How an owner function is built.
#[derive(Clone, Debug)]
pub struct OwnerOptions {
    /// Core options of the owner's device; VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV are added.
    pub core: CoreOptions,
    /// MSI-X vectors of the owner function.
    pub msix_vectors: u16,
    /// Number of admin queues (at least 1).
    pub admin_queue_num: u16,
    /// Maximum size of each admin queue.
    pub admin_queue_size: u16,
    /// TotalVFs of the SR-IOV capability.
    pub total_vfs: u16,
}

impl Default for OwnerOptions {
    fn default() -> Self {
        Self {
            core: CoreOptions::default(),
            msix_vectors: 4,
            admin_queue_num: 1,
            admin_queue_size: 64,
            total_vfs: 8,
        }
    }
}

/// An SR-IOV owner: the PF's virtio-pci function with admin queues, and its group of members.
pub struct OwnerFunction<M: GuestMemory + Send + Sync + 'static> {
    function: Arc<VirtioPciFunction<M>>,
    shared: Arc<Mutex<OwnerShared<M>>>,
}

impl<M: GuestMemory + Send + Sync + 'static> OwnerFunction<M> {
    /// An owner whose own device type is `device` (its queues come first, then the admin
    /// queues), with guest memory `mem` for its rings, and members built by `factory` when VF
    /// Enable is set. Notifications are processed on the notifying thread.
    pub fn new(
        device: Box<dyn VirtioDevice<M>>,
        mem: Arc<M>,
        options: OwnerOptions,
        factory: MemberFactory<M>,
    ) -> Result<Self, PciError> {
        let admin_num = options.admin_queue_num.max(1);
        let mut shared = OwnerShared::new(SriovGroup::new(options.total_vfs, factory));
        if options.core.profile == virtio_lm_spec::Profile::V1_4 {
            shared.v14 = Some(parts::PartsState::new());
        }
        let shared = Arc::new(Mutex::new(shared));
        let sizes = vec![options.admin_queue_size; usize::from(admin_num)];
        let owner = OwnerDevice::new(device, sizes, shared.clone());
        let mut core = options.core;
        for feature in [Feature::AdminVq, Feature::SrIov] {
            if !core.features.contains(&feature) {
                core.features.push(feature);
            }
        }
        let function = VirtioPciFunction::with_device(
            Box::new(owner),
            mem,
            core,
            options.msix_vectors,
            false,
        )?
        .with_admin_queues(admin_num);
        Ok(Self {
            function: Arc::new(function),
            shared,
        })
    }

    /// The owner's PCI function (its driver's transport).
    pub fn function(&self) -> &Arc<VirtioPciFunction<M>> {
        &self.function
    }

    /// The SR-IOV capability registers.
    pub fn sriov(&self) -> SriovCapability {
        lock(&self.shared).group.cap
    }

    /// Writes NumVFs (only while VF Enable is clear, at most TotalVFs).
    pub fn set_num_vfs(&self, num_vfs: u16) -> Result<(), SriovError> {
        lock(&self.shared).group.set_num_vfs(num_vfs)
    }

    /// Writes VF Enable: setting it creates members 1..=NumVFs; clearing it resets and removes
    /// them (a command waiting on one completes with ENXIO).
    pub fn set_vf_enable(&self, enable: bool) -> Result<(), SriovError> {
        lock(&self.shared).group.set_vf_enable(enable)
    }

    /// Member `id`'s function, while it exists.
    pub fn member(&self, id: u16) -> Option<Arc<VirtioPciFunction<M>>> {
        lock(&self.shared).group.function(u64::from(id))
    }

    /// Looks at the admin queues again, as a notification of each does: commands waiting for a
    /// member's requests complete if they can. (The device model has no timer of its own.)
    pub fn poll(&self) {
        if let Some((first, num)) = self.function.admin_queues() {
            let mut core = lock(self.function.core());
            for index in first..first.saturating_add(num) {
                core.kick(index);
            }
        }
    }

    /// Runs the command in `readable` outside any queue, with a writable part of
    /// `writable_len` bytes, and returns what the device wrote: the same decoding, validation,
    /// execution and result encoding as the admin queue. A DEV_MODE_SET that must wait is
    /// polled a bounded number of times, then given up (EAGAIN, the member stays Active). For
    /// the fuzz target and tests.
    #[doc(hidden)]
    pub fn execute_direct(&self, readable: &[u8], writable_len: usize) -> Vec<u8> {
        let cmd = AdminCommand::parse(readable);
        let capacity = writable_len.saturating_sub(8);
        let mut shared = lock(&self.shared);
        let others = shared.outstanding > 0;
        let result = match shared.dispatch(&cmd, capacity, others) {
            Outcome::Done(result) => result,
            Outcome::Wait(wait) => {
                (0..64)
                    .find_map(|_| shared.progress(&wait))
                    .unwrap_or_else(|| {
                        shared.cancel(&wait);
                        AdminResult::error(
                            virtio_lm_spec::admin::status::EAGAIN,
                            virtio_lm_spec::admin::qualifier::Q_TRYAGAIN,
                        )
                    })
            }
        };
        result.encode(writable_len)
    }

    #[cfg(feature = "fuzzing")]
    /// The state a failed (EINVAL) command must leave unchanged: per member its admin mode,
    /// status, context, MSI-X routing and stream progress, and the used list.
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        let mut shared = lock(&self.shared);
        let mut out = Vec::new();
        out.extend(shared.used().iter().flat_map(|w| w.to_le_bytes()));
        for (id, member) in shared.group.members() {
            let function = member.function.clone();
            let mut core = lock(function.core());
            out.extend(id.to_le_bytes());
            out.push(core.admin_mode() as u8);
            out.push(core.status().bits());
            if let Ok(ctx) = core.snapshot_context() {
                out.extend(virtio_lm_device::context::encode(&ctx).unwrap_or_default());
            }
            let irq = function.interrupts();
            out.extend(irq.config_vector().to_le_bytes());
            out.extend(irq.queue_vector(0).to_le_bytes());
            let (read, pending) = member.streams.progress();
            let (offset, len) = read.unwrap_or((usize::MAX, usize::MAX));
            out.extend(offset.to_le_bytes());
            out.extend(len.to_le_bytes());
            out.extend(pending.to_le_bytes());
        }
        if let Some(v14) = &shared.v14 {
            out.extend(fuzz_v14::parts_fingerprint(v14));
        }
        out
    }
}
