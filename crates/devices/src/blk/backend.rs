//! The file backend: a small pool of threads doing pread/pwrite/fdatasync/fallocate on the
//! image, fed through a channel and answering through another, plus an eventfd that signals
//! each answer.
//!
//! Overlapping requests never run at once: a request that reads sectors another is changing
//! (or changes sectors another is reading or changing) waits for it ([`RangeLocks`]). A
//! buffered read racing a buffered write of the same range can otherwise return bytes of both
//! inside one sector, which virtio-blk does not allow (spec-decisions §7: a read overlapping
//! an uncompleted write returns, per sector, the old or the new data and nothing else).
//!
//! A request has a [`JobCtl`] shared by the device and the backend: QUEUED until a backend
//! thread starts it, then RUNNING, then DONE; or CANCELLED if the device cancels it while it is
//! still QUEUED. The compare-and-swap between "start" and "cancel" is what lets a
//! record-in-flight stop know for sure that a cancelled request never touches the image.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::image_io::{execute, AlignedBuf, Image, Op};
use super::options::{Faults, RequestInfo};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;

/// Where a request is in its life; shared by the device and the backend.
#[derive(Debug, Default)]
pub(crate) struct JobCtl(AtomicU8);

impl JobCtl {
    /// QUEUED → RUNNING; false if the request was cancelled.
    fn try_start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// QUEUED → CANCELLED; true if the request will now never run.
    pub(crate) fn try_cancel(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// A backend thread is executing the request right now.
    pub(crate) fn is_running(&self) -> bool {
        self.0.load(Ordering::SeqCst) == RUNNING
    }

    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CANCELLED
    }

    fn finish(&self) {
        self.0.store(DONE, Ordering::SeqCst);
    }
}

/// A request on its way to the backend.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) queue: u16,
    pub(crate) id: u16,
    /// The device's epoch at submission; answers from an older epoch are dropped.
    pub(crate) epoch: u64,
    pub(crate) op: Op,
    /// Make the write stable before completing (writethrough).
    pub(crate) sync: bool,
    pub(crate) ctl: Arc<JobCtl>,
}

/// A request's answer.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) queue: u16,
    pub(crate) id: u16,
    pub(crate) epoch: u64,
    pub(crate) ctl: Arc<JobCtl>,
    /// Read data for IN requests.
    pub(crate) result: io::Result<Option<AlignedBuf>>,
}

/// Counters of the backend, readable while the device runs (e.g. from tests).
#[derive(Debug, Default)]
pub struct BackendStats {
    submitted: AtomicU64,
    executed: AtomicU64,
    cancelled: AtomicU64,
    overlap_waits: AtomicU64,
}

impl BackendStats {
    /// Requests handed to the backend threads.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst)
    }

    /// Requests a backend thread executed against the image (successfully or not).
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::SeqCst)
    }

    /// Requests cancelled before they started (record-in-flight stop, reset): they never
    /// touched the image.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Requests that waited for an overlapping request to finish before they ran (a read of
    /// sectors being written, a write of sectors being read or written).
    pub fn overlap_waits(&self) -> u64 {
        self.overlap_waits.load(Ordering::SeqCst)
    }

    pub(crate) fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sector ranges requests are reading or changing right now: readers share a range, a
/// request that changes sectors has them to itself.
#[derive(Default)]
struct RangeLocks {
    /// `(sectors, changes them)` of every request running.
    held: Mutex<Vec<(Range<u64>, bool)>>,
    freed: Condvar,
}

impl RangeLocks {
    /// Waits until no running request conflicts with `span`, then holds it; calls `waiting`
    /// once if it has to wait.
    fn lock(&self, span: &(Range<u64>, bool), waiting: impl FnOnce()) {
        let (range, changes) = span;
        let conflicts = |held: &Vec<(Range<u64>, bool)>| {
            held.iter()
                .any(|(r, c)| (*c || *changes) && r.start < range.end && range.start < r.end)
        };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waiting = Some(waiting);
        while conflicts(&held) {
            if let Some(waiting) = waiting.take() {
                waiting();
            }
            held = self
                .freed
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.push(span.clone());
    }

    fn unlock(&self, span: &(Range<u64>, bool)) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = held.iter().position(|h| h == span) {
            held.swap_remove(at);
        }
        drop(held);
        self.freed.notify_all();
    }
}

struct Shared {
    file: Arc<File>,
    ranges: RangeLocks,
    jobs: Mutex<Receiver<Job>>,
    event: Arc<EventFd>,
    stats: Arc<BackendStats>,
    faults: Faults,
    align: usize,
    shutdown: AtomicBool,
}

/// The backend thread pool.
pub(crate) struct Backend {
    jobs: Option<Sender<Job>>,
    done: Receiver<Completion>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Backend {
    /// Starts `threads` backend threads on `file`. `align` is the bounce buffer alignment.
    pub(crate) fn start(
        file: Arc<File>,
        threads: usize,
        faults: Faults,
        align: usize,
    ) -> io::Result<Self> {
        let (job_tx, job_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            file,
            ranges: RangeLocks::default(),
            jobs: Mutex::new(job_rx),
            event: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            stats: Arc::default(),
            faults,
            align,
            shutdown: AtomicBool::new(false),
        });
        let mut backend = Self {
            jobs: Some(job_tx),
            done: done_rx,
            shared,
            threads: Vec::with_capacity(threads),
        };
        for n in 0..threads {
            let shared = backend.shared.clone();
            let done: Sender<Completion> = done_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("virtio-blk-io{n}"))
                .spawn(move || run(&shared, &done))?;
            backend.threads.push(thread);
        }
        Ok(backend)
    }

    /// The eventfd written after each completion.
    pub(crate) fn event(&self) -> &Arc<EventFd> {
        &self.shared.event
    }

    pub(crate) fn stats(&self) -> &Arc<BackendStats> {
        &self.shared.stats
    }

    /// Hands `job` to the threads; false if they are gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            self.shared.stats.submitted.fetch_add(1, Ordering::SeqCst);
        }
        sent
    }

    /// The next answer, if one is waiting.
    pub(crate) fn try_recv(&self) -> Option<Completion> {
        self.done.try_recv().ok()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Requests not started yet are skipped; a running one finishes its system call.
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, done: &Sender<Completion>) {
    loop {
        let job = {
            let Ok(rx) = shared.jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if !wait_hooks(shared, &job) || !job.ctl.try_start() {
            continue;
        }
        let image = Image {
            file: &shared.file,
            fail: shared.faults.fail_sectors.as_ref(),
            align: shared.align,
            split: shared.faults.write_split.as_ref(),
            shutdown: &shared.shutdown,
        };
        let span = job.op.span();
        if let Some(span) = &span {
            shared.ranges.lock(span, || {
                shared.stats.overlap_waits.fetch_add(1, Ordering::SeqCst);
            });
        }
        let result = execute(image, &job.op, job.sync);
        if let Some(span) = &span {
            shared.ranges.unlock(span);
        }
        job.ctl.finish();
        shared.stats.executed.fetch_add(1, Ordering::SeqCst);
        let completion = Completion {
            queue: job.queue,
            id: job.id,
            epoch: job.epoch,
            ctl: job.ctl,
            result,
        };
        if done.send(completion).is_err() {
            return;
        }
        let _ = shared.event.write(1);
    }
}

/// Waits while the gate is closed or the injected delay runs; false if the request was
/// cancelled (or the backend shut down) meanwhile.
fn wait_hooks(shared: &Shared, job: &Job) -> bool {
    let info = RequestInfo {
        queue: job.queue,
        id: job.id,
        kind: job.op.kind(),
        sector: job.op.first_sector(),
    };
    let until = shared
        .faults
        .delay
        .as_ref()
        .map(|delay| Instant::now() + delay(&info));
    loop {
        if job.ctl.is_cancelled() || shared.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let held = shared.faults.gate.as_ref().is_some_and(|g| g.is_closed());
        let now = Instant::now();
        let delayed = until.is_some_and(|t| now < t);
        if !held && !delayed {
            return true;
        }
        let step = until
            .filter(|_| !held)
            .map_or(Duration::from_millis(1), |t| {
                t.saturating_duration_since(now)
                    .min(Duration::from_millis(1))
            });
        std::thread::sleep(step);
    }
}
