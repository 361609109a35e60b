//! Fuzzing entry points for admin command decoding and dispatch (a cargo-fuzz target, and a
//! proptest in the normal tests, run the same body).

use std::sync::Arc;

use virtio_lm_device::testing::CountingDevice;
use virtio_lm_device::CoreOptions;
use virtio_lm_spec::admin::{group_type, opcode, status, AdminCmdHeader, DevMode, DevModeData};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use super::decode::AdminResult;
use super::{OwnerFunction, OwnerOptions};
use crate::driver::{PciDriver, QueueSetup};
use crate::function::VirtioPciFunction;

type Mem = GuestMemoryMmap<()>;

/// Commands run per input, and the largest writable part used.
const MAX_COMMANDS: usize = 64;
pub(super) const MAX_WRITABLE: usize = 4096;

pub(super) fn memory() -> Option<Arc<Mem>> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)])
        .ok()
        .map(Arc::new)
}

fn command(op: u16, member: u64, data: &[u8]) -> Vec<u8> {
    let mut bytes = AdminCmdHeader::new(op, group_type::SRIOV, member)
        .as_bytes()
        .to_vec();
    bytes.extend_from_slice(data);
    bytes
}

/// An owner with three counting-device members: LIST_USE done for every supported opcode, member 1 running
/// (initialised by its driver, one buffer used), member 2 the same and then in Freeze, member
/// 3 untouched.
fn fuzz_owner() -> Option<OwnerFunction<Mem>> {
    let owner_mem = memory()?;
    let factory = Box::new(|vf: u16| {
        let mem = memory().ok_or(crate::PciError::NotVirtio("no guest memory"))?;
        let device = CountingDevice::new(u64::from(vf), 8);
        VirtioPciFunction::with_device(Box::new(device), mem, CoreOptions::default(), 2, false)
    });
    let device = CountingDevice::new(0, 8);
    let owner = OwnerFunction::new(
        Box::new(device),
        owner_mem,
        OwnerOptions::default(),
        factory,
    )
    .ok()?;
    owner.set_num_vfs(3).ok()?;
    owner.set_vf_enable(true).ok()?;
    start_members(&owner, Profile::Seeds)?;
    let all = super::dispatch::SRIOV_SUPPORTED;
    owner.execute_direct(&command(opcode::LIST_USE, 0, all.as_bytes()), 8);
    let freeze = DevModeData::new(DevMode::Freeze);
    owner.execute_direct(&command(opcode::DEV_MODE_SET, 2, freeze.as_bytes()), 8);
    Some(owner)
}

/// The context member 1 of the fuzz owner reads (DEV_CTX_READ of the whole context): a valid
/// starting point for mutated DEV_CTX_WRITE inputs. Empty if the owner cannot be built.
#[doc(hidden)]
pub fn fuzz_template_context() -> Vec<u8> {
    let Some(owner) = fuzz_owner() else {
        return Vec::new();
    };
    let written = owner.execute_direct(&command(opcode::DEV_CTX_READ, 1, &[]), MAX_WRITABLE);
    let result = AdminResult::decode(&written);
    let size = result
        .result
        .get(4..8)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize);
    result.result.get(8..8 + size).unwrap_or_default().to_vec()
}

/// Fuzzing entry point: `data` is a sequence of commands, each `le16 writable_len; le16
/// readable_len; u8 readable[readable_len]` (lengths clipped to what is left), run against an
/// owner with three members (see `fuzz_owner`). Checks, per command: no panic; the bytes
/// written fit the writable part; with room for it, the status header is written; and a
/// command answered EINVAL, EAGAIN, ENOMEM or EBUSY changed nothing (members' modes, status,
/// contexts, MSI-X routing, context stream progress, the used list).
///
/// # Panics
///
/// When an invariant breaks: that is the finding.
#[doc(hidden)]
pub fn fuzz_admin_command(data: &[u8]) {
    run_commands(fuzz_owner(), data, &NO_SIDE_EFFECT);
}

/// The statuses of a refused command, which must leave the device as it was.
pub(super) const NO_SIDE_EFFECT: [u16; 4] = [
    status::EINVAL,
    status::EAGAIN,
    status::ENOMEM,
    status::EBUSY,
];

/// Runs the commands of `data` (see [`fuzz_admin_command`]) against `owner` (nothing without
/// one), checking each one's written part, and that a command answered with a status in
/// `no_side_effect` changed nothing (the owner's fingerprint).
pub(super) fn run_commands(owner: Option<OwnerFunction<Mem>>, data: &[u8], no_side_effect: &[u16]) {
    let Some(owner) = owner else {
        return;
    };
    let mut rest = data;
    for _ in 0..MAX_COMMANDS {
        let [w0, w1, r0, r1, tail @ ..] = rest else {
            return;
        };
        let writable_len = usize::from(u16::from_le_bytes([*w0, *w1])) % (MAX_WRITABLE + 1);
        let readable_len = usize::from(u16::from_le_bytes([*r0, *r1])).min(tail.len());
        let (readable, next) = tail.split_at(readable_len);
        rest = next;
        let before = owner.fingerprint();
        let written = owner.execute_direct(readable, writable_len);
        assert!(
            written.len() <= writable_len,
            "wrote past the writable part"
        );
        assert!(
            written.len() == writable_len || written.len().is_multiple_of(8),
            "written part neither fills the buffer nor is a multiple of 8 bytes"
        );
        if writable_len < 4 {
            continue;
        }
        let result = AdminResult::decode(&written);
        if no_side_effect.contains(&result.status) {
            assert_eq!(
                before,
                owner.fingerprint(),
                "status {} changed the device",
                result.status
            );
        }
    }
}

/// Members 1 and 2 of `owner` initialised by a `profile` driver with one queue of 8, each with
/// one buffer submitted.
pub(super) fn start_members(owner: &OwnerFunction<Mem>, profile: Profile) -> Option<()> {
    for member in [1u16, 2] {
        let function = owner.member(member)?;
        let mem = function.core().lock().ok()?.mem().clone();
        let mut driver = PciDriver::new(function, mem, profile).ok()?;
        let features = profile.feature_set(&[Feature::Version1]).ok()?;
        driver
            .init(features, &[QueueSetup::new(0, 8, 0x1000)])
            .ok()?;
        driver
            .submit(0, &[virtio_lm_queue::BufferSpec::writable(0x8000, 16)])
            .ok()?;
    }
    Some(())
}
