//! Device types for tests: [`CountingDevice`] (fills every buffer with a counted byte stream,
//! as virtio-rng does from its entropy source), [`ConfigDevice`] (a writable configuration
//! space) and [`SlowDevice`] (an asynchronous backend that holds requests until released).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_lm_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory};

use crate::{ChainFault, DeviceError, Handover, QueueAccess, Quiesce, QuiesceMode, VirtioDevice};

/// Writes `byte(addr)` into every device-writable byte of `chain`; returns the bytes written.
pub fn fill_chain<M: GuestMemory + ?Sized>(
    chain: &DescriptorChain,
    mem: &M,
    mut byte: impl FnMut(u64) -> u8,
) -> Result<u32, DeviceError> {
    let mut written = 0;
    for segment in chain.writable() {
        let bytes: Vec<u8> = (0..u64::from(segment.len))
            .map(|i| byte(segment.addr.0 + i))
            .collect();
        mem.write_slice(&bytes, segment.addr)
            .map_err(|_| DeviceError::MalformedChain {
                id: chain.id(),
                fault: ChainFault::Unwritable,
            })?;
        written += segment.len;
    }
    Ok(written)
}

/// The device id [`CountingDevice`] and the transport-facing [`SlowDevice`]s present: an
/// entropy source's (4), since they behave as one (a device-writable buffer in, random-looking
/// bytes out).
pub const ENTROPY_DEVICE_TYPE: u32 = 4;

/// A device type that completes every chain at once, writing a counted byte stream into its
/// device-writable buffers (byte `n` of the stream is `seed + n`, truncated to a byte), so a
/// test can check the very bytes a buffer received. It presents as an entropy source
/// ([`ENTROPY_DEVICE_TYPE`]), one queue, no configuration space: virtio-rng with a
/// reproducible source, which the device core and the transport cannot depend on.
#[derive(Debug)]
pub struct CountingDevice {
    next: u64,
    queue_size: u16,
    features: u64,
    /// The features of each activation (DRIVER_OK), in order.
    pub activations: Arc<Mutex<Vec<u64>>>,
}

impl CountingDevice {
    /// A device with one queue of `queue_size` whose stream starts at `seed`, offering no
    /// device-type feature.
    pub fn new(seed: u64, queue_size: u16) -> Self {
        Self {
            next: seed,
            queue_size,
            features: 0,
            activations: Arc::default(),
        }
    }

    /// The same device offering device-type `features` (which change nothing in it), for a
    /// transport test that must see them pass through.
    pub fn offering(mut self, features: u64) -> Self {
        self.features = features;
        self
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for CountingDevice {
    one_queue_identity!(ENTROPY_DEVICE_TYPE);

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        queue.complete_each(|chain, mem| {
            fill_chain(chain, mem, |_| {
                let byte = self.next as u8;
                self.next = self.next.wrapping_add(1);
                byte
            })
        })
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn activate(&mut self, features: u64) -> Result<(), DeviceError> {
        self.activations.lock().unwrap().push(features);
        Ok(())
    }
}

/// Bytes of [`ConfigDevice`]'s configuration space.
pub const CONFIG_LEN: usize = 8;

/// A small device type with a configuration space the driver can write (byte `i` starts as
/// `i`), for tests that must see whether a configuration write or change went through. One
/// queue of 16; each buffer is filled with configuration byte 0 and used at once.
#[derive(Debug, Default)]
pub struct ConfigDevice {
    config: [u8; CONFIG_LEN],
}

impl ConfigDevice {
    /// Device id of the test device: 63, unassigned in virtio 1.4 and the last id a modern
    /// virtio-pci function can carry (PCI device id 0x107f), so it also works behind the
    /// transport.
    pub const DEVICE_TYPE: u32 = 63;

    /// A device with its initial configuration `0, 1, …, 7`.
    pub fn new() -> Self {
        let mut config = [0; CONFIG_LEN];
        for (i, b) in config.iter_mut().enumerate() {
            *b = i as u8;
        }
        Self { config }
    }
}

impl<M: GuestMemory> VirtioDevice<M> for ConfigDevice {
    crate::device_identity!(type: Self::DEVICE_TYPE, queues: [16], config: CONFIG_LEN);

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        crate::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset + i) {
                *slot = *b;
            }
        }
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let byte = self.config[0];
        queue.complete_each(|chain, mem| fill_chain(chain, mem, |_| byte))
    }
}

/// What a [`SlowDevice`] writes into a request's device-writable buffers when it takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Nothing: the buffers keep what the driver left there.
    Nothing,
    /// This byte everywhere.
    Byte(u8),
    /// [`pattern`] of each byte's guest address, so a test can check every byte used.
    Pattern,
}

/// The byte [`Fill::Pattern`] writes at guest address `addr`.
pub fn pattern(addr: u64) -> u8 {
    (addr as u8) ^ 0x5a
}

/// A device with an asynchronous backend: requests it takes stay in process (in [`held`])
/// until [`release`] is set, then complete with their whole writable length. It exercises the
/// drain and record-in-flight quiescing of seeds 000, 003 and 004:
///
/// - Drain: not quiet while it holds anything; record-in-flight: lets go of what it holds (the
///   queue keeps it in flight for whoever resumes).
/// - [`fail_quiesce`] makes every quiesce fail.
///
/// [`SlowDevice::new`] is the device-level rig (one queue of 8, completes as soon as it may,
/// also when notified). The builder methods shape the transport-level variants.
///
/// [`held`]: SlowDevice::held
/// [`release`]: SlowDevice::release
/// [`fail_quiesce`]: SlowDevice::fail_quiesce
pub struct SlowDevice {
    /// Requests in process: (chain id, writable length).
    pub held: Arc<Mutex<VecDeque<(u16, u32)>>>,
    /// While clear, nothing completes.
    pub release: Arc<AtomicBool>,
    /// Set: every quiesce reports [`Quiesce::Failed`].
    pub fail_quiesce: Arc<AtomicBool>,
    fill: Fill,
    device_type: u32,
    queue_size: u16,
    per_poll: usize,
    complete_when_notified: bool,
    adopt: bool,
}

impl Default for SlowDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl SlowDevice {
    /// Device id of the device-level rig (a value no virtio device type uses).
    pub const DEVICE_TYPE: u32 = 0xffff;

    /// Holds every request until released; one queue of 8; writes nothing.
    pub fn new() -> Self {
        Self {
            held: Arc::default(),
            release: Arc::new(AtomicBool::new(false)),
            fail_quiesce: Arc::new(AtomicBool::new(false)),
            fill: Fill::Nothing,
            device_type: Self::DEVICE_TYPE,
            queue_size: 8,
            per_poll: usize::MAX,
            complete_when_notified: true,
            adopt: false,
        }
    }

    /// The transport-level variant: presents as an entropy source
    /// ([`ENTROPY_DEVICE_TYPE`]) with one queue of `queue_size`, writes `fill` into each request
    /// when it takes it, and completes only from [`VirtioDevice::poll`] (the core's next entry
    /// after a notification), as a backend thread would.
    pub fn backend(fill: Fill, queue_size: u16) -> Self {
        Self {
            fill,
            device_type: ENTROPY_DEVICE_TYPE,
            queue_size,
            complete_when_notified: false,
            ..Self::new()
        }
    }

    /// Releases its requests as `release` says (a flag shared with the test).
    pub fn released_by(mut self, release: Arc<AtomicBool>) -> Self {
        self.release = release;
        self
    }

    /// Releases its requests from the start.
    pub fn released(self) -> Self {
        self.release.store(true, Ordering::SeqCst);
        self
    }

    /// Completes at most one request per [`VirtioDevice::poll`].
    pub fn one_per_poll(mut self) -> Self {
        self.per_poll = 1;
        self
    }

    /// Takes over the in-flight chains the core hands it when a queue starts (restored with a
    /// context, or left by a record-in-flight quiesce), so each completes exactly once.
    pub fn adopting(mut self) -> Self {
        self.adopt = true;
        self
    }

    fn take<M: GuestMemory + ?Sized>(
        &mut self,
        chain: &DescriptorChain,
        mem: &M,
    ) -> Result<(), DeviceError> {
        match self.fill {
            Fill::Nothing => {}
            Fill::Byte(b) => {
                fill_chain(chain, mem, |_| b)?;
            }
            Fill::Pattern => {
                fill_chain(chain, mem, pattern)?;
            }
        }
        self.held
            .lock()
            .unwrap()
            .push_back((chain.id(), chain.writable_len()));
        Ok(())
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for SlowDevice {
    one_queue_identity!(field);

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = queue.pop()? {
            self.take(&chain, queue.mem())?;
        }
        if self.complete_when_notified {
            self.poll(std::slice::from_mut(queue))?;
        }
        Ok(())
    }

    fn adopt_inflight(&mut self, handover: Handover<'_, '_, M>) -> Result<(), DeviceError> {
        if !self.adopt {
            return handover.return_unused();
        }
        let (chains, queue) = handover.into_parts();
        for chain in &chains {
            self.take(chain, queue.mem())?;
        }
        if self.complete_when_notified {
            self.poll(std::slice::from_mut(queue))?;
        }
        Ok(())
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, M>]) -> Result<(), DeviceError> {
        let Some(queue) = queues.first_mut() else {
            return Ok(());
        };
        if !self.release.load(Ordering::SeqCst) {
            return Ok(());
        }
        for _ in 0..self.per_poll {
            let Some((id, len)) = self.held.lock().unwrap().pop_front() else {
                break;
            };
            queue.add_used(id, len)?;
        }
        Ok(())
    }

    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        if self.fail_quiesce.load(Ordering::SeqCst) {
            return Quiesce::Failed;
        }
        match mode {
            QuiesceMode::RecordInflight => {
                // The requests stay in the queue's in-flight list for whoever resumes.
                self.held.lock().unwrap().clear();
                Quiesce::Done
            }
            QuiesceMode::Drain if self.held.lock().unwrap().is_empty() => Quiesce::Done,
            QuiesceMode::Drain => Quiesce::Pending,
        }
    }

    fn reset(&mut self) {
        self.held.lock().unwrap().clear();
    }
}
