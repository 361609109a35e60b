//! The owner's side of the admin virtqueues (discovery at common-config offsets 60/62 and
//! set-up), and a guest driver following its device to another function (live migration).

use std::sync::Arc;

use virtio_lm_spec::pci::offset;
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;

use super::caps::discover;
use super::types::QueueSetup;
use super::PciDriver;
use crate::error::PciError;
use crate::transport::PciTransport;

impl<M: GuestMemory> PciDriver<M> {
    /// `admin_queue_index` and `admin_queue_num` (common-config offsets 60 and 62; valid once
    /// VIRTIO_F_ADMIN_VQ is negotiated).
    pub fn admin_queue_info(&self) -> (u16, u16) {
        (
            self.read16(offset::ADMIN_QUEUE_INDEX),
            self.read16(offset::ADMIN_QUEUE_NUM),
        )
    }

    /// Initialises an owner device as [`Self::init`] does, with `admin` set up as its admin
    /// queues: after FEATURES_OK (VIRTIO_F_ADMIN_VQ must be negotiated) the admin queue range
    /// is read from offsets 60/62 and `admin[i]` is programmed, through queue_select like any
    /// queue, at `admin_queue_index + i` (its `index` field is ignored). Returns
    /// `admin_queue_index`.
    pub fn init_with_admin(
        &mut self,
        features: u64,
        queues: &[QueueSetup],
        admin: &[QueueSetup],
    ) -> Result<u16, PciError> {
        self.queues.clear();
        self.wanted = features;
        self.negotiate(features)?;
        self.require(Feature::AdminVq)?;
        let (first, num) = self.admin_queue_info();
        if admin.len() > usize::from(num) {
            return Err(PciError::NoSuchQueue(first.saturating_add(num)));
        }
        let mut all = queues.to_vec();
        for (i, setup) in (0u16..).zip(admin) {
            let index = first
                .checked_add(i)
                .ok_or(PciError::NoSuchQueue(u16::MAX))?;
            all.push(QueueSetup { index, ..*setup });
        }
        self.setups = all.clone();
        self.set_up_queues(&all)?;
        self.driver_ok()?;
        Ok(first)
    }

    /// Follows the device to the function behind `transport` with guest memory `mem`, as a
    /// guest driver does not notice a live migration: the rings, the buffers outstanding and the
    /// negotiated features are kept, and no register is written. The destination must run the
    /// same device type from the source's device context (seed 004 DEV_CTX_WRITE, then Active).
    pub fn migrate_to(
        &mut self,
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
    ) -> Result<(), PciError> {
        let regions = discover(&*transport)?;
        if regions.device_id != self.regions.device_id {
            return Err(PciError::NotVirtio(
                "the destination is another device type",
            ));
        }
        self.regions = regions;
        self.transport = transport;
        self.mem = mem;
        Ok(())
    }
}
