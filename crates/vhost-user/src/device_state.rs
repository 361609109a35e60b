//! Backend state transfer (DEVICE_STATE: SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE;
//! docs/spec-decisions.md §25): the state is our device context (seed 004, spec-decisions §5) of a
//! stopped backend — features, configuration space, each ring's configuration and vring state,
//! and the blk device's own fields.
//!
//! - SAVE builds the context from the stopped engine without changing it (a failed migration
//!   resumes the source as it was) and a thread writes it to the frontend's pipe and closes it.
//! - LOAD reads the pipe on a thread (the frontend writes only after our reply, so reading in the
//!   message handler would deadlock), bounded in size, decodes and checks the context there;
//!   CHECK_DEVICE_STATE waits for that thread (bounded), has the device validate its own fields,
//!   and only then applies anything. Any failure reaches the frontend as CHECK_DEVICE_STATE's
//!   error value and changes nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use virtio_lm_device::context::{
    decode, encode, DeviceContext, QueueContext, VqConfig, VIRTIO_MSI_NO_VECTOR,
};
use virtio_lm_device::VirtioDevice;
use virtio_lm_queue::RingKind;

use crate::engine::{ring_bits, Engine};
use crate::memory::BackendMemory;
use crate::vring::{decode_base, encode_base};

/// Largest state accepted on LOAD (ours is a few hundred bytes).
pub const MAX_STATE_LEN: u64 = 1 << 20;

/// How long CHECK_DEVICE_STATE waits for the transfer thread: only a frontend that never
/// closes its end of the pipe reaches it.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// DEVICE_STATUS of a saved context: the frontend owns the status; a backend whose features
/// were acked is a started device (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).
const STARTED: u8 = 0x0f;

/// What a loaded context must match on this backend.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    /// Features this backend offers.
    pub offered: u64,
    /// Its queues.
    pub queues: usize,
    /// Its largest ring.
    pub max_queue_size: u16,
}

/// A transfer between SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE.
#[derive(Debug)]
pub struct Transfer {
    done: Receiver<Result<Option<DeviceContext>, String>>,
}

impl Transfer {
    /// SAVE: writes `bytes` to `file` on a thread, then closes it (the frontend reads to EOF).
    pub fn save(bytes: Vec<u8>, mut file: File) -> std::io::Result<Self> {
        Self::spawn("vhost-user-save", move || {
            file.write_all(&bytes)
                .map_err(|e| format!("writing the state: {e}"))?;
            Ok(None)
        })
    }

    /// LOAD: reads `file` to EOF on a thread and decodes and checks the context there.
    pub fn load(file: File, expected: Expected) -> std::io::Result<Self> {
        Self::spawn("vhost-user-load", move || {
            let mut bytes = Vec::new();
            file.take(MAX_STATE_LEN + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading the state: {e}"))?;
            if bytes.len() as u64 > MAX_STATE_LEN {
                return Err(format!("state longer than {MAX_STATE_LEN} bytes"));
            }
            let context = decode(&bytes).map_err(|e| format!("state: {e}"))?;
            check(&context, &expected)?;
            Ok(Some(context))
        })
    }

    fn spawn(
        name: &str,
        work: impl FnOnce() -> Result<Option<DeviceContext>, String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = tx.send(work());
            })?;
        Ok(Self { done })
    }

    /// Waits for the transfer: the loaded context (LOAD) or nothing (SAVE).
    pub fn finish(self) -> Result<Option<DeviceContext>, String> {
        self.done
            .recv_timeout(TRANSFER_TIMEOUT)
            .map_err(|_| "the state transfer did not finish (pipe never closed?)".to_string())?
    }
}

/// The ring format of acked `features`.
fn kind_of(features: u64) -> RingKind {
    if features & ring_bits::RING_PACKED != 0 {
        RingKind::Packed
    } else {
        RingKind::Split
    }
}

/// Checks a decoded context against this backend: the same offered features, acked features it
/// offers, its queue count and sizes, vring states valid for the ring format, nothing in flight.
pub fn check(context: &DeviceContext, expected: &Expected) -> Result<(), String> {
    let word = |words: &[u64]| -> Result<u64, String> {
        match words {
            [first, rest @ ..] if rest.iter().all(|&w| w == 0) => Ok(*first),
            _ => Err("feature words beyond the first are set".into()),
        }
    };
    let offered = word(&context.device_features)?;
    if offered != expected.offered {
        return Err(format!(
            "saved by a backend offering {offered:#x}, this one offers {:#x}",
            expected.offered
        ));
    }
    let acked = word(&context.driver_features)?;
    if acked & !expected.offered != 0 {
        return Err(format!("acked features {acked:#x} were not offered"));
    }
    if context.queues.len() != expected.queues {
        return Err(format!(
            "{} queues saved, this backend has {}",
            context.queues.len(),
            expected.queues
        ));
    }
    let kind = kind_of(acked);
    for (index, q) in context.queues.iter().enumerate() {
        if q.config.size == 0 || q.config.size > expected.max_queue_size {
            return Err(format!("queue {index}: size {}", q.config.size));
        }
        if !q.state.inflight.is_empty() {
            return Err(format!(
                "queue {index}: requests in flight (a stopped backend has drained them)"
            ));
        }
        let base = encode_base(kind, &q.state);
        let round_trip = decode_base(kind, base, q.config.size).map_err(|e| e.to_string())?;
        if round_trip.avail_state != q.state.avail_state
            || round_trip.used_state != q.state.used_state
        {
            return Err(format!("queue {index}: vring state not valid for the ring"));
        }
    }
    Ok(())
}

/// The context of a stopped engine (SAVE); nothing in it changes.
pub(crate) fn snapshot(engine: &Engine, offered: u64) -> Result<Vec<u8>, String> {
    if engine.vrings.iter().any(|v| v.queue.is_some()) {
        return Err("SAVE while rings run: stop them first (GET_VRING_BASE)".into());
    }
    let kind = engine.ring_kind();
    let dev: &dyn VirtioDevice<BackendMemory> = &engine.blk;
    let max = dev.queue_max_sizes().first().copied().unwrap_or(1);
    let mut config = vec![0; dev.config_len()];
    dev.read_config(0, &mut config);
    let mut queues = Vec::with_capacity(engine.vrings.len());
    for vring in &engine.vrings {
        let size = if vring.size == 0 { max } else { vring.size };
        let state = decode_base(kind, vring.base, size).map_err(|e| e.to_string())?;
        let a = vring.addresses;
        queues.push(QueueContext {
            config: VqConfig {
                size,
                msix_vector: VIRTIO_MSI_NO_VECTOR,
                enabled: vring.enabled,
                desc: a.map_or(0, |a| a.desc.0),
                driver: a.map_or(0, |a| a.driver.0),
                device: a.map_or(0, |a| a.device.0),
            },
            state,
        });
    }
    let context = DeviceContext {
        device_features: vec![offered],
        driver_features: vec![engine.features],
        device_status: if engine.features != 0 { STARTED } else { 0 },
        config_generation: 0,
        device_config: config,
        config_msix_vector: VIRTIO_MSI_NO_VECTOR,
        queues,
        device_fields: dev.save_state(),
    };
    encode(&context).map_err(|e| e.to_string())
}

/// Applies a loaded context to a stopped engine (CHECK_DEVICE_STATE after LOAD): the device
/// validates its own fields first; then the vring bases are set and the device state is kept
/// for the start of the first ring (starting resets and activates the device model).
pub(crate) fn apply(engine: &mut Engine, context: DeviceContext) -> Result<(), String> {
    if engine.vrings.iter().any(|v| v.queue.is_some()) {
        return Err("LOAD while rings run".into());
    }
    let log_all = VhostUserVirtioFeatures::LOG_ALL.bits();
    let acked = context.driver_features.first().copied().unwrap_or(0);
    if acked & !log_all != engine.features & !log_all {
        return Err(format!(
            "state saved with features {acked:#x}, this connection acked {:#x}",
            engine.features
        ));
    }
    let dev: &dyn VirtioDevice<BackendMemory> = &engine.blk;
    let validated = dev
        .decode_state(&context.device_fields, &context.device_config)
        .map_err(|e| format!("device state: {e}"))?;
    let kind = kind_of(acked);
    for (vring, q) in engine.vrings.iter_mut().zip(&context.queues) {
        vring.base = encode_base(kind, &q.state);
    }
    engine.pending_state = Some(validated);
    Ok(())
}
