//! The blk vCPU: the verifying [`BlkWorkload`] over the guest's [`BlkDriver`], every request
//! queue kept `DEPTH` requests deep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virtio_lm_devices::blk::driver::{BlkDriver, BlkDriverState};
use virtio_lm_devices::blk::workload::{BlkReport, BlkWorkload};
use virtio_lm_pci::VirtioPciFunction;

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
        }
    }

    /// Its state (take it at a safe point).
    pub fn state(&self) -> BlkVcpuState {
        BlkVcpuState {
            driver: self.driver.state(),
            workload: self.workload.encode(),
            turn: self.turn,
            stall: self.stall,
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
        let driver =
            BlkDriver::from_state(function.clone(), ram.clone(), profile, state.driver, irqs)
                .map_err(|e| e.to_string())?;
        Ok(Self {
            driver,
            workload,
            turn: state.turn,
            stall: state.stall,
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

impl Vcpu for BlkGuest {
    fn step(&mut self) -> Result<(), String> {
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
