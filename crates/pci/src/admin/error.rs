//! Errors of the owner's driver side ([`super::AdminClient`]): each names the command, the
//! member and, for a device answer, the status and qualifier.

use std::time::Duration;

use thiserror::Error;
use virtio_lm_spec::admin::{status, DevMode};

use super::decode::{qualifier_name, status_name};
use crate::error::PciError;

/// Why an admin command did not succeed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The device completed the command with a status other than OK.
    #[error(
        "{command} for member {member}: status {status} ({}), qualifier {qualifier} ({})",
        status_name(*status),
        qualifier_name(*qualifier)
    )]
    Command {
        /// The command's name.
        command: &'static str,
        /// `group_member_id`.
        member: u64,
        /// `status`.
        status: u16,
        /// `status_qualifier`.
        qualifier: u16,
    },
    /// The device kept answering EAGAIN.
    #[error("{command} for member {member}: still EAGAIN after {attempts} attempts")]
    Retries {
        /// The command's name.
        command: &'static str,
        /// `group_member_id`.
        member: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// The command did not complete in time. It stays outstanding in the device, so the admin
    /// queue is not used again until [`super::AdminClient::recover`].
    #[error("{command} for member {member}: no completion within {waited:?}")]
    Timeout {
        /// The command's name.
        command: &'static str,
        /// `group_member_id`.
        member: u64,
        /// How long the client waited.
        waited: Duration,
    },
    /// The device's answer does not have the shape the command defines.
    #[error("{command} for member {member}: {reason}")]
    Protocol {
        /// The command's name.
        command: &'static str,
        /// `group_member_id`.
        member: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An earlier command on this admin queue never completed.
    #[error("admin queue {queue} still holds a command that timed out; recover first")]
    Stale {
        /// The admin queue index.
        queue: u16,
    },
    /// The command does not fit the client's buffer for the queue.
    #[error("{command}: {needed} bytes do not fit the {capacity}-byte command buffer")]
    TooLarge {
        /// The command's name.
        command: &'static str,
        /// Bytes needed (readable and writable parts).
        needed: usize,
        /// The buffer.
        capacity: usize,
    },
    /// Refused by the client without sending anything: seed 004, "The driver MUST NOT change
    /// the device mode to Stop or Active in the command VIRTIO_ADMIN_CMD_DEV_MODE_SET when
    /// device context is partially written". Finish the context or send DEV_CTX_DISCARD first.
    #[error(
        "DEV_MODE_SET to {mode:?} for member {member}: a device context written to it is not \
         complete (no END_MARKER yet); finish it or send DEV_CTX_DISCARD first"
    )]
    ContextPartlyWritten {
        /// `group_member_id`.
        member: u64,
        /// The mode the caller asked for.
        mode: DevMode,
    },
    /// Refused by the client without sending anything: seed 004, "the driver MUST write a
    /// complete device context" (from START_MARKER to END_MARKER).
    #[error("DEV_CTX_WRITE for member {member}: the context given is not complete ({reason})")]
    IncompleteContext {
        /// `group_member_id`.
        member: u64,
        /// What is missing.
        reason: &'static str,
    },
    /// The owner function has no usable admin queue (VIRTIO_F_ADMIN_VQ not negotiated, or
    /// `admin_queue_num` smaller than asked for).
    #[error("no admin queue: {0}")]
    NoAdminQueue(&'static str),
    /// Transport or ring failure.
    #[error("transport: {0}")]
    Pci(#[from] PciError),
}

impl AdminError {
    /// The device status of a [`AdminError::Command`] (EAGAIN for [`AdminError::Retries`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Command { status, .. } => Some(*status),
            Self::Retries { .. } => Some(status::EAGAIN),
            _ => None,
        }
    }

    /// The qualifier of a [`AdminError::Command`].
    pub fn qualifier(&self) -> Option<u16> {
        match self {
            Self::Command { qualifier, .. } => Some(*qualifier),
            _ => None,
        }
    }
}
