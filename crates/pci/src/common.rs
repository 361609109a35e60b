//! The common configuration structure as registers: reads from a snapshot of the core, writes
//! decoded per field.

use virtio_lm_device::context::VIRTIO_MSI_NO_VECTOR;
use virtio_lm_device::DeviceCore;
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::pci::{offset, CommonConfig};
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestMemory;
use zerocopy::little_endian::{U16, U32, U64};

use crate::interrupts::MsixInterrupts;

/// The transport's own common-configuration registers (the rest lives in the core).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Selectors {
    pub(crate) device_feature_select: u32,
    pub(crate) driver_feature_select: u32,
    pub(crate) queue_select: u16,
}

/// The admin queues of an owner function: the last `num` queues of its core, from `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AdminQueues {
    pub(crate) index: u16,
    pub(crate) num: u16,
}

/// Whether queue `q` exists for the driver: every queue of the core, except that admin queues
/// exist only once VIRTIO_F_ADMIN_VQ is negotiated (spec: the admin queue fields are valid
/// only then).
fn queue_visible<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
    admin: Option<AdminQueues>,
    q: u16,
) -> bool {
    match admin {
        Some(a) if q >= a.index => core.negotiated(Feature::AdminVq),
        _ => true,
    }
}

/// The selected 32-bit word of a 64-bit feature set (words past the second read 0).
fn feature_word(features: u64, select: u32) -> u32 {
    match select {
        0 => features as u32,
        1 => (features >> 32) as u32,
        _ => 0,
    }
}

/// Whether the seed 001 queue state registers are present: VIRTIO_F_QUEUE_STATE negotiated, or
/// (seed 001: the driver reads state after a reset) the device is reset and offers it.
fn queue_state_present<M: GuestMemory + Send + Sync + 'static>(
    core: &DeviceCore<M>,
    device_status: DeviceStatus,
) -> bool {
    let offered = core
        .profile()
        .mask(Feature::QueueState)
        .is_some_and(|m| core.device_features() & m != 0);
    core.negotiated(Feature::QueueState) || (device_status.is_empty() && offered)
}

/// The common configuration as the driver would read it now.
pub(crate) fn snapshot<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    irq: &MsixInterrupts,
    sel: &Selectors,
    admin: Option<AdminQueues>,
) -> CommonConfig {
    let device_status = core.status();
    let q = sel.queue_select;
    let mut cfg = CommonConfig {
        device_feature_select: U32::new(sel.device_feature_select),
        device_feature: U32::new(feature_word(
            core.device_features(),
            sel.device_feature_select,
        )),
        driver_feature_select: U32::new(sel.driver_feature_select),
        driver_feature: U32::new(feature_word(
            core.driver_features(),
            sel.driver_feature_select,
        )),
        config_msix_vector: U16::new(irq.config_vector()),
        // Admin queues are not counted in num_queues (virtio 1.4 "Administration Facilities").
        num_queues: U16::new(core.num_queues() - admin.map_or(0, |a| a.num)),
        device_status: device_status.bits(),
        config_generation: core.config_generation(),
        queue_select: U16::new(q),
        ..CommonConfig::default()
    };
    // A queue_select past the last queue reads 0 in every queue field: queue_size 0 tells the
    // driver the queue does not exist.
    if let Some(a) = admin {
        cfg.admin_queue_index = U16::new(a.index);
        cfg.admin_queue_num = U16::new(a.num);
    }
    let regs = core
        .queue(q)
        .copied()
        .filter(|_| queue_visible(core, admin, q));
    if let Some(regs) = regs {
        cfg.queue_size = U16::new(regs.size);
        cfg.queue_msix_vector = U16::new(irq.queue_vector(q));
        cfg.queue_enable = U16::new(u16::from(regs.enabled));
        cfg.queue_notify_off = U16::new(q);
        cfg.queue_desc = U64::new(regs.desc);
        cfg.queue_driver = U64::new(regs.driver);
        cfg.queue_device = U64::new(regs.device);
        if queue_state_present(core, device_status) {
            cfg.queue_avail_state = U16::new(core.queue_avail_state(q));
            cfg.queue_used_state = U16::new(core.queue_used_state(q));
        }
    }
    // queue_notif_config_data (56): NOTIF_CONFIG_DATA is never offered. queue_reset (58) reads
    // 0 at all times with RING_RESET: the reset completes under the core lock before the next
    // read (spec-decisions §16). admin_queue_index/num (60/62): 0 unless an owner.
    cfg
}

/// Which half of a 64-bit queue address register an access touches.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
    Whole,
}

fn merge(old: u64, value: u64, half: Half) -> u64 {
    match half {
        Half::Low => (old & !0xffff_ffff) | (value & 0xffff_ffff),
        Half::High => (old & 0xffff_ffff) | (value << 32),
        Half::Whole => value,
    }
}

/// Decodes a queue address access: (register base, half) for 4-byte accesses at either half and
/// 8-byte accesses at the start of `queue_desc`, `queue_driver` or `queue_device`.
fn address_access(off: usize, len: usize) -> Option<(usize, Half)> {
    const BASES: [usize; 3] = [
        offset::QUEUE_DESC,
        offset::QUEUE_DRIVER,
        offset::QUEUE_DEVICE,
    ];
    BASES
        .iter()
        .find_map(|&base| match (off.checked_sub(base)?, len) {
            (0, 4) => Some((base, Half::Low)),
            (4, 4) => Some((base, Half::High)),
            (0, 8) => Some((base, Half::Whole)),
            _ => None,
        })
}

/// Whether `off` is a field selected by `queue_select` (queue_size through queue_used_state).
fn is_queue_field(off: usize) -> bool {
    (offset::QUEUE_SIZE..offset::QUEUE_NOTIF_CONFIG_DATA).contains(&off)
        || off == offset::QUEUE_AVAIL_STATE
        || off == offset::QUEUE_USED_STATE
}

/// What a write did that the function must follow up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteEffect {
    /// Nothing beyond the register.
    None,
    /// The driver wrote 0 to device_status: the device was reset.
    Reset,
}

/// A driver write of `value` (`len` bytes, little-endian) at common-configuration offset `off`.
/// Only natural accesses are decoded (spec: the driver accesses each field with its own width;
/// 64-bit fields also as two 32-bit halves); others, and writes to read-only or absent fields,
/// are ignored.
pub(crate) fn write<M: GuestMemory + Send + Sync + 'static>(
    core: &mut DeviceCore<M>,
    irq: &MsixInterrupts,
    sel: &mut Selectors,
    admin: Option<AdminQueues>,
    (off, len): (usize, usize),
    value: u64,
) -> WriteEffect {
    if core.admin_mode() != DevMode::Active {
        // Seed 004: in Freeze "any write access to virtio configuration space MUST not update
        // any fields"; in Stop we ignore them too (see the core's admin modes).
        return WriteEffect::None;
    }
    let q = sel.queue_select;
    if !queue_visible(core, admin, q) && is_queue_field(off) {
        return WriteEffect::None;
    }
    let v16 = value as u16;
    match (off, len) {
        (offset::DEVICE_FEATURE_SELECT, 4) => sel.device_feature_select = value as u32,
        (offset::DRIVER_FEATURE_SELECT, 4) => sel.driver_feature_select = value as u32,
        (offset::DRIVER_FEATURE, 4) => {
            // Read-modify-write of the selected half; the core accepts features only between
            // DRIVER and FEATURES_OK.
            let current = core.driver_features();
            let features = match sel.driver_feature_select {
                0 => merge(current, value, Half::Low),
                1 => merge(current, value, Half::High),
                _ => return WriteEffect::None,
            };
            core.set_driver_features(features);
        }
        (offset::CONFIG_MSIX_VECTOR, 2) => {
            // Frozen while stopped or suspended, as the queue vectors (spec-decisions §2).
            if !core.quiesced_in_band() {
                irq.set_config_vector(v16);
            }
        }
        (offset::DEVICE_STATUS, 1) => {
            core.write_status(DeviceStatus::from_bits_retain(value as u8));
            if value == 0 {
                irq.reset();
                *sel = Selectors::default();
                return WriteEffect::Reset;
            }
        }
        (offset::QUEUE_SELECT, 2) => sel.queue_select = v16,
        (offset::QUEUE_SIZE, 2) => core.write_queue(q, |r| r.size = v16),
        (offset::QUEUE_MSIX_VECTOR, 2) => {
            // Interrupt routing may change at any time except while the device is quiescent
            // (spec-decisions §2: while suspended only queue state may be written).
            if !core.quiesced_in_band() && core.queue(q).is_some() {
                irq.set_queue_vector(q, v16);
            }
        }
        (offset::QUEUE_ENABLE, 2) => {
            // The driver must not write 0; a 0 is ignored.
            if v16 == 1 {
                core.write_queue(q, |r| r.enabled = true);
            }
        }
        (offset::QUEUE_RESET, 2) => {
            if v16 == 1 && queue_visible(core, admin, q) && core.reset_queue(q) {
                irq.set_queue_vector(q, VIRTIO_MSI_NO_VECTOR);
            }
        }
        (offset::QUEUE_AVAIL_STATE, 2) => {
            if core.negotiated(Feature::QueueState) {
                core.set_queue_avail_state(q, v16);
            }
        }
        (offset::QUEUE_USED_STATE, 2) => {
            if core.negotiated(Feature::QueueState) {
                core.set_queue_used_state(q, v16);
            }
        }
        _ => {
            if let Some((base, half)) = address_access(off, len) {
                core.write_queue(q, |r| {
                    let reg = match base {
                        offset::QUEUE_DESC => &mut r.desc,
                        offset::QUEUE_DRIVER => &mut r.driver,
                        _ => &mut r.device,
                    };
                    *reg = merge(*reg, value, half);
                });
            }
            // Everything else is read-only (device_feature, num_queues, config_generation,
            // queue_notify_off, 56-62) or not a natural access: ignored.
        }
    }
    WriteEffect::None
}
