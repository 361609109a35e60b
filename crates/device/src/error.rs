//! Errors of the device core and device types.

use thiserror::Error;
use virtio_lm_queue::{PositionError, QueueError, StateError};

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
    /// A descriptor chain the device cannot even answer: it cannot be returned with the result
    /// its device type defines, so the device sets DEVICE_NEEDS_RESET (seed 002) instead of
    /// guessing.
    #[error("Descriptor chain {id} cannot be answered: {fault}")]
    MalformedChain {
        /// Chain id (split head index, packed buffer id).
        id: u16,
        /// What is wrong with it.
        fault: ChainFault,
    },
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
    /// A queue's ring position could not be recovered from guest memory (spec-decisions §32).
    #[error("Queue {index}: no ring position: {source}")]
    RingPosition {
        /// Queue index.
        index: u16,
        /// Why.
        #[source]
        source: PositionError,
    },
    /// A ring position was set outside the window the v1.4 profile allows, or does not fit.
    #[error("Ring position refused: {0}")]
    PositionWindow(&'static str),
}

/// Why a descriptor chain cannot be answered ([`DeviceError::MalformedChain`]).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ChainFault {
    /// No device-writable byte for the status or acknowledgement the device type returns.
    #[error("no device-writable byte for its status")]
    NoWritableByte,
    /// Its device-writable buffers cannot be written (guest memory refused the access).
    #[error("its device-writable buffers cannot be written")]
    Unwritable,
}
