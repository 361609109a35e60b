//! The source side of a migration.

use virtio_lm_vm::Machine;

use super::{Link, MigrateOptions, MigrationControl, MigrationReport};

/// Migrates the running guest of `machine` over `link` (connected to a destination waiting in
/// [`crate::incoming`]). Always returns a report; its `outcome` says how it ended: Completed
/// (the source stays paused: drop the machine), Cancelled or Failed (the source runs again,
/// dirty logging stopped), or Unknown (the link was lost after Commit; the source stays paused).
pub fn migrate<L: Link>(
    machine: &Machine,
    link: L,
    options: &MigrateOptions,
    control: &MigrationControl,
) -> MigrationReport {
    let _ = (machine, link, options, control);
    todo!()
}
