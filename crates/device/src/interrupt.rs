//! Notifications from the device to the driver, delivered by the transport.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where the core sends used-buffer and configuration-change notifications. The PCI transport
/// maps them to MSI-X vectors or the ISR; tests count them.
pub trait Interrupts: Send + Sync {
    /// A used-buffer notification for queue `index`.
    fn signal_used_queue(&self, index: u16);
    /// A configuration change notification (also sent after DEVICE_NEEDS_RESET).
    fn signal_config_change(&self);
}

/// Counts notifications; for tests and for the quiescence checks.
#[derive(Debug, Default)]
pub struct InterruptCounter {
    used: AtomicU64,
    config: AtomicU64,
}

impl InterruptCounter {
    /// Used-buffer notifications so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Configuration change notifications so far.
    pub fn config(&self) -> u64 {
        self.config.load(Ordering::SeqCst)
    }
}

impl Interrupts for InterruptCounter {
    fn signal_used_queue(&self, _index: u16) {
        self.used.fetch_add(1, Ordering::SeqCst);
    }

    fn signal_config_change(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}
