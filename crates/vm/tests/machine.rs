//! The machine runs its guest — blk and net workloads through the guest drivers over the SR-IOV
//! owner's member functions, and the memory dirtier — and pauses it at a safe point and resumes
//! it, many times while the workloads run (docs/architecture.md, crates/vm: "Pause at a safe
//! point and resume"). While paused no vCPU takes a step (the workloads' counters and the
//! dirtier's position stand still); after each resume they go on; at the end every request is
//! verified: 0 lost, 0 duplicated, 0 corrupted, and every page of the working set holds what
//! the dirtier last wrote there.

use std::time::{Duration, Instant};

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_vm::{Machine, MachineOptions, NetEndpoints, RingFormat, MIB};

const IMAGE_LEN: usize = 4 << 20;

struct Image(std::path::PathBuf);

impl Image {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "virtio-lm-vm-machine-{}-{tag}.img",
            std::process::id()
        ));
        std::fs::write(&path, vec![0u8; IMAGE_LEN]).unwrap();
        Self(path)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn localhost() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn options(image: &Image, echo: &EchoPeer, ring: RingFormat, queues: u16) -> MachineOptions {
    MachineOptions {
        memory: 32 * MIB,
        blk: Some(image.0.clone()),
        net: Some(NetEndpoints {
            local: localhost(),
            remote: echo.addr(),
        }),
        ring,
        queues,
        dirty_rate_mib: 16,
        working_set_mib: 8,
        ..MachineOptions::default()
    }
}

/// Waits (bounded) until the guest has made progress past `report`.
fn wait_for_progress(machine: &Machine, blk: u64, net: u64, stamped: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = machine.report();
        if r.blk.unwrap().completed > blk
            && r.net.unwrap().verified > net
            && r.dirtier.stamped > stamped
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after resume: {r:?}; errors {:?}",
            machine.vcpu_errors()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pause_resume_while_running(ring: RingFormat, queues: u16, cycles: u32) {
    let tag = format!("{ring:?}-{queues}");
    let image = Image::new(&tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine = Machine::start(options(&image, &echo, ring, queues)).unwrap();
    for _ in 0..cycles {
        let r = machine.report();
        let (blk, net) = (r.blk.unwrap(), r.net.unwrap());
        wait_for_progress(&machine, blk.completed, net.verified, r.dirtier.stamped);
        machine.pause().unwrap();
        assert!(
            machine.all_parked(),
            "pause returned before every vCPU parked"
        );
        let paused = machine.report();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(machine.report(), paused, "a paused vCPU took a step");
        machine.resume();
    }
    let report = machine.finish(Duration::from_secs(5)).unwrap();
    let blk = report.blk.unwrap();
    let net = report.net.unwrap();
    eprintln!("{tag}: {blk:?} {net:?} {:?}", report.dirtier);
    assert_eq!(
        (blk.lost, blk.duplicated, blk.corrupted, blk.failed),
        (0, 0, 0, 0)
    );
    assert!(blk.verified > 0 && blk.writes > 0);
    assert_eq!((net.duplicated, net.corrupted), (0, 0));
    assert!(net.verified > u64::from(cycles));
    // Loopback UDP seldom drops; the echo peer and the device count what they did.
    assert!(net.lost <= net.sent / 10, "{net:?}");
    assert!(report.dirtier.stamped > 0);
}

#[test]
fn split_one_queue_pauses_and_resumes() {
    pause_resume_while_running(RingFormat::Split, 1, 100);
}

#[test]
fn packed_two_queues_pause_and_resume() {
    pause_resume_while_running(RingFormat::Packed, 2, 100);
}

/// Options the layout cannot hold are refused before anything is built.
#[test]
fn a_working_set_larger_than_memory_is_refused() {
    let options = MachineOptions {
        memory: 32 * MIB,
        working_set_mib: 32,
        ..MachineOptions::default()
    };
    assert!(matches!(
        Machine::start(options),
        Err(virtio_lm_vm::MachineError::Options(_))
    ));
}
