//! The dirty log sees every writer of the simulated VM (docs/architecture.md, crates/vm: "every
//! writer goes through vm-memory so it is logged: device data writes, used-ring and
//! packed-descriptor writes, and the guest drivers' own writes"), through the whole stack: a
//! virtio-blk function on `VmMemory` with its worker, driven by `BlkDriver`, split and packed.
//!
//! The blk backend is held at a closed gate while the driver submits, so the first harvest holds
//! only the driver's writes (its request header and its descriptor/avail writes) and the second
//! only the device's (the read data and the used ring, or the packed descriptor written back).
//! Negative controls, showing the assertions can fail: a device writing through a second mapping
//! of the memfd (bitmaps no harvest reads), and a write to the memfd itself, land in guest
//! memory but in no harvest.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_lm_devices::testing::ImageFile;

use virtio_lm_device::{CoreOptions, Worker};
use virtio_lm_devices::blk::driver::{BlkDriver, BlkDriverConfig, BlkRequest, DATA_OFFSET};
use virtio_lm_devices::{Blk, BlkOptions, Faults, Gate};
use virtio_lm_pci::{KickMode, PciDriver, VirtioPciFunction};
use virtio_lm_queue::RingKind;
use virtio_lm_spec::{Feature, Profile};
use virtio_lm_vm::{DirtyRange, GuestRam, VmMemory, PAGE_SIZE};
use vm_memory::{Bytes, FileOffset, GuestAddress};

const MEM: u64 = 1 << 20;
const IMAGE_LEN: usize = 1 << 16;
const READ_LEN: u32 = 4096;

fn image(tag: &str) -> ImageFile {
    ImageFile::new("vm-dirty", tag, IMAGE_LEN, 0x5a)
}

struct Rig {
    memory: VmMemory,
    driver: BlkDriver<GuestRam>,
    gate: Gate,
    _worker: Worker,
    _image: ImageFile,
}

/// A second mapping of the VM's memfd with bitmaps of its own, which no harvest reads: a device
/// writing through it bypasses the dirty log (the negative control).
fn unlogged_alias(memory: &VmMemory) -> Arc<GuestRam> {
    let file = memory.file().try_clone().unwrap();
    let range = (
        GuestAddress(0),
        MEM as usize,
        Some(FileOffset::new(file, 0)),
    );
    Arc::new(GuestRam::from_ranges_with_files([range]).unwrap())
}

fn rig(packed: bool, device_logged: bool) -> Rig {
    let image = image(if packed { "packed" } else { "split" });
    let gate = Gate::new();
    let options = BlkOptions {
        faults: Faults {
            gate: Some(gate.clone()),
            ..Faults::default()
        },
        ..BlkOptions::new(image.path())
    };
    let blk = Blk::open(options).unwrap();
    let wake = blk.completion_fd();
    let memory = VmMemory::new(MEM).unwrap();
    let device_view = if device_logged {
        memory.ram().clone()
    } else {
        unlogged_alias(&memory)
    };
    let function = Arc::new(
        VirtioPciFunction::with_device(Box::new(blk), device_view, CoreOptions::default(), 2, true)
            .unwrap(),
    );
    let KickMode::Worker(kicks) = function.kick_mode().clone() else {
        panic!("worker mode");
    };
    let worker = Worker::spawn_with_wakers(function.core().clone(), kicks, vec![wake]).unwrap();
    let mut transport = vec![Feature::Version1];
    if packed {
        transport.push(Feature::RingPacked);
    }
    let config = BlkDriverConfig {
        features: Profile::Seeds.feature_set(&transport).unwrap(),
        num_queues: 1,
        queue_size: 8,
        rings_at: 0x1000,
        max_data: READ_LEN,
    };
    let irqs = vec![function.interrupts().vector_eventfd(1).unwrap().clone()];
    let pci = PciDriver::new(function.clone(), memory.ram().clone(), Profile::Seeds).unwrap();
    let driver = BlkDriver::new(pci, config, irqs).unwrap();
    Rig {
        memory,
        driver,
        gate,
        _worker: worker,
        _image: image,
    }
}

fn page_of(addr: u64) -> u64 {
    addr - addr % PAGE_SIZE
}

fn covers(ranges: &[DirtyRange], addr: u64) -> bool {
    ranges.iter().any(|r| r.contains(addr))
}

/// The ring area the device writes when it returns a buffer: the used ring (split) or the
/// descriptor ring, where packed used descriptors are written back.
fn device_written_area(driver: &mut BlkDriver<GuestRam>) -> (u64, usize) {
    let config = *driver.pci().queue(0).unwrap().ring().config();
    let [desc_len, _, used_len] = config.area_lengths();
    match config.kind {
        RingKind::Split => (config.device_area.0, used_len as usize),
        RingKind::Packed => (config.desc_table.0, desc_len as usize),
    }
}

fn snapshot(ram: &GuestRam, (at, len): (u64, usize)) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ram.read_slice(&mut bytes, GuestAddress(at)).unwrap();
    bytes
}

/// Waits (reading only: reads mark nothing) until the device has written `area`.
fn wait_for_device(ram: &GuestRam, area: (u64, usize), before: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshot(ram, area) == before {
        assert!(
            Instant::now() < deadline,
            "the device never returned the request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn driver_and_device_writes_are_logged(packed: bool, device_logged: bool) {
    let mut rig = rig(packed, device_logged);
    let slot = rig.driver.config().slots_at(0);
    let data_page = page_of(slot + DATA_OFFSET + u64::from(READ_LEN) - 1);
    assert_ne!(
        data_page,
        page_of(slot),
        "the data spills onto a page of its own"
    );
    let area = device_written_area(&mut rig.driver);
    let ring_page = page_of(area.0);

    let mut log = rig.memory.start_dirty_log().unwrap();
    rig.gate.close();
    let read = BlkRequest::Read {
        sector: 0,
        len: READ_LEN,
    };
    rig.driver.submit(0, read).unwrap().unwrap();
    // After the submission: a packed driver writes its descriptor into the same ring.
    let before = snapshot(rig.memory.ram(), area);
    let driver_writes = log.harvest();
    for (page, what) in [
        (slot, "the request header"),
        (ring_page, "descriptors and avail"),
    ] {
        assert!(covers(&driver_writes, page), "{what}: {driver_writes:?}");
    }
    assert!(
        !covers(&driver_writes, data_page),
        "the device has not run: {driver_writes:?}"
    );

    rig.gate.open();
    wait_for_device(rig.memory.ram(), area, &before);
    // The status byte is written just before the used entry, under the same lock.
    let device_writes = log.harvest();
    if device_logged {
        for (page, what) in [(data_page, "the read data"), (ring_page, "the used entry")] {
            assert!(covers(&device_writes, page), "{what}: {device_writes:?}");
        }
    } else {
        assert!(device_writes.is_empty(), "bypassed: {device_writes:?}");
    }
    assert!(log.harvest().is_empty(), "a harvest clears what it took");

    let done = rig.driver.collect(0).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].data, vec![0x5a; READ_LEN as usize]);
    log.stop();
}

#[test]
fn split_ring_driver_data_and_used_ring_writes_are_logged() {
    driver_and_device_writes_are_logged(false, true);
}

#[test]
fn packed_ring_driver_data_and_descriptor_writes_are_logged() {
    driver_and_device_writes_are_logged(true, true);
}

/// Negative control at the level of the whole stack: the same device and driver, the device
/// writing through a second mapping of the memfd whose bitmaps no harvest reads. The request
/// completes with the right data, and the harvest that saw the device's writes above is empty
/// here — the assertions above hold because the device writes through the logged memory.
#[test]
fn a_device_writing_beside_the_log_is_not_seen() {
    driver_and_device_writes_are_logged(false, false);
    driver_and_device_writes_are_logged(true, false);
}

#[test]
fn harvest_coalesces_and_clears() {
    let memory =
        VmMemory::with_ranges(&[(0, 0x10000), (0x10000, 0x10000), (0x40000, 0x1000)]).unwrap();
    let ram = memory.ram();
    let mut log = memory.start_dirty_log().unwrap();
    // Across the boundary of two adjacent regions: one range.
    ram.write_slice(&[1u8; 3 * 4096], GuestAddress(0xf000))
        .unwrap();
    ram.write_obj(9u8, GuestAddress(0x40010)).unwrap();
    assert_eq!(
        log.harvest(),
        vec![
            DirtyRange {
                gpa: 0xf000,
                len: 0x3000
            },
            DirtyRange {
                gpa: 0x40000,
                len: PAGE_SIZE
            },
        ]
    );
    assert!(log.harvest().is_empty());
    ram.write_obj(1u32, GuestAddress(0x5000)).unwrap();
    assert_eq!(
        log.harvest(),
        vec![DirtyRange {
            gpa: 0x5000,
            len: PAGE_SIZE
        }]
    );
}

#[test]
fn stop_ends_the_window_and_drop_stops_like_cancel() {
    let memory = VmMemory::new(0x10000).unwrap();
    let ram = memory.ram();
    let log = memory.start_dirty_log().unwrap();
    assert!(matches!(
        memory.start_dirty_log(),
        Err(virtio_lm_vm::MemoryError::AlreadyLogging)
    ));
    ram.write_obj(1u8, GuestAddress(0x1000)).unwrap();
    log.stop();
    assert!(!memory.is_logging());
    // Written while stopped: not in the next window.
    ram.write_obj(2u8, GuestAddress(0x2000)).unwrap();
    let mut log = memory.start_dirty_log().unwrap();
    assert!(
        log.harvest().is_empty(),
        "marks from before the window are cleared"
    );
    ram.write_obj(3u8, GuestAddress(0x3000)).unwrap();
    // A migration cancelled with the log still running drops it.
    drop(log);
    assert!(!memory.is_logging());
    let mut log = memory.start_dirty_log().unwrap();
    assert!(
        log.harvest().is_empty(),
        "a dropped log left no marks behind"
    );
}

/// Negative control: a write to the memfd beside vm-memory reaches guest memory but no
/// harvest — the write paths above are logged because they go through vm-memory, and the
/// assertions would fail for a writer that did not.
#[test]
fn a_write_beside_vm_memory_is_not_logged() {
    let memory = VmMemory::new(0x10000).unwrap();
    let mut log = memory.start_dirty_log().unwrap();
    let offset = memory.layout()[0].file_offset + 0x4000;
    memory.file().write_all_at(b"bypass", offset).unwrap();
    let mut seen = [0u8; 6];
    memory
        .ram()
        .read_slice(&mut seen, GuestAddress(0x4000))
        .unwrap();
    assert_eq!(&seen, b"bypass", "the write landed in guest memory");
    assert!(log.harvest().is_empty(), "and the dirty log never saw it");
    memory
        .ram()
        .write_slice(b"logged", GuestAddress(0x4000))
        .unwrap();
    assert_eq!(
        log.harvest(),
        vec![DirtyRange {
            gpa: 0x4000,
            len: PAGE_SIZE
        }]
    );
}

/// RAM never written is a hole of the memfd: `data_ranges` leaves it out (so a migration sends
/// it as zero without reading, which would allocate it), and covers every page written.
#[test]
fn data_ranges_cover_written_pages_only() {
    let memory = VmMemory::new(4 << 20).unwrap();
    assert!(
        memory.data_ranges().unwrap().is_empty(),
        "fresh RAM is one hole"
    );
    memory.ram().write_obj(1u8, GuestAddress(0x5007)).unwrap();
    memory
        .ram()
        .write_obj(2u8, GuestAddress(0x30_0000))
        .unwrap();
    let ranges = memory.data_ranges().unwrap();
    assert!(
        covers(&ranges, 0x5000) && covers(&ranges, 0x30_0000),
        "{ranges:?}"
    );
    let total: u64 = ranges.iter().map(|r| r.len).sum();
    assert!(total < 4 << 20, "holes left out: {ranges:?}");
}
