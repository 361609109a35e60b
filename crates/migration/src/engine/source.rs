//! The source side of a migration (docs/stream-format.md, "State machines", source): pre-copy
//! rounds until the expected downtime fits, the stop (vCPUs paused, then DEV_MODE_SET Stop and
//! Freeze), the final pages, contexts and vCPU state, and the commit handshake. Before Commit
//! every failure or cancel returns the source to running; after it the source never resumes by
//! itself.

use std::time::{Duration, Instant};

use tracing::{info, info_span, warn};
use virtio_lm_device::QuiesceMode;
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::Profile;
use virtio_lm_vm::{DirtyLog, DirtyRange, Machine, RingFormat};
use vm_memory::{Bytes, GuestAddress};

use super::fault::FaultPoint;
use super::wire::Wire;
use super::{
    Inflight, Link, MigrateOptions, MigrationControl, MigrationError, MigrationReport,
    MigrationState, Outcome, PhaseSpan, Progress, RoundStats, Strategy,
};
use crate::{
    CancelReason, DeviceConfig, MemoryChunk, MemoryRange, MemoryRegion, Message, Pages, Phase,
    VmConfig, MAX_MEMORY_DATA, PROTOCOL_VERSION,
};

/// Most bytes read from guest RAM per Memory call (one section's worth of data).
const READ_CHUNK: u64 = MAX_MEMORY_DATA as u64;

/// Milliseconds between two instants, as a float.
pub(crate) fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// Migrates the running guest of `machine` over `link` (connected to a destination waiting in
/// [`crate::incoming`]). Always returns a report; its `outcome` says how it ended: Completed
/// (the source stays paused: drop the machine), Cancelled or Failed (the source runs again,
/// dirty logging stopped), or Unknown (the link was lost after Commit; the source stays paused).
pub fn migrate<L: Link>(
    machine: &Machine,
    link: L,
    options: &MigrateOptions,
    control: &MigrationControl,
) -> MigrationReport {
    let span = info_span!("migration.source", peer = %link.peer());
    let _enter = span.enter();
    let mut source = Source::new(machine, link, options, control);
    let result = source.run();
    source.finish(result)
}

/// Why the run ended early.
enum Stop {
    /// Before Commit: the source goes back to running.
    Abort(Outcome),
    /// After Commit, no acknowledgement.
    Unknown(String),
}

impl From<MigrationError> for Stop {
    fn from(e: MigrationError) -> Self {
        Stop::Abort(match e {
            MigrationError::Cancelled(why) => Outcome::Cancelled(why),
            e => Outcome::Failed(e.to_string()),
        })
    }
}

struct Source<'a, L: Link> {
    machine: &'a Machine,
    wire: Wire<L>,
    options: &'a MigrateOptions,
    control: &'a MigrationControl,
    start: Instant,
    report: MigrationReport,
    progress: Progress,
    /// Set once the vCPUs are paused (the cancel path must resume them).
    paused_at: Option<Instant>,
    /// Set once Commit is on the wire: no way back.
    committed: bool,
    /// Cumulative time spent writing memory, for the transfer rate.
    send_time: Duration,
    send_bytes: u64,
    /// Pages read from guest RAM on their way to the wire (kept: allocating and zeroing it per
    /// round would cost as much as the copy).
    buf: Vec<u8>,
    /// The destination speaks version 2: each pre-copy round ends with RoundEnd and waits for
    /// its RoundAck (spec-decisions §19).
    round_acks: bool,
}

impl<'a, L: Link> Source<'a, L> {
    fn new(
        machine: &'a Machine,
        link: L,
        options: &'a MigrateOptions,
        control: &'a MigrationControl,
    ) -> Self {
        // Set before the link is split: a lost peer must end the migration, not hang it.
        let timeout = Some(options.link_timeout);
        if let Err(e) = link.set_timeouts(timeout).and_then(|()| link.low_latency()) {
            warn!("cannot set up the link: {e}");
        }
        let report = MigrationReport {
            strategy: options.strategy.name(),
            ring: match machine.options().ring {
                RingFormat::Split => "split",
                RingFormat::Packed => "packed",
            }
            .into(),
            inflight: match options.inflight {
                Inflight::Drain => "drain",
                Inflight::Transfer => "transfer",
            }
            .into(),
            profile: machine.profile().name().into(),
            memory_bytes: machine.memory().size(),
            ..MigrationReport::default()
        };
        let mut wire = Wire::new(link, options.max_bandwidth);
        wire.tx.get_mut().cancel = options.max_bandwidth.map(|_| control.clone());
        Source {
            machine,
            wire,
            options,
            control,
            start: Instant::now(),
            report,
            progress: Progress::default(),
            paused_at: None,
            committed: false,
            send_time: Duration::ZERO,
            send_bytes: 0,
            buf: Vec::new(),
            round_acks: false,
        }
    }

    fn now_ms(&self) -> f64 {
        ms(self.start, Instant::now())
    }

    fn publish(&mut self, state: MigrationState) {
        self.progress.state = state;
        self.progress.bytes_sent = self.wire.tx.bytes_written();
        self.progress.elapsed_ms = self.now_ms();
        self.control.publish(&self.progress);
    }

    fn phase(&mut self, name: &'static str, start: Instant, end: Instant) {
        self.report.phases.push(PhaseSpan {
            name: name.into(),
            start_ms: ms(self.start, start),
            end_ms: ms(self.start, end),
        });
    }

    fn check_cancel(&self) -> Result<(), MigrationError> {
        if self.control.is_cancelled() {
            return Err(MigrationError::Cancelled("by the operator".into()));
        }
        Ok(())
    }

    fn send(&mut self, msg: &Message) -> Result<(), MigrationError> {
        self.wire.tx.write(msg)?;
        Ok(())
    }

    fn run(&mut self) -> Result<(), Stop> {
        self.publish(MigrationState::Setup);
        self.check_strategy()?;
        self.machine.set_inflight(match self.options.inflight {
            Inflight::Drain => QuiesceMode::Drain,
            Inflight::Transfer => QuiesceMode::RecordInflight,
        });
        self.setup()?;
        self.control.reached(FaultPoint::AfterStart)?;
        let mut log = self
            .machine
            .memory()
            .start_dirty_log()
            .map_err(|e| MigrationError::Machine(e.into()))?;
        let result = self.transfer(&mut log);
        // Logging ends with the transfer whatever happened (a cancel included).
        log.stop();
        result?;
        self.commit()
    }

    /// The status strategy's preconditions, refused at Start (spec-decisions §15).
    fn check_strategy(&self) -> Result<(), MigrationError> {
        super::v14::check_source(self.machine, self.options)?;
        let Strategy::Status(bit) = self.options.strategy else {
            return Ok(());
        };
        if self.options.inflight == Inflight::Transfer {
            return Err(MigrationError::Incompatible(
                "--inflight transfer needs --strategy admin: the status strategy has no \
                 in-band path for in-flight chains (its stop always drains them)"
                    .into(),
            ));
        }
        self.machine
            .check_inband(bit)
            .map_err(|e| MigrationError::Incompatible(e.to_string()))
    }

    fn setup(&mut self) -> Result<(), MigrationError> {
        let _span = info_span!("setup").entered();
        self.send(&Message::Start {
            version: PROTOCOL_VERSION,
        })?;
        self.wire.tx.flush()?;
        match self.wire.rx.read_message()? {
            Message::Start { version } => self.round_acks = version >= 2,
            other => return Err(unexpected("Start", other)),
        }
        let config = vm_config(self.machine);
        self.send(&Message::Config(config))
    }

    /// Pre-copy, stop, and the final sections up to Complete.
    fn transfer(&mut self, log: &mut DirtyLog) -> Result<(), MigrationError> {
        let mut pending = self.precopy(log)?;
        self.switchover(log, &mut pending)
    }

    fn precopy(&mut self, log: &mut DirtyLog) -> Result<Vec<DirtyRange>, MigrationError> {
        let span = info_span!("precopy");
        let _enter = span.enter();
        let begin = Instant::now();
        self.publish(MigrationState::PreCopy);
        self.progress.bytes_remaining = self.machine.memory().size();
        let data = self
            .machine
            .memory()
            .data_ranges()
            .map_err(|e| MigrationError::Machine(e.into()))?;
        self.send_zero_holes(&data)?;
        self.send_round(0, Phase::PreCopy, &data)?;
        // Device pre-copy: an Active-mode read, for the destination's early compatibility check
        // (admin only: the status strategy has no owner to read through while running).
        let early = match self.options.strategy {
            Strategy::Admin => self.machine.read_contexts()?,
            Strategy::Status(_) => Vec::new(),
        };
        for (member, context) in early {
            self.send(&Message::DeviceContext {
                phase: Phase::PreCopy,
                device_id: member as u32,
                context,
            })?;
        }
        self.control.reached(FaultPoint::AfterDevicePrecopy)?;
        let mut round = 0u32;
        // The first harvest covers everything since logging began, just before round 0.
        let mut last_harvest = begin;
        let pending = loop {
            self.check_cancel()?;
            let dirty = log.harvest();
            let now = Instant::now();
            let remaining = virtio_lm_vm::dirty::total_bytes(&dirty);
            let window = now.saturating_duration_since(last_harvest).as_secs_f64();
            last_harvest = now;
            self.progress.dirty_rate = if window > 0.0 {
                (remaining as f64 / window) as u64
            } else {
                0
            };
            if let Some(r) = self.report.rounds.last_mut() {
                r.dirty_rate = self.progress.dirty_rate;
            }
            self.progress.bytes_remaining = remaining;
            self.progress.expected_downtime_ms = self.expected_downtime_ms(remaining);
            self.publish(MigrationState::PreCopy);
            if self.progress.expected_downtime_ms <= self.options.downtime_ms as f64 {
                break dirty;
            }
            if begin.elapsed() >= self.options.timeout {
                if self.options.force {
                    info!(round, "pre-copy timed out; forcing convergence");
                    break dirty;
                }
                return Err(MigrationError::Cancelled(format!(
                    "pre-copy did not converge in {:?} (expected downtime {:.1} ms, limit {} ms)",
                    self.options.timeout,
                    self.progress.expected_downtime_ms,
                    self.options.downtime_ms
                )));
            }
            round += 1;
            self.send_round(round, Phase::PreCopy, &dirty)?;
        };
        self.report.precopy_rounds = round + 1;
        self.phase("precopy", begin, Instant::now());
        Ok(pending)
    }

    /// Round 0's zero markers for every part of RAM outside `data` (never written: not read).
    fn send_zero_holes(&mut self, data: &[DirtyRange]) -> Result<(), MigrationError> {
        let page = virtio_lm_vm::PAGE_SIZE;
        let mut holes = Vec::new();
        for r in self.machine.memory().layout() {
            let mut at = r.gpa;
            let end = r.gpa + r.len;
            for d in data.iter().filter(|d| d.gpa >= r.gpa && d.gpa < end) {
                if d.gpa > at {
                    holes.push((at, d.gpa - at));
                }
                at = at.max(d.end());
            }
            if at < end {
                holes.push((at, end - at));
            }
        }
        for chunk in holes.chunks(crate::MAX_MEMORY_RANGES) {
            let mut ranges = Vec::new();
            for &(gpa, len) in chunk {
                let pages = len / page;
                // A zero run counts its pages in a u32: a larger hole takes several ranges.
                let mut done = 0u64;
                while done < pages {
                    let n = (pages - done).min(u64::from(u32::MAX));
                    ranges.push(MemoryRange {
                        guest_addr: gpa + done * page,
                        pages: Pages::Zero(n as u32),
                    });
                    done += n;
                }
                self.progress.bytes_remaining = self.progress.bytes_remaining.saturating_sub(len);
            }
            for ranges in ranges.chunks(crate::MAX_MEMORY_RANGES) {
                self.send(&Message::Memory(MemoryChunk {
                    round: 0,
                    phase: Phase::PreCopy,
                    ranges: ranges.to_vec(),
                }))?;
            }
        }
        Ok(())
    }

    /// Remaining bytes at the transfer rate seen so far.
    fn expected_downtime_ms(&self, remaining: u64) -> f64 {
        let secs = self.send_time.as_secs_f64();
        if self.send_bytes == 0 || secs <= 0.0 {
            return f64::INFINITY;
        }
        let rate = self.send_bytes as f64 / secs;
        remaining as f64 / rate * 1e3
    }

    /// Sends the pages of `ranges` as round `round`, reading them from guest RAM now.
    fn send_round(
        &mut self,
        round: u32,
        phase: Phase,
        ranges: &[DirtyRange],
    ) -> Result<(), MigrationError> {
        let begin = Instant::now();
        let bytes_before = self.wire.tx.bytes_written();
        self.progress.round = round;
        let ram = self.machine.memory().ram().clone();
        let mut buf = std::mem::take(&mut self.buf);
        let mut pages = 0u64;
        let point = match (phase, round) {
            (Phase::Final, _) => FaultPoint::MidFinalMemory,
            (_, 0) => FaultPoint::MidRound0,
            _ => FaultPoint::MidDirtyRound,
        };
        let mut step = Some(point);
        for r in ranges {
            let mut at = 0u64;
            while at < r.len {
                if phase == Phase::PreCopy {
                    self.check_cancel()?;
                }
                let n = (r.len - at).min(READ_CHUNK);
                if buf.len() < n as usize {
                    buf = vec![0; n as usize];
                }
                let chunk = &mut buf[..n as usize];
                ram.read_slice(chunk, GuestAddress(r.gpa + at))
                    .map_err(|e| {
                        MigrationError::Machine(virtio_lm_vm::MachineError::Device(format!(
                            "reading guest RAM at {:#x}: {e}",
                            r.gpa + at
                        )))
                    })?;
                self.wire.tx.write_memory(round, phase, r.gpa + at, chunk)?;
                if let Some(point) = step.take() {
                    self.control.reached(point)?;
                }
                at += n;
                pages += n / virtio_lm_vm::PAGE_SIZE;
                if phase == Phase::PreCopy {
                    self.progress.bytes_remaining = self.progress.bytes_remaining.saturating_sub(n);
                    self.publish(MigrationState::PreCopy);
                }
            }
        }
        self.buf = buf;
        if phase == Phase::Final {
            if let Some(point) = step {
                self.control.reached(point)?;
            }
        }
        if phase == Phase::PreCopy {
            self.await_round_ack(round)?;
        }
        let end = Instant::now();
        let bytes = self.wire.tx.bytes_written() - bytes_before;
        self.send_time += end - begin;
        self.send_bytes += bytes;
        let secs = (end - begin).as_secs_f64();
        let transfer_rate = if secs > 0.0 {
            (bytes as f64 / secs) as u64
        } else {
            0
        };
        self.progress.transfer_rate = transfer_rate;
        self.progress.rounds_done += 1;
        self.report.rounds.push(RoundStats {
            round,
            final_round: phase == Phase::Final,
            start_ms: ms(self.start, begin),
            end_ms: ms(self.start, end),
            pages,
            bytes,
            dirty_rate: 0,
            transfer_rate,
        });
        Ok(())
    }

    /// Ends pre-copy round `round` and waits for the destination to acknowledge it: the round
    /// lasts until then, so its rate is what the destination took in, not what the kernel
    /// buffered (spec-decisions §19). A version 1 destination has no acks: the rate is then
    /// measured to the last write, as that version did.
    fn await_round_ack(&mut self, round: u32) -> Result<(), MigrationError> {
        if !self.round_acks {
            return Ok(());
        }
        self.send(&Message::RoundEnd { round })?;
        self.wire.tx.flush()?;
        match self.wire.rx.read_message()? {
            Message::RoundAck { round: acked, .. } if acked == round => Ok(()),
            Message::RoundAck { round: acked, .. } => Err(MigrationError::Protocol {
                expected: "RoundAck of the round just ended",
                got: format!("RoundAck of round {acked}, not {round}"),
            }),
            other => Err(unexpected("RoundAck", other)),
        }
    }

    fn switchover(
        &mut self,
        log: &mut DirtyLog,
        pending: &mut Vec<DirtyRange>,
    ) -> Result<(), MigrationError> {
        self.check_cancel()?;
        let stop_span = info_span!("stop").entered();
        let paused_at = Instant::now();
        self.machine.pause()?;
        self.paused_at = Some(paused_at);
        let vm_stopped = Instant::now();
        self.control.reached(FaultPoint::AfterVcpuPause)?;
        match self.options.strategy {
            // Every member Stop, then every member Freeze: no member is frozen while another
            // still processes requests that may touch it.
            // Under v1.4 Stop is DEV_MODE_SET STOPPED, the one stopped mode 1.4 has: no
            // Freeze follows (spec-decisions §36).
            Strategy::Admin => {
                self.machine.set_members_mode(DevMode::Stop)?;
                self.control.reached(FaultPoint::AfterStop)?;
                if self.machine.profile() == Profile::Seeds {
                    self.machine.set_members_mode(DevMode::Freeze)?;
                }
                self.control.reached(FaultPoint::AfterFreeze)?;
            }
            Strategy::Status(bit) => {
                self.machine.stop_inband(bit)?;
                self.control.reached(FaultPoint::AfterStop)?;
            }
        }
        let devices_stopped = Instant::now();
        drop(stop_span);
        self.publish(MigrationState::Stopped);
        self.phase("src-vm-stop", paused_at, vm_stopped);
        self.phase("src-device-stop", vm_stopped, devices_stopped);

        let memory_span = info_span!("final-memory").entered();
        pending.extend(log.harvest());
        let round = self.report.precopy_rounds;
        self.send_round(round, Phase::Final, pending)?;
        let memory_sent = Instant::now();
        drop(memory_span);
        self.phase("final-memory", devices_stopped, memory_sent);

        let device_span = info_span!("device-state").entered();
        let contexts = match self.options.strategy {
            Strategy::Admin => self.machine.read_final_contexts()?,
            Strategy::Status(_) => self.machine.read_inband()?,
        };
        let contexts_read = Instant::now();
        let mut step = Some(FaultPoint::MidFinalContext);
        for (member, context) in contexts {
            self.report.device_context_bytes += context.len() as u64;
            self.send(&Message::DeviceContext {
                phase: Phase::Final,
                device_id: member as u32,
                context,
            })?;
            if let Some(point) = step.take() {
                self.control.reached(point)?;
            }
        }
        // 1.4's parts leave the function's own registers to the hypervisor (spec-decisions
        // §37): they follow the device state in a section of their own.
        if self.machine.profile() == Profile::V1_4 {
            for (member, regs) in self.machine.function_registers()? {
                let state = crate::FunctionState::of(member as u32, &regs);
                self.send(&Message::FunctionState(state))?;
            }
        }
        let state = self.machine.vcpu_state()?.encode().map_err(|e| {
            MigrationError::Machine(virtio_lm_vm::MachineError::Vcpu(e.to_string()))
        })?;
        self.send(&Message::VcpuState { vcpu: 0, state })?;
        self.send(&Message::Complete)?;
        self.wire.tx.flush()?;
        self.control.reached(FaultPoint::AfterComplete)?;
        let complete_sent = Instant::now();
        drop(device_span);
        self.phase("device-state", memory_sent, complete_sent);
        self.report.stop_ms = ms(paused_at, devices_stopped);
        self.report.final_memory_ms = ms(devices_stopped, memory_sent);
        self.report.device_state_ms = ms(memory_sent, complete_sent);
        // The source's device part: Stop + Freeze + the final context reads.
        self.report.device_downtime_ms =
            ms(vm_stopped, devices_stopped) + ms(memory_sent, contexts_read);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Stop> {
        let _span = info_span!("commit").entered();
        let complete_sent = Instant::now();
        self.publish(MigrationState::AwaitingReady);
        match self.wire.rx.read_message().map_err(MigrationError::from)? {
            Message::Ready => {}
            Message::Error { message } => return Err(MigrationError::Peer(message).into()),
            Message::Cancel { detail, .. } => {
                return Err(
                    MigrationError::Cancelled(format!("by the destination: {detail}")).into(),
                )
            }
            other => return Err(unexpected("Ready", other).into()),
        }
        let ready = Instant::now();
        self.phase("dst-load", complete_sent, ready);
        // The last moment a cancel is honoured.
        self.wire.tx.get_mut().cancel = None;
        self.control.reached(FaultPoint::AfterReady)?;
        self.committed = true;
        self.publish(MigrationState::Committing);
        let sent = self
            .wire
            .tx
            .write(&Message::Commit)
            .and_then(|()| self.wire.tx.flush());
        if let Err(e) = sent {
            return Err(Stop::Unknown(format!("Commit not sent: {e}")));
        }
        if let Err(e) = self.control.reached(FaultPoint::AfterCommit) {
            self.wire.close();
            return Err(Stop::Unknown(format!("no CommitAck: {e}")));
        }
        let ack = match self.wire.rx.read_message() {
            Ok(Message::CommitAck {
                restore_us,
                device_us,
            }) => (restore_us, device_us),
            Ok(other) => return Err(Stop::Unknown(format!("expected CommitAck, got {other:?}"))),
            Err(e) => return Err(Stop::Unknown(format!("no CommitAck: {e}"))),
        };
        let acked = Instant::now();
        self.report.restore_ms = ms(complete_sent, acked);
        self.report.device_downtime_ms += ack.1 as f64 / 1e3;
        if let Some(paused_at) = self.paused_at {
            self.report.downtime_ms = ms(paused_at, acked);
        }
        info!(
            restore_us = ack.0,
            device_us = ack.1,
            "the destination runs the guest"
        );
        self.phase("commit", ready, acked);
        Ok(())
    }

    fn finish(mut self, result: Result<(), Stop>) -> MigrationReport {
        let outcome = match result {
            Ok(()) => {
                self.publish(MigrationState::Completed);
                Outcome::Completed
            }
            Err(Stop::Unknown(why)) => {
                warn!("link lost after Commit ({why}); the source stays paused");
                self.publish(MigrationState::Unknown);
                Outcome::Unknown
            }
            // A paced write ended by a cancel shows as a write error: it was the cancel.
            Err(Stop::Abort(Outcome::Failed(_))) if self.control.is_cancelled() => {
                self.abort(Outcome::Cancelled("by the operator".into()))
            }
            Err(Stop::Abort(Outcome::Failed(why))) => {
                let why = match self.peer_error() {
                    Some(theirs) => format!("{why} (the destination: {theirs})"),
                    None => why,
                };
                self.abort(Outcome::Failed(why))
            }
            Err(Stop::Abort(outcome)) => self.abort(outcome),
        };
        self.report.total_ms = self.now_ms();
        self.report.bytes_sent = self.wire.tx.bytes_written();
        self.report.result = outcome.result();
        self.report.outcome = outcome;
        self.report.clone()
    }

    /// After a failed write: the destination usually refused something and said why before it
    /// closed; read that, briefly, if it is there.
    fn peer_error(&mut self) -> Option<String> {
        let link = self.wire.link.clone();
        link.set_timeouts(Some(Duration::from_secs(2))).ok()?;
        for _ in 0..4 {
            match self.wire.rx.read_message() {
                Ok(Message::Error { message }) => return Some(message),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Before Commit: tell the peer if the link lives, then run again here.
    fn abort(&mut self, outcome: Outcome) -> Outcome {
        debug_assert!(!self.committed);
        let msg = match &outcome {
            Outcome::Cancelled(why) => Message::Cancel {
                reason: if self.control.is_cancelled() {
                    CancelReason::Operator
                } else {
                    CancelReason::Timeout
                },
                detail: truncate(why),
            },
            other => Message::Cancel {
                reason: CancelReason::Failure,
                detail: truncate(&other.result()),
            },
        };
        // The link may be gone already: nothing more to do about it then.
        let _ = self.wire.tx.write(&msg).and_then(|()| self.wire.tx.flush());
        self.wire.close();
        let mut outcome = outcome;
        // Whatever step it ended at, the owner keeps nothing for this migration (v1.4: the GET
        // objects, also when no vCPU was paused yet).
        if self.options.strategy == Strategy::Admin {
            if let Err(e) = self.machine.end_device_reads() {
                warn!("releasing the device reads: {e}");
            }
        }
        if self.paused_at.is_some() {
            let back = match self.options.strategy {
                Strategy::Admin => self.machine.reactivate(),
                Strategy::Status(bit) => self.machine.resume_inband(bit),
            };
            if let Err(e) = back {
                outcome = Outcome::Failed(format!(
                    "{}; and the source could not run again: {e}",
                    outcome.result()
                ));
            }
        }
        warn!(result = %outcome.result(), "migration abandoned; the source runs");
        self.publish(match outcome {
            Outcome::Cancelled(_) => MigrationState::Cancelled,
            _ => MigrationState::Failed,
        });
        outcome
    }
}

/// `s` cut to what a Cancel or Error section carries, on a character boundary.
pub(crate) fn truncate(s: &str) -> String {
    let mut end = s.len().min(crate::MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn unexpected(expected: &'static str, got: Message) -> MigrationError {
    match got {
        Message::Error { message } => MigrationError::Peer(message),
        Message::Cancel { detail, .. } => {
            MigrationError::Cancelled(format!("by the peer: {detail}"))
        }
        other => MigrationError::Protocol {
            expected,
            got: format!("{:?}", other.msg_type()),
        },
    }
}

/// The Config section describing `machine` (what a destination checks against its own).
pub fn vm_config(machine: &Machine) -> VmConfig {
    VmConfig {
        memory: machine
            .memory()
            .layout()
            .iter()
            .map(|r| MemoryRegion {
                guest_addr: r.gpa,
                size: r.len,
            })
            .collect(),
        profile: machine.profile(),
        devices: machine
            .member_info()
            .into_iter()
            .map(|m| DeviceConfig {
                id: m.member as u32,
                device_type: m.device_type,
                negotiated_features: m.driver_features,
                num_queues: m.num_queues,
                config_space: m.config_space,
            })
            .collect(),
    }
}
