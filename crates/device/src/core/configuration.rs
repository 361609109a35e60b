//! The device-type configuration space: driver reads and writes, device-side changes held back
//! while the device is quiet, and the configuration generation.

use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestMemory;

use super::{DeviceCore, Quiet};
use crate::device::VirtioDevice;

impl<M: GuestMemory + Send + Sync + 'static> DeviceCore<M> {
    /// Configuration generation (changes whenever the device changes its config space).
    pub fn config_generation(&self) -> u8 {
        self.config_generation
    }

    /// Reads device-specific configuration.
    pub fn read_config(&self, offset: usize, data: &mut [u8]) {
        self.device.read_config(offset, data);
    }

    /// Driver write to device-specific configuration; ignored while stopped or suspended
    /// (seed 000: the config space does not change while stopped) and while not admin-Active
    /// (seed 004: in Freeze "any write access to virtio configuration space MUST not update any
    /// fields").
    pub fn write_config(&mut self, offset: usize, data: &[u8]) {
        if self.stop == Quiet::No && self.suspend == Quiet::No && !self.admin_quiet() {
            self.device.write_config(offset, data);
        }
    }

    /// A device-side configuration change (link up, capacity change). Applied and notified
    /// now, or held back until resume while stopped or suspended.
    pub fn change_config(
        &mut self,
        change: impl FnOnce(&mut dyn VirtioDevice<M>) + Send + 'static,
    ) {
        self.deferred_config.push(Box::new(change));
        if self.stop == Quiet::No && self.suspend == Quiet::No && !self.admin_quiet() {
            self.apply_deferred_config();
        }
    }

    pub(super) fn apply_deferred_config(&mut self) {
        if self.deferred_config.is_empty() {
            return;
        }
        for change in std::mem::take(&mut self.deferred_config) {
            change(&mut *self.device);
        }
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.has(DeviceStatus::DRIVER_OK) {
            self.interrupts.signal_config_change();
        }
    }
}
