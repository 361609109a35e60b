//! The Config section: what the destination checks against its own VM before it accepts anything
//! else (memory layout, devices, negotiated features, numbering profile, read-only device
//! configuration), encoded with serde + postcard.

use serde::{Deserialize, Serialize};
use virtio_lm_spec::Profile;

use crate::header::PAGE_SIZE;

/// Most memory regions a configuration may list.
pub const MAX_REGIONS: usize = 64;

/// Most devices a configuration may list.
pub const MAX_DEVICES: usize = 256;

/// Most bytes of one device's read-only configuration space (the device crate's
/// `MAX_DEVICE_CONFIG_LEN`).
pub const MAX_DEVICE_CONFIG: usize = 4096;

/// The migrating VM's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Guest RAM regions, ascending and disjoint.
    pub memory: Vec<MemoryRegion>,
    /// The feature-bit numbering every device uses.
    #[serde(with = "profile_code")]
    pub profile: Profile,
    /// The migrating devices, ids unique.
    pub devices: Vec<DeviceConfig>,
}

/// One guest RAM region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    /// Guest-physical start, page aligned.
    pub guest_addr: u64,
    /// Length in bytes, a non-zero multiple of the page size.
    pub size: u64,
}

impl MemoryRegion {
    /// One past the last byte; `None` only for a region that fails [`VmConfig::validate`].
    pub fn end(&self) -> Option<u64> {
        self.guest_addr.checked_add(self.size)
    }
}

/// One migrating device, as the destination must have it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// The id the DeviceContext sections name (the member's id under its owner).
    pub id: u32,
    /// The virtio device type (2 block, 1 network, ...).
    pub device_type: u32,
    /// The features the driver negotiated.
    pub negotiated_features: u64,
    /// Number of virtqueues.
    pub num_queues: u16,
    /// The read-only part of the device configuration space.
    pub config_space: Vec<u8>,
}

impl VmConfig {
    /// Checks the rules a configuration must meet to be sent or accepted; the reason names the
    /// offending entry. (Whether it matches the destination's own VM is the engine's check.)
    pub fn validate(&self) -> Result<(), String> {
        if self.memory.len() > MAX_REGIONS {
            return Err(format!(
                "{} memory regions, limit {MAX_REGIONS}",
                self.memory.len()
            ));
        }
        let page = PAGE_SIZE as u64;
        let mut prev_end = 0u64;
        for (i, r) in self.memory.iter().enumerate() {
            if !r.guest_addr.is_multiple_of(page) || r.size == 0 || !r.size.is_multiple_of(page) {
                return Err(format!(
                    "memory region {i} ({:#x}, {:#x} bytes) is not whole pages",
                    r.guest_addr, r.size
                ));
            }
            let Some(end) = r.end() else {
                return Err(format!("memory region {i} overflows the address space"));
            };
            if i > 0 && r.guest_addr < prev_end {
                return Err(format!(
                    "memory region {i} at {:#x} overlaps or precedes the one before",
                    r.guest_addr
                ));
            }
            prev_end = end;
        }
        if self.devices.len() > MAX_DEVICES {
            return Err(format!(
                "{} devices, limit {MAX_DEVICES}",
                self.devices.len()
            ));
        }
        for (i, d) in self.devices.iter().enumerate() {
            if d.config_space.len() > MAX_DEVICE_CONFIG {
                return Err(format!(
                    "device {} has {} bytes of configuration, limit {MAX_DEVICE_CONFIG}",
                    d.id,
                    d.config_space.len()
                ));
            }
            if self.devices[..i].iter().any(|o| o.id == d.id) {
                return Err(format!("device id {} listed twice", d.id));
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        postcard::to_allocvec(self).map_err(|e| e.to_string())
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, String> {
        let (config, rest): (VmConfig, _) =
            postcard::take_from_bytes(payload).map_err(|e| format!("postcard: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the configuration", rest.len()));
        }
        config.validate()?;
        Ok(config)
    }
}

/// The profile travels as a one-byte code, so the spec crate needs no serde.
mod profile_code {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};
    use virtio_lm_spec::Profile;

    pub fn serialize<S: Serializer>(p: &Profile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match p {
            Profile::Seeds => 0,
            Profile::V1_4 => 1,
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Profile, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Profile::Seeds),
            1 => Ok(Profile::V1_4),
            other => Err(D::Error::custom(format!("unknown profile code {other}"))),
        }
    }
}
