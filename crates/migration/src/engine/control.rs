//! Steering a running migration from another thread: cancel it, read where it stands, or be
//! called on every change (what `virtio-lm vm`'s control socket and progress bars use).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Where a migration stands (the control socket's `status` state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationState {
    /// No migration has started.
    #[default]
    Idle,
    /// Start and Config are being exchanged.
    Setup,
    /// Memory rounds while the guest runs.
    PreCopy,
    /// vCPUs paused, devices stopped; final pages, contexts and vCPU state are being sent.
    Stopped,
    /// Complete sent; waiting for the destination's Ready.
    AwaitingReady,
    /// Commit sent; waiting for CommitAck.
    Committing,
    /// The destination runs the guest.
    Completed,
    /// Cancelled before Commit; the source runs again.
    Cancelled,
    /// Failed before Commit; the source runs again.
    Failed,
    /// The link was lost after Commit: the source stays paused, the operator must find out
    /// whether the destination runs.
    Unknown,
}

impl MigrationState {
    /// Whether the migration is over (in any way).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Cancelled | Self::Failed | Self::Unknown
        )
    }
}

/// A snapshot of a migration's progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Where it stands.
    pub state: MigrationState,
    /// The current pre-copy round (0 sends all RAM).
    pub round: u32,
    /// Rounds completely sent (the final one included).
    pub rounds_done: u32,
    /// Wire bytes sent so far.
    pub bytes_sent: u64,
    /// Dirty bytes still to send (RAM not yet sent in round 0, then the last harvest).
    pub bytes_remaining: u64,
    /// Bytes the guest dirtied per second in the last round.
    pub dirty_rate: u64,
    /// Bytes per second the stream achieved in the last round.
    pub transfer_rate: u64,
    /// Downtime expected if the source stopped now: remaining bytes at the transfer rate.
    pub expected_downtime_ms: f64,
    /// Milliseconds since the migration began.
    pub elapsed_ms: f64,
}

type Observer = Box<dyn Fn(&Progress) + Send + Sync>;

#[derive(Default)]
struct Inner {
    cancel: AtomicBool,
    /// Test switch: a destination skips the ring dry run at Complete.
    skip_ring_check: AtomicBool,
    progress: Mutex<Progress>,
    observer: Mutex<Option<Observer>>,
    faults: super::fault::Faults,
}

/// Shared between the migrating thread and whoever watches it; clones share the state.
#[derive(Clone, Default)]
pub struct MigrationControl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MigrationControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationControl")
            .field("cancelled", &self.is_cancelled())
            .field("progress", &self.progress())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MigrationControl {
    /// A control with no migration yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the migration to cancel. Honoured before Commit (the source runs on); after
    /// Commit it is too late and has no effect.
    pub fn cancel(&self) {
        self.inner.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether a cancel was asked.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.load(Ordering::SeqCst)
    }

    /// Clears a cancel request (before reusing the control for another migration).
    pub fn reset(&self) {
        self.inner.cancel.store(false, Ordering::SeqCst);
        *lock(&self.inner.progress) = Progress::default();
    }

    /// Test switch for a destination: skip the dry run of the ring checks against the received
    /// memory, so a test can show what the guest itself would see without it.
    #[cfg(feature = "test-utils")]
    pub fn set_skip_ring_check(&self, on: bool) {
        self.inner.skip_ring_check.store(on, Ordering::SeqCst);
    }

    pub(crate) fn skip_ring_check(&self) -> bool {
        self.inner.skip_ring_check.load(Ordering::SeqCst)
    }

    pub(super) fn faults(&self) -> &super::fault::Faults {
        &self.inner.faults
    }

    /// The latest progress.
    pub fn progress(&self) -> Progress {
        lock(&self.inner.progress).clone()
    }

    /// Calls `f` with every progress update, on the migrating thread (keep it short).
    pub fn set_observer(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        *lock(&self.inner.observer) = Some(Box::new(f));
    }

    /// Publishes a progress update.
    pub(crate) fn publish(&self, progress: &Progress) {
        *lock(&self.inner.progress) = progress.clone();
        if let Some(f) = lock(&self.inner.observer).as_ref() {
            f(progress);
        }
    }
}
