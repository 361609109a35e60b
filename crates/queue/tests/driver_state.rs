//! A driver's ring bookkeeping is guest state that travels with a migrating guest (serde), and
//! a deserialised one is untrusted: `RingDriver::check_restored` refuses every inconsistency
//! before the driver touches guest memory — one invalid field at a time, split and packed —
//! and accepts the state of a driver in use, which then carries on.

use serde_json::{json, Value};
use virtio_lm_queue::{BufferSpec, DriverError, QueueConfig, RingDriver, RingFeatures, RingKind};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

fn memory() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

/// A driver of `kind` (8 entries) with two chains outstanding, one of two descriptors.
fn busy(kind: RingKind, mem: &Mem) -> RingDriver {
    let (config, _) =
        QueueConfig::contiguous(kind, 8, GuestAddress(0x1000), RingFeatures::default());
    let mut ring = RingDriver::new(config, mem).unwrap();
    ring.add_chain(mem, &[BufferSpec::readable(0x4000, 16)])
        .unwrap();
    ring.add_chain(
        mem,
        &[
            BufferSpec::readable(0x5000, 16),
            BufferSpec::writable(0x6000, 16),
        ],
    )
    .unwrap();
    ring.publish(mem).unwrap();
    ring
}

/// One inconsistency: what it is, and the edit of the serialised driver that makes it.
type Case = (&'static str, fn(&mut Value));

fn restore(value: Value, mem: &Mem) -> Result<RingDriver, DriverError> {
    let ring: RingDriver = serde_json::from_value(value).unwrap();
    ring.check_restored(mem).map(|()| ring)
}

fn refused(kind: RingKind, edit: impl FnOnce(&mut Value)) -> DriverError {
    let mem = memory();
    let mut value = serde_json::to_value(busy(kind, &mem)).unwrap();
    edit(&mut value);
    restore(value, &mem).expect_err("an inconsistent state was accepted")
}

#[test]
fn a_driver_in_use_round_trips_and_carries_on() {
    for kind in [RingKind::Split, RingKind::Packed] {
        let mem = memory();
        let ring = busy(kind, &mem);
        let value = serde_json::to_value(&ring).unwrap();
        let mut back = restore(value, &mem).unwrap();
        assert_eq!(back.outstanding(), 2);
        assert_eq!(back.num_free(), ring.num_free());
        back.add_chain(&mem, &[BufferSpec::writable(0x7000, 8)])
            .unwrap();
        assert_eq!(back.outstanding(), 3);
    }
}

#[test]
fn split_inconsistencies_are_refused() {
    let cases: [Case; 5] = [
        ("a free descriptor twice", |v| {
            v["Split"]["free"].as_array_mut().unwrap().push(json!(7));
        }),
        ("a descriptor out of range", |v| {
            v["Split"]["free"][0] = json!(8);
        }),
        ("a descriptor lost", |v| {
            v["Split"]["free"].as_array_mut().unwrap().pop();
        }),
        ("a chain not headed by its slot", |v| {
            let outstanding = v["Split"]["outstanding"].as_array_mut().unwrap();
            let head = outstanding.iter().position(|o| !o.is_null()).unwrap();
            outstanding.swap(head, (head + 3) % 8);
        }),
        ("a short outstanding table", |v| {
            v["Split"]["outstanding"].as_array_mut().unwrap().pop();
        }),
    ];
    for (what, edit) in cases {
        let err = refused(RingKind::Split, edit);
        assert!(matches!(err, DriverError::BadState(_)), "{what}: {err}");
    }
}

#[test]
fn packed_inconsistencies_are_refused() {
    let cases: [Case; 5] = [
        ("an id both free and outstanding", |v| {
            let slots = v["Packed"]["slots"].as_array().unwrap();
            let id = slots.iter().position(|n| n != &json!(0)).unwrap();
            v["Packed"]["free_ids"]
                .as_array_mut()
                .unwrap()
                .push(json!(id));
        }),
        ("free slots that do not add up", |v| {
            v["Packed"]["free_slots"] = json!(8);
        }),
        ("a position outside the ring", |v| {
            v["Packed"]["used"]["index"] = json!(8);
        }),
        ("a short slot table", |v| {
            v["Packed"]["slots"].as_array_mut().unwrap().pop();
        }),
        ("a pending head outside the ring", |v| {
            v["Packed"]["pending_heads"] = json!([[9, 0]]);
        }),
    ];
    for (what, edit) in cases {
        let err = refused(RingKind::Packed, edit);
        assert!(matches!(err, DriverError::BadState(_)), "{what}: {err}");
    }
}

#[test]
fn a_configuration_outside_memory_or_of_the_other_format_is_refused() {
    let err = refused(RingKind::Split, |v| {
        v["Split"]["config"]["desc_table"] = json!(0xfff_0000u64);
    });
    assert!(matches!(err, DriverError::Config(_)), "{err}");
    let err = refused(RingKind::Packed, |v| {
        v["Packed"]["config"]["kind"] = json!("Split");
    });
    assert!(matches!(err, DriverError::BadState(_)), "{err}");
}
