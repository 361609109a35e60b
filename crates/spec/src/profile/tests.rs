use super::*;
use Feature::*;

/// spec-decisions §1, both columns, every row: `(feature, seeds, v1.4)`.
const TABLE: [(Feature, Option<u32>, Option<u32>); 13] = [
    (Version1, Some(32), Some(32)),
    (RingPacked, Some(34), Some(34)),
    (InOrder, Some(35), Some(35)),
    (IndirectDesc, Some(28), Some(28)),
    (EventIdx, Some(29), Some(29)),
    (SrIov, Some(37), Some(37)),
    (NotificationData, Some(38), Some(38)),
    (DeviceStop, Some(39), None),
    (QueueState, Some(40), None),
    (AdminVq, Some(41), Some(41)),
    (Suspend, Some(42), Some(43)),
    (NotifConfigData, None, Some(39)),
    (RingReset, None, Some(40)),
];

/// spec-decisions §1 table: every feature number in both profiles, including the
/// features each profile does not offer.
#[test]
fn feature_table() {
    for (feature, seeds, v1_4) in TABLE {
        assert_eq!(Profile::Seeds.bit(feature), seeds, "seeds {feature}");
        assert_eq!(Profile::V1_4.bit(feature), v1_4, "v1.4 {feature}");
        assert_eq!(Profile::Seeds.mask(feature), seeds.map(|b| 1u64 << b));
        assert_eq!(Profile::V1_4.offers(feature), v1_4.is_some());
    }
}

/// Seed 000: "VIRTIO_F_DEVICE_STOP(39)"; seed 001: "VIRTIO_F_QUEUE_STATE(40)";
/// seed 003: "VIRTIO_F_SUSPEND(42)" — the seeds profile keeps the seed numbers.
#[test]
fn seeds_profile_uses_seed_numbers() {
    assert_eq!(Profile::Seeds.bit(DeviceStop), Some(39));
    assert_eq!(Profile::Seeds.bit(QueueState), Some(40));
    assert_eq!(Profile::Seeds.bit(Suspend), Some(42));
    assert_eq!(Profile::default(), Profile::Seeds);
}

/// spec-decisions §1: status bits per profile; DEVICE_STOPPED (seed 000: "DEVICE_STOPPED
/// (32)") is offered only by the seeds profile.
#[test]
fn status_table() {
    let expected = [
        (DeviceStatus::ACKNOWLEDGE, 1, Some(1)),
        (DeviceStatus::DRIVER, 2, Some(2)),
        (DeviceStatus::DRIVER_OK, 4, Some(4)),
        (DeviceStatus::FEATURES_OK, 8, Some(8)),
        (DeviceStatus::SUSPEND, 16, Some(16)),
        (DeviceStatus::DEVICE_STOPPED, 32, None),
        (DeviceStatus::DEVICE_NEEDS_RESET, 64, Some(64)),
        (DeviceStatus::FAILED, 128, Some(128)),
    ];
    for (bit, seeds, v1_4) in expected {
        assert_eq!(Profile::Seeds.status_bit(bit), Some(seeds), "{bit:?}");
        assert_eq!(Profile::V1_4.status_bit(bit), v1_4, "{bit:?}");
    }
    assert_eq!(Profile::Seeds.status_mask().bits(), 0xff);
    assert_eq!(Profile::V1_4.status_mask().bits(), !32);
}

/// The common bits agree with Linux's numbers as shipped in virtio-bindings,
/// in both profiles; and the 1.4-only bits agree in the v1.4 profile.
#[test]
fn common_bits_match_virtio_bindings() {
    use virtio_bindings::virtio_config as c;
    use virtio_bindings::virtio_ring as r;
    for p in Profile::ALL {
        assert_eq!(p.bit(Version1), Some(c::VIRTIO_F_VERSION_1));
        assert_eq!(p.bit(RingPacked), Some(c::VIRTIO_F_RING_PACKED));
        assert_eq!(p.bit(InOrder), Some(c::VIRTIO_F_IN_ORDER));
        assert_eq!(p.bit(SrIov), Some(c::VIRTIO_F_SR_IOV));
        assert_eq!(p.bit(NotificationData), Some(c::VIRTIO_F_NOTIFICATION_DATA));
        assert_eq!(p.bit(AdminVq), Some(c::VIRTIO_F_ADMIN_VQ));
        assert_eq!(p.bit(IndirectDesc), Some(r::VIRTIO_RING_F_INDIRECT_DESC));
        assert_eq!(p.bit(EventIdx), Some(r::VIRTIO_RING_F_EVENT_IDX));
    }
    assert_eq!(
        Profile::V1_4.bit(NotifConfigData),
        Some(c::VIRTIO_F_NOTIF_CONFIG_DATA)
    );
    assert_eq!(Profile::V1_4.bit(RingReset), Some(c::VIRTIO_F_RING_RESET));
}

/// Neither profile puts two of its own features on one bit.
#[test]
fn profiles_are_collision_free() {
    for p in Profile::ALL {
        assert_eq!(p.check_bits(&[]), Ok(()), "{p}");
        assert_eq!(
            p.all_features_mask().count_ones() as usize,
            p.features().len()
        );
    }
}

/// spec-decisions §1: "bit 42 is also legacy VIRTIO_NET_F_GUEST_RSC6"; under the
/// seeds profile a net device registering it collides with VIRTIO_F_SUSPEND
/// (seed 003: "VIRTIO_F_SUSPEND(42)"), under v1.4 (SUSPEND 43) it does not.
#[test]
fn device_bit_collides_with_seed_suspend() {
    let rsc6 = [("VIRTIO_NET_F_GUEST_RSC6", 42)];
    assert_eq!(
        Profile::Seeds.check_bits(&rsc6),
        Err(ProfileError::BitCollision {
            a: "VIRTIO_F_SUSPEND",
            b: "VIRTIO_NET_F_GUEST_RSC6",
            bit: 42
        })
    );
    assert_eq!(Profile::V1_4.check_bits(&rsc6), Ok(()));
}

/// Only offered features take part in `device_feature_bits`: RSC6 on 42 is
/// refused next to SUSPEND in the seeds profile, accepted without it.
#[test]
fn device_feature_bits_checks_offered_features() {
    let rsc6 = [("VIRTIO_NET_F_GUEST_RSC6", 42)];
    let err = Profile::Seeds
        .device_feature_bits(&[Version1, Suspend], &rsc6)
        .unwrap_err();
    assert_eq!(
        err,
        ProfileError::BitCollision {
            a: "VIRTIO_F_SUSPEND",
            b: "VIRTIO_NET_F_GUEST_RSC6",
            bit: 42
        }
    );
    assert_eq!(
        err.to_string(),
        "feature bit 42 is claimed by both VIRTIO_F_SUSPEND and VIRTIO_NET_F_GUEST_RSC6"
    );
    assert_eq!(
        Profile::Seeds.device_feature_bits(&[Version1], &rsc6),
        Ok((1 << 32) | (1 << 42))
    );
    assert_eq!(
        Profile::V1_4.device_feature_bits(&[Version1, Suspend], &rsc6),
        Ok((1 << 32) | (1 << 42) | (1 << 43))
    );
    assert_eq!(
        Profile::V1_4.device_feature_bits(&[], &[("VIRTIO_NET_F_FAR", 64)]),
        Err(ProfileError::BitOutOfRange {
            name: "VIRTIO_NET_F_FAR",
            bit: 64
        })
    );
    assert_eq!(
        Profile::V1_4.device_feature_bits(&[DeviceStop], &[]),
        Err(ProfileError::NotOffered {
            feature: DeviceStop,
            profile: Profile::V1_4
        })
    );
}

/// Seed 000 "VIRTIO_F_DEVICE_STOP(39)" vs published NOTIF_CONFIG_DATA 39: the
/// generic validator catches a mix of the two numberings. Repeating an
/// identical pair is not a collision.
#[test]
fn generic_check_bits() {
    assert_eq!(
        check_bits(&[
            ("VIRTIO_F_DEVICE_STOP", 39),
            ("VIRTIO_F_NOTIF_CONFIG_DATA", 39)
        ]),
        Err(ProfileError::BitCollision {
            a: "VIRTIO_F_DEVICE_STOP",
            b: "VIRTIO_F_NOTIF_CONFIG_DATA",
            bit: 39
        })
    );
    assert_eq!(check_bits(&[("A", 1), ("A", 1), ("B", 2)]), Ok(()));
    assert_eq!(check_bits(&[]), Ok(()));
}

/// spec-decisions §1: "In the seeds profile VIRTIO_F_NOTIF_CONFIG_DATA and
/// VIRTIO_F_RING_RESET cannot be offered."
#[test]
fn feature_set_refuses_unoffered() {
    assert_eq!(
        Profile::Seeds.feature_set(&[Version1, RingReset]),
        Err(ProfileError::NotOffered {
            feature: RingReset,
            profile: Profile::Seeds
        })
    );
    assert!(Profile::Seeds.feature_set(&[NotifConfigData]).is_err());
    assert!(Profile::V1_4.feature_set(&[QueueState]).is_err());
    assert_eq!(
        Profile::Seeds.feature_set(&[Version1, RingPacked, Version1]),
        Ok((1 << 32) | (1 << 34))
    );
}

/// `decode` inverts `feature_set`, ignores device-type bits and lists
/// features in bit order.
#[test]
fn decode_round_trip() {
    for p in Profile::ALL {
        let offered = p.features();
        let bits = p.feature_set(&offered).unwrap();
        assert_eq!(p.decode(bits), offered);
        assert_eq!(p.decode(bits | 1 | (1 << 63)), offered);
        for f in offered {
            assert_eq!(p.decode(p.mask(f).unwrap()), vec![f]);
            assert_eq!(p.feature_at(p.bit(f).unwrap()), Some(f));
        }
    }
    assert_eq!(
        Profile::Seeds.decode((1 << 42) | (1 << 28)),
        vec![IndirectDesc, Suspend]
    );
    assert_eq!(Profile::V1_4.decode(1 << 42), vec![]);
}

/// `FeatureSet` keeps the profile, refuses unoffered features and separates
/// device-type bits.
#[test]
fn feature_set_type() {
    let mut s = FeatureSet::new(Profile::V1_4, &[Version1]).unwrap();
    assert!(s.contains(Version1));
    assert!(!s.contains(DeviceStop));
    s.insert(RingReset).unwrap();
    assert_eq!(s.bits(), (1 << 32) | (1 << 40));
    assert!(s.insert(QueueState).is_err());
    assert_eq!(s.features(), vec![Version1, RingReset]);
    let raw = FeatureSet::from_bits(Profile::Seeds, (1 << 40) | 1);
    assert_eq!(raw.features(), vec![QueueState]);
    assert_eq!(raw.other_bits(), 1);
    assert_eq!(FeatureSet::empty(Profile::Seeds).bits(), 0);
    assert_eq!(
        format!("{raw:?}"),
        "FeatureSet { profile: Seeds, features: [QueueState], other_bits: 0x1 }"
    );
}

/// Profile names parse back; unknown names are refused.
#[test]
fn profile_names() {
    for p in Profile::ALL {
        assert_eq!(p.to_string().parse::<Profile>(), Ok(p));
    }
    assert_eq!(
        "1.3".parse::<Profile>(),
        Err(ProfileError::UnknownProfile("1.3".into()))
    );
}
