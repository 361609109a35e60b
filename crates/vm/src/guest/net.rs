//! The net vCPU: the verifying [`NetWorkload`] over the guest's [`NetPciDriver`], `WINDOW`
//! frames kept out to the echo peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virtio_lm_devices::net::pci_driver::{NetPciDriver, NetPciDriverState};
use virtio_lm_devices::net::workload::{NetReport, NetWorkload};
use virtio_lm_pci::VirtioPciFunction;
use vmm_sys_util::eventfd::EventFd;

use super::{queue_vectors, StallClock, Vcpu};
use crate::memory::GuestRam;

/// The net vCPU's state outside guest memory: the driver's bookkeeping and the workload's
/// ledger.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetVcpuState {
    /// The driver.
    pub driver: NetPciDriverState,
    /// The workload ([`NetWorkload::encode`]).
    pub workload: Vec<u8>,
    /// Echoes verified at the last progress, and steps since.
    pub progress: (u64, u32),
    /// Gaps between verified echoes.
    pub stall: StallClock,
}

/// Frames kept out at once.
pub const WINDOW: u64 = 16;
/// With the window full and no echo for this many steps (each waits up to 1 ms for an
/// interrupt), the frames out are given up on (counted lost; an echo that still comes is
/// counted late). UDP may drop; over loopback an echo takes well under a millisecond. Counted
/// in steps, not time, so a paused guest gives nothing up.
pub const STALL_STEPS: u32 = 200;

/// How long the driver waits for the device to answer an ANNOUNCE_ACK.
const ANNOUNCE_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The eventfd of `function`'s configuration vector (MSI-X vector 0, where the drivers route
/// configuration changes).
pub fn config_vector(function: &VirtioPciFunction<GuestRam>) -> Result<Arc<EventFd>, String> {
    function
        .interrupts()
        .vector_eventfd(0)
        .cloned()
        .ok_or_else(|| "MSI-X vector 0 missing".to_string())
}

/// The net vCPU's state: its driver and its workload.
pub struct NetGuest {
    driver: NetPciDriver<GuestRam>,
    /// The configuration vector's eventfd (MSI-X vector 0).
    config_irq: Arc<EventFd>,
    workload: NetWorkload,
    /// Echoes verified at the last progress, and steps since.
    progress: (u64, u32),
    stall: StallClock,
}

impl NetGuest {
    /// A guest running a fresh workload over the device behind `driver`.
    pub fn new(driver: NetPciDriver<GuestRam>, config_irq: Arc<EventFd>) -> Self {
        let workload = NetWorkload::new(driver.mac());
        Self {
            driver,
            config_irq,
            workload,
            progress: (0, 0),
            stall: StallClock::default(),
        }
    }

    /// Its state (take it at a safe point).
    pub fn state(&self) -> NetVcpuState {
        NetVcpuState {
            driver: self.driver.state(),
            workload: self.workload.encode(),
            progress: self.progress,
            stall: self.stall,
        }
    }

    /// The guest continuing from `state` on the net function `function` with RAM `ram`.
    pub fn from_state(
        function: &Arc<VirtioPciFunction<GuestRam>>,
        ram: &Arc<GuestRam>,
        state: NetVcpuState,
    ) -> Result<Self, String> {
        let workload = NetWorkload::decode(&state.workload).ok_or("net workload state")?;
        // The driver numbers features as the device does: the machine built both alike.
        let profile = super::lock(function.core()).profile();
        let irqs = queue_vectors(function, state.driver.net.num_queues())?;
        let driver =
            NetPciDriver::from_state(function.clone(), ram.clone(), profile, state.driver, irqs)
                .map_err(|e| e.to_string())?;
        Ok(Self {
            driver,
            config_irq: config_vector(function)?,
            workload,
            progress: state.progress,
            stall: state.stall,
        })
    }

    /// The longest gap between two verified echoes so far.
    pub fn stall(&self) -> StallClock {
        self.stall
    }

    /// Sends one control-queue command, as a guest programming its receive filter or queue
    /// pairs does, and returns the device's acknowledgement.
    pub fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> Result<u8, String> {
        self.driver
            .command(class, cmd, data, Duration::from_secs(60))
            .map_err(|e| e.to_string())
    }

    /// ANNOUNCE_ACKs the driver sent and the device accepted.
    pub fn announce_acks(&self) -> u64 {
        self.driver.announce_acks()
    }

    /// The workload's counters.
    pub fn report(&self) -> NetReport {
        self.workload.report
    }

    /// The workload (its ledger is the guest's verification state).
    pub fn workload(&self) -> &NetWorkload {
        &self.workload
    }

    /// Stops sending and collects until every frame is echoed or `timeout` passes; frames
    /// still out then are counted lost. Returns the final counters.
    pub fn settle(&mut self, timeout: Duration) -> Result<NetReport, String> {
        let deadline = Instant::now() + timeout;
        while self.workload.outstanding() > 0 && Instant::now() < deadline {
            self.wait_and_collect(Duration::from_millis(2))?;
        }
        self.workload.declare_lost();
        Ok(self.workload.report)
    }

    /// Waits up to `timeout` for an interrupt, then takes every echo the device returned.
    fn wait_and_collect(&mut self, timeout: Duration) -> Result<(), String> {
        self.driver.wait(timeout).map_err(|e| e.to_string())?;
        self.driver
            .collect(&mut self.workload)
            .map_err(|e| e.to_string())
    }
}

impl Vcpu for NetGuest {
    fn step(&mut self) -> Result<(), String> {
        // A configuration change (the announcement after a move): the eventfd is non-blocking.
        if self.config_irq.read().is_ok() {
            self.driver
                .on_config_change(ANNOUNCE_ACK_TIMEOUT)
                .map_err(|e| e.to_string())?;
        }
        self.driver
            .step(&mut self.workload, WINDOW)
            .map_err(|e| e.to_string())?;
        self.wait_and_collect(Duration::from_millis(1))?;
        let echoed = self.workload.report.verified;
        if echoed != self.progress.0 {
            self.stall.completed(echoed - self.progress.0);
            self.progress = (echoed, 0);
        } else if self.workload.outstanding() >= WINDOW && self.progress.1 >= STALL_STEPS {
            self.workload.declare_lost();
            self.progress.1 = 0;
        } else {
            self.progress.1 += 1;
        }
        Ok(())
    }
}
