//! The guest: threads standing in for vCPUs. Each runs one [`Vcpu`] — the verifying blk
//! workload through the blk driver, the verifying net workload through the net driver, or the
//! memory-dirtying loop — one step at a time, calling the machine's
//! [`PauseControl::safe_point`] between steps. A step never ends with a request half-made, so
//! at a safe point everything the guest needs to continue is in guest memory or in the vCPU's
//! state, which the machine can read while the vCPUs are parked.

pub mod blk;
pub mod dirtier;
pub mod net;
pub mod reinit;
mod stall;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_lm_pci::VirtioPciFunction;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestRam;
use crate::pause::{Next, PauseControl};

pub use stall::StallClock;
pub use state::VcpuState;

/// The interrupt eventfds of MSI-X vectors `1..=count` of `function` (vector 0 is the
/// configuration vector; queue *i* uses vector *i* + 1).
pub fn queue_vectors(
    function: &VirtioPciFunction<GuestRam>,
    count: u16,
) -> Result<Vec<Arc<EventFd>>, String> {
    (1..=count)
        .map(|v| {
            function
                .interrupts()
                .vector_eventfd(v)
                .cloned()
                .ok_or_else(|| format!("MSI-X vector {v} missing"))
        })
        .collect()
}

/// What a guest thread runs.
pub trait Vcpu: Send + 'static {
    /// One step: a bounded amount of work ending at a safe point.
    fn step(&mut self) -> Result<(), String>;
}

/// Locks a vCPU's state (a vCPU that panicked leaves its state as it was at that step).
pub fn lock<V>(vcpu: &Mutex<V>) -> MutexGuard<'_, V> {
    vcpu.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unregisters the thread however it ends (a panic included), so a pause never waits for it.
struct Registered(Arc<PauseControl>);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.exit();
    }
}

/// Starts a guest thread running `vcpu` until told to quit or until a step fails (the error
/// goes to `errors`).
pub fn spawn<V: Vcpu>(
    name: &str,
    vcpu: Arc<Mutex<V>>,
    control: Arc<PauseControl>,
    errors: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<JoinHandle<()>> {
    // Registered before the thread exists, so a pause right after this waits for it.
    control.enter();
    let registered = Registered(control.clone());
    let label = name.to_string();
    std::thread::Builder::new()
        .name(format!("vcpu-{name}"))
        .spawn(move || {
            let _registered = registered;
            while control.safe_point() == Next::Run {
                if let Err(e) = lock(&vcpu).step() {
                    lock(&errors).push(format!("{label}: {e}"));
                    break;
                }
            }
        })
}
