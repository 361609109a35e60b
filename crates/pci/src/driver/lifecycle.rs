//! DEVICE_STOPPED (seed 000), SUSPEND (seed 003), queue state (seed 001) and recovery from
//! DEVICE_NEEDS_RESET (seed 002).

use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;

use super::types::{OutstandingChain, QueueSetup, QueueStateRegs, SavedState};
use super::PciDriver;
use crate::error::PciError;

impl<M: GuestMemory> PciDriver<M> {
    // ---- DEVICE_STOPPED (seed 000) ----------------------------------------------------------

    /// Checks DRIVER_OK (seed 000: the driver must not set or clear DEVICE_STOPPED otherwise)
    /// and DEVICE_NEEDS_RESET; returns the status.
    fn running(&self) -> Result<DeviceStatus, PciError> {
        let s = self.status();
        if s.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
            return Err(PciError::NeedsReset { status: s });
        }
        if !s.intersects(DeviceStatus::DRIVER_OK) {
            return Err(PciError::NotRunning { status: s });
        }
        Ok(s)
    }

    /// Stops the device (seed 000): sets DEVICE_STOPPED and re-reads the status until the
    /// device presents it (it first completes what it is processing).
    pub fn stop(&mut self) -> Result<(), PciError> {
        self.require(Feature::DeviceStop)?;
        let s = self.running()?;
        self.write_status(s | DeviceStatus::DEVICE_STOPPED);
        self.wait_for("DEVICE_STOPPED set", |s| {
            s.contains(DeviceStatus::DEVICE_STOPPED)
        })
        .map(|_| ())
    }

    /// Resumes a stopped device (seed 000): clears DEVICE_STOPPED and re-reads until it reads
    /// clear.
    pub fn resume(&mut self) -> Result<(), PciError> {
        self.require(Feature::DeviceStop)?;
        let s = self.running()?;
        self.write_status(s & !DeviceStatus::DEVICE_STOPPED);
        self.wait_for("DEVICE_STOPPED clear", |s| {
            !s.intersects(DeviceStatus::DEVICE_STOPPED)
        })
        .map(|_| ())
    }

    // ---- SUSPEND (seed 003, merged semantics) -----------------------------------------------

    /// Suspends the device (spec-decisions §2): sets SUSPEND and waits for SUSPEND=1, DRIVER_OK=0.
    pub fn suspend(&mut self) -> Result<(), PciError> {
        self.require(Feature::Suspend)?;
        let s = self.running()?;
        self.write_status(s | DeviceStatus::SUSPEND);
        self.wait_for("SUSPEND set and DRIVER_OK clear", |s| {
            s.contains(DeviceStatus::SUSPEND) && !s.intersects(DeviceStatus::DRIVER_OK)
        })
        .map(|_| ())
    }

    /// Resumes a suspended device: sets DRIVER_OK (SUSPEND stays in the written value: the
    /// driver clears no bit) and waits for SUSPEND=0, DRIVER_OK=1.
    pub fn resume_from_suspend(&mut self) -> Result<(), PciError> {
        self.require(Feature::Suspend)?;
        let s = self.status();
        if s.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
            return Err(PciError::NeedsReset { status: s });
        }
        if !s.intersects(DeviceStatus::SUSPEND) {
            return Err(PciError::NotSuspended { status: s });
        }
        self.write_status(s | DeviceStatus::DRIVER_OK);
        self.wait_for("SUSPEND clear and DRIVER_OK set", |s| {
            !s.intersects(DeviceStatus::SUSPEND) && s.contains(DeviceStatus::DRIVER_OK)
        })
        .map(|_| ())
    }

    // ---- queue state (seed 001) ----------------------------------------------------------------

    /// Reads queue `index`'s state registers (after a reset, or while stopped or suspended).
    pub fn read_queue_state(&self, index: u16) -> Result<(u16, u16), PciError> {
        self.write16(offset::QUEUE_SELECT, index);
        Ok((
            self.read16(offset::QUEUE_AVAIL_STATE),
            self.read16(offset::QUEUE_USED_STATE),
        ))
    }

    /// Writes queue `index`'s state registers (between FEATURES_OK and DRIVER_OK, or while
    /// suspended) and checks they read back.
    pub fn set_queue_state(&self, index: u16, avail: u16, used: u16) -> Result<(), PciError> {
        self.require(Feature::QueueState)?;
        self.write16(offset::QUEUE_SELECT, index);
        self.write16(offset::QUEUE_AVAIL_STATE, avail);
        self.write16(offset::QUEUE_USED_STATE, used);
        if self.read_queue_state(index)? != (avail, used) {
            return Err(PciError::StateNotAccepted { index });
        }
        Ok(())
    }

    /// Reads the negotiated features, every set-up queue's state and the configuration
    /// generation, for [`Self::restore_onto`]. The device must not be running (stopped,
    /// suspended or reset), or the state would be stale.
    pub fn save_state(&self) -> Result<SavedState, PciError> {
        self.require(Feature::QueueState)?;
        let s = self.status();
        let quiet =
            s.intersects(DeviceStatus::DEVICE_STOPPED | DeviceStatus::SUSPEND) || s.is_empty();
        if !quiet {
            return Err(PciError::NotQuiescent { status: s });
        }
        let queues = self
            .setups
            .iter()
            .map(|setup| {
                let (avail, used) = self.read_queue_state(setup.index)?;
                Ok((setup.index, QueueStateRegs { avail, used }))
            })
            .collect::<Result<_, PciError>>()?;
        Ok(SavedState {
            features: self.features,
            queues,
            config_generation: self.config_generation(),
        })
    }

    // ---- recovery (seed 002) ------------------------------------------------------------------

    /// Recovers from DEVICE_NEEDS_RESET (seed 002): resets, re-initialises with the same
    /// features and queue layout (fresh rings), and returns the chains that were outstanding —
    /// after NEEDS_RESET the driver cannot rely on their completion, nor on their
    /// non-completion — so the caller can add again those it still wants.
    pub fn recover_from_needs_reset(&mut self) -> Result<Vec<OutstandingChain>, PciError> {
        let outstanding = self.outstanding();
        self.reset()?;
        let setups: Vec<QueueSetup> = self
            .setups
            .iter()
            .map(|s| QueueSetup { state: None, ..*s })
            .collect();
        self.init(self.wanted, &setups)?;
        Ok(outstanding)
    }
}
