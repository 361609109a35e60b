//! The core hands a queue's restored in-flight chains (seed 001; spec-decisions §3, in-flight
//! chains) to the device once per start of the queue, through
//! `VirtioDevice::adopt_inflight`; devices keep no adopt flag of their own. Each chain is
//! completed exactly once (spec-decisions §7 pitfall 2), also when the device is stopped and
//! suspended again, recording in flight, before it completes anything.

mod common;

use std::sync::atomic::Ordering;

use common::context::{collect_rearm, destination, record_inflight, AdoptingDevice};
use common::{bit, CoreDriver, RUNNING, SETUP};
use virtio_lm_queue::UsedBuffer;
use virtio_lm_spec::{DeviceStatus, Feature};

const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
const SUSPENDED: DeviceStatus = SETUP.union(DeviceStatus::SUSPEND);

fn features(packed: bool) -> u64 {
    let mut f = bit(Feature::Version1)
        | bit(Feature::DeviceStop)
        | bit(Feature::QueueState)
        | bit(Feature::Suspend);
    if packed {
        f |= bit(Feature::RingPacked);
    }
    f
}

fn sorted_ids(used: &[UsedBuffer]) -> Vec<u16> {
    let mut ids: Vec<u16> = used.iter().map(|u| u.id).collect();
    ids.sort_unstable();
    ids
}

/// Seed 001 ("the device … completes each in-flight request exactly once", as recorded in the
/// queue state): chains in flight in a context restored into a fresh device are handed to it
/// at DRIVER_OK and, after each record-in-flight stop or suspend that made it let go of them,
/// once more at the resume — never twice for one start: the device here adds every chain it
/// is handed, so a second hand-over would complete a chain twice (a ring error, and
/// DEVICE_NEEDS_RESET).
#[test]
fn restored_inflight_chains_complete_once_across_stops_and_suspends() {
    for packed in [false, true] {
        let source = AdoptingDevice::new(false);
        let mut src = CoreDriver::with_options(Box::new(source), record_inflight());
        src.start(features(packed));
        let mut outstanding = src.offer(4);
        src.core.kick(0);
        assert!(src.collect().is_empty(), "held in process");
        src.core.write_status(STOPPED);
        assert_eq!(src.core.status(), STOPPED);
        let ctx = src.core.save_context().unwrap();
        outstanding.sort_unstable();

        let device = AdoptingDevice::new(false);
        let release = device.release.clone();
        let held = device.held.clone();
        let mut dst = destination(&mut src, Box::new(device), record_inflight());
        dst.core.restore_context(&ctx).unwrap();
        dst.core.write_status(RUNNING);
        assert_eq!(held.lock().unwrap().len(), 4, "handed over at the resume");
        for (request, quiet, resume) in [
            (STOPPED, STOPPED, RUNNING),
            (
                RUNNING | DeviceStatus::SUSPEND,
                SUSPENDED,
                SUSPENDED | DeviceStatus::DRIVER_OK,
            ),
            (STOPPED, STOPPED, RUNNING),
        ] {
            dst.core.write_status(request);
            assert_eq!(dst.core.status(), quiet);
            assert!(held.lock().unwrap().is_empty(), "let go at the quiesce");
            let mut inflight = dst.core.queue_state(0).unwrap().inflight_ids();
            inflight.sort_unstable();
            assert_eq!(inflight, outstanding, "packed={packed}: still in flight");
            dst.core.write_status(resume);
            assert_eq!(dst.core.status(), RUNNING);
            assert_eq!(held.lock().unwrap().len(), 4, "handed over once more");
            dst.core.kick(0);
            dst.core.process_pending();
            assert_eq!(held.lock().unwrap().len(), 4, "not again within one start");
        }
        assert!(dst.collect().is_empty(), "nothing completed while held");
        release.store(true, Ordering::SeqCst);
        dst.core.kick(0);
        let used = collect_rearm(&mut dst);
        assert_eq!(sorted_ids(&used), outstanding, "packed={packed}: each once");
        assert_eq!(dst.core.status(), RUNNING, "no ring error");
        dst.core.kick(0);
        dst.core.process_pending();
        assert!(dst.collect().is_empty(), "nothing completed twice");
    }
}
