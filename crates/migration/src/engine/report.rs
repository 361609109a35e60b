//! What a migration reports: the `--json` object (field names as issue 9 fixes them), the
//! per-round figures and phase spans a timeline draws, and the outcome.

use serde::{Deserialize, Serialize};
use virtio_lm_vm::MachineReport;

/// How a migration ended, for the source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// The destination acknowledged Commit: it runs the guest; the source stays paused.
    Completed,
    /// Cancelled before Commit (operator, or timeout without `force`): the source runs again.
    Cancelled(String),
    /// Failed before Commit: the source runs again.
    Failed(String),
    /// The link was lost after Commit: the source stays paused and does not know whether the
    /// destination runs the guest.
    #[default]
    Unknown,
}

impl Outcome {
    /// The `result` string of the report: `ok`, or what went wrong.
    pub fn result(&self) -> String {
        match self {
            Outcome::Completed => "ok".into(),
            Outcome::Cancelled(why) => format!("cancelled: {why}"),
            Outcome::Failed(why) => format!("failed: {why}"),
            Outcome::Unknown => "unknown: link lost after Commit; the source stays paused".into(),
        }
    }
}

/// One pre-copy round (round 0 sends all RAM; the final pages after the stop are a round
/// too, with `final_round` set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Round number.
    pub round: u32,
    /// Taken after the vCPUs stopped.
    pub final_round: bool,
    /// Start, milliseconds since the migration began.
    pub start_ms: f64,
    /// End, milliseconds since the migration began.
    pub end_ms: f64,
    /// Pages sent (data and zero markers).
    pub pages: u64,
    /// Wire bytes this round took.
    pub bytes: u64,
    /// Bytes the guest dirtied per second during the round (from the next harvest).
    pub dirty_rate: u64,
    /// Wire bytes per second during the round.
    pub transfer_rate: u64,
}

/// A named span of the migration, named like QEMU's downtime checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSpan {
    /// `precopy`, `src-vm-stop`, `src-device-stop`, `final-memory`, `device-state` (contexts,
    /// vCPU state, Complete), `dst-load` (Complete sent to Ready: the destination's checks and
    /// loading), `commit` (Ready to CommitAck: Commit, destination Active and running).
    pub name: String,
    /// Start, milliseconds since the migration began.
    pub start_ms: f64,
    /// End, milliseconds since the migration began.
    pub end_ms: f64,
}

/// The migration report (`--json`). The workload fields (`requests_*`, `lost`, `duplicated`,
/// `corrupted`, `frames_lost_on_wire`, `guest_stall_ms`) are the guest's; the engine leaves them
/// 0 and [`MigrationReport::add_workloads`] fills them from the destination's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `admin` (seed 004).
    pub strategy: String,
    /// `split` or `packed`.
    pub ring: String,
    /// `drain` or `transfer`.
    pub inflight: String,
    /// The numbering profile of both VMs: `seeds` or `v1.4` (spec-decisions §35).
    #[serde(default)]
    pub profile: String,
    /// Guest RAM bytes.
    pub memory_bytes: u64,
    /// Start to end of the migration.
    pub total_ms: f64,
    /// Source vCPU pause to destination running (CommitAck received).
    pub downtime_ms: f64,
    /// Source Stop + Freeze + final context read, plus destination context write + Active.
    pub device_downtime_ms: f64,
    /// The longest gap between two completed requests as the guest workloads saw them.
    pub guest_stall_ms: f64,
    /// vCPU pause, DEV_MODE_SET Stop and Freeze.
    pub stop_ms: f64,
    /// Final dirty harvest and its pages on the wire.
    pub final_memory_ms: f64,
    /// Final contexts read and sent, and the vCPU state sent.
    pub device_state_ms: f64,
    /// Complete sent to CommitAck received (destination validation, load, commit).
    pub restore_ms: f64,
    /// Pre-copy rounds, round 0 included, the final pages not.
    pub precopy_rounds: u32,
    /// Wire bytes sent.
    pub bytes_sent: u64,
    /// Bytes of the final device contexts.
    pub device_context_bytes: u64,
    /// Requests the guest workloads completed (blk and net).
    pub requests_completed: u64,
    /// Requests the guest workloads verified.
    pub requests_verified: u64,
    /// Requests lost at the virtqueue.
    pub lost: u64,
    /// Requests completed twice.
    pub duplicated: u64,
    /// Requests whose data did not verify.
    pub corrupted: u64,
    /// Net frames the UDP path dropped (not a virtqueue loss).
    pub frames_lost_on_wire: u64,
    /// `ok`, or the error.
    pub result: String,
    /// Per-round figures (timeline).
    pub rounds: Vec<RoundStats>,
    /// Phase spans (timeline).
    pub phases: Vec<PhaseSpan>,
    /// How it ended (also in `result`).
    #[serde(skip)]
    pub outcome: Outcome,
}

impl MigrationReport {
    /// The `--json` names of the workload figures the destination's verification fills in
    /// ([`Self::add_workloads`]), so every writer of a report copies the same set.
    pub const WORKLOAD_FIELDS: [&'static str; 6] = [
        "requests_completed",
        "requests_verified",
        "lost",
        "duplicated",
        "corrupted",
        "frames_lost_on_wire",
    ];

    /// Fills the workload fields from the guest's counters read on the destination after it
    /// ran on and settled ([`virtio_lm_vm::Machine::finish`]): blk requests and net frames
    /// completed and verified, blk requests lost, duplicated or corrupted and net echoes
    /// duplicated or corrupted at the virtqueue; net echoes that never came back are the UDP
    /// path's (`frames_lost_on_wire`), not the virtqueue's; `guest_stall_ms` is the longest gap
    /// between two completions either workload saw (its clock travels with the guest).
    pub fn add_workloads(&mut self, after: &MachineReport) {
        self.guest_stall_ms = after.stall_us as f64 / 1e3;
        // (completed, verified, duplicated, corrupted) add up across the workloads; `lost`
        // means a lost request for blk and a lost echo (the wire's) for net.
        let counts = [
            after
                .blk
                .as_ref()
                .map(|b| (b.completed, b.verified, b.duplicated, b.corrupted)),
            after
                .net
                .as_ref()
                .map(|n| (n.completed, n.verified, n.duplicated, n.corrupted)),
        ];
        let sum = |pick: fn(&(u64, u64, u64, u64)) -> u64| counts.iter().flatten().map(pick).sum();
        self.requests_completed = sum(|c| c.0);
        self.requests_verified = sum(|c| c.1);
        self.lost = after.blk.as_ref().map_or(0, |b| b.lost);
        self.duplicated = sum(|c| c.2);
        self.corrupted = sum(|c| c.3);
        self.frames_lost_on_wire = after.net.as_ref().map_or(0, |n| n.lost);
    }
}

/// What the destination measured, returned by [`crate::incoming`] and sent to the source in
/// CommitAck.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationReport {
    /// Complete received to guest running (validation, dry run, contexts, vCPU state, Active).
    pub restore_ms: f64,
    /// The device part: context writes plus DEV_MODE_SET Active.
    pub device_ms: f64,
    /// Of `restore_ms`: the final validation with the ring dry run.
    pub check_ms: f64,
    /// Of `restore_ms`: context writes and the vCPUs rebuilt (before Ready).
    pub load_ms: f64,
    /// Ready sent to Commit received (the link and the source's turn).
    pub await_commit_ms: f64,
    /// Of `restore_ms`: members Active and vCPUs started (after Commit).
    pub activate_ms: f64,
    /// Wire bytes received.
    pub bytes_received: u64,
    /// Memory sections received.
    pub memory_sections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_lm_devices::blk::workload::BlkReport;
    use virtio_lm_devices::net::workload::NetReport;

    /// The workload figures add blk and net up, except `lost`: blk's lost requests, and net's
    /// lost echoes as the wire's.
    #[test]
    fn workloads_add_up_and_keep_the_two_losses_apart() {
        let after = MachineReport {
            blk: Some(BlkReport {
                completed: 10,
                verified: 9,
                lost: 1,
                duplicated: 2,
                corrupted: 3,
                ..BlkReport::default()
            }),
            net: Some(NetReport {
                completed: 20,
                verified: 19,
                lost: 4,
                duplicated: 5,
                corrupted: 6,
                ..NetReport::default()
            }),
            stall_us: 1500,
            ..MachineReport::default()
        };
        let mut report = MigrationReport::default();
        report.add_workloads(&after);
        assert_eq!(
            (
                report.requests_completed,
                report.requests_verified,
                report.lost,
                report.duplicated,
                report.corrupted,
                report.frames_lost_on_wire,
            ),
            (30, 28, 1, 7, 9, 4)
        );
        assert_eq!(report.guest_stall_ms, 1.5);
        report.add_workloads(&MachineReport::default());
        assert_eq!((report.requests_completed, report.lost), (0, 0));
    }
}
