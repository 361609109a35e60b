//! Waiting for the guest's workloads to move on (tests, and `demo --stress` between two
//! migrations): bounded, so only a hang reaches the limit.

use std::time::{Duration, Instant};

use crate::Machine;

impl Machine {
    /// Waits until each workload (blk completions, verified echoes, dirtier stamps) has moved on
    /// by at least `n` since the call, or `limit` passed. Returns whether they did.
    pub fn wait_progress(&self, n: u64, limit: Duration) -> bool {
        let start = self.report();
        let deadline = Instant::now() + limit;
        loop {
            let r = self.report();
            let moved = |now: Option<u64>, then: Option<u64>| {
                now.unwrap_or(0).saturating_sub(then.unwrap_or(0)) >= n || now.is_none()
            };
            let blk = moved(r.blk.map(|b| b.completed), start.blk.map(|b| b.completed));
            let net = moved(r.net.map(|b| b.verified), start.net.map(|b| b.verified));
            let stamped = r.dirtier.stamped.saturating_sub(start.dirtier.stamped) >= n
                || self.options().dirty_rate_mib == 0;
            if blk && net && stamped {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
