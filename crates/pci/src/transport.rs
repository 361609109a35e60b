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
    /// Writes `data` to PCI configuration space at `offset`. Only writable registers change
    /// (the VIRTIO_PCI_CAP_PCI_CFG window of a function that has one); the default ignores the
    /// write, as for a configuration space with nothing writable.
    fn config_write(&self, _offset: u16, _data: &[u8]) {}
}
