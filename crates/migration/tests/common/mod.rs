//! Messages shared by the stream tests: one of every type, and a proptest strategy.
#![allow(dead_code)]

use proptest::prelude::*;
use virtio_lm_migration::{
    CancelReason, DeviceConfig, FunctionState, MemoryChunk, MemoryRange, MemoryRegion, Message,
    Pages, Phase, StreamWriter, VmConfig, PAGE_SIZE, PROTOCOL_VERSION,
};
use virtio_lm_spec::Profile;
use virtio_lm_vm::FunctionRegisters;

pub fn sample_config() -> VmConfig {
    VmConfig {
        memory: vec![
            MemoryRegion {
                guest_addr: 0,
                size: 0x10_0000,
            },
            MemoryRegion {
                guest_addr: 0x1_0000_0000,
                size: 0x2000,
            },
        ],
        profile: Profile::V1_4,
        devices: vec![
            DeviceConfig {
                id: 1,
                device_type: 2,
                negotiated_features: 1 << 32 | 1 << 34,
                num_queues: 2,
                config_space: vec![0, 0x10, 0, 0, 0, 0, 0, 0],
            },
            DeviceConfig {
                id: 2,
                device_type: 1,
                negotiated_features: 1 << 32 | 1 << 5,
                num_queues: 3,
                config_space: vec![0x52, 0x54, 0, 0x12, 0x34, 0x56],
            },
        ],
    }
}

pub fn data_page(fill: u8) -> Vec<u8> {
    vec![fill; PAGE_SIZE]
}

/// One message of every type, in the order a migration sends them (both directions mixed).
pub fn one_of_each() -> Vec<Message> {
    vec![
        Message::Start {
            version: PROTOCOL_VERSION,
        },
        Message::Config(sample_config()),
        Message::Memory(MemoryChunk {
            round: 3,
            phase: Phase::PreCopy,
            ranges: vec![
                MemoryRange {
                    guest_addr: 0x1000,
                    pages: Pages::Data(data_page(0x5a)),
                },
                MemoryRange {
                    guest_addr: 0x8000,
                    pages: Pages::Zero(7),
                },
            ],
        }),
        Message::DeviceContext {
            phase: Phase::PreCopy,
            device_id: 1,
            context: vec![1, 2, 3, 4, 5],
        },
        Message::Memory(MemoryChunk {
            round: 4,
            phase: Phase::Final,
            ranges: vec![MemoryRange {
                guest_addr: 0x2000,
                pages: Pages::Data(data_page(0xc3)),
            }],
        }),
        Message::DeviceContext {
            phase: Phase::Final,
            device_id: 2,
            context: vec![9; 40],
        },
        Message::VcpuState {
            vcpu: 1,
            state: vec![7; 33],
        },
        Message::Complete,
        Message::Ready,
        Message::Commit,
        Message::CommitAck {
            restore_us: 1234,
            device_us: 56,
        },
        Message::Cancel {
            reason: CancelReason::Timeout,
            detail: "round 9 did not converge".into(),
        },
        Message::Error {
            message: "section 4: device 2 context refused".into(),
        },
        Message::RoundEnd { round: 3 },
        Message::RoundAck {
            round: 3,
            bytes_received: 0x1_2345_6789,
        },
        Message::FunctionState(FunctionState {
            device_id: 2,
            registers: FunctionRegisters {
                device_feature_select: 1,
                driver_feature_select: 1,
                queue_select: 3,
                isr: 1,
                msix_pending: vec![1, 4],
                intx_pending: true,
                pci_cfg_window: Some((0, 0x14, 4)),
            },
        }),
    ]
}

/// A small stream: Start and a few short sections (every byte of it gets corrupted in a test).
pub fn small_stream() -> (Vec<Message>, Vec<u8>) {
    let msgs = vec![
        Message::Start {
            version: PROTOCOL_VERSION,
        },
        Message::DeviceContext {
            phase: Phase::Final,
            device_id: 3,
            context: vec![0xee; 12],
        },
        Message::Memory(MemoryChunk {
            round: 0,
            phase: Phase::PreCopy,
            ranges: vec![MemoryRange {
                guest_addr: 0x3000,
                pages: Pages::Zero(2),
            }],
        }),
        Message::Cancel {
            reason: CancelReason::Operator,
            detail: "stop".into(),
        },
    ];
    (msgs.clone(), encode(&msgs))
}

pub fn encode(msgs: &[Message]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut w = StreamWriter::new(&mut wire);
    for m in msgs {
        w.write(m).unwrap();
    }
    wire
}

fn arb_phase() -> impl Strategy<Value = Phase> {
    prop_oneof![Just(Phase::PreCopy), Just(Phase::Final)]
}

fn arb_range() -> impl Strategy<Value = MemoryRange> {
    let pages = prop_oneof![
        (1u32..1000).prop_map(Pages::Zero),
        (1usize..3, any::<u8>()).prop_map(|(n, b)| Pages::Data(vec![b; n * PAGE_SIZE])),
    ];
    ((0u64..1 << 20), pages).prop_map(|(p, pages)| MemoryRange {
        guest_addr: p * PAGE_SIZE as u64,
        pages,
    })
}

fn arb_config() -> impl Strategy<Value = VmConfig> {
    let device = (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(id, device_type, negotiated_features, num_queues, config_space)| DeviceConfig {
                id,
                device_type,
                negotiated_features,
                num_queues,
                config_space,
            },
        );
    (
        prop::collection::vec(1u64..64, 0..4),
        any::<bool>(),
        prop::collection::vec(device, 0..4),
    )
        .prop_map(|(sizes, v14, mut devices)| {
            let mut addr = 0;
            let memory = sizes
                .into_iter()
                .map(|pages| {
                    let r = MemoryRegion {
                        guest_addr: addr,
                        size: pages * PAGE_SIZE as u64,
                    };
                    addr += r.size + PAGE_SIZE as u64;
                    r
                })
                .collect();
            for (i, d) in devices.iter_mut().enumerate() {
                d.id = i as u32;
            }
            VmConfig {
                memory,
                profile: if v14 { Profile::V1_4 } else { Profile::Seeds },
                devices,
            }
        })
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

/// A valid FunctionState section's content.
pub fn arb_function_state() -> impl Strategy<Value = FunctionState> {
    (
        any::<(u32, u32, u32, u16)>(),
        0u8..4,
        prop::collection::btree_set(any::<u16>(), 0..8),
        any::<bool>(),
        any::<Option<(u8, u32, u32)>>(),
    )
        .prop_map(
            |((device_id, dfs, drfs, qs), isr, pending, intx, window)| FunctionState {
                device_id,
                registers: FunctionRegisters {
                    device_feature_select: dfs,
                    driver_feature_select: drfs,
                    queue_select: qs,
                    isr,
                    msix_pending: pending.into_iter().collect(),
                    intx_pending: intx,
                    pci_cfg_window: window,
                },
            },
        )
}

/// Any message but Start.
pub fn arb_message() -> impl Strategy<Value = Message> {
    let reason = prop_oneof![
        Just(CancelReason::Operator),
        Just(CancelReason::Timeout),
        Just(CancelReason::Failure)
    ];
    prop_oneof![
        arb_config().prop_map(Message::Config),
        (
            any::<u32>(),
            arb_phase(),
            prop::collection::vec(arb_range(), 0..4)
        )
            .prop_map(|(round, phase, ranges)| Message::Memory(MemoryChunk {
                round,
                phase,
                ranges
            })),
        (
            arb_phase(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(phase, device_id, context)| Message::DeviceContext {
                phase,
                device_id,
                context
            }),
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(vcpu, state)| Message::VcpuState { vcpu, state }),
        Just(Message::Complete),
        Just(Message::Ready),
        Just(Message::Commit),
        (any::<u64>(), any::<u64>()).prop_map(|(restore_us, device_us)| Message::CommitAck {
            restore_us,
            device_us,
        }),
        (reason, text()).prop_map(|(reason, detail)| Message::Cancel { reason, detail }),
        text().prop_map(|message| Message::Error { message }),
        any::<u32>().prop_map(|round| Message::RoundEnd { round }),
        (any::<u32>(), any::<u64>()).prop_map(|(round, bytes_received)| Message::RoundAck {
            round,
            bytes_received
        }),
        arb_function_state().prop_map(Message::FunctionState),
    ]
}

/// A Start followed by arbitrary messages.
pub fn arb_stream() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(arb_message(), 0..6).prop_map(|mut v| {
        v.insert(
            0,
            Message::Start {
                version: PROTOCOL_VERSION,
            },
        );
        v
    })
}

/// A section built by hand (any type code, flags, sequence and payload) with a correct crc.
pub fn raw_section(code: u16, flags: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&virtio_lm_migration::MAGIC);
    s.extend_from_slice(&code.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    s.extend_from_slice(&sequence.to_le_bytes());
    s.extend_from_slice(payload);
    let crc = crc32c_of(&s);
    s.extend_from_slice(&crc.to_le_bytes());
    s
}

/// crc32c (Castagnoli), bitwise, independent of the crate under test.
pub fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The Start section of a stream speaking `version`.
pub fn start_section(version: u32) -> Vec<u8> {
    let mut p = version.to_le_bytes().to_vec();
    p.extend_from_slice(&[0; 4]);
    raw_section(1, 0, 0, &p)
}
