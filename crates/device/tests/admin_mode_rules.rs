//! The seed 004 admin-mode rules of the core, each pinned so that breaking it fails a test
//! (found by `scripts/mutants`: these mutants survived the seed tests).

use std::sync::Arc;

use virtio_lm_device::testing::{self, RUNNING};
use virtio_lm_device::{
    CoreOptions, DeviceCore, DeviceError, InterruptCounter, QueueAccess, VirtioDevice,
};
use virtio_lm_queue::QueueConfig;
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

/// Two queues of 8; every buffer is used at once with length 0.
struct TwoQueues;

impl VirtioDevice<Mem> for TwoQueues {
    virtio_lm_device::device_identity!(type: 0xfffd, queues: [8, 8], config: 0);

    fn device_features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, Mem>,
    ) -> Result<(), DeviceError> {
        queue.complete_each(|_, _| Ok(0))
    }
}

fn core_on(mem: &Arc<Mem>) -> DeviceCore<Mem> {
    let irq = Arc::new(InterruptCounter::default());
    DeviceCore::new(
        Box::new(TwoQueues),
        mem.clone(),
        irq,
        CoreOptions::default(),
    )
    .unwrap()
}

/// Seed 004: no virtqueue memory access unless Active, so a context restored in Freeze starts
/// its running queues when the device is Active again (spec-decisions §4) — only the queues
/// the driver enabled: a queue the source programmed but never enabled stays unstarted, and the
/// device runs (no DEVICE_NEEDS_RESET from that queue's ring, which is outside guest memory).
#[test]
fn restore_in_freeze_starts_only_enabled_queues_when_active() {
    let mem = Arc::new(Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
    let mut source = core_on(&mem);
    let features = Profile::Seeds.mask(Feature::Version1).unwrap();
    let kind = testing::negotiate(&mut source, features);
    let ring = testing::ring_features(&source, features);
    let (config, _) = QueueConfig::contiguous(kind, 8, GuestAddress(0x1000), ring);
    testing::program_queue(&mut source, 0, &config);
    // Queue 1 programmed but never enabled, with a ring outside guest memory.
    source.write_queue(1, |r| r.desc = 0x4000_0000);
    source.write_status(RUNNING);
    assert_eq!(source.status(), RUNNING);
    source.set_admin_mode(DevMode::Stop).unwrap();
    let context = source.save_context().unwrap();

    let mut dest = core_on(&mem);
    dest.set_admin_mode(DevMode::Freeze).unwrap();
    dest.restore_context(&context).unwrap();
    dest.set_admin_mode(DevMode::Active).unwrap();
    assert_eq!(dest.status(), RUNNING, "{:?}", dest.last_error());
    assert!(dest.queue(0).unwrap().enabled);
    assert!(!dest.queue(1).unwrap().enabled);
}
