//! Pieces of a rig for a device type's own tests, on any guest memory (the device types test
//! on dirty-tracking memory, [`CoreDriver`](super::CoreDriver) on plain memory): a core built
//! around a device with a quiesce mode ([`core_with_mode`]), [`TestCore`] shorthands on a
//! running core, a memory checksum ([`checksum_of`]) and the dirty bitmap ([`DirtyMem`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_queue::QueueState;
use virtio_lm_spec::DeviceStatus;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, MmapRegion,
};

use super::{RUNNING, SETUP};
use crate::{CoreOptions, DeviceCore, InterruptCounter, QuiesceMode, VirtioDevice};

/// Guest memory with dirty tracking, as the vm layer uses.
pub type DirtyMem = GuestMemoryMmap<AtomicBitmap>;

/// How long a rig waits for a device before it fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A core around `device` on `mem`, quiescing by `mode`, and the counter of its notifications.
pub fn core_with_mode<M: GuestMemory + Send + Sync + 'static>(
    device: Box<dyn VirtioDevice<M>>,
    mem: Arc<M>,
    mode: QuiesceMode,
) -> (DeviceCore<M>, Arc<InterruptCounter>) {
    let irq = Arc::new(InterruptCounter::default());
    let options = CoreOptions {
        quiesce_mode: mode,
        ..CoreOptions::default()
    };
    let core = DeviceCore::new(device, mem, irq.clone(), options).expect("core");
    (core, irq)
}

/// FNV-1a checksum of `len` bytes of guest memory at `start`, to prove a device wrote nothing
/// there.
pub fn checksum_of<M: GuestMemory>(mem: &M, start: u64, len: usize) -> u64 {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(start)).unwrap();
    let fnv = |h: u64, b: &u8| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    buf.iter().fold(0xcbf29ce484222325u64, fnv)
}

/// The status a driver writes to quiesce a running device, by SUSPEND if `suspend` or else by
/// DEVICE_STOP, and the status the device presents once quiet.
pub fn quiesce_request(suspend: bool) -> (DeviceStatus, DeviceStatus) {
    if suspend {
        (
            RUNNING | DeviceStatus::SUSPEND,
            SETUP | DeviceStatus::SUSPEND,
        )
    } else {
        let stopped = RUNNING | DeviceStatus::DEVICE_STOPPED;
        (stopped, stopped)
    }
}

/// Whether the dirty bitmap of `mem` has the page of `addr` set.
pub fn is_dirty(mem: &DirtyMem, addr: u64) -> bool {
    let region: &MmapRegion<AtomicBitmap> = mem.find_region(GuestAddress(addr)).unwrap();
    region.bitmap().is_addr_set(addr as usize)
}

/// Clears the dirty bitmap of `mem`.
pub fn clear_dirty(mem: &DirtyMem) {
    mem.iter().for_each(|region| region.bitmap().reset());
}

/// Shorthands on a [`DeviceCore`] a test drives: a failure is the test's failure.
pub trait TestCore {
    /// Writes `value` to the status and re-reads it until it reads `want`; fails after
    /// [`TIMEOUT`].
    fn set_and_wait(&mut self, value: DeviceStatus, want: DeviceStatus);
    /// The state of every queue (readable while stopped or suspended).
    fn queue_states(&self) -> Vec<QueueState>;
    /// Installs `states` (queue `i` gets `states[i]`) and sets DRIVER_OK: the last steps of a
    /// migration destination.
    fn resume_with(&mut self, states: Vec<QueueState>);
    /// `len` bytes of the device configuration space at `offset`.
    fn config_bytes(&self, offset: usize, len: usize) -> Vec<u8>;
    /// Whether DEVICE_NEEDS_RESET is set.
    fn broken(&mut self) -> bool;
}

impl<M: GuestMemory + Send + Sync + 'static> TestCore for DeviceCore<M> {
    fn set_and_wait(&mut self, value: DeviceStatus, want: DeviceStatus) {
        self.write_status(value);
        let deadline = Instant::now() + TIMEOUT;
        while self.status() != want {
            let status = self.status();
            assert!(
                Instant::now() < deadline,
                "status {status:#x} never became {want:#x}"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn queue_states(&self) -> Vec<QueueState> {
        (0..self.num_queues())
            .map(|i| self.queue_state(i).expect("queue state readable"))
            .collect()
    }

    fn resume_with(&mut self, states: Vec<QueueState>) {
        for (i, state) in states.into_iter().enumerate() {
            assert!(
                self.set_queue_state(i as u16, state),
                "queue {i} state refused"
            );
        }
        self.write_status(RUNNING);
        assert_eq!(self.status(), RUNNING, "destination running");
    }

    fn config_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.read_config(offset, &mut bytes);
        bytes
    }

    fn broken(&mut self) -> bool {
        self.status().contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }
}
