//! The destination side of a migration (docs/stream-format.md, "State machines",
//! destination): every section is validated before it is applied; the guest is loaded with
//! its members in Freeze and answers Ready still paused; it runs only on Commit.

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{info, info_span, warn};
use virtio_lm_spec::Profile;
use virtio_lm_vm::{FunctionRegisters, Machine, MachineOptions, VcpuState};
use vm_memory::{Bytes, GuestAddress};

use super::source::{ms, truncate, unexpected, vm_config};
use super::wire::Wire;
use super::{DestinationReport, Link, MigrationControl, MigrationError, MigrationState, Progress};
use crate::{
    MemoryChunkRef, Message, PagesRef, Phase, Section, VmConfig, PAGE_SIZE, PROTOCOL_VERSION,
};

/// A guest received and running.
pub struct Incoming {
    /// The machine running the migrated guest.
    pub machine: Machine,
    /// What the destination measured.
    pub report: DestinationReport,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// Builds a machine from `options` waiting for a guest (members frozen, no vCPU), receives one
/// over `link`, validates every section before applying it, answers Ready still paused, and on
/// Commit sets the members Active, resumes the vCPUs and acknowledges. Any failure or Cancel
/// before Commit discards everything and returns the error (after telling the source, if the
/// link still works).
pub fn incoming<L: Link>(
    link: L,
    options: MachineOptions,
    control: &MigrationControl,
) -> Result<Incoming, MigrationError> {
    incoming_with_timeout(link, options, control, LINK_TIMEOUT)
}

/// As [`incoming`], with every read and write on `link` bounded by `link_timeout` instead of
/// [`LINK_TIMEOUT`] (`vm --incoming --link-timeout`): a source that stalls sending no bytes
/// fails the migration at the first read that waits this long (a zero timeout is taken as
/// one second: the socket refuses zero).
pub fn incoming_with_timeout<L: Link>(
    link: L,
    options: MachineOptions,
    control: &MigrationControl,
    link_timeout: std::time::Duration,
) -> Result<Incoming, MigrationError> {
    let span = info_span!("migration.destination", peer = %link.peer());
    let _enter = span.enter();
    let timeout = link_timeout.max(std::time::Duration::from_secs(1));
    link.set_timeouts(Some(timeout))?;
    link.low_latency()?;
    let mut wire = Wire::new(link, None);
    let mut dst = Destination {
        control,
        start: Instant::now(),
        progress: Progress::default(),
        report: DestinationReport::default(),
    };
    let result = dst.run(&mut wire, options);
    match result {
        Ok(machine) => {
            dst.publish(MigrationState::Completed, &wire);
            Ok(Incoming {
                machine,
                report: dst.report,
            })
        }
        Err(e) => {
            warn!("incoming migration abandoned: {e}");
            // Whatever the peer did, it learns why (unless the link is what failed).
            if !matches!(e, MigrationError::Cancelled(_)) {
                let message = Message::Error {
                    message: truncate(&e.to_string()),
                };
                let _ = wire.tx.write(&message).and_then(|()| wire.tx.flush());
            }
            wire.close();
            dst.publish(
                if matches!(e, MigrationError::Cancelled(_)) {
                    MigrationState::Cancelled
                } else {
                    MigrationState::Failed
                },
                &wire,
            );
            Err(e)
        }
    }
}

/// The destination's default longest wait for the next byte: the source may spend a while
/// between two sections (a long pre-copy round is many sections, but the stop can take the
/// vCPU pause timeout).
pub const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

struct Destination<'a> {
    control: &'a MigrationControl,
    start: Instant,
    progress: Progress,
    report: DestinationReport,
}

impl Destination<'_> {
    fn publish<L: Link>(&mut self, state: MigrationState, wire: &Wire<L>) {
        self.progress.state = state;
        self.progress.elapsed_ms = ms(self.start, Instant::now());
        self.report.bytes_received = wire.rx.position().offset;
        self.progress.bytes_sent = self.report.bytes_received;
        self.control.publish(&self.progress);
    }

    fn run<L: Link>(
        &mut self,
        wire: &mut Wire<L>,
        options: MachineOptions,
    ) -> Result<Machine, MigrationError> {
        self.publish(MigrationState::Setup, wire);
        // Built before Start is answered: the source's pre-copy then starts against a
        // destination ready to take it, and its round 0 measures the transfer alone.
        let mut machine = Machine::incoming(options)?;
        match wire.rx.read_message()? {
            Message::Start { version } => {
                // The reader accepted its version (ours or the one before); the answer names
                // the version both now speak, so a source on the previous version reads it.
                wire.tx.write(&Message::Start {
                    version: version.min(PROTOCOL_VERSION),
                })?;
                wire.tx.flush()?;
            }
            other => return Err(unexpected("Start", other)),
        }
        match wire.rx.read_message()? {
            Message::Config(config) => check_config(&machine, &config)?,
            other => return Err(unexpected("Config", other)),
        }
        self.publish(MigrationState::PreCopy, wire);
        let members = machine.members();
        // Pages written so far: RAM starts zeroed, so a zero marker for a page never written
        // needs no write (round 0 is mostly zero markers).
        let pages = machine
            .memory()
            .layout()
            .iter()
            .map(|r| (r.gpa + r.len) / PAGE_SIZE as u64)
            .max()
            .unwrap_or(0);
        let mut written = vec![false; pages as usize];
        let mut contexts: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut state: Option<VcpuState> = None;
        let mut registers: BTreeMap<u64, FunctionRegisters> = BTreeMap::new();
        loop {
            if self.control.is_cancelled() {
                return Err(MigrationError::Cancelled("by the operator".into()));
            }
            let at = wire.rx.position().section;
            let received = wire.rx.position().offset;
            match wire.rx.read_section()? {
                Section::Memory(chunk) => {
                    self.progress.round = chunk.round;
                    self.report.memory_sections += 1;
                    apply_memory(&machine, &chunk, &mut written).map_err(|reason| {
                        MigrationError::Invalid {
                            section: format!("Memory section {at}"),
                            reason,
                        }
                    })?;
                    if chunk.phase == Phase::Final {
                        self.publish(MigrationState::Stopped, wire);
                    } else if self.report.memory_sections.is_multiple_of(64) {
                        self.publish(MigrationState::PreCopy, wire);
                    }
                }
                // Everything before it is applied: the source measures its rate to this ack.
                Section::Message(Message::RoundEnd { round }) => {
                    wire.tx.write(&Message::RoundAck {
                        round,
                        bytes_received: received,
                    })?;
                    wire.tx.flush()?;
                }
                Section::Message(Message::DeviceContext {
                    phase,
                    device_id,
                    context,
                }) => {
                    let member = u64::from(device_id);
                    if !members.contains(&member) {
                        return Err(MigrationError::Invalid {
                            section: format!("DeviceContext section {at}"),
                            reason: format!("no device {device_id} here"),
                        });
                    }
                    // Pre-copy: the early compatibility check. Final: checked again with the
                    // rings at Complete, when all memory is in.
                    machine
                        .check_context(member, &context, false)
                        .map_err(|e| {
                            MigrationError::Incompatible(format!("DeviceContext section {at}: {e}"))
                        })?;
                    if phase == Phase::Final {
                        contexts.insert(member, context);
                    }
                }
                Section::Message(Message::VcpuState { vcpu, state: bytes }) => {
                    if vcpu != 0 || state.is_some() {
                        return Err(MigrationError::Invalid {
                            section: format!("VcpuState section {at}"),
                            reason: format!("vCPU state {vcpu}: one state (index 0) expected"),
                        });
                    }
                    state =
                        Some(
                            VcpuState::decode(&bytes).map_err(|e| MigrationError::Invalid {
                                section: format!("VcpuState section {at}"),
                                reason: e.to_string(),
                            })?,
                        );
                }
                Section::Message(Message::FunctionState(function)) => {
                    let member = u64::from(function.device_id);
                    let invalid = |reason: String| MigrationError::Invalid {
                        section: format!("FunctionState section {at}"),
                        reason,
                    };
                    if !members.contains(&member) {
                        return Err(invalid(format!("no device {member} here")));
                    }
                    if registers.contains_key(&member) {
                        return Err(invalid(format!("device {member} listed twice")));
                    }
                    let regs = function.registers();
                    machine
                        .check_function_registers(member, &regs)
                        .map_err(|e| invalid(e.to_string()))?;
                    registers.insert(member, regs);
                }
                Section::Message(Message::Complete) => break,
                Section::Message(other) => {
                    return Err(unexpected(
                        "Memory, RoundEnd, DeviceContext, FunctionState, VcpuState or Complete",
                        other,
                    ))
                }
            }
        }
        let complete = Instant::now();
        let span = info_span!("load").entered();
        let missing: Vec<u64> = members
            .iter()
            .copied()
            .filter(|m| !contexts.contains_key(m))
            .collect();
        if !missing.is_empty() {
            return Err(MigrationError::Invalid {
                section: "Complete".into(),
                reason: format!("no final context for device(s) {missing:?}"),
            });
        }
        let state = state.ok_or_else(|| MigrationError::Invalid {
            section: "Complete".into(),
            reason: "no vCPU state".into(),
        })?;
        let unregistered: Vec<u64> = members
            .iter()
            .copied()
            .filter(|m| !registers.contains_key(m))
            .collect();
        if machine.profile() == Profile::V1_4 && !unregistered.is_empty() {
            return Err(MigrationError::Invalid {
                section: "Complete".into(),
                reason: format!("no function state for device(s) {unregistered:?}"),
            });
        }
        // Everything is checked before anything is applied: the rings as a dry run against
        // the memory now complete.
        let rings = !self.control.skip_ring_check();
        for (member, context) in &contexts {
            machine
                .check_context(*member, context, rings)
                .map_err(|e| MigrationError::Invalid {
                    section: format!("DeviceContext of device {member}"),
                    reason: e.to_string(),
                })?;
        }
        let contexts: Vec<(u64, Vec<u8>)> = contexts.into_iter().collect();
        let load_start = Instant::now();
        self.report.check_ms = ms(complete, load_start);
        machine.load(&contexts, state)?;
        for (member, regs) in &registers {
            machine.restore_function_registers(*member, regs)?;
        }
        let loaded = Instant::now();
        drop(span);
        wire.tx.write(&Message::Ready)?;
        wire.tx.flush()?;
        self.publish(MigrationState::AwaitingReady, wire);
        match wire.rx.read_message()? {
            Message::Commit => {}
            other => return Err(unexpected("Commit", other)),
        }
        let _span = info_span!("commit").entered();
        let commit = Instant::now();
        machine.activate()?;
        let running = Instant::now();
        self.report.load_ms = ms(load_start, loaded);
        self.report.await_commit_ms = ms(loaded, commit);
        self.report.activate_ms = ms(commit, running);
        self.report.restore_ms = ms(complete, running);
        // Context writes happened in load (with the vCPU rebuild, a small part); Active now.
        self.report.device_ms = ms(load_start, loaded) + ms(commit, running);
        let ack = Message::CommitAck {
            restore_us: (self.report.restore_ms * 1e3) as u64,
            device_us: (self.report.device_ms * 1e3) as u64,
        };
        // The guest runs here now whatever happens to the acknowledgement: the source stays
        // paused without it (outcome unknown there), never runs a second copy.
        if let Err(e) = wire.tx.write(&ack).and_then(|()| wire.tx.flush()) {
            warn!("CommitAck not delivered: {e}");
        }
        info!(
            restore_ms = self.report.restore_ms,
            "running the migrated guest"
        );
        Ok(machine)
    }
}

/// The Config check, before anything else is accepted: same memory layout, profile and
/// devices (type, queues, configuration space), and every feature the source's driver
/// negotiated offered here.
fn check_config(machine: &Machine, theirs: &VmConfig) -> Result<(), MigrationError> {
    let ours = vm_config(machine);
    let bad = |what: String| Err(MigrationError::Incompatible(what));
    if theirs.memory != ours.memory {
        return bad(format!(
            "memory layout {:?} here, {:?} on the source",
            ours.memory, theirs.memory
        ));
    }
    if theirs.profile != ours.profile {
        return bad(format!(
            "numbering profile {} here, {} on the source: both VMs need the same --profile \
             (spec-decisions §35)",
            ours.profile.name(),
            theirs.profile.name()
        ));
    }
    super::v14::check_config(theirs)?;
    if theirs.devices.len() != ours.devices.len() {
        return bad(format!(
            "{} devices here, {} on the source",
            ours.devices.len(),
            theirs.devices.len()
        ));
    }
    let info = machine.member_info();
    for (t, o) in theirs.devices.iter().zip(&ours.devices) {
        let id = t.id;
        if t.id != o.id || t.device_type != o.device_type || t.num_queues != o.num_queues {
            return bad(format!(
                "device {id}: type {} with {} queues on the source, device {} type {} with {} \
                 queues here",
                t.device_type, t.num_queues, o.id, o.device_type, o.num_queues
            ));
        }
        if t.config_space != o.config_space {
            return bad(format!("device {id}: configuration space differs"));
        }
        let offered = info
            .iter()
            .find(|m| m.member == u64::from(id))
            .map_or(0, |m| m.device_features);
        let missing = t.negotiated_features & !offered;
        if missing != 0 {
            return bad(format!(
                "device {id}: features {missing:#x} negotiated on the source are not offered here"
            ));
        }
    }
    Ok(())
}

/// Checks every range of `chunk` lies inside RAM, then writes it (`written`: pages written so
/// far, by page number).
fn apply_memory(
    machine: &Machine,
    chunk: &MemoryChunkRef<'_>,
    written: &mut [bool],
) -> Result<(), String> {
    let layout = machine.memory().layout();
    for (i, r) in chunk.ranges.iter().enumerate() {
        let end = r
            .end()
            .ok_or_else(|| format!("range {i} overflows the address space"))?;
        if !layout
            .iter()
            .any(|l| r.guest_addr >= l.gpa && end <= l.gpa + l.len)
        {
            return Err(format!(
                "range {i} ({:#x}..{end:#x}) is not inside guest RAM",
                r.guest_addr
            ));
        }
    }
    let ram = machine.memory().ram();
    let zeros = [0u8; PAGE_SIZE];
    let page = PAGE_SIZE as u64;
    for r in &chunk.ranges {
        let first = (r.guest_addr / page) as usize;
        let count = r.page_count() as usize;
        // Inside RAM, so inside `written` (sized to the end of the last RAM range).
        let marks = written
            .get_mut(first..first + count)
            .ok_or("range past RAM")?;
        match r.pages {
            PagesRef::Data(d) => {
                ram.write_slice(d, GuestAddress(r.guest_addr))
                    .map_err(|e| e.to_string())?;
                marks.fill(true);
            }
            PagesRef::Zero(_) => {
                for (i, mark) in marks.iter_mut().enumerate() {
                    if std::mem::take(mark) {
                        let at = r.guest_addr + i as u64 * page;
                        ram.write_slice(&zeros, GuestAddress(at))
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    Ok(())
}
