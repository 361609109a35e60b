//! The blk device run the way the vm layer will run it: the core behind a mutex, the core's
//! `Worker` thread processing queue kicks, and a completion thread that sleeps on
//! `Blk::completion_fd` and calls `DeviceCore::process_pending` — the wiring the crate
//! documentation describes. A guest driver thread (this test) submits, kicks, stops and resumes.

mod common;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{lay_out, pattern, slot_in_data, slot_status, Mem, Req, Rig, TempImage, RUNNING};
use virtio_lm_device::testing::CoreDriver;
use virtio_lm_device::{DeviceCore, QuiesceMode, Worker};
use virtio_lm_devices::blk::config::status;
use virtio_lm_devices::{BlkOptions, Faults, RequestInfo};
use virtio_lm_spec::DeviceStatus;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Sleeps on the completion eventfd and processes the core when it fires.
fn completion_thread(
    core: Arc<Mutex<DeviceCore<Mem>>>,
    wake: Arc<EventFd>,
    exit: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .unwrap();
        let mut events = [EpollEvent::default(); 1];
        while !exit.load(Ordering::SeqCst) {
            if epoll.wait(10, &mut events).unwrap_or(0) == 0 {
                continue;
            }
            // Read first: an answer that lands while we process re-arms the eventfd.
            let _ = wake.read();
            let mut core = core.lock().unwrap();
            core.process_pending();
            // While a stop or suspend waits, reading the status completes it.
            let _ = core.status();
        }
    })
}

/// End to end on threads: requests complete through the completion thread; a stop requested
/// while requests are in the backend is presented once they are used (seed 000); after resume
/// the device carries on. Runs both quiesce modes.
#[test]
fn worker_and_completion_thread_drive_the_device() {
    for mode in [QuiesceMode::Drain, QuiesceMode::RecordInflight] {
        let image = TempImage::new(256);
        let options = BlkOptions {
            backend_threads: 3,
            faults: Faults {
                delay: Some(Arc::new(|info: &RequestInfo| {
                    Duration::from_micros(u64::from(info.id % 5) * 200)
                })),
                ..Faults::default()
            },
            ..image.options()
        };
        let mut r = Rig::new(options, mode);
        r.start_all(false);
        let Rig { driver, wake, .. } = r;
        let CoreDriver {
            core,
            mut rings,
            mem,
            ..
        } = driver;
        let core = Arc::new(Mutex::new(core));
        let kick = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let worker = Worker::spawn(core.clone(), vec![kick.clone()]).unwrap();
        let exit = Arc::new(AtomicBool::new(false));
        let pump = completion_thread(core.clone(), wake, exit.clone());
        let ring = rings[0].as_mut().unwrap();

        let mut done = 0;
        for round in 0..20u64 {
            let reqs: Vec<Req> = (0..8)
                .map(|s| Req::write(round * 8 + s, pattern(round * 8 + s, 512)))
                .collect();
            for (slot, req) in reqs.iter().enumerate() {
                let bufs = lay_out(&mem, slot as u64, req);
                ring.add_chain(&*mem, &bufs).unwrap();
            }
            ring.publish(&*mem).unwrap();
            kick.write(1).unwrap();
            if round % 4 == 1 {
                // Stop while the backend works; the driver re-reads the status.
                core.lock()
                    .unwrap()
                    .write_status(RUNNING | DeviceStatus::DEVICE_STOPPED);
                let deadline = Instant::now() + common::TIMEOUT;
                while core.lock().unwrap().status() != RUNNING | DeviceStatus::DEVICE_STOPPED {
                    assert!(Instant::now() < deadline, "stop never presented");
                    std::thread::sleep(Duration::from_micros(100));
                }
                core.lock().unwrap().write_status(RUNNING);
            }
            let deadline = Instant::now() + common::TIMEOUT;
            let mut used = 0;
            while used < reqs.len() {
                assert!(
                    Instant::now() < deadline,
                    "{mode:?} round {round}: {used} used"
                );
                used += ring.collect_used(&*mem).unwrap().len();
                std::thread::sleep(Duration::from_micros(100));
            }
            for (slot, req) in reqs.iter().enumerate() {
                assert_eq!(slot_status(&mem, slot as u64), status::OK);
                assert_eq!(image.sector(req.sector, 1), req.payload);
            }
            done += used;
        }
        let read = Req::read(3, 1);
        ring.add_chain(&*mem, &lay_out(&mem, 9, &read)).unwrap();
        ring.publish(&*mem).unwrap();
        kick.write(1).unwrap();
        let deadline = Instant::now() + common::TIMEOUT;
        while ring.collect_used(&*mem).unwrap().is_empty() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_micros(100));
        }
        assert_eq!(slot_in_data(&mem, 9, &read), pattern(3, 512));
        assert_eq!(done, 160);
        exit.store(true, Ordering::SeqCst);
        pump.join().unwrap();
        worker.stop();
        assert_eq!(core.lock().unwrap().status(), RUNNING);
    }
}
