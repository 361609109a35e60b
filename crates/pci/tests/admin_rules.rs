//! Admin command rules of the owner (seed 004 context streams across a member reset), each
//! pinned so that breaking it fails a test (found by `scripts/mutants`: these mutants survived
//! the admin tests).

use virtio_lm_pci::testing::admin::*;
use virtio_lm_spec::admin::{opcode, status, DevMode};

/// Owner with two counting members; member 1 used by a guest and stopped. Returns member 1's
/// context.
fn setup() -> (
    virtio_lm_pci::admin::OwnerFunction<Mem>,
    virtio_lm_pci::admin::AdminClient<Mem>,
    Guest,
    Vec<u8>,
) {
    stopped_member(2)
}

/// spec-decisions §4: "A member reset discards a partial context in the device": after an FLR,
/// DEV_MODE_SET to Active succeeds although half a context had been written before it.
#[test]
fn a_member_reset_drops_a_partial_write() {
    let (owner, mut client, _guest, ctx) = setup();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    client.dev_ctx_write(2, &ctx[..ctx.len() / 2]).unwrap();
    owner.member(2).unwrap().function_level_reset();
    // Sent raw: the client still believes the context is partly written.
    let r = run(
        &mut client,
        &cmd(opcode::DEV_MODE_SET, 2, &mode_data(DevMode::Active)),
        0,
    );
    assert_eq!(r.status, status::OK);
}

/// spec-decisions §4 ("Writing a context. Data accumulates"): after a member reset, a context
/// written in two commands is still put together and applied.
#[test]
fn a_context_written_in_two_commands_after_a_reset_applies() {
    let (owner, mut client, _guest, ctx) = setup();
    owner.member(2).unwrap().function_level_reset();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    let half = ctx.len() / 2;
    client.dev_ctx_write(2, &ctx[..half]).unwrap();
    client.dev_ctx_write(2, &ctx[half..]).unwrap();
    client.dev_mode_set(2, DevMode::Stop).unwrap();
    client.dev_ctx_discard(2).unwrap();
    assert_eq!(client.dev_ctx_read_all(2, 64).unwrap(), ctx);
}

/// spec-decisions §4: "a mode change, DISCARD, reset or applied WRITE starts a new stream": a
/// read begun before a member reset starts over after it (SIZE_GET reports a whole context).
#[test]
fn a_member_reset_restarts_a_partial_read() {
    let (owner, mut client, _guest, ctx) = setup();
    read_first_16(&mut client, 1, &ctx);
    owner.member(1).unwrap().function_level_reset();
    let after_reset = client.dev_ctx_size_get(1).unwrap();
    client.dev_ctx_discard(1).unwrap();
    assert_eq!(after_reset, client.dev_ctx_size_get(1).unwrap());
}

/// Seed 004: after a mode change DEV_CTX_READ reads "the device context respectively for the
/// current mode as if VIRTIO_ADMIN_CMD_DEV_CTX_READ was never received by the device for the
/// current device mode": a read begun in Freeze starts over after Freeze → Active → Freeze,
/// though the mode is Freeze again.
#[test]
fn a_read_starts_over_after_leaving_the_mode_and_coming_back() {
    let (_owner, mut client, _guest, _) = setup();
    client.dev_mode_set(1, DevMode::Freeze).unwrap();
    client.dev_ctx_discard(1).unwrap();
    let whole = client.dev_ctx_size_get(1).unwrap();
    client.dev_ctx_read(1, 16).unwrap();
    assert_eq!(client.dev_ctx_size_get(1).unwrap(), whole - 16);
    // Sent raw, so nothing but the device itself decides where the read stands.
    for mode in [DevMode::Active, DevMode::Freeze] {
        let r = run(
            &mut client,
            &cmd(opcode::DEV_MODE_SET, 1, &mode_data(mode)),
            0,
        );
        assert_eq!(r.status, status::OK, "{mode:?}");
    }
    assert_eq!(client.dev_ctx_size_get(1).unwrap(), whole);
}

/// spec-decisions §4 / §5: every MSI-X vector in a written context must be one the member has
/// (or NO_VECTOR); members have two, so vector 1 is taken and vector 2 refused (EINVAL).
#[test]
fn written_msix_vectors_must_exist_in_the_member() {
    let (_owner, mut client, _guest, ctx) = setup();
    client.dev_mode_set(2, DevMode::Freeze).unwrap();
    let decoded = virtio_lm_device::context::decode(&ctx).unwrap();
    for (vector, expect) in [(1, status::OK), (2, status::EINVAL)] {
        let mut edited = decoded.clone();
        edited.config_msix_vector = vector;
        let data = virtio_lm_device::context::encode(&edited).unwrap();
        let r = run(&mut client, &cmd(opcode::DEV_CTX_WRITE, 2, &data), 0);
        assert_eq!(r.status, expect, "vector {vector}");
    }
}
