//! Property tests of the device context: random contexts round-trip exactly; random bytes,
//! random field sequences and random mutations of a valid context never panic the decoder
//! (spec-decisions §7 pitfall 10); a restore of a randomly damaged context either succeeds or
//! changes nothing (spec-decisions §5).

mod common;

use std::sync::atomic::Ordering;

use common::context::{
    adopting_destination, build, fields, record_inflight, snapshot, AdoptingDevice, RawField,
};
use common::{bit, CoreDriver, RUNNING};
use proptest::prelude::*;
use virtio_lm_device::context::{
    decode, encode, fuzz_decode, parse_fields, DeviceContext, DeviceField, QueueContext, VqConfig,
    VQ_INFLIGHT_CHAINS,
};
use virtio_lm_queue::{QueueState, SavedChain, Segment};
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::{DeviceStatus, Feature};
use vm_memory::GuestAddress;

fn segment() -> impl Strategy<Value = Segment> {
    (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(addr, len, writable)| Segment {
        addr: GuestAddress(addr),
        len,
        writable,
    })
}

fn chain() -> impl Strategy<Value = SavedChain> {
    (
        any::<u16>(),
        any::<u16>(),
        prop::collection::vec(segment(), 0..4),
    )
        .prop_map(|(id, ring_slots, segments)| SavedChain {
            id,
            ring_slots,
            segments,
        })
}

fn queue() -> impl Strategy<Value = QueueContext> {
    let config = (1u16..=32768, any::<u16>(), any::<bool>(), any::<[u64; 3]>()).prop_map(
        |(size, msix_vector, enabled, [desc, driver, device])| VqConfig {
            size,
            msix_vector,
            enabled,
            desc,
            driver,
            device,
        },
    );
    let state = (
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
        prop::collection::vec(chain(), 0..4),
    )
        .prop_map(
            |(avail_state, used_state, notification_owed, inflight)| QueueState {
                avail_state,
                used_state,
                notification_owed,
                inflight,
            },
        );
    (config, state).prop_map(|(config, state)| QueueContext { config, state })
}

fn device_field() -> impl Strategy<Value = DeviceField> {
    (
        0x0200u16..=0x03ff,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(t, flags, value)| DeviceField {
            field_type: FieldType(t),
            flags,
            value,
        })
}

fn context() -> impl Strategy<Value = DeviceContext> {
    let words = || prop::collection::vec(any::<u64>(), 1..3);
    (
        (words(), words(), any::<u8>(), any::<u8>()),
        (prop::collection::vec(any::<u8>(), 0..40), any::<u16>()),
        prop::collection::vec(queue(), 0..4),
        prop::collection::vec(device_field(), 0..3),
    )
        .prop_map(
            |(
                (device_features, driver_features, device_status, config_generation),
                (device_config, config_msix_vector),
                queues,
                device_fields,
            )| DeviceContext {
                device_features,
                driver_features,
                device_status,
                config_generation,
                device_config,
                config_msix_vector,
                queues,
                device_fields,
            },
        )
}

/// Types a random field sequence draws from: every known one, the extension, unknown ones.
const TYPES: [u16; 20] = [
    0x0000, 0x0001, 0x0002, 0x0100, 0x0101, 0x0102, 0x0103, 0x0104, 0x0105, 0x0110, 0x0111, 0x0112,
    0x0113, 0x0200, 0x0201, 0x0300, 0x0150, 0x0404, 0x7fff, 0xffff,
];

fn raw_field() -> impl Strategy<Value = RawField> {
    (
        prop::sample::select(TYPES.as_slice()),
        prop_oneof![Just(0u16), Just(1u16), any::<u16>()],
        prop::collection::vec(any::<u8>(), 0..48),
        any::<bool>(),
    )
        .prop_map(|(t, flags, mut value, exact)| {
            let t = FieldType(t);
            if let (true, Some(n)) = (exact, t.value_len()) {
                value.resize(n, 0);
            }
            if exact && value.len() >= 2 && (t.0 >> 4) == 0x011 {
                value[1] = 0; // queue index small, so it is often below num_queues
                value[0] %= 4;
            }
            (t, flags, value)
        })
}

/// A mutation of an encoded context, at the byte or the field level.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Delete(usize),
    Insert(usize, RawField),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => any::<usize>().prop_map(Edit::Duplicate),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        2 => any::<usize>().prop_map(Edit::Delete),
        2 => (any::<usize>(), raw_field()).prop_map(|(i, f)| Edit::Insert(i, f)),
    ]
}

fn apply_edits(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut f = fields(bytes);
    let mut tail: Vec<Edit> = Vec::new();
    for e in edits {
        let n = f.len().max(1);
        match e.clone() {
            Edit::Duplicate(i) if !f.is_empty() => f.insert(i % n, f[i % n].clone()),
            Edit::Swap(i, j) if !f.is_empty() => f.swap(i % n, j % n),
            Edit::Delete(i) if !f.is_empty() => {
                f.remove(i % n);
            }
            Edit::Insert(i, field) => f.insert(i % (f.len() + 1), field),
            other => tail.push(other),
        }
    }
    let mut out = build(&f);
    for e in tail {
        match e {
            Edit::Flip(i, b) if !out.is_empty() => {
                let n = out.len();
                out[i % n] ^= b.max(1);
            }
            Edit::Truncate(i) => out.truncate(i % (out.len() + 1)),
            _ => {}
        }
    }
    out
}

/// A context of a real stopped device with requests in flight (split or packed).
fn saved(packed: bool) -> (DeviceContext, CoreDriver) {
    let device = AdoptingDevice::new(true);
    let release = device.release.clone();
    let mut src = CoreDriver::with_options(Box::new(device), record_inflight());
    let mut f = bit(Feature::Version1) | bit(Feature::DeviceStop) | bit(Feature::EventIdx);
    if packed {
        f |= bit(Feature::RingPacked);
    }
    src.start(f);
    src.offer(3);
    src.core.kick(0);
    src.collect();
    release.store(false, Ordering::SeqCst);
    src.offer(2);
    src.core.kick(0);
    src.core
        .write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
    let ctx = src.core.save_context().unwrap();
    let dst = adopting_destination(&mut src);
    (ctx, dst)
}

/// A change to one value of a context model.
#[derive(Clone, Debug)]
enum Damage {
    Status(u8),
    DeviceFeatures(u64),
    DriverFeatures(u64),
    Size(u16),
    Enabled(bool),
    Addr(u8, u64),
    AvailState(u16),
    UsedState(u16),
    Owed(bool),
    DropChain(usize),
    DupChain(usize),
    ChainId(usize, u16),
    ChainSlots(usize, u16),
    SegAddr(usize, u64),
    SegLen(usize, u32),
    Mode(Vec<u8>),
    Config(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let small = || prop_oneof![any::<u16>(), 0u16..16];
    prop_oneof![
        any::<u8>().prop_map(Damage::Status),
        any::<u64>().prop_map(Damage::DeviceFeatures),
        prop_oneof![any::<u64>(), (0u32..64).prop_map(|b| 1u64 << b)]
            .prop_map(Damage::DriverFeatures),
        small().prop_map(Damage::Size),
        any::<bool>().prop_map(Damage::Enabled),
        (0u8..3, prop_oneof![any::<u64>(), 0u64..0x40_1000]).prop_map(|(w, a)| Damage::Addr(w, a)),
        small().prop_map(Damage::AvailState),
        small().prop_map(Damage::UsedState),
        any::<bool>().prop_map(Damage::Owed),
        any::<usize>().prop_map(Damage::DropChain),
        any::<usize>().prop_map(Damage::DupChain),
        (any::<usize>(), small()).prop_map(|(i, v)| Damage::ChainId(i, v)),
        (any::<usize>(), small()).prop_map(|(i, v)| Damage::ChainSlots(i, v)),
        (any::<usize>(), prop_oneof![any::<u64>(), 0u64..0x50_0000])
            .prop_map(|(i, v)| Damage::SegAddr(i, v)),
        (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Damage::SegLen(i, v)),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(Damage::Mode),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Damage::Config),
    ]
}

fn apply_damage(ctx: &mut DeviceContext, d: Damage) {
    let q = &mut ctx.queues[0];
    let chains = &mut q.state.inflight;
    let n = chains.len().max(1);
    match d {
        Damage::Status(s) => ctx.device_status = s,
        Damage::DeviceFeatures(x) => ctx.device_features[0] ^= x,
        Damage::DriverFeatures(x) => ctx.driver_features[0] ^= x,
        Damage::Size(s) => q.config.size = s,
        Damage::Enabled(e) => q.config.enabled = e,
        Damage::Addr(0, a) => q.config.desc = a,
        Damage::Addr(1, a) => q.config.driver = a,
        Damage::Addr(_, a) => q.config.device = a,
        Damage::AvailState(v) => q.state.avail_state = v,
        Damage::UsedState(v) => q.state.used_state = v,
        Damage::Owed(o) => q.state.notification_owed = o,
        Damage::DropChain(i) if !chains.is_empty() => {
            chains.remove(i % n);
        }
        Damage::DupChain(i) if !chains.is_empty() => chains.push(chains[i % n].clone()),
        Damage::ChainId(i, v) if !chains.is_empty() => chains[i % n].id = v,
        Damage::ChainSlots(i, v) if !chains.is_empty() => chains[i % n].ring_slots = v,
        Damage::SegAddr(i, v) if !chains.is_empty() => {
            if let Some(s) = chains[i % n].segments.first_mut() {
                s.addr = GuestAddress(v);
            }
        }
        Damage::SegLen(i, v) if !chains.is_empty() => {
            if let Some(s) = chains[i % n].segments.first_mut() {
                s.len = v;
            }
        }
        Damage::Mode(v) => ctx.device_fields[0].value = v,
        Damage::Config(v) => ctx.device_config = v,
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// spec-decisions §5: every context the encoder accepts decodes to exactly itself (values,
    /// queues, in-flight chains through VQ_INFLIGHT_CHAINS, device-specific fields), and the
    /// encoding is deterministic.
    #[test]
    fn random_contexts_round_trip(ctx in context()) {
        let bytes = encode(&ctx).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), ctx.clone());
        prop_assert_eq!(encode(&ctx).unwrap(), bytes.clone());
        let chains = parse_fields(&bytes).unwrap().iter().filter(|f| f.field_type == VQ_INFLIGHT_CHAINS).count();
        prop_assert_eq!(chains, ctx.queues.iter().filter(|q| !q.state.inflight.is_empty()).count());
        fuzz_decode(&bytes);
    }

    /// spec-decisions §7 pitfall 10: arbitrary bytes never panic the decoder or the fuzz entry
    /// point (`fuzz_decode`, the future cargo-fuzz target).
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse_fields(&bytes);
        let _ = decode(&bytes);
        fuzz_decode(&bytes);
    }

    /// spec-decisions §7 pitfall 10: well-framed random field sequences between START_MARKER and
    /// END_MARKER (known, extension, unknown and device-specific types, exact or random lengths)
    /// never panic, and whatever decodes round-trips.
    #[test]
    fn random_field_sequences_never_panic(body in prop::collection::vec(raw_field(), 0..24)) {
        let mut f = vec![(FieldType::START_MARKER, 0, vec![])];
        f.extend(body);
        f.push((FieldType::END_MARKER, 0, vec![]));
        fuzz_decode(&build(&f));
    }

    /// spec-decisions §7 pitfall 10 ("truncated/reordered/duplicated/unknown context fields"):
    /// random byte flips, truncations, duplicated, swapped, deleted and inserted fields of a
    /// valid context never panic, and whatever still decodes round-trips.
    #[test]
    fn mutated_contexts_never_panic(packed in any::<bool>(), edits in prop::collection::vec(edit(), 1..5)) {
        let (ctx, _) = saved(packed);
        let bytes = apply_edits(&encode(&ctx).unwrap(), &edits);
        fuzz_decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// spec-decisions §5: "a context that fails validation changes nothing" — a randomly damaged
    /// context (model values or encoded bytes) either restores, after which the device takes
    /// status writes and kicks without panicking, or is refused with the destination's status,
    /// queue state, device state, interrupts and ring memory unchanged; validate_context always
    /// agrees with restore_context.
    #[test]
    fn damaged_restore_is_all_or_nothing(
        packed in any::<bool>(),
        damage in prop::collection::vec(damage(), 0..4),
        edits in prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(edit(), 1..2)],
    ) {
        let (mut ctx, mut dst) = saved(packed);
        for d in damage {
            apply_damage(&mut ctx, d);
        }
        let Ok(bytes) = encode(&ctx) else { return Ok(()) };
        let Ok(ctx) = decode(&apply_edits(&bytes, &edits)) else { return Ok(()) };
        let before = snapshot(&mut dst);
        let verdict = dst.core.validate_context(&ctx);
        match dst.core.restore_context(&ctx) {
            Err(e) => {
                prop_assert_eq!(Err(e), verdict);
                prop_assert_eq!(snapshot(&mut dst), before);
            }
            Ok(()) => {
                prop_assert_eq!(verdict, Ok(()));
                let s = dst.core.status();
                dst.core.write_status(s & !DeviceStatus::DEVICE_STOPPED);
                dst.core.kick(0);
                let _ = dst.core.status();
            }
        }
    }
}
