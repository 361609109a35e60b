//! Rigs of the device-context tests: [`AdoptingDevice`] (a [`SlowDevice`] that takes over
//! in-flight chains and keeps a device-specific state), source/destination cores on shared
//! guest memory, and field-level editing of encoded contexts.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::VecDeque;

use virtio_lm_queue::{RingDriver, RingKind, UsedBuffer};
use virtio_lm_spec::context::{FieldType, FIELD_FLAG_OPTIONAL};
use virtio_lm_spec::DeviceStatus;

use vm_memory::GuestMemory;

use super::devices::{SlowDevice, ENTROPY_DEVICE_TYPE};
use super::driver::{checksum, CoreDriver, Mem, QUEUE_BASE};
use crate::context::{parse_fields, persist, ContextWriter, DeviceContext, DeviceField, Persist};
use crate::{
    ContextError, CoreOptions, DeviceCore, DeviceError, Handover, InterruptCounter, QueueAccess,
    Quiesce, QuiesceMode, VirtioDevice,
};

/// Device-specific field of [`AdoptingDevice`]: `u8 mode` (a blk-range type, as a test device
/// type has no range of its own).
pub const MODE_FIELD: FieldType = FieldType(0x0201);

/// Bytes of [`AdoptingDevice`]'s configuration space (byte `i` reads `i`).
pub const ADOPTING_CONFIG_LEN: usize = 4;

/// A [`SlowDevice`] (requests held until `release`) that takes over the in-flight chains the
/// core hands it when a queue starts, so each completes exactly once, and keeps a device-specific `mode` byte
/// (0–3) saved as [`MODE_FIELD`]. Its configuration space is 4 read-only bytes.
pub struct AdoptingDevice {
    /// Requests in process (shared with the inner [`SlowDevice`]).
    pub held: Arc<Mutex<VecDeque<(u16, u32)>>>,
    /// While clear, nothing completes.
    pub release: Arc<AtomicBool>,
    /// The device-specific state.
    pub mode: Arc<AtomicU8>,
    slow: SlowDevice,
}

impl AdoptingDevice {
    /// Device id of the test device (a value no virtio device type uses).
    pub const DEVICE_TYPE: u32 = 0xfffe;

    /// A device whose requests complete as soon as they may if `release`.
    pub fn new(release: bool) -> Self {
        let slow = SlowDevice::new().adopting();
        slow.release.store(release, Ordering::SeqCst);
        Self {
            held: slow.held.clone(),
            release: slow.release.clone(),
            mode: Arc::default(),
            slow,
        }
    }
}

/// `mode` travels as the typed state; missing means 0.
impl Persist for AdoptingDevice {
    type State = u8;

    fn save(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }

    fn encode(mode: &u8) -> Vec<DeviceField> {
        vec![DeviceField::new(MODE_FIELD, vec![*mode])]
    }

    fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<u8, DeviceError> {
        let mut mode = None;
        for f in fields {
            match (f.field_type, f.value.as_slice()) {
                (MODE_FIELD, [m]) if *m <= 3 => mode = Some(*m),
                (MODE_FIELD, _) => return Err(DeviceError::BadState("bad mode")),
                _ if f.flags & FIELD_FLAG_OPTIONAL != 0 => {}
                _ => return Err(DeviceError::BadState("unknown mandatory field")),
            }
        }
        let mut own = [0; ADOPTING_CONFIG_LEN];
        VirtioDevice::<Mem>::read_config(self, 0, &mut own);
        persist::check_read_only_config(&own, config)?;
        Ok(mode.unwrap_or(0))
    }

    fn restore(&mut self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl VirtioDevice<Mem> for AdoptingDevice {
    fn device_type(&self) -> u32 {
        Self::DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        VirtioDevice::<Mem>::queue_max_sizes(&self.slow)
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset + i) as u8;
        }
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, Mem>,
    ) -> Result<(), DeviceError> {
        self.slow.process_queue(index, queue)
    }

    fn adopt_inflight(&mut self, handover: Handover<'_, '_, Mem>) -> Result<(), DeviceError> {
        self.slow.adopt_inflight(handover)
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, Mem>]) -> Result<(), DeviceError> {
        self.slow.poll(queues)
    }

    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        VirtioDevice::<Mem>::quiesce(&mut self.slow, mode)
    }

    fn reset(&mut self) {
        VirtioDevice::<Mem>::reset(&mut self.slow);
        self.mode.store(0, Ordering::SeqCst);
    }

    fn config_len(&self) -> usize {
        ADOPTING_CONFIG_LEN
    }

    crate::persist_seam!();
}

/// The device-specific field type of [`StateLog`] (in the device-specific range, not defined by
/// any device type).
pub const LOG_FIELD: FieldType = FieldType(0x03f0);

/// A device (entropy type, one queue) that takes no buffer, so whatever the driver makes
/// available stays available; its device-specific state is one [`LOG_FIELD`] carrying one
/// byte. It logs the byte of every state restored into it, so a test sees each context a
/// restore (or DEV_CTX_WRITE) applied, in order.
pub struct StateLog {
    value: u8,
    log: Arc<Mutex<Vec<u8>>>,
    queue_size: u16,
}

impl StateLog {
    /// A device with state 0 and one queue of `queue_size`, logging restores into `log`.
    pub fn new(log: Arc<Mutex<Vec<u8>>>, queue_size: u16) -> Self {
        Self {
            value: 0,
            log,
            queue_size,
        }
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for StateLog {
    one_queue_identity!(ENTROPY_DEVICE_TYPE);

    /// Takes no buffer: whatever the driver makes available stays available.
    fn process_queue(&mut self, _: u16, _: &mut QueueAccess<'_, M>) -> Result<(), DeviceError> {
        Ok(())
    }

    crate::persist_seam!();
}

/// The state is the one byte; every restore is logged.
impl Persist for StateLog {
    type State = u8;

    fn save(&self) -> u8 {
        self.value
    }

    fn encode(value: &u8) -> Vec<DeviceField> {
        vec![DeviceField::new(LOG_FIELD, vec![*value])]
    }

    fn decode(&self, fields: &[DeviceField], _config: &[u8]) -> Result<u8, DeviceError> {
        match fields {
            [f] if f.field_type == LOG_FIELD && f.value.len() == 1 => Ok(f.value[0]),
            _ => Err(DeviceError::BadState("one LOG_FIELD of one byte")),
        }
    }

    fn restore(&mut self, value: u8) {
        self.value = value;
        self.log.lock().unwrap().push(value);
    }
}

/// Options that leave requests in flight on a stop or suspend.
pub fn record_inflight() -> CoreOptions {
    CoreOptions {
        quiesce_mode: QuiesceMode::RecordInflight,
        ..CoreOptions::default()
    }
}

/// A destination: a fresh core on `source`'s guest memory that takes over its ring drivers
/// (the guest keeps running its rings across the migration).
pub fn destination(
    source: &mut CoreDriver,
    device: Box<dyn VirtioDevice<Mem>>,
    options: CoreOptions,
) -> CoreDriver {
    let irq = Arc::new(InterruptCounter::default());
    let core = DeviceCore::new(device, source.mem.clone(), irq.clone(), options).unwrap();
    CoreDriver {
        mem: source.mem.clone(),
        irq,
        core,
        rings: std::mem::take(&mut source.rings),
        kind: source.kind,
    }
}

/// A [`destination`] around a released [`AdoptingDevice`] that records in flight.
pub fn adopting_destination(source: &mut CoreDriver) -> CoreDriver {
    destination(
        source,
        Box::new(AdoptingDevice::new(true)),
        record_inflight(),
    )
}

/// Everything observable about a quiescent core: its status, its saved context, the used
/// and configuration interrupts raised, a checksum of its first queue's ring memory and the
/// first 256 bytes of configuration space as the driver reads them.
pub type Observed = (DeviceStatus, DeviceContext, u64, u64, u64, Vec<u8>);

/// What [`Observed`] says of `d` now.
pub fn snapshot(d: &mut CoreDriver) -> Observed {
    let mut config = vec![0; 256];
    d.core.read_config(0, &mut config);
    (
        d.core.status(),
        d.core.save_context().unwrap(),
        d.irq.used(),
        d.irq.config(),
        checksum(&d.mem, QUEUE_BASE, 0x2000),
        config,
    )
}

/// Restores `ctx` into `dst`, expecting `want` from validate and restore alike, and nothing
/// [`Observed`] to change (spec-decisions §5: "a context that fails validation changes
/// nothing").
pub fn refused(dst: &mut CoreDriver, ctx: &DeviceContext, want: &ContextError) {
    let before = snapshot(dst);
    assert_eq!(dst.core.validate_context(ctx).as_ref(), Err(want));
    assert_eq!(dst.core.restore_context(ctx).as_ref(), Err(want));
    assert_eq!(
        snapshot(dst),
        before,
        "a refused context changed the device"
    );
}

/// A fresh core on its own memory, in status 0 (a restore target).
pub fn fresh(device: Box<dyn VirtioDevice<Mem>>, options: CoreOptions) -> CoreDriver {
    let mut d = CoreDriver::with_options(device, options);
    d.kind = RingKind::Split;
    d
}

/// Collects queue 0's used buffers and re-enables notifications, as a driver does after
/// handling an interrupt (with EVENT_IDX this moves `used_event` to what it consumed).
pub fn collect_rearm(d: &mut CoreDriver) -> Vec<UsedBuffer> {
    let used = d.collect();
    let mem = d.mem.clone();
    match d.rings[0].as_mut().unwrap() {
        RingDriver::Split(r) => r.enable_interrupts(&*mem).unwrap(),
        RingDriver::Packed(r) => r.enable_interrupts(&*mem).unwrap(),
    };
    used
}

/// One field of an encoded context, owned, for editing.
pub type RawField = (FieldType, u16, Vec<u8>);

/// The fields of an encoded context.
pub fn fields(bytes: &[u8]) -> Vec<RawField> {
    parse_fields(bytes)
        .unwrap()
        .into_iter()
        .map(|f| (f.field_type, f.flags, f.value.to_vec()))
        .collect()
}

/// Encodes `fields` as they are (no marker or order rules applied).
pub fn build(fields: &[RawField]) -> Vec<u8> {
    let mut w = ContextWriter::new();
    for (t, flags, value) in fields {
        w.field(*t, *flags, value).unwrap();
    }
    w.into_bytes()
}

/// Byte offset of field `i` in `build(fields)`.
pub fn offset_of(fields: &[RawField], i: usize) -> usize {
    fields[..i]
        .iter()
        .map(|(_, _, v)| 8 + v.len().div_ceil(8) * 8)
        .sum()
}

/// Position of the first field of type `t`.
pub fn position(fields: &[RawField], t: FieldType) -> usize {
    fields.iter().position(|f| f.0 == t).unwrap()
}

/// `d`'s device-specific state (`save_state`) framed as context fields by the one codec.
pub fn framed_state<M: GuestMemory + ?Sized>(d: &dyn VirtioDevice<M>) -> Vec<u8> {
    let mut w = ContextWriter::new();
    for f in d.save_state() {
        w.field(f.field_type, f.flags, &f.value).unwrap();
    }
    w.into_bytes()
}

/// Framed `state` parsed back into owned device fields, for `decode_state`; a framing error is
/// `BadState("framing")`, so that the device's own verdicts stay apart from the codec's.
pub fn device_fields(state: &[u8]) -> Result<Vec<DeviceField>, DeviceError> {
    Ok(parse_fields(state)
        .map_err(|_| DeviceError::BadState("framing"))?
        .into_iter()
        .map(|f| DeviceField {
            field_type: f.field_type,
            flags: f.flags,
            value: f.value.to_vec(),
        })
        .collect())
}

/// One field in the spec-decisions §5 encoding written out by hand (header, value, zero padding
/// to 8), to check the codec's output against.
pub fn field_bytes(ty: u16, flags: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out
}
