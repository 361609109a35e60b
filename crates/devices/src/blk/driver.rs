//! A virtio-blk guest driver over the virtio-pci transport: a [`PciDriver`] for the rings,
//! notifications and status, plus request slots in guest memory and the interrupt eventfds.
//!
//! Guest memory layout from [`BlkDriverConfig::rings_at`]: one ring area of
//! [`BlkDriverConfig::ring_stride`] bytes per queue, then per queue `queue_size` request slots
//! of [`BlkDriverConfig::slot_len`] bytes. A slot holds the 16-byte header at 0, the status
//! byte at [`STATUS_OFFSET`] and the data (or discard segments) from [`DATA_OFFSET`]. Every
//! request is one chain: header (device-readable), data (readable for OUT, DISCARD and
//! WRITE_ZEROES; writable for IN and GET_ID), status (writable) — virtio spec 5.2.6.
//!
//! Nothing the device writes can make the driver panic: an unknown chain id, a short used
//! length or a status that is not OK are reported to the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_pci::{PciDriver, PciError, QueueSetup};
use virtio_lm_queue::{BufferSpec, DriverError};
use virtio_lm_spec::Feature;
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

mod state;

pub use state::{BlkDriverState, PendingRequest, SlotQueueState};

use super::config::{
    features, offset, request_type as t, DISCARD_SEGMENT_LEN, REQUEST_HEADER_LEN,
    VIRTIO_BLK_ID_BYTES, WRITE_ZEROES_FLAG_UNMAP,
};

/// Offset of the status byte in a request slot.
pub const STATUS_OFFSET: u64 = 16;
/// Offset of the data in a request slot.
pub const DATA_OFFSET: u64 = 32;
/// Status value the driver writes before submitting (the device overwrites it).
const POISON: u8 = 0xee;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlkDriverError {
    /// The transport refused (initialisation, stop, a ring error, ...).
    #[error("Transport: {0}")]
    Pci(#[from] PciError),
    /// Guest memory could not be accessed.
    #[error("Guest memory access at {0:#x} failed")]
    Memory(u64),
    /// The request's data does not fit a slot, or is not a whole number of sectors.
    #[error("Bad request: {0}")]
    BadRequest(&'static str),
    /// The device returned a chain id the driver has no request for.
    #[error("Queue {queue}: unknown used id {id}")]
    UnknownId {
        /// Queue index.
        queue: u16,
        /// The id.
        id: u16,
    },
    /// Waiting on an interrupt eventfd failed.
    #[error("Interrupt wait: {0}")]
    Wait(#[source] std::io::Error),
}

/// Where and how the driver lays itself out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlkDriverConfig {
    /// Feature bits to ask for (transport features by the driver's profile, blk features from
    /// [`features`]); the device's offer masks them.
    pub features: u64,
    /// Request queues wanted (more than 1 needs VIRTIO_BLK_F_MQ; capped by `num_queues`).
    pub num_queues: u16,
    /// Entries per queue.
    pub queue_size: u16,
    /// Guest address of the first ring (4 KiB aligned).
    pub rings_at: u64,
    /// Largest data transfer of one request, bytes (a multiple of 512).
    pub max_data: u32,
}

impl BlkDriverConfig {
    /// Bytes reserved for each queue's ring (either format, EVENT_IDX or not).
    pub fn ring_stride(&self) -> u64 {
        (32 * u64::from(self.queue_size) + 64).next_multiple_of(0x1000)
    }

    /// Bytes per request slot.
    pub fn slot_len(&self) -> u64 {
        DATA_OFFSET + u64::from(self.max_data)
    }

    /// Guest address of the first request slot of queue `queue`.
    pub fn slots_at(&self, queue: u16) -> u64 {
        let rings = self.rings_at + self.ring_stride() * u64::from(self.num_queues);
        rings + u64::from(queue) * u64::from(self.queue_size) * self.slot_len()
    }

    /// First guest address past everything the driver uses.
    pub fn end(&self) -> u64 {
        self.slots_at(self.num_queues)
    }
}

/// One discard or write-zeroes range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First sector.
    pub sector: u64,
    /// Sectors.
    pub num_sectors: u32,
    /// Write zeroes: the device may unmap the range.
    pub unmap: bool,
}

/// A request to submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkRequest<'a> {
    /// Read `len` bytes (a multiple of 512) from `sector`.
    Read {
        /// First sector.
        sector: u64,
        /// Bytes.
        len: u32,
    },
    /// Write `data` (a multiple of 512 bytes) at `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// The data.
        data: &'a [u8],
    },
    /// Make completed writes stable.
    Flush,
    /// Read the device id string.
    GetId,
    /// Discard ranges.
    Discard(&'a [Segment]),
    /// Zero ranges.
    WriteZeroes(&'a [Segment]),
}

/// A request the device returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkCompletion {
    /// Queue index.
    pub queue: u16,
    /// The chain id [`BlkDriver::submit`] returned.
    pub id: u16,
    /// The request type (virtio spec 5.2.6 `type`).
    pub kind: u32,
    /// The status byte as the device left it (0xee if it wrote none).
    pub status: u8,
    /// Bytes the device reported written (data and status).
    pub used_len: u32,
    /// IN and GET_ID: the data buffer's contents.
    pub data: Vec<u8>,
}

/// A request in a slot.
#[derive(Clone, Copy, Debug)]
struct Pending {
    slot: u64,
    kind: u32,
    in_len: u32,
}

/// One queue's slots and requests in flight.
#[derive(Debug, Default)]
struct SlotQueue {
    free: Vec<u64>,
    pending: HashMap<u16, Pending>,
}

/// One epoll per interrupt eventfd, so each queue waits on its own vector.
fn interrupt_epolls(irqs: &[Arc<EventFd>]) -> Result<Vec<Epoll>, BlkDriverError> {
    irqs.iter()
        .map(|fd| {
            let epoll = Epoll::new().map_err(BlkDriverError::Wait)?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    std::os::fd::AsRawFd::as_raw_fd(&**fd),
                    EpollEvent::new(EventSet::IN, 0),
                )
                .map_err(BlkDriverError::Wait)?;
            Ok(epoll)
        })
        .collect()
}

/// The virtio-blk driver. See the module documentation.
pub struct BlkDriver<M: GuestMemory> {
    pci: PciDriver<M>,
    config: BlkDriverConfig,
    queues: Vec<SlotQueue>,
    irqs: Vec<Epoll>,
    irq_fds: Vec<Arc<EventFd>>,
}

impl<M: GuestMemory> BlkDriver<M> {
    /// Initialises the device behind `pci`: negotiates `config.features`, sets up
    /// `config.num_queues` queues (queue *i* on MSI-X vector *i* + 1) and DRIVER_OK. `irqs[i]`
    /// is the eventfd of queue *i*'s vector.
    pub fn new(
        mut pci: PciDriver<M>,
        mut config: BlkDriverConfig,
        irqs: Vec<Arc<EventFd>>,
    ) -> Result<Self, BlkDriverError> {
        if config.max_data == 0 || !config.max_data.is_multiple_of(512) {
            return Err(BlkDriverError::BadRequest("max_data"));
        }
        let offered = pci.device_features();
        let features = config.features & offered;
        if features & features::MQ == 0 {
            config.num_queues = 1;
        } else {
            let mut n = [0u8; 2];
            pci.read_config(offset::NUM_QUEUES as u64, &mut n);
            config.num_queues = config.num_queues.clamp(1, u16::from_le_bytes(n).max(1));
        }
        if irqs.len() < usize::from(config.num_queues) {
            return Err(BlkDriverError::BadRequest(
                "one interrupt eventfd per queue",
            ));
        }
        let setups: Vec<QueueSetup> = (0..config.num_queues)
            .map(|q| {
                let at = config.rings_at + u64::from(q) * config.ring_stride();
                QueueSetup::new(q, config.queue_size, at)
            })
            .collect();
        pci.init(features, &setups)?;
        let epolls = interrupt_epolls(&irqs[..usize::from(config.num_queues)])?;
        let queues = (0..config.num_queues)
            .map(|q| SlotQueue {
                free: (0..u64::from(config.queue_size))
                    .rev()
                    .map(|s| config.slots_at(q) + s * config.slot_len())
                    .collect(),
                pending: HashMap::new(),
            })
            .collect();
        Ok(Self {
            pci,
            config,
            queues,
            irqs: epolls,
            irq_fds: irqs,
        })
    }

    /// The transport driver (stop, resume, suspend, queue state, ...).
    pub fn pci(&mut self) -> &mut PciDriver<M> {
        &mut self.pci
    }

    /// The configuration in use (`num_queues` as set up).
    pub fn config(&self) -> &BlkDriverConfig {
        &self.config
    }

    /// Queues set up.
    pub fn num_queues(&self) -> u16 {
        self.config.num_queues
    }

    /// Whether `feature` (a transport feature) was negotiated.
    pub fn negotiated(&self, feature: Feature) -> bool {
        self.pci.negotiated(feature)
    }

    /// Capacity in 512-byte sectors, from the configuration space.
    pub fn capacity(&self) -> u64 {
        let mut b = [0u8; 8];
        self.pci.read_config(offset::CAPACITY as u64, &mut b);
        u64::from_le_bytes(b)
    }

    /// Requests of `queue` submitted and not yet collected.
    pub fn in_flight(&self, queue: u16) -> usize {
        self.queues
            .get(usize::from(queue))
            .map_or(0, |q| q.pending.len())
    }

    fn write(&self, at: u64, bytes: &[u8]) -> Result<(), BlkDriverError> {
        self.pci
            .mem()
            .write_slice(bytes, GuestAddress(at))
            .map_err(|_| BlkDriverError::Memory(at))
    }

    /// Adds `request` to `queue`, publishes and kicks it; returns its chain id, or `None` when
    /// the queue has no free slot or ring space (collect completions first).
    pub fn submit(
        &mut self,
        queue: u16,
        request: BlkRequest<'_>,
    ) -> Result<Option<u16>, BlkDriverError> {
        let id = self.add(queue, request)?;
        if id.is_some() {
            self.pci.publish(queue)?;
            self.pci.kick(queue)?;
        }
        Ok(id)
    }

    /// Adds `request` to `queue` without publishing it (see [`Self::kick`]).
    pub fn add(
        &mut self,
        queue: u16,
        request: BlkRequest<'_>,
    ) -> Result<Option<u16>, BlkDriverError> {
        let max = self.config.max_data;
        let (kind, sector, payload, in_len) = encode(request, max)?;
        let q = self
            .queues
            .get_mut(usize::from(queue))
            .ok_or(PciError::QueueNotSetUp(queue))?;
        let Some(slot) = q.free.pop() else {
            return Ok(None);
        };
        let mut header = [0u8; REQUEST_HEADER_LEN as usize];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        let prepared = self
            .write(slot, &header)
            .and_then(|()| self.write(slot + STATUS_OFFSET, &[POISON]))
            .and_then(|()| self.write(slot + DATA_OFFSET, &payload));
        let mut chain = vec![BufferSpec::readable(slot, REQUEST_HEADER_LEN)];
        if !payload.is_empty() {
            chain.push(BufferSpec::readable(
                slot + DATA_OFFSET,
                payload.len() as u32,
            ));
        }
        if in_len > 0 {
            chain.push(BufferSpec::writable(slot + DATA_OFFSET, in_len));
        }
        chain.push(BufferSpec::writable(slot + STATUS_OFFSET, 1));
        let added = prepared.and_then(|()| Ok(self.pci.add_buffer(queue, &chain)?));
        let q = &mut self.queues[usize::from(queue)];
        match added {
            Ok(id) => {
                q.pending.insert(id, Pending { slot, kind, in_len });
                Ok(Some(id))
            }
            Err(BlkDriverError::Pci(PciError::Ring(DriverError::QueueFull { .. }))) => {
                q.free.push(slot);
                Ok(None)
            }
            Err(e) => {
                q.free.push(slot);
                Err(e)
            }
        }
    }

    /// Publishes what [`Self::add`] added to `queue` and notifies it if the device wants it.
    pub fn kick(&mut self, queue: u16) -> Result<(), BlkDriverError> {
        self.pci.publish(queue)?;
        self.pci.kick(queue)?;
        Ok(())
    }

    /// Requests of `queue` the device has returned since the last call.
    pub fn collect(&mut self, queue: u16) -> Result<Vec<BlkCompletion>, BlkDriverError> {
        let used = self.pci.collect_used(queue)?;
        let mem = self.pci.mem().clone();
        let q = self
            .queues
            .get_mut(usize::from(queue))
            .ok_or(PciError::QueueNotSetUp(queue))?;
        let mut out = Vec::with_capacity(used.len());
        for u in used {
            let p = q
                .pending
                .remove(&u.id)
                .ok_or(BlkDriverError::UnknownId { queue, id: u.id })?;
            q.free.push(p.slot);
            let mut status = [0u8];
            let mut data = vec![0u8; p.in_len as usize];
            let read = mem
                .read_slice(&mut status, GuestAddress(p.slot + STATUS_OFFSET))
                .and_then(|()| mem.read_slice(&mut data, GuestAddress(p.slot + DATA_OFFSET)));
            read.map_err(|_| BlkDriverError::Memory(p.slot))?;
            out.push(BlkCompletion {
                queue,
                id: u.id,
                kind: p.kind,
                status: status[0],
                used_len: u.len,
                data,
            });
        }
        Ok(out)
    }

    /// Waits up to `timeout` for `queue` to have used buffers: enables its interrupts, returns
    /// at once if buffers are waiting, else waits on the queue's MSI-X eventfd. Returns whether
    /// anything is (probably) there to collect.
    pub fn wait(&mut self, queue: u16, timeout: Duration) -> Result<bool, BlkDriverError> {
        if self.pci.enable_interrupts(queue)? {
            return Ok(true);
        }
        let (Some(epoll), Some(fd)) = (
            self.irqs.get(usize::from(queue)),
            self.irq_fds.get(usize::from(queue)),
        ) else {
            return Err(PciError::QueueNotSetUp(queue).into());
        };
        let mut events = [EpollEvent::default()];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let n = match epoll.wait(ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(BlkDriverError::Wait(e)),
        };
        // Consume the interrupt (non-blocking; nothing to read is fine).
        let _ = fd.read();
        Ok(n > 0)
    }

    /// Gives the transport driver back (e.g. to migrate it).
    pub fn into_pci(self) -> PciDriver<M> {
        self.pci
    }
}

/// `(type, sector, readable payload, writable data length)` of a request.
fn encode(request: BlkRequest<'_>, max: u32) -> Result<(u32, u64, Vec<u8>, u32), BlkDriverError> {
    let sectors = |len: usize| len > 0 && len.is_multiple_of(512) && len <= max as usize;
    Ok(match request {
        BlkRequest::Read { sector, len } => {
            if !sectors(len as usize) {
                return Err(BlkDriverError::BadRequest("read length"));
            }
            (t::IN, sector, Vec::new(), len)
        }
        BlkRequest::Write { sector, data } => {
            if !sectors(data.len()) {
                return Err(BlkDriverError::BadRequest("write length"));
            }
            (t::OUT, sector, data.to_vec(), 0)
        }
        BlkRequest::Flush => (t::FLUSH, 0, Vec::new(), 0),
        BlkRequest::GetId => (t::GET_ID, 0, Vec::new(), VIRTIO_BLK_ID_BYTES as u32),
        BlkRequest::Discard(segs) => (t::DISCARD, 0, segments(segs, max)?, 0),
        BlkRequest::WriteZeroes(segs) => (t::WRITE_ZEROES, 0, segments(segs, max)?, 0),
    })
}

fn segments(segs: &[Segment], max: u32) -> Result<Vec<u8>, BlkDriverError> {
    if segs.is_empty() || segs.len() * DISCARD_SEGMENT_LEN as usize > max as usize {
        return Err(BlkDriverError::BadRequest("segments"));
    }
    let mut out = Vec::with_capacity(segs.len() * DISCARD_SEGMENT_LEN as usize);
    for s in segs {
        out.extend_from_slice(&s.sector.to_le_bytes());
        out.extend_from_slice(&s.num_sectors.to_le_bytes());
        let flags = if s.unmap { WRITE_ZEROES_FLAG_UNMAP } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
    }
    Ok(out)
}
