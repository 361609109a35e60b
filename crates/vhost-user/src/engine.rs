//! The data path: our blk device model and our queues on the frontend's guest memory, and the
//! worker thread that waits for kicks and backend completions.
//!
//! Everything lives in one [`Engine`] behind a mutex shared by the message handler (the
//! connection thread) and the worker: a ring stop (GET_VRING_BASE) and a kick can therefore
//! never interleave, which is what lets the stop promise that nothing touches the ring after it
//! returned.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::{VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_lm_device::context::ValidatedState;
use virtio_lm_device::{DeviceError, Handover, QueueAccess, StoppableThread, VirtioDevice};
use virtio_lm_devices::blk::Blk;
use virtio_lm_queue::{DeviceQueue, QueueConfig, RingFeatures, RingKind, Virtqueue};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::inflight::{InflightArea, QueueRegion};
use crate::log::DirtyLog;
use crate::memory::{BackendMemory, MemoryTable};
use crate::vring::{decode_base, encode_base, Vring};

/// How long a ring stop waits for the requests in flight before it fails. Only a hung image
/// reaches it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Ring features of the vhost-user feature word (virtio spec 6).
pub mod ring_bits {
    use super::*;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
    /// VIRTIO_F_RING_PACKED.
    pub const RING_PACKED: u64 = 1 << VIRTIO_F_RING_PACKED;
    /// VIRTIO_RING_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
    /// VIRTIO_RING_F_INDIRECT_DESC.
    pub const INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
}

/// Why a ring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The index names no ring of this device.
    #[error("no vring {0}")]
    NoRing(u32),
    /// The request needs state the frontend has not set (memory table, ring addresses…).
    #[error("{0}")]
    NotReady(&'static str),
    /// The value is not valid for the ring.
    #[error("{0}")]
    Invalid(String),
    /// Requests in flight did not finish within [`DRAIN_TIMEOUT`].
    #[error("vring {0}: requests in flight did not complete")]
    DrainTimeout(u32),
    /// The device model failed.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
}

/// The device model, its rings and guest memory.
pub struct Engine {
    pub(crate) blk: Blk,
    completion: Arc<EventFd>,
    pub(crate) vrings: Vec<Vring>,
    pub(crate) memory: Option<MemoryTable>,
    pub(crate) log: Arc<DirtyLog>,
    /// Features the frontend acked (SET_FEATURES).
    pub(crate) features: u64,
    /// The in-flight area (GET_INFLIGHT_FD / SET_INFLIGHT_FD), once the frontend set one.
    pub(crate) inflight: Option<Arc<InflightArea>>,
    /// Device state loaded through DEVICE_STATE, applied when the device model is next
    /// activated (the start of the first ring resets it).
    pub(crate) pending_state: Option<ValidatedState>,
    /// Wakes the worker after a ring set-up change.
    wake: Arc<EventFd>,
    exit: bool,
    /// The first error that broke a ring, for diagnostics.
    pub(crate) last_error: Option<String>,
}

impl Engine {
    /// An engine around `blk` with `log` as the dirty log of every memory table.
    pub fn new(blk: Blk, log: Arc<DirtyLog>) -> std::io::Result<Self> {
        let queues = VirtioDevice::<BackendMemory>::queue_max_sizes(&blk).len();
        Ok(Self {
            completion: blk.completion_fd(),
            blk,
            vrings: (0..queues).map(|_| Vring::default()).collect(),
            memory: None,
            log,
            features: 0,
            inflight: None,
            pending_state: None,
            wake: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            exit: false,
            last_error: None,
        })
    }

    /// The ring `index`, or an error naming it.
    pub(crate) fn vring(&mut self, index: u32) -> Result<&mut Vring, EngineError> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(EngineError::NoRing(index))
    }

    /// The ring format the acked features select.
    pub(crate) fn ring_kind(&self) -> RingKind {
        if self.features & ring_bits::RING_PACKED != 0 {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    /// Wakes the worker so it re-reads the ring set-up.
    pub(crate) fn wake(&self) {
        let _ = self.wake.write(1);
    }

    /// Starts ring `index` if everything it needs is there and it is not running: memory,
    /// addresses, size, kick. The base is checked against the ring here. Starting the first
    /// ring of a session resets the device model and activates it with the acked features (the
    /// frontend renegotiates between sessions, e.g. firmware then Linux).
    pub(crate) fn try_start(&mut self, index: u32) -> Result<(), EngineError> {
        let kind = self.ring_kind();
        let features = RingFeatures {
            event_idx: self.features & ring_bits::EVENT_IDX != 0,
            indirect_desc: self.features & ring_bits::INDIRECT_DESC != 0,
        };
        let Some(mem) = self.memory.as_ref().map(|m| m.mem.clone()) else {
            return Ok(());
        };
        let first = self.vrings.iter().all(|v| v.queue.is_none());
        let vring = self.vring(index)?;
        let (Some(addresses), Some(_)) = (vring.addresses, vring.kick.as_ref()) else {
            return Ok(());
        };
        if vring.queue.is_some() || vring.size == 0 {
            return Ok(());
        }
        let config = QueueConfig {
            kind,
            size: vring.size,
            desc_table: addresses.desc,
            driver_area: addresses.driver,
            device_area: addresses.device,
            features,
        };
        let state = decode_base(kind, vring.base, vring.size)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        // With an in-flight area the region, once written, decides where the ring stands
        // (spec-decisions §24): after a backend crash the frontend's base is stale.
        let (region, state) = match self.inflight.as_ref() {
            Some(area) => {
                let (region, state) = QueueRegion::start(area, index as u16, &config, state, &*mem)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                (Some(region), state)
            }
            None => (None, state),
        };
        let queue = Virtqueue::from_state(config, &state, &*mem)
            .map_err(|e| EngineError::Invalid(format!("vring {index}: {e}")))?;
        if first {
            let blk: &mut dyn VirtioDevice<BackendMemory> = &mut self.blk;
            blk.reset();
            blk.activate(self.features)?;
            if let Some(state) = self.pending_state.take() {
                blk.restore_state(state);
            }
        }
        let vring = self.vring(index)?;
        vring.queue = Some(queue);
        vring.region = region;
        vring.broken = false;
        // The driver may have made buffers available before the ring started (a restored
        // ring after migration): look once without waiting for a kick.
        vring.kicked = true;
        self.resubmit(index as usize, &mem)?;
        self.wake();
        Ok(())
    }

    /// Hands the chains a started ring has in flight (recovered from its in-flight region) to
    /// the device, oldest first, and publishes what completes at once.
    fn resubmit(&mut self, index: usize, mem: &BackendMemory) -> Result<(), EngineError> {
        let vring = &mut self.vrings[index];
        let Some(queue) = vring.queue.as_mut() else {
            return Ok(());
        };
        if queue.inflight_len() == 0 {
            return Ok(());
        }
        {
            let mut access = observed(queue, vring.region.as_mut(), mem, index);
            VirtioDevice::<BackendMemory>::adopt_inflight(
                &mut self.blk,
                Handover::of_queue(&mut access),
            )?;
        }
        self.publish(index, mem).map_err(EngineError::Invalid)
    }

    /// Stops ring `index` (GET_VRING_BASE): takes no new chain from it, completes every request
    /// in flight on it (used + notification), and returns its base. A ring that never started
    /// returns the base it was given.
    pub(crate) fn stop(&mut self, index: u32) -> Result<u32, EngineError> {
        let kind = self.ring_kind();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let vring = self.vring(index)?;
            match vring.queue.as_ref() {
                None => return Ok(vring.base),
                Some(q) if q.inflight_len() == 0 => break,
                Some(_) => {}
            }
            if Instant::now() > deadline {
                return Err(EngineError::DrainTimeout(index));
            }
            wait_readable(&[self.completion.as_raw_fd()], 10);
            let _ = self.completion.read();
            self.poll_completions();
        }
        let vring = self.vring(index)?;
        let queue = vring.queue.take().ok_or(EngineError::NoRing(index))?;
        vring.region = None;
        vring.kicked = false;
        vring.kick = None;
        let state = queue
            .state()
            .map_err(|e| EngineError::Invalid(format!("vring {index}: {e}")))?;
        let base = encode_base(kind, &state);
        vring.base = base;
        self.wake();
        Ok(base)
    }

    /// Stops every ring (reset, end of the connection).
    pub(crate) fn stop_all(&mut self) {
        for index in 0..self.vrings.len() as u32 {
            if self.stop(index).is_err() {
                // A ring that cannot drain is dropped: its requests' answers belong to a
                // session that is over.
                self.vrings[index as usize].queue = None;
                self.vrings[index as usize].region = None;
            }
        }
    }

    /// Marks ring `index` broken after `error` and tells the frontend through its error fd.
    fn break_ring(&mut self, index: usize, error: String) {
        if let Some(vring) = self.vrings.get_mut(index) {
            vring.broken = true;
            if let Some(err) = vring.err.as_mut() {
                let _ = err.write_all(&1u64.to_ne_bytes());
            }
        }
        self.last_error.get_or_insert(error);
    }

    /// Completes what the backend finished, on every running ring; publishes and notifies.
    pub(crate) fn poll_completions(&mut self) {
        let Some(mem) = self.memory.as_ref().map(|m| m.mem.clone()) else {
            return;
        };
        let mut accesses = Vec::new();
        for (index, vring) in self.vrings.iter_mut().enumerate() {
            if let Some(queue) = vring.queue.as_mut() {
                accesses.push(observed(queue, vring.region.as_mut(), &mem, index));
            }
        }
        let result = VirtioDevice::<BackendMemory>::poll(&mut self.blk, &mut accesses);
        let used: Vec<usize> = accesses
            .iter()
            .filter(|a| a.used_any())
            .map(|a| usize::from(a.index()))
            .collect();
        drop(accesses);
        if let Err(e) = result {
            self.last_error.get_or_insert(e.to_string());
        }
        for index in used {
            if let Err(e) = self.publish(index, &mem) {
                self.break_ring(index, e);
            }
        }
    }

    /// Publishes ring `index`'s used entries and signals its call fd if the driver wants it.
    fn publish(&mut self, index: usize, mem: &BackendMemory) -> Result<(), String> {
        let vring = &mut self.vrings[index];
        let Some(queue) = vring.queue.as_mut() else {
            return Ok(());
        };
        match vring.region.as_mut() {
            Some(region) => {
                if let Some(e) = region.error() {
                    return Err(e.to_string());
                }
                region.publish(queue, mem)?;
            }
            None => queue.publish_used(mem).map_err(|e| e.to_string())?,
        }
        if queue.needs_notification(mem).map_err(|e| e.to_string())? {
            if let Some(call) = vring.call.as_mut() {
                let _ = call.write_all(&1u64.to_ne_bytes());
            }
        }
        Ok(())
    }

    /// Processes ring `index` until the driver has nothing more: take and submit, publish,
    /// notify, re-arm driver notifications, and go round again if buffers arrived meanwhile.
    fn run_ring(&mut self, index: usize) -> Result<(), String> {
        let Some(mem) = self.memory.as_ref().map(|m| m.mem.clone()) else {
            return Ok(());
        };
        loop {
            let vring = &mut self.vrings[index];
            let Some(queue) = vring.queue.as_mut() else {
                return Ok(());
            };
            let took = {
                let mut access = observed(queue, vring.region.as_mut(), &mem, index);
                VirtioDevice::<BackendMemory>::process_queue(
                    &mut self.blk,
                    index as u16,
                    &mut access,
                )
                .map_err(|e| e.to_string())?;
                access.took_any()
            };
            self.publish(index, &mem)?;
            let Some(queue) = self.vrings[index].queue.as_mut() else {
                return Ok(());
            };
            if !queue
                .enable_notification(&*mem)
                .map_err(|e| e.to_string())?
                || !took
            {
                return Ok(());
            }
        }
    }

    /// One round of work: completions first, then every kicked live ring.
    fn service(&mut self) {
        self.poll_completions();
        for index in 0..self.vrings.len() {
            let vring = &mut self.vrings[index];
            if !vring.is_live() || !std::mem::take(&mut vring.kicked) {
                continue;
            }
            if let Err(e) = self.run_ring(index) {
                self.break_ring(index, e);
            }
        }
    }
}

/// An access to ring `index` that records takes and completions in its in-flight region, if
/// it has one.
fn observed<'a>(
    queue: &'a mut Virtqueue,
    region: Option<&'a mut QueueRegion>,
    mem: &'a BackendMemory,
    index: usize,
) -> QueueAccess<'a, BackendMemory> {
    let access = QueueAccess::new(queue, mem, index as u16);
    match region {
        Some(region) => access.observed(region),
        None => access,
    }
}

/// The worker thread of one connection.
pub struct Worker {
    /// Stopped (the engine's `exit` set and the thread woken) and joined on drop.
    _thread: StoppableThread,
}

impl Worker {
    /// Starts the worker of `engine`.
    pub fn spawn(engine: Arc<Mutex<Engine>>) -> std::io::Result<Self> {
        let shared = engine.clone();
        let signal = move || {
            let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
            engine.exit = true;
            engine.wake();
        };
        let thread = StoppableThread::spawn("vhost-user-blk", signal, move || run(&shared))?;
        Ok(Self { _thread: thread })
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passed.
fn wait_readable(fds: &[i32], timeout_ms: i32) -> Vec<bool> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structures that outlives the
    // call; poll(2) only writes their `revents`.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    polls
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
        .collect()
}

/// Reads an eventfd's counter (the fd is the frontend's: it may be blocking, so only after
/// poll said it is readable).
fn consume(file: &File) {
    let mut buf = [0u8; 8];
    let _ = (&*file).read(&mut buf);
}

fn run(engine: &Mutex<Engine>) {
    loop {
        let (wake, completion, kicks) = {
            let engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
            if engine.exit {
                return;
            }
            let kicks: Vec<(usize, Arc<File>)> = engine
                .vrings
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_live())
                .filter_map(|(i, v)| Some((i, v.kick.clone()?)))
                .collect();
            (engine.wake.clone(), engine.completion.clone(), kicks)
        };
        let mut fds = vec![wake.as_raw_fd(), completion.as_raw_fd()];
        fds.extend(kicks.iter().map(|(_, k)| k.as_raw_fd()));
        // The timeout only bounds how stale the fd set can get; every change also wakes us.
        let ready = wait_readable(&fds, 1000);
        if ready[0] {
            let _ = wake.read();
        }
        if ready[1] {
            let _ = completion.read();
        }
        let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
        for ((index, kick), _) in kicks.iter().zip(&ready[2..]).filter(|(_, r)| **r) {
            consume(kick);
            if let Some(vring) = engine.vrings.get_mut(*index) {
                vring.kicked = true;
            }
        }
        engine.service();
    }
}
