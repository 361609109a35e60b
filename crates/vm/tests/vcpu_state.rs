//! A guest continues on another machine from a copy of its memory, its devices' contexts and its
//! serialised vCPU state (docs/architecture.md, crates/vm: "Everything the guest needs to
//! continue lives in guest memory or in serialisable vCPU state (driver ring bookkeeping
//! included): nothing of the guest may survive only in the source process").
//!
//! The source runs its blk and net workloads and the dirtier, is paused at a safe point, its
//! members are stopped and frozen through the owner's admin queue (seed 004 DEV_MODE_SET, then
//! DEV_CTX_READ), its vCPU state goes through postcard bytes, and the source is dropped. A
//! second machine in the same process, built frozen, takes the memory copy, the contexts
//! (DEV_CTX_WRITE, then Active) and the decoded vCPU state, runs on with pauses and resumes,
//! and verifies: 0 lost, 0 duplicated, 0 corrupted blk requests; no duplicated or corrupted
//! echo; every page of the working set as the dirtier last wrote it. Only echoes in the air
//! when the tunnel moved may be lost, at most the net window.
//!
//! Between load and Commit the guest's vCPU threads exist but make no step (spec-decisions
//! §13: the destination lets the vCPUs run only on Commit).

mod common;

use std::time::Duration;

use common::{image, localhost, options, run_for};
use virtio_lm_device::QuiesceMode;
use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_vm::guest::net::WINDOW;
use virtio_lm_vm::{Machine, MachineOptions, RingFormat, VcpuState, MIB};

fn continue_elsewhere(ring: RingFormat, queues: u16, quiesce: QuiesceMode) {
    let tag = format!("{ring:?}-{queues}-{quiesce:?}");
    let image = image("vm-state", &tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let options = MachineOptions {
        quiesce,
        ..options(&image, &echo, ring, queues)
    };
    let source = Machine::start(options.clone()).unwrap();
    for _ in 0..5 {
        run_for(&source, 50);
        source.pause().unwrap();
        source.resume();
    }
    run_for(&source, 50);
    source.pause().unwrap();
    let contexts = source.freeze_devices().unwrap();
    let bytes = source.vcpu_state().unwrap().encode().unwrap();
    let before = source.report();

    let mut destination = Machine::incoming(options).unwrap();
    destination.memory().copy_from(source.memory()).unwrap();
    drop(source);
    let state = VcpuState::decode(&bytes).unwrap();
    destination.load(&contexts, state).unwrap();
    // Loaded before Commit: the vCPU threads exist, parked before their first step (the pause
    // returns once every one is), and nothing has moved since the source paused.
    destination.pause().unwrap();
    assert_eq!(destination.report(), before, "no vCPU step before Commit");
    destination.activate().unwrap();
    for _ in 0..5 {
        run_for(&destination, 50);
        destination.pause().unwrap();
        destination.resume();
    }
    run_for(&destination, 100);
    let after = destination.finish(Duration::from_secs(20)).unwrap();
    let (blk, net) = (after.blk.unwrap(), after.net.unwrap());
    eprintln!("{tag}: {blk:?} {net:?} {:?}", after.dirtier);
    assert!(
        blk.completed > before.blk.unwrap().completed + 100,
        "ran on"
    );
    assert_eq!(
        (blk.lost, blk.duplicated, blk.corrupted, blk.failed),
        (0, 0, 0, 0)
    );
    assert_eq!((net.duplicated, net.corrupted), (0, 0));
    assert!(
        net.lost <= WINDOW,
        "only echoes in the air when the tunnel moved: {net:?}"
    );
    assert!(after.dirtier.stamped > before.dirtier.stamped);
}

#[test]
fn split_guest_continues_from_its_state_draining() {
    continue_elsewhere(RingFormat::Split, 1, QuiesceMode::Drain);
}

#[test]
fn packed_guest_with_two_queues_continues_recording_inflight() {
    continue_elsewhere(RingFormat::Packed, 2, QuiesceMode::RecordInflight);
}

/// A vCPU state that does not fit the machine is refused before the guest starts: bytes that
/// are not a state, and a state whose blk ring bookkeeping is inconsistent.
#[test]
fn a_bad_vcpu_state_is_refused() {
    assert!(VcpuState::decode(&[0xff; 7]).is_err());
    let image = image("vm-state", "bad");
    let options = MachineOptions {
        memory: 32 * MIB,
        blk: Some(image.path().to_path_buf()),
        working_set_mib: 1,
        ..MachineOptions::default()
    };
    let source = Machine::start(options.clone()).unwrap();
    source.pause().unwrap();
    let contexts = source.freeze_devices().unwrap();
    let mut state = source.vcpu_state().unwrap();
    drop(source);
    let blk = state.blk.as_mut().unwrap();
    // A slot listed free twice: the driver would hand it to two requests.
    let queue = &mut blk.driver.queues[0];
    let slot = queue.free[0];
    queue.free.push(slot);
    let mut destination = Machine::incoming(options).unwrap();
    let err = destination.restore(&contexts, state).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}
