//! The blk part of the device context (spec-decisions §5, types 0x0200–0x02FF) as a typed
//! state ([`Persist`]): the device crate's context codec frames the fields, this module only
//! gives their values a meaning.
//!
//! | Type | Name | Value |
//! |---|---|---|
//! | 0x0200 | BLK_WRITEBACK (mandatory, exactly once) | `u8`: 0 writethrough, 1 writeback |
//!
//! Rules: every type is in 0x0200–0x02FF; flags bits other than OPTIONAL (bit 0) are 0; an
//! unknown type is skipped if OPTIONAL and refused otherwise; BLK_WRITEBACK appears once, is one
//! byte long and holds 0 or 1.
//!
//! DEVICE_CONFIG (the 60 bytes of `struct virtio_blk_config`) is checked here too: every field
//! but `writeback` is read-only (capacity, size_max, seg_max, blk_size, num_queues, the discard
//! and write-zeroes limits) and must be what this device presents, so a destination with
//! another image size or queue count refuses the context; `writeback` must be 0 or 1. The core
//! writes the configuration back after the state, so the context's `writeback` byte is the one
//! that holds.

use virtio_lm_device::context::{DeviceField, Persist, StateFields};
use virtio_lm_device::DeviceError;
use virtio_lm_spec::context::FieldType;

use super::config::offset;
use super::Blk;

/// The device-specific state a blk device saves: its [`Persist::State`], a validated value
/// (only [`Persist::decode`] and [`Persist::save`] make one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkState {
    writeback: u8,
}

impl BlkState {
    /// `writeback`: 0 writethrough, 1 writeback.
    pub fn writeback(&self) -> u8 {
        self.writeback
    }
}

/// The blk-specific types this device knows.
const KNOWN: [FieldType; 1] = [FieldType::BLK_WRITEBACK];

impl Persist for Blk {
    type State = BlkState;

    fn save(&self) -> BlkState {
        BlkState {
            writeback: self.values.writeback,
        }
    }

    fn encode(state: &BlkState) -> Vec<DeviceField> {
        vec![DeviceField {
            field_type: FieldType::BLK_WRITEBACK,
            flags: 0,
            value: vec![state.writeback],
        }]
    }

    fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<BlkState, DeviceError> {
        let bad = DeviceError::BadState;
        let fields = StateFields::new(fields, &KNOWN, FieldType::is_blk_specific)?;
        let writeback =
            match fields.require(FieldType::BLK_WRITEBACK, "blk state: BLK_WRITEBACK missing")? {
                [v @ (0 | 1)] => *v,
                [_] => return Err(bad("blk state: BLK_WRITEBACK is not 0 or 1")),
                _ => return Err(bad("blk state: BLK_WRITEBACK length is not 1")),
            };
        let written = config.get(offset::WRITEBACK).copied();
        let mut expected = self.values;
        expected.writeback = match written {
            Some(v @ (0 | 1)) => v,
            _ => {
                return Err(DeviceError::ConfigMismatch {
                    offset: offset::WRITEBACK,
                })
            }
        };
        virtio_lm_device::context::persist::check_read_only_config(&expected.bytes(), config)?;
        Ok(BlkState { writeback })
    }

    fn restore(&mut self, state: BlkState) {
        self.values.writeback = state.writeback;
    }
}
