//! Pausing the vCPUs at a safe point: each guest thread calls [`PauseControl::safe_point`]
//! between two requests, where everything it needs to continue is either in guest memory or
//! in its state (nothing half-submitted), and parks there while a pause is requested.
//! [`PauseControl::pause`] returns once every running vCPU is parked (a thread that has exited
//! no longer counts), so the caller may then read or replace the vCPUs' state.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    pause: bool,
    quit: bool,
    /// vCPU threads started and not yet exited.
    running: usize,
    /// vCPUs parked at a safe point.
    parked: usize,
    /// Pause requests served (a parked vCPU waits for the epoch to move on, so a
    /// pause-resume-pause in quick succession cannot leave one running).
    epoch: u64,
}

/// What a vCPU does after its safe point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run the next step.
    Run,
    /// Exit the thread.
    Quit,
}

/// Why a pause did not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    /// A vCPU did not reach a safe point in time (it is stuck in a step).
    #[error("{parked} of {running} vCPUs reached a safe point in {waited:?}")]
    Timeout {
        /// Parked vCPUs.
        parked: usize,
        /// Running vCPUs.
        running: usize,
        /// How long the pause waited.
        waited: Duration,
    },
}

/// The pause state every vCPU thread of a machine shares.
#[derive(Debug, Default)]
pub struct PauseControl {
    state: Mutex<State>,
    changed: Condvar,
}

impl PauseControl {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A vCPU that panicked holds no invariant of this state: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a vCPU thread about to start.
    pub fn enter(&self) {
        self.lock().running += 1;
        self.changed.notify_all();
    }

    /// Unregisters a vCPU thread that is exiting.
    pub fn exit(&self) {
        let mut s = self.lock();
        s.running = s.running.saturating_sub(1);
        drop(s);
        self.changed.notify_all();
    }

    /// A vCPU's safe point: parks while a pause is requested; says whether to quit.
    pub fn safe_point(&self) -> Next {
        let mut s = self.lock();
        // A vCPU released by a resume may not run before the next pause begins: it then parks
        // again, counted in the new epoch (the resume already cleared the old count, so a
        // pause never counts a vCPU that is about to step).
        while s.pause && !s.quit {
            s.parked += 1;
            let epoch = s.epoch;
            self.changed.notify_all();
            while s.pause && s.epoch == epoch && !s.quit {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.epoch == epoch {
                // Left by a quit within the same pause: no longer parked.
                s.parked -= 1;
            }
        }
        if s.quit {
            Next::Quit
        } else {
            Next::Run
        }
    }

    /// Asks every vCPU to park and waits up to `timeout` until all running ones have. On a
    /// timeout the request is withdrawn (the vCPUs already parked run on).
    pub fn pause(&self, timeout: Duration) -> Result<(), PauseError> {
        let start = Instant::now();
        let mut s = self.lock();
        s.pause = true;
        while s.parked < s.running {
            let waited = start.elapsed();
            if waited >= timeout {
                let err = PauseError::Timeout {
                    parked: s.parked,
                    running: s.running,
                    waited,
                };
                s.pause = false;
                s.epoch += 1;
                s.parked = 0;
                drop(s);
                self.changed.notify_all();
                return Err(err);
            }
            let (next, _) = self
                .changed
                .wait_timeout(s, timeout - waited)
                .unwrap_or_else(|e| e.into_inner());
            s = next;
        }
        Ok(())
    }

    /// Whether a pause is in force and every running vCPU is parked at its safe point.
    pub fn all_parked(&self) -> bool {
        let s = self.lock();
        s.pause && s.parked == s.running
    }

    /// Whether a pause is in force (requested and not resumed).
    pub fn is_paused(&self) -> bool {
        self.lock().pause
    }

    /// Lets every parked vCPU run on.
    pub fn resume(&self) {
        let mut s = self.lock();
        s.pause = false;
        s.epoch += 1;
        // Every parked vCPU is released by the new epoch, whether or not it has run yet.
        s.parked = 0;
        drop(s);
        self.changed.notify_all();
    }

    /// Tells every vCPU to exit at its next safe point (parked ones at once).
    pub fn quit(&self) {
        self.lock().quit = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// While paused, no vCPU makes a step; after resume each does; quit ends them.
    #[test]
    fn paused_vcpus_make_no_steps() {
        let control = Arc::new(PauseControl::default());
        let steps = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (control, steps) = (control.clone(), steps.clone());
                control.enter();
                std::thread::spawn(move || {
                    while control.safe_point() == Next::Run {
                        steps.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                    control.exit();
                })
            })
            .collect();
        for _ in 0..50 {
            control.pause(Duration::from_secs(10)).unwrap();
            assert!(
                control.all_parked(),
                "pause returned before every vCPU parked"
            );
            let before = steps.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(
                steps.load(Ordering::SeqCst),
                before,
                "a paused vCPU stepped"
            );
            control.resume();
            let deadline = Instant::now() + Duration::from_secs(10);
            while steps.load(Ordering::SeqCst) < before + 3 {
                assert!(Instant::now() < deadline, "the vCPUs did not resume");
                std::thread::yield_now();
            }
        }
        control.pause(Duration::from_secs(10)).unwrap();
        control.quit();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A vCPU that never reaches a safe point fails the pause, and the others run on.
    #[test]
    fn a_stuck_vcpu_times_the_pause_out() {
        let control = PauseControl::default();
        control.enter();
        let err = control.pause(Duration::from_millis(20)).unwrap_err();
        assert!(matches!(
            err,
            PauseError::Timeout {
                parked: 0,
                running: 1,
                ..
            }
        ));
        assert!(!control.is_paused());
    }
}
