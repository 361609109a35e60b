//! Initialisation one register step at a time (virtio spec 3.1.1), for a driver that may be
//! interrupted between any two steps — a guest whose vCPU pauses while it boots or re-initialises
//! a device after a reset. [`PciDriver::init`] is the same sequence in one go.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::PciDriver;
use crate::error::PciError;

/// One step of a driver's initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStep {
    /// Write 0 and re-read until the status is 0.
    Reset,
    /// Set ACKNOWLEDGE.
    Acknowledge,
    /// Set DRIVER.
    Driver,
    /// Read the offer and write the driver features (what was asked for, as offered).
    Features,
    /// Set FEATURES_OK and re-read it.
    FeaturesOk,
    /// Route configuration changes to the configuration vector.
    ConfigVector,
    /// Lay out (zero) the ring of the queue with this index and program and enable it.
    Queue(u16),
    /// Set DRIVER_OK.
    DriverOk,
}

impl<M: GuestMemory> PciDriver<M> {
    /// The steps that initialise the device again with the features and queues of the last
    /// [`Self::init`], in order.
    pub fn init_steps(&self) -> Vec<InitStep> {
        let mut steps = vec![
            InitStep::Reset,
            InitStep::Acknowledge,
            InitStep::Driver,
            InitStep::Features,
            InitStep::FeaturesOk,
            InitStep::ConfigVector,
        ];
        steps.extend(self.setups.iter().map(|s| InitStep::Queue(s.index)));
        steps.push(InitStep::DriverOk);
        steps
    }

    /// Runs `step`. The reset forgets every ring (the device starts its queues afresh and the
    /// driver lays each ring out again at its queue's step); what a device refuses is an error
    /// (FAILED is set where the spec says so, as [`Self::init`] does).
    pub fn init_step(&mut self, step: InitStep) -> Result<(), PciError> {
        match step {
            InitStep::Reset => {
                self.queues = BTreeMap::new();
                self.features = 0;
                self.reset()
            }
            InitStep::Acknowledge => {
                self.write_status(DeviceStatus::ACKNOWLEDGE);
                Ok(())
            }
            InitStep::Driver => {
                self.write_status(self.status() | DeviceStatus::DRIVER);
                Ok(())
            }
            InitStep::Features => {
                let features = self.wanted & self.device_features();
                if features & self.profile.mask(Feature::Version1).unwrap_or(0) == 0 {
                    self.write_status(self.status() | DeviceStatus::FAILED);
                    return Err(PciError::NotModern);
                }
                self.regions
                    .write_driver_features(&*self.transport, features);
                self.features = features;
                Ok(())
            }
            InitStep::FeaturesOk => {
                self.write_status(self.status() | DeviceStatus::FEATURES_OK);
                let read = self.status();
                if read.intersects(DeviceStatus::FEATURES_OK) {
                    Ok(())
                } else {
                    self.write_status(read | DeviceStatus::FAILED);
                    Err(PciError::FeaturesRejected { status: read })
                }
            }
            InitStep::ConfigVector => {
                self.write16(offset::CONFIG_MSIX_VECTOR, self.config_vector);
                if self.read16(offset::CONFIG_MSIX_VECTOR) == self.config_vector {
                    Ok(())
                } else {
                    Err(PciError::VectorRefused {
                        vector: self.config_vector,
                    })
                }
            }
            InitStep::Queue(index) => {
                let setup = *self
                    .setups
                    .iter()
                    .find(|s| s.index == index)
                    .ok_or(PciError::QueueNotSetUp(index))?;
                self.set_up_queues(&[setup])
            }
            InitStep::DriverOk => self.driver_ok(),
        }
    }
}
