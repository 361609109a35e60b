//! The device-type configuration space in the device context (seed 004: "The device MUST
//! respond with an error for the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if there is a mismatch
//! between the device context field length supplied in the VIRTIO_ADMIN_CMD_DEV_CTX_WRITE data
//! and the length of the field in the device"; spec-decisions §5: DEVICE_CONFIG carries the
//! whole configuration space, read-only configuration must match the receiving device,
//! driver-writable configuration is applied after the device-type state).
//!
//! The device under test has a real configuration space: four read-only bytes (a "capacity"
//! chosen at construction) and one driver-writable byte (a "setting", 0 or 1), which its
//! device-specific state also carries, as blk's BLK_WRITEBACK does.

mod common;

use common::context::refused;
use common::{bit, CoreDriver, STOPPED};
use virtio_lm_device::context::{persist, DeviceField, Persist, ValidatedState};
use virtio_lm_device::{ContextError, DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::Feature;

/// Offset of the driver-writable byte.
const SETTING: usize = 4;
/// Bytes of configuration space.
const CONFIG_LEN: usize = 8;
/// The device-specific field carrying the setting.
const SETTING_FIELD: FieldType = FieldType(0x0201);

struct ConfigDevice {
    capacity: u32,
    setting: u8,
}

impl Persist for ConfigDevice {
    type State = u8;

    fn save(&self) -> u8 {
        self.setting
    }

    fn encode(setting: &u8) -> Vec<DeviceField> {
        vec![DeviceField {
            field_type: SETTING_FIELD,
            flags: 0,
            value: vec![*setting],
        }]
    }

    fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<u8, DeviceError> {
        let setting = match fields {
            [f] if f.field_type == SETTING_FIELD && matches!(f.value[..], [0 | 1]) => f.value[0],
            _ => return Err(DeviceError::BadState("setting")),
        };
        let mut own = [0; CONFIG_LEN];
        self.read_config(0, &mut own);
        match config.get(SETTING) {
            Some(&v @ (0 | 1)) => own[SETTING] = v,
            _ => return Err(DeviceError::ConfigMismatch { offset: SETTING }),
        }
        persist::check_read_only_config(&own, config)?;
        Ok(setting)
    }

    fn restore(&mut self, setting: u8) {
        self.setting = setting;
    }
}

impl VirtioDevice<common::Mem> for ConfigDevice {
    virtio_lm_device::device_identity!(type: 0xfffd, queues: [8], config: CONFIG_LEN);

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut bytes = [0u8; CONFIG_LEN];
        bytes[..4].copy_from_slice(&self.capacity.to_le_bytes());
        bytes[SETTING] = self.setting;
        virtio_lm_device::read_config_bytes(&bytes, offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        if let Some(&v) = SETTING.checked_sub(offset).and_then(|i| data.get(i)) {
            if v <= 1 {
                self.setting = v;
            }
        }
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, common::Mem>,
    ) -> Result<(), DeviceError> {
        queue.complete_each(|_, _| Ok(0))
    }

    fn reset(&mut self) {
        self.setting = 0;
    }

    fn save_state(&self) -> Vec<DeviceField> {
        persist::save(self)
    }

    fn decode_state(
        &self,
        fields: &[DeviceField],
        config: &[u8],
    ) -> Result<ValidatedState, DeviceError> {
        persist::decode(self, fields, config)
    }

    fn restore_state(&mut self, state: ValidatedState) {
        persist::restore(self, state)
    }
}

fn device(capacity: u32) -> Box<ConfigDevice> {
    Box::new(ConfigDevice {
        capacity,
        setting: 0,
    })
}

fn features() -> u64 {
    bit(Feature::Version1) | bit(Feature::DeviceStop)
}

/// A stopped source with capacity 0x01020304 whose driver wrote the setting 1.
fn source() -> CoreDriver {
    let mut d = CoreDriver::new(device(0x0102_0304));
    d.start(features());
    d.core.write_config(SETTING, &[1]);
    d.core.write_status(STOPPED);
    assert_eq!(d.core.status(), STOPPED);
    d
}

/// A destination of `src` around a device of `capacity`.
fn destination_of(src: &mut CoreDriver, capacity: u32) -> CoreDriver {
    common::context::destination(
        src,
        device(capacity),
        virtio_lm_device::CoreOptions::default(),
    )
}

fn config(d: &CoreDriver) -> Vec<u8> {
    let mut c = vec![0; CONFIG_LEN];
    d.core.read_config(0, &mut c);
    c
}

/// spec-decisions §5 (DEVICE_CONFIG "device-type config space bytes"): a saved context carries
/// the whole configuration space as the driver sees it, including what the driver wrote.
#[test]
fn device_config_travels_whole() {
    let src = source();
    let ctx = src.core.save_context().unwrap();
    assert_eq!(ctx.device_config, [4, 3, 2, 1, 1, 0, 0, 0]);
    assert_eq!(ctx.device_config, config(&src));
}

/// Seed 004: "The device MUST respond with an error for the command
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if there is a mismatch between the device context field
/// length supplied in the VIRTIO_ADMIN_CMD_DEV_CTX_WRITE data and the length of the field in
/// the device." Every field of variable encoding is checked: DEVICE_CONFIG shorter or longer
/// than the configuration space, DEVICE_FEATURES and DRIVER_FEATURES with another number of
/// feature words (even zero words), and nothing changes.
#[test]
fn field_lengths_must_match_the_device() {
    let mut src = source();
    let ctx = src.core.save_context().unwrap();
    let mut dst = destination_of(&mut src, 0x0102_0304);
    type Edit = fn(&mut virtio_lm_device::DeviceContext);
    let cases: [(Edit, FieldType, usize, usize); 5] = [
        (
            |c| {
                c.device_config.pop();
            },
            FieldType::DEVICE_CONFIG,
            CONFIG_LEN - 1,
            CONFIG_LEN,
        ),
        (
            |c| c.device_config.push(0),
            FieldType::DEVICE_CONFIG,
            CONFIG_LEN + 1,
            CONFIG_LEN,
        ),
        (
            |c| c.device_config.clear(),
            FieldType::DEVICE_CONFIG,
            0,
            CONFIG_LEN,
        ),
        (
            |c| c.device_features.push(0),
            FieldType::DEVICE_FEATURES,
            16,
            8,
        ),
        (
            |c| c.driver_features.push(0),
            FieldType::DRIVER_FEATURES,
            16,
            8,
        ),
    ];
    for (edit, field_type, length, device) in cases {
        let mut bad = ctx.clone();
        edit(&mut bad);
        let want = ContextError::FieldLength {
            field_type,
            length,
            device,
        };
        refused(&mut dst, &bad, &want);
    }
    dst.core.restore_context(&ctx).unwrap();
    assert_eq!(dst.core.save_context().unwrap(), ctx);
}

/// spec-decisions §5: read-only configuration is compared with the receiving device's, and a
/// mismatch refuses the context (a destination with another capacity cannot take over the
/// source's driver); a driver-writable byte holding a value the driver cannot write is refused
/// too.
#[test]
fn read_only_config_must_match_the_receiving_device() {
    let mut src = source();
    let ctx = src.core.save_context().unwrap();
    let mut other = destination_of(&mut src, 0x0102_0305);
    refused(
        &mut other,
        &ctx,
        &ContextError::DeviceConfigMismatch { offset: 0 },
    );
    let mut same = CoreDriver::new(device(0x0102_0304));
    // A value the driver cannot write into the writable byte; a differing read-only byte.
    for (offset, value) in [(SETTING, 2), (6, 1)] {
        let mut bad = ctx.clone();
        bad.device_config[offset] = value;
        let mismatch = ContextError::DeviceConfigMismatch { offset };
        refused(&mut same, &bad, &mismatch);
    }
}

/// spec-decisions §5: driver-writable configuration is applied after the device-type state, so
/// the configuration the context carries is the one the destination presents, even where the
/// device-specific state says otherwise.
#[test]
fn writable_config_is_applied_after_the_device_state() {
    let mut src = source();
    let mut ctx = src.core.save_context().unwrap();
    assert_eq!(ctx.device_fields[0].value, [1], "state carries the setting");
    ctx.device_fields[0].value = vec![0];
    let mut dst = destination_of(&mut src, 0x0102_0304);
    dst.core.restore_context(&ctx).unwrap();
    assert_eq!(config(&dst)[SETTING], 1, "DEVICE_CONFIG wins");
    assert_eq!(dst.core.status(), STOPPED);
    let mut ctx0 = ctx.clone();
    ctx0.device_fields[0].value = vec![1];
    ctx0.device_config[SETTING] = 0;
    dst.core.restore_context(&ctx0).unwrap();
    assert_eq!(config(&dst)[SETTING], 0, "DEVICE_CONFIG wins either way");
}
