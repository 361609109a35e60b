//! Pitfall 6 of spec-decisions §7: dirty tracking covers the device's ring writes (split used ring,
//! packed used descriptors, event suppression), not only data buffers. The queue writes guest
//! memory only through vm-memory, so a memory with an `AtomicBitmap` logs every such write; a
//! migration that copies dirty pages therefore carries the rings along. Taking chains writes
//! nothing.

use virtio_lm_queue::{
    BufferSpec, DeviceQueue, PackedDriver, PackedQueue, QueueConfig, RingFeatures, RingKind,
    SplitDriver, SplitQueue,
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

/// Split: taking a chain writes nothing; returning it dirties the used ring only; enabling
/// notifications with EVENT_IDX dirties the used ring (avail_event lives there).
#[test]
fn split_device_writes_are_logged() {
    let mem = memory();
    let config = config(RingKind::Split);
    let mut driver = SplitDriver::new(config, &mem).unwrap();
    let mut device = SplitQueue::new(config, &mem).unwrap();
    let head = driver
        .add_chain(&mem, &[BufferSpec::writable(0x8000, 64)])
        .unwrap();
    driver.publish(&mem).unwrap();

    clear_log(&mem);
    device.pop(&mem).unwrap().unwrap();
    assert_eq!(
        dirty_pages(&mem),
        Vec::<u64>::new(),
        "taking a chain must not write guest memory"
    );
    device.add_used(&mem, head, 64).unwrap();
    device.publish_used(&mem).unwrap();
    assert_eq!(dirty_pages(&mem), vec![3], "used element and used.idx");

    clear_log(&mem);
    device.enable_notification(&mem).unwrap();
    assert_eq!(dirty_pages(&mem), vec![3], "avail_event");
}

/// Packed: returning a chain rewrites its descriptor slot (in the descriptor ring); the device
/// event suppression structure is the only other area the device writes.
#[test]
fn packed_device_writes_are_logged() {
    let mem = memory();
    let config = config(RingKind::Packed);
    let mut driver = PackedDriver::new(config, &mem).unwrap();
    let mut device = PackedQueue::new(config, &mem).unwrap();
    let id = driver
        .add_chain(&mem, &[BufferSpec::writable(0x8000, 64)])
        .unwrap();
    driver.publish(&mem).unwrap();

    clear_log(&mem);
    device.pop(&mem).unwrap().unwrap();
    assert_eq!(
        dirty_pages(&mem),
        Vec::<u64>::new(),
        "taking a chain must not write guest memory"
    );
    device.add_used(&mem, id, 64).unwrap();
    device.publish_used(&mem).unwrap();
    assert_eq!(
        dirty_pages(&mem),
        vec![1],
        "used descriptor in the descriptor ring"
    );

    clear_log(&mem);
    device.enable_notification(&mem).unwrap();
    assert_eq!(dirty_pages(&mem), vec![3], "device event suppression");
}
