//! The FunctionState section (type 14): one PCI function's own registers, which virtio 1.4's
//! device parts leave to the hypervisor (spec-decisions §37). Sent under the v1.4 profile once
//! per device after its final DeviceContext; encoded with serde + postcard.

use serde::{Deserialize, Serialize};
use virtio_lm_vm::FunctionRegisters;

/// Most pending MSI-X vectors one function may list (the MSI-X table size limit).
pub const MAX_PENDING_VECTORS: usize = 2048;

/// Most payload bytes of a FunctionState section: room for the largest valid one.
pub const MAX_FUNCTION_STATE: usize = 8192;

/// One function's registers outside its device, as the section carries them (postcard encodes
/// the nested registers field by field, as if they were this struct's own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionState {
    /// The device, as [`crate::DeviceConfig::id`] names it.
    pub device_id: u32,
    /// Its function's registers.
    pub registers: FunctionRegisters,
}

impl FunctionState {
    /// Device `device_id`'s registers `regs`, as the section carries them.
    pub fn of(device_id: u32, regs: &FunctionRegisters) -> Self {
        Self {
            device_id,
            registers: regs.clone(),
        }
    }

    /// The registers the section carries.
    pub fn registers(&self) -> FunctionRegisters {
        self.registers.clone()
    }

    /// The rules a section must meet whatever function it is for; the function's own check
    /// (vectors it has) comes later.
    pub fn validate(&self) -> Result<(), String> {
        let regs = &self.registers;
        if regs.msix_pending.len() > MAX_PENDING_VECTORS {
            return Err(format!(
                "{} pending MSI-X vectors, limit {MAX_PENDING_VECTORS}",
                regs.msix_pending.len()
            ));
        }
        if regs.msix_pending.windows(2).any(|w| w[0] >= w[1]) {
            return Err("pending MSI-X vectors not strictly ascending".into());
        }
        if regs.isr & !3 != 0 {
            return Err(format!("ISR status {:#x} has undefined bits", regs.isr));
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        let bytes = postcard::to_allocvec(self).map_err(|e| e.to_string())?;
        if bytes.len() > MAX_FUNCTION_STATE {
            return Err(format!(
                "{} bytes of function state, limit {MAX_FUNCTION_STATE}",
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        let (state, rest): (FunctionState, _) =
            postcard::take_from_bytes(payload).map_err(|e| format!("postcard: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the function state", rest.len()));
        }
        state.validate()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FunctionState {
        FunctionState {
            device_id: 2,
            registers: FunctionRegisters {
                device_feature_select: 1,
                driver_feature_select: 0,
                queue_select: 4,
                isr: 3,
                msix_pending: vec![0, 2, 9],
                intx_pending: true,
                pci_cfg_window: Some((0, 0x14, 2)),
            },
        }
    }

    /// [`sample`] with `change` made to its registers.
    fn sample_with(change: impl FnOnce(&mut FunctionRegisters)) -> FunctionState {
        let mut s = sample();
        change(&mut s.registers);
        s
    }

    /// docs/stream-format.md, FunctionState: what is encoded decodes equal.
    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(FunctionState::decode(&s.encode().unwrap()).unwrap(), s);
    }

    /// Hostile payloads are refused with a reason, never a panic: every truncation, trailing
    /// bytes, undefined ISR bits, vectors out of order or repeated, and more vectors than an
    /// MSI-X table has (the encoder refuses the same).
    #[test]
    fn hostile_payloads_are_refused() {
        let bytes = sample().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(FunctionState::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(FunctionState::decode(&longer)
            .unwrap_err()
            .contains("after"));
        let bad = [
            sample_with(|r| r.isr = 4),
            sample_with(|r| r.msix_pending = vec![3, 3]),
            sample_with(|r| r.msix_pending = vec![5, 1]),
            sample_with(|r| r.msix_pending = (0..=MAX_PENDING_VECTORS as u16).collect()),
        ];
        for s in bad {
            assert!(s.encode().is_err(), "{s:?}");
            let raw = postcard::to_allocvec(&s).unwrap();
            assert!(FunctionState::decode(&raw).is_err(), "{s:?}");
        }
    }

    /// The largest valid section fits the payload limit the header enforces.
    #[test]
    fn the_largest_valid_section_fits_the_limit() {
        let mut s = sample_with(|r| {
            r.device_feature_select = u32::MAX;
            r.driver_feature_select = u32::MAX;
            r.queue_select = u16::MAX;
            r.msix_pending = (u16::MAX - MAX_PENDING_VECTORS as u16 + 1..=u16::MAX).collect();
            r.pci_cfg_window = Some((u8::MAX, u32::MAX, u32::MAX));
        });
        s.device_id = u32::MAX;
        assert!(s.encode().unwrap().len() <= MAX_FUNCTION_STATE);
    }
}
