//! Decoding one complete context into a [`DeviceContext`].
//!
//! Rules (spec-decisions §5, seed 004, and our decisions for what they leave open):
//! - The first field is START_MARKER; a second one before END_MARKER is an error. END_MARKER
//!   ends the context and nothing may follow it. DISCARD drops everything received since the
//!   START_MARKER, and decoding continues.
//! - Three sections, in this order: device fields (DEVICE_FEATURES … PCI_COMMON_CFG, in any
//!   order among themselves), queue fields, device-specific fields (0x0200–0x03FF). A field of
//!   an earlier section after a later one is out of order.
//! - Queue fields need PCI_COMMON_CFG first (the index must be below `num_queues`). A queue's
//!   VQ_CONFIG opens it; its VQ_STATE must follow its VQ_CONFIG, and its VQ_INFLIGHT and
//!   VQ_INFLIGHT_CHAINS must follow its VQ_STATE. Queues may interleave.
//! - A repeated field replaces the earlier one (seed 004: fields are applied in the order
//!   received). Re-sending a queue's VQ_CONFIG drops its state and in-flight fields, and a
//!   re-sent VQ_STATE drops its in-flight fields: they describe the queue as configured before,
//!   so they must follow again.
//! - Unknown types: skipped when OPTIONAL, rejected otherwise. Device-specific types are passed
//!   through to the device type, which applies the same rule.
//! - Fixed-size fields must have exactly their size; reserved fields and padding are ignored;
//!   unknown flag bits inside values (VQ_STATE flags, segment flags) are rejected.
//! - At END_MARKER every device field must have been received, and VQ_CONFIG and VQ_STATE of
//!   every queue below `num_queues`.

use std::collections::BTreeMap;

use virtio_lm_queue::{QueueState, SavedChain, Segment, MAX_QUEUE_SIZE};
use virtio_lm_spec::context::{
    FieldType, PciCommonCfgField, VqConfigField, VqStateField, VQ_STATE_F_NOTIFY_OWED,
};
use virtio_lm_spec::zerocopy::FromBytes;
use vm_memory::GuestAddress;

use super::error::ContextError;
use super::format::{ContextReader, Field, ValueCursor};
use super::model::{is_device_specific, DeviceContext, DeviceField, QueueContext, VqConfig};
use super::{MAX_DEVICE_CONFIG_LEN, SEGMENT_F_WRITABLE, VQ_INFLIGHT_CHAINS};

/// Decodes one complete context: START_MARKER, fields, END_MARKER, nothing after.
pub fn decode(buf: &[u8]) -> Result<DeviceContext, ContextError> {
    let mut reader = ContextReader::new(buf);
    match reader.next() {
        Some(Ok(f)) if f.field_type == FieldType::START_MARKER => exact(&f, 0)?,
        Some(Ok(f)) => return Err(ContextError::MissingStartMarker { offset: f.offset }),
        Some(Err(e)) => return Err(e),
        None => return Err(ContextError::MissingStartMarker { offset: 0 }),
    }
    let mut pending = Pending::default();
    while let Some(field) = reader.next() {
        let field = field?;
        match field.field_type {
            FieldType::START_MARKER => {
                return Err(ContextError::DuplicateStartMarker {
                    offset: field.offset,
                })
            }
            FieldType::DISCARD => {
                exact(&field, 0)?;
                pending = Pending::default();
            }
            FieldType::END_MARKER => {
                exact(&field, 0)?;
                let ctx = pending.finish(field.offset)?;
                if reader.offset() < buf.len() {
                    return Err(ContextError::TrailingData {
                        offset: reader.offset(),
                    });
                }
                return Ok(ctx);
            }
            _ => pending.apply(&field)?,
        }
    }
    Err(ContextError::MissingEndMarker { offset: buf.len() })
}

fn exact(field: &Field<'_>, expected: usize) -> Result<(), ContextError> {
    if field.value.len() == expected {
        Ok(())
    } else {
        Err(ContextError::BadLength {
            offset: field.offset,
            field_type: field.field_type,
            length: field.value.len(),
            expected,
        })
    }
}

fn invalid(field: &Field<'_>, reason: &'static str) -> ContextError {
    ContextError::InvalidValue {
        offset: field.offset,
        field_type: field.field_type,
        reason,
    }
}

fn out_of_order(field: &Field<'_>, reason: &'static str) -> ContextError {
    ContextError::OutOfOrder {
        offset: field.offset,
        field_type: field.field_type,
        reason,
    }
}

/// Which part of the context the fields so far belong to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Section {
    #[default]
    Device,
    Queues,
    DeviceSpecific,
}

/// What has been received since the START_MARKER (or the last DISCARD).
#[derive(Debug, Default)]
struct Pending {
    section: Section,
    device_features: Option<Vec<u64>>,
    driver_features: Option<Vec<u64>>,
    status: Option<u8>,
    generation: Option<u8>,
    device_config: Option<Vec<u8>>,
    /// (config_msix_vector, num_queues).
    common: Option<(u16, u16)>,
    /// Only queues that fields named: nothing is allocated for `num_queues` itself.
    queues: BTreeMap<u16, PendingQueue>,
    device_fields: Vec<DeviceField>,
}

#[derive(Debug)]
struct PendingQueue {
    config: VqConfig,
    state: Option<QueueState>,
    /// VQ_INFLIGHT: (field offset, heads).
    heads: Option<(usize, Vec<u16>)>,
    /// VQ_INFLIGHT_CHAINS: (field offset, chains).
    chains: Option<(usize, Vec<SavedChain>)>,
}

impl Pending {
    fn apply(&mut self, field: &Field<'_>) -> Result<(), ContextError> {
        let ty = field.field_type;
        match ty {
            FieldType::DEVICE_FEATURES
            | FieldType::DRIVER_FEATURES
            | FieldType::DEVICE_STATUS
            | FieldType::CONFIG_GENERATION
            | FieldType::DEVICE_CONFIG
            | FieldType::PCI_COMMON_CFG => {
                if self.section != Section::Device {
                    return Err(out_of_order(field, "device field after queue fields"));
                }
                self.device_field(field)
            }
            FieldType::VQ_CONFIG
            | FieldType::VQ_STATE
            | FieldType::VQ_INFLIGHT
            | VQ_INFLIGHT_CHAINS => {
                if self.section == Section::DeviceSpecific {
                    return Err(out_of_order(
                        field,
                        "queue field after device-specific fields",
                    ));
                }
                let Some((_, num_queues)) = self.common else {
                    return Err(out_of_order(field, "queue field before PCI_COMMON_CFG"));
                };
                self.section = Section::Queues;
                self.queue_field(field, num_queues)
            }
            _ if is_device_specific(ty) => {
                self.section = Section::DeviceSpecific;
                self.device_fields.push(DeviceField {
                    field_type: ty,
                    flags: field.flags,
                    value: field.value.to_vec(),
                });
                Ok(())
            }
            _ if field.is_optional() => Ok(()),
            _ => Err(ContextError::UnknownMandatoryField {
                offset: field.offset,
                field_type: ty,
            }),
        }
    }

    fn device_field(&mut self, field: &Field<'_>) -> Result<(), ContextError> {
        let value = field.value;
        match field.field_type {
            FieldType::DEVICE_FEATURES => self.device_features = Some(feature_words(field)?),
            FieldType::DRIVER_FEATURES => self.driver_features = Some(feature_words(field)?),
            FieldType::DEVICE_STATUS => {
                exact(field, 1)?;
                self.status = value.first().copied();
            }
            FieldType::CONFIG_GENERATION => {
                exact(field, 1)?;
                self.generation = value.first().copied();
            }
            FieldType::DEVICE_CONFIG => {
                if value.len() > MAX_DEVICE_CONFIG_LEN {
                    return Err(ContextError::LengthOverflow {
                        offset: field.offset,
                        field_type: field.field_type,
                        length: value.len() as u64,
                        max: MAX_DEVICE_CONFIG_LEN,
                    });
                }
                self.device_config = Some(value.to_vec());
            }
            _ => {
                exact(field, size_of::<PciCommonCfgField>())?;
                let common = PciCommonCfgField::read_from_bytes(value)
                    .map_err(|_| invalid(field, "unreadable"))?;
                self.common = Some((common.config_msix_vector.get(), common.num_queues.get()));
            }
        }
        Ok(())
    }

    fn queue_field(&mut self, field: &Field<'_>, num_queues: u16) -> Result<(), ContextError> {
        let index = ValueCursor::new(field.value)
            .u16()
            .ok_or(invalid(field, "too short for a queue index"))?;
        if index >= num_queues {
            return Err(ContextError::QueueIndexOutOfRange {
                offset: field.offset,
                field_type: field.field_type,
                index,
                num_queues,
            });
        }
        if field.field_type == FieldType::VQ_CONFIG {
            let config = vq_config(field)?;
            self.queues.insert(
                index,
                PendingQueue {
                    config,
                    state: None,
                    heads: None,
                    chains: None,
                },
            );
            return Ok(());
        }
        let Some(queue) = self.queues.get_mut(&index) else {
            return Err(out_of_order(
                field,
                "queue field before the queue's VQ_CONFIG",
            ));
        };
        if field.field_type == FieldType::VQ_STATE {
            queue.state = Some(vq_state(field)?);
            queue.heads = None;
            queue.chains = None;
            return Ok(());
        }
        if queue.state.is_none() {
            return Err(out_of_order(
                field,
                "in-flight field before the queue's VQ_STATE",
            ));
        }
        if field.field_type == FieldType::VQ_INFLIGHT {
            queue.heads = Some((field.offset, inflight_heads(field)?));
        } else {
            queue.chains = Some((field.offset, inflight_chains(field)?));
        }
        Ok(())
    }

    fn finish(self, end: usize) -> Result<DeviceContext, ContextError> {
        let missing = |field_type, queue| ContextError::MissingField {
            offset: end,
            field_type,
            queue,
        };
        let device_features = required(self.device_features, FieldType::DEVICE_FEATURES, end)?;
        let driver_features = required(self.driver_features, FieldType::DRIVER_FEATURES, end)?;
        let device_status = required(self.status, FieldType::DEVICE_STATUS, end)?;
        let config_generation = required(self.generation, FieldType::CONFIG_GENERATION, end)?;
        let device_config = required(self.device_config, FieldType::DEVICE_CONFIG, end)?;
        let (config_msix_vector, num_queues) =
            required(self.common, FieldType::PCI_COMMON_CFG, end)?;
        if let Some(index) = (0..num_queues).find(|i| !self.queues.contains_key(i)) {
            return Err(missing(FieldType::VQ_CONFIG, Some(index)));
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, q) in self.queues {
            let Some(mut state) = q.state else {
                return Err(missing(FieldType::VQ_STATE, Some(index)));
            };
            state.inflight = match (q.heads, q.chains) {
                (None, None) => Vec::new(),
                (Some((_, heads)), None) if heads.is_empty() => Vec::new(),
                (Some((offset, _)), None) => {
                    return Err(ContextError::InflightWithoutChains { offset, index })
                }
                (None, Some((_, chains))) => chains,
                (Some((a, heads)), Some((b, chains))) => {
                    if !heads.iter().copied().eq(chains.iter().map(|c| c.id)) {
                        let offset = a.max(b);
                        return Err(ContextError::InflightMismatch { offset, index });
                    }
                    chains
                }
            };
            queues.push(QueueContext {
                config: q.config,
                state,
            });
        }
        Ok(DeviceContext {
            device_features,
            driver_features,
            device_status,
            config_generation,
            device_config,
            config_msix_vector,
            queues,
            device_fields: self.device_fields,
        })
    }
}

fn feature_words(field: &Field<'_>) -> Result<Vec<u64>, ContextError> {
    if field.value.is_empty() || !field.value.len().is_multiple_of(8) {
        return Err(invalid(field, "not a non-empty array of le64 words"));
    }
    let mut words = Vec::with_capacity(field.value.len() / 8);
    let mut cursor = ValueCursor::new(field.value);
    while let Some(word) = cursor.u64() {
        words.push(word);
    }
    Ok(words)
}

fn vq_config(field: &Field<'_>) -> Result<VqConfig, ContextError> {
    exact(field, size_of::<VqConfigField>())?;
    let raw =
        VqConfigField::read_from_bytes(field.value).map_err(|_| invalid(field, "unreadable"))?;
    let size = raw.size.get();
    if size == 0 || size > MAX_QUEUE_SIZE {
        return Err(invalid(field, "queue size not in 1..=32768"));
    }
    let enabled = match raw.enabled.get() {
        0 => false,
        1 => true,
        _ => return Err(invalid(field, "enabled is neither 0 nor 1")),
    };
    Ok(VqConfig {
        size,
        msix_vector: raw.msix_vector.get(),
        enabled,
        desc: raw.desc.get(),
        driver: raw.driver.get(),
        device: raw.device.get(),
    })
}

fn vq_state(field: &Field<'_>) -> Result<QueueState, ContextError> {
    exact(field, size_of::<VqStateField>())?;
    let raw =
        VqStateField::read_from_bytes(field.value).map_err(|_| invalid(field, "unreadable"))?;
    let flags = raw.flags.get();
    if flags & !VQ_STATE_F_NOTIFY_OWED != 0 {
        return Err(invalid(field, "unknown VQ_STATE flag bits"));
    }
    Ok(QueueState {
        avail_state: raw.avail_state.get(),
        used_state: raw.used_state.get(),
        notification_owed: flags & VQ_STATE_F_NOTIFY_OWED != 0,
        inflight: Vec::new(),
    })
}

/// Reads `le16 index; le16 count; le16 reserved[2]`, returns `count` and the rest.
fn inflight_header<'a>(field: &Field<'a>) -> Result<(u16, ValueCursor<'a>), ContextError> {
    let mut cursor = ValueCursor::new(field.value);
    let header = (cursor.u16(), cursor.u16(), cursor.u32());
    let (Some(_index), Some(count), Some(_reserved)) = header else {
        return Err(invalid(field, "shorter than its 8-byte header"));
    };
    Ok((count, cursor))
}

fn inflight_heads(field: &Field<'_>) -> Result<Vec<u16>, ContextError> {
    let (count, mut cursor) = inflight_header(field)?;
    if cursor.remaining() != 2 * usize::from(count) {
        return Err(invalid(field, "length does not match the head count"));
    }
    let mut heads = Vec::with_capacity(usize::from(count));
    while let Some(head) = cursor.u16() {
        heads.push(head);
    }
    Ok(heads)
}

/// Per chain: `le16 id; le16 ring_slots; le16 nsegs; le16 reserved` then `nsegs` times
/// `le64 addr; le32 len; le32 flags`.
fn inflight_chains(field: &Field<'_>) -> Result<Vec<SavedChain>, ContextError> {
    let (count, mut cursor) = inflight_header(field)?;
    // Each chain takes at least 8 bytes: never reserve more than the value can hold.
    let mut chains = Vec::with_capacity(usize::from(count).min(cursor.remaining() / 8));
    for _ in 0..count {
        let header = (cursor.u16(), cursor.u16(), cursor.u16(), cursor.u16());
        let (Some(id), Some(ring_slots), Some(nsegs), Some(_)) = header else {
            return Err(invalid(field, "chain header past the end of the value"));
        };
        let nsegs = usize::from(nsegs);
        if cursor.remaining() < nsegs * 16 {
            return Err(invalid(field, "chain segments past the end of the value"));
        }
        let mut segments = Vec::with_capacity(nsegs);
        for _ in 0..nsegs {
            let (Some(addr), Some(len), Some(flags)) = (cursor.u64(), cursor.u32(), cursor.u32())
            else {
                return Err(invalid(field, "chain segments past the end of the value"));
            };
            if flags & !SEGMENT_F_WRITABLE != 0 {
                return Err(invalid(field, "unknown segment flag bits"));
            }
            segments.push(Segment {
                addr: GuestAddress(addr),
                len,
                writable: flags & SEGMENT_F_WRITABLE != 0,
            });
        }
        chains.push(SavedChain {
            id,
            ring_slots,
            segments,
        });
    }
    if cursor.remaining() != 0 {
        return Err(invalid(field, "bytes after the last chain"));
    }
    Ok(chains)
}

/// `value` of a device-wide field, or the error for a context that ended at `end` without it.
fn required<T>(value: Option<T>, field_type: FieldType, end: usize) -> Result<T, ContextError> {
    value.ok_or(ContextError::MissingField {
        offset: end,
        field_type,
        queue: None,
    })
}
