//! Every way a device context can be refused: malformed bytes (with the byte offset of the
//! field header), a model that cannot be encoded, and a context the device cannot accept.

use thiserror::Error;
use virtio_lm_queue::{ConfigError, QueueError, StateError};
use virtio_lm_spec::context::FieldType;

use crate::error::DeviceError;

/// Why a device context could not be parsed, encoded, saved, validated or restored.
///
/// Format errors carry `offset`, the byte offset of the field header (or of the end of the data
/// for a context that stops early). Validation errors name the queue or the value instead.
/// Every error of `validate_context`/`restore_context` except [`ContextError::DeviceRestore`]
/// leaves the device unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ContextError {
    /// Fewer than 8 bytes left where a field header must start.
    #[error("Truncated field header at byte {offset}: {remaining} bytes left")]
    TruncatedHeader {
        /// Offset of the partial header.
        offset: usize,
        /// Bytes left in the buffer.
        remaining: usize,
    },
    /// The value (with its padding to 8 bytes) does not fit in the bytes that are left.
    #[error(
        "{field_type:?} at byte {offset}: {needed} value bytes with padding, {remaining} left"
    )]
    TruncatedValue {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// Value length rounded up to 8.
        needed: usize,
        /// Bytes left after the header.
        remaining: usize,
    },
    /// A length above the format's limit ([`super::MAX_FIELD_LEN`], or the type's own limit).
    #[error("{field_type:?} at byte {offset}: length {length} exceeds the limit of {max} bytes")]
    LengthOverflow {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// The length in the header.
        length: u64,
        /// The limit.
        max: usize,
    },
    /// A fixed-size field whose length is not exactly its size.
    #[error("{field_type:?} at byte {offset}: length {length}, expected {expected}")]
    BadLength {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// The length in the header.
        length: usize,
        /// The length the type requires.
        expected: usize,
    },
    /// A well-framed value whose content is not acceptable (unknown flag bits, a count that
    /// disagrees with the length, a queue size of 0, ...).
    #[error("{field_type:?} at byte {offset}: {reason}")]
    InvalidValue {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// What is wrong.
        reason: &'static str,
    },
    /// A field of a type this receiver does not know, without the OPTIONAL flag.
    #[error("Unknown mandatory field {field_type:?} at byte {offset}")]
    UnknownMandatoryField {
        /// Offset of the field header.
        offset: usize,
        /// The unknown type.
        field_type: FieldType,
    },
    /// The first field is not START_MARKER (or there is no field at all).
    #[error("Context does not start with START_MARKER (byte {offset})")]
    MissingStartMarker {
        /// Offset of the first field.
        offset: usize,
    },
    /// A second START_MARKER before the END_MARKER.
    #[error("Second START_MARKER at byte {offset}")]
    DuplicateStartMarker {
        /// Offset of the second START_MARKER.
        offset: usize,
    },
    /// The data ended without an END_MARKER.
    #[error("Context ends at byte {offset} without END_MARKER")]
    MissingEndMarker {
        /// Length of the data.
        offset: usize,
    },
    /// Bytes after the END_MARKER.
    #[error("Data after END_MARKER at byte {offset}")]
    TrailingData {
        /// Offset of the first byte after END_MARKER.
        offset: usize,
    },
    /// A field where the order rules forbid it (spec-decisions §5 order; a queue's VQ_STATE only
    /// after its VQ_CONFIG, in-flight fields only after its VQ_STATE, ...).
    #[error("{field_type:?} at byte {offset} out of order: {reason}")]
    OutOfOrder {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A queue field for a queue index not below PCI_COMMON_CFG's `num_queues`.
    #[error("{field_type:?} at byte {offset}: queue {index} is not below num_queues {num_queues}")]
    QueueIndexOutOfRange {
        /// Offset of the field header.
        offset: usize,
        /// The field's type.
        field_type: FieldType,
        /// The queue index in the value.
        index: u16,
        /// num_queues of the context.
        num_queues: u16,
    },
    /// A required field is absent at END_MARKER (`queue` names the queue for per-queue fields).
    #[error(
        "Required field {field_type:?} (queue {queue:?}) missing at END_MARKER (byte {offset})"
    )]
    MissingField {
        /// Offset of the END_MARKER.
        offset: usize,
        /// The missing type.
        field_type: FieldType,
        /// The queue, for VQ_CONFIG and VQ_STATE.
        queue: Option<u16>,
    },
    /// VQ_INFLIGHT and VQ_INFLIGHT_CHAINS of one queue list different ids or orders.
    #[error("VQ_INFLIGHT and VQ_INFLIGHT_CHAINS of queue {index} disagree (byte {offset})")]
    InflightMismatch {
        /// Offset of the later of the two fields.
        offset: usize,
        /// The queue.
        index: u16,
    },
    /// VQ_INFLIGHT lists heads but VQ_INFLIGHT_CHAINS is absent: the chains cannot be rebuilt
    /// (a packed ring overwrote them), so the requests would be lost.
    #[error("Queue {index} has in-flight heads without VQ_INFLIGHT_CHAINS (byte {offset})")]
    InflightWithoutChains {
        /// Offset of the VQ_INFLIGHT field.
        offset: usize,
        /// The queue.
        index: u16,
    },
    /// The model holds a value the format cannot carry (too long, too many, empty features,
    /// a device-specific type outside 0x0200–0x03FF, ...).
    #[error("Cannot encode {field_type:?}: {reason}")]
    Unencodable {
        /// The field that cannot be written.
        field_type: FieldType,
        /// Why.
        reason: &'static str,
    },
    /// Save or restore while the device may still touch its queues.
    #[error("The device is not quiescent (running, or a stop or suspend still in progress)")]
    NotQuiescent,
    /// A live queue's state could not be read.
    #[error("Queue {index} state cannot be saved: {source}")]
    QueueNotSaved {
        /// Queue index.
        index: u16,
        /// Why.
        #[source]
        source: QueueError,
    },
    /// A field whose length differs from the length of the field in this device (seed 004):
    /// DEVICE_FEATURES or DRIVER_FEATURES with another number of feature words, DEVICE_CONFIG
    /// with another size than the device's configuration space.
    #[error("{field_type:?} is {length} bytes long, {device} in this device")]
    FieldLength {
        /// The field.
        field_type: FieldType,
        /// Its length in the context.
        length: usize,
        /// Its length in this device.
        device: usize,
    },
    /// DEVICE_FEATURES differs from what this device offers.
    #[error("Context offers features {context:#x} (word 0), this device offers {device:#x}")]
    DeviceFeatures {
        /// Word 0 of the context's DEVICE_FEATURES (0 when empty).
        context: u64,
        /// This device's offer.
        device: u64,
    },
    /// DRIVER_FEATURES has bits this device does not offer.
    #[error("Driver features {bits:#x} (word {word}) are not offered by this device")]
    DriverFeatures {
        /// The word index.
        word: usize,
        /// The bits not offered.
        bits: u64,
    },
    /// A device status no sequence of driver writes can produce.
    #[error("Device status {status:#04x} is not reachable: {reason}")]
    InvalidStatus {
        /// The status.
        status: u8,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// DEVICE_CONFIG differs from this device's configuration space in a read-only byte (as
    /// the device would present it with the context's device-specific state), or holds a
    /// value the driver cannot write.
    #[error("DEVICE_CONFIG differs from the device's configuration at byte {offset}")]
    DeviceConfigMismatch {
        /// First differing byte.
        offset: usize,
    },
    /// The context has a different number of queues than this device.
    #[error("Context has {context} queues, this device {device}")]
    NumQueues {
        /// Queues in the context.
        context: usize,
        /// Queues of this device.
        device: u16,
    },
    /// A queue's registers are not acceptable to this device.
    #[error("Queue {index}: {reason}")]
    QueueConfig {
        /// Queue index.
        index: u16,
        /// Why.
        reason: &'static str,
    },
    /// An enabled queue's layout is invalid (size, alignment, outside guest memory).
    #[error("Queue {index} layout: {source}")]
    QueueLayout {
        /// Queue index.
        index: u16,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// A queue's state (indices, in-flight chains) is invalid for its configuration and guest
    /// memory.
    #[error("Queue {index} state: {source}")]
    QueueState {
        /// Queue index.
        index: u16,
        /// Why.
        #[source]
        source: StateError,
    },
    /// The device type refused its device-specific state (its decoding failed).
    #[error("Device-specific state refused: {0}")]
    DeviceState(#[source] DeviceError),
    /// The device type failed to activate after the context was validated and applied; the
    /// device has set DEVICE_NEEDS_RESET (spec-decisions §2: a failed restore).
    #[error("Device failed to apply its restored state: {0}")]
    DeviceRestore(#[source] DeviceError),
}
