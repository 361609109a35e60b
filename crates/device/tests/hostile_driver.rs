//! A hostile or confused driver: random status writes (including clears and device-owned
//! bits), feature writes, queue register and queue state writes at any time, kicks, config
//! writes and resets. The core must never panic, and whenever it is not live (before DRIVER_OK,
//! stopped, suspended, NEEDS_RESET or FAILED) a kick must not touch guest memory or interrupt.

mod common;

use common::TestRing;

use common::{checksum, CoreDriver, DATA, QUEUE_BASE};
use proptest::prelude::*;
use virtio_lm_spec::DeviceStatus;

#[derive(Clone, Debug)]
enum Op {
    Status(u8),
    Features(u64),
    QueueSize(u16),
    QueueAddr(u8, u64),
    QueueEnable(bool),
    AvailState(u16),
    UsedState(u16),
    Offer(u8),
    Kick(u16),
    ConfigWrite(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Status),
        2 => prop_oneof![any::<u64>(), Just(u64::MAX), Just(0x7_0000_0000u64), Just(0x5_0000_0000u64)].prop_map(Op::Features),
        1 => any::<u16>().prop_map(Op::QueueSize),
        1 => (0u8..3, prop_oneof![any::<u64>(), (0u64..0x2000)]).prop_map(|(w, a)| Op::QueueAddr(w, a)),
        1 => any::<bool>().prop_map(Op::QueueEnable),
        1 => any::<u16>().prop_map(Op::AvailState),
        1 => any::<u16>().prop_map(Op::UsedState),
        2 => (1u8..4).prop_map(Op::Offer),
        3 => prop_oneof![Just(0u16), any::<u16>()].prop_map(Op::Kick),
        1 => any::<u8>().prop_map(Op::ConfigWrite),
    ]
}

fn quiet(s: DeviceStatus) -> bool {
    !s.intersects(DeviceStatus::DRIVER_OK)
        || s.intersects(
            DeviceStatus::DEVICE_STOPPED
                | DeviceStatus::DEVICE_NEEDS_RESET
                | DeviceStatus::FAILED
                | DeviceStatus::SUSPEND,
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Seeds 000/002/003 under hostile status sequences: no panic, and a non-live device stays
    /// quiet (seed 000: "MUST NOT consume buffers or send any used buffer notifications to the
    /// driver before DRIVER_OK"; seed 002: nothing processed after NEEDS_RESET).
    #[test]
    fn random_driver_never_breaks_the_core(ops in prop::collection::vec(op(), 1..120)) {
        let mut d = CoreDriver::counting();
        // A sane start so that many sequences reach interesting states.
        d.start_default();
        for op in ops {
            match op {
                Op::Status(v) => d.core.write_status(DeviceStatus::from_bits_retain(v)),
                Op::Features(f) => d.core.set_driver_features(f),
                Op::QueueSize(s) => d.core.write_queue(0, |r| r.size = s),
                Op::QueueAddr(w, a) => d.core.write_queue(0, |r| match w {
                    0 => r.desc = a,
                    1 => r.driver = a,
                    _ => r.device = a,
                }),
                Op::QueueEnable(e) => d.core.write_queue(0, |r| r.enabled = e),
                Op::AvailState(v) => d.core.set_queue_avail_state(0, v),
                Op::UsedState(v) => d.core.set_queue_used_state(0, v),
                Op::Offer(n) => {
                    // Only while the driver's ring is the one the device uses and has room.
                    if d.core.status().contains(DeviceStatus::DRIVER_OK) && d.core.queue(0).is_some() {
                        let mem = d.mem.clone();
                        if let Some(ring) = d.rings[0].as_mut() {
                            let free = match ring {
                                virtio_lm_queue::RingDriver::Split(s) => s.num_free(),
                                virtio_lm_queue::RingDriver::Packed(p) => p.num_free(),
                            };
                            for i in 0..u16::from(n).min(free) {
                                ring.add(&mem, &[virtio_lm_queue::BufferSpec::writable(DATA + u64::from(i) * 0x100, 0x40)]);
                            }
                            ring.publish(&*mem).unwrap();
                        }
                    }
                }
                Op::Kick(q) => {
                    let s = d.core.status();
                    let before = (checksum(&d.mem, QUEUE_BASE, 0x1000), d.irq.used());
                    d.core.kick(q);
                    if quiet(s) {
                        prop_assert_eq!((checksum(&d.mem, QUEUE_BASE, 0x1000), d.irq.used()), before);
                    }
                    // Keep the ring driver in step with what the device returned.
                    if let Some(ring) = d.rings[0].as_mut() {
                        let mem = d.mem.clone();
                        let _ = match ring {
                            virtio_lm_queue::RingDriver::Split(s) => s.collect_used(&*mem).map(|_| ()),
                            virtio_lm_queue::RingDriver::Packed(p) => p.collect_used(&*mem).map(|_| ()),
                        };
                    }
                }
                Op::ConfigWrite(b) => d.core.write_config(0, &[b]),
            }
            let s = d.core.status();
            // A stopped device keeps DRIVER_OK unless it was also suspended (spec-notes §2: each
            // quiesce is undone only by its own mechanism).
            prop_assert!(
                !s.intersects(DeviceStatus::DEVICE_STOPPED) || s.intersects(DeviceStatus::DRIVER_OK | DeviceStatus::SUSPEND),
                "stopped without DRIVER_OK or SUSPEND: {:#x}", s
            );
            prop_assert!(!s.intersects(DeviceStatus::SUSPEND) || !s.intersects(DeviceStatus::DRIVER_OK), "SUSPEND presented with DRIVER_OK: {:#x}", s);
        }
    }
}
