//! A hostile driver: arbitrary BAR accesses (any offset, any width, any value) never panic or
//! deadlock the function, and the read-only facts of the common configuration hold throughout.

use proptest::prelude::*;
use virtio_lm_pci::testing::*;
use virtio_lm_spec::pci::offset::*;

fn access() -> impl Strategy<Value = (bool, u64, usize, u64)> {
    (
        any::<bool>(),
        prop_oneof![
            0u64..0x80,
            0x1000u64..0x1008,
            0x2000u64..0x2010,
            0x3000u64..0x3010,
            0u64..0x5000
        ],
        prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 0usize..17],
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Spec §9: num_queues is read-only, offsets 56–62 read 0 in the seeds profile (no
    /// NOTIF_CONFIG_DATA, RING_RESET or admin queue), and the ISR reads back only its two
    /// bits — whatever a driver writes anywhere, at any width.
    #[test]
    fn arbitrary_accesses_keep_the_invariants(ops in prop::collection::vec(access(), 1..150)) {
        let mem = memory();
        let f = counting_function(&mem, 8, false);
        for (write, at, len, value) in ops {
            let bytes = value.to_le_bytes();
            let mut data = vec![0u8; len];
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes[i % 8];
            }
            if write {
                f.bar_write(at, &data);
            } else {
                f.bar_read(at, &mut data);
            }
            prop_assert_eq!(f.r16(NUM_QUEUES), 1);
            for field in [QUEUE_NOTIF_CONFIG_DATA, QUEUE_RESET, ADMIN_QUEUE_INDEX, ADMIN_QUEUE_NUM] {
                prop_assert_eq!(f.r16(field), 0);
            }
            prop_assert_eq!(f.rd::<1>(0x1000)[0] & !3, 0);
        }
    }
}
