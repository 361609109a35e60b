//! Pitfall 6 of spec-decisions §7: dirty tracking covers the device's ring writes (split used ring,
//! packed used descriptors, event suppression), not only data buffers. The queue writes guest
//! memory only through vm-memory, so a memory with an `AtomicBitmap` logs every such write; a
//! migration that copies dirty pages therefore carries the rings along. Taking chains writes
//! nothing.

use virtio_lm_queue::{
    BufferSpec, DeviceQueue, QueueConfig, RingDriver, RingFeatures, RingKind, Virtqueue,
};
use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

type Mem = GuestMemoryMmap<AtomicBitmap>;

const PAGE: u64 = 0x1000;

fn memory() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// One page per ring area, so each area's dirtiness can be told apart.
fn config(kind: RingKind) -> QueueConfig {
    QueueConfig {
        kind,
        size: 16,
        desc_table: GuestAddress(PAGE),
        driver_area: GuestAddress(2 * PAGE),
        device_area: GuestAddress(3 * PAGE),
        features: RingFeatures {
            event_idx: true,
            indirect_desc: false,
        },
    }
}

fn clear_log(mem: &Mem) {
    for region in mem.iter() {
        // The region derefs to its mapping, which owns the whole bitmap.
        (**region).bitmap().reset();
    }
}

/// Which of the pages 0..8 are logged dirty.
fn dirty_pages(mem: &Mem) -> Vec<u64> {
    let region = mem.find_region(GuestAddress(0)).unwrap();
    (0..8)
        .filter(|p| region.bitmap().dirty_at((p * PAGE) as usize))
        .collect()
}

/// Checks the pages each device step dirties: taking one chain (none), returning it, enabling
/// notifications; each expectation comes with what those pages hold.
fn assert_pages_dirtied(kind: RingKind, returning: (&[u64], &str), enabling: (&[u64], &str)) {
    let mem = memory();
    let config = config(kind);
    let mut driver = RingDriver::new(config, &mem).unwrap();
    let mut device = Virtqueue::new(config, &mem).unwrap();
    let id = driver
        .add_chain(&mem, &[BufferSpec::writable(0x8000, 64)])
        .unwrap();
    driver.publish(&mem).unwrap();

    clear_log(&mem);
    device.pop(&mem).unwrap().unwrap();
    let none: &[u64] = &[];
    assert_eq!(
        dirty_pages(&mem),
        none,
        "{kind:?}: taking a chain must not write guest memory"
    );
    device.add_used(&mem, id, 64).unwrap();
    device.publish_used(&mem).unwrap();
    assert_eq!(dirty_pages(&mem), returning.0, "{}", returning.1);

    clear_log(&mem);
    device.enable_notification(&mem).unwrap();
    assert_eq!(dirty_pages(&mem), enabling.0, "{}", enabling.1);
}

/// Split: taking a chain writes nothing; returning it dirties the used ring only; enabling
/// notifications with EVENT_IDX dirties the used ring (avail_event lives there). Packed:
/// returning a chain rewrites its descriptor slot (in the descriptor ring); the device event
/// suppression structure is the only other area the device writes.
#[test]
fn device_ring_writes_are_logged() {
    assert_pages_dirtied(
        RingKind::Split,
        (&[3], "split: used element and used.idx"),
        (&[3], "split: avail_event"),
    );
    assert_pages_dirtied(
        RingKind::Packed,
        (&[1], "packed: used descriptor in the descriptor ring"),
        (&[3], "packed: device event suppression"),
    );
}
