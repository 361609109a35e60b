//! Named steps of a migration where a test acts (issue 13, "Cancel and rollback at every
//! step"; spec-decisions §26): the source calls [`MigrationControl::reached`] at each step, which
//! runs the test's hook (feature `test-utils`) and then honours a cancel. Without a hook a step
//! is only a cancel check, so an operator's cancel is honoured at the next step, not only at
//! the check before Commit.

use std::sync::{Arc, Mutex};

use super::{MigrationControl, MigrationError};

/// A step of the source's migration, in the order they come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Start exchanged and Config sent; nothing of the guest on the wire yet.
    AfterStart,
    /// Round 0's first Memory section sent.
    MidRound0,
    /// The first Memory section of a dirty round (round ≥ 1) sent.
    MidDirtyRound,
    /// The device pre-copy contexts sent (the status strategy has none: the step still comes).
    AfterDevicePrecopy,
    /// vCPUs paused; the devices still run.
    AfterVcpuPause,
    /// Every device stopped (admin: DEV_MODE_SET Stop, before Freeze; status: the bit
    /// presented).
    AfterStop,
    /// Every member in Freeze (admin only).
    AfterFreeze,
    /// The final round's first Memory section sent (or the round, when nothing was dirty).
    MidFinalMemory,
    /// The first final DeviceContext sent.
    MidFinalContext,
    /// Complete sent; the destination loads.
    AfterComplete,
    /// The destination answered Ready; the last step a cancel is honoured.
    AfterReady,
    /// Commit sent, CommitAck not read: a fault here is a link lost after Commit.
    AfterCommit,
}

impl FaultPoint {
    /// Every step, in order.
    pub const ALL: [FaultPoint; 12] = [
        Self::AfterStart,
        Self::MidRound0,
        Self::MidDirtyRound,
        Self::AfterDevicePrecopy,
        Self::AfterVcpuPause,
        Self::AfterStop,
        Self::AfterFreeze,
        Self::MidFinalMemory,
        Self::MidFinalContext,
        Self::AfterComplete,
        Self::AfterReady,
        Self::AfterCommit,
    ];
}

/// What the hook asks for at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Go on.
    Continue,
    /// Cancel, as the operator would.
    Cancel,
    /// Fail the step, as a lost link would (after Commit: no CommitAck).
    Fail,
}

type Hook = Arc<dyn Fn(FaultPoint) -> Fault + Send + Sync>;

/// The hook a control carries (none outside tests).
#[derive(Default)]
pub(super) struct Faults(Mutex<Option<Hook>>);

impl Faults {
    fn get(&self) -> Option<Hook> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl MigrationControl {
    /// Test switch: `hook` is called at every [`FaultPoint`] the migration reaches, on the
    /// migrating thread, and says what happens there.
    #[cfg(feature = "test-utils")]
    pub fn set_fault_hook(&self, hook: impl Fn(FaultPoint) -> Fault + Send + Sync + 'static) {
        *self.faults().0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// The source reached `point`: runs the hook, then honours a cancel (before Commit).
    pub(super) fn reached(&self, point: FaultPoint) -> Result<(), MigrationError> {
        let fault = self.faults().get().map_or(Fault::Continue, |h| h(point));
        match fault {
            Fault::Continue => {}
            Fault::Cancel => self.cancel(),
            Fault::Fail => {
                return Err(MigrationError::Link(std::io::Error::other(format!(
                    "fault injected at {point:?}"
                ))))
            }
        }
        if point != FaultPoint::AfterCommit && self.is_cancelled() {
            return Err(MigrationError::Cancelled("by the operator".into()));
        }
        Ok(())
    }
}
