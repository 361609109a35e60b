//! Errors of the device core and device types.

use thiserror::Error;
use virtio_lm_queue::{QueueError, StateError};

/// An error that makes the device set DEVICE_NEEDS_RESET (seed 002), unless it is reported to
/// the caller of a configuration call instead.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The driver's ring broke a rule the device cannot work around.
    #[error("Virtqueue error: {0}")]
    Queue(#[from] QueueError),
    /// A queue could not be started from its configuration and state.
    #[error("Queue {index} cannot start: {source}")]
    QueueStart {
        /// Queue index.
        index: u16,
        /// Why.
        #[source]
        source: StateError,
    },
    /// The backend failed in a way that is not a per-request error.
    #[error("Backend failure: {0}")]
    Backend(String),
    /// A request the device cannot even answer (no room for its status, say).
    #[error("Malformed request: {0}")]
    MalformedRequest(&'static str),
    /// A saved device-specific state is not acceptable.
    #[error("Invalid device state: {0}")]
    BadState(&'static str),
    /// A context's configuration space (DEVICE_CONFIG) differs from this device's in a
    /// read-only byte, or holds a value the driver cannot write.
    #[error("Device configuration differs from this device's at byte {offset}")]
    ConfigMismatch {
        /// First byte that differs.
        offset: usize,
    },
    /// The device could not complete a stop or suspend.
    #[error("Device could not quiesce")]
    Quiesce,
}
