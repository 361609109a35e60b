//! Validating and executing one admin command against the owner's group.
//!
//! Validation order (virtio 1.4 "Administration Facilities"): group type, then opcode, then member id, each failing with
//! EINVAL and its qualifier (Q_INVALID_GROUP, Q_INVALID_OPCODE, Q_INVALID_MEMBER). EINVAL
//! always means the command had no side effect. The statuses this device uses besides:
//!
//! | Status / qualifier | When |
//! |---|---|
//! | EINVAL / Q_INVALID_FIELD | unknown mode; a context that is malformed or that the member cannot take; LIST_USE of an opcode not supported |
//! | EAGAIN / Q_TRYAGAIN | the member has a mode change pending from another admin queue (no side effect; retry) |
//! | EBUSY / Q_INVALID_COMMAND | not allowed in the member's state: DEV_CTX_WRITE outside Freeze, DEV_MODE_SET to Active or Stop with a context partially written, LIST_USE while other commands are outstanding (no side effect) |
//! | ENXIO / Q_INVALID_COMMAND | the member was reset (driver reset, FLR) or the VFs disabled while the command waited; a member that failed to apply a validated context |
//! | ENOMEM / Q_NORESOURCE | DEV_CTX_WRITE data beyond the device's 4 MiB buffer (no side effect) |

use virtio_lm_device::{AdminModeChange, AdminModeError, AdminModeStatus};
use virtio_lm_spec::admin::{
    group_type, opcode, qualifier, status, AdminOpcode, DevCtxFieldsQueryHeader,
    DevCtxReadResultHeader, DevCtxSizeResult, DevMode, DevModeData,
};
use vm_memory::GuestMemory;
use zerocopy::IntoBytes;

use super::context_io;
use super::decode::{AdminCommand, AdminResult};
use super::sriov::SriovGroup;

/// Words of the opcode bitmaps: every supported opcode is below 64.
const LIST_WORDS: usize = 1;

/// The opcodes the SR-IOV group supports: LIST_QUERY, LIST_USE and the seven device migration
/// commands (seed 004: all of them or none).
pub(crate) const SRIOV_SUPPORTED: [u64; LIST_WORDS] = {
    let mut word = 1u64 << opcode::LIST_QUERY | 1u64 << opcode::LIST_USE;
    let mut i = 0;
    while i < opcode::DEVICE_MIGRATION.len() {
        word |= 1u64 << opcode::DEVICE_MIGRATION[i];
        i += 1;
    }
    [word]
};

/// The used list after reset: LIST_QUERY and LIST_USE (virtio 1.4 "Administration Facilities").
const INITIAL_USED: [u64; LIST_WORDS] = [1u64 << opcode::LIST_QUERY | 1u64 << opcode::LIST_USE];

fn einval(q: u16) -> AdminResult {
    AdminResult::error(status::EINVAL, q)
}

fn busy() -> AdminResult {
    AdminResult::error(status::EBUSY, qualifier::Q_INVALID_COMMAND)
}

fn gone() -> AdminResult {
    AdminResult::error(status::ENXIO, qualifier::Q_INVALID_COMMAND)
}

fn try_again() -> AdminResult {
    AdminResult::error(status::EAGAIN, qualifier::Q_TRYAGAIN)
}

/// How a command ended, or what it waits for.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Completed with this result.
    Done(AdminResult),
    /// DEV_MODE_SET whose requests in process must finish first.
    Wait(ModeWait),
}

/// A DEV_MODE_SET waiting for the member's requests in process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModeWait {
    pub(crate) member: u64,
    pub(crate) generation: u64,
}

/// What all admin queues of an owner share: the group and the used lists.
pub(crate) struct OwnerShared<M: GuestMemory + Send + Sync + 'static> {
    pub(crate) group: SriovGroup<M>,
    /// The SR-IOV group's used opcode list.
    used: [u64; LIST_WORDS],
    /// Commands taken from the admin queues and not completed.
    pub(crate) outstanding: usize,
    /// The virtio 1.4 command set, which replaces the seed-004 one under the v1.4 profile.
    pub(crate) v14: Option<super::parts::PartsState>,
}

fn has(list: &[u64; LIST_WORDS], op: AdminOpcode) -> bool {
    let op = u16::from(op);
    list.get(usize::from(op / 64))
        .is_some_and(|word| word >> (op % 64) & 1 != 0)
}

impl<M: GuestMemory + Send + Sync + 'static> OwnerShared<M> {
    pub(crate) fn new(group: SriovGroup<M>) -> Self {
        Self {
            group,
            used: INITIAL_USED,
            outstanding: 0,
            v14: None,
        }
    }

    /// Owner reset: the used list is back to LIST_QUERY and LIST_USE.
    pub(crate) fn reset_used(&mut self) {
        self.used = INITIAL_USED;
        if let Some(v14) = self.v14.as_mut() {
            v14.reset();
        }
    }

    #[cfg(feature = "fuzzing")]
    /// The used list (for the fuzz invariants).
    pub(crate) fn used(&self) -> [u64; LIST_WORDS] {
        self.used
    }

    /// Validates and executes `cmd`. `result_capacity` is the room for the result after the
    /// status header; `others_outstanding` tells whether other commands are outstanding.
    pub(crate) fn dispatch(
        &mut self,
        cmd: &AdminCommand,
        result_capacity: usize,
        others_outstanding: bool,
    ) -> Outcome {
        if let Some(v14) = self.v14.as_mut() {
            return v14.dispatch(&mut self.group, cmd, result_capacity, others_outstanding);
        }
        match self.validate(cmd) {
            Err(result) => Outcome::Done(result),
            Ok(op) => self.execute(op, cmd, result_capacity, others_outstanding),
        }
    }

    /// Group type, then opcode, then member id (virtio 1.4 "Administration Facilities"); returns the decoded opcode.
    fn validate(&mut self, cmd: &AdminCommand) -> Result<AdminOpcode, AdminResult> {
        // Only the SR-IOV group: the owner offers no self-group command.
        if cmd.group_type != group_type::SRIOV || !self.group.cap.vf_enable {
            return Err(einval(qualifier::Q_INVALID_GROUP));
        }
        let op = AdminOpcode::try_from(cmd.opcode)
            .ok()
            .filter(|&op| has(&SRIOV_SUPPORTED, op) && has(&self.used, op))
            .ok_or(einval(qualifier::Q_INVALID_OPCODE))?;
        // LIST_QUERY and LIST_USE do not use group_member_id (the driver sets it to 0).
        if !op.is_list() && self.group.member(cmd.group_member_id).is_none() {
            return Err(einval(qualifier::Q_INVALID_MEMBER));
        }
        Ok(op)
    }

    fn execute(
        &mut self,
        op: AdminOpcode,
        cmd: &AdminCommand,
        capacity: usize,
        others: bool,
    ) -> Outcome {
        let result = match op {
            AdminOpcode::ListQuery => Ok(SRIOV_SUPPORTED.as_bytes().to_vec()),
            AdminOpcode::ListUse => self.list_use(cmd, others),
            _ => return self.member_command(op, cmd, capacity),
        };
        Outcome::Done(result.map_or_else(|e| e, AdminResult::ok))
    }

    fn list_use(&mut self, cmd: &AdminCommand, others: bool) -> Result<Vec<u8>, AdminResult> {
        // The driver "MUST NOT issue VIRTIO_ADMIN_CMD_LIST_USE commands if any other command has
        // been submitted to the device and has not yet completed".
        if others {
            return Err(busy());
        }
        let mut list = [0u64; LIST_WORDS];
        for (i, chunk) in cmd.data.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let supported = SRIOV_SUPPORTED.get(i).copied().unwrap_or(0);
            if word & !supported != 0 {
                return Err(einval(qualifier::Q_INVALID_FIELD));
            }
            if let Some(slot) = list.get_mut(i) {
                *slot = word;
            }
        }
        self.used = list;
        Ok(Vec::new())
    }

    fn member_command(&mut self, op: AdminOpcode, cmd: &AdminCommand, capacity: usize) -> Outcome {
        let generation = self.group.generation;
        let Some(member) = self.group.member(cmd.group_member_id) else {
            return Outcome::Done(einval(qualifier::Q_INVALID_MEMBER));
        };
        let function = member.function.clone();
        let irq = function.interrupts();
        let mut core = function.core().lock().unwrap_or_else(|e| e.into_inner());
        if core.admin_mode_pending() {
            return Outcome::Done(try_again());
        }
        let streams = &mut member.streams;
        let result = match op {
            AdminOpcode::DevModeGet => Ok(DevModeData::new(core.admin_mode()).as_bytes().to_vec()),
            AdminOpcode::DevModeSet => {
                let [mode] = cmd.data_as::<1>();
                let Ok(mode) = DevMode::try_from(mode) else {
                    return Outcome::Done(einval(qualifier::Q_INVALID_FIELD));
                };
                // Seed 004: MODE_SET to Active or Stop fails while a context is partially
                // written.
                if mode != DevMode::Freeze && streams.partially_written(&core) {
                    return Outcome::Done(busy());
                }
                let before = core.admin_mode();
                match core.set_admin_mode(mode) {
                    Ok(AdminModeChange::Done) => {
                        if before != mode {
                            streams.mode_changed();
                        }
                        Ok(Vec::new())
                    }
                    Ok(AdminModeChange::Pending) => {
                        return Outcome::Wait(ModeWait {
                            member: cmd.group_member_id,
                            generation,
                        })
                    }
                    Err(AdminModeError::Busy) => Err(try_again()),
                    Err(AdminModeError::Reset) => Err(gone()),
                }
            }
            AdminOpcode::DevCtxSizeGet => streams
                .size(&core, irq)
                .map(|size| DevCtxSizeResult::new(size).as_bytes().to_vec()),
            AdminOpcode::DevCtxRead => {
                let header = size_of::<DevCtxReadResultHeader>();
                let max = capacity.saturating_sub(header);
                streams.read(&core, irq, max).map(|(remaining, data)| {
                    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    let mut out = DevCtxReadResultHeader::new(remaining, size)
                        .as_bytes()
                        .to_vec();
                    out.extend_from_slice(&data);
                    out
                })
            }
            AdminOpcode::DevCtxWrite => {
                if core.admin_mode() != DevMode::Freeze {
                    // Seed 004: "The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command
                    // when the device mode is not Freeze".
                    Err(busy())
                } else if cmd.data_overflow {
                    // Parsing keeps at most MAX_COMMAND_DATA bytes and flags the rest; data
                    // built in-process beyond the limit is refused by the write stream alike.
                    Err(AdminResult::error(status::ENOMEM, qualifier::Q_NORESOURCE))
                } else {
                    streams
                        .write(&mut core, irq, &cmd.data)
                        .map(|()| Vec::new())
                }
            }
            AdminOpcode::DevCtxDiscard => {
                streams.discard(&core);
                Ok(Vec::new())
            }
            AdminOpcode::DevCtxFieldsQuery => {
                let list = context_io::fields(&core);
                let count = u32::try_from(list.len()).unwrap_or(u32::MAX);
                let mut out = DevCtxFieldsQueryHeader::new(count).as_bytes().to_vec();
                for entry in &list {
                    out.extend_from_slice(entry.as_bytes());
                }
                Ok(out)
            }
            // execute() answers the list commands; they never reach a member.
            AdminOpcode::ListQuery | AdminOpcode::ListUse => {
                Err(einval(qualifier::Q_INVALID_OPCODE))
            }
        };
        Outcome::Done(result.map_or_else(|e| e, AdminResult::ok))
    }

    /// Looks at a waiting DEV_MODE_SET: its result once the member's requests finished (or the
    /// member was reset or removed), `None` while it still waits.
    pub(crate) fn progress(&mut self, wait: &ModeWait) -> Option<AdminResult> {
        if self.group.generation != wait.generation {
            return Some(gone());
        }
        let Some(member) = self.group.member(wait.member) else {
            return Some(gone());
        };
        let function = member.function.clone();
        let mut core = function.core().lock().unwrap_or_else(|e| e.into_inner());
        match core.poll_admin_mode() {
            AdminModeStatus::Pending => None,
            AdminModeStatus::Done(_) => {
                member.streams.mode_changed();
                Some(AdminResult::ok(Vec::new()))
            }
            AdminModeStatus::Failed(AdminModeError::Busy) => Some(try_again()),
            // The reset happened; the command completes after it, with the mode unchanged.
            AdminModeStatus::Failed(AdminModeError::Reset) | AdminModeStatus::Idle(_) => {
                Some(gone())
            }
        }
    }

    /// The owner gives up a waiting DEV_MODE_SET (owner reset): the member stays Active.
    pub(crate) fn cancel(&mut self, wait: &ModeWait) {
        if self.group.generation != wait.generation {
            return;
        }
        if let Some(member) = self.group.member(wait.member) {
            let function = member.function.clone();
            let mut core = function.core().lock().unwrap_or_else(|e| e.into_inner());
            core.cancel_admin_mode();
        }
    }
}
