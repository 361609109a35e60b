//! Quiescing a virtio-blk device with requests in the backend: draining (seed 000
//! DEVICE_STOPPED, seed 003 SUSPEND) and recording in-flight requests (spec-decisions §3 VQ_INFLIGHT
//! extension), which whoever resumes the queue state re-executes exactly once (spec-decisions §7,
//! pitfall 2).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{initial_sector, pattern, Req, Rig, TempImage, TestCore, RUNNING, SETUP};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::blk::config::status;
use virtio_lm_devices::{BlkOptions, Faults, Gate, RequestInfo};
use virtio_lm_spec::DeviceStatus;

const SECTORS: u64 = 256;
const STOPPED: DeviceStatus = RUNNING.union(DeviceStatus::DEVICE_STOPPED);
const SUSPENDED: DeviceStatus = SETUP.union(DeviceStatus::SUSPEND);

fn gated(image: &TempImage, gate: &Gate) -> BlkOptions {
    BlkOptions {
        faults: Faults {
            gate: Some(gate.clone()),
            ..Faults::default()
        },
        ..image.options()
    }
}

/// The requests of the in-flight tests: writes to sectors 10+2s (slots 0..4), reads of sectors
/// 60+s (slots 4..8).
fn workload() -> Vec<Req> {
    let mut reqs: Vec<Req> = (0..4)
        .map(|s| Req::write(10 + 2 * s, pattern(100 + s, 1024)))
        .collect();
    reqs.extend((0..4).map(|s| Req::read(60 + s, 1)));
    reqs
}

fn submit_all(r: &mut Rig, reqs: &[Req]) -> Vec<u16> {
    let ids = reqs
        .iter()
        .enumerate()
        .map(|(slot, req)| r.add(0, slot as u64, req))
        .collect();
    r.publish(0);
    r.core.kick(0);
    ids
}

/// Checks the workload's effects: every write on the image, every read's data in memory, every
/// status OK.
fn verify(r: &Rig, image: &TempImage, reqs: &[Req]) {
    for (slot, req) in reqs.iter().enumerate() {
        let slot = slot as u64;
        assert_eq!(r.status_of(slot, req), status::OK, "slot {slot}");
        if req.payload.is_empty() {
            assert_eq!(r.in_data(slot, req), initial_sector(req.sector));
        } else {
            assert_eq!(image.sector(req.sector, 2), req.payload);
        }
    }
}

fn sorted(mut ids: Vec<u16>) -> Vec<u16> {
    ids.sort_unstable();
    ids
}

/// The ids of the first `n` buffers `queue` 0 returns used, sorted.
fn used_ids(r: &mut Rig, n: usize) -> Vec<u16> {
    sorted(r.wait_used(0, n).iter().map(|u| u.id).collect())
}

/// After `n` requests came back used: given time and kicks, none comes back again, and the
/// backend executed each once.
fn assert_each_once(r: &mut Rig, n: usize) {
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        r.core.kick(0);
        r.core.process_pending();
    }
    assert!(r.collect(0).is_empty(), "nothing completed twice");
    assert_eq!(r.stats.executed(), n as u64, "each executed once");
}

/// The workload `reqs` (head ids `ids`) comes back used, each request once, with its effects
/// (`verify`), and nothing comes back again.
fn complete_each_once(r: &mut Rig, image: &TempImage, reqs: &[Req], ids: &[u16], packed: bool) {
    assert_eq!(
        used_ids(r, reqs.len()),
        sorted(ids.to_vec()),
        "packed={packed}"
    );
    verify(r, image, reqs);
    assert_each_once(r, reqs.len());
}

/// A started device whose backend is held (gate closed) with the workload submitted: the image,
/// the gate, the rig, the requests and their head ids.
fn held(mode: QuiesceMode, packed: bool) -> (TempImage, Gate, Rig, Vec<Req>, Vec<u16>) {
    let image = TempImage::new(SECTORS);
    let gate = Gate::new();
    gate.close();
    let mut r = Rig::new(gated(&image, &gate), mode);
    r.start_all(packed);
    let reqs = workload();
    let ids = submit_all(&mut r, &reqs);
    (image, gate, r, reqs, ids)
}

/// Seed 000: "the device MUST not process new avail requests and MUST complete all requests
/// that is being processed before presenting the bit." With the backend held, the stop stays
/// pending; once the backend runs, every request is used before DEVICE_STOPPED reads set, and a
/// request made available meanwhile waits for the resume.
#[test]
fn drain_stop_waits_for_the_backend() {
    let (image, gate, mut r, reqs, ids) = held(QuiesceMode::Drain, false);
    r.core.write_status(STOPPED);
    for _ in 0..20 {
        assert_eq!(r.core.status(), RUNNING, "requests still in the backend");
        std::thread::sleep(Duration::from_millis(1));
    }
    let late = r.submit(0, 20, &Req::read(1, 1));
    gate.open();
    r.core.set_and_wait(STOPPED, STOPPED);
    let used: Vec<u16> = r.collect(0).iter().map(|u| u.id).collect();
    assert_eq!(
        sorted(used),
        sorted(ids),
        "all in-process requests, not the late one"
    );
    verify(&r, &image, &reqs);
    r.core.write_status(RUNNING);
    assert_eq!(
        r.wait_used(0, 1)[0].id,
        late,
        "the latched request runs after resume"
    );
}

/// Seed 003: before presenting SUSPEND the device must "Wait until all descriptors that being
/// processed to finish and mark them as used"; then DRIVER_OK resumes it.
#[test]
fn drain_suspend_waits_for_the_backend() {
    let (image, gate, mut r, reqs, ids) = held(QuiesceMode::Drain, true);
    r.core.write_status(RUNNING | DeviceStatus::SUSPEND);
    assert_eq!(r.core.status(), RUNNING);
    gate.open();
    r.core
        .set_and_wait(RUNNING | DeviceStatus::SUSPEND, SUSPENDED);
    let used: Vec<u16> = r.collect(0).iter().map(|u| u.id).collect();
    assert_eq!(sorted(used), sorted(ids));
    verify(&r, &image, &reqs);
    r.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(r.core.status(), RUNNING);
    assert_eq!(r.run(30, &Req::read(5, 1)).0, status::OK);
}

/// spec-decisions §3 (in-flight extension) and §7 pitfall 2: a record-in-flight stop is presented
/// at once; requests the backend had not started are handed back unfinished in the queue state
/// (VQ_INFLIGHT, in the order taken), never executed on the source even when its backend
/// resumes; a fresh device on the same memory and image, restored from the queue state,
/// executes each exactly once and returns each used once.
#[test]
fn record_inflight_stop_hands_over_and_reexecutes_once() {
    for packed in [false, true] {
        let (image, gate, mut src, reqs, ids) = held(QuiesceMode::RecordInflight, packed);
        let before = image.read();
        let checksum = src.memory_checksum();
        src.core.write_status(STOPPED);
        assert_eq!(src.core.status(), STOPPED, "presented without waiting");
        let states = src.core.queue_states();
        assert_eq!(
            states[0].inflight_ids(),
            ids,
            "in-flight in the order taken"
        );
        // The source's backend may run again: cancelled requests stay cancelled.
        gate.open();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(src.stats.executed(), 0);
        assert_eq!(src.stats.cancelled(), reqs.len() as u64);
        assert_eq!(image.read(), before, "source wrote nothing to the image");
        assert_eq!(src.memory_checksum(), checksum, "nor to guest memory");
        assert!(src.collect(0).is_empty());

        let mut dst = src.migrate(image.options(), QuiesceMode::RecordInflight);
        complete_each_once(&mut dst, &image, &reqs, &ids, packed);
        assert_eq!(
            dst.run(20, &Req::read(61, 1)).0,
            status::OK,
            "destination runs on"
        );
    }
}

/// Record-in-flight with some requests finished and some still waiting: the finished ones are
/// returned used on the source before the stop is presented, only the others are handed over,
/// and the destination executes exactly those.
#[test]
fn record_inflight_hands_over_only_unfinished_requests() {
    let image = TempImage::new(SECTORS);
    let options = BlkOptions {
        faults: Faults {
            // Reads (sectors 60+) wait "forever"; a cancel ends the wait.
            delay: Some(Arc::new(|info: &RequestInfo| {
                if info.sector >= 60 {
                    Duration::from_secs(60)
                } else {
                    Duration::ZERO
                }
            })),
            ..Faults::default()
        },
        ..image.options()
    };
    let mut src = Rig::new(options, QuiesceMode::RecordInflight);
    src.start_all(false);
    let reqs = workload();
    let ids = submit_all(&mut src, &reqs);
    assert_eq!(used_ids(&mut src, 4), sorted(ids[..4].to_vec()));
    src.core.set_and_wait(STOPPED, STOPPED);
    let states = src.core.queue_states();
    assert_eq!(states[0].inflight_ids(), ids[4..].to_vec());
    assert_eq!(src.stats.executed(), 4);

    let mut dst = src.migrate(image.options(), QuiesceMode::RecordInflight);
    assert_eq!(used_ids(&mut dst, 4), sorted(ids[4..].to_vec()));
    verify(&dst, &image, &reqs);
    assert_eq!(dst.stats.executed(), 4, "only the reads ran here");
}

/// Record-in-flight stop, then the same device resumes (migration cancelled, spec-decisions §7
/// pitfall 7): the requests it dropped are adopted from the queue's in-flight list and executed
/// exactly once.
#[test]
fn record_inflight_stop_then_resume_reexecutes_once() {
    let (image, gate, mut r, reqs, ids) = held(QuiesceMode::RecordInflight, false);
    r.core.set_and_wait(STOPPED, STOPPED);
    gate.open();
    r.core.write_status(RUNNING);
    assert_eq!(used_ids(&mut r, reqs.len()), sorted(ids));
    verify(&r, &image, &reqs);
    std::thread::sleep(Duration::from_millis(10));
    r.core.process_pending();
    assert!(r.collect(0).is_empty());
    assert_eq!(r.stats.executed(), reqs.len() as u64);
    assert_eq!(r.stats.cancelled(), reqs.len() as u64);
}

/// The same through SUSPEND (seed 003): the recorded queue state carries the in-flight chains,
/// and setting DRIVER_OK restarts the queues from it; each chain is executed once.
#[test]
fn record_inflight_suspend_then_resume_reexecutes_once() {
    let (image, gate, mut r, reqs, ids) = held(QuiesceMode::RecordInflight, true);
    r.core
        .set_and_wait(RUNNING | DeviceStatus::SUSPEND, SUSPENDED);
    assert_eq!(r.core.queue_state(0).unwrap().inflight_ids(), ids);
    gate.open();
    r.core.write_status(SUSPENDED | DeviceStatus::DRIVER_OK);
    assert_eq!(r.core.status(), RUNNING);
    assert_eq!(used_ids(&mut r, reqs.len()), sorted(ids));
    verify(&r, &image, &reqs);
    assert_eq!(r.stats.executed(), reqs.len() as u64);
}

/// Spec-notes §7 pitfall 5: after the stop is acknowledged the device writes no guest memory
/// and raises no interrupt, even while its backend keeps running for other reasons.
#[test]
fn stopped_device_stays_quiet() {
    for mode in [QuiesceMode::Drain, QuiesceMode::RecordInflight] {
        let image = TempImage::new(SECTORS);
        let gate = Gate::new();
        let mut r = Rig::new(gated(&image, &gate), mode);
        r.start_all(false);
        submit_all(&mut r, &workload());
        r.core.set_and_wait(STOPPED, STOPPED);
        gate.close();
        r.submit(0, 30, &Req::read(3, 1));
        let (checksum, irq) = (r.memory_checksum(), r.irq.used());
        gate.open();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(2));
            r.core.process_pending();
            r.core.kick(0);
            assert_eq!(r.core.status(), STOPPED);
        }
        assert_eq!(r.memory_checksum(), checksum, "{mode:?}");
        assert_eq!(r.irq.used(), irq);
    }
}

/// Device reset with requests in the backend: requests not started are cancelled, nothing
/// submitted before the reset is returned afterwards, and no guest memory is written.
#[test]
fn reset_cancels_outstanding_requests() {
    let (image, gate, mut r, reqs, _) = held(QuiesceMode::Drain, false);
    let before = image.read();
    r.core.write_status(DeviceStatus::RESET);
    let checksum = r.memory_checksum();
    gate.open();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(r.stats.executed(), 0);
    assert_eq!(r.stats.cancelled(), reqs.len() as u64);
    assert_eq!(image.read(), before);
    assert_eq!(r.memory_checksum(), checksum);
    // Re-initialised, the device works (fresh rings).
    r.start_all(false);
    assert_eq!(r.run(0, &Req::read(9, 1)).0, status::OK);
}

/// Seed 001 in-flight chains (spec-decisions §3) and §7 pitfall 2: the core hands a queue's
/// restored in-flight chains to the device once per start of the queue, and the device keeps
/// no flag of its own. Chains restored into a fresh device whose backend is held are
/// submitted at DRIVER_OK; record-in-flight stops and a suspend before the backend runs
/// cancel them and hand them back again at each resume; once the backend runs, each request
/// is executed once and returned used once.
#[test]
fn restored_inflight_chains_complete_once_across_further_stops() {
    for packed in [false, true] {
        let (image, gate, mut src, reqs, ids) = held(QuiesceMode::RecordInflight, packed);
        src.core.write_status(STOPPED);
        assert_eq!(src.core.status(), STOPPED);
        let dst_gate = Gate::new();
        dst_gate.close();
        let mut dst = src.migrate(gated(&image, &dst_gate), QuiesceMode::RecordInflight);
        drop(src);
        gate.open();
        for cycle in 0..3 {
            let (request, quiet, resume) = if cycle == 1 {
                (
                    RUNNING | DeviceStatus::SUSPEND,
                    SUSPENDED,
                    SUSPENDED | DeviceStatus::DRIVER_OK,
                )
            } else {
                (STOPPED, STOPPED, RUNNING)
            };
            dst.core.set_and_wait(request, quiet);
            assert_eq!(
                sorted(dst.core.queue_states()[0].inflight_ids()),
                sorted(ids.clone()),
                "cycle {cycle}: still in flight, each once"
            );
            dst.core.write_status(resume);
            assert_eq!(dst.core.status(), RUNNING, "cycle {cycle}");
        }
        assert!(dst.collect(0).is_empty(), "nothing ran while held");
        dst_gate.open();
        complete_each_once(&mut dst, &image, &reqs, &ids, packed);
        assert_eq!(
            dst.stats.submitted(),
            4 * reqs.len() as u64,
            "handed over at DRIVER_OK and at each of the three resumes"
        );
    }
}
