//! What a device type implements; the core does everything generic around it.

use virtio_lm_queue::{DescriptorChain, DeviceQueue, QueueError, Virtqueue};
use vm_memory::GuestMemory;

use crate::context::persist::{self, ValidatedState};
use crate::context::DeviceField;
use crate::error::DeviceError;

/// How a device quiesces when it is stopped, suspended or frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuiesceMode {
    /// Complete every request in process (used + notification) before reporting quiet.
    Drain,
    /// Stop at once; requests in process stay in the queue's in-flight list, to be completed
    /// exactly once by whoever resumes the queue state.
    RecordInflight,
}

/// Whether a device has no request in process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiesce {
    /// Nothing is in process; the device will touch no guest memory until resumed.
    Done,
    /// Requests are still completing; the core asks again (after [`VirtioDevice::poll`]).
    Pending,
    /// The device cannot quiesce; the core sets DEVICE_NEEDS_RESET instead of presenting quiet.
    Failed,
}

/// [`VirtioDevice::read_config`] over a configuration space laid out in `space`: copies the
/// bytes at `offset` into `data`; bytes past the end (or past `usize::MAX`) read as 0.
pub fn read_config_bytes(space: &[u8], offset: usize, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i)
            .and_then(|at| space.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// A device type: rng, blk, net. Small on purpose: status, features, queues, notifications,
/// stop and suspend are the core's.
pub trait VirtioDevice<M: GuestMemory + ?Sized>: Send {
    /// The virtio device id (4 = entropy source, 2 = block, 1 = network).
    fn device_type(&self) -> u32;

    /// Device-type feature bits offered (the core adds ring and transport features). By
    /// default none.
    fn device_features(&self) -> u64 {
        0
    }

    /// Maximum size of each of the device's queues; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// Reads `data.len()` bytes of device-specific configuration at `offset`; bytes past the
    /// end read as 0. By default everything reads as 0 (for a device type whose
    /// [`Self::config_len`] is 0).
    fn read_config(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0);
    }

    /// Driver write to device-specific configuration; read-only fields ignore it.
    fn write_config(&mut self, _offset: usize, _data: &[u8]) {}

    /// The driver set DRIVER_OK with these negotiated features.
    fn activate(&mut self, _features: u64) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Takes over the [`Handover`]: the chains of one queue in flight when the queue started or
    /// resumed: restored with the queue state (seed 001 in-flight chains) or left in flight by
    /// a [`QuiesceMode::RecordInflight`] quiesce. The core calls this once per start or
    /// resume of a live queue whose in-flight list is not empty (at DRIVER_OK, at the end of a
    /// stop or suspend, when an admin mode returns to Active, when a context is restored
    /// into a running device), before any `process_queue` or `poll` of that start; the device
    /// completes each chain exactly once, now or later, and keeps no flag of its own for it.
    /// A device holds no chain across a quiesce it reported [`Quiesce::Done`], so none of
    /// `chains` is one it already holds. By default the chains are returned used with
    /// nothing written (for device types that never leave a request in process).
    fn adopt_inflight(&mut self, handover: Handover<'_, '_, M>) -> Result<(), DeviceError> {
        handover.return_unused()
    }

    /// The driver notified queue `index` (or the core re-checks it on resume): take and complete
    /// what is available. The core publishes and notifies afterwards.
    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError>;

    /// Completes work that finished in the background (async backends); the core then publishes
    /// and notifies. Synchronous devices have nothing to do.
    fn poll(&mut self, _queues: &mut [QueueAccess<'_, M>]) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Stops taking new requests and reports whether any is still in process.
    fn quiesce(&mut self, _mode: QuiesceMode) -> Quiesce {
        Quiesce::Done
    }

    /// Device reset: back to the state before the driver's first access.
    fn reset(&mut self) {}

    /// Virtqueue reset (RING_RESET) of queue `index`: forget requests of that queue still in
    /// process, as their completions must not reach the queue (synchronous devices hold none).
    fn reset_queue(&mut self, _index: u16) {}

    /// Bytes of the device-type configuration space: what [`Self::read_config`] serves and
    /// what a device context carries in DEVICE_CONFIG (spec-decisions §5); 0 for a device type
    /// without one. Required, with no default, so that a device type with a configuration
    /// space cannot forget it (its configuration would silently not travel with a context).
    fn config_len(&self) -> usize;

    /// The device-type state as device-specific fields, encoded from the device's typed state:
    /// a device type implementing [`Persist`](persist::Persist) forwards to [`persist::save`].
    /// The default keeps no state.
    ///
    /// # State contract
    ///
    /// - **What:** everything of the device type that a fresh device of the same type and
    ///   options needs to behave as this one does, and that is in neither the configuration space
    ///   (saved from [`Self::read_config`] as DEVICE_CONFIG) nor the queues (the core saves
    ///   their registers, seed 001 state and in-flight chains). Nothing of the host side (file
    ///   descriptors, sockets, paths, backend threads): the destination brings its own.
    /// - **Which fields:** only device-specific types, 0x0200–0x03FF (spec-decisions §5: 0x02xx
    ///   blk, 0x03xx net and the rest), each at most
    ///   [`MAX_FIELD_LEN`](crate::context::MAX_FIELD_LEN) bytes, in the order
    ///   [`Self::decode_state`] expects them; [`DeviceField::new`] makes a mandatory field, the
    ///   flag [`FIELD_FLAG_OPTIONAL`](virtio_lm_spec::context::FIELD_FLAG_OPTIONAL) one a
    ///   receiver may skip.
    /// - **When:** called by [`DeviceCore::save_context`](crate::DeviceCore::save_context) and
    ///   [`DeviceCore::snapshot_context`](crate::DeviceCore::snapshot_context) only, under the
    ///   core's lock, and for `save_context` only while the device is quiet (stopped, suspended,
    ///   in admin Stop or Freeze, or not running), so the state does not move meanwhile.
    /// - **Round trip:** [`Self::decode_state`] of a device of the same type and options must
    ///   accept what this returns (with the configuration space saved beside it), and
    ///   [`Self::restore_state`] of that must make the device save the same fields again.
    /// - **If a device gets it wrong:** a field outside 0x0200–0x03FF fails the save with
    ///   [`ContextError::Unencodable`](crate::ContextError::Unencodable) ("not a device-specific
    ///   type") and nothing is saved; a value over the length limit fails
    ///   [`encode`](crate::context::encode) with the same error. A state the device's own
    ///   `decode_state` refuses is found at the destination: its restore fails and changes
    ///   nothing there. Implementing [`Persist`](persist::Persist) keeps both halves in one typed
    ///   place.
    fn save_state(&self) -> Vec<DeviceField> {
        Vec::new()
    }

    /// Decodes and validates the device-type part of a context without applying it: its
    /// device-specific `fields` and its configuration space `config` (exactly
    /// [`Self::config_len`] bytes). Read-only configuration must match what this device would
    /// present after the restore; driver-writable configuration must hold writable values (the
    /// core writes it with [`Self::write_config`] after [`Self::restore_state`]).
    ///
    /// A device type implementing [`Persist`](persist::Persist) forwards to [`persist::decode`]. The default
    /// keeps no state (any field is refused) and has a read-only configuration space.
    fn decode_state(
        &self,
        fields: &[DeviceField],
        config: &[u8],
    ) -> Result<ValidatedState, DeviceError> {
        if !fields.is_empty() {
            return Err(DeviceError::BadState("this device type keeps no state"));
        }
        let mut own = vec![0; self.config_len()];
        self.read_config(0, &mut own);
        persist::check_read_only_config(&own, config)?;
        Ok(ValidatedState::none())
    }

    /// Applies a state [`Self::decode_state`] of this device returned. Cannot fail: everything
    /// that could be wrong with it was refused by the decoding. A device type implementing
    /// [`Persist`](persist::Persist) forwards to [`persist::restore`].
    fn restore_state(&mut self, _state: ValidatedState) {}
}

/// Sees each chain a device takes through a [`QueueAccess`], right after the queue took it
/// and before the device can act on it, and each buffer it returns used: where a transport
/// records what is in flight (the vhost-user backend's in-flight region), in the order it
/// happens.
pub trait AccessObserver<M: ?Sized> {
    /// `queue` has just taken `chain` (its position is already past it).
    fn taken(&mut self, queue: &Virtqueue, mem: &M, chain: &DescriptorChain);
    /// Buffer `id` was returned used (visible to the driver at the next publish).
    fn used(&mut self, _id: u16) {}
}

/// A live queue as a device sees it while processing: take chains, return them used.
pub struct QueueAccess<'a, M: GuestMemory + ?Sized> {
    pub(crate) queue: &'a mut Virtqueue,
    pub(crate) mem: &'a M,
    pub(crate) index: u16,
    pub(crate) used: bool,
    /// The device took at least one chain through this access.
    pub(crate) took: bool,
    pub(crate) observer: Option<&'a mut dyn AccessObserver<M>>,
}

impl<'a, M: GuestMemory + ?Sized> QueueAccess<'a, M> {
    /// An access to `queue` (the device's queue `index`) for a transport that runs its own
    /// processing loop instead of a [`DeviceCore`](crate::DeviceCore) — the vhost-user
    /// backend, where the frontend owns the device status. The caller publishes and decides
    /// notifications afterwards, as the core does ([`Self::used_any`], [`Self::took_any`]).
    pub fn new(queue: &'a mut Virtqueue, mem: &'a M, index: u16) -> Self {
        Self {
            queue,
            mem,
            index,
            used: false,
            took: false,
            observer: None,
        }
    }

    /// The same access, telling `observer` about every chain taken through it.
    pub fn observed(self, observer: &'a mut dyn AccessObserver<M>) -> Self {
        Self {
            observer: Some(observer),
            ..self
        }
    }

    /// Whether the device returned at least one chain used through this access.
    pub fn used_any(&self) -> bool {
        self.used
    }

    /// Whether the device took at least one chain through this access.
    pub fn took_any(&self) -> bool {
        self.took
    }

    /// The queue's index in the device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The access to queue `index` among `accesses`, as [`VirtioDevice::poll`] receives them
    /// (live queues only, so a queue may be missing).
    pub fn find<'s>(
        accesses: &'s mut [QueueAccess<'a, M>],
        index: u16,
    ) -> Option<&'s mut QueueAccess<'a, M>> {
        accesses.iter_mut().find(|a| a.index == index)
    }

    /// Guest memory, for the device to read and write buffers.
    pub fn mem(&self) -> &'a M {
        self.mem
    }

    /// Takes the next available chain.
    pub fn pop(&mut self) -> Result<Option<DescriptorChain>, QueueError> {
        let chain = self.queue.pop(self.mem)?;
        if let (Some(observer), Some(chain)) = (self.observer.as_mut(), chain.as_ref()) {
            observer.taken(self.queue, self.mem, chain);
        }
        self.took |= chain.is_some();
        Ok(chain)
    }

    /// Takes up to `max` chains into `chains[..n]`, reusing allocations; returns `n`.
    pub fn pop_batch(
        &mut self,
        chains: &mut Vec<DescriptorChain>,
        max: usize,
    ) -> Result<usize, QueueError> {
        if self.observer.is_some() {
            // One at a time: the observer sees each chain while the queue stands right after it.
            let mut taken = 0;
            while taken < max {
                match self.pop()? {
                    Some(chain) if chains.len() > taken => chains[taken] = chain,
                    Some(chain) => chains.push(chain),
                    None => break,
                }
                taken += 1;
            }
            return Ok(taken);
        }
        self.queue.pop_batch(self.mem, chains, max)
    }

    /// Returns buffer `id` with `len` bytes written.
    pub fn add_used(&mut self, id: u16, len: u32) -> Result<(), QueueError> {
        self.queue.add_used(self.mem, id, len)?;
        if let Some(observer) = self.observer.as_mut() {
            observer.used(id);
        }
        self.used = true;
        Ok(())
    }

    /// Completes every available chain at once: `complete` writes the chain's buffers and
    /// says how many bytes it wrote, and the chain is returned used with that length.
    pub fn complete_each(
        &mut self,
        mut complete: impl FnMut(&DescriptorChain, &'a M) -> Result<u32, DeviceError>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = self.pop()? {
            let written = complete(&chain, self.mem)?;
            self.add_used(chain.id(), written)?;
        }
        Ok(())
    }

    /// Chains taken and not yet used, oldest first (work handed over by a restore).
    pub fn inflight(&self) -> Vec<DescriptorChain> {
        self.queue.inflight()
    }
}

/// What [`VirtioDevice::adopt_inflight`] takes over: the chains of one queue in flight when it
/// started or resumed, oldest first, and that queue to complete them on.
pub struct Handover<'h, 'a, M: GuestMemory + ?Sized> {
    chains: Vec<DescriptorChain>,
    queue: &'h mut QueueAccess<'a, M>,
}

impl<'h, 'a, M: GuestMemory + ?Sized> Handover<'h, 'a, M> {
    /// The chains in flight on `queue`, oldest first, handed over to the device: for a
    /// transport that runs its own loop and restored a queue with work in flight (the
    /// vhost-user backend after a reconnect).
    pub fn of_queue(queue: &'h mut QueueAccess<'a, M>) -> Self {
        Self::new(queue.inflight(), queue)
    }

    pub(crate) fn new(chains: Vec<DescriptorChain>, queue: &'h mut QueueAccess<'a, M>) -> Self {
        Self { chains, queue }
    }

    /// The index of the queue the chains are in flight on.
    pub fn index(&self) -> u16 {
        self.queue.index()
    }

    /// The chains handed over, oldest first.
    pub fn chains(&self) -> &[DescriptorChain] {
        &self.chains
    }

    /// The chains and the queue, for a device that completes them itself.
    pub fn into_parts(self) -> (Vec<DescriptorChain>, &'h mut QueueAccess<'a, M>) {
        (self.chains, self.queue)
    }

    /// Returns every chain used with nothing written: what
    /// [`VirtioDevice::adopt_inflight`] does by default, for a device type that overrides it
    /// only for some queues or modes.
    pub fn return_unused(self) -> Result<(), DeviceError> {
        for chain in self.chains {
            self.queue.add_used(chain.id(), 0)?;
        }
        Ok(())
    }
}
