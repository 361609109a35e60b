//! The FunctionState section (type 14): one PCI function's own registers, which virtio 1.4's
//! device parts leave to the hypervisor (spec-decisions §37). Sent under the v1.4 profile once
//! per device after its final DeviceContext; encoded with serde + postcard.

use serde::{Deserialize, Serialize};

/// Most pending MSI-X vectors one function may list (the MSI-X table size limit).
pub const MAX_PENDING_VECTORS: usize = 2048;

/// Most payload bytes of a FunctionState section: room for the largest valid one.
pub const MAX_FUNCTION_STATE: usize = 8192;

/// One function's registers outside its device (the fields of `virtio_lm_pci::FunctionRegisters`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionState {
    /// The device, as [`crate::DeviceConfig::id`] names it.
    pub device_id: u32,
    /// `device_feature_select`.
    pub device_feature_select: u32,
    /// `driver_feature_select`.
    pub driver_feature_select: u32,
    /// `queue_select`.
    pub queue_select: u16,
    /// The ISR status not yet read (bits 0 and 1 only).
    pub isr: u8,
    /// MSI-X vectors with a message raised and not taken, strictly ascending.
    pub msix_pending: Vec<u16>,
    /// The INTx line raised and not taken.
    pub intx_pending: bool,
    /// The VIRTIO_PCI_CAP_PCI_CFG window's `bar`, `offset`, `length`, if the function has one.
    pub pci_cfg_window: Option<(u8, u32, u32)>,
}

impl FunctionState {
    /// The rules a section must meet whatever function it is for; the function's own check
    /// (vectors it has) comes later.
    pub fn validate(&self) -> Result<(), String> {
        if self.msix_pending.len() > MAX_PENDING_VECTORS {
            return Err(format!(
                "{} pending MSI-X vectors, limit {MAX_PENDING_VECTORS}",
                self.msix_pending.len()
            ));
        }
        if self.msix_pending.windows(2).any(|w| w[0] >= w[1]) {
            return Err("pending MSI-X vectors not strictly ascending".into());
        }
        if self.isr & !3 != 0 {
            return Err(format!("ISR status {:#x} has undefined bits", self.isr));
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
