//! The typed messages and the payload codecs of every type but Memory (`memory.rs`) and Config
//! (`config.rs`).

use crate::config::VmConfig;
use crate::function_state::FunctionState;
use crate::header::{MessageType, Phase, MAX_DEVICE_CONTEXT, MAX_TEXT, MAX_VCPU_STATE};
use crate::memory::{self, MemoryChunk};

/// Length of the Start payload: `le32 version; le32 reserved (zero)`. This layout is the same in
/// every protocol version, so that any reader can tell which version a peer speaks.
pub const START_LEN: usize = 8;

/// Length of the CommitAck payload: `le64 restore_us; le64 device_us`.
pub const COMMIT_ACK_LEN: usize = 16;

/// Length of the RoundEnd payload: `le32 round`.
pub const ROUND_END_LEN: usize = 4;

/// Length of the RoundAck payload: `le32 round; le32 reserved (zero); le64 bytes_received`.
pub const ROUND_ACK_LEN: usize = 16;

/// One section of the stream, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Opens each direction: the sender's protocol version (the source's own; the destination
    /// answers with the version it accepted).
    Start {
        /// Protocol version ([`crate::PROTOCOL_VERSION`]).
        version: u32,
    },
    /// The VM configuration.
    Config(VmConfig),
    /// Guest pages.
    Memory(MemoryChunk),
    /// One device's context: seed 004 format, validated by the device layer, opaque here.
    DeviceContext {
        /// Pre-copy (read in Active mode) or final (read in Freeze; replaces the pre-copied one).
        phase: Phase,
        /// The device, as [`crate::DeviceConfig::id`] names it.
        device_id: u32,
        /// The context bytes.
        context: Vec<u8>,
    },
    /// One vCPU's state, in a format the vm layer defines.
    VcpuState {
        /// The vCPU's index.
        vcpu: u32,
        /// Its state bytes.
        state: Vec<u8>,
    },
    /// The source sent everything; the destination validates, loads and answers Ready.
    Complete,
    /// The destination holds a complete, validated guest, paused.
    Ready,
    /// The source hands the guest over; from here it never resumes by itself.
    Commit,
    /// The destination runs the guest; it reports its share of the downtime, so the source's
    /// report has the whole of it (`le64 restore_us; le64 device_us`).
    CommitAck {
        /// Complete received to guest running, microseconds.
        restore_us: u64,
        /// Context writes plus DEV_MODE_SET Active, microseconds.
        device_us: u64,
    },
    /// The sender abandons the migration (only before Commit).
    Cancel {
        /// Why.
        reason: CancelReason,
        /// Details for the operator (UTF-8, at most [`MAX_TEXT`] bytes).
        detail: String,
    },
    /// The sender failed; the peer reports the text and abandons the migration.
    Error {
        /// What failed, naming the section where it applies (UTF-8, at most [`MAX_TEXT`] bytes).
        message: String,
    },
    /// Version 2, source to destination: pre-copy round `round` is all sent; answer RoundAck.
    RoundEnd {
        /// The round that ended.
        round: u32,
    },
    /// Version 2, destination to source: everything up to the RoundEnd of `round` arrived
    /// and was applied. The source measures its transfer rate to this moment, not to the
    /// moment its writes completed (which kernel buffering flatters; spec-decisions §19).
    RoundAck {
        /// The round acknowledged.
        round: u32,
        /// Stream bytes the destination had received when it read the RoundEnd.
        bytes_received: u64,
    },
    /// Under the v1.4 profile, source to destination after a device's final DeviceContext: its
    /// PCI function's own registers, which 1.4's device parts leave to the hypervisor
    /// (spec-decisions §37).
    FunctionState(FunctionState),
}

/// Why a migration was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The operator asked (`cancel` on the control socket).
    Operator,
    /// Pre-copy did not converge before `--timeout` (and `--force` was not given).
    Timeout,
    /// A local failure on the sending side; the detail says what.
    Failure,
}

impl CancelReason {
    fn code(self) -> u32 {
        match self {
            CancelReason::Operator => 1,
            CancelReason::Timeout => 2,
            CancelReason::Failure => 3,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        [
            CancelReason::Operator,
            CancelReason::Timeout,
            CancelReason::Failure,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

impl Message {
    /// The section type this message travels as.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Start { .. } => MessageType::Start,
            Message::Config(_) => MessageType::Config,
            Message::Memory(_) => MessageType::Memory,
            Message::DeviceContext { .. } => MessageType::DeviceContext,
            Message::VcpuState { .. } => MessageType::VcpuState,
            Message::Complete => MessageType::Complete,
            Message::Ready => MessageType::Ready,
            Message::Commit => MessageType::Commit,
            Message::CommitAck { .. } => MessageType::CommitAck,
            Message::Cancel { .. } => MessageType::Cancel,
            Message::Error { .. } => MessageType::Error,
            Message::RoundEnd { .. } => MessageType::RoundEnd,
            Message::RoundAck { .. } => MessageType::RoundAck,
            Message::FunctionState(_) => MessageType::FunctionState,
        }
    }

    /// Header flags of this message.
    pub(crate) fn flags(&self) -> u16 {
        match self {
            Message::Memory(m) => m.phase.flags(),
            Message::DeviceContext { phase, .. } => phase.flags(),
            _ => 0,
        }
    }
}

/// Encodes the payload of every type but Memory (which the writer streams without a copy).
pub(crate) fn encode_small(msg: &Message) -> Result<Vec<u8>, String> {
    let with_id = |id: u32, bytes: &[u8], max: usize, what: &str| {
        if bytes.len() > max {
            return Err(format!("{} bytes of {what}, limit {max}", bytes.len()));
        }
        let mut v = Vec::with_capacity(4 + bytes.len());
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(bytes);
        Ok(v)
    };
    match msg {
        Message::Start { version } => {
            let mut v = version.to_le_bytes().to_vec();
            v.extend_from_slice(&[0; 4]);
            Ok(v)
        }
        Message::Config(c) => c.encode(),
        Message::Memory(_) => Err("Memory is streamed, not encoded whole".into()),
        Message::DeviceContext {
            device_id, context, ..
        } => with_id(*device_id, context, MAX_DEVICE_CONTEXT, "device context"),
        Message::VcpuState { vcpu, state } => with_id(*vcpu, state, MAX_VCPU_STATE, "vCPU state"),
        Message::Complete | Message::Ready | Message::Commit => Ok(Vec::new()),
        Message::CommitAck {
            restore_us,
            device_us,
        } => {
            let mut v = restore_us.to_le_bytes().to_vec();
            v.extend_from_slice(&device_us.to_le_bytes());
            Ok(v)
        }
        Message::Cancel { reason, detail } => {
            with_id(reason.code(), detail.as_bytes(), MAX_TEXT, "text")
        }
        Message::Error { message } => {
            if message.len() > MAX_TEXT {
                return Err(format!("{} bytes of text, limit {MAX_TEXT}", message.len()));
            }
            Ok(message.as_bytes().to_vec())
        }
        Message::RoundEnd { round } => Ok(round.to_le_bytes().to_vec()),
        Message::RoundAck {
            round,
            bytes_received,
        } => {
            let mut v = round.to_le_bytes().to_vec();
            v.extend_from_slice(&[0; 4]);
            v.extend_from_slice(&bytes_received.to_le_bytes());
            Ok(v)
        }
        Message::FunctionState(state) => state.encode(),
    }
}

fn split_id(payload: &[u8]) -> Result<(u32, &[u8]), String> {
    match payload.split_first_chunk::<4>() {
        Some((id, rest)) => Ok((u32::from_le_bytes(*id), rest)),
        None => Err(format!(
            "{} bytes, shorter than its 4-byte id",
            payload.len()
        )),
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| format!("text is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

/// Decodes a payload whose header (type, flags, length bound, crc) was already checked.
pub(crate) fn decode(msg_type: MessageType, flags: u16, payload: &[u8]) -> Result<Message, String> {
    let phase = Phase::from_flags(flags);
    match msg_type {
        MessageType::Start => {
            let Some((version, reserved)) = payload.split_first_chunk::<4>() else {
                return Err(format!("{} bytes, expected {START_LEN}", payload.len()));
            };
            if payload.len() != START_LEN || reserved.iter().any(|&b| b != 0) {
                return Err(format!(
                    "expected {START_LEN} bytes with a zero reserved word, got {:02x?}",
                    payload
                ));
            }
            Ok(Message::Start {
                version: u32::from_le_bytes(*version),
            })
        }
        MessageType::Config => VmConfig::decode(payload).map(Message::Config),
        MessageType::Memory => memory::decode(phase, payload).map(Message::Memory),
        MessageType::DeviceContext => {
            let (device_id, context) = split_id(payload)?;
            Ok(Message::DeviceContext {
                phase,
                device_id,
                context: context.to_vec(),
            })
        }
        MessageType::VcpuState => {
            let (vcpu, state) = split_id(payload)?;
            Ok(Message::VcpuState {
                vcpu,
                state: state.to_vec(),
            })
        }
        MessageType::Complete => Ok(Message::Complete),
        MessageType::Ready => Ok(Message::Ready),
        MessageType::Commit => Ok(Message::Commit),
        MessageType::CommitAck => {
            let Some((restore, device)) = payload.split_first_chunk::<8>() else {
                return Err(format!(
                    "{} bytes, expected {COMMIT_ACK_LEN}",
                    payload.len()
                ));
            };
            let device: [u8; 8] = device
                .try_into()
                .map_err(|_| format!("{} bytes, expected {COMMIT_ACK_LEN}", payload.len()))?;
            Ok(Message::CommitAck {
                restore_us: u64::from_le_bytes(*restore),
                device_us: u64::from_le_bytes(device),
            })
        }
        MessageType::Cancel => {
            let (code, detail) = split_id(payload)?;
            let reason = CancelReason::from_code(code)
                .ok_or_else(|| format!("unknown cancel reason {code}"))?;
            Ok(Message::Cancel {
                reason,
                detail: text(detail)?,
            })
        }
        MessageType::Error => Ok(Message::Error {
            message: text(payload)?,
        }),
        MessageType::RoundEnd => {
            let round: [u8; ROUND_END_LEN] = payload
                .try_into()
                .map_err(|_| format!("{} bytes, expected {ROUND_END_LEN}", payload.len()))?;
            Ok(Message::RoundEnd {
                round: u32::from_le_bytes(round),
            })
        }
        MessageType::RoundAck => {
            let raw: [u8; ROUND_ACK_LEN] = payload
                .try_into()
                .map_err(|_| format!("{} bytes, expected {ROUND_ACK_LEN}", payload.len()))?;
            let (round, rest) = raw.split_at(4);
            let (reserved, bytes) = rest.split_at(4);
            if reserved.iter().any(|&b| b != 0) {
                return Err(format!("reserved word {reserved:02x?} is not zero"));
            }
            // The splits are of a fixed-size array at fixed offsets.
            let round: [u8; 4] = round.try_into().map_err(|_| "round".to_string())?;
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| "bytes".to_string())?;
            Ok(Message::RoundAck {
                round: u32::from_le_bytes(round),
                bytes_received: u64::from_le_bytes(bytes),
            })
        }
        MessageType::FunctionState => FunctionState::decode(payload).map(Message::FunctionState),
    }
}
