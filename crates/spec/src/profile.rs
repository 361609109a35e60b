//! Numbering profiles: which bit each feature and status flag uses.
//!
//! The seeds numbered several features on bits that virtio 1.4 later gave to
//! other features (DEVICE_STOP 39 vs NOTIF_CONFIG_DATA, QUEUE_STATE 40 vs
//! RING_RESET, SUSPEND 42 vs net's GUEST_RSC6). A device is built with one
//! [`Profile`], and must refuse a configuration that offers two features on
//! one bit; [`check_bits`] and [`Profile::device_feature_bits`] are the checks.

use core::fmt;
use core::str::FromStr;

use crate::features::Feature;
use crate::status::DeviceStatus;

/// A numbering profile (spec-decisions §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    /// The seed numbers (the project default): DEVICE_STOP 39, QUEUE_STATE 40,
    /// SUSPEND 42, status DEVICE_STOPPED 32; no NOTIF_CONFIG_DATA or RING_RESET.
    #[default]
    Seeds,
    /// Published virtio 1.4 numbers: NOTIF_CONFIG_DATA 39, RING_RESET 40,
    /// SUSPEND 43; no DEVICE_STOP, QUEUE_STATE or DEVICE_STOPPED.
    V1_4,
}

/// Why a feature selection or bit assignment was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The feature has no bit in this profile.
    #[error("{feature} is not offered by the {profile} profile")]
    NotOffered {
        /// The refused feature.
        feature: Feature,
        /// The profile that lacks it.
        profile: Profile,
    },
    /// Two different features were assigned the same bit.
    #[error("feature bit {bit} is claimed by both {a} and {b}")]
    BitCollision {
        /// The first claimant, in input order.
        a: &'static str,
        /// The second claimant, in input order.
        b: &'static str,
        /// The contested bit number.
        bit: u32,
    },
    /// A bit does not fit the 64-bit feature mask this project uses.
    #[error("feature bit {bit} of {name} does not fit a 64-bit feature mask")]
    BitOutOfRange {
        /// The feature that named the bit.
        name: &'static str,
        /// The bit number (64 or more).
        bit: u32,
    },
    /// A profile name that [`Profile::from_str`] does not know.
    #[error("unknown numbering profile {0:?} (expected \"seeds\" or \"v1.4\")")]
    UnknownProfile(String),
}

/// Rejects a list of `(name, bit)` assignments that puts two different names
/// on one bit.
///
/// Repeating the same `(name, bit)` pair is not a collision. Errors name the
/// first colliding pair in input order.
pub fn check_bits(entries: &[(&'static str, u32)]) -> Result<(), ProfileError> {
    for (i, &(a, bit_a)) in entries.iter().enumerate() {
        for &(b, bit_b) in &entries[i + 1..] {
            if bit_a == bit_b && a != b {
                return Err(ProfileError::BitCollision { a, b, bit: bit_a });
            }
        }
    }
    Ok(())
}

impl Profile {
    /// Both profiles.
    pub const ALL: [Profile; 2] = [Profile::Seeds, Profile::V1_4];

    /// The profile's name as used on command lines and in streams.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Seeds => "seeds",
            Profile::V1_4 => "v1.4",
        }
    }

    /// The bit number of `feature`, or `None` if the profile does not offer it.
    pub const fn bit(self, feature: Feature) -> Option<u32> {
        use Feature::*;
        match (self, feature) {
            (_, IndirectDesc) => Some(28),
            (_, EventIdx) => Some(29),
            (_, Version1) => Some(32),
            (_, RingPacked) => Some(34),
            (_, InOrder) => Some(35),
            (_, SrIov) => Some(37),
            (_, NotificationData) => Some(38),
            (_, AdminVq) => Some(41),
            (Profile::Seeds, DeviceStop) => Some(39),
            (Profile::Seeds, QueueState) => Some(40),
            (Profile::Seeds, Suspend) => Some(42),
            (Profile::Seeds, NotifConfigData | RingReset) => None,
            (Profile::V1_4, NotifConfigData) => Some(39),
            (Profile::V1_4, RingReset) => Some(40),
            (Profile::V1_4, Suspend) => Some(43),
            (Profile::V1_4, DeviceStop | QueueState) => None,
        }
    }

    /// `1 << bit(feature)`, or `None` if the profile does not offer it.
    pub const fn mask(self, feature: Feature) -> Option<u64> {
        match self.bit(feature) {
            Some(bit) => Some(1u64 << bit),
            None => None,
        }
    }

    /// True when the profile gives `feature` a bit.
    pub const fn offers(self, feature: Feature) -> bool {
        self.bit(feature).is_some()
    }

    /// The features this profile offers, in increasing bit order.
    pub fn features(self) -> Vec<Feature> {
        self.decode(u64::MAX)
    }

    /// The feature on `bit` in this profile, if any.
    pub fn feature_at(self, bit: u32) -> Option<Feature> {
        Feature::ALL.into_iter().find(|&f| self.bit(f) == Some(bit))
    }

    /// The mask of every feature bit this profile defines.
    pub fn all_features_mask(self) -> u64 {
        Feature::ALL
            .into_iter()
            .filter_map(|f| self.mask(f))
            .fold(0, |acc, m| acc | m)
    }

    /// The mask value of status `bit`, or `None` if the profile does not
    /// offer it (DEVICE_STOPPED under [`Profile::V1_4`]).
    pub fn status_bit(self, bit: DeviceStatus) -> Option<u8> {
        match self {
            Profile::V1_4 if bit == DeviceStatus::DEVICE_STOPPED => None,
            _ => Some(bit.bits()),
        }
    }

    /// Every status bit this profile defines.
    pub fn status_mask(self) -> DeviceStatus {
        DeviceStatus::all()
            .iter()
            .filter_map(|b| self.status_bit(b))
            .fold(DeviceStatus::RESET, |acc, m| acc | DeviceStatus::from(m))
    }

    /// The feature mask of `features`, failing on the first one the profile
    /// does not offer.
    pub fn feature_set(self, features: &[Feature]) -> Result<u64, ProfileError> {
        features.iter().try_fold(0u64, |acc, &feature| {
            self.mask(feature)
                .map(|m| acc | m)
                .ok_or(ProfileError::NotOffered {
                    feature,
                    profile: self,
                })
        })
    }

    /// The profile's features whose bits are set in `bits`, in increasing bit
    /// order. Bits the profile does not define (device-type bits) are ignored.
    pub fn decode(self, bits: u64) -> Vec<Feature> {
        (0..64)
            .filter(|bit| bits & (1u64 << bit) != 0)
            .filter_map(|bit| self.feature_at(bit))
            .collect()
    }

    /// The `(name, bit)` pairs of every feature this profile defines.
    pub fn named_bits(self) -> Vec<(&'static str, u32)> {
        self.features()
            .into_iter()
            .filter_map(|f| self.bit(f).map(|b| (f.name(), b)))
            .collect()
    }

    /// Checks device-type feature bits against every feature bit this profile
    /// defines, whether offered or not.
    ///
    /// This is the conservative check for a device type registering its own
    /// bits: under [`Profile::Seeds`], `("VIRTIO_NET_F_GUEST_RSC6", 42)`
    /// collides with VIRTIO_F_SUSPEND.
    pub fn check_bits(self, extra: &[(&'static str, u32)]) -> Result<(), ProfileError> {
        let mut all = self.named_bits();
        all.extend_from_slice(extra);
        check_bits(&all)
    }

    /// The feature mask a device offers: `features` (mapped through this
    /// profile) plus device-type `device_bits`, refusing any bit claimed twice
    /// or beyond bit 63.
    ///
    /// Unlike [`Profile::check_bits`] only the offered features take part, so
    /// a device may use a bit the profile defines for a feature it does not
    /// offer.
    pub fn device_feature_bits(
        self,
        features: &[Feature],
        device_bits: &[(&'static str, u32)],
    ) -> Result<u64, ProfileError> {
        let mut named = Vec::with_capacity(features.len() + device_bits.len());
        for &feature in features {
            let bit = self.bit(feature).ok_or(ProfileError::NotOffered {
                feature,
                profile: self,
            })?;
            named.push((feature.name(), bit));
        }
        named.extend_from_slice(device_bits);
        check_bits(&named)?;
        named.iter().try_fold(0u64, |acc, &(name, bit)| {
            1u64.checked_shl(bit)
                .map(|m| acc | m)
                .ok_or(ProfileError::BitOutOfRange { name, bit })
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ProfileError;

    /// Parses `"seeds"` or `"v1.4"` (the [`Profile::name`] spellings).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ProfileError::UnknownProfile(s.to_owned()))
    }
}

/// A set of transport features together with the profile that numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FeatureSet {
    profile: Profile,
    bits: u64,
}

impl FeatureSet {
    /// The set of `features` under `profile`; fails if the profile lacks one.
    pub fn new(profile: Profile, features: &[Feature]) -> Result<Self, ProfileError> {
        Ok(FeatureSet {
            profile,
            bits: profile.feature_set(features)?,
        })
    }

    /// The empty set.
    pub const fn empty(profile: Profile) -> Self {
        FeatureSet { profile, bits: 0 }
    }

    /// Wraps a raw mask, which may also hold device-type bits.
    pub const fn from_bits(profile: Profile, bits: u64) -> Self {
        FeatureSet { profile, bits }
    }

    /// The profile numbering this set.
    pub const fn profile(self) -> Profile {
        self.profile
    }

    /// The raw 64-bit mask.
    pub const fn bits(self) -> u64 {
        self.bits
    }

    /// True when `feature` is in the set (never for a feature the profile
    /// does not offer).
    pub const fn contains(self, feature: Feature) -> bool {
        match self.profile.mask(feature) {
            Some(m) => self.bits & m != 0,
            None => false,
        }
    }

    /// Adds `feature`; fails if the profile does not offer it.
    pub fn insert(&mut self, feature: Feature) -> Result<(), ProfileError> {
        self.bits |= self.profile.feature_set(&[feature])?;
        Ok(())
    }

    /// The named features in the set, in increasing bit order.
    pub fn features(self) -> Vec<Feature> {
        self.profile.decode(self.bits)
    }

    /// The bits that are not profile features (device-type bits).
    pub fn other_bits(self) -> u64 {
        self.bits & !self.profile.all_features_mask()
    }
}

impl fmt::Debug for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureSet")
            .field("profile", &self.profile)
            .field("features", &self.features())
            .field("other_bits", &format_args!("{:#x}", self.other_bits()))
            .finish()
    }
}

#[cfg(test)]
mod tests;
