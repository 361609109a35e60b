//! virtio-blk's device parts: a project extension (spec-decisions §17). virtio 1.4 defines no
//! part for a device's configuration space, so `writeback` (which the driver may change) and
//! a check of `capacity` would not travel; two OPTIONAL parts in blk's device-type range carry
//! them, and a standard receiver may ignore them.
//!
//! | Type | Value | On SET |
//! |---|---|---|
//! | 0x200 BLK_WRITEBACK | `u8 writeback` (0 or 1) | applied |
//! | 0x201 BLK_CAPACITY | `le64 capacity` in sectors | validated (must be the destination's), never applied |

use virtio_lm_device::context::DeviceContext;
use virtio_lm_pci::admin::DevicePartsCodec;
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::parts::{Part, BLK_CAPACITY, BLK_WRITEBACK, PART_F_OPTIONAL};

use super::config::offset;

/// The blk codec of device parts.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkParts;

impl DevicePartsCodec for BlkParts {
    fn save(&self, ctx: &DeviceContext) -> Vec<Part> {
        let config = &ctx.device_config;
        let writeback = config.get(offset::WRITEBACK).copied().unwrap_or(0);
        let capacity = config
            .get(offset::CAPACITY..offset::CAPACITY + 8)
            .unwrap_or(&[0; 8])
            .to_vec();
        vec![
            Part::new(BLK_WRITEBACK, PART_F_OPTIONAL, [0; 8], vec![writeback]),
            Part::new(BLK_CAPACITY, PART_F_OPTIONAL, [0; 8], capacity),
        ]
    }

    fn load(&self, parts: &[Part], ctx: &mut DeviceContext) -> Result<(), &'static str> {
        for p in parts {
            match (p.hdr.part_type(), p.value.as_slice()) {
                (BLK_WRITEBACK, [w @ (0 | 1)]) => {
                    let slot = ctx
                        .device_config
                        .get_mut(offset::WRITEBACK)
                        .ok_or("blk configuration space too short")?;
                    *slot = *w;
                    for f in &mut ctx.device_fields {
                        if f.field_type == FieldType::BLK_WRITEBACK {
                            f.value = vec![*w];
                        }
                    }
                }
                (BLK_WRITEBACK, _) => return Err("BLK_WRITEBACK not one byte 0 or 1"),
                (BLK_CAPACITY, value) => {
                    let own = ctx
                        .device_config
                        .get(offset::CAPACITY..offset::CAPACITY + 8);
                    if own != Some(value) {
                        return Err("BLK_CAPACITY differs from the destination's");
                    }
                }
                _ if p.hdr.is_optional() => {}
                _ => return Err("a blk part this device does not know"),
            }
        }
        Ok(())
    }
}
