//! Each member function's own registers, which virtio 1.4's device parts leave to the
//! hypervisor (spec-decisions §37): read on the source once the guest is paused and the
//! members stopped, checked and set on the destination before Ready.

use std::sync::Arc;

use virtio_lm_pci::{FunctionRegisters, VirtioPciFunction};

use crate::machine::{Machine, MachineError};
use crate::memory::GuestRam;

impl Machine {
    fn function_of(&self, member: u64) -> Result<Arc<VirtioPciFunction<GuestRam>>, MachineError> {
        self.members()
            .into_iter()
            .zip(self.functions())
            .find(|(m, _)| *m == member)
            .map(|(_, f)| f)
            .ok_or_else(|| MachineError::Device(format!("member {member}: no such member")))
    }

    /// Every member's function registers, by member number; the vCPUs must be paused (a
    /// running guest could take a pending message while it is looked at).
    pub fn function_registers(&self) -> Result<Vec<(u64, FunctionRegisters)>, MachineError> {
        if !self.all_parked() {
            return Err(MachineError::State(
                "the function registers are read while paused",
            ));
        }
        Ok(self
            .members()
            .into_iter()
            .zip(self.functions())
            .map(|(member, f)| (member, f.registers()))
            .collect())
    }

    /// Checks `regs` against `member`'s function without changing anything.
    pub fn check_function_registers(
        &self,
        member: u64,
        regs: &FunctionRegisters,
    ) -> Result<(), MachineError> {
        self.function_of(member)?
            .check_registers(regs)
            .map_err(|e| MachineError::Device(format!("member {member}: {e}")))
    }

    /// Sets `member`'s function registers from `regs` (destination, before Ready).
    pub fn restore_function_registers(
        &self,
        member: u64,
        regs: &FunctionRegisters,
    ) -> Result<(), MachineError> {
        self.function_of(member)?
            .restore_registers(regs)
            .map_err(|e| MachineError::Device(format!("member {member}: {e}")))
    }
}
