//! Errors of the transport and of the PCI-level driver.

use thiserror::Error;
use virtio_lm_device::CoreError;
use virtio_lm_queue::DriverError;
use virtio_lm_spec::{DeviceStatus, Feature};

/// Why a transport or driver operation failed.
#[derive(Debug, Error)]
pub enum PciError {
    /// An eventfd or thread could not be created.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The device core could not be built.
    #[error("Device core: {0}")]
    Core(#[from] CoreError),
    /// The interrupt model has fewer queue slots than the device has queues.
    #[error("MsixInterrupts built for {interrupts} queues, device has {device}")]
    QueueCountMismatch {
        /// Queues the interrupt model routes.
        interrupts: u16,
        /// Queues of the device.
        device: u16,
    },
    /// A worker was asked for on a function whose kicks are delivered directly.
    #[error("The function kicks the core directly; there is no eventfd for a worker")]
    NoKickEventFds,
    /// The PCI configuration space is not that of a modern virtio function.
    #[error("Not a virtio-pci function: {0}")]
    NotVirtio(&'static str),
    /// A capability the driver needs is absent.
    #[error("Capability with cfg_type {0} not found")]
    MissingCapability(u8),
    /// A capability is malformed (too short, loops, or points outside what the driver can reach).
    #[error("Malformed capability: {0}")]
    BadCapability(&'static str),
    /// The driver wants a feature the device did not accept or offer.
    #[error("Feature {0} not negotiated")]
    FeatureNotNegotiated(Feature),
    /// VIRTIO_F_VERSION_1 is not in the negotiated set: this driver only drives modern devices.
    #[error("VIRTIO_F_VERSION_1 not offered by the device")]
    NotModern,
    /// The device did not accept the features (FEATURES_OK did not stick).
    #[error("Device rejected the features (status {status:#04x})")]
    FeaturesRejected {
        /// Status read back.
        status: DeviceStatus,
    },
    /// The operation needs DRIVER_OK (seed 000: DEVICE_STOPPED is only set or cleared then).
    #[error("Device not running (status {status:#04x})")]
    NotRunning {
        /// Status read.
        status: DeviceStatus,
    },
    /// The operation needs SUSPEND presented.
    #[error("Device not suspended (status {status:#04x})")]
    NotSuspended {
        /// Status read.
        status: DeviceStatus,
    },
    /// The operation needs a device that is stopped, suspended or reset.
    #[error("Device is running (status {status:#04x})")]
    NotQuiescent {
        /// Status read.
        status: DeviceStatus,
    },
    /// A restored driver state is inconsistent.
    #[error("Invalid driver state: {0}")]
    BadDriverState(&'static str),
    /// The device set DEVICE_NEEDS_RESET (seed 002); only a reset recovers.
    #[error("Device needs reset (status {status:#04x})")]
    NeedsReset {
        /// Status read.
        status: DeviceStatus,
    },
    /// The device did not present the expected status within the retry bound.
    #[error("Timed out waiting for {what} after {attempts} reads (last status {status:#04x})")]
    Timeout {
        /// What the driver waited for.
        what: &'static str,
        /// Status reads made.
        attempts: u32,
        /// The last status read.
        status: DeviceStatus,
    },
    /// The device has no such queue (queue_size reads 0).
    #[error("Queue {0} does not exist")]
    NoSuchQueue(u16),
    /// The requested queue size exceeds the device's maximum.
    #[error("Queue {index}: size {size} exceeds the device maximum {max}")]
    QueueTooLarge {
        /// Queue index.
        index: u16,
        /// Requested size.
        size: u16,
        /// Device maximum.
        max: u16,
    },
    /// The device refused an MSI-X vector (reads back VIRTIO_MSI_NO_VECTOR).
    #[error("MSI-X vector {vector} refused")]
    VectorRefused {
        /// The vector written.
        vector: u16,
    },
    /// The device did not accept a queue state write (outside the FEATURES_OK..DRIVER_OK window).
    #[error("Queue {index}: state not accepted")]
    StateNotAccepted {
        /// Queue index.
        index: u16,
    },
    /// The queue was not set up by [`crate::PciDriver::init`].
    #[error("Queue {0} is not set up")]
    QueueNotSetUp(u16),
    /// The driver has not initialised the device yet.
    #[error("The driver has not initialised the device")]
    NotInitialised,
    /// The driver side of a ring failed.
    #[error("Ring: {0}")]
    Ring(#[from] DriverError),
}
