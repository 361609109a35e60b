//! The function's own state outside the virtio device's: what a virtio 1.4 owner's device
//! parts do not carry and the hypervisor moves itself (spec-decisions §37).
//!
//! Of everything a [`VirtioPciFunction`] holds, this is what a driver can see besides the
//! device: the three select registers of the common configuration, the ISR status, MSI-X
//! messages raised and not yet taken (and the INTx line), and the VIRTIO_PCI_CAP_PCI_CFG
//! window's registers. The MSI-X routing (`config_msix_vector`, `queue_msix_vector`) is the
//! device's and travels in its parts. There is no MSI-X table or pending-bit array to move (a
//! vector is an eventfd the hypervisor routes; nothing masks it) and no writable PCI header
//! register (the configuration space is fixed at build; only the window is writable).

use serde::{Deserialize, Serialize};
use vm_memory::GuestMemory;

use super::{lock, VirtioPciFunction};

/// The function's registers outside the device (see the module documentation). Serializable:
/// the migration stream's FunctionState section carries it as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRegisters {
    /// `device_feature_select`.
    pub device_feature_select: u32,
    /// `driver_feature_select`.
    pub driver_feature_select: u32,
    /// `queue_select`.
    pub queue_select: u16,
    /// The ISR status (bits 0 and 1), not yet read (a read clears it).
    pub isr: u8,
    /// MSI-X vectors whose message is raised and not yet taken, ascending.
    pub msix_pending: Vec<u16>,
    /// The INTx line is raised and not yet taken.
    pub intx_pending: bool,
    /// The PCI_CFG window's `bar`, `offset` and `length`, for a function that has the window.
    pub pci_cfg_window: Option<(u8, u32, u32)>,
}

impl<M: GuestMemory + Send + Sync + 'static> VirtioPciFunction<M> {
    /// The registers as they stand (read with the function quiet: guest paused, device
    /// stopped; the pending messages stay raised).
    pub fn registers(&self) -> FunctionRegisters {
        let selectors = *lock(&self.selectors);
        let (msix_pending, intx_pending) = self.interrupts.pending();
        FunctionRegisters {
            device_feature_select: selectors.device_feature_select,
            driver_feature_select: selectors.driver_feature_select,
            queue_select: selectors.queue_select,
            isr: self.interrupts.isr(),
            msix_pending,
            intx_pending,
            pci_cfg_window: self.pci_cfg.as_ref().map(|w| w.registers()),
        }
    }

    /// Checks `regs` against this function without changing anything: the pending vectors
    /// exist, ascending and once each; the ISR has only bits 0 and 1; a window only if this
    /// function has one.
    pub fn check_registers(&self, regs: &FunctionRegisters) -> Result<(), String> {
        let vectors = self.interrupts.num_vectors();
        if let Some(&v) = regs.msix_pending.iter().find(|&&v| v >= vectors) {
            return Err(format!(
                "MSI-X vector {v} pending, the function has {vectors}"
            ));
        }
        if regs.msix_pending.windows(2).any(|w| w[0] >= w[1]) {
            return Err("pending MSI-X vectors not ascending".into());
        }
        if regs.isr & !3 != 0 {
            return Err(format!("ISR status {:#x} has undefined bits", regs.isr));
        }
        if regs.pci_cfg_window.is_some() && self.pci_cfg.is_none() {
            return Err("a PCI_CFG window for a function without one".into());
        }
        Ok(())
    }

    /// Sets the registers from `regs` (checked first, as [`Self::check_registers`]): the
    /// selects, the ISR status, the window, and each pending message raised again.
    pub fn restore_registers(&self, regs: &FunctionRegisters) -> Result<(), String> {
        self.check_registers(regs)?;
        {
            let mut selectors = lock(&self.selectors);
            selectors.device_feature_select = regs.device_feature_select;
            selectors.driver_feature_select = regs.driver_feature_select;
            selectors.queue_select = regs.queue_select;
        }
        self.interrupts.set_isr(regs.isr);
        for &v in &regs.msix_pending {
            self.interrupts.raise_pending(v);
        }
        if regs.intx_pending {
            self.interrupts.raise_intx_pending();
        }
        if let (Some(window), Some(values)) = (&self.pci_cfg, regs.pci_cfg_window) {
            window.set_registers(values);
        }
        Ok(())
    }
}
