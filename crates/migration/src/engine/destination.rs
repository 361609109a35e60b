//! The destination side of a migration.

use virtio_lm_vm::{Machine, MachineOptions};

use super::{DestinationReport, Link, MigrationControl, MigrationError};

/// A guest received and running.
pub struct Incoming {
    /// The machine running the migrated guest.
    pub machine: Machine,
    /// What the destination measured.
    pub report: DestinationReport,
}

/// Builds a machine from `options` waiting for a guest (members frozen, no vCPU), receives one
/// over `link`, validates every section before applying it, answers Ready still paused, and on
/// Commit sets the members Active, resumes the vCPUs and acknowledges. Any failure or Cancel
/// before Commit discards everything and returns the error.
pub fn incoming<L: Link>(
    link: L,
    options: MachineOptions,
    control: &MigrationControl,
) -> Result<Incoming, MigrationError> {
    let _ = (link, options, control);
    todo!()
}
