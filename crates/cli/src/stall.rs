//! The guest's view of downtime: a sampler thread in each VM process watches the workloads'
//! completion counters and keeps the wall-clock time of the last change and the longest gap
//! between two changes. Wall-clock (not `Instant`) because the gap that matters spans two
//! processes: the last completion the source's guest saw before it paused and the first one
//! the destination's saw after it resumed (`guest_stall_ms` of the report).
//!
//! Gaps are lower bounds: a gap counts from the sample that saw a change to the last sample
//! that saw none, so a sampler kept off the CPU (a loaded machine) cannot inflate it; the
//! resolution is the sampling period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use virtio_lm_vm::{Machine, MachineReport};

/// How often the counters are sampled: the measurement's resolution.
const SAMPLE: Duration = Duration::from_micros(500);

/// What a [`StallMonitor`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StallFigures {
    /// Wall-clock time (ns since the epoch) by which nothing had completed yet; 0 if nothing
    /// completed.
    pub first_ns: u64,
    /// Wall-clock time by which the last completion seen had happened; 0 if none.
    pub last_ns: u64,
    /// The longest gap between two completions seen here, ms.
    pub max_gap_ms: f64,
    /// The longest time between two samples, ms: the sampler's own scheduling delay, a bound
    /// on how much a gap may be over-reported.
    #[serde(default)]
    pub max_sample_interval_ms: f64,
}

impl StallFigures {
    /// The longest stall of a guest that ran here (`self`) and then on `after`: the longest
    /// gap on either side or across the hand-over.
    pub fn across(&self, after: &StallFigures) -> f64 {
        self.hand_over(after)
            .max(self.max_gap_ms)
            .max(after.max_gap_ms)
    }

    /// The gap from the last completion here to the first on `after`, ms (0 if either side
    /// saw none).
    pub fn hand_over(&self, after: &StallFigures) -> f64 {
        if self.last_ns != 0 && after.first_ns != 0 {
            after.first_ns.saturating_sub(self.last_ns) as f64 / 1e6
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    max_gap_ns: AtomicU64,
    max_interval_ns: AtomicU64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Completions of both workloads (blk requests, verified net echoes).
pub fn completions(report: &MachineReport) -> u64 {
    report.blk.map_or(0, |b| b.completed) + report.net.map_or(0, |n| n.verified)
}

/// The sampler thread; stops when dropped.
pub struct StallMonitor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StallMonitor {
    /// Starts sampling `machine`'s guest.
    pub fn start(machine: Arc<Machine>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stall-monitor".into())
            .spawn(move || {
                let mut seen = completions(&machine.report());
                let mut previous = now_ns();
                while !s.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(SAMPLE);
                    let now = completions(&machine.report());
                    let at = now_ns();
                    s.max_interval_ns
                        .fetch_max(at.saturating_sub(previous), Ordering::Relaxed);
                    if now != seen {
                        // The completions came after the previous sample and by this one:
                        // what is certain is no progress from the last change seen to the
                        // previous sample, however late this sample ran.
                        seen = now;
                        let last = s.last_ns.swap(at, Ordering::Relaxed);
                        if last == 0 {
                            s.first_ns.store(previous, Ordering::Relaxed);
                        } else {
                            s.max_gap_ns
                                .fetch_max(previous.saturating_sub(last), Ordering::Relaxed);
                        }
                    }
                    previous = at;
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// What it saw so far.
    pub fn figures(&self) -> StallFigures {
        let s = &self.shared;
        StallFigures {
            first_ns: s.first_ns.load(Ordering::Relaxed),
            last_ns: s.last_ns.load(Ordering::Relaxed),
            max_gap_ms: s.max_gap_ns.load(Ordering::Relaxed) as f64 / 1e6,
            max_sample_interval_ms: s.max_interval_ns.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Forgets the longest gap so far: a migration's stall is measured from its start, not
    /// from the guest's boot.
    pub fn restart_gap(&self) {
        self.shared.max_gap_ns.store(0, Ordering::Relaxed);
        self.shared.max_interval_ns.store(0, Ordering::Relaxed);
    }

    /// Stops the thread (it holds a reference to the machine until then).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A sampler that panicked has nothing more to give.
            let _ = t.join();
        }
    }
}

impl Drop for StallMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_spans_the_hand_over() {
        let src = StallFigures {
            first_ns: 1_000_000,
            last_ns: 50_000_000,
            max_gap_ms: 2.0,
            ..StallFigures::default()
        };
        let dst = StallFigures {
            first_ns: 57_000_000,
            last_ns: 90_000_000,
            max_gap_ms: 1.0,
            ..StallFigures::default()
        };
        assert_eq!(src.across(&dst), 7.0);
        assert_eq!(src.hand_over(&dst), 7.0);
        assert_eq!(src.across(&StallFigures::default()), 2.0);
    }
}
