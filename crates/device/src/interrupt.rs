//! Notifications from the device to the driver, delivered by the transport.

use crate::Counter;

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
    used: Counter,
    config: Counter,
}

impl InterruptCounter {
    crate::counter_getters! {
        /// Used-buffer notifications so far.
        used,
        /// Configuration change notifications so far.
        config,
    }
}

impl Interrupts for InterruptCounter {
    fn signal_used_queue(&self, _index: u16) {
        self.used.increment();
    }

    fn signal_config_change(&self) {
        self.config.increment();
    }
}
