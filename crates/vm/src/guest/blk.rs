//! The blk vCPU: the verifying [`BlkWorkload`] over the guest's [`BlkDriver`], every request
//! queue kept `DEPTH` requests deep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virtio_lm_devices::blk::driver::{BlkDriver, BlkDriverState};
use virtio_lm_devices::blk::workload::{BlkReport, BlkWorkload};
use virtio_lm_pci::VirtioPciFunction;

use super::reinit::ReinitState;
use super::{queue_vectors, StallClock, Vcpu};
use crate::memory::GuestRam;

/// The blk vCPU's state outside guest memory: the driver's bookkeeping and the workload's
/// ledger.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlkVcpuState {
    /// The driver.
    pub driver: BlkDriverState,
    /// The workload ([`BlkWorkload::encode`]).
    pub workload: Vec<u8>,
    /// The queue waited on next.
    pub turn: u16,
    /// Completion gaps.
    pub stall: StallClock,
    /// A re-initialisation of the device under way (spec-decisions §40).
    pub reinit: Option<ReinitState>,
}

/// Requests the workload keeps in flight per queue.
pub const DEPTH: usize = 8;
/// Bytes per workload block (one request's data).
pub const BLOCK_LEN: u32 = 4096;
/// Most blocks the workload uses (its ledger is per block).
pub const MAX_BLOCKS: u64 = 1024;

/// The blk vCPU's state: its driver and its workload.
pub struct BlkGuest {
    driver: BlkDriver<GuestRam>,
    workload: BlkWorkload,
    turn: u16,
    stall: StallClock,
    reinit: Option<ReinitState>,
}

impl BlkGuest {
    /// A guest running a fresh workload seeded `seed` over the device behind `driver`.
    pub fn new(driver: BlkDriver<GuestRam>, seed: u64) -> Self {
        let bytes = driver.capacity().saturating_mul(512);
        let blocks = (bytes / u64::from(BLOCK_LEN)).min(MAX_BLOCKS);
        Self {
            driver,
            workload: BlkWorkload::new(blocks, BLOCK_LEN, seed),
            turn: 0,
            stall: StallClock::default(),
            reinit: None,
        }
    }

    /// Its state (take it at a safe point).
    pub fn state(&self) -> BlkVcpuState {
        BlkVcpuState {
            driver: self.driver.state(),
            workload: self.workload.encode(),
            turn: self.turn,
            stall: self.stall,
            reinit: self.reinit,
        }
    }

    /// The guest continuing from `state` on the blk function `function` with RAM `ram`.
    pub fn from_state(
        function: &Arc<VirtioPciFunction<GuestRam>>,
        ram: &Arc<GuestRam>,
        state: BlkVcpuState,
    ) -> Result<Self, String> {
        let workload = BlkWorkload::decode(&state.workload).ok_or("blk workload state")?;
        // The driver numbers features as the device does: the machine built both alike.
        let profile = super::lock(function.core()).profile();
        let irqs = queue_vectors(function, state.driver.config.num_queues)?;
        let mut driver =
            BlkDriver::from_state(function.clone(), ram.clone(), profile, state.driver, irqs)
                .map_err(|e| e.to_string())?;
        if let Some(r) = state.reinit {
            let steps = driver.pci().init_steps().len();
            if r.done >= steps || (r.draining && r.done > 0) {
                return Err(format!(
                    "blk re-initialisation at step {} of {steps}",
                    r.done
                ));
            }
        }
        Ok(Self {
            driver,
            workload,
            turn: state.turn,
            stall: state.stall,
            reinit: state.reinit,
        })
    }

    /// The longest gap between two completions so far.
    pub fn stall(&self) -> StallClock {
        self.stall
    }

    /// The workload's counters.
    pub fn report(&self) -> BlkReport {
        self.workload.report
    }

    /// The workload (its ledger is the guest's verification state).
    pub fn workload(&self) -> &BlkWorkload {
        &self.workload
    }

    /// The driver.
    pub fn driver(&mut self) -> &mut BlkDriver<GuestRam> {
        &mut self.driver
    }

    fn in_flight(&self) -> usize {
        (0..self.driver.num_queues())
            .map(|q| self.driver.in_flight(q))
            .sum()
    }

    fn collect_all(&mut self) -> Result<usize, String> {
        let mut n = 0;
        for q in 0..self.driver.num_queues() {
            n += self
                .workload
                .collect(&mut self.driver, q)
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// Stops issuing and collects until nothing is in flight or `timeout` passes; what is
    /// still out then is counted lost. Returns the final counters.
    pub fn settle(&mut self, timeout: Duration) -> Result<BlkReport, String> {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 && Instant::now() < deadline {
            for q in 0..self.driver.num_queues() {
                self.driver
                    .wait(q, Duration::from_millis(1))
                    .map_err(|e| e.to_string())?;
            }
            self.collect_all()?;
        }
        self.workload.declare_lost();
        Ok(self.workload.report)
    }
}

impl BlkGuest {
    /// Starts resetting and re-initialising the device (see [`super::reinit`]), holding after
    /// `hold_at` steps of the initialisation if given. Returns how many steps it has; fails if
    /// one is under way.
    pub fn begin_reinit(&mut self, hold_at: Option<usize>) -> Result<usize, String> {
        if self.reinit.is_some() {
            return Err("a re-initialisation is under way".into());
        }
        self.reinit = Some(ReinitState::new(hold_at));
        Ok(self.init_steps())
    }

    /// How many steps the driver's initialisation has.
    pub fn init_steps(&mut self) -> usize {
        self.driver.pci().init_steps().len()
    }

    /// Where a re-initialisation is, if one is under way.
    pub fn reinit(&self) -> Option<ReinitState> {
        self.reinit
    }

    /// Lets a held re-initialisation go on.
    pub fn release_reinit(&mut self) {
        if let Some(r) = &mut self.reinit {
            r.hold_at = None;
        }
    }

    /// One step of the re-initialisation `r`.
    fn reinit_step(&mut self, mut r: ReinitState) -> Result<(), String> {
        if r.draining {
            for q in 0..self.driver.num_queues() {
                self.driver
                    .wait(q, Duration::from_millis(1))
                    .map_err(|e| e.to_string())?;
            }
            let n = self.collect_all()?;
            self.stall.completed(n as u64);
            r.draining = self.in_flight() > 0;
        } else if r.held() {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let steps = self.driver.pci().init_steps();
            let step = *steps
                .get(r.done)
                .ok_or("re-initialisation past its last step")?;
            self.driver
                .pci()
                .init_step(step)
                .map_err(|e| format!("re-initialising the device ({step:?}): {e}"))?;
            r.done += 1;
            if r.done == steps.len() {
                self.reinit = None;
                return Ok(());
            }
        }
        self.reinit = Some(r);
        Ok(())
    }
}

impl Vcpu for BlkGuest {
    fn step(&mut self) -> Result<(), String> {
        if let Some(r) = self.reinit {
            return self.reinit_step(r);
        }
        let queues = self.driver.num_queues();
        for q in 0..queues {
            self.workload
                .pump(&mut self.driver, q, DEPTH)
                .map_err(|e| e.to_string())?;
        }
        let q = self.turn % queues;
        self.turn = self.turn.wrapping_add(1);
        self.driver
            .wait(q, Duration::from_millis(1))
            .map_err(|e| e.to_string())?;
        let n = self.collect_all()?;
        self.stall.completed(n as u64);
        Ok(())
    }
}
