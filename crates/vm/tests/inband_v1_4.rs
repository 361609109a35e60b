//! The status strategy's machine side under the v1.4 profile (spec-decisions §38): virtio 1.4
//! stops a device with SUSPEND (feature bit 43) and has no register for a queue's position, so
//! the destination takes each ring's position from guest memory (spec-decisions §32) and
//! refuses a ring whose memory does not hold a stopped device's position — in the dry run it
//! makes before it answers Ready, before anything is applied.

use std::time::Duration;

use virtio_lm_device::context::decode;
use virtio_lm_spec::Profile;
use virtio_lm_vm::testing::{run_for, start_machine_with};
use virtio_lm_vm::{MachineOptions, RingFormat, StatusBit};
use vm_memory::{Bytes, GuestAddress};

/// The blk member's (member 1) first request queue: the context, and where its device area is.
fn blk_queue_0(contexts: &[(u64, Vec<u8>)]) -> (Vec<u8>, u64) {
    let (_, bytes) = contexts.iter().find(|(m, _)| *m == 1).unwrap();
    let ctx = decode(bytes).unwrap();
    assert!(ctx.queues[0].config.enabled);
    (bytes.clone(), ctx.queues[0].config.device)
}

/// virtio 1.4 (SUSPEND: "the driver MUST re-read device status to verify SUSPEND is set and
/// DRIVER_OK is cleared"; after it the device uses no buffer, so each ring's used position is
/// its available one) and spec-decisions §38: a ring whose memory is inconsistent is refused
/// with an error naming member and queue before anything is loaded; the same ring, put back,
/// passes; after SUSPEND the device resumes when DRIVER_OK is set again ("MUST wait for
/// SUSPEND == 0 and DRIVER_OK == 1"), and the guest's requests all verify.
fn inconsistent_ring_is_refused(ring: RingFormat, tamper_at: u64, tamper: [u8; 2]) {
    let tag = format!("{ring:?}");
    let v1_4 = |o| MachineOptions {
        profile: Profile::V1_4,
        ..o
    };
    let (_image, _echo, _, machine) = start_machine_with("vm-inband-v14", &tag, ring, 1, v1_4);
    run_for(&machine, 30);
    machine.pause().unwrap();
    machine.stop_inband(StatusBit::Suspend).unwrap();
    let contexts = machine.read_inband().unwrap();
    for (member, context) in &contexts {
        machine
            .check_context(*member, context, true)
            .unwrap_or_else(|e| panic!("{tag}: member {member}: {e}"));
    }
    let (context, device_area) = blk_queue_0(&contexts);
    let ram = machine.memory().ram();
    let at = GuestAddress(device_area + tamper_at);
    let mut saved = [0u8; 2];
    ram.read_slice(&mut saved, at).unwrap();
    ram.write_slice(&tamper, at).unwrap();
    let refused = machine.check_context(1, &context, true).unwrap_err();
    let why = refused.to_string().to_lowercase();
    assert!(
        why.contains("member 1") && why.contains("queue 0"),
        "{tag}: {why}"
    );
    ram.write_slice(&saved, at).unwrap();
    machine.check_context(1, &context, true).unwrap();
    machine.resume_inband(StatusBit::Suspend).unwrap();
    run_for(&machine, 50);
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    let blk = after.blk.unwrap();
    assert_eq!(
        (blk.lost, blk.duplicated, blk.corrupted),
        (0, 0, 0),
        "{tag}"
    );
}

/// Split: `used.idx` more than the queue size behind `avail.idx` is not a stopped device's.
#[test]
fn split_used_index_behind_by_more_than_the_size_is_refused() {
    // used.idx (device area + 2) 0x8000: tens of thousands of entries away from avail.idx.
    inconsistent_ring_is_refused(RingFormat::Split, 2, [0x00, 0x80]);
}

/// Packed: device event suppression flags (device area + 2) other than DESC: no recorded
/// position.
#[test]
fn packed_without_a_recorded_position_is_refused() {
    inconsistent_ring_is_refused(RingFormat::Packed, 2, [0, 0]);
}
