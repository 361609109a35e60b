//! The memory-dirtying vCPU (`--dirty-rate MiB/s`, `--working-set MiB`): it walks its working
//! set page by page, stamping each page it passes with `(page, pass)`, at a rate kept by a
//! token bucket. Its position and pass are all it needs to continue, and they also say what
//! every page must hold — so after a migration [`Dirtier::verify`] finds any page the memory
//! transfer got wrong (a page written and not re-sent shows an older pass).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use super::Vcpu;
use crate::memory::{GuestRam, PAGE_SIZE};

/// Most pages one step stamps, so a pause is never held up for long.
const MAX_BATCH: u64 = 256;
/// Most time of tokens the bucket holds: a guest that was paused does not burst afterwards.
const MAX_BURST: Duration = Duration::from_millis(10);

/// The dirtier's state that travels with the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirtierState {
    /// Next page to stamp (index in the working set).
    pub position: u64,
    /// Passes over the working set begun: pages before `position` carry this pass, the others
    /// the one before (pass 0 pages hold nothing yet).
    pub pass: u64,
    /// Pages stamped so far.
    pub stamped: u64,
}

/// The dirtying vCPU.
pub struct Dirtier {
    ram: Arc<GuestRam>,
    at: u64,
    pages: u64,
    /// Pages per second.
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
    state: DirtierState,
}

/// What a page holds after `pass` stamped it: a value no other page or pass has, never 0.
fn stamp(page: u64, pass: u64) -> u64 {
    (pass << 32 | page) ^ 0x9e37_79b9_7f4a_7c15
}

impl Dirtier {
    /// A dirtier of `len` bytes from `at` in `ram`, writing `rate_mib` MiB per second, from
    /// `state`.
    pub fn new(ram: Arc<GuestRam>, at: u64, len: u64, rate_mib: u64, state: DirtierState) -> Self {
        Self {
            ram,
            at,
            pages: len / PAGE_SIZE,
            rate: (rate_mib * (1 << 20) / PAGE_SIZE) as f64,
            tokens: 0.0,
            last: None,
            state,
        }
    }

    /// [`Self::new`] from a state that came from elsewhere: its position must lie inside the
    /// working set.
    pub fn restore(
        ram: Arc<GuestRam>,
        at: u64,
        len: u64,
        rate_mib: u64,
        state: DirtierState,
    ) -> Result<Self, String> {
        let pages = len / PAGE_SIZE;
        if state.position >= pages.max(1) {
            return Err(format!(
                "dirtier position {} past the working set",
                state.position
            ));
        }
        Ok(Self::new(ram, at, len, rate_mib, state))
    }

    /// Its state.
    pub fn state(&self) -> DirtierState {
        self.state
    }

    /// Pages of the working set whose stamp is not what the state says; the first few are
    /// named in the error.
    pub fn verify(&self) -> Result<(), String> {
        let mut wrong = Vec::new();
        let mut count = 0u64;
        for page in 0..self.pages {
            // The pass is counted when its first page is stamped, so at position 0 the pass
            // just completed covers every page.
            let pass = if page < self.state.position || self.state.position == 0 {
                self.state.pass
            } else {
                self.state.pass.saturating_sub(1)
            };
            let want = if pass == 0 { 0 } else { stamp(page, pass) };
            let got: u64 = self
                .ram
                .read_obj(GuestAddress(self.at + page * PAGE_SIZE))
                .map_err(|e| e.to_string())?;
            if got != want {
                count += 1;
                if wrong.len() < 4 {
                    wrong.push(format!("page {page}: {got:#x} != {want:#x}"));
                }
            }
        }
        if count == 0 {
            Ok(())
        } else {
            Err(format!("{count} pages wrong: {}", wrong.join(", ")))
        }
    }

    fn stamp_next(&mut self) -> Result<(), String> {
        if self.state.position == 0 {
            self.state.pass += 1;
        }
        let page = self.state.position;
        self.ram
            .write_obj(
                stamp(page, self.state.pass),
                GuestAddress(self.at + page * PAGE_SIZE),
            )
            .map_err(|e| e.to_string())?;
        self.state.position = (page + 1) % self.pages;
        self.state.stamped += 1;
        Ok(())
    }
}

impl Vcpu for Dirtier {
    fn step(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let elapsed = self.last.map_or(Duration::ZERO, |l| now - l).min(MAX_BURST);
        self.last = Some(now);
        if self.pages == 0 || self.rate == 0.0 {
            std::thread::sleep(Duration::from_millis(5));
            return Ok(());
        }
        self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64())
            .min(self.rate * MAX_BURST.as_secs_f64())
            .max(0.0);
        let n = (self.tokens as u64).min(MAX_BATCH);
        for _ in 0..n {
            self.stamp_next()?;
        }
        self.tokens -= n as f64;
        if n < MAX_BATCH {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VmMemory;

    fn dirtier(pages: u64) -> (VmMemory, Dirtier) {
        let memory = VmMemory::new(pages * PAGE_SIZE).unwrap();
        let dirtier = Dirtier::new(
            memory.ram().clone(),
            0,
            pages * PAGE_SIZE,
            1,
            DirtierState::default(),
        );
        (memory, dirtier)
    }

    /// The state says what every page holds at every position, the pass boundary included
    /// (position back at 0 after a whole pass: every page holds the pass just completed).
    #[test]
    fn verifies_at_every_position_including_the_pass_boundary() {
        let (_memory, mut dirtier) = dirtier(8);
        dirtier.verify().unwrap();
        for step in 0..8 * 3 {
            dirtier.stamp_next().unwrap();
            dirtier
                .verify()
                .unwrap_or_else(|e| panic!("after {} stamps: {e}", step + 1));
        }
        assert_eq!(dirtier.state().position, 0);
        assert_eq!(dirtier.state().pass, 3);
    }

    /// A page that missed its latest stamp (as a page written and not re-sent would) is found.
    #[test]
    fn a_stale_page_is_found() {
        let (memory, mut dirtier) = dirtier(8);
        for _ in 0..8 + 3 {
            dirtier.stamp_next().unwrap();
        }
        memory
            .ram()
            .write_obj(stamp(1, 1), GuestAddress(PAGE_SIZE))
            .unwrap();
        let error = dirtier.verify().unwrap_err();
        assert!(error.starts_with("1 pages wrong: page 1"), "{error}");
    }
}
