//! Replaying the control-queue shadow into a destination device through its own control queue
//! (spec-decisions §21), before the guest resumes.
//!
//! The guest's control queue arrives idle (the status strategy drains it), so the hypervisor
//! rewinds that queue's state by the replayed chains, writes its commands into the ring slots
//! just behind where the guest's driver stands, and lets the device run them at DRIVER_OK: the
//! device ends exactly where the guest left the queue, and the guest, whose vCPUs are still
//! paused, never sees them (every byte borrowed is put back). QEMU instead gives the device a
//! shadow ring in memory of its own; this machine's devices see only guest RAM, so the
//! hypervisor borrows guest bytes while the vCPUs are paused.

use std::time::{Duration, Instant};

use virtio_lm_device::context::VqConfig;
use virtio_lm_devices::net::config::ctrl;
use virtio_lm_queue::QueueState;
use vm_memory::{Bytes, GuestAddress};

use crate::ctrl_shadow::Command;
use crate::GuestRam;

/// Where the commands' bytes go: the first MiB, which the guest's layout leaves unused.
const SCRATCH: u64 = 0;
/// At most this many bytes of commands (far above a full MAC table and the modes).
const SCRATCH_LEN: usize = 64 * 1024;
/// The longest wait for the device to acknowledge the replayed commands (only a hang takes it).
const ACK_DEADLINE: Duration = Duration::from_secs(60);
/// Not yet acknowledged: neither OK nor ERR.
const PENDING: u8 = 0xff;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const PACKED_F_AVAIL: u16 = 1 << 7;
const PACKED_F_USED: u16 = 1 << 15;

/// A replay prepared in the destination's memory, waiting for DRIVER_OK.
#[derive(Debug)]
pub(crate) struct CtrlReplay {
    /// The control queue's index (to notify it).
    pub(crate) queue: u16,
    commands: Vec<Command>,
    /// Each command's acknowledgement byte.
    acks: Vec<u64>,
    /// Every byte range written, with what it held before, to put back.
    saved: Vec<(u64, Vec<u8>)>,
}

fn io(e: impl std::fmt::Display) -> String {
    format!("control-queue replay: {e}")
}

impl CtrlReplay {
    /// Writes `commands` into the idle control queue `queue` (configured as `config`, standing
    /// at `state`) and returns the replay and the rewound state to write before DRIVER_OK.
    pub(crate) fn prepare(
        ram: &GuestRam,
        queue: u16,
        config: &VqConfig,
        state: &QueueState,
        packed: bool,
        commands: Vec<Command>,
    ) -> Result<(Self, QueueState), String> {
        let chains = commands.len();
        if 2 * chains > usize::from(config.size) {
            return Err(io(format!(
                "{chains} commands to replay, the control queue holds {} chains",
                config.size / 2
            )));
        }
        let mut replay = Self {
            queue,
            commands,
            acks: Vec::new(),
            saved: Vec::new(),
        };
        // The commands and their acknowledgement bytes in the scratch area.
        let mut at = SCRATCH;
        let mut buffers = Vec::new();
        for (class, cmd, data) in replay.commands.clone() {
            let mut bytes = vec![class, cmd];
            bytes.extend_from_slice(&data);
            let ack = at + bytes.len() as u64;
            if ack + 1 > SCRATCH + SCRATCH_LEN as u64 {
                return Err(io("the commands do not fit the scratch area"));
            }
            replay.write(ram, at, &bytes)?;
            replay.write(ram, ack, &[PENDING])?;
            buffers.push((at, bytes.len() as u32, ack));
            replay.acks.push(ack);
            at = ack + 1;
        }
        let rewound = if packed {
            replay.packed(ram, config, state, &buffers)?
        } else {
            replay.split(ram, config, state, &buffers)?
        };
        Ok((replay, rewound))
    }

    fn write(&mut self, ram: &GuestRam, at: u64, bytes: &[u8]) -> Result<(), String> {
        let mut old = vec![0u8; bytes.len()];
        ram.read_slice(&mut old, GuestAddress(at)).map_err(io)?;
        // The first save of a range is what the guest had; later ones are ours.
        self.saved.push((at, old));
        ram.write_slice(bytes, GuestAddress(at)).map_err(io)
    }

    fn save(&mut self, ram: &GuestRam, at: u64, len: usize) -> Result<(), String> {
        let mut old = vec![0u8; len];
        ram.read_slice(&mut old, GuestAddress(at)).map_err(io)?;
        self.saved.push((at, old));
        Ok(())
    }

    /// Split ring: two descriptors a command (readable command, writable ack), heads in the
    /// available-ring slots behind the guest's index, `last_avail` and the used index rewound.
    fn split(
        &mut self,
        ram: &GuestRam,
        config: &VqConfig,
        state: &QueueState,
        buffers: &[(u64, u32, u64)],
    ) -> Result<QueueState, String> {
        let size = u64::from(config.size);
        let n = buffers.len() as u16;
        let start = state.avail_state.wrapping_sub(n);
        for (i, &(addr, len, ack)) in (0u16..).zip(buffers) {
            let head = 2 * i;
            let desc = |d: u16| config.desc + 16 * u64::from(d);
            self.write(
                ram,
                desc(head),
                &split_desc(addr, len, DESC_F_NEXT, head + 1),
            )?;
            self.write(ram, desc(head + 1), &split_desc(ack, 1, DESC_F_WRITE, 0))?;
            let slot = u64::from(start.wrapping_add(i)) % size;
            self.write(ram, config.driver + 4 + 2 * slot, &head.to_le_bytes())?;
            // The device writes these used elements and, with EVENT_IDX, avail_event.
            self.save(ram, config.device + 4 + 8 * slot, 8)?;
        }
        self.save(ram, config.device + 4 + 8 * size, 2)?;
        self.write(ram, config.device + 2, &start.to_le_bytes())?;
        Ok(QueueState {
            avail_state: start,
            used_state: 0,
            notification_owed: false,
            inflight: Vec::new(),
        })
    }

    /// Packed ring: the chains in the descriptor slots behind the guest's position, marked
    /// available in the wrap they had there; both positions rewound.
    fn packed(
        &mut self,
        ram: &GuestRam,
        config: &VqConfig,
        state: &QueueState,
        buffers: &[(u64, u32, u64)],
    ) -> Result<QueueState, String> {
        let size = i32::from(config.size);
        let index = i32::from(state.avail_state & 0x7fff);
        let mut wrap = state.avail_state & 0x8000 != 0;
        let mut slot = index - 2 * buffers.len() as i32;
        if slot < 0 {
            slot += size;
            wrap = !wrap;
        }
        let rewound = slot as u16 | (u16::from(wrap) << 15);
        for (id, &(addr, len, ack)) in (0u16..).zip(buffers) {
            for (addr, len, flags) in [(addr, len, DESC_F_NEXT), (ack, 1, DESC_F_WRITE)] {
                let marks = if wrap { PACKED_F_AVAIL } else { PACKED_F_USED };
                let at = config.desc + 16 * slot as u64;
                self.write(ram, at, &packed_desc(addr, len, id, flags | marks))?;
                slot += 1;
                if slot == size {
                    slot = 0;
                    wrap = !wrap;
                }
            }
        }
        // The device's event suppression structure.
        self.save(ram, config.device, 4)?;
        Ok(QueueState {
            avail_state: rewound,
            used_state: rewound,
            notification_owed: false,
            inflight: Vec::new(),
        })
    }

    /// After DRIVER_OK (and a notification of [`Self::queue`]): waits for every command's
    /// acknowledgement, then puts every borrowed byte back. An ERR is an error: the
    /// destination device refused state the source device had accepted.
    pub(crate) fn finish(self, ram: &GuestRam) -> Result<(), String> {
        let start = Instant::now();
        let acks = loop {
            let mut acks = Vec::with_capacity(self.acks.len());
            for &at in &self.acks {
                let mut b = [PENDING];
                ram.read_slice(&mut b, GuestAddress(at)).map_err(io)?;
                acks.push(b[0]);
            }
            if acks.iter().all(|&a| a != PENDING) {
                break acks;
            }
            if start.elapsed() > ACK_DEADLINE {
                return Err(io("the device did not acknowledge the commands"));
            }
            std::thread::yield_now();
        };
        for (at, old) in self.saved.iter().rev() {
            ram.write_slice(old, GuestAddress(*at)).map_err(io)?;
        }
        for ((class, cmd, _), ack) in self.commands.iter().zip(acks) {
            if ack != ctrl::OK {
                return Err(io(format!("class {class} command {cmd} answered {ack}")));
            }
        }
        Ok(())
    }
}

fn split_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..].copy_from_slice(&next.to_le_bytes());
    d
}

fn packed_desc(addr: u64, len: u32, id: u16, flags: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&id.to_le_bytes());
    d[14..].copy_from_slice(&flags.to_le_bytes());
    d
}
