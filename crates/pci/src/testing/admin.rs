//! Rigs of the admin (seed 004) tests: owners whose members are test devices, guests driving
//! members, an owner-side client and raw command bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_lm_device::testing::{pattern, ConfigDevice, CountingDevice, Fill, SlowDevice};
use virtio_lm_device::{CoreOptions, QuiesceMode, VirtioDevice};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::admin::{group_type, opcode, qualifier, status, DevMode, DevModeData};
use virtio_lm_spec::context::{ContextFieldHeader, FieldType};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::IntoBytes;

pub use super::{copy_memory, memory, snapshot, Mem, MEM_SIZE, RING};
use crate::admin::{
    AdminClient, AdminClientConfig, AdminCommand, AdminResult, Completion, OwnerFunction,
    OwnerOptions,
};
use crate::{PciDriver, QueueSetup, VirtioPciFunction};
pub use virtio_lm_device::testing::context::{StateLog, LOG_FIELD};

/// First data buffer of a guest.
pub const DATA: u64 = 0x4000;
/// Bytes per data buffer.
pub const BUF_LEN: u32 = 32;
/// Queue size of the members.
pub const QUEUE_SIZE: u16 = 16;

/// A member device with an asynchronous backend: a [`SlowDevice`] presenting as an entropy
/// source with one queue of [`QUEUE_SIZE`]. It fills each request's writable buffers with
/// [`pattern`] when it takes it and completes from [`VirtioDevice::poll`] while `release` is
/// set. Drain quiesce waits for its requests; record-in-flight quiesce leaves them in the
/// queue's in-flight list, and whoever runs the queue next adopts them from there (so a
/// destination completes them exactly once).
pub fn delay_device(release: Arc<AtomicBool>) -> SlowDevice {
    SlowDevice::backend(Fill::Pattern, QUEUE_SIZE)
        .adopting()
        .released_by(release)
}

/// Which device type the members are.
#[derive(Clone)]
pub enum Kind {
    /// [`CountingDevice`]s, the stream of VF `n` from `n << 32`.
    Counting,
    /// [`delay_device`]s sharing one release flag, quiescing as `mode` says.
    Delay(Arc<AtomicBool>, QuiesceMode),
    /// [`delay_device`]s, VF `n` released by flag `n - 1`, quiescing as `mode` says.
    DelayEach(Vec<Arc<AtomicBool>>, QuiesceMode),
    /// [`StateLog`]s sharing one log.
    StateLog(Arc<Mutex<Vec<u8>>>),
    /// [`ConfigDevice`]s: a configuration space the driver can write.
    Config,
}

/// A member function of `kind` for VF `vf` over fresh guest memory (2 MSI-X vectors).
pub fn member_function(kind: &Kind, vf: u16) -> VirtioPciFunction<Mem> {
    let mem = memory();
    let (device, quiesce_mode): (Box<dyn VirtioDevice<Mem>>, _) = match kind {
        Kind::Counting => (
            Box::new(CountingDevice::new(u64::from(vf) << 32, QUEUE_SIZE)),
            QuiesceMode::Drain,
        ),
        Kind::Delay(release, mode) => (Box::new(delay_device(release.clone())), *mode),
        Kind::DelayEach(releases, mode) => {
            let release = releases[usize::from(vf) - 1].clone();
            (Box::new(delay_device(release)), *mode)
        }
        Kind::StateLog(log) => (
            Box::new(StateLog::new(log.clone(), QUEUE_SIZE)),
            QuiesceMode::Drain,
        ),
        Kind::Config => (Box::new(ConfigDevice::new()), QuiesceMode::Drain),
    };
    let options = CoreOptions {
        quiesce_mode,
        ..CoreOptions::default()
    };
    VirtioPciFunction::with_device(device, mem, options, 2, false).unwrap()
}

/// An owner (its own device a [`CountingDevice`]) with `num_vfs` members of `kind`, VF Enable set.
pub fn owner(num_vfs: u16, kind: Kind) -> OwnerFunction<Mem> {
    owner_with(num_vfs, kind, OwnerOptions::default())
}

/// [`owner`] with explicit options.
pub fn owner_with(num_vfs: u16, kind: Kind, options: OwnerOptions) -> OwnerFunction<Mem> {
    let device = Box::new(CountingDevice::new(0, 8));
    owner_of(device, memory(), num_vfs, kind, options)
}

/// An owner whose own device is `device`, over `mem`, with `num_vfs` members of `kind`, VF
/// Enable set.
pub fn owner_of(
    device: Box<dyn VirtioDevice<Mem>>,
    mem: Arc<Mem>,
    num_vfs: u16,
    kind: Kind,
    options: OwnerOptions,
) -> OwnerFunction<Mem> {
    let factory = Box::new(move |vf: u16| Ok(member_function(&kind, vf)));
    let owner = OwnerFunction::new(device, mem, options, factory).unwrap();
    owner.set_num_vfs(num_vfs).unwrap();
    owner.set_vf_enable(true).unwrap();
    owner
}

/// A context field whose header claims `length` but carries `value` (padded to 8 bytes).
pub fn raw_field(ty: FieldType, length: u32, value: &[u8]) -> Vec<u8> {
    let mut bytes = ContextFieldHeader::new(ty, 0, length).as_bytes().to_vec();
    bytes.extend_from_slice(value);
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    bytes
}

/// Asserts that DEV_CTX_WRITE of `data` to `member` fails with EINVAL / Q_INVALID_FIELD.
pub fn assert_einval(client: &mut AdminClient<Mem>, member: u64, data: &[u8], what: &str) {
    let r = run(client, &cmd(opcode::DEV_CTX_WRITE, member, data), 0);
    assert_eq!(
        (r.status, r.qualifier),
        (status::EINVAL, qualifier::Q_INVALID_FIELD),
        "{what}"
    );
}

/// Client configuration of the tests: a short timeout so a failure never stalls a test.
pub fn client_config() -> AdminClientConfig {
    AdminClientConfig {
        ring_base: 0x2000,
        buffer_base: 0x8000,
        buffer_len: 0x2000,
        timeout: Duration::from_millis(500),
        eagain_retries: 8,
        ..AdminClientConfig::default()
    }
}

/// The owner's driver, initialised, without LIST_USE.
pub fn bare_client(owner: &OwnerFunction<Mem>) -> AdminClient<Mem> {
    client_with(owner, client_config())
}

/// The owner's driver with `config`.
pub fn client_with(owner: &OwnerFunction<Mem>, config: AdminClientConfig) -> AdminClient<Mem> {
    let mem = owner.function().core().lock().unwrap().mem().clone();
    AdminClient::init(owner.function().clone(), mem, Profile::Seeds, config).unwrap()
}

/// The owner's driver after LIST_USE of every migration command.
pub fn client(owner: &OwnerFunction<Mem>) -> AdminClient<Mem> {
    let mut client = bare_client(owner);
    client.use_migration_commands().unwrap();
    client
}

/// An owner with `num_vfs` counting members whose member 1 a guest used (three requests) and
/// the client then stopped; returns member 1's whole context, read in 64-byte chunks.
pub fn stopped_member(num_vfs: u16) -> (OwnerFunction<Mem>, AdminClient<Mem>, Guest, Vec<u8>) {
    let owner = owner(num_vfs, Kind::Counting);
    let mut client = client(&owner);
    let mut guest = Guest::new(owner.member(1).unwrap());
    guest.submit(3);
    guest.collect();
    client.dev_mode_set(1, DevMode::Stop).unwrap();
    let ctx = client.dev_ctx_read_all(1, 64).unwrap();
    (owner, client, guest, ctx)
}

/// Starts a fresh read of `member`'s context (DISCARD) and reads its first 16 bytes, which must
/// be those of `whole`: the partial read the stream-restart tests then interrupt.
pub fn read_first_16(client: &mut AdminClient<Mem>, member: u64, whole: &[u8]) {
    client.dev_ctx_discard(member).unwrap();
    let first = client.dev_ctx_read(member, 16).unwrap();
    assert_eq!(first.data, whole[..16]);
}

/// The device-readable part of a command for the SR-IOV group.
pub fn cmd(op: u16, member: u64, data: &[u8]) -> Vec<u8> {
    AdminCommand::new(op, group_type::SRIOV, member, data.to_vec()).to_bytes()
}

/// DEV_MODE_SET data.
pub fn mode_data(mode: DevMode) -> Vec<u8> {
    DevModeData::new(mode).as_bytes().to_vec()
}

/// Sends `readable` with a `writable_len`-byte writable part and waits for the completion.
pub fn raw(client: &mut AdminClient<Mem>, readable: &[u8], writable_len: u32) -> Completion {
    let ticket = client.submit_raw(0, readable, writable_len).unwrap();
    client.wait(&ticket).unwrap()
}

/// [`raw`] with room for `result_len` bytes of result; returns the decoded result.
pub fn run(client: &mut AdminClient<Mem>, readable: &[u8], result_len: u32) -> AdminResult {
    raw(client, readable, 8 + result_len).result()
}

/// A guest driving one member: its driver, and every buffer it made available and got back.
pub struct Guest {
    /// The function the guest's driver talks to.
    pub function: Arc<VirtioPciFunction<Mem>>,
    /// The guest's memory.
    pub mem: Arc<Mem>,
    /// The guest driver.
    pub driver: PciDriver<Mem>,
    /// Buffers in flight: chain id → buffer address.
    pub inflight: BTreeMap<u16, u64>,
    /// Buffer addresses used so far (each exactly once).
    pub done: BTreeSet<u64>,
    next: u64,
}

impl Guest {
    /// Initialises `function` (VERSION_1 and EVENT_IDX, split ring) and its queue 0.
    pub fn new(function: Arc<VirtioPciFunction<Mem>>) -> Self {
        let mem = function.core().lock().unwrap().mem().clone();
        let mut driver = PciDriver::new(function.clone(), mem.clone(), Profile::Seeds).unwrap();
        let features = Profile::Seeds
            .feature_set(&[Feature::Version1, Feature::EventIdx])
            .unwrap();
        driver
            .init(features, &[QueueSetup::new(0, QUEUE_SIZE, RING)])
            .unwrap();
        Self {
            function,
            mem,
            driver,
            inflight: BTreeMap::new(),
            done: BTreeSet::new(),
            next: 0,
        }
    }

    /// Makes `n` fresh buffers available (kicking as the device asks).
    pub fn submit(&mut self, n: usize) {
        for _ in 0..n {
            let addr = DATA + self.next * u64::from(BUF_LEN);
            self.next += 1;
            let id = self
                .driver
                .submit(0, &[BufferSpec::writable(addr, BUF_LEN)])
                .unwrap();
            assert!(self.inflight.insert(id, addr).is_none(), "id {id} reused");
        }
    }

    /// Buffers made available so far.
    pub fn submitted(&self) -> usize {
        self.next as usize
    }

    /// Notifies queue 0 unconditionally (an async device completes work when notified).
    pub fn pump(&mut self) {
        self.driver.notify(0).unwrap();
    }

    /// Collects used buffers; each must be in flight and used once.
    pub fn collect(&mut self) -> usize {
        let used = self.driver.collect_used(0).unwrap();
        for u in &used {
            let addr = self
                .inflight
                .remove(&u.id)
                .unwrap_or_else(|| panic!("buffer {} used but not in flight", u.id));
            assert_eq!(u.len, BUF_LEN);
            assert!(self.done.insert(addr), "buffer at {addr:#x} used twice");
        }
        used.len()
    }

    /// Pumps and collects until nothing is in flight (bounded).
    pub fn drain(&mut self) {
        for _ in 0..100 {
            if self.inflight.is_empty() {
                return;
            }
            self.pump();
            self.collect();
        }
        panic!("{} buffers never came back", self.inflight.len());
    }

    /// Follows the device to `function` (another owner's member running the migrated context)
    /// with guest memory `mem` (a copy of this guest's memory).
    pub fn migrate_to(&mut self, function: Arc<VirtioPciFunction<Mem>>, mem: Arc<Mem>) {
        self.driver
            .migrate_to(function.clone(), mem.clone())
            .unwrap();
        self.function = function;
        self.mem = mem;
    }

    /// Every buffer used carries the [`delay_device`] [`pattern`].
    pub fn check_pattern(&self) {
        for &addr in &self.done {
            let mut bytes = vec![0u8; BUF_LEN as usize];
            self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(*b, pattern(addr + i as u64), "buffer {addr:#x} byte {i}");
            }
        }
    }
}

/// `n` release flags, all set.
pub fn releases(n: usize) -> Vec<Arc<AtomicBool>> {
    (0..n).map(|_| Arc::new(AtomicBool::new(true))).collect()
}

/// The LIST_USE bitmap with every supported opcode.
pub fn all_opcodes() -> u64 {
    let mut word = 1u64 << opcode::LIST_QUERY | 1u64 << opcode::LIST_USE;
    for op in opcode::DEVICE_MIGRATION {
        word |= 1u64 << op;
    }
    word
}

/// One command of an input of the admin fuzz entry points: `le16 writable_len; le16
/// readable_len; u8 readable[readable_len]`.
pub fn fuzz_input_command(writable_len: u16, readable: &[u8]) -> Vec<u8> {
    let mut bytes = writable_len.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(readable.len() as u16).to_le_bytes());
    bytes.extend_from_slice(readable);
    bytes
}
