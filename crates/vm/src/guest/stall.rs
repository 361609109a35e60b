//! The guest's own measure of downtime: the longest gap between two completed requests as a
//! workload saw them (issue 9's `guest_stall_ms`). Wall-clock nanoseconds, so the clock
//! travels in the vCPU state to another process on the same host and the gap across a
//! migration is measured whole.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// When the last request completed, and the longest gap so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallClock {
    /// Wall-clock time of the last completion, ns since the Unix epoch (0: none yet).
    pub last_ns: u64,
    /// The longest gap between two completions, ns.
    pub longest_ns: u64,
}

impl StallClock {
    /// Records that `n` requests completed just now.
    pub fn completed(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if self.last_ns != 0 {
            self.longest_ns = self.longest_ns.max(now.saturating_sub(self.last_ns));
        }
        self.last_ns = now;
    }
}
