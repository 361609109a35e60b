//! The owner's driver side: typed admin commands over the admin queues of an owner function,
//! through its registers and rings only ([`PciDriver`]).
//!
//! One command is outstanding per admin queue; its buffers live in a region of guest memory
//! the client owns (per queue: the device-readable part, then the device-writable part, each a
//! multiple of 8 bytes as the spec asks of drivers). Every wait is bounded by the configured
//! timeout; while waiting the client re-notifies the queue, which makes the device look at a
//! command that waits for a member again. EAGAIN is retried a bounded number of times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_lm_queue::{BufferSpec, QueueConfig, RingFeatures, RingKind};
use virtio_lm_spec::admin::{status, AdminOpcode, DevMode, ADMIN_RESULT_HEADER_LEN};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::decode::{opcode_name, AdminCommand, AdminResult};
use super::error::AdminError;
use super::framing::ContextFraming;
use crate::driver::{PciDriver, QueueSetup};
use crate::error::PciError;
use crate::transport::PciTransport;

/// How an [`AdminClient`] sets up and uses the owner's admin queues.
#[derive(Clone, Debug)]
pub struct AdminClientConfig {
    /// Features wanted besides VIRTIO_F_VERSION_1, VIRTIO_F_ADMIN_VQ and VIRTIO_F_SR_IOV (which
    /// the client always asks for).
    pub features: u64,
    /// The owner's own (non-admin) queues to set up as well.
    pub queues: Vec<QueueSetup>,
    /// Admin queues to set up, from `admin_queue_index`.
    pub admin_queues: u16,
    /// Size of each admin queue.
    pub queue_size: u16,
    /// Guest address of the first admin queue's ring; the next ones follow at page-aligned
    /// strides.
    pub ring_base: u64,
    /// Guest address of the command buffers.
    pub buffer_base: u64,
    /// Bytes of command buffer per admin queue (readable and writable parts together).
    pub buffer_len: u32,
    /// MSI-X vector of the admin queues' used-buffer notifications.
    pub msix_vector: u16,
    /// Longest wait for one command's completion.
    pub timeout: Duration,
    /// How often a command answered EAGAIN is sent again.
    pub eagain_retries: u32,
}

impl Default for AdminClientConfig {
    fn default() -> Self {
        Self {
            features: 0,
            queues: Vec::new(),
            admin_queues: 1,
            queue_size: 16,
            ring_base: 0x1_0000,
            buffer_base: 0x2_0000,
            buffer_len: 0x4000,
            msix_vector: 1,
            timeout: Duration::from_secs(2),
            eagain_retries: 64,
        }
    }
}

impl AdminClientConfig {
    /// Admin rings from 0x2000 and 16 KiB of command buffers at 0x8000, low enough for a small
    /// guest memory, with the given `timeout`: the layout the conformance target and the v1.4
    /// test rig drive an owner with.
    pub fn low_memory(timeout: Duration) -> Self {
        Self {
            ring_base: 0x2000,
            buffer_base: 0x8000,
            buffer_len: 0x4000,
            timeout,
            ..Self::default()
        }
    }
}

/// A command submitted and not yet collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    queue: u16,
    id: u16,
    opcode: u16,
    member: u64,
    writable_at: u64,
    writable_len: u32,
}

/// What the device wrote for a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The used length: bytes the device wrote.
    pub used_len: u32,
    /// The whole device-writable part as it is in guest memory (bytes past `used_len` were not
    /// written by the device: the client zeroed them).
    pub bytes: Vec<u8>,
}

impl Completion {
    /// Status, qualifier and result from the bytes written.
    pub fn result(&self) -> AdminResult {
        let n = (self.used_len as usize).min(self.bytes.len());
        AdminResult::decode(&self.bytes[..n])
    }
}

/// One DEV_CTX_READ answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadChunk {
    /// `remaining_ctx_size` after this piece.
    pub remaining: u32,
    /// The piece (`size` bytes).
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Slot {
    base: u64,
    len: u32,
    outstanding: Option<u16>,
    stale: bool,
}

/// The owner's driver for admin commands.
pub struct AdminClient<M: GuestMemory> {
    driver: PciDriver<M>,
    config: AdminClientConfig,
    first: u16,
    slots: Vec<Slot>,
    queue: u16,
    /// Per member, the DEV_CTX_WRITE stream the device accepted since the last DISCARD: the
    /// client refuses DEV_MODE_SET to Stop or Active while a context in it is not ended.
    writes: BTreeMap<u64, ContextFraming>,
}

pub(super) fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl<M: GuestMemory> AdminClient<M> {
    /// Initialises the owner behind `transport` (reset, features with VIRTIO_F_ADMIN_VQ and
    /// VIRTIO_F_SR_IOV, admin queues discovered at offsets 60/62 and set up, DRIVER_OK).
    pub fn init(
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
        profile: Profile,
        config: AdminClientConfig,
    ) -> Result<Self, AdminError> {
        let driver = PciDriver::new(transport, mem, profile)?;
        let mut client = Self {
            driver,
            config,
            first: 0,
            slots: Vec::new(),
            queue: 0,
            writes: BTreeMap::new(),
        };
        client.set_up()?;
        Ok(client)
    }

    fn set_up(&mut self) -> Result<(), AdminError> {
        let c = &self.config;
        let required = self
            .driver
            .profile()
            .feature_set(&[Feature::Version1, Feature::AdminVq, Feature::SrIov])
            .map_err(|_| AdminError::NoAdminQueue("the profile has no ADMIN_VQ or SR_IOV bit"))?;
        let (_, end) = QueueConfig::contiguous(
            RingKind::Split,
            c.queue_size,
            GuestAddress(0),
            RingFeatures::default(),
        );
        let stride = end.0.div_ceil(0x1000) * 0x1000;
        let admin: Vec<QueueSetup> = (0..c.admin_queues)
            .map(|i| {
                QueueSetup::new(0, c.queue_size, c.ring_base + u64::from(i) * stride)
                    .with_vector(c.msix_vector)
            })
            .collect();
        let features = c.features | required;
        let queues = c.queues.clone();
        self.first = match self.driver.init_with_admin(features, &queues, &admin) {
            Ok(first) => first,
            Err(PciError::FeatureNotNegotiated(_)) => {
                return Err(AdminError::NoAdminQueue("VIRTIO_F_ADMIN_VQ not negotiated"))
            }
            Err(PciError::NoSuchQueue(_)) => {
                return Err(AdminError::NoAdminQueue(
                    "fewer admin queues than asked for",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let len = self.config.buffer_len;
        self.slots = (0..self.config.admin_queues)
            .map(|i| Slot {
                base: self.config.buffer_base + u64::from(i) * u64::from(len),
                len,
                outstanding: None,
                stale: false,
            })
            .collect();
        Ok(())
    }

    /// Resets and re-initialises the owner: commands still outstanding (a timed-out one) are
    /// abandoned by the device (a member waiting for one stays Active), the used list is back
    /// to LIST_QUERY and LIST_USE.
    pub fn recover(&mut self) -> Result<(), AdminError> {
        self.set_up()
    }

    /// The driver (for the owner's own queues and registers).
    pub fn driver(&self) -> &PciDriver<M> {
        &self.driver
    }

    /// The driver, mutable.
    pub fn driver_mut(&mut self) -> &mut PciDriver<M> {
        &mut self.driver
    }

    /// `admin_queue_index`: the queue index of admin queue 0.
    pub fn admin_queue_index(&self) -> u16 {
        self.first
    }

    /// Sends the typed commands on admin queue `queue` (0-based among the admin queues).
    pub fn use_queue(&mut self, queue: u16) {
        self.queue = queue;
    }

    // ---- raw submission -------------------------------------------------------------------

    /// Places a command with device-readable part `readable` and a zeroed device-writable part
    /// of `writable_len` bytes on admin queue `queue` and notifies the device. Lengths are taken
    /// as given (tests send short, long or odd buffers this way).
    pub fn submit_raw(
        &mut self,
        queue: u16,
        readable: &[u8],
        writable_len: u32,
    ) -> Result<Ticket, AdminError> {
        let parsed = AdminCommand::parse(readable);
        let command = opcode_name(parsed.opcode);
        let index = self.first.saturating_add(queue);
        let slot = self
            .slots
            .get(usize::from(queue))
            .ok_or(AdminError::NoAdminQueue("no such admin queue"))?;
        if slot.stale {
            return Err(AdminError::Stale { queue: index });
        }
        if slot.outstanding.is_some() {
            return Err(AdminError::Protocol {
                command,
                member: parsed.group_member_id,
                reason: "a command is already outstanding on this admin queue",
            });
        }
        let writable_at = slot.base + align8(readable.len()) as u64;
        let needed = align8(readable.len()) + writable_len as usize;
        if needed > slot.len as usize {
            return Err(AdminError::TooLarge {
                command,
                needed,
                capacity: slot.len as usize,
            });
        }
        let mem = self.driver.mem().clone();
        let write = |bytes: &[u8], at: u64| {
            mem.write_slice(bytes, GuestAddress(at))
                .map_err(|_| AdminError::Protocol {
                    command,
                    member: parsed.group_member_id,
                    reason: "command buffer outside guest memory",
                })
        };
        write(readable, slot.base)?;
        write(&vec![0; writable_len as usize], writable_at)?;
        let mut buffers = Vec::with_capacity(2);
        if !readable.is_empty() {
            buffers.push(BufferSpec::readable(slot.base, readable.len() as u32));
        }
        if writable_len > 0 {
            buffers.push(BufferSpec::writable(writable_at, writable_len));
        }
        let id = self.driver.submit(index, &buffers)?;
        if let Some(slot) = self.slots.get_mut(usize::from(queue)) {
            slot.outstanding = Some(id);
        }
        Ok(Ticket {
            queue,
            id,
            opcode: parsed.opcode,
            member: parsed.group_member_id,
            writable_at,
            writable_len,
        })
    }

    /// Collects the command's completion if the device has used it (no wait, no notification).
    pub fn try_complete(&mut self, ticket: &Ticket) -> Result<Option<Completion>, AdminError> {
        let index = self.first.saturating_add(ticket.queue);
        let used = self.driver.collect_used(index)?;
        let Some(done) = used.iter().find(|u| u.id == ticket.id) else {
            return Ok(None);
        };
        if let Some(slot) = self.slots.get_mut(usize::from(ticket.queue)) {
            slot.outstanding = None;
        }
        let mut bytes = vec![0u8; ticket.writable_len as usize];
        self.driver
            .mem()
            .read_slice(&mut bytes, GuestAddress(ticket.writable_at))
            .map_err(|_| AdminError::Protocol {
                command: opcode_name(ticket.opcode),
                member: ticket.member,
                reason: "result buffer outside guest memory",
            })?;
        if done.len > ticket.writable_len {
            return Err(AdminError::Protocol {
                command: opcode_name(ticket.opcode),
                member: ticket.member,
                reason: "used length larger than the device-writable part",
            });
        }
        Ok(Some(Completion {
            used_len: done.len,
            bytes,
        }))
    }

    /// Waits (at most the configured timeout) for the command's completion, re-notifying the
    /// queue meanwhile. On timeout the queue is left stale until [`Self::recover`].
    pub fn wait(&mut self, ticket: &Ticket) -> Result<Completion, AdminError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(10);
        let mut spins = 0u32;
        loop {
            if let Some(done) = self.try_complete(ticket)? {
                return Ok(done);
            }
            if start.elapsed() >= self.config.timeout {
                if let Some(slot) = self.slots.get_mut(usize::from(ticket.queue)) {
                    slot.stale = true;
                }
                return Err(AdminError::Timeout {
                    command: opcode_name(ticket.opcode),
                    member: ticket.member,
                    waited: start.elapsed(),
                });
            }
            // The device looks at a waiting command again when notified.
            self.driver
                .notify(self.first.saturating_add(ticket.queue))?;
            if spins < 32 {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(1));
            }
        }
    }

    /// Whether a device context this client wrote to `member` is begun and not ended (seed 004
    /// "partially written"), as far as the client knows: a member reset, which discards it in
    /// the device, is not seen here, so after one send DEV_CTX_DISCARD before a mode change.
    pub fn context_partly_written(&self, member: u64) -> bool {
        self.writes
            .get(&member)
            .is_some_and(ContextFraming::partly_written)
    }

    /// The driver rules the client enforces itself before sending `cmd`.
    fn check_driver_rules(&self, cmd: &AdminCommand) -> Result<(), AdminError> {
        if AdminOpcode::try_from(cmd.opcode) != Ok(AdminOpcode::DevModeSet) {
            return Ok(());
        }
        let [mode] = cmd.data_as::<1>();
        match DevMode::try_from(mode) {
            Ok(mode @ (DevMode::Active | DevMode::Stop))
                if self.context_partly_written(cmd.group_member_id) =>
            {
                Err(AdminError::ContextPartlyWritten {
                    member: cmd.group_member_id,
                    mode,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records what a successful command changed in the member's write stream.
    fn note_success(&mut self, cmd: &AdminCommand) {
        let member = cmd.group_member_id;
        match AdminOpcode::try_from(cmd.opcode) {
            Ok(AdminOpcode::DevCtxWrite) => {
                let stream = self.writes.entry(member).or_default();
                stream.feed(&cmd.data);
                if !stream.partly_written() {
                    self.writes.remove(&member);
                }
            }
            Ok(AdminOpcode::DevCtxDiscard) => {
                self.writes.remove(&member);
            }
            _ => {}
        }
    }

    /// Sends `cmd` with room for `result_len` bytes of result and returns the successful
    /// result; EAGAIN is retried, any other status is an [`AdminError::Command`].
    ///
    /// The client keeps the driver rules of seed 004 itself: DEV_MODE_SET to Stop or Active
    /// while a context it wrote is not ended is refused with
    /// [`AdminError::ContextPartlyWritten`] without being sent. ([`Self::submit_raw`] sends
    /// anything, for tests of the device.)
    pub fn execute(
        &mut self,
        cmd: &AdminCommand,
        result_len: usize,
    ) -> Result<AdminResult, AdminError> {
        let command = opcode_name(cmd.opcode);
        self.check_driver_rules(cmd)?;
        let readable = cmd.to_bytes();
        let writable = align8(ADMIN_RESULT_HEADER_LEN + result_len) as u32;
        let attempts = self.config.eagain_retries.saturating_add(1);
        for attempt in 0..attempts {
            let ticket = self.submit_raw(self.queue, &readable, writable)?;
            let result = self.wait(&ticket)?.result();
            match result.status {
                status::OK => {
                    self.note_success(cmd);
                    return Ok(result);
                }
                status::EAGAIN => {
                    // Safe to retry: EAGAIN had no side effect. Back off a little.
                    let micros = 10u64 << attempt.min(7);
                    std::thread::sleep(Duration::from_micros(micros));
                }
                _ => {
                    return Err(AdminError::Command {
                        command,
                        member: cmd.group_member_id,
                        status: result.status,
                        qualifier: result.qualifier,
                    })
                }
            }
        }
        Err(AdminError::Retries {
            command,
            member: cmd.group_member_id,
            attempts,
        })
    }
}
