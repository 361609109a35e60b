//! The destination's check of the ring positions before it sends Ready (spec-decisions §32):
//! the device parts it received and the guest memory it received, checked without a member.

use virtio_lm_device::context::{QueueContext, VqConfig, VIRTIO_MSI_NO_VECTOR};
use virtio_lm_device::DeviceContext;
use virtio_lm_queue::{QueueState, RingKind};
use virtio_lm_spec::parts::{part_type, Part, VqCfg};
use virtio_lm_spec::Profile;
use vm_memory::GuestMemory;
use zerocopy::FromBytes;

use super::codec::selector_u16;

/// Checks that every queue the device `parts` (as DEV_PARTS_GET returned them) run has a sound
/// ring position in `mem` (split: `used.idx` against `avail.idx` and the size; packed: the
/// position the stopped source recorded, which needs EVENT_IDX), as the resume after
/// DEV_PARTS_SET will find it. `Err` names the queue, the values read and why they are
/// inconsistent. Parts this check does not need are skipped; malformed ones are left to
/// DEV_PARTS_SET to refuse, except a VQ_CFG naming a queue beyond 1024, refused here.
pub fn check_ring_positions<M: GuestMemory + ?Sized>(
    parts: &[Part],
    mem: &M,
) -> Result<(), String> {
    context_of(parts)?
        .ring_positions(Profile::V1_4, mem)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Queues a received VQ_CFG may name: bounds the work a hostile part list can ask for (each
/// packed queue's check reads up to 32768 descriptors).
const MAX_CHECKED_QUEUES: usize = 1024;

/// The part of a context the positions depend on: driver features, status, queue registers.
fn context_of(parts: &[Part]) -> Result<DeviceContext, String> {
    let mut ctx = DeviceContext {
        device_features: vec![0],
        driver_features: vec![0],
        device_status: 0,
        config_generation: 0,
        device_config: Vec::new(),
        config_msix_vector: VIRTIO_MSI_NO_VECTOR,
        queues: Vec::new(),
        device_fields: Vec::new(),
    };
    for part in parts {
        match part.hdr.part_type() {
            part_type::DRV_FEATURES => {
                if let Ok(word) = <[u8; 8]>::try_from(part.value.as_slice()) {
                    ctx.driver_features = vec![u64::from_le_bytes(word)];
                }
            }
            part_type::DEVICE_STATUS => {
                if let [status] = part.value[..] {
                    ctx.device_status = status;
                }
            }
            part_type::VQ_CFG => {
                let Ok(cfg) = VqCfg::read_from_bytes(&part.value) else {
                    continue;
                };
                let index = usize::from(selector_u16(part));
                if index >= MAX_CHECKED_QUEUES {
                    return Err(format!(
                        "VQ_CFG for queue {index}: no device here has more than \
                         {MAX_CHECKED_QUEUES} queues"
                    ));
                }
                if ctx.queues.len() <= index {
                    ctx.queues.resize(index + 1, unused_queue());
                }
                ctx.queues[index].config = VqConfig {
                    size: cfg.queue_size.get(),
                    msix_vector: cfg.vector.get(),
                    enabled: cfg.enabled.get() == 1,
                    desc: cfg.queue_desc.get(),
                    driver: cfg.queue_driver.get(),
                    device: cfg.queue_device.get(),
                };
            }
            _ => {}
        }
    }
    Ok(ctx)
}

fn unused_queue() -> QueueContext {
    QueueContext {
        config: VqConfig {
            size: 0,
            msix_vector: VIRTIO_MSI_NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        },
        state: QueueState::initial(RingKind::Split),
    }
}
