//! Seed 004 driver-side statements (the owner's driver, `AdminClient`, and a member's driver,
//! `PciDriver`), and the power-management statements the project does not model, with the
//! check that keeps that claim true.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_lm_device::context::{decode, parse_fields};
use virtio_lm_pci::admin::{AdminClient, AdminError, OwnerFunction};
use virtio_lm_pci::testing::admin::*;
use virtio_lm_pci::testing::capability_ids;
use virtio_lm_pci::{PciDriver, PciTransport, QueueSetup, VirtioPciFunction};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::{opcode, status, DevMode};
use virtio_lm_spec::context::FieldType;
use virtio_lm_spec::{Feature, Profile};

/// Owner with three rng members; member 1 used by a guest and stopped, member 3 untouched and
/// frozen. Returns member 1's context.
fn setup() -> (OwnerFunction<Mem>, AdminClient<Mem>, Guest, Vec<u8>) {
    let (owner, mut client, guest, ctx) = stopped_member(3);
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    (owner, client, guest, ctx)
}

/// DEV_MODE_SET sent as raw bytes, past the client's own rules: what the device answers.
fn device_mode_set(client: &mut AdminClient<Mem>, member: u64, mode: DevMode) -> u16 {
    run(
        client,
        &cmd(opcode::DEV_MODE_SET, member, &mode_data(mode)),
        0,
    )
    .status
}

fn refused_by_client(err: &AdminError, member: u64, mode: DevMode) -> bool {
    matches!(err, AdminError::ContextPartlyWritten { member: m, mode: md } if *m == member && *md == mode)
}

/// Seed 004: "The driver MUST NOT change the device mode to Stop or Active in the command
/// VIRTIO_ADMIN_CMD_DEV_MODE_SET when device context is partially written." The client refuses
/// it itself, without sending the command (the device never answers: no EBUSY), at every cut
/// of a context written in pieces, until the END_MARKER is written; Freeze stays allowed.
#[test]
fn client_refuses_stop_or_active_while_a_context_is_partly_written() {
    let (_owner, mut client, _guest, ctx) = setup();
    for cut in (8..ctx.len()).step_by(8).chain([1, 13, ctx.len() - 3]) {
        client.dev_ctx_write(3, &ctx[..cut]).unwrap();
        assert!(client.context_partly_written(3), "cut at {cut}");
        for mode in [DevMode::Stop, DevMode::Active] {
            let err = client.dev_mode_set(3, mode).unwrap_err();
            assert!(refused_by_client(&err, 3, mode), "cut at {cut}: {err}");
            assert!(err.to_string().contains("DEV_CTX_DISCARD"), "{err}");
        }
        // Not sent: the device still holds the partial context and would refuse too.
        assert_eq!(
            device_mode_set(&mut client, 3, DevMode::Stop),
            status::EBUSY
        );
        assert_eq!(client.dev_mode_get(3).unwrap(), DevMode::Freeze);
        client.dev_mode_set(3, DevMode::Freeze).unwrap();
        // Other members are not affected by member 3's stream.
        client.dev_mode_set(1, DevMode::Stop).unwrap();
        client.dev_ctx_write(3, &ctx[cut..]).unwrap();
        assert!(!client.context_partly_written(3), "cut at {cut}");
    }
    client.dev_mode_set(3, DevMode::Active).unwrap();
    assert_eq!(client.dev_mode_get(3).unwrap(), DevMode::Active);
}

/// Seed 004, same statement: DEV_CTX_DISCARD ends the partial context ("the device functions as
/// if the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE was never received"), after which the client
/// sends the mode change; a DEV_CTX_WRITE the device refused leaves nothing partly written.
#[test]
fn discard_or_a_refused_write_leaves_nothing_partly_written() {
    let (_owner, mut client, _guest, ctx) = setup();
    client.dev_ctx_write(3, &ctx[..24]).unwrap();
    let err = client.dev_mode_set(3, DevMode::Stop).unwrap_err();
    assert!(refused_by_client(&err, 3, DevMode::Stop), "{err}");
    client.dev_ctx_discard(3).unwrap();
    assert!(!client.context_partly_written(3));
    client.dev_mode_set(3, DevMode::Stop).unwrap();
    client.dev_mode_set(3, DevMode::Freeze).unwrap();
    // A write without START_MARKER is refused by the device (EINVAL, no side effect).
    let err = client.dev_ctx_write(3, &ctx[8..]).unwrap_err();
    assert_eq!(err.status(), Some(status::EINVAL), "{err}");
    assert!(!client.context_partly_written(3));
    client.dev_mode_set(3, DevMode::Active).unwrap();
}

/// Seed 004: "the driver MUST write a complete device context using one or multiple
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE commands" and, "at start, the driver MUST set field[0] ...
/// of type VIRTIO_DEV_CTX_START_MARKER" and "MUST end the device context ... with
/// VIRTIO_DEV_CTX_END_MARKER in the last command": `dev_ctx_write_all` refuses a context
/// without either marker before sending a byte, and writes a complete one in any piece size.
#[test]
fn write_all_sends_only_a_complete_context() {
    let (_owner, mut client, _guest, ctx) = setup();
    for (what, bad) in [
        ("no END_MARKER", &ctx[..ctx.len() - 8]),
        ("no START_MARKER", &ctx[8..]),
        ("cut inside a field", &ctx[..ctx.len() - 12]),
        ("empty", &ctx[..0]),
    ] {
        let err = client.dev_ctx_write_all(3, bad, 16).unwrap_err();
        assert!(
            matches!(err, AdminError::IncompleteContext { member: 3, .. }),
            "{what}: {err}"
        );
        // Nothing reached the device: it holds no partial context.
        assert_eq!(device_mode_set(&mut client, 3, DevMode::Stop), status::OK);
        assert_eq!(device_mode_set(&mut client, 3, DevMode::Freeze), status::OK);
    }
    // Nor may a whole context follow one left partly written.
    client.dev_ctx_write(3, &ctx[..16]).unwrap();
    let err = client.dev_ctx_write_all(3, &ctx, 16).unwrap_err();
    assert!(matches!(err, AdminError::IncompleteContext { .. }), "{err}");
    client.dev_ctx_discard(3).unwrap();
    for chunk in [8, 24, 4096] {
        client.dev_ctx_write_all(3, &ctx, chunk).unwrap();
        assert!(!client.context_partly_written(3));
    }
    client.dev_mode_set(3, DevMode::Stop).unwrap();
    client.dev_ctx_discard(3).unwrap();
    let again = client.dev_ctx_read_all(3, 64).unwrap();
    assert_eq!(decode(&again).unwrap(), decode(&ctx).unwrap());
}

/// Seed 004: "The driver SHOULD read the complete device context using one or multiple
/// VIRTIO_ADMIN_CMD_DEV_CTX_READ commands." `dev_ctx_read_all` returns the whole context from
/// START_MARKER to END_MARKER whatever the piece size, and refuses to pass off the tail of a
/// read already begun in this mode as a context.
#[test]
fn read_all_reads_the_complete_context() {
    let (_owner, mut client, _guest, ctx) = setup();
    let fields = parse_fields(&ctx).unwrap();
    assert_eq!(fields.first().unwrap().field_type, FieldType::START_MARKER);
    assert_eq!(fields.last().unwrap().field_type, FieldType::END_MARKER);
    assert!(fields.len() > 4, "a context with queue fields");
    for chunk in [8, 24, 4096] {
        client.dev_ctx_discard(1).unwrap();
        assert_eq!(client.dev_ctx_read_all(1, chunk).unwrap(), ctx, "{chunk}");
    }
    client.dev_ctx_discard(1).unwrap();
    let head = client.dev_ctx_read(1, 16).unwrap();
    assert_eq!(head.data, ctx[..16]);
    let err = client.dev_ctx_read_all(1, 64).unwrap_err();
    assert!(matches!(err, AdminError::Protocol { .. }), "{err}");
    client.dev_ctx_discard(1).unwrap();
    assert_eq!(client.dev_ctx_read_all(1, 64).unwrap(), ctx);
}

/// A member's transport that counts writes to its PCI configuration space.
struct CountingConfigWrites {
    function: Arc<VirtioPciFunction<Mem>>,
    writes: AtomicUsize,
}

impl PciTransport for CountingConfigWrites {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.function.read(offset, data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.function.write(offset, data);
    }
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.function.config_read(offset, data);
    }
    fn config_write(&self, offset: u16, data: &[u8]) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.function.config_write(offset, data);
    }
}

/// Seed 004: "For the SR-IOV group type, the driver MUST NOT write into the
/// VIRTIO_PCI_CAP_PCI_CFG capability area when the device mode is set to Freeze." The member's
/// driver cannot see the member's mode (the owner sets it), so it keeps the rule by never
/// writing PCI configuration space at all: through initialisation, I/O, and notifications
/// while the member goes Active → Stop → Freeze → Active, on a member that has the window.
#[test]
fn member_driver_never_writes_the_pci_cfg_window() {
    let owner = owner(1, Kind::Counting);
    let mut client = client(&owner);
    let member = owner.member(1).unwrap();
    assert!(
        member.pci_cfg_offset().is_some(),
        "members have a PCI_CFG window"
    );
    let transport = Arc::new(CountingConfigWrites {
        function: member.clone(),
        writes: AtomicUsize::new(0),
    });
    let mem = member.core().lock().unwrap().mem().clone();
    let mut driver = PciDriver::new(transport.clone(), mem, Profile::Seeds).unwrap();
    let features = Profile::Seeds.feature_set(&[Feature::Version1]).unwrap();
    driver
        .init(features, &[QueueSetup::new(0, QUEUE_SIZE, RING)])
        .unwrap();
    let mut used = 0;
    for (i, mode) in [DevMode::Stop, DevMode::Freeze, DevMode::Active]
        .into_iter()
        .enumerate()
    {
        driver
            .submit(0, &[BufferSpec::writable(DATA + 64 * i as u64, BUF_LEN)])
            .unwrap();
        driver.notify(0).unwrap();
        used += driver.collect_used(0).unwrap().len();
        client.dev_mode_set(1, mode).unwrap();
        driver.notify(0).unwrap();
        used += driver.collect_used(0).unwrap().len();
    }
    assert_eq!(used, 3, "the driver did its I/O");
    assert_eq!(transport.writes.load(Ordering::SeqCst), 0);
}

/// Seed 004: "the device MUST not generate any PCI PME when the device is not in Active
/// state", and "the member device MUST respond to commands VIRTIO_ADMIN_CMD_DEV_MODE_SET,
/// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE and VIRTIO_ADMIN_CMD_DEV_CTX_READ after the device power
/// management state transition completes in the device, if the power management state
/// transition is in progress". Not modelled: no function has a PCI power-management
/// capability (id 0x01), so there is no PME and no power-management state transition. This
/// checks that claim on owners and members; a PM capability added later fails it.
#[test]
fn no_function_has_power_management() {
    let owner = owner(2, Kind::Counting);
    let functions = [
        owner.function().clone(),
        owner.member(1).unwrap(),
        owner.member(2).unwrap(),
    ];
    for function in &functions {
        let ids = capability_ids(function);
        assert!(
            ids.contains(&0x09),
            "the vendor capabilities are walked: {ids:?}"
        );
        assert!(
            !ids.contains(&0x01),
            "a power-management capability: {ids:?}"
        );
    }
}
