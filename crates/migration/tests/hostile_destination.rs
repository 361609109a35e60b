//! Hostile input to the destination never panics, never hangs and never gets a guest to run
//! (issue 9: "Destination: validates every section before applying it (ranges inside RAM;
//! contexts fully validated, with the ring checks that need guest memory run as a dry run
//! against the received memory)"; docs/stream-format.md, destination state machine: "any
//! before Running | Cancel, Error, a refused section, link lost | send Error naming the section
//! ... discard"). Each case is a stream written to a real destination over loopback TCP; the
//! destination must refuse it (an error, never Ready) and answer Error where the link allows.
//!
//! The seed 004 admin-command strategy's destination (spec-decisions §13).

mod common;

use proptest::prelude::*;
use virtio_lm_migration::testing::feed;
use virtio_lm_migration::{
    vm_config, MemoryChunk, MemoryRange, Message, Pages, Phase, PAGE_SIZE, PROTOCOL_VERSION,
};
use virtio_lm_vm::testing::{image, run_for};
use virtio_lm_vm::{Machine, MachineOptions, MIB};

fn machine_options(image: &virtio_lm_devices::testing::ImageFile) -> MachineOptions {
    MachineOptions {
        memory: 17 * MIB,
        blk: Some(image.path().to_path_buf()),
        working_set_mib: 1,
        ..MachineOptions::default()
    }
}

fn assert_refused(options: &MachineOptions, msgs: &[Message], what: &str) -> String {
    let (result, answers) = feed(options, &common::encode(msgs));
    let err = match result {
        Ok(()) => panic!("{what}: a guest runs from a hostile stream"),
        Err(e) => e.to_string(),
    };
    assert!(
        !answers.contains(&Message::Ready),
        "{what}: Ready for a bad stream"
    );
    err
}

fn start() -> Message {
    Message::Start {
        version: PROTOCOL_VERSION,
    }
}

/// The source half of a real guest: its Config, final contexts and vCPU state. The guest runs
/// a while first, so its rings' positions are past where zeroed memory would agree with them.
fn reference(options: &MachineOptions) -> (Message, Vec<Message>) {
    let source = Machine::start(options.clone()).unwrap();
    run_for(&source, 20);
    source.pause().unwrap();
    source.stop_devices().unwrap();
    let mut finals: Vec<Message> = source
        .read_contexts()
        .unwrap()
        .into_iter()
        .map(|(member, context)| Message::DeviceContext {
            phase: Phase::Final,
            device_id: member as u32,
            context,
        })
        .collect();
    finals.push(Message::VcpuState {
        vcpu: 0,
        state: source.vcpu_state().unwrap().encode().unwrap(),
    });
    (Message::Config(vm_config(&source)), finals)
}

/// `finals` with queue 0 of the first device's context changed by `f`, then Complete.
fn tamper(
    finals: &[Message],
    f: impl Fn(&mut virtio_lm_device::context::QueueContext),
) -> Vec<Message> {
    let mut out = finals.to_vec();
    let Some(Message::DeviceContext { context, .. }) = out.first_mut() else {
        panic!("no context first: {finals:?}")
    };
    let mut ctx = virtio_lm_device::context::decode(context).unwrap();
    f(&mut ctx.queues[0]);
    *context = virtio_lm_device::context::encode(&ctx).unwrap();
    out.push(Message::Complete);
    out
}

#[test]
fn hostile_sections_are_refused() {
    let image = image("mig-hostile", "cases");
    let options = machine_options(&image);
    let (config, finals) = reference(&options);
    let page = |addr: u64| {
        Message::Memory(MemoryChunk {
            round: 0,
            phase: Phase::PreCopy,
            ranges: vec![MemoryRange {
                guest_addr: addr,
                pages: Pages::Data(vec![0xa5; PAGE_SIZE]),
            }],
        })
    };
    let device_context = |phase, device_id, context| Message::DeviceContext {
        phase,
        device_id,
        context,
    };
    let mut cases: Vec<(&str, Vec<Message>, &str)> = vec![
        (
            "page past RAM",
            vec![page(17 * MIB)],
            "not inside guest RAM",
        ),
        (
            "page at the top of the address space",
            vec![page(u64::MAX - 2 * 4096 + 1)],
            "not inside guest RAM",
        ),
        (
            "context of an unknown device",
            vec![device_context(Phase::PreCopy, 9, vec![0; 16])],
            "no device 9",
        ),
        (
            "garbage context",
            vec![device_context(Phase::Final, 1, vec![0xee; 64])],
            "",
        ),
        (
            "garbage vCPU state",
            vec![Message::VcpuState {
                vcpu: 0,
                state: vec![0xff; 9],
            }],
            "VcpuState",
        ),
        (
            "Complete with nothing",
            vec![Message::Complete],
            "no final context",
        ),
        ("Commit before Complete", vec![Message::Commit], "protocol"),
        ("Ready from the source", vec![Message::Ready], "protocol"),
        // Valid contexts and state, but no memory: the rings they name are not in the received
        // memory, which only the dry run can tell before anything is applied.
        (
            "contexts without their memory",
            [finals.clone(), vec![Message::Complete]].concat(),
            "against the received memory",
        ),
    ];
    // Issue 13: "a device context naming a ring outside guest memory or an in-flight head ≥ the
    // queue size" is refused, naming the section, before anything is applied.
    cases.push((
        "a ring outside guest memory",
        tamper(&finals, |q| q.config.desc = 17 * MIB),
        "DeviceContext",
    ));
    cases.push((
        "an in-flight head at the queue size",
        tamper(&finals, |q| {
            q.state.inflight.push(virtio_lm_queue::SavedChain {
                id: q.config.size,
                ring_slots: 1,
                segments: Vec::new(),
            })
        }),
        "DeviceContext",
    ));
    for (what, body, expect) in cases.drain(..) {
        let msgs = [vec![start(), config.clone()], body].concat();
        let err = assert_refused(&options, &msgs, what);
        assert!(err.contains(expect), "{what}: {err}");
    }
    // A Config that is not this VM's is refused before anything else.
    let Message::Config(mut other) = config.clone() else {
        unreachable!()
    };
    other.memory[0].size += PAGE_SIZE as u64;
    let err = assert_refused(&options, &[start(), Message::Config(other)], "other layout");
    assert!(err.contains("memory layout"), "{err}");
    // A Start with a version this side does not accept (issue 13: "a Start with an unknown
    // version"): refused in section 0, before the source's Config is looked at.
    let (result, _) = feed(&options, &common::start_section(PROTOCOL_VERSION + 1));
    let err = result
        .expect_err("an unknown version was accepted")
        .to_string();
    assert!(err.contains("not accepted in section 0"), "{err}");
    // A stream cut in the middle of a section.
    let mut wire = common::encode(&[start(), config, page(0)]);
    wire.truncate(wire.len() - 100);
    let (result, _) = feed(&options, &wire);
    assert!(result.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any sections after a valid opening are refused or end in an error, never a running
    /// guest, never a panic.
    #[test]
    fn arbitrary_sections_after_a_valid_config(body in prop::collection::vec(common::arb_message(), 0..6)) {
        let image = image("mig-hostile", "prop");
        let options = machine_options(&image);
        let source = Machine::incoming(options.clone()).unwrap();
        let config = Message::Config(vm_config(&source));
        drop(source);
        let msgs = [vec![start(), config], body].concat();
        let (result, answers) = feed(&options, &common::encode(&msgs));
        prop_assert!(result.is_err());
        prop_assert!(!answers.contains(&Message::Ready));
    }
}
