//! The blk vCPU resetting its device and initialising it again, one register step per vCPU
//! step, so the vCPUs can pause — and the guest migrate — between any two steps of its driver's
//! initialisation (issue 10: "A device that is not at DRIVER_OK at the moment of switchover (the
//! guest is booting or resetting it) is migrated as its register state"; spec-decisions §40).
//!
//! The guest first stops issuing and collects until nothing is in flight (a driver resetting
//! its device on purpose quiesces it first: a reset drops what the device holds), then runs
//! [`PciDriver::init_steps`](virtio_lm_pci::PciDriver::init_steps) in order, then goes back to its
//! workload. Where it is travels in the vCPU state, so a destination continues with the next
//! step. A test may ask it to hold after a chosen step — a driver waiting on something — until
//! told to go on: that is how a migration is made to happen at that step without timing.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock;
use crate::machine::{Machine, MachineError};

/// Where a re-initialisation is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReinitState {
    /// Still collecting what was in flight before the reset.
    pub draining: bool,
    /// Steps of the initialisation done.
    pub done: usize,
    /// Hold (run no step) once this many are done, until released.
    pub hold_at: Option<usize>,
}

impl ReinitState {
    /// A re-initialisation about to start (draining first), holding after `hold_at` steps.
    pub fn new(hold_at: Option<usize>) -> Self {
        Self {
            draining: true,
            done: 0,
            hold_at,
        }
    }

    /// Whether it holds now.
    pub fn held(&self) -> bool {
        !self.draining && self.hold_at == Some(self.done)
    }
}

impl Machine {
    /// The guest's blk vCPU starts resetting and re-initialising its device, holding after
    /// `hold_at` steps of the initialisation if given (see the module documentation). Returns
    /// how many steps the initialisation has.
    pub fn blk_reinit(&self, hold_at: Option<usize>) -> Result<usize, MachineError> {
        lock(self.blk_vcpu()?)
            .begin_reinit(hold_at)
            .map_err(MachineError::Vcpu)
    }

    /// How many steps the blk driver's initialisation has.
    pub fn blk_init_steps(&self) -> Result<usize, MachineError> {
        Ok(lock(self.blk_vcpu()?).init_steps())
    }

    /// Where the blk vCPU's re-initialisation is (none: not under way, or no blk function).
    pub fn blk_reinit_state(&self) -> Option<ReinitState> {
        self.blk_vcpu().ok().and_then(|g| lock(g).reinit())
    }

    /// Lets a held re-initialisation go on.
    pub fn release_blk_reinit(&self) -> Result<(), MachineError> {
        lock(self.blk_vcpu()?).release_reinit();
        Ok(())
    }

    /// The blk vCPU resets its device and holds after `at` steps of the initialisation
    /// ([`Self::blk_reinit`]); returns once it holds there (an error after `timeout`, which
    /// only a hang takes, or if a vCPU failed).
    pub fn blk_hold_in_initialisation(
        &self,
        at: usize,
        timeout: Duration,
    ) -> Result<(), MachineError> {
        self.blk_reinit(Some(at))?;
        if self.wait_blk_reinit(|r| r.is_some_and(|r| r.held()), timeout) {
            Ok(())
        } else {
            Err(MachineError::Vcpu(format!(
                "the blk driver did not reach step {at} of its initialisation: {:?}",
                self.vcpu_errors()
            )))
        }
    }

    /// Waits until `done` holds of the blk vCPU's re-initialisation (checked every
    /// millisecond); false after `timeout` without it.
    pub fn wait_blk_reinit(
        &self,
        done: impl Fn(Option<ReinitState>) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self.blk_reinit_state()) {
                return true;
            }
            if Instant::now() > deadline || !self.vcpu_errors().is_empty() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
