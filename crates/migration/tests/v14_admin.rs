//! The engine under the published virtio 1.4 numbering profile (issue 15, "The engine under
//! v1.4"; spec-decisions §35): a VM whose devices, owner and guest drivers use the v1.4
//! numbers, and what a destination refuses about one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_migration::testing::{
    assert_clean, assert_completed, assert_running_again, feed, migrate_again_and_verify,
    migrate_to, small, test_options,
};
use virtio_lm_migration::{
    vm_config, Fault, FaultPoint, FunctionState, Inflight, MemoryChunk, MemoryRange, Message,
    MigrateOptions, MigrationControl, Outcome, Pages, Phase, PAGE_SIZE, PROTOCOL_VERSION,
};
use virtio_lm_spec::parts::{decode_parts, part_type, DevPartHdr, VqCfg};
use virtio_lm_spec::{Feature, Profile};
use virtio_lm_vm::testing::{image, localhost, options, run_for};
use virtio_lm_vm::{Machine, MachineOptions, RingFormat};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::FromBytes;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;

/// A small v1.4 VM's options for the case `tag`, with its image and echo peer.
fn v14_options(tag: &str, ring: RingFormat) -> (ImageFile, EchoPeer, MachineOptions) {
    let image = image("mig-v14", tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let base = options(&image, &echo, ring, 1);
    let options = small(MachineOptions {
        profile: Profile::V1_4,
        ..base
    });
    (image, echo, options)
}

/// spec-decisions §35: under v1.4 the guest drivers negotiate VERSION_1, EVENT_IDX, SUSPEND
/// on bit 43 and RING_RESET, never DEVICE_STOP or QUEUE_STATE (1.4 does not number them), and
/// the workloads run on the v1.4 devices.
#[test]
fn a_v14_guest_negotiates_the_published_bits_and_runs() {
    let (_image, _echo, options) = v14_options("boot", RingFormat::Split);
    let machine = Machine::start(options).unwrap();
    assert_eq!(machine.profile(), Profile::V1_4);
    run_for(&machine, 20);
    for info in machine.member_info() {
        let negotiated = info.driver_features;
        let bit = |f| 1u64 << Profile::V1_4.bit(f).unwrap();
        for f in [
            Feature::Version1,
            Feature::EventIdx,
            Feature::Suspend,
            Feature::RingReset,
        ] {
            assert_ne!(negotiated & bit(f), 0, "member {}: {f:?}", info.member);
        }
        assert_ne!(negotiated & (1 << 43), 0, "SUSPEND is bit 43 under v1.4");
        assert_eq!(
            negotiated & (1 << 42),
            0,
            "nothing on the seeds' SUSPEND bit"
        );
    }
    let after = machine.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 0, "v1.4 boot");
}

/// spec-decisions §35: the Config section's profile code must match the destination's; a v1.4
/// source meeting a seeds destination is refused at Config with both names, before anything
/// else, and the source runs on.
#[test]
fn a_profile_mismatch_is_refused_at_config() {
    let (_image, _echo, options) = v14_options("mismatch", RingFormat::Split);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 10);
    let seeds = MachineOptions {
        profile: Profile::Seeds,
        ..options
    };
    let (report, incoming) = migrate_to(&source, seeds, &test_options(), &MigrationControl::new());
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{}",
        report.result
    );
    let err = incoming.unwrap_err().to_string();
    assert!(
        err.contains("numbering profile seeds here, v1.4 on the source"),
        "{err}"
    );
    assert!(!source.memory().is_logging());
    assert!(!source.all_parked());
    run_for(&source, 10);
}

/// Issue 15, "The engine under v1.4": the admin strategy moves a running v1.4 guest with device
/// parts (GET object, METADATA_GET SIZE, DEV_PARTS_GET ALL while running and after DEV_MODE_SET
/// STOPPED; SET object, DEV_PARTS_SET, DEV_MODE_SET running on Commit; spec-decisions §36) and
/// the function registers in their own section (§37): 0 lost, 0 duplicated, 0 corrupted, and
/// the destination runs on.
fn migrate_v14(ring: RingFormat) {
    let tag = format!("v14-admin-{ring:?}");
    let (_image, _echo, options) = v14_options(&tag, ring);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 30);
    let before = source.report();
    let (report, incoming) =
        migrate_to(&source, options, &test_options(), &MigrationControl::new());
    assert_completed(&report, &tag);
    assert!(report.device_context_bytes > 0);
    assert_eq!(
        source.owner().parts_object_count(),
        0,
        "{tag}: GET objects left"
    );
    drop(source);
    let destination = incoming.unwrap().machine;
    assert_eq!(
        destination.owner().parts_object_count(),
        0,
        "{tag}: objects left"
    );
    run_for(&destination, 50);
    let after = destination.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 1, &tag);
    let (b0, b1) = (before.blk.unwrap(), after.blk.unwrap());
    assert!(b1.completed > b0.completed, "{tag}: ran on");
}

#[test]
fn the_admin_strategy_moves_a_split_v14_guest_with_device_parts() {
    migrate_v14(RingFormat::Split);
}

/// The packed ring under v1.4, EVENT_IDX negotiated: the stopped source records each ring's
/// position in the device-area event suppression structure and the destination resumes there
/// (spec-decisions §32, §36).
#[test]
fn the_admin_strategy_moves_a_packed_v14_guest_with_device_parts() {
    migrate_v14(RingFormat::Packed);
}

/// spec-decisions §36: no virtio 1.4 part carries in-flight buffers, so `--inflight transfer`
/// under v1.4 is refused at Start with the reason; the source runs on.
#[test]
fn inflight_transfer_is_refused_under_v14() {
    let (_image, _echo, options) = v14_options("transfer", RingFormat::Split);
    let source = Machine::start(options.clone()).unwrap();
    let migrate = MigrateOptions {
        inflight: Inflight::Transfer,
        ..test_options()
    };
    let (report, incoming) = migrate_to(&source, options, &migrate, &MigrationControl::new());
    assert!(
        report
            .result
            .contains("--inflight transfer is not possible under the v1.4 profile"),
        "{}",
        report.result
    );
    assert!(incoming.is_err());
    assert!(!source.all_parked());
    run_for(&source, 10);
}

/// spec-decisions §36: a packed ring under v1.4 without EVENT_IDX has no recorded position,
/// so the source refuses at Start and a destination refuses such a Config, each saying why.
#[test]
fn a_packed_v14_guest_without_event_idx_is_refused() {
    let (_image, _echo, base) = v14_options("packed-no-event-idx", RingFormat::Packed);
    let options = MachineOptions {
        guest_omits: vec![Feature::EventIdx],
        ..base
    };
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 10);
    let why = "a packed ring under the v1.4 profile needs VIRTIO_F_EVENT_IDX";
    let (report, _) = migrate_to(
        &source,
        options.clone(),
        &test_options(),
        &MigrationControl::new(),
    );
    assert!(report.result.contains(why), "{}", report.result);
    assert!(!source.all_parked());
    let stream = [start(), Message::Config(vm_config(&source))];
    let (result, answers) = feed(&options, &common::encode(&stream));
    let err = result.unwrap_err().to_string();
    assert!(err.contains(why), "{err}");
    assert!(!answers.contains(&Message::Ready));
}

fn start() -> Message {
    Message::Start {
        version: PROTOCOL_VERSION,
    }
}

/// Guest pages by address.
type Pages4k = Vec<(u64, Vec<u8>)>;

/// The final sections of a paused, stopped v1.4 source (parts, function state, vCPU state),
/// the pages holding queue 0's rings of its first device, and that queue's areas.
fn v14_reference(source: &Machine) -> (Vec<Message>, Pages4k, (u64, u64)) {
    source.pause().unwrap();
    source.stop_devices().unwrap();
    let contexts = source.read_final_contexts().unwrap();
    let parts = decode_parts(&contexts[0].1).unwrap();
    let cfg = parts
        .iter()
        .find(|p| {
            p.hdr.part_type() == part_type::VQ_CFG && p.hdr.selector == DevPartHdr::vq_selector(0)
        })
        .map(|p| VqCfg::read_from_bytes(&p.value).unwrap())
        .unwrap();
    let areas = (cfg.queue_driver.get(), cfg.queue_device.get());
    let mut msgs: Vec<Message> = contexts
        .into_iter()
        .map(|(member, context)| Message::DeviceContext {
            phase: Phase::Final,
            device_id: member as u32,
            context,
        })
        .collect();
    for (member, regs) in source.function_registers().unwrap() {
        msgs.push(Message::FunctionState(FunctionState::of(
            member as u32,
            &regs,
        )));
    }
    msgs.push(Message::VcpuState {
        vcpu: 0,
        state: source.vcpu_state().unwrap().encode().unwrap(),
    });
    let page = PAGE_SIZE as u64;
    let mut pages: Pages4k = Vec::new();
    for at in [areas.0 / page * page, areas.1 / page * page] {
        if pages.iter().all(|(p, _)| *p != at) {
            let mut bytes = vec![0u8; PAGE_SIZE];
            source
                .memory()
                .ram()
                .read_slice(&mut bytes, GuestAddress(at))
                .unwrap();
            pages.push((at, bytes));
        }
    }
    (msgs, pages, areas)
}

/// Issue 15: "a ring whose memory is inconsistent is refused with a clear error before Ready".
/// A split queue's `used.idx` in the received memory ahead of its `avail.idx` has no sound
/// position: the destination's check of the received memory refuses it at Complete, naming
/// the queue, and never answers Ready. The same stream with the source's own pages passes
/// that check (the control: what is refused is the ring, not the stream).
#[test]
fn an_inconsistent_ring_is_refused_before_ready() {
    let (_image, _echo, options) = v14_options("inconsistent", RingFormat::Split);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 20);
    let config = Message::Config(vm_config(&source));
    let (finals, pages, (driver, device)) = v14_reference(&source);
    let mut tampered = pages.clone();
    for (at, bytes) in &mut tampered {
        // avail.idx and used.idx sit 2 bytes into their areas.
        let avail = u16::from_le_bytes([
            bytes_at(bytes, *at, driver + 2, 0),
            bytes_at(bytes, *at, driver + 3, 0),
        ]);
        let ahead = avail.wrapping_add(7).to_le_bytes();
        set_at(bytes, *at, device + 2, ahead[0]);
        set_at(bytes, *at, device + 3, ahead[1]);
    }
    let stream = |tamper: bool| {
        let pages = if tamper { &tampered } else { &pages };
        common::encode(&final_stream(&config, pages, &finals))
    };
    let (result, answers) = feed(&options, &stream(true));
    let err = result.unwrap_err().to_string();
    assert!(err.contains("against the received memory"), "{err}");
    assert!(!answers.contains(&Message::Ready), "{answers:?}");
    // The control: the untampered pages pass the ring check; the destination loads the parts
    // and answers Ready (then the stream ends: no Commit, so no guest runs).
    let (result, answers) = feed(&options, &stream(false));
    assert!(answers.contains(&Message::Ready), "{result:?} {answers:?}");
}

/// Start, Config, `pages` as final Memory, `finals`, Complete.
fn final_stream(config: &Message, pages: &Pages4k, finals: &[Message]) -> Vec<Message> {
    let mut msgs = vec![start(), config.clone()];
    for (at, bytes) in pages {
        msgs.push(Message::Memory(MemoryChunk {
            round: 0,
            phase: Phase::Final,
            ranges: vec![MemoryRange {
                guest_addr: *at,
                pages: Pages::Data(bytes.clone()),
            }],
        }));
    }
    msgs.extend(finals.iter().cloned());
    msgs.push(Message::Complete);
    msgs
}

/// spec-decisions §37: a FunctionState section is checked before anything is applied: one per
/// device, for a device the destination has, with vectors its function has; under v1.4 every
/// device needs one. Each bad case is refused with its reason and never answered Ready.
#[test]
fn bad_function_state_sections_are_refused_before_ready() {
    let (_image, _echo, options) = v14_options("function-state", RingFormat::Split);
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 10);
    let config = Message::Config(vm_config(&source));
    let (finals, pages, _) = v14_reference(&source);
    let first = finals
        .iter()
        .position(|m| matches!(m, Message::FunctionState(_)))
        .unwrap();
    let Message::FunctionState(state) = finals[first].clone() else {
        unreachable!()
    };
    let with = |f: &dyn Fn(&mut Vec<Message>)| {
        let mut msgs = finals.clone();
        f(&mut msgs);
        final_stream(&config, &pages, &msgs)
    };
    let cases: Vec<(&str, Vec<Message>, &str)> = vec![
        (
            "unknown device",
            with(&|m| {
                m[first] = Message::FunctionState(FunctionState {
                    device_id: 9,
                    ..state.clone()
                })
            }),
            "no device 9 here",
        ),
        (
            "twice",
            with(&|m| m.insert(first, m[first].clone())),
            "listed twice",
        ),
        (
            "a vector the function lacks",
            with(&|m| {
                let mut bad = state.clone();
                bad.registers.msix_pending = vec![200];
                m[first] = Message::FunctionState(bad)
            }),
            "MSI-X vector 200 pending",
        ),
        (
            "missing",
            with(&|m| {
                m.remove(first);
            }),
            "no function state for device(s)",
        ),
    ];
    for (what, msgs, needle) in cases {
        let (result, answers) = feed(&options, &common::encode(&msgs));
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!answers.contains(&Message::Ready), "{what}");
    }
}

/// The byte at guest address `gpa` if `page` (at `base`) holds it, else `or`.
fn bytes_at(page: &[u8], base: u64, gpa: u64, or: u8) -> u8 {
    gpa.checked_sub(base)
        .and_then(|i| page.get(i as usize))
        .copied()
        .unwrap_or(or)
}

fn set_at(page: &mut [u8], base: u64, gpa: u64, value: u8) {
    if let Some(b) = gpa.checked_sub(base).and_then(|i| page.get_mut(i as usize)) {
        *b = value;
    }
}

/// spec-decisions §36: a migration abandoned while the GET objects exist (after the pre-copy
/// read, the guest running; after DEV_MODE_SET STOPPED, the guest paused) destroys them, the
/// source runs on, and the next migration to a fresh destination completes and verifies.
#[test]
fn a_cancel_destroys_the_get_objects_and_the_source_runs_on() {
    for at in [FaultPoint::AfterDevicePrecopy, FaultPoint::AfterStop] {
        let tag = format!("v14-cancel-{at:?}");
        let (_image, _echo, options) = v14_options(&tag, RingFormat::Split);
        let source = Machine::start(options.clone()).unwrap();
        run_for(&source, 20);
        let control = MigrationControl::new();
        let hit = Arc::new(AtomicBool::new(false));
        let seen = hit.clone();
        control.set_fault_hook(move |p| {
            if p == at {
                seen.store(true, Ordering::SeqCst);
                Fault::Cancel
            } else {
                Fault::Continue
            }
        });
        let (report, incoming) = migrate_to(&source, options.clone(), &test_options(), &control);
        assert!(hit.load(Ordering::SeqCst), "{tag}: the step never came");
        assert!(
            matches!(report.outcome, Outcome::Cancelled(_)),
            "{tag}: {}",
            report.result
        );
        assert!(incoming.is_err());
        assert_eq!(
            source.owner().parts_object_count(),
            0,
            "{tag}: objects left"
        );
        assert_running_again(&source, &tag);
        migrate_again_and_verify(source, options, &test_options(), &tag);
    }
}

/// A→B→A under v1.4 (issue 13's ping-pong, issue 15's profile): after each hop the running
/// destination's parts that must travel unchanged (driver features, device status, queue
/// configuration) equal the paused source's final ones, and the guest verifies throughout.
#[test]
fn ping_pong_under_v14_keeps_the_parts() {
    let (_image, _echo, options) = v14_options("ping-pong", RingFormat::Split);
    let mut here = Machine::start(options.clone()).unwrap();
    for hop in 0..2 {
        run_for(&here, 20);
        let (report, incoming) = migrate_to(
            &here,
            options.clone(),
            &test_options(),
            &MigrationControl::new(),
        );
        assert_completed(&report, &format!("hop {hop}"));
        let there = incoming.unwrap().machine;
        assert_eq!(kept_parts(&here), kept_parts(&there), "hop {hop}");
        drop(here);
        here = there;
    }
    run_for(&here, 30);
    let after = here.finish(Duration::from_secs(10)).unwrap();
    assert_clean(&after, 2, "ping-pong");
}

/// Each member's DRV_FEATURES, DEVICE_STATUS and VQ_CFG parts (a fresh GET; its object is
/// destroyed after).
fn kept_parts(machine: &Machine) -> Vec<(u64, Vec<Vec<u8>>)> {
    let kept = [
        part_type::DRV_FEATURES,
        part_type::DEVICE_STATUS,
        part_type::VQ_CFG,
    ];
    let out = machine
        .read_contexts()
        .unwrap()
        .into_iter()
        .map(|(member, bytes)| {
            let parts = decode_parts(&bytes).unwrap();
            let values = parts
                .iter()
                .filter(|p| kept.contains(&p.hdr.part_type()))
                .map(|p| p.value.clone())
                .collect();
            (member, values)
        })
        .collect();
    machine.end_device_reads().unwrap();
    out
}
