//! What the operator chooses for one migration (`virtio-lm migrate` / `demo` flags).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use virtio_lm_vm::StatusBit;

/// How the devices are moved (`--strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Seed 004: the owner's admin queue (DEV_MODE_SET Stop/Freeze/Active, DEV_CTX_READ/WRITE).
    #[default]
    Admin,
    /// Seeds 000/001/003, in-band (`--strategy status --status-bit stopped|suspend`): each
    /// device stopped through its own status register, its state read through the transport,
    /// and re-initialised on the destination as a driver would (spec-decisions §15).
    Status(StatusBit),
}

impl Strategy {
    /// The report's spelling: `admin`, `status-stopped` or `status-suspend`.
    pub fn name(self) -> String {
        match self {
            Strategy::Admin => "admin".into(),
            Strategy::Status(bit) => format!("status-{}", bit.name()),
        }
    }
}

/// What happens to requests the devices have in process when they stop (`--inflight`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inflight {
    /// Stop completes them on the source before it is acknowledged.
    #[default]
    Drain,
    /// They travel in the context's in-flight field; the destination completes each once.
    Transfer,
}

/// The options of one outgoing migration.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// How the devices move (`--strategy`).
    pub strategy: Strategy,
    /// `--inflight drain|transfer`; the source's members are switched to it before Stop.
    pub inflight: Inflight,
    /// Pre-copy ends once the expected downtime fits this (`--downtime-ms`, default 10).
    pub downtime_ms: u64,
    /// Longest pre-copy (`--timeout`); then the migration is cancelled, or, with `force`,
    /// switched over whatever the expected downtime.
    pub timeout: Duration,
    /// `--force`: converge at the timeout instead of cancelling.
    pub force: bool,
    /// `--max-bandwidth`, bytes per second of stream; `None` for unlimited.
    pub max_bandwidth: Option<u64>,
    /// How long to wait for the peer at each blocking step (a lost link ends the migration).
    pub link_timeout: Duration,
}

impl MigrateOptions {
    /// `downtime_ms` when the operator gives none (`--downtime-ms`).
    pub const DEFAULT_DOWNTIME_MS: u64 = 10;
    /// `timeout` in seconds when the operator gives none (`--timeout`).
    pub const DEFAULT_TIMEOUT_S: u64 = 60;
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Admin,
            inflight: Inflight::Drain,
            downtime_ms: Self::DEFAULT_DOWNTIME_MS,
            timeout: Duration::from_secs(Self::DEFAULT_TIMEOUT_S),
            force: false,
            max_bandwidth: None,
            link_timeout: Duration::from_secs(60),
        }
    }
}
