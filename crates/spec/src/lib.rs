//! Wire-level truth for virtio-lm: every number and byte layout the other
//! crates put on a ring, a register, an admin queue or a device context.
//!
//! The numbers, and the decisions behind those the proposals leave open, are
//! recorded in `docs/spec-decisions.md` (§1 profiles, §4 admin commands, §5
//! device context, §6 merged-spec facts). Several seed proposals
//! numbered features on bits that virtio 1.4 later gave to others, so feature
//! and status bits are looked up through a numbering [`Profile`]
//! (`seeds` by default, or `v1.4`). Layouts are `#[repr(C)]` structs of
//! little-endian zerocopy fields with alignment 1, so they parse from and
//! serialise to any byte slice without padding or `unsafe`.
//!
//! This crate holds no behaviour: no state machines, no validation beyond
//! decoding a value, no I/O.
//!
//! ```
//! use virtio_lm_spec::ring::{SplitDescriptor, VIRTQ_DESC_F_NEXT};
//! use virtio_lm_spec::{Feature, Profile, ProfileError};
//! use zerocopy::FromBytes;
//!
//! // SUSPEND moved from the seed's bit 42 to 43 in virtio 1.4.
//! assert_eq!(Profile::Seeds.bit(Feature::Suspend), Some(42));
//! assert_eq!(Profile::V1_4.bit(Feature::Suspend), Some(43));
//!
//! // Under the seeds profile, net's legacy GUEST_RSC6 collides with SUSPEND.
//! let err = Profile::Seeds
//!     .check_bits(&[("VIRTIO_NET_F_GUEST_RSC6", 42)])
//!     .unwrap_err();
//! assert!(matches!(err, ProfileError::BitCollision { bit: 42, .. }));
//!
//! // A split descriptor read from guest bytes (little-endian on the wire).
//! let bytes = [
//!     0x00, 0x10, 0, 0, 0, 0, 0, 0, // addr 0x1000
//!     0x00, 0x02, 0, 0, // len 0x200
//!     0x01, 0x00, // flags NEXT
//!     0x05, 0x00, // next 5
//! ];
//! let desc = SplitDescriptor::read_from_bytes(&bytes).unwrap();
//! assert_eq!(desc.addr(), 0x1000);
//! assert_eq!(desc.len(), 0x200);
//! assert_eq!(desc.flags(), VIRTQ_DESC_F_NEXT);
//! assert_eq!(desc.next(), 5);
//! ```

#![forbid(unsafe_code)]

#[cfg(test)]
#[macro_use]
mod layout_tests;

pub mod admin;
pub mod context;
pub mod features;
pub mod pci;
pub mod profile;
pub mod queue_state;
pub mod ring;
pub mod status;

pub use features::Feature;
pub use profile::{FeatureSet, Profile, ProfileError};
pub use status::DeviceStatus;

/// Re-exported so users name the same zerocopy traits and field types as the
/// layouts here.
pub use zerocopy;
