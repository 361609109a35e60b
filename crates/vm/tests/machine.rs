//! The machine runs its guest — blk and net workloads through the guest drivers over the SR-IOV
//! owner's member functions, and the memory dirtier — and pauses it at a safe point and resumes
//! it, many times while the workloads run (docs/architecture.md, crates/vm: "Pause at a safe
//! point and resume"). While paused no vCPU takes a step (the workloads' counters and the
//! dirtier's position stand still); after each resume they go on; at the end every request is
//! verified: 0 lost, 0 duplicated, 0 corrupted, and every page of the working set holds what
//! the dirtier last wrote there.

mod common;

use std::time::Duration;

use common::{image, localhost, options, run_for};
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_vm::{Machine, MachineOptions, RingFormat, MIB};

fn pause_resume_while_running(ring: RingFormat, queues: u16, cycles: u32) {
    let tag = format!("{ring:?}-{queues}");
    let image = image("vm-machine", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine = Machine::start(options(&image, &echo, ring, queues)).unwrap();
    for _ in 0..cycles {
        // Progress past where the guest stands now, before each pause.
        run_for(&machine, 1);
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
    let report = machine.finish(Duration::from_secs(20)).unwrap();
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
