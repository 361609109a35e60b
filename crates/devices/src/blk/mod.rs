//! virtio-blk (device id 2, virtio spec 5.2) over an image file, with asynchronous,
//! out-of-order completion and both ways of quiescing for migration.
//!
//! # Request path
//!
//! [`VirtioDevice::process_queue`](virtio_lm_device::VirtioDevice::process_queue) takes chains, parses and validates each request
//! (`request.rs`), and either completes it at once (GET_ID, and every request that fails
//! validation: IOERR or UNSUPP as virtio spec 5.2.6 says) or copies what it needs from guest
//! memory (header, OUT data, discard segments) and submits it to the backend thread pool
//! (`backend.rs`). Backend threads answer through a channel and signal
//! [`Blk::completion_fd`]. [`VirtioDevice::poll`](virtio_lm_device::VirtioDevice::poll) — which the core calls on every processing
//! round and while a stop or suspend waits — takes the answers, writes IN data and the status
//! into guest memory through vm-memory (so the writes are dirty-logged) and returns the chains
//! used, in whatever order they finished. Guest memory is only ever touched from
//! `process_queue` and `poll`, i.e. under the core's lock and never while the core is quiet.
//!
//! A chain with no device-writable byte cannot even carry a status: it is a malformed chain
//! and `process_queue` returns a [`DeviceError`], so the core sets DEVICE_NEEDS_RESET
//! (spec-decisions §2). Backend I/O errors are per-request (IOERR) and never need a reset.
//!
//! # Waking the worker on completion
//!
//! The core processes when something calls it. [`Blk::completion_fd`] is a non-blocking
//! eventfd written once per finished backend request; give it to
//! [`Worker::spawn_with_wakers`](virtio_lm_device::Worker::spawn_with_wakers), which calls
//! [`DeviceCore::service`](virtio_lm_device::DeviceCore::service) whenever it is signalled —
//! and, while a stop or suspend is pending, the driver's status re-reads complete it
//! (`DeviceCore::status` polls the device).
//!
//! # Quiescing
//!
//! - [`QuiesceMode::Drain`](virtio_lm_device::QuiesceMode::Drain): `Pending` until every submitted request has been returned used.
//! - [`QuiesceMode::RecordInflight`](virtio_lm_device::QuiesceMode::RecordInflight): requests not yet started are cancelled (a
//!   compare-and-swap against the backend thread that would start them, so a cancelled
//!   request never touches the image); requests running right now are waited for and returned
//!   used by `poll`; requests that finished but were not yet returned are dropped. Then the
//!   device forgets everything it had submitted and reports `Done`: the dropped chains stay in
//!   the queue's in-flight list, are saved with the queue state, and nothing of this device
//!   touches guest memory or the image for them again (answers still in the channel belong to
//!   an older epoch and are discarded). Executing a block request a second time before it
//!   was completed is harmless: the driver has not seen its completion, so nothing depends on
//!   it having run once.
//!
//! # Re-executing in-flight requests exactly once
//!
//! Whoever resumes the queue — the same device after DEVICE_STOPPED is cleared or SUSPEND
//! ends, or a fresh device after a queue state restore — is handed those chains by the core,
//! once per start of the queue
//! ([`VirtioDevice::adopt_inflight`](virtio_lm_device::VirtioDevice::adopt_inflight)), and
//! submits each one that is not among the requests it has in process (the per-queue map from
//! buffer id to request; after a quiesce that reported `Done` the map is empty). A chain
//! leaves the in-flight list only when it is returned used, which is also when it leaves the
//! map, so on the resuming side each in-flight chain is submitted exactly once and returned
//! used exactly once, however many times the device is stopped and resumed before it runs.
//! (Across both sides a request may have run twice — if it finished on the source but was
//! dropped before being returned — which block semantics allow, as above; a cancelled request
//! ran only on the resuming side.)

mod backend;
pub mod config;
mod device;
pub mod driver;
mod guest;
mod image_io;
mod options;
mod parts;
mod request;
mod state;
pub mod workload;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::{ChainFault, DeviceError, QueueAccess};
use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

pub use backend::BackendStats;
pub use options::{BlkOptions, DelayFn, Faults, Gate, RequestInfo, RequestKind, WriteSplit};
pub use parts::BlkParts;

use backend::{Backend, Completion, Job, JobCtl};
use config::{features, ConfigValues, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES};
use guest::finish_request;
use image_io::AlignedBuf;
use request::{parse, Limits, NoStatusByte, Parsed};

/// Why a [`Blk`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    /// The image could not be opened or inspected.
    #[error("Cannot open image {path}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An option is out of range.
    #[error("Invalid option: {0}")]
    Options(&'static str),
    /// The backend threads or the completion eventfd could not be created.
    #[error("Cannot start the backend: {0}")]
    Backend(#[source] io::Error),
}

/// Bounce buffer alignment with O_DIRECT.
const DIRECT_ALIGN: usize = 4096;

/// How long a reset waits for backend requests already running (one system call each).
const RESET_WAIT: Duration = Duration::from_secs(5);

/// A request handed to the backend and not yet returned used.
#[derive(Debug)]
struct InProcess {
    ctl: Arc<JobCtl>,
    chain: DescriptorChain,
}

/// Per-queue bookkeeping.
#[derive(Debug, Default)]
struct QueueWork {
    /// Requests in process, by buffer id.
    outstanding: HashMap<u16, InProcess>,
}

/// The virtio-blk device type. See the module documentation for the design.
pub struct Blk {
    values: ConfigValues,
    initial_writeback: u8,
    queue_size: u16,
    id: [u8; VIRTIO_BLK_ID_BYTES],
    align: usize,
    /// Features negotiated at the last activation.
    features: u64,
    backend: Backend,
    /// Answers from an older epoch (before a reset or a record-in-flight stop) are dropped.
    epoch: u64,
    queues: Vec<QueueWork>,
    /// Answers received and not yet returned used.
    ready: Vec<Completion>,
}

impl Blk {
    /// Opens the image and starts the backend threads.
    pub fn open(options: BlkOptions) -> Result<Self, BlkError> {
        if !(1..=64).contains(&options.num_queues) {
            return Err(BlkError::Options("num_queues must be in 1..=64"));
        }
        if !(2..=32768).contains(&options.queue_size) {
            return Err(BlkError::Options("queue_size must be in 2..=32768"));
        }
        if !(1..=16).contains(&options.backend_threads) {
            return Err(BlkError::Options("backend_threads must be in 1..=16"));
        }
        let open_err = |source| BlkError::Open {
            path: options.path.clone(),
            source,
        };
        let mut open = OpenOptions::new();
        open.read(true).write(!options.read_only);
        if options.direct {
            open.custom_flags(libc::O_DIRECT);
        }
        let mut file = open.open(&options.path).map_err(open_err)?;
        // Seeking to the end sizes block devices too (their metadata length is 0).
        let capacity = file.seek(SeekFrom::End(0)).map_err(open_err)? / SECTOR_SIZE;
        let align = if options.direct { DIRECT_ALIGN } else { 1 };
        let backend = Backend::start(
            Arc::new(file),
            options.backend_threads,
            options.faults.clone(),
            align,
        )
        .map_err(BlkError::Backend)?;
        let writeback = u8::from(options.writeback);
        Ok(Self {
            values: ConfigValues {
                capacity,
                seg_max: ConfigValues::seg_max_for(options.queue_size),
                num_queues: options.num_queues,
                writeback,
                read_only: options.read_only,
            },
            initial_writeback: writeback,
            queue_size: options.queue_size,
            id: device_id(&options),
            align,
            features: 0,
            backend,
            epoch: 0,
            queues: (0..options.num_queues)
                .map(|_| QueueWork::default())
                .collect(),
            ready: Vec::new(),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.values.capacity
    }

    /// The eventfd the backend writes after each finished request (non-blocking; the waiter
    /// reads it). Take it before boxing the device into a core, and have the device's worker
    /// call `DeviceCore::process_pending` when it fires (see the module documentation).
    pub fn completion_fd(&self) -> Arc<EventFd> {
        self.backend.event().clone()
    }

    /// The backend's counters (shared: they stay readable after the device moves into a core).
    pub fn stats(&self) -> Arc<BackendStats> {
        self.backend.stats().clone()
    }

    /// Whether writes must be stable before they complete: writethrough mode, or a driver
    /// that did not negotiate FLUSH and so cannot ask for stability (virtio spec 5.2.6).
    fn writethrough(&self) -> bool {
        self.features & features::FLUSH == 0 || self.values.writeback == 0
    }

    /// Takes answers from the backend, dropping those of an older epoch.
    fn receive(&mut self) {
        while let Some(c) = self.backend.try_recv() {
            if c.epoch == self.epoch {
                self.ready.push(c);
            }
        }
    }

    /// Parses `chain` and completes or submits it.
    fn start<M: GuestMemory + ?Sized>(
        &mut self,
        index: u16,
        access: &mut QueueAccess<'_, M>,
        chain: DescriptorChain,
    ) -> Result<(), DeviceError> {
        let limits = Limits {
            capacity: self.values.capacity,
            read_only: self.values.read_only,
            features: self.features,
            max_transfer: self.values.max_transfer(),
            id: &self.id,
            align: self.align,
        };
        match parse(access.mem(), &chain, &limits) {
            Err(NoStatusByte) => Err(DeviceError::MalformedChain {
                id: chain.id(),
                fault: ChainFault::NoWritableByte,
            }),
            Ok(Parsed::Now { status, data }) => finish_request(access, &chain, Some(&data), status),
            Ok(Parsed::Submit(op)) => {
                let ctl = Arc::new(JobCtl::default());
                let job = Job {
                    queue: index,
                    id: chain.id(),
                    epoch: self.epoch,
                    op,
                    sync: self.writethrough(),
                    ctl: ctl.clone(),
                };
                if !self.backend.submit(job) {
                    return Err(DeviceError::Backend(
                        "virtio-blk: backend threads are gone".into(),
                    ));
                }
                if let Some(work) = self.queues.get_mut(usize::from(index)) {
                    work.outstanding
                        .insert(chain.id(), InProcess { ctl, chain });
                }
                Ok(())
            }
        }
    }

    /// Returns an answered request used.
    fn complete<M: GuestMemory + ?Sized>(
        &mut self,
        c: Completion,
        access: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let Some(work) = self.queues.get_mut(usize::from(c.queue)) else {
            return Ok(());
        };
        let Some(req) = work.outstanding.remove(&c.id) else {
            return Ok(());
        };
        if !Arc::ptr_eq(&req.ctl, &c.ctl) {
            work.outstanding.insert(c.id, req);
            return Ok(());
        }
        let (status, data) = match &c.result {
            Ok(data) => (config::status::OK, data.as_ref()),
            Err(_) => (config::status::IOERR, None),
        };
        finish_request(access, &req.chain, data.map(AlignedBuf::as_slice), status)
    }

    /// Cancels every request not started yet; true if some request is running.
    fn cancel_queued(&mut self) -> bool {
        let stats = self.backend.stats();
        let mut running = false;
        for req in self.queues.iter().flat_map(|w| w.outstanding.values()) {
            if req.ctl.try_cancel() {
                stats.count_cancelled();
            } else if req.ctl.is_running() {
                running = true;
            }
        }
        running
    }

    /// Forgets every request in process: their chains stay in the queues' in-flight lists and
    /// the core hands them back when the queue resumes; late answers are dropped by the new
    /// epoch.
    fn forget_outstanding(&mut self) {
        for work in &mut self.queues {
            work.outstanding.clear();
        }
        self.ready.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }
}

/// The GET_ID string: the serial option or the image's file name, NUL-padded to 20 bytes.
fn device_id(options: &BlkOptions) -> [u8; VIRTIO_BLK_ID_BYTES] {
    let name = options.serial.clone().unwrap_or_else(|| {
        options
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
    let n = name.len().min(VIRTIO_BLK_ID_BYTES);
    id[..n].copy_from_slice(&name.as_bytes()[..n]);
    id
}
