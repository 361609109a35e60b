//! Why a migration failed.

use crate::{StreamError, WriteError};

/// A failed migration step, naming the section or the check.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Reading the peer's stream.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// Writing to the peer.
    #[error("stream: {0}")]
    Write(#[from] WriteError),
    /// The local machine.
    #[error("machine: {0}")]
    Machine(#[from] virtio_lm_vm::MachineError),
    /// Socket setup.
    #[error("link: {0}")]
    Link(#[from] std::io::Error),
    /// The peer's VM does not match this one (Config, or a pre-copied context).
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// A section failed validation on the destination.
    #[error("invalid {section}: {reason}")]
    Invalid {
        /// The section (type and number).
        section: String,
        /// Why.
        reason: String,
    },
    /// A message arrived where the protocol does not allow it.
    #[error("protocol: expected {expected}, got {got}")]
    Protocol {
        /// What the state machine waited for.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The peer sent Error.
    #[error("peer failed: {0}")]
    Peer(String),
    /// The peer (or the operator) cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
}
