//! Bodies of the fuzz targets in `fuzz/`, kept in the library so that `cargo test` runs them
//! over generated input on stable Rust and the fuzzer (nightly, coverage-guided) runs the very
//! same code.
//!
//! Each body turns bytes into a hostile ring (descriptor tables, indirect tables, ring indices and
//! flags mostly plausible, sometimes raw garbage) and drives the device side through it. A body
//! panics only when an invariant of ours breaks; every rejection must be a typed error.

use arbitrary::{Result, Unstructured};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::chain::{DescriptorChain, SavedChain, Segment};
use crate::config::{QueueConfig, RingFeatures};
use crate::device_queue::DeviceQueue;
use crate::error::StateError;
use crate::event::RingPosition;
use crate::kind::RingKind;
use crate::packed::PackedQueue;
use crate::split::SplitQueue;
use crate::state::QueueState;

const MEM_SIZE: u64 = 0x1_0000;
const QUEUE_BASE: u64 = 0x1000;

type Mem = GuestMemoryMmap<()>;

/// Fuzz body: parse chains from an adversarial ring of either format, complete them, save and
/// restore the queue state at random points, while the "driver" keeps scribbling on the ring.
pub fn chain_parsing(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = chain_parsing_inner(&mut u);
}

/// Fuzz body: restore a queue from an arbitrary [`QueueState`]; a state that is accepted must
/// read back unchanged, and the restored queue must then run without panicking.
pub fn state_restore(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = state_restore_inner(&mut u);
}

fn setup(u: &mut Unstructured) -> Result<(Mem, QueueConfig)> {
    let kind = if u.arbitrary()? {
        RingKind::Split
    } else {
        RingKind::Packed
    };
    let size = match kind {
        RingKind::Split => 1u16 << u.int_in_range(0..=8)?,
        RingKind::Packed => u.int_in_range(1..=300)?,
    };
    let features = RingFeatures {
        event_idx: u.arbitrary()?,
        indirect_desc: u.arbitrary()?,
    };
    let (config, end) = QueueConfig::contiguous(kind, size, GuestAddress(QUEUE_BASE), features);
    let mem = Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    // Descriptor slots of the ring and of a region where indirect tables may point.
    let ring_descs = (end.0 - QUEUE_BASE) / 16;
    for i in 0..ring_descs + 64 {
        let addr = if i < ring_descs {
            QUEUE_BASE + 16 * i
        } else {
            0x8000 + 16 * (i - ring_descs)
        };
        scribble_descriptor(u, &mem, GuestAddress(addr), size)?;
    }
    Ok((mem, config))
}

/// Writes one 16-byte slot: mostly a plausible descriptor, sometimes raw bytes.
fn scribble_descriptor(
    u: &mut Unstructured,
    mem: &Mem,
    addr: GuestAddress,
    size: u16,
) -> Result<()> {
    let bytes: [u8; 16] = if u.ratio(1, 4)? {
        u.arbitrary()?
    } else {
        let buf_addr: u64 = if u.ratio(7, 8)? {
            u.int_in_range(0..=MEM_SIZE + 16)?
        } else {
            u.arbitrary()?
        };
        let len: u32 = if u.ratio(7, 8)? {
            u.int_in_range(0..=0x400)?
        } else {
            u.arbitrary()?
        };
        // NEXT 1, WRITE 2, INDIRECT 4, packed AVAIL 0x80 / USED 0x8000.
        let flags: u16 = u.arbitrary::<u16>()? & 0x8087;
        let next_or_id: u16 = if u.ratio(7, 8)? {
            u.int_in_range(0..=size.saturating_add(1))?
        } else {
            u.arbitrary()?
        };
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&buf_addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        // Split puts flags at 12 and next at 14; packed puts id at 12 and flags at 14. Either way
        // both fields get plausible values half of the time.
        let (first, second) = if u.arbitrary()? {
            (flags, next_or_id)
        } else {
            (next_or_id, flags)
        };
        b[12..14].copy_from_slice(&first.to_le_bytes());
        b[14..16].copy_from_slice(&second.to_le_bytes());
        b
    };
    let _ = mem.write_obj(bytes, addr);
    Ok(())
}

/// Checks what a device must guarantee about every chain it accepts.
fn check_chain(chain: &DescriptorChain, config: &QueueConfig) {
    assert!(
        chain.id < config.size,
        "accepted id {} of a {}-entry queue",
        chain.id,
        config.size
    );
    assert!(chain.ring_slots >= 1 && chain.ring_slots <= config.size);
    let first_writable = chain
        .segments
        .iter()
        .position(|s| s.writable)
        .unwrap_or(chain.segments.len());
    assert!(
        chain.segments[first_writable..].iter().all(|s| s.writable),
        "readable after writable accepted"
    );
    for Segment { addr, len, .. } in &chain.segments {
        assert!(
            *len == 0
                || addr
                    .0
                    .checked_add(u64::from(*len))
                    .is_some_and(|end| end <= MEM_SIZE)
        );
    }
    let total: u64 = chain.segments.iter().map(|s| u64::from(s.len)).sum();
    assert!(total <= u64::from(u32::MAX) * 2);
}

fn drive<Q: DeviceQueue>(u: &mut Unstructured, mem: &Mem, mut queue: Q) -> Result<()> {
    let config = *queue.config();
    let mut chain = DescriptorChain::default();
    let mut taken: Vec<(u16, u32)> = queue
        .inflight()
        .iter()
        .map(|c| (c.id, c.writable_len()))
        .collect();
    let rounds = 2 * u32::from(config.size) + 16;
    for _ in 0..rounds {
        match u.int_in_range(0..=6u8)? {
            0..=2 => {
                // Rejections are typed errors by construction; what is accepted must be sound.
                if let Ok(true) = queue.pop_into(mem, &mut chain) {
                    check_chain(&chain, &config);
                    taken.push((chain.id, chain.writable_len()));
                }
            }
            3 => {
                if !taken.is_empty() {
                    let (id, writable) = taken.swap_remove(u.choose_index(taken.len())?);
                    queue
                        .add_used(mem, id, writable)
                        .expect("completing a taken chain");
                }
            }
            4 => {
                let _ = queue.publish_used(mem);
                let _ = queue.needs_notification(mem);
                let _ = queue.enable_notification(mem);
            }
            5 => {
                queue
                    .publish_used(mem)
                    .expect("publishing to a validated ring");
                let state = queue.state().expect("state after publish");
                assert_eq!(state.inflight.len(), taken.len());
                match Q::from_state(config, &state, mem) {
                    Ok(restored) => {
                        assert_eq!(restored.state().expect("state of restored queue"), state);
                        queue = restored;
                    }
                    // Our own state may be refused only over what the driver controls: indices
                    // in guest memory that are inconsistent with it.
                    Err(e) => assert!(
                        matches!(
                            e,
                            StateError::AvailAhead { .. } | StateError::InflightMismatch { .. }
                        ),
                        "own state rejected: {e}"
                    ),
                }
            }
            _ => {
                // The driver writes anywhere in the ring area meanwhile (including indices).
                let offset = u.int_in_range(0..=0x1fffu64)?;
                let bytes: [u8; 2] = u.arbitrary()?;
                let _ = mem.write_obj(bytes, GuestAddress(QUEUE_BASE + offset));
            }
        }
    }
    Ok(())
}

fn chain_parsing_inner(u: &mut Unstructured) -> Result<()> {
    let (mem, config) = setup(u)?;
    // Split indices and packed positions start wherever the input says.
    let avail_idx: u16 = u.arbitrary()?;
    let _ = mem.write_obj(avail_idx, config.driver_area.unchecked_add(2));
    match config.kind {
        RingKind::Split => drive(
            u,
            &mem,
            SplitQueue::new(config, &mem).expect("valid layout"),
        ),
        RingKind::Packed => drive(
            u,
            &mem,
            PackedQueue::new(config, &mem).expect("valid layout"),
        ),
    }
}

fn arbitrary_state(u: &mut Unstructured, config: &QueueConfig) -> Result<QueueState> {
    let mut state = QueueState::initial(config.kind);
    let near = |u: &mut Unstructured<'_>| -> Result<u16> {
        Ok(if u.ratio(3, 4)? {
            RingPosition {
                index: u.int_in_range(0..=config.size - 1)?,
                wrap_counter: u.arbitrary()?,
            }
            .to_state()
        } else {
            u.arbitrary()?
        })
    };
    state.avail_state = near(u)?;
    state.used_state = if config.kind == RingKind::Split && u.ratio(3, 4)? {
        0
    } else {
        near(u)?
    };
    state.notification_owed = u.arbitrary()?;
    for _ in 0..u.int_in_range(0..=4u8)? {
        let segments = (0..u.int_in_range(0..=3u8)?)
            .map(|_| {
                Ok(Segment {
                    addr: GuestAddress(u.int_in_range(0..=MEM_SIZE)?),
                    len: u.int_in_range(0..=0x2000)?,
                    writable: u.arbitrary()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        state.inflight.push(SavedChain {
            id: u.int_in_range(0..=config.size)?,
            ring_slots: u.int_in_range(0..=3)?,
            segments,
        });
    }
    Ok(state)
}

fn state_restore_inner(u: &mut Unstructured) -> Result<()> {
    let (mem, config) = setup(u)?;
    let used_idx: u16 = u.arbitrary()?;
    let _ = mem.write_obj(used_idx, config.device_area.unchecked_add(2));
    let state = arbitrary_state(u, &config)?;
    match config.kind {
        RingKind::Split => restore_and_drive::<SplitQueue>(u, &mem, config, &state),
        RingKind::Packed => restore_and_drive::<PackedQueue>(u, &mem, config, &state),
    }
}

fn restore_and_drive<Q: DeviceQueue>(
    u: &mut Unstructured,
    mem: &Mem,
    config: QueueConfig,
    state: &QueueState,
) -> Result<()> {
    let mut queue = Q::new(config, mem).expect("valid layout");
    let before = queue.state().expect("fresh state");
    match queue.set_state(state, mem) {
        Ok(()) => assert_eq!(&queue.state().expect("state after restore"), state),
        Err(_) => assert_eq!(
            queue.state().expect("state after rejection"),
            before,
            "a rejected state changed the queue"
        ),
    }
    drive(u, mem, queue)
}
