//! MSI-X vectors and the legacy interrupt line as eventfds: the [`Interrupts`] the device core
//! signals through.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use virtio_lm_device::Counter;

use virtio_lm_device::Interrupts;
use virtio_lm_spec::pci::{VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_ISR_CONFIG, VIRTIO_PCI_ISR_QUEUE};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// One interrupt line: an eventfd the hypervisor (or a test) waits on, and a delivery counter.
#[derive(Debug)]
struct Line {
    fd: Arc<EventFd>,
    count: AtomicU64,
}

impl Line {
    fn new() -> io::Result<Self> {
        Ok(Self {
            fd: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            count: AtomicU64::new(0),
        })
    }

    fn fire(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        // A full eventfd counter (2^64 - 2 pending) cannot happen with a reader; a failed write
        // still leaves the delivery counted.
        let _ = self.fd.write(1);
    }
}

/// The function's interrupt routing: MSI-X vectors as eventfds, chosen per queue by
/// `queue_msix_vector` and for configuration changes by `config_msix_vector`; a queue or
/// configuration routed to [`VIRTIO_MSI_NO_VECTOR`] sets its ISR bit and raises the INTx line.
///
/// Routing is held in atomics so the core can signal while the transport is in the middle of a
/// register access (the core calls in with its own lock held).
#[derive(Debug)]
pub struct MsixInterrupts {
    vectors: Vec<Line>,
    intx: Line,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    used: Counter,
    config: Counter,
}

impl MsixInterrupts {
    /// `num_vectors` MSI-X vectors and routing for `num_queues` queues, everything routed to
    /// [`VIRTIO_MSI_NO_VECTOR`] (the state after reset).
    pub fn new(num_vectors: u16, num_queues: u16) -> io::Result<Self> {
        Ok(Self {
            vectors: (0..num_vectors)
                .map(|_| Line::new())
                .collect::<io::Result<_>>()?,
            intx: Line::new()?,
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queue_vectors: (0..num_queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
            used: Counter::default(),
            config: Counter::default(),
        })
    }

    /// Number of MSI-X vectors.
    pub fn num_vectors(&self) -> u16 {
        self.vectors.len() as u16
    }

    /// Number of queues routed.
    pub fn num_queues(&self) -> u16 {
        self.queue_vectors.len() as u16
    }

    /// The eventfd of MSI-X vector `vector`.
    pub fn vector_eventfd(&self, vector: u16) -> Option<&Arc<EventFd>> {
        self.vectors.get(usize::from(vector)).map(|l| &l.fd)
    }

    /// Interrupts delivered on MSI-X vector `vector` so far.
    pub fn vector_count(&self, vector: u16) -> u64 {
        self.vectors
            .get(usize::from(vector))
            .map_or(0, |l| l.count.load(Ordering::SeqCst))
    }

    /// The eventfd of the legacy (INTx) line.
    pub fn intx_eventfd(&self) -> &Arc<EventFd> {
        &self.intx.fd
    }

    /// Interrupts delivered on the INTx line so far.
    pub fn intx_count(&self) -> u64 {
        self.intx.count.load(Ordering::SeqCst)
    }

    /// Every interrupt delivered so far, on any vector or INTx.
    pub fn total(&self) -> u64 {
        self.intx_count()
            + self
                .vectors
                .iter()
                .map(|l| l.count.load(Ordering::SeqCst))
                .sum::<u64>()
    }

    /// Used-buffer notifications the core sent so far.
    pub fn used_notifications(&self) -> u64 {
        self.used.get()
    }

    /// Configuration change notifications the core sent so far.
    pub fn config_notifications(&self) -> u64 {
        self.config.get()
    }

    /// The ISR status without clearing it.
    pub fn isr(&self) -> u8 {
        self.isr.load(Ordering::SeqCst)
    }

    /// The ISR status, cleared by the read (what a driver read of the ISR region does).
    pub fn read_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::SeqCst)
    }

    /// Vectors with a message raised and not yet taken (their eventfd readable), in order, and
    /// whether the INTx line is. Taking the count to look at it, the count is put back: the
    /// reader (a paused guest) finds what it would have found.
    pub fn pending(&self) -> (Vec<u16>, bool) {
        let peek = |line: &Line| match line.fd.read() {
            Ok(n) if n > 0 => {
                // Adding back what was just taken cannot overflow the counter.
                let _ = line.fd.write(n);
                true
            }
            _ => false,
        };
        let vectors = (0u16..)
            .zip(&self.vectors)
            .filter(|(_, l)| peek(l))
            .map(|(v, _)| v)
            .collect();
        (vectors, peek(&self.intx))
    }

    /// Raises `vector`'s message again without counting a delivery (a message pending on
    /// another function, moved here); `false` for a vector the function does not have.
    pub fn raise_pending(&self, vector: u16) -> bool {
        match self.vectors.get(usize::from(vector)) {
            Some(line) => line.fd.write(1).is_ok(),
            None => false,
        }
    }

    /// Raises the INTx line again without counting a delivery (see [`Self::raise_pending`]).
    pub fn raise_intx_pending(&self) {
        // A full counter needs 2^64 - 2 unread signals.
        let _ = self.intx.fd.write(1);
    }

    /// Sets the ISR status as the function had it elsewhere (bits 0 and 1 only).
    pub fn set_isr(&self, isr: u8) {
        self.isr.store(
            isr & (VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG),
            Ordering::SeqCst,
        );
    }

    /// The vector configuration changes go to.
    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::SeqCst)
    }

    /// Routes configuration changes to `vector`; a vector the function does not have is refused
    /// and stored as [`VIRTIO_MSI_NO_VECTOR`], which the driver reads back. Returns the stored
    /// value.
    pub fn set_config_vector(&self, vector: u16) -> u16 {
        let stored = self.accept(vector);
        self.config_vector.store(stored, Ordering::SeqCst);
        stored
    }

    /// The vector of queue `index` ([`VIRTIO_MSI_NO_VECTOR`] for a queue not routed).
    pub fn queue_vector(&self, index: u16) -> u16 {
        self.queue_vectors
            .get(usize::from(index))
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::SeqCst))
    }

    /// Routes queue `index` to `vector` (refused as in [`Self::set_config_vector`]). Returns the
    /// stored value, or `None` for a queue not routed.
    pub fn set_queue_vector(&self, index: u16, vector: u16) -> Option<u16> {
        let slot = self.queue_vectors.get(usize::from(index))?;
        let stored = self.accept(vector);
        slot.store(stored, Ordering::SeqCst);
        Some(stored)
    }

    fn accept(&self, vector: u16) -> u16 {
        if usize::from(vector) < self.vectors.len() {
            vector
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    /// Device reset: every route back to [`VIRTIO_MSI_NO_VECTOR`], ISR cleared. Counters keep
    /// counting.
    pub fn reset(&self) {
        self.config_vector
            .store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
        for v in &self.queue_vectors {
            v.store(VIRTIO_MSI_NO_VECTOR, Ordering::SeqCst);
        }
        self.isr.store(0, Ordering::SeqCst);
    }

    fn deliver(&self, vector: u16, isr_bit: u8) {
        match self.vectors.get(usize::from(vector)) {
            Some(line) => line.fire(),
            None => {
                self.isr.fetch_or(isr_bit, Ordering::SeqCst);
                self.intx.fire();
            }
        }
    }
}

impl Interrupts for MsixInterrupts {
    fn signal_used_queue(&self, index: u16) {
        self.used.increment();
        self.deliver(self.queue_vector(index), VIRTIO_PCI_ISR_QUEUE);
    }

    fn signal_config_change(&self) {
        self.config.increment();
        self.deliver(self.config_vector(), VIRTIO_PCI_ISR_CONFIG);
    }
}
