//! The migration engine (seed 004, the admin-command strategy): [`migrate`] on the source,
//! [`incoming`] on the destination, over any [`Link`].

mod control;
mod destination;
mod error;
mod fault;
mod link;
mod options;
mod report;
mod source;
mod tls;
mod v14;
mod wire;

pub use control::{MigrationControl, MigrationState, Progress};
pub use destination::{incoming, incoming_with_timeout, Incoming, LINK_TIMEOUT};
pub use error::MigrationError;
pub use fault::{Fault, FaultPoint};
pub use link::Link;
pub use options::{Inflight, MigrateOptions, Strategy};
pub use report::{DestinationReport, MigrationReport, Outcome, PhaseSpan, RoundStats};
pub use source::{migrate, vm_config};
pub use tls::{Tls, TlsFiles, TlsLink};
