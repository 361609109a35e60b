//! Each member function's own registers, which virtio 1.4's device parts leave to the
//! hypervisor (spec-decisions §37): read on the source once the guest is paused and the
//! members stopped, checked and set on the destination before Ready.

use virtio_lm_pci::FunctionRegisters;

use crate::machine::{Machine, MachineError};

impl Machine {
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
        self.member_function(member)?
            .check_registers(regs)
            .map_err(|e| MachineError::Device(format!("member {member}: {e}")))
    }

    /// Sets `member`'s function registers from `regs` (destination, before Ready).
    pub fn restore_function_registers(
        &self,
        member: u64,
        regs: &FunctionRegisters,
    ) -> Result<(), MachineError> {
        self.member_function(member)?
            .restore_registers(regs)
            .map_err(|e| MachineError::Device(format!("member {member}: {e}")))
    }
}
