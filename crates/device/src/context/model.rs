//! The typed device context and its encoder.
//!
//! [`encode`] writes the order of spec-decisions §5: START_MARKER, DEVICE_FEATURES, DRIVER_FEATURES,
//! DEVICE_STATUS, CONFIG_GENERATION, DEVICE_CONFIG, PCI_COMMON_CFG, then per queue VQ_CONFIG,
//! VQ_STATE and (when chains are in flight) VQ_INFLIGHT and VQ_INFLIGHT_CHAINS, then the
//! device-specific fields, END_MARKER. Whatever `encode` accepts, [`super::decode`] returns
//! unchanged.

use virtio_lm_queue::{
    QueueConfig, QueueState, RingFeatures, RingKind, SavedChain, MAX_QUEUE_SIZE,
};
use virtio_lm_spec::context::{
    FieldType, PciCommonCfgField, VqConfigField, VqStateField, FIELD_FLAG_OPTIONAL,
    VQ_STATE_F_NOTIFY_OWED,
};
use virtio_lm_spec::zerocopy::little_endian::{U16, U64};
use virtio_lm_spec::zerocopy::IntoBytes;
use vm_memory::GuestAddress;

use super::error::ContextError;
use super::format::{ContextWriter, ValueWriter};
use super::{MAX_DEVICE_CONFIG_LEN, SEGMENT_F_WRITABLE, VQ_INFLIGHT_CHAINS};
use crate::queues::QueueRegisters;

/// MSI-X "no vector": what the core reports for vectors it does not own (the PCI transport
/// fills in its own).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// A complete device context as plain data.
///
/// `num_queues` of PCI_COMMON_CFG is `queues.len()`; queue `i` is `queues[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceContext {
    /// DEVICE_FEATURES: offered feature bits, 64 per word, word 0 first (at least one word).
    pub device_features: Vec<u64>,
    /// DRIVER_FEATURES: accepted feature bits, same layout (at least one word).
    pub driver_features: Vec<u64>,
    /// DEVICE_STATUS.
    pub device_status: u8,
    /// CONFIG_GENERATION.
    pub config_generation: u8,
    /// DEVICE_CONFIG: device-type configuration space bytes from offset 0.
    pub device_config: Vec<u8>,
    /// PCI_COMMON_CFG `config_msix_vector`.
    pub config_msix_vector: u16,
    /// The queues, by index.
    pub queues: Vec<QueueContext>,
    /// Device-specific fields (types 0x0200–0x03FF), in order.
    pub device_fields: Vec<DeviceField>,
}

/// One queue: its registers (VQ_CONFIG) and its state (VQ_STATE and the in-flight chains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueContext {
    /// VQ_CONFIG.
    pub config: VqConfig,
    /// VQ_STATE (avail and used state, owed notification) and the in-flight chains, oldest
    /// first (VQ_INFLIGHT / VQ_INFLIGHT_CHAINS).
    pub state: QueueState,
}

/// VQ_CONFIG without the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqConfig {
    /// Queue size (1..=32768).
    pub size: u16,
    /// MSI-X vector.
    pub msix_vector: u16,
    /// queue_enable.
    pub enabled: bool,
    /// Descriptor area.
    pub desc: u64,
    /// Driver area.
    pub driver: u64,
    /// Device area.
    pub device: u64,
}

impl VqConfig {
    /// The ring this configuration describes, in ring format `kind` with the ring features
    /// the driver negotiated.
    pub fn queue_config(&self, kind: RingKind, features: RingFeatures) -> QueueConfig {
        QueueConfig {
            kind,
            size: self.size,
            desc_table: GuestAddress(self.desc),
            driver_area: GuestAddress(self.driver),
            device_area: GuestAddress(self.device),
            features,
        }
    }

    /// The configuration of a core's queue registers (MSI-X is the transport's).
    pub fn from_registers(regs: &QueueRegisters) -> Self {
        Self {
            size: regs.size,
            msix_vector: VIRTIO_MSI_NO_VECTOR,
            enabled: regs.enabled,
            desc: regs.desc,
            driver: regs.driver,
            device: regs.device,
        }
    }
}

/// A device-specific field, passed through to the device type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceField {
    /// Type in 0x0200–0x03FF.
    pub field_type: FieldType,
    /// Flags as received.
    pub flags: u16,
    /// Value.
    pub value: Vec<u8>,
}

impl DeviceField {
    /// A mandatory field (no flags) of `field_type` carrying `value`.
    pub fn new(field_type: FieldType, value: Vec<u8>) -> Self {
        Self {
            field_type,
            flags: 0,
            value,
        }
    }
}

/// True for the device-specific type range 0x0200–0x03FF.
pub fn is_device_specific(field_type: FieldType) -> bool {
    field_type.is_blk_specific() || field_type.is_net_specific()
}

/// Encodes a complete context (START_MARKER to END_MARKER).
pub fn encode(ctx: &DeviceContext) -> Result<Vec<u8>, ContextError> {
    let mut writer = ContextWriter::new();
    encode_into(ctx, &mut writer)?;
    Ok(writer.into_bytes())
}

/// Appends a complete context to `w`. On error `w` may hold a partial context: send a DISCARD
/// or drop it.
pub fn encode_into(ctx: &DeviceContext, w: &mut ContextWriter) -> Result<(), ContextError> {
    w.start_marker();
    features(w, FieldType::DEVICE_FEATURES, &ctx.device_features)?;
    features(w, FieldType::DRIVER_FEATURES, &ctx.driver_features)?;
    w.field(FieldType::DEVICE_STATUS, 0, &[ctx.device_status])?;
    w.field(FieldType::CONFIG_GENERATION, 0, &[ctx.config_generation])?;
    if ctx.device_config.len() > MAX_DEVICE_CONFIG_LEN {
        return Err(unencodable(
            FieldType::DEVICE_CONFIG,
            "longer than 4096 bytes",
        ));
    }
    w.field(FieldType::DEVICE_CONFIG, 0, &ctx.device_config)?;
    let num_queues = u16::try_from(ctx.queues.len())
        .map_err(|_| unencodable(FieldType::PCI_COMMON_CFG, "more than 65535 queues"))?;
    let common = PciCommonCfgField {
        config_msix_vector: U16::new(ctx.config_msix_vector),
        num_queues: U16::new(num_queues),
        reserved: [U16::new(0); 2],
    };
    w.field(FieldType::PCI_COMMON_CFG, 0, common.as_bytes())?;
    for (index, queue) in (0..num_queues).zip(&ctx.queues) {
        encode_queue(w, index, queue)?;
    }
    for field in &ctx.device_fields {
        if !is_device_specific(field.field_type) {
            return Err(unencodable(field.field_type, "not a device-specific type"));
        }
        w.field(field.field_type, field.flags, &field.value)?;
    }
    w.end_marker();
    Ok(())
}

fn unencodable(field_type: FieldType, reason: &'static str) -> ContextError {
    ContextError::Unencodable { field_type, reason }
}

fn features(w: &mut ContextWriter, ty: FieldType, words: &[u64]) -> Result<(), ContextError> {
    if words.is_empty() {
        return Err(unencodable(ty, "no feature word"));
    }
    w.field_with(ty, 0, |v| words.iter().for_each(|&word| v.put_u64(word)))
}

fn encode_queue(w: &mut ContextWriter, index: u16, q: &QueueContext) -> Result<(), ContextError> {
    let c = &q.config;
    if c.size == 0 || c.size > MAX_QUEUE_SIZE {
        return Err(unencodable(
            FieldType::VQ_CONFIG,
            "queue size not in 1..=32768",
        ));
    }
    let config = VqConfigField {
        index: U16::new(index),
        size: U16::new(c.size),
        msix_vector: U16::new(c.msix_vector),
        enabled: U16::new(u16::from(c.enabled)),
        desc: U64::new(c.desc),
        driver: U64::new(c.driver),
        device: U64::new(c.device),
    };
    w.field(FieldType::VQ_CONFIG, 0, config.as_bytes())?;
    let s = &q.state;
    let flags = if s.notification_owed {
        VQ_STATE_F_NOTIFY_OWED
    } else {
        0
    };
    let state = VqStateField {
        index: U16::new(index),
        avail_state: U16::new(s.avail_state),
        used_state: U16::new(s.used_state),
        flags: U16::new(flags),
    };
    w.field(FieldType::VQ_STATE, 0, state.as_bytes())?;
    if s.inflight.is_empty() {
        return Ok(());
    }
    let count = u16::try_from(s.inflight.len())
        .map_err(|_| unencodable(FieldType::VQ_INFLIGHT, "more than 65535 chains"))?;
    if s.inflight
        .iter()
        .any(|c| c.segments.len() > usize::from(u16::MAX))
    {
        return Err(unencodable(
            VQ_INFLIGHT_CHAINS,
            "a chain of more than 65535 buffers",
        ));
    }
    w.field_with(FieldType::VQ_INFLIGHT, FIELD_FLAG_OPTIONAL, |v| {
        inflight_header(v, index, count);
        s.inflight.iter().for_each(|c| v.put_u16(c.id));
    })?;
    w.field_with(VQ_INFLIGHT_CHAINS, 0, |v| {
        inflight_header(v, index, count);
        s.inflight.iter().for_each(|chain| encode_chain(v, chain));
    })
}

fn inflight_header(v: &mut ValueWriter<'_>, index: u16, count: u16) {
    v.put_u16(index);
    v.put_u16(count);
    v.put_u32(0);
}

/// Writes one chain; the caller checked that it has at most 65535 segments.
fn encode_chain(v: &mut ValueWriter<'_>, chain: &SavedChain) {
    let nsegs = u16::try_from(chain.segments.len()).unwrap_or(u16::MAX);
    v.put_u16(chain.id);
    v.put_u16(chain.ring_slots);
    v.put_u16(nsegs);
    v.put_u16(0);
    for seg in &chain.segments {
        v.put_u64(seg.addr.0);
        v.put_u32(seg.len);
        v.put_u32(if seg.writable { SEGMENT_F_WRITABLE } else { 0 });
    }
}
