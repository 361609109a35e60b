//! Device parts of a member (virtio 1.4 "Device parts"): the parts DEV_PARTS_GET returns, and
//! the check and staging of the parts DEV_PARTS_SET brings (spec-decisions §17).
//!
//! What the common parts carry, and which parts we emit:
//! - DEV_FEATURES (flagged OPTIONAL) and DRV_FEATURES: one `le64` word each.
//! - PCI_COMMON_CFG: `config_msix_vector` (offset 16) and `num_queues` (offset 18, read-only:
//!   validated on SET, never applied). Fields selected by `queue_select` travel in VQ_CFG, the
//!   device status in DEVICE_STATUS, so no part addresses them twice.
//! - DEVICE_STATUS, then VQ_CFG and VQ_NOTIFY_CFG per queue (VQ_NOTIFY_CFG is read-only).
//! - Device-type parts from the [`DevicePartsCodec`].

use std::collections::BTreeMap;

use virtio_lm_device::context::DeviceContext;
use virtio_lm_spec::parts::{part_type, DevPartHdr, Part, VqCfg, VqNotifyCfg, PART_F_OPTIONAL};
use virtio_lm_spec::pci::offset;
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

/// The device-type half of the parts: what a device type's state and configuration space
/// look like as parts (0x0200–0x05FF), in type order.
pub trait DevicePartsCodec: Send + Sync {
    /// The device-type parts of a member whose context is `ctx`.
    fn save(&self, ctx: &DeviceContext) -> Vec<Part>;

    /// Applies device-type `parts` (already in order) to `ctx`, the context being staged:
    /// its device-specific fields and configuration space. A part the device type does not
    /// know is ignored if OPTIONAL and refused otherwise; a wrong length or value is refused.
    fn load(&self, parts: &[Part], ctx: &mut DeviceContext) -> Result<(), &'static str>;
}

/// The codec of a device type without device-type parts (virtio-rng, the test devices).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDeviceParts;

impl DevicePartsCodec for NoDeviceParts {
    fn save(&self, _: &DeviceContext) -> Vec<Part> {
        Vec::new()
    }

    fn load(&self, parts: &[Part], _: &mut DeviceContext) -> Result<(), &'static str> {
        match parts.iter().find(|p| !p.hdr.is_optional()) {
            Some(_) => Err("a mandatory device-type part this device does not know"),
            None => Ok(()),
        }
    }
}

/// The transport's registers that travel besides the core's context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Vectors {
    pub(crate) config: u16,
    pub(crate) queues: BTreeMap<u16, u16>,
}

fn word_part(t: u16, flags: u8, words: &[u64]) -> Part {
    let value = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    Part::new(t, flags, [0; 8], value)
}

/// Every part of a member, in the required order.
pub(crate) fn parts_of(
    ctx: &DeviceContext,
    vectors: &Vectors,
    codec: &dyn DevicePartsCodec,
) -> Vec<Part> {
    let mut parts = vec![
        word_part(
            part_type::DEV_FEATURES,
            PART_F_OPTIONAL,
            &ctx.device_features,
        ),
        word_part(part_type::DRV_FEATURES, 0, &ctx.driver_features),
    ];
    let common = |off: usize, value: Vec<u8>| {
        let sel = DevPartHdr::offset_selector(off as u32);
        Part::new(part_type::PCI_COMMON_CFG, 0, sel, value)
    };
    parts.push(common(
        offset::CONFIG_MSIX_VECTOR,
        vectors.config.to_le_bytes().to_vec(),
    ));
    let num_queues = ctx.queues.len() as u16;
    parts.push(common(
        offset::NUM_QUEUES,
        num_queues.to_le_bytes().to_vec(),
    ));
    parts.push(Part::new(
        part_type::DEVICE_STATUS,
        0,
        [0; 8],
        vec![ctx.device_status],
    ));
    for (index, q) in (0u16..).zip(&ctx.queues) {
        let cfg = VqCfg {
            queue_size: U16::new(q.config.size),
            vector: U16::new(vectors.queues.get(&index).copied().unwrap_or(0xffff)),
            enabled: U16::new(u16::from(q.config.enabled)),
            reserved: U16::ZERO,
            queue_desc: U64::new(q.config.desc),
            queue_driver: U64::new(q.config.driver),
            queue_device: U64::new(q.config.device),
        };
        let sel = DevPartHdr::vq_selector(index);
        parts.push(Part::new(
            part_type::VQ_CFG,
            0,
            sel,
            cfg.as_bytes().to_vec(),
        ));
    }
    for index in 0..num_queues {
        let notify = VqNotifyCfg {
            queue_notify_off: U16::new(index),
            ..VqNotifyCfg::default()
        };
        let sel = DevPartHdr::vq_selector(index);
        parts.push(Part::new(
            part_type::VQ_NOTIFY_CFG,
            0,
            sel,
            notify.as_bytes().to_vec(),
        ));
    }
    parts.extend(codec.save(ctx));
    parts
}

/// Why DEV_PARTS_SET refused its parts (EINVAL / Q_INVALID_FIELD, nothing staged).
pub(crate) type Refusal = &'static str;

fn exact<T: FromBytes>(part: &Part) -> Result<T, Refusal> {
    T::read_from_bytes(&part.value).map_err(|_| "a part's length does not match its type")
}

pub(super) fn selector_u16(part: &Part) -> u16 {
    u16::from_le_bytes([part.hdr.selector[0], part.hdr.selector[1]])
}

/// Checks `parts` against the member and applies them to `ctx` (the staged context) and
/// `vectors`. On error nothing of `ctx` or `vectors` may be used.
pub(crate) fn stage(
    parts: &[Part],
    ctx: &mut DeviceContext,
    vectors: &mut Vectors,
    codec: &dyn DevicePartsCodec,
) -> Result<(), Refusal> {
    let ranks: Vec<u32> = parts
        .iter()
        .map(|p| virtio_lm_spec::parts::order_rank(p.hdr.part_type()))
        .collect();
    if ranks.windows(2).any(|w| w[0] > w[1]) {
        return Err("parts out of the required order");
    }
    if parts
        .iter()
        .any(|p| p.hdr.flags & !PART_F_OPTIONAL != 0 || p.hdr.reserved != 0)
    {
        return Err("reserved part flags set");
    }
    let (common, device): (Vec<&Part>, Vec<&Part>) =
        parts.iter().partition(|p| p.hdr.part_type() < 0x200);
    for part in common {
        stage_common(part, ctx, vectors)?;
    }
    let device: Vec<Part> = device.into_iter().cloned().collect();
    codec.load(&device, ctx)
}

fn stage_common(
    part: &Part,
    ctx: &mut DeviceContext,
    vectors: &mut Vectors,
) -> Result<(), Refusal> {
    match part.hdr.part_type() {
        part_type::DEV_FEATURES => {
            // "The device MUST NOT set the DEV_FEATURES part; it only verifies that it matches."
            let word: [u8; 8] = exact(part)?;
            if vec![u64::from_le_bytes(word)] != ctx.device_features {
                return Err("DEV_FEATURES differ from the device's features");
            }
        }
        part_type::DRV_FEATURES => {
            let word: [u8; 8] = exact(part)?;
            ctx.driver_features = vec![u64::from_le_bytes(word)];
        }
        part_type::PCI_COMMON_CFG => {
            let off = u32::from_le_bytes(part.hdr.selector[..4].try_into().unwrap_or([0; 4]));
            match off as usize {
                offset::CONFIG_MSIX_VECTOR => {
                    vectors.config = u16::from_le_bytes(exact(part)?);
                }
                offset::NUM_QUEUES => {
                    // Read-only: validated, not applied.
                    if usize::from(u16::from_le_bytes(exact(part)?)) != ctx.queues.len() {
                        return Err("num_queues differs from the device's");
                    }
                }
                _ if part.hdr.is_optional() => {}
                _ => return Err("a PCI_COMMON_CFG offset this device does not carry"),
            }
        }
        part_type::DEVICE_STATUS => {
            let [status]: [u8; 1] = exact(part)?;
            ctx.device_status = status;
        }
        part_type::VQ_CFG => {
            let cfg: VqCfg = exact(part)?;
            let index = selector_u16(part);
            let q = ctx
                .queues
                .get_mut(usize::from(index))
                .ok_or("VQ_CFG for a queue the device does not have")?;
            if cfg.enabled.get() > 1 || cfg.reserved.get() != 0 {
                return Err("VQ_CFG enabled is not 0 or 1");
            }
            q.config.size = cfg.queue_size.get();
            q.config.enabled = cfg.enabled.get() == 1;
            q.config.desc = cfg.queue_desc.get();
            q.config.driver = cfg.queue_driver.get();
            q.config.device = cfg.queue_device.get();
            vectors.queues.insert(index, cfg.vector.get());
        }
        part_type::VQ_NOTIFY_CFG => {
            // Read-only: validated, not applied.
            let cfg: VqNotifyCfg = exact(part)?;
            let index = selector_u16(part);
            if usize::from(index) >= ctx.queues.len()
                || cfg.queue_notify_off.get() != index
                || cfg.queue_notif_config_data.get() != 0
            {
                return Err("VQ_NOTIFY_CFG differs from the device's");
            }
        }
        _ if part.hdr.is_optional() => {}
        _ => return Err("a mandatory common part type this device does not know"),
    }
    Ok(())
}

/// The parts of `all` that DEV_PARTS_GET SELECTED asks for with `wanted` headers (type and
/// selector; length and flags are not compared), in the required order; headers naming no
/// part are skipped.
pub(crate) fn select(all: &[Part], wanted: &[DevPartHdr]) -> Vec<Part> {
    all.iter()
        .filter(|p| {
            wanted
                .iter()
                .any(|w| w.part_type == p.hdr.part_type && w.selector == p.hdr.selector)
        })
        .cloned()
        .collect()
}
