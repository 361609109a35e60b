//! The processing rules of the core (`core/processing.rs`), each pinned so that breaking it
//! fails a test (found by `scripts/mutants`: these mutants survived the device and pci suites).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use virtio_lm_device::testing::context::destination;

use virtio_lm_device::testing::{
    self, default_features, CoreDriver, CountingDevice, Mem, TestRing, DATA, QUEUE_BASE, RUNNING,
    STOPPED,
};
use virtio_lm_device::{CoreOptions, DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_queue::{BufferSpec, QueueConfig, RingDriver};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::DeviceStatus;
use vm_memory::GuestAddress;

/// Seed 002: "nothing processed after DEVICE_NEEDS_RESET". A stop that waits for requests in
/// process, and then DEVICE_NEEDS_RESET: the requests the device could finish now are not
/// completed when the driver next reads the status (the core does not poll a broken device),
/// so the used ring stays untouched and no used-buffer notification goes out.
#[test]
fn a_broken_device_completes_nothing_while_its_stop_waits() {
    let (mut d, release) = CoreDriver::holding(2);
    d.core.write_status(STOPPED);
    assert!(
        !d.core.status().contains(DeviceStatus::DEVICE_STOPPED),
        "the stop waits for the two requests in process"
    );
    d.core
        .needs_reset(DeviceError::Backend("backend lost".into()));
    release.store(true, Ordering::SeqCst);
    let status = d.core.status();
    assert!(status.contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(d.collect().len(), 0, "requests completed after NEEDS_RESET");
    assert_eq!(
        d.irq.used(),
        0,
        "used-buffer notification after NEEDS_RESET"
    );
}

/// Pitfall 4: "kicks latched while quiet are processed on resume"; seed 004: no virtqueue
/// memory access unless Active, so a context restored in Freeze starts its queues at Active.
/// Buffers the driver made available (and notified) while the destination was frozen are
/// processed when the owner sets Active, without another kick.
#[test]
fn buffers_kicked_while_frozen_after_a_restore_are_processed_at_active() {
    let mut source = CoreDriver::running();
    source.core.set_admin_mode(DevMode::Stop).unwrap();
    let context = source.core.save_context().unwrap();

    let mut dest = destination(
        &mut source,
        Box::new(CountingDevice::new(0, 16)),
        CoreOptions::default(),
    );
    dest.core.set_admin_mode(DevMode::Freeze).unwrap();
    dest.core.restore_context(&context).unwrap();
    dest.offer(2);
    dest.core.kick(0);
    assert_eq!(dest.collect().len(), 0, "processed while frozen");
    dest.core.set_admin_mode(DevMode::Active).unwrap();
    assert_eq!(
        dest.collect().len(),
        2,
        "latched kick not processed at Active"
    );
    assert_eq!(dest.irq.used(), 1);
}

/// A device that uses every buffer at once; while it processes its first batch the driver (the
/// shared ring) adds one more buffer, as a driver on another vCPU would while notifications are
/// suppressed.
struct RacedDevice {
    driver: Arc<Mutex<Option<RingDriver>>>,
    raced: bool,
}

impl VirtioDevice<Mem> for RacedDevice {
    virtio_lm_device::device_identity!(type: 0xfffc, queues: [16], config: 0);

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, Mem>,
    ) -> Result<(), DeviceError> {
        queue.complete_each(|_, _| Ok(0))?;
        if !std::mem::replace(&mut self.raced, true) {
            let mut driver = self.driver.lock().unwrap();
            let ring = driver.as_mut().expect("ring shared before the kick");
            ring.add(queue.mem(), &[BufferSpec::writable(DATA + 0x1000, 0x40)]);
            ring.publish(queue.mem()).unwrap();
        }
        Ok(())
    }
}

/// Pitfall 4: "no lost notification ... with EVENT_IDX (re-check the queue ...)". While the
/// device suppresses available buffer notifications the driver does not notify, so `run_queue`
/// looks again once it re-arms: a buffer made available while the device was taking the
/// kicked ones is processed in the same kick, not left for a kick the driver never sends.
#[test]
fn a_buffer_added_during_processing_is_processed_in_the_same_kick() {
    let shared = Arc::new(Mutex::new(None));
    let mut d = CoreDriver::new(Box::new(RacedDevice {
        driver: shared.clone(),
        raced: false,
    }));
    d.start_default();
    d.offer(2);
    *shared.lock().unwrap() = d.rings[0].take();
    d.core.kick(0);
    let mut ring = shared.lock().unwrap().take().unwrap();
    let used = ring.collect(&d.mem);
    assert_eq!(used.len(), 3, "the buffer added during processing waits");
}

/// Two queues; queue 0's requests are taken when notified and completed only from `poll` once
/// released, as a backend thread would complete them.
struct BackendPair {
    held: VecDeque<u16>,
    release: Arc<AtomicBool>,
}

impl VirtioDevice<Mem> for BackendPair {
    virtio_lm_device::device_identity!(type: 0xfffb, queues: [8, 8], config: 0);

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, Mem>,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = queue.pop()? {
            self.held.push_back(chain.id());
        }
        Ok(())
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, Mem>]) -> Result<(), DeviceError> {
        let Some(queue) = queues.first_mut() else {
            return Ok(());
        };
        if self.release.load(Ordering::SeqCst) {
            while let Some(id) = self.held.pop_front() {
                queue.add_used(id, 0)?;
            }
        }
        Ok(())
    }
}

/// The core's contract for `kick` (no seed statement; a notification names one queue): a
/// notification of a queue the driver never enabled is dropped whole, it does not make the
/// core run the device. Queue 0's backend has finished two requests; a kick of the disabled
/// queue 1 completes nothing, a kick of queue 0 then completes both (so the device would).
#[test]
fn a_kick_of_a_queue_not_enabled_is_dropped() {
    let release = Arc::new(AtomicBool::new(false));
    let mut d = CoreDriver::new(Box::new(BackendPair {
        held: VecDeque::new(),
        release: release.clone(),
    }));
    let features = default_features();
    d.negotiate(features);
    let ring = testing::ring_features(&d.core, features);
    let (config, _) = QueueConfig::contiguous(d.kind, 8, GuestAddress(QUEUE_BASE), ring);
    testing::program_queue(&mut d.core, 0, &config);
    d.rings = vec![Some(RingDriver::create(config, &d.mem))];
    assert_eq!(d.set_status(RUNNING), RUNNING);
    d.offer(2);
    d.core.kick(0);
    release.store(true, Ordering::SeqCst);

    d.core.kick(1);
    assert_eq!(
        d.collect().len(),
        0,
        "a kick of a disabled queue ran the device"
    );
    assert_eq!(d.irq.used(), 0);
    d.core.kick(0);
    assert_eq!(d.collect().len(), 2);
}
