//! Feature negotiation: what the device offers (per numbering profile) and what the driver accepts.

use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::DeviceCore;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.offered
    }

    /// Feature bits the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Driver writes its features; accepted only after DRIVER and before FEATURES_OK.
    pub fn set_driver_features(&mut self, features: u64) {
        if self.admin_silent() {
            return;
        }
        if self.has(DeviceStatus::DRIVER)
            && !self.has(DeviceStatus::FEATURES_OK)
            && !self.has(DeviceStatus::FAILED)
        {
            self.driver_features = features;
        }
    }

    pub(super) fn features_acceptable(&self) -> bool {
        let version_1 = self.bit(Feature::Version1);
        self.driver_features & !self.offered == 0 && self.driver_features & version_1 != 0
    }
}
