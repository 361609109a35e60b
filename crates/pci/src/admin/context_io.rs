//! DEV_CTX_SIZE_GET / READ / WRITE / DISCARD / FIELDS_QUERY for one member: the device context
//! (spec-decisions §5) streamed out and in across commands.
//!
//! Reading: the first READ in a mode takes a snapshot of the member (its core's context with
//! the transport's MSI-X vectors filled in) and later READs hand it out in pieces of whatever
//! size the result buffer allows, so a context may be split at any byte. `remaining_ctx_size`
//! counts down to 0; once it is 0, READs succeed with `size` = `remaining_ctx_size` = 0. A mode
//! change, a DEV_CTX_DISCARD, a member reset and a completed DEV_CTX_WRITE end the stream: the
//! next READ starts from a new snapshot "as if VIRTIO_ADMIN_CMD_DEV_CTX_READ was never
//! received" in the current mode. SIZE_GET reports what is left of the stream, or the size a
//! READ would start with now.
//!
//! Writing (Freeze only, checked by the dispatcher): bytes are appended to what was written
//! since the last END_MARKER. Each command is checked before any of it counts: every field
//! complete so far must be framed correctly, have the length its type has in this device, and
//! lie between a START_MARKER and an END_MARKER (no second START before the END). At each
//! END_MARKER the context from its START_MARKER is decoded (DISCARD fields drop what came
//! before them, repeated fields apply in order) and validated against the member in full. Only
//! when every context the command completes is valid are they applied, in order. A failing
//! command changes nothing; a DEV_CTX_DISCARD drops the partial context.

use virtio_lm_device::context::{self, DeviceContext, MAX_DEVICE_CONFIG_LEN, MAX_FIELD_LEN};
use virtio_lm_device::context::{VIRTIO_MSI_NO_VECTOR, VQ_INFLIGHT_CHAINS};
use virtio_lm_device::DeviceCore;
use virtio_lm_spec::admin::{qualifier, status, DevCtxFieldInfo, DevMode};
use virtio_lm_spec::context::FIELD_HEADER_LEN;
use virtio_lm_spec::context::{padded_len, ContextFieldHeader, FieldType, FIELD_FLAG_OPTIONAL};
use vm_memory::GuestMemory;
use zerocopy::FromBytes;

use super::decode::{AdminResult, MAX_COMMAND_DATA};
use crate::interrupts::MsixInterrupts;

/// EINVAL / Q_INVALID_FIELD: a context that is malformed or that this member cannot take
/// (spec-decisions §5); nothing changed.
fn invalid_field() -> AdminResult {
    AdminResult::error(status::EINVAL, qualifier::Q_INVALID_FIELD)
}

/// EBUSY / Q_INVALID_COMMAND: the member cannot produce its context now.
fn busy() -> AdminResult {
    AdminResult::error(status::EBUSY, qualifier::Q_INVALID_COMMAND)
}

/// A context being read: the snapshot and how far the driver got.
#[derive(Debug)]
struct ReadStream {
    bytes: Vec<u8>,
    offset: usize,
    /// The mode and reset count the snapshot belongs to.
    mode: DevMode,
    resets: u64,
}

/// What was written since the last END_MARKER.
#[derive(Debug, Default)]
struct WriteStream {
    /// Bytes since the last END_MARKER (begins with the START_MARKER when a context is open).
    pending: Vec<u8>,
    /// Offset in `pending` of the first field not yet complete.
    scanned: usize,
    /// A START_MARKER was received and its END_MARKER not yet.
    open: bool,
    /// The member's reset count when the stream began.
    resets: u64,
}

/// The owner's read and write streams for one member.
#[derive(Debug, Default)]
pub(crate) struct ContextStreams {
    read: Option<ReadStream>,
    write: WriteStream,
}

/// Fields of a write command after checking, before any of it takes effect.
struct Scan {
    /// `(start, end)` of each context the command completes.
    contexts: Vec<(usize, usize)>,
    /// Bytes up to the last END_MARKER.
    consumed: usize,
    /// Offset of the first incomplete field.
    scanned: usize,
    open: bool,
}

impl ContextStreams {
    /// Drops what a reset (driver reset or FLR) or a mode change made stale.
    fn sync<M: GuestMemory + Send + Sync + 'static>(&mut self, core: &DeviceCore<M>) {
        let resets = core.reset_count();
        let stale = |r: &ReadStream| r.resets != resets || r.mode != core.admin_mode();
        if self.read.as_ref().is_some_and(stale) {
            self.read = None;
        }
        if self.write.resets != resets {
            self.write = WriteStream {
                resets,
                ..WriteStream::default()
            };
        }
    }

    /// Whether a context is partially written (seed 004: DEV_MODE_SET to Active or Stop fails).
    pub(crate) fn partially_written<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        core: &DeviceCore<M>,
    ) -> bool {
        self.sync(core);
        !self.write.pending.is_empty()
    }

    /// The member changed mode: reading starts over in the new mode.
    pub(crate) fn mode_changed(&mut self) {
        self.read = None;
    }

    /// DEV_CTX_DISCARD: a partial read starts over, a partial write is dropped.
    pub(crate) fn discard<M: GuestMemory + Send + Sync + 'static>(&mut self, core: &DeviceCore<M>) {
        self.sync(core);
        self.read = None;
        self.write = WriteStream {
            resets: core.reset_count(),
            ..WriteStream::default()
        };
    }

    #[cfg(feature = "fuzzing")]
    /// (bytes read of the current read stream and its length, bytes pending in the write
    /// stream): for the fuzz invariants.
    pub(crate) fn progress(&self) -> (Option<(usize, usize)>, usize) {
        (
            self.read.as_ref().map(|r| (r.offset, r.bytes.len())),
            self.write.pending.len(),
        )
    }

    /// DEV_CTX_SIZE_GET: bytes left to read in the current mode.
    pub(crate) fn size<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        core: &DeviceCore<M>,
        irq: &MsixInterrupts,
    ) -> Result<u32, AdminResult> {
        self.sync(core);
        let left = match &self.read {
            Some(r) => r.bytes.len() - r.offset,
            None => snapshot(core, irq)?.len(),
        };
        Ok(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// DEV_CTX_READ: up to `max` bytes of the context; returns (remaining_ctx_size, data).
    pub(crate) fn read<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        core: &DeviceCore<M>,
        irq: &MsixInterrupts,
        max: usize,
    ) -> Result<(u32, Vec<u8>), AdminResult> {
        self.sync(core);
        let stream = match self.read.take() {
            Some(stream) => stream,
            None => ReadStream {
                bytes: snapshot(core, irq)?,
                offset: 0,
                mode: core.admin_mode(),
                resets: core.reset_count(),
            },
        };
        let stream = self.read.insert(stream);
        let end = stream.offset.saturating_add(max).min(stream.bytes.len());
        let chunk = stream.bytes[stream.offset..end].to_vec();
        stream.offset = end;
        let remaining = stream.bytes.len() - stream.offset;
        Ok((u32::try_from(remaining).unwrap_or(u32::MAX), chunk))
    }

    /// DEV_CTX_WRITE of `data` (the caller checked the mode is Freeze).
    pub(crate) fn write<M: GuestMemory + Send + Sync + 'static>(
        &mut self,
        core: &mut DeviceCore<M>,
        irq: &MsixInterrupts,
        data: &[u8],
    ) -> Result<(), AdminResult> {
        self.sync(core);
        let w = &self.write;
        if w.pending.len().saturating_add(data.len()) > MAX_COMMAND_DATA {
            return Err(AdminResult::error(status::ENOMEM, qualifier::Q_NORESOURCE));
        }
        let mut buf = Vec::with_capacity(w.pending.len() + data.len());
        buf.extend_from_slice(&w.pending);
        buf.extend_from_slice(data);
        let scan = scan(&buf, w.scanned, w.open)?;
        let mut contexts = Vec::with_capacity(scan.contexts.len());
        for &(start, end) in &scan.contexts {
            let ctx = context::decode(&buf[start..end]).map_err(|_| invalid_field())?;
            core.validate_context(&ctx).map_err(|_| invalid_field())?;
            check_vectors(&ctx, irq)?;
            contexts.push(ctx);
        }
        // Everything the command completes is valid: from here on it takes effect.
        self.write = WriteStream {
            pending: buf.split_off(scan.consumed),
            scanned: scan.scanned,
            open: scan.open,
            resets: core.reset_count(),
        };
        if contexts.is_empty() {
            return Ok(());
        }
        self.read = None;
        for ctx in &contexts {
            if core.restore_context(ctx).is_err() {
                // Only the device type can fail after validation; it set DEVICE_NEEDS_RESET.
                return Err(AdminResult::error(
                    status::ENXIO,
                    qualifier::Q_INVALID_COMMAND,
                ));
            }
            irq.set_config_vector(ctx.config_msix_vector);
            for (index, queue) in (0u16..).zip(&ctx.queues) {
                irq.set_queue_vector(index, queue.config.msix_vector);
            }
        }
        Ok(())
    }
}

/// The member's context as a driver reads it: the core's, with the transport's MSI-X vectors.
fn snapshot<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
    irq: &MsixInterrupts,
) -> Result<Vec<u8>, AdminResult> {
    let mut ctx = core.snapshot_context().map_err(|_| busy())?;
    ctx.config_msix_vector = irq.config_vector();
    for (index, queue) in (0u16..).zip(&mut ctx.queues) {
        queue.config.msix_vector = irq.queue_vector(index);
    }
    context::encode(&ctx).map_err(|_| busy())
}

/// Every MSI-X vector must be one the member has, or NO_VECTOR.
fn check_vectors(ctx: &DeviceContext, irq: &MsixInterrupts) -> Result<(), AdminResult> {
    let ok = |v: u16| v == VIRTIO_MSI_NO_VECTOR || v < irq.num_vectors();
    let queues_ok = ctx.queues.iter().all(|q| ok(q.config.msix_vector));
    if ok(ctx.config_msix_vector) && queues_ok {
        Ok(())
    } else {
        Err(invalid_field())
    }
}

/// Whether `len` is a length the field type has in this device (seed 004: a mismatch fails
/// the DEV_CTX_WRITE that carries it).
fn length_ok(field_type: FieldType, len: usize) -> bool {
    if let Some(exact) = field_type.value_len() {
        return len == exact;
    }
    match field_type {
        FieldType::DEVICE_FEATURES | FieldType::DRIVER_FEATURES => len > 0 && len.is_multiple_of(8),
        FieldType::DEVICE_CONFIG => len <= MAX_DEVICE_CONFIG_LEN,
        _ => len <= MAX_FIELD_LEN,
    }
}

/// Checks the fields of `buf` from `from` (the first field not yet complete; `open` when a
/// START_MARKER at offset 0 is still waiting for its END_MARKER).
fn scan(buf: &[u8], from: usize, open: bool) -> Result<Scan, AdminResult> {
    let mut at = from;
    let mut start = open.then_some(0);
    let mut contexts = Vec::new();
    let mut consumed = 0;
    while let Ok((header, _)) =
        ContextFieldHeader::read_from_prefix(buf.get(at..).unwrap_or_default())
    {
        let field_type = header.field_type();
        let len = usize::try_from(header.length()).unwrap_or(usize::MAX);
        if !length_ok(field_type, len) {
            return Err(invalid_field());
        }
        let end = at + FIELD_HEADER_LEN + padded_len(len);
        if end > buf.len() {
            break;
        }
        match field_type {
            FieldType::START_MARKER if start.is_some() => return Err(invalid_field()),
            FieldType::START_MARKER => start = Some(at),
            FieldType::END_MARKER => {
                let begin = start.take().ok_or_else(invalid_field)?;
                contexts.push((begin, end));
                consumed = end;
            }
            // Seed 004: the driver "MUST set field[0] ... of type START_MARKER".
            _ if start.is_none() => return Err(invalid_field()),
            _ => {}
        }
        at = end;
    }
    Ok(Scan {
        contexts,
        consumed,
        scanned: at - consumed,
        open: start.is_some(),
    })
}

/// DEV_CTX_FIELDS_QUERY: START_MARKER, END_MARKER, DISCARD, every common and queue field type
/// the core reads and writes, and the device-specific types the member's device saves (a
/// device type does not list its types otherwise). Length 0 means variable.
pub(crate) fn fields<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
) -> Vec<DevCtxFieldInfo> {
    let common = [
        (FieldType::START_MARKER, 0),
        (FieldType::END_MARKER, 0),
        (FieldType::DISCARD, 0),
        (FieldType::DEVICE_FEATURES, 0),
        (FieldType::DRIVER_FEATURES, 0),
        (FieldType::DEVICE_STATUS, 0),
        (FieldType::CONFIG_GENERATION, 0),
        (FieldType::DEVICE_CONFIG, 0),
        (FieldType::PCI_COMMON_CFG, 0),
        (FieldType::VQ_CONFIG, 0),
        (FieldType::VQ_STATE, 0),
        (FieldType::VQ_INFLIGHT, FIELD_FLAG_OPTIONAL),
        (VQ_INFLIGHT_CHAINS, 0),
    ];
    let mut list: Vec<DevCtxFieldInfo> =
        common.iter().map(|&(ty, flags)| info(ty, flags)).collect();
    if let Ok(ctx) = core.snapshot_context() {
        for field in ctx.device_fields {
            if !list.iter().any(|i| i.field_type() == field.field_type) {
                list.push(info(field.field_type, field.flags));
            }
        }
    }
    list
}

fn info(field_type: FieldType, flags: u16) -> DevCtxFieldInfo {
    let length = field_type
        .value_len()
        .and_then(|l| u32::try_from(l).ok())
        .unwrap_or(0);
    DevCtxFieldInfo::new(field_type, flags, length)
}
