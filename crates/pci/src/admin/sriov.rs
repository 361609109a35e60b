//! The SR-IOV group of an owner (virtio 1.4 "Administration Facilities"): TotalVFs, NumVFs and VF Enable from the SR-IOV
//! Extended Capability, and the member functions (VFs) that exist while VF Enable is set.

use std::sync::Arc;

use vm_memory::GuestMemory;

use super::context_io::ContextStreams;
use crate::error::PciError;
use crate::function::VirtioPciFunction;

/// The registers of the owner's SR-IOV Extended Capability that the admin framework uses.
/// (`VF Migration Capable` is not modelled: it reads clear, as the spec requires while admin
/// commands are outstanding.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SriovCapability {
    /// TotalVFs: the most VFs the owner can have (read-only).
    pub total_vfs: u16,
    /// NumVFs: how many VFs VF Enable creates (writable while VF Enable is clear).
    pub num_vfs: u16,
    /// VF Enable: the VFs, and so the group, exist.
    pub vf_enable: bool,
}

/// Why an SR-IOV register write was refused.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    /// NumVFs above TotalVFs.
    #[error("NumVFs {num_vfs} exceeds TotalVFs {total_vfs}")]
    TooManyVfs {
        /// The value written.
        num_vfs: u16,
        /// TotalVFs.
        total_vfs: u16,
    },
    /// NumVFs changes only while VF Enable is clear (PCIe SR-IOV).
    #[error("NumVFs cannot change while VF Enable is set")]
    VfEnabled,
    /// A member function could not be built.
    #[error("Member {member} could not be created: {source}")]
    Member {
        /// The VF number.
        member: u16,
        /// Why.
        #[source]
        source: PciError,
    },
}

/// Builds the function of VF `member` (1..=NumVFs) when VF Enable is set: an ordinary virtio-pci
/// function of any device type, with its own device core. The owner adds the
/// VIRTIO_PCI_CAP_PCI_CFG window.
pub type MemberFactory<M> =
    Box<dyn FnMut(u16) -> Result<VirtioPciFunction<M>, PciError> + Send + 'static>;

/// One member: its function and the owner's context streams for it.
pub(crate) struct Member<M: GuestMemory + Send + Sync + 'static> {
    pub(crate) function: Arc<VirtioPciFunction<M>>,
    pub(crate) streams: ContextStreams,
}

/// The group: the capability, the members and how to build them.
pub(crate) struct SriovGroup<M: GuestMemory + Send + Sync + 'static> {
    pub(crate) cap: SriovCapability,
    factory: MemberFactory<M>,
    /// Member `i + 1` at index `i`; empty while VF Enable is clear.
    members: Vec<Member<M>>,
    /// Counts VF Enable changes: a command that waits on a member from before a change finds
    /// the member gone.
    pub(crate) generation: u64,
}

impl<M: GuestMemory + Send + Sync + 'static> SriovGroup<M> {
    pub(crate) fn new(total_vfs: u16, factory: MemberFactory<M>) -> Self {
        Self {
            cap: SriovCapability {
                total_vfs,
                num_vfs: 0,
                vf_enable: false,
            },
            factory,
            members: Vec::new(),
            generation: 0,
        }
    }

    /// Member `id`, while it exists (VF Enable set, 1 ≤ id ≤ NumVFs).
    pub(crate) fn member(&mut self, id: u64) -> Option<&mut Member<M>> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.members.get_mut(index)
    }

    /// Member `id`'s function, while it exists.
    pub(crate) fn function(&self, id: u64) -> Option<Arc<VirtioPciFunction<M>>> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.members.get(index).map(|m| m.function.clone())
    }

    #[cfg(feature = "fuzzing")]
    pub(crate) fn members(&mut self) -> impl Iterator<Item = (u16, &mut Member<M>)> {
        (1u16..).zip(self.members.iter_mut())
    }

    pub(crate) fn set_num_vfs(&mut self, num_vfs: u16) -> Result<(), SriovError> {
        if self.cap.vf_enable {
            return Err(SriovError::VfEnabled);
        }
        if num_vfs > self.cap.total_vfs {
            return Err(SriovError::TooManyVfs {
                num_vfs,
                total_vfs: self.cap.total_vfs,
            });
        }
        self.cap.num_vfs = num_vfs;
        Ok(())
    }

    /// Sets VF Enable: creates members 1..=NumVFs, or removes them. Removing resets each
    /// member first (its pending admin mode change ends as after an FLR), so a function still
    /// held elsewhere is left idle, not half-stopped.
    pub(crate) fn set_vf_enable(&mut self, enable: bool) -> Result<(), SriovError> {
        if enable == self.cap.vf_enable {
            return Ok(());
        }
        if enable {
            let mut members = Vec::with_capacity(usize::from(self.cap.num_vfs));
            for member in 1..=self.cap.num_vfs {
                let function = (self.factory)(member)
                    .map_err(|source| SriovError::Member { member, source })?;
                members.push(Member {
                    function: Arc::new(function.with_pci_cfg_window()),
                    streams: ContextStreams::default(),
                });
            }
            self.members = members;
        } else {
            for member in self.members.drain(..) {
                member.function.function_level_reset();
            }
        }
        self.cap.vf_enable = enable;
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }
}
