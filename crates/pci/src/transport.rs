//! The boundary between a driver and a virtio-pci function.

/// Register access to a virtio-pci function: its PCI configuration space (where the capability
/// list lives) and BAR 0 (where the capabilities point). [`crate::VirtioPciFunction`]
/// implements it in-process; an implementation can equally forward the accesses across a
/// process boundary.
pub trait PciTransport: Send + Sync {
    /// Reads `data.len()` bytes of BAR 0 at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Writes `data` to BAR 0 at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
    /// Reads `data.len()` bytes of PCI configuration space at `offset` (bytes past its end read
    /// as 0).
    fn config_read(&self, offset: u16, data: &mut [u8]);
}
