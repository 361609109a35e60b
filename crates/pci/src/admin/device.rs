//! The owner's device type: its own device type (rng, ...) plus the admin queues, whose
//! commands are decoded from each chain, executed in order and completed with their result.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtio_lm_device::context::{DeviceField, ValidatedState};
use virtio_lm_device::{DeviceError, QueueAccess, Quiesce, QuiesceMode, VirtioDevice};
use virtio_lm_queue::{DescriptorChain, Segment};
use virtio_lm_spec::admin::{ADMIN_CMD_HEADER_LEN, ADMIN_RESULT_HEADER_LEN};
use vm_memory::{Bytes, GuestMemory};

use super::decode::{AdminCommand, AdminResult, MAX_COMMAND_DATA};
use super::dispatch::{ModeWait, Outcome, OwnerShared};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A command taken from an admin queue and not yet completed.
#[derive(Debug)]
struct Entry {
    id: u16,
    writable: Vec<Segment>,
    writable_len: usize,
    cmd: AdminCommand,
    /// Set once executed, while the command waits for the member.
    wait: Option<ModeWait>,
}

/// The owner function's device: `inner`'s queues first, then the admin queues.
///
/// Every command available on an admin queue is taken at once and executed in order; a
/// DEV_MODE_SET waiting for a member's requests keeps the commands after it on that queue
/// waiting too (spec: commands on one admin queue are processed in order). A waiting command
/// is looked at again whenever the queue is notified (the driver re-notifies while it waits;
/// [`super::OwnerFunction::poll`] does the same from the host side).
///
/// The inner device type must complete its requests synchronously (as virtio-rng does): the
/// owner does not forward background completions (`poll`) to it.
pub(crate) struct OwnerDevice<M: GuestMemory + Send + Sync + 'static> {
    inner: Box<dyn VirtioDevice<M>>,
    inner_queues: u16,
    admin_sizes: Vec<u16>,
    shared: Arc<Mutex<OwnerShared<M>>>,
    fifos: Vec<VecDeque<Entry>>,
}

impl<M: GuestMemory + Send + Sync + 'static> OwnerDevice<M> {
    pub(crate) fn new(
        inner: Box<dyn VirtioDevice<M>>,
        admin_sizes: Vec<u16>,
        shared: Arc<Mutex<OwnerShared<M>>>,
    ) -> Self {
        let inner_queues = inner.queue_max_sizes().len() as u16;
        let fifos = admin_sizes.iter().map(|_| VecDeque::new()).collect();
        Self {
            inner,
            inner_queues,
            admin_sizes,
            shared,
            fifos,
        }
    }

    /// Runs the commands of admin queue `a` in order until one must wait.
    fn run(&mut self, a: usize, queue: &mut QueueAccess<'_, M>) -> Result<(), DeviceError> {
        let mut shared = lock(&self.shared);
        let Some(fifo) = self.fifos.get_mut(a) else {
            return Ok(());
        };
        while let Some(front) = fifo.front_mut() {
            let result = match front.wait {
                Some(wait) => match shared.progress(&wait) {
                    Some(result) => result,
                    None => break,
                },
                None => {
                    let others = shared.outstanding > 1;
                    let capacity = front.writable_len.saturating_sub(ADMIN_RESULT_HEADER_LEN);
                    match shared.dispatch(&front.cmd, capacity, others) {
                        Outcome::Done(result) => result,
                        Outcome::Wait(wait) => {
                            front.wait = Some(wait);
                            break;
                        }
                    }
                }
            };
            let Some(entry) = fifo.pop_front() else { break };
            shared.outstanding = shared.outstanding.saturating_sub(1);
            let len = write_result(&entry, &result, queue.mem())?;
            queue.add_used(entry.id, len)?;
        }
        Ok(())
    }
}

/// Reads the device-readable part of `chain` (at most the header and [`MAX_COMMAND_DATA`]
/// bytes of data, plus one to notice more).
fn read_entry<M: GuestMemory + ?Sized>(
    chain: &DescriptorChain,
    mem: &M,
) -> Result<Entry, DeviceError> {
    let limit = ADMIN_CMD_HEADER_LEN + MAX_COMMAND_DATA + 1;
    let total = (chain.readable_len() as usize).min(limit);
    let mut bytes = vec![0u8; total];
    let mut at = 0;
    for segment in chain.readable() {
        if at == total {
            break;
        }
        let take = (segment.len as usize).min(total - at);
        mem.read_slice(&mut bytes[at..at + take], segment.addr)
            .map_err(|e| DeviceError::Backend(e.to_string()))?;
        at += take;
    }
    Ok(Entry {
        id: chain.id(),
        writable: chain.writable().copied().collect(),
        writable_len: chain.writable_len() as usize,
        cmd: AdminCommand::parse(&bytes),
        wait: None,
    })
}

/// Writes `result` into the entry's writable buffers; returns the bytes written (the used
/// length).
fn write_result<M: GuestMemory + ?Sized>(
    entry: &Entry,
    result: &AdminResult,
    mem: &M,
) -> Result<u32, DeviceError> {
    let bytes = result.encode(entry.writable_len);
    let mut at = 0;
    for segment in &entry.writable {
        if at == bytes.len() {
            break;
        }
        let take = (segment.len as usize).min(bytes.len() - at);
        mem.write_slice(&bytes[at..at + take], segment.addr)
            .map_err(|e| DeviceError::Backend(e.to_string()))?;
        at += take;
    }
    Ok(at as u32)
}

impl<M: GuestMemory + Send + Sync + 'static> VirtioDevice<M> for OwnerDevice<M> {
    fn device_type(&self) -> u32 {
        self.inner.device_type()
    }

    fn device_features(&self) -> u64 {
        self.inner.device_features()
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let mut sizes = self.inner.queue_max_sizes();
        sizes.extend_from_slice(&self.admin_sizes);
        sizes
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        self.inner.read_config(offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.inner.write_config(offset, data);
    }

    fn activate(&mut self, features: u64) -> Result<(), DeviceError> {
        self.inner.activate(features)
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        let Some(a) = index.checked_sub(self.inner_queues) else {
            return self.inner.process_queue(index, queue);
        };
        let a = usize::from(a);
        // Take everything available, so the queue is drained as the core expects; the queue
        // size bounds how many commands can be taken and not completed.
        while let Some(chain) = queue.pop()? {
            let entry = read_entry(&chain, queue.mem())?;
            if let Some(fifo) = self.fifos.get_mut(a) {
                fifo.push_back(entry);
                lock(&self.shared).outstanding += 1;
            }
        }
        self.run(a, queue)
    }

    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        // A command waiting for a member stays taken (in flight) while the owner is stopped or
        // suspended and completes once it runs again: it needs no guest memory meanwhile.
        self.inner.quiesce(mode)
    }

    fn reset(&mut self) {
        self.inner.reset();
        let mut shared = lock(&self.shared);
        for entry in self.fifos.iter_mut().flat_map(|f| f.drain(..)) {
            if let Some(wait) = entry.wait {
                // Nobody will see this command complete: the member goes back to Active.
                shared.cancel(&wait);
            }
        }
        shared.outstanding = 0;
        shared.reset_used();
    }

    fn config_len(&self) -> usize {
        self.inner.config_len()
    }

    fn save_state(&self) -> Vec<DeviceField> {
        self.inner.save_state()
    }

    fn decode_state(
        &self,
        fields: &[DeviceField],
        config: &[u8],
    ) -> Result<ValidatedState, DeviceError> {
        self.inner.decode_state(fields, config)
    }

    fn restore_state(&mut self, state: ValidatedState) {
        self.inner.restore_state(state)
    }
}
