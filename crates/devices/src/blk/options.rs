//! How a [`Blk`](super::Blk) is built: the image, its queues, and fault injection.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Options of a virtio-blk device.
#[derive(Clone, Debug)]
pub struct BlkOptions {
    /// The image (a file or a block device). Its length, rounded down to whole sectors, is the
    /// capacity. Several devices may open the same image (no lock is taken).
    pub path: PathBuf,
    /// Open the image read-only and offer VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// Number of request queues (VIRTIO_BLK_F_MQ is offered when more than one), 1..=64.
    pub num_queues: u16,
    /// Maximum size of each queue, 2..=32768.
    pub queue_size: u16,
    /// Open the image with O_DIRECT (bounce buffers are then 4096-byte aligned). The image's
    /// file system must accept 512-byte aligned direct I/O.
    pub direct: bool,
    /// Initial `writeback` (the value after every reset): true = writeback cache, completed
    /// writes are stable only after a FLUSH; false = writethrough, each write is made stable
    /// (fdatasync) before it completes.
    pub writeback: bool,
    /// Backend worker threads, 1..=16.
    pub backend_threads: usize,
    /// The GET_ID string (first 20 bytes used); default: the image's file name.
    pub serial: Option<String>,
    /// Injected errors and latency.
    pub faults: Faults,
}

impl BlkOptions {
    /// One queue of 128 entries, read-write, writeback, buffered I/O, two backend threads.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            num_queues: 1,
            queue_size: 128,
            direct: false,
            writeback: true,
            backend_threads: 2,
            serial: None,
            faults: Faults::default(),
        }
    }
}

/// What a backend request is, for fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// VIRTIO_BLK_T_IN.
    Read,
    /// VIRTIO_BLK_T_OUT.
    Write,
    /// VIRTIO_BLK_T_FLUSH.
    Flush,
    /// VIRTIO_BLK_T_DISCARD.
    Discard,
    /// VIRTIO_BLK_T_WRITE_ZEROES.
    WriteZeroes,
}

/// A backend request as fault-injection hooks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// Queue the request came from.
    pub queue: u16,
    /// Its buffer id in that queue.
    pub id: u16,
    /// Its type.
    pub kind: RequestKind,
    /// First sector (the first segment's for discard and write zeroes; 0 for flush).
    pub sector: u64,
}

/// Extra latency per request, decided on a backend thread before the request runs.
pub type DelayFn = Arc<dyn Fn(&RequestInfo) -> Duration + Send + Sync>;

/// Fault injection and test hooks of the file backend. Everything here acts on the backend
/// threads, so requests still complete asynchronously through the normal path.
///
/// Waits (delay, closed gate) happen before a request starts: a request that waits has not
/// touched the image and can still be cancelled by a record-in-flight stop or a reset.
#[derive(Clone, Default)]
pub struct Faults {
    /// Requests touching any of these sectors fail with EIO (reported to the driver as
    /// VIRTIO_BLK_S_IOERR; the device keeps working).
    pub fail_sectors: Option<Range<u64>>,
    /// Extra latency per request (out-of-order completion tests).
    pub delay: Option<DelayFn>,
    /// Requests wait while this gate is closed.
    pub gate: Option<Gate>,
    /// Writes are carried out in two system calls with a pause between (see [`WriteSplit`]).
    pub write_split: Option<WriteSplit>,
}

/// A write slowed down in its middle: the first `at` bytes are written, then the backend
/// thread sleeps `pause` and waits while `gate` (if any) is closed, then writes the rest. This
/// is what a buffered file write looks like to a concurrent read of the same range, slowed
/// down: the kernel copies the data into the page cache while readers copy out of it, so a
/// read can see any prefix of the write (spec-decisions §7, virtio-blk overlapping requests).
#[derive(Clone, Debug, Default)]
pub struct WriteSplit {
    /// Bytes written by the first system call (any byte offset, also inside a sector).
    pub at: usize,
    /// Sleep between the two parts.
    pub pause: Duration,
    /// Then wait while this gate is closed.
    pub gate: Option<Gate>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("fail_sectors", &self.fail_sectors)
            .field("delay", &self.delay.as_ref().map(|_| "Fn"))
            .field("gate", &self.gate)
            .field("write_split", &self.write_split)
            .finish()
    }
}

/// A gate backend requests wait at while it is closed. Clones share one gate.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// A gate that starts open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds every request that has not started yet.
    pub fn close(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Lets held requests run.
    pub fn open(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether requests are held.
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
