//! Initialisation: reset, feature negotiation, queue setup, DRIVER_OK; and re-initialisation
//! onto a fresh device from saved state.

use std::collections::BTreeMap;
use std::sync::Arc;

use virtio_lm_queue::{QueueConfig, RingFeatures, RingKind};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::caps::discover;
use super::ring::{DriverQueue, RingDriver};
use super::types::{QueueSetup, QueueStateRegs, SavedState};
use super::PciDriver;
use crate::error::PciError;
use crate::transport::PciTransport;

impl<M: GuestMemory> PciDriver<M> {
    // ---- initialisation -------------------------------------------------------------------

    /// Resets the device: writes 0 and re-reads until the status reads 0. The queue drivers
    /// are kept (the rings stay in guest memory) until the next [`Self::init`].
    pub fn reset(&mut self) -> Result<(), PciError> {
        self.write_status(DeviceStatus::RESET);
        self.wait_for("reset (status 0)", |s| s.is_empty())
            .map(|_| ())
    }

    /// Reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK and its check, and the
    /// configuration vector. Returns the negotiated features.
    pub(super) fn negotiate(&mut self, wanted: u64) -> Result<u64, PciError> {
        self.reset()?;
        let mut s = DeviceStatus::ACKNOWLEDGE;
        self.write_status(s);
        s |= DeviceStatus::DRIVER;
        self.write_status(s);
        let features = wanted & self.device_features();
        let version_1 = self.profile.mask(Feature::Version1).unwrap_or(0);
        if features & version_1 == 0 {
            self.write_status(s | DeviceStatus::FAILED);
            return Err(PciError::NotModern);
        }
        self.regions
            .write_driver_features(&*self.transport, features);
        s |= DeviceStatus::FEATURES_OK;
        self.write_status(s);
        let read = self.status();
        if !read.intersects(DeviceStatus::FEATURES_OK) {
            self.write_status(read | DeviceStatus::FAILED);
            return Err(PciError::FeaturesRejected { status: read });
        }
        self.features = features;
        self.write16(offset::CONFIG_MSIX_VECTOR, self.config_vector);
        let vector = self.read16(offset::CONFIG_MSIX_VECTOR);
        if vector != self.config_vector {
            return Err(PciError::VectorRefused {
                vector: self.config_vector,
            });
        }
        Ok(features)
    }

    fn ring_kind(&self) -> RingKind {
        if self.negotiated(Feature::RingPacked) {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    fn ring_features(&self) -> RingFeatures {
        RingFeatures {
            event_idx: self.negotiated(Feature::EventIdx),
            indirect_desc: self.negotiated(Feature::IndirectDesc),
        }
    }

    /// Selects queue `index` and returns its size as the device reports it (the maximum after
    /// reset); 0 means there is no such queue.
    fn select(&self, index: u16) -> Result<u16, PciError> {
        self.write16(offset::QUEUE_SELECT, index);
        match self.read16(offset::QUEUE_SIZE) {
            0 => Err(PciError::NoSuchQueue(index)),
            max => Ok(max),
        }
    }

    /// Programs the selected queue: size, addresses, vector, optional state, enable. Returns
    /// its `queue_notify_off`.
    fn program(
        &self,
        index: u16,
        config: &QueueConfig,
        vector: u16,
        state: Option<QueueStateRegs>,
    ) -> Result<u16, PciError> {
        let max = self.select(index)?;
        if config.size > max {
            return Err(PciError::QueueTooLarge {
                index,
                size: config.size,
                max,
            });
        }
        self.write16(offset::QUEUE_SIZE, config.size);
        self.write64(offset::QUEUE_DESC, config.desc_table.0);
        self.write64(offset::QUEUE_DRIVER, config.driver_area.0);
        self.write64(offset::QUEUE_DEVICE, config.device_area.0);
        self.write16(offset::QUEUE_MSIX_VECTOR, vector);
        if self.read16(offset::QUEUE_MSIX_VECTOR) != vector {
            return Err(PciError::VectorRefused { vector });
        }
        if let Some(state) = state {
            self.set_queue_state(index, state.avail, state.used)?;
        }
        let notify_off = self.read16(offset::QUEUE_NOTIFY_OFF);
        self.write16(offset::QUEUE_ENABLE, 1);
        Ok(notify_off)
    }

    /// Sets DRIVER_OK and waits for it (fails with [`PciError::NeedsReset`] if the device
    /// rejects a queue's configuration or state).
    pub(super) fn driver_ok(&self) -> Result<(), PciError> {
        let s = self.status();
        self.write_status(s | DeviceStatus::DRIVER_OK);
        self.wait_for("DRIVER_OK", |s| s.contains(DeviceStatus::DRIVER_OK))
            .map(|_| ())
    }

    /// Initialises the device (spec sequence): reset and wait for 0, ACKNOWLEDGE, DRIVER, read
    /// both feature windows, write `features & offered` (VERSION_1 required), FEATURES_OK and
    /// re-read it, configuration vector, then per queue: select, read the maximum size, write
    /// size and addresses (laid out with [`QueueConfig::contiguous`], ring kind from
    /// RING_PACKED), vector, optional state, enable; finally DRIVER_OK.
    pub fn init(&mut self, features: u64, queues: &[QueueSetup]) -> Result<(), PciError> {
        self.queues.clear();
        self.wanted = features;
        self.setups = queues.to_vec();
        self.negotiate(features)?;
        self.set_up_queues(queues)?;
        self.driver_ok()
    }

    /// Lays out, programs and enables `queues` (after FEATURES_OK, before DRIVER_OK).
    pub(super) fn set_up_queues(&mut self, queues: &[QueueSetup]) -> Result<(), PciError> {
        let kind = self.ring_kind();
        let ring_features = self.ring_features();
        for setup in queues {
            let (config, _) = QueueConfig::contiguous(kind, setup.size, setup.base, ring_features);
            // Check existence and size before zeroing guest memory for the ring.
            let max = self.select(setup.index)?;
            if setup.size > max {
                return Err(PciError::QueueTooLarge {
                    index: setup.index,
                    size: setup.size,
                    max,
                });
            }
            let ring = RingDriver::new(config, &*self.mem)?;
            let notify_off = self.program(setup.index, &config, setup.msix_vector, setup.state)?;
            self.queues.insert(
                setup.index,
                DriverQueue {
                    index: setup.index,
                    notify_off,
                    ring,
                    outstanding: BTreeMap::new(),
                },
            );
        }
        Ok(())
    }

    /// Re-initialises onto the function behind `transport` (a fresh device, or the same one
    /// after reset) with the features and queue states of `saved`, keeping the rings and the
    /// buffers outstanding in them: the migration path (stop → [`Self::save_state`] → reset →
    /// restore onto a fresh device). DRIVER_OK resumes processing where the source stopped.
    pub fn restore_onto(
        &mut self,
        transport: Arc<dyn PciTransport>,
        saved: &SavedState,
    ) -> Result<(), PciError> {
        if self.queues.is_empty() {
            return Err(PciError::NotInitialised);
        }
        self.regions = discover(&*transport)?;
        self.transport = transport;
        let features = self.negotiate(saved.features)?;
        if features != saved.features {
            let status = self.status();
            self.write_status(status | DeviceStatus::FAILED);
            return Err(PciError::FeaturesRejected { status });
        }
        let states: BTreeMap<u16, QueueStateRegs> = saved.queues.iter().copied().collect();
        let setups = self.setups.clone();
        for setup in &setups {
            let state = states.get(&setup.index).copied();
            if state.is_some() {
                self.require(Feature::QueueState)?;
            }
            let config = *self
                .queues
                .get(&setup.index)
                .ok_or(PciError::QueueNotSetUp(setup.index))?
                .ring
                .config();
            let notify_off = self.program(setup.index, &config, setup.msix_vector, state)?;
            if let Some(queue) = self.queues.get_mut(&setup.index) {
                queue.notify_off = notify_off;
            }
        }
        self.driver_ok()
    }
}
