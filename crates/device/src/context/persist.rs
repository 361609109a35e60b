//! Typed device-type state: what a device type saves beyond the generic fields of a context
//! (its device-specific fields 0x0200–0x03FF, spec-decisions §5), as a value of its own type.
//!
//! Compare Firecracker's `Persist { type State; fn save; fn restore }`: a device type implements
//! [`Persist`] with a plain `State`, and its [`crate::VirtioDevice`] implementation forwards
//! the object-safe seam ([`crate::VirtioDevice::save_state`],
//! [`crate::VirtioDevice::decode_state`], [`crate::VirtioDevice::restore_state`]) to
//! [`save`], [`decode`] and [`restore`] here. The seam is object-safe because the core holds its
//! device as `Box<dyn VirtioDevice<M>>`; the validated value crosses it type-erased, in a
//! [`ValidatedState`].
//!
//! Decoding is validation: [`Persist::decode`] is the one place a device-specific field or the
//! device's configuration space (DEVICE_CONFIG) can be refused, and what it returns is the value
//! [`Persist::restore`] applies, which cannot fail. The device type never sees bytes of the
//! field framing: the one context codec ([`super::ContextReader`], [`super::ContextWriter`])
//! frames and pads, and the device type works on [`DeviceField`] values.

use std::any::Any;

use virtio_lm_spec::context::{FieldType, FIELD_FLAG_OPTIONAL};

use super::model::DeviceField;
use crate::error::DeviceError;

/// A device type's own state, typed.
pub trait Persist {
    /// Everything the device type keeps that is in neither the configuration space nor the
    /// queues (for blk: `writeback`; for net: the control queue's filters and announce state).
    type State: Send + 'static;

    /// The state as it stands.
    fn save(&self) -> Self::State;

    /// The state as device-specific fields, in the order a context carries them.
    fn encode(state: &Self::State) -> Vec<DeviceField>;

    /// Decodes `fields` for this device and checks the context's configuration space `config`
    /// (exactly [`crate::VirtioDevice::config_len`] bytes, the core checked the length) against
    /// the device's: read-only configuration must be what this device would present with the
    /// decoded state, and driver-writable fields must hold values the driver could have
    /// written. Changes nothing.
    fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<Self::State, DeviceError>;

    /// Applies a state [`Self::decode`] returned for this device.
    fn restore(&mut self, state: Self::State);
}

/// A device-type state that its device's `decode_state` accepted, type-erased so it can cross
/// the object-safe [`crate::VirtioDevice`] seam. Only [`decode`] (and [`ValidatedState::none`])
/// make one, so holding one means the device validated it.
pub struct ValidatedState(Option<Box<dyn Any + Send>>);

impl std::fmt::Debug for ValidatedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ValidatedState(..)"
        } else {
            "ValidatedState(none)"
        })
    }
}

impl ValidatedState {
    /// The state of a device type that keeps none.
    pub fn none() -> Self {
        Self(None)
    }
}

/// [`crate::VirtioDevice::save_state`] for a [`Persist`] device type.
pub fn save<P: Persist>(device: &P) -> Vec<DeviceField> {
    P::encode(&device.save())
}

/// [`crate::VirtioDevice::decode_state`] for a [`Persist`] device type.
pub fn decode<P: Persist>(
    device: &P,
    fields: &[DeviceField],
    config: &[u8],
) -> Result<ValidatedState, DeviceError> {
    let state = device.decode(fields, config)?;
    Ok(ValidatedState(Some(Box::new(state))))
}

/// [`crate::VirtioDevice::restore_state`] for a [`Persist`] device type.
///
/// The core restores only what the same device decoded in the same restore, so the value is
/// always a `P::State`; anything else (a caller mixing up devices) is not this device's state
/// and changes nothing.
pub fn restore<P: Persist>(device: &mut P, state: ValidatedState) {
    if let Some(state) = state.0.and_then(|s| s.downcast::<P::State>().ok()) {
        device.restore(*state);
    }
}

/// The object-safe seam of a [`Persist`] device type: expands, inside its
/// `impl VirtioDevice<M> for …` block, to `save_state`, `decode_state` and `restore_state`
/// forwarding to [`save`], [`decode`] and [`restore`], so every device type wires the seam the
/// same way.
///
/// ```
/// use virtio_lm_device::context::{DeviceField, Persist};
/// use virtio_lm_device::{persist_seam, DeviceError, QueueAccess, VirtioDevice};
/// use vm_memory::GuestMemory;
///
/// /// A device type whose state is one byte, carried in device-specific field 0x0300.
/// struct Counter(u8);
///
/// impl Persist for Counter {
///     type State = u8;
///     fn save(&self) -> u8 {
///         self.0
///     }
///     fn encode(state: &u8) -> Vec<DeviceField> {
///         vec![DeviceField::new(virtio_lm_spec::context::FieldType(0x0300), vec![*state])]
///     }
///     fn decode(&self, fields: &[DeviceField], _config: &[u8]) -> Result<u8, DeviceError> {
///         match fields {
///             [f] if f.value.len() == 1 => Ok(f.value[0]),
///             _ => Err(DeviceError::BadState("one byte")),
///         }
///     }
///     fn restore(&mut self, state: u8) {
///         self.0 = state;
///     }
/// }
///
/// impl<M: GuestMemory + ?Sized> VirtioDevice<M> for Counter {
///     fn device_type(&self) -> u32 {
///         0xfffc
///     }
///     fn queue_max_sizes(&self) -> Vec<u16> {
///         vec![8]
///     }
///     fn config_len(&self) -> usize {
///         0
///     }
///     fn process_queue(&mut self, _: u16, _: &mut QueueAccess<'_, M>) -> Result<(), DeviceError> {
///         Ok(())
///     }
///     persist_seam!();
/// }
///
/// let mut device = Counter(7);
/// let fields = VirtioDevice::<vm_memory::GuestMemoryMmap>::save_state(&device);
/// let state = VirtioDevice::<vm_memory::GuestMemoryMmap>::decode_state(&device, &fields, &[]);
/// device.0 = 0;
/// VirtioDevice::<vm_memory::GuestMemoryMmap>::restore_state(&mut device, state.unwrap());
/// assert_eq!(device.0, 7);
/// ```
#[macro_export]
macro_rules! persist_seam {
    () => {
        fn save_state(&self) -> ::std::vec::Vec<$crate::context::DeviceField> {
            $crate::context::persist::save(self)
        }

        fn decode_state(
            &self,
            fields: &[$crate::context::DeviceField],
            config: &[u8],
        ) -> ::std::result::Result<$crate::context::ValidatedState, $crate::DeviceError> {
            $crate::context::persist::decode(self, fields, config)
        }

        fn restore_state(&mut self, state: $crate::context::ValidatedState) {
            $crate::context::persist::restore(self, state)
        }
    };
}

/// The default configuration check of a device type whose configuration space is read-only:
/// `config` must be byte for byte what the device presents.
pub fn check_read_only_config(own: &[u8], config: &[u8]) -> Result<(), DeviceError> {
    match own.iter().zip(config).position(|(a, b)| a != b) {
        Some(offset) => Err(DeviceError::ConfigMismatch { offset }),
        None if own.len() != config.len() => Err(DeviceError::ConfigMismatch {
            offset: own.len().min(config.len()),
        }),
        None => Ok(()),
    }
}

/// The device-specific fields of a context as one device type reads them (spec-decisions §5:
/// "a receiver skips an unknown optional field and rejects an unknown mandatory one").
///
/// [`StateFields::new`] checks, for all device types alike: every type is in the device type's
/// range; flag bits other than OPTIONAL are 0; an unknown type is skipped when OPTIONAL and
/// refused otherwise; a known type appears at most once. The device type then takes its values
/// with [`StateFields::get`] or [`StateFields::require`].
#[derive(Debug)]
pub struct StateFields<'a> {
    known: &'a [FieldType],
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> StateFields<'a> {
    /// Sorts `fields` into the `known` types of a device type whose types all satisfy
    /// `in_range` (e.g. [`FieldType::is_blk_specific`]).
    pub fn new(
        fields: &'a [DeviceField],
        known: &'a [FieldType],
        in_range: fn(FieldType) -> bool,
    ) -> Result<Self, DeviceError> {
        let bad = DeviceError::BadState;
        let mut values = vec![None; known.len()];
        for field in fields {
            if !in_range(field.field_type) {
                return Err(bad("a field outside this device type's range"));
            }
            if field.flags & !FIELD_FLAG_OPTIONAL != 0 {
                return Err(bad("reserved field flags set"));
            }
            match known.iter().position(|&t| t == field.field_type) {
                Some(i) => {
                    if values[i].replace(field.value.as_slice()).is_some() {
                        return Err(bad("a field appears twice"));
                    }
                }
                None if field.flags & FIELD_FLAG_OPTIONAL != 0 => {}
                None => return Err(bad("unknown mandatory field")),
            }
        }
        Ok(Self { known, values })
    }

    /// The value of `field_type`, if present.
    pub fn get(&self, field_type: FieldType) -> Option<&'a [u8]> {
        let i = self.known.iter().position(|&t| t == field_type)?;
        self.values.get(i).copied().flatten()
    }

    /// The value of a mandatory `field_type`; `missing` is the error when it is absent.
    pub fn require(
        &self,
        field_type: FieldType,
        missing: &'static str,
    ) -> Result<&'a [u8], DeviceError> {
        self.get(field_type).ok_or(DeviceError::BadState(missing))
    }
}
