//! The machine: guest RAM, an SR-IOV owner function (the host's PF, its admin queue in host
//! memory) whose members are the guest's blk and net functions, one device worker thread per
//! member, and the guest's vCPU threads (blk workload, net workload, memory dirtier), which
//! pause at a safe point and resume.
//!
//! A machine either boots its guest ([`Machine::start`]) or waits for one
//! ([`Machine::incoming`]: members frozen, no vCPU) and continues it from device contexts, a
//! copy of guest memory and the vCPU state ([`Machine::restore`]) — the two ends of a
//! migration, which the source side feeds with [`Machine::vcpu_state`] and
//! [`Machine::freeze_devices`].

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_lm_device::Worker;
use virtio_lm_devices::blk::workload::BlkReport;
use virtio_lm_devices::net::workload::NetReport;
use virtio_lm_devices::NetStats;
use virtio_lm_pci::admin::{AdminClient, AdminClientConfig, OwnerFunction};
use virtio_lm_pci::{KickMode, PciError, VirtioPciFunction};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::Profile;
use vm_memory::{Bytes, GuestAddress};

use crate::build;
use crate::guest::blk::BlkGuest;
use crate::guest::dirtier::{Dirtier, DirtierState};
use crate::guest::net::{self, NetGuest};
use crate::guest::{self, lock, VcpuState};
use crate::memory::{GuestRam, MemoryError, VmMemory};
use crate::options::{GuestLayout, MachineOptions, OptionsError, MIB};
use crate::pause::{PauseControl, PauseError};

/// Host memory of the owner function (its admin queue and command buffers).
const OWNER_MEMORY: u64 = MIB;
/// Longest a pause waits for every vCPU to reach a safe point.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes per DEV_CTX_READ / DEV_CTX_WRITE command.
pub(crate) const CONTEXT_CHUNK: usize = 0x1000;

/// Why a machine could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The options are inconsistent.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Guest or host memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A PCI function, the owner or a guest driver.
    #[error("PCI: {0}")]
    Pci(#[from] PciError),
    /// The SR-IOV group.
    #[error("SR-IOV: {0}")]
    Sriov(#[from] virtio_lm_pci::admin::SriovError),
    /// An admin command failed.
    #[error("Admin command: {0}")]
    Admin(#[from] virtio_lm_pci::admin::AdminError),
    /// A device could not be opened.
    #[error("Device: {0}")]
    Device(String),
    /// A guest driver could not initialise its device.
    #[error("Guest driver: {0}")]
    Driver(String),
    /// A thread could not be started.
    #[error("Thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The vCPUs did not all reach a safe point.
    #[error(transparent)]
    Pause(#[from] PauseError),
    /// A vCPU stopped on an error, or its state could not be restored.
    #[error("vCPU: {0}")]
    Vcpu(String),
    /// The operation needs a guest (booted or restored) and there is none, or the reverse.
    #[error("{0}")]
    State(&'static str),
}

/// What the guest's workloads counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineReport {
    /// The blk workload (none without a blk function).
    pub blk: Option<BlkReport>,
    /// The net workload (none without a net function).
    pub net: Option<NetReport>,
    /// The dirtier's state.
    pub dirtier: DirtierState,
    /// The longest gap between two completed requests either workload saw, microseconds
    /// (across migrations: the clock travels in the vCPU state).
    pub stall_us: u64,
    /// VIRTIO_NET_CTRL_ANNOUNCE_ACKs the guest's net driver sent and the device accepted
    /// (across migrations, as the stall clock).
    pub announce_acks: u64,
}

/// The guest's vCPUs.
pub(crate) struct Guest {
    blk: Option<Arc<Mutex<BlkGuest>>>,
    net: Option<Arc<Mutex<NetGuest>>>,
    dirtier: Arc<Mutex<Dirtier>>,
}

impl Guest {
    fn stall_us(&self) -> u64 {
        let blk = self.blk.as_ref().map_or(0, |g| lock(g).stall().longest_ns);
        let net = self.net.as_ref().map_or(0, |g| lock(g).stall().longest_ns);
        blk.max(net) / 1000
    }

    fn announce_acks(&self) -> u64 {
        self.net.as_ref().map_or(0, |g| lock(g).announce_acks())
    }
}

/// A simulated VM. See the module documentation.
pub struct Machine {
    pub(crate) options: MachineOptions,
    pub(crate) layout: GuestLayout,
    pub(crate) memory: VmMemory,
    owner: OwnerFunction<GuestRam>,
    pub(crate) admin: Mutex<AdminClient<GuestRam>>,
    pub(crate) blk: Option<Arc<VirtioPciFunction<GuestRam>>>,
    pub(crate) net: Option<Arc<VirtioPciFunction<GuestRam>>>,
    pub(crate) net_handles: Option<build::NetHandles>,
    pub(crate) guest: Option<Guest>,
    pub(crate) control: Arc<PauseControl>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
    workers: Vec<Worker>,
    /// A guest loaded by [`Machine::load`], waiting for [`Machine::activate`].
    pub(crate) loaded: Option<Loaded>,
    /// The v1.4 source's GET objects of a migration in progress.
    pub(crate) get_objects: Mutex<crate::parts::GetObjects>,
    /// The device part of the last [`Machine::load`] and [`Machine::activate`].
    pub(crate) device_time: Duration,
    /// Kept for the owner's rings: they live here, not in guest RAM.
    _owner_memory: VmMemory,
}

/// A guest loaded and not yet running: its vCPU threads exist, parked at their first safe
/// point until Commit.
pub(crate) struct Loaded {
    /// Members restored in-band (status strategy): DRIVER_OK on Commit, not admin Active.
    pub(crate) inband: Vec<(u64, crate::inband::InbandCommit)>,
}

impl Machine {
    /// Builds the machine and boots its guest: devices, owner and members, workers, guest
    /// drivers (initialised as a booting guest would), and the vCPU threads.
    pub fn start(options: MachineOptions) -> Result<Self, MachineError> {
        let mut machine = Self::build(options)?;
        let ram = machine.memory.ram().clone();
        if machine.options.fill_random {
            let from = machine.layout.working_set_at + machine.layout.working_set_len;
            fill_random(&ram, from, machine.options.memory, machine.options.seed)?;
        }
        let features = build::transport_features(
            machine.options.profile,
            machine.options.ring,
            &machine.options.guest_omits,
        )?;
        let (options, layout) = (&machine.options, &machine.layout);
        let boot = build::GuestBoot {
            ram: &ram,
            transport: features,
            options,
            layout,
        };
        let blk = match &machine.blk {
            Some(f) => Some(BlkGuest::new(boot.blk_driver(f)?, options.seed)),
            None => None,
        };
        let net = match &machine.net {
            Some(f) => Some(NetGuest::new(
                boot.net_driver(f)?,
                net::config_vector(f).map_err(MachineError::Driver)?,
            )),
            None => None,
        };
        let dirtier = Dirtier::new(
            ram,
            layout.working_set_at,
            layout.working_set_len,
            options.dirty_rate_mib,
            DirtierState::default(),
        );
        machine.run(blk, net, dirtier)?;
        Ok(machine)
    }

    /// Builds the machine waiting for a migrated guest: the same devices and layout as the
    /// options say, every member put in Freeze (v1.4: stopped) before anything runs, no vCPU.
    pub fn incoming(options: MachineOptions) -> Result<Self, MachineError> {
        let machine = Self::build(options)?;
        for member in machine.members() {
            machine.member_mode(member, DevMode::Freeze)?;
        }
        Ok(machine)
    }

    /// The numbering profile of the devices, the owner and the drivers.
    pub fn profile(&self) -> Profile {
        self.options.profile
    }

    /// DEV_MODE_SET of `member` through the owner, in the profile's command set: the seed-004
    /// modes as they are; under v1.4 Stop and Freeze are both the STOPPED flag (1.4 has one
    /// stopped mode, which completes every observed buffer first) and Active clears it.
    pub(crate) fn member_mode(&self, member: u64, mode: DevMode) -> Result<(), MachineError> {
        let mut admin = lock(&self.admin);
        match self.options.profile {
            Profile::Seeds => admin.dev_mode_set(member, mode)?,
            Profile::V1_4 => admin.dev_mode_stopped(member, mode != DevMode::Active)?,
        }
        Ok(())
    }

    fn build(options: MachineOptions) -> Result<Self, MachineError> {
        let layout = options.layout()?;
        let memory = VmMemory::new(options.memory)?;
        let owner_memory = VmMemory::new(OWNER_MEMORY)?;
        let (pending, net_handles) = build::devices(&options)?;
        let wakes: Vec<_> = pending.iter().map(|p| p.1.clone()).collect();
        let owner = build::owner(&owner_memory, memory.device_ram(), &options, pending)?;
        let mut workers = Vec::new();
        let mut members = Vec::new();
        for (vf, wake) in (1u16..).zip(wakes) {
            let function = owner
                .member(vf)
                .ok_or(MachineError::Device(format!("member {vf} missing")))?;
            let KickMode::Worker(kicks) = function.kick_mode().clone() else {
                return Err(MachineError::Pci(PciError::NoKickEventFds));
            };
            let core = function.core().clone();
            workers.push(Worker::spawn_with_wakers(core, kicks, vec![wake])?);
            members.push(function);
        }
        let mut members = members.into_iter();
        let blk = options.blk.as_ref().and_then(|_| members.next());
        let net = options.net.as_ref().and_then(|_| members.next());
        let mut admin = AdminClient::init(
            owner.function().clone(),
            owner_memory.ram().clone(),
            options.profile,
            AdminClientConfig::default(),
        )?;
        match options.profile {
            Profile::Seeds => admin.use_migration_commands()?,
            Profile::V1_4 => {
                admin.use_v1_4_commands()?;
                let cap = admin.dev_parts_cap_get()?;
                admin.dev_parts_cap_set(cap)?;
            }
        }
        Ok(Self {
            options,
            layout,
            memory,
            owner,
            admin: Mutex::new(admin),
            blk,
            net,
            net_handles,
            guest: None,
            control: Arc::new(PauseControl::default()),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
            workers,
            loaded: None,
            get_objects: Mutex::default(),
            device_time: Duration::ZERO,
            _owner_memory: owner_memory,
        })
    }

    /// Installs the vCPUs and starts their threads.
    pub(crate) fn run(
        &mut self,
        blk: Option<BlkGuest>,
        net: Option<NetGuest>,
        dirtier: Dirtier,
    ) -> Result<(), MachineError> {
        let guest = Guest {
            blk: blk.map(|g| Arc::new(Mutex::new(g))),
            net: net.map(|g| Arc::new(Mutex::new(g))),
            dirtier: Arc::new(Mutex::new(dirtier)),
        };
        let (control, errors) = (&self.control, &self.errors);
        if let Some(vcpu) = &guest.blk {
            let t = guest::spawn("blk", vcpu.clone(), control.clone(), errors.clone())?;
            self.threads.push(t);
        }
        if let Some(vcpu) = &guest.net {
            let t = guest::spawn("net", vcpu.clone(), control.clone(), errors.clone())?;
            self.threads.push(t);
        }
        let vcpu = guest.dirtier.clone();
        let t = guest::spawn("dirtier", vcpu, control.clone(), errors.clone())?;
        self.threads.push(t);
        self.guest = Some(guest);
        Ok(())
    }

    /// The member numbers (VFs) of the guest's functions, blk first.
    pub fn members(&self) -> Vec<u64> {
        let count = u64::from(self.blk.is_some()) + u64::from(self.net.is_some());
        (1..=count).collect()
    }

    /// The options the machine was built from.
    pub fn options(&self) -> &MachineOptions {
        &self.options
    }

    /// Where the guest's drivers and working set live.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }

    /// Guest RAM (with its dirty log).
    pub fn memory(&self) -> &VmMemory {
        &self.memory
    }

    /// The SR-IOV owner whose members are the guest's functions.
    pub fn owner(&self) -> &OwnerFunction<GuestRam> {
        &self.owner
    }

    /// Runs `f` with the owner's driver (the hypervisor's side of the admin queue, every
    /// migration command in use; its rings live in host memory, not in guest RAM).
    pub fn with_admin<T>(&self, f: impl FnOnce(&mut AdminClient<GuestRam>) -> T) -> T {
        f(&mut lock(&self.admin))
    }

    /// The net device's counters (frames on the wire), if any.
    pub fn net_stats(&self) -> Option<&Arc<NetStats>> {
        self.net_handles.as_ref().map(|h| &h.stats)
    }

    /// The net device's tunnel address (its bound port), if any: where frames for the guest
    /// arrive from the wire.
    pub fn net_local_addr(&self) -> Option<std::net::SocketAddr> {
        self.net_handles.as_ref().map(|h| h.local)
    }

    /// The member functions, blk first.
    pub fn functions(&self) -> Vec<Arc<VirtioPciFunction<GuestRam>>> {
        self.blk.iter().chain(&self.net).cloned().collect()
    }

    /// The function of member `member` (its VF number).
    pub(crate) fn member_function(
        &self,
        member: u64,
    ) -> Result<Arc<VirtioPciFunction<GuestRam>>, MachineError> {
        self.members()
            .into_iter()
            .zip(self.functions())
            .find(|(m, _)| *m == member)
            .map(|(_, f)| f)
            .ok_or_else(|| MachineError::Device(format!("member {member}: no such member")))
    }

    /// Errors that stopped a vCPU, so far.
    pub fn vcpu_errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    /// Parks every vCPU at a safe point; returns once all are parked.
    pub fn pause(&self) -> Result<(), MachineError> {
        self.control.pause(PAUSE_TIMEOUT)?;
        Ok(())
    }

    /// Lets the vCPUs run on.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Whether every vCPU is parked at its safe point (true from [`Self::pause`] returning to
    /// [`Self::resume`]).
    pub fn all_parked(&self) -> bool {
        self.control.all_parked()
    }

    /// The blk vCPU.
    pub(crate) fn blk_vcpu(&self) -> Result<&Arc<Mutex<BlkGuest>>, MachineError> {
        self.guest()?
            .blk
            .as_ref()
            .ok_or(MachineError::State("no blk function"))
    }

    fn guest(&self) -> Result<&Guest, MachineError> {
        self.guest
            .as_ref()
            .ok_or(MachineError::State("no guest runs here"))
    }

    /// The workloads' counters as they stand (consistent while paused); all zero without a
    /// guest.
    pub fn report(&self) -> MachineReport {
        let Ok(guest) = self.guest() else {
            return MachineReport::default();
        };
        MachineReport {
            blk: guest.blk.as_ref().map(|g| lock(g).report()),
            net: guest.net.as_ref().map(|g| lock(g).report()),
            dirtier: lock(&guest.dirtier).state(),
            stall_us: guest.stall_us(),
            announce_acks: guest.announce_acks(),
        }
    }

    /// The guest's net driver sends one control-queue command between two workload steps
    /// and returns the device's acknowledgement.
    pub fn net_command(&self, class: u8, cmd: u8, data: &[u8]) -> Result<u8, MachineError> {
        let net = self.guest()?.net.as_ref();
        let net = net.ok_or(MachineError::State("no net function"))?;
        lock(net)
            .command(class, cmd, data)
            .map_err(MachineError::Driver)
    }

    /// The vCPU state; the vCPUs must be paused.
    pub fn vcpu_state(&self) -> Result<VcpuState, MachineError> {
        if !self.all_parked() {
            return Err(MachineError::State("the vCPU state is read while paused"));
        }
        let guest = self.guest()?;
        Ok(VcpuState {
            blk: guest.blk.as_ref().map(|g| lock(g).state()),
            net: guest.net.as_ref().map(|g| lock(g).state()),
            dirtier: lock(&guest.dirtier).state(),
        })
    }

    /// The source side's device hand-over: DEV_MODE_SET Stop then Freeze on every member,
    /// then each one's device context (DEV_CTX_READ), by member number.
    pub fn freeze_devices(&self) -> Result<Vec<(u64, Vec<u8>)>, MachineError> {
        self.stop_devices()?;
        self.read_contexts()
    }

    /// The destination side in one go: [`Self::load`] then [`Self::activate`].
    pub fn restore(
        &mut self,
        contexts: &[(u64, Vec<u8>)],
        state: VcpuState,
    ) -> Result<(), MachineError> {
        self.load(contexts, state)?;
        self.activate()
    }

    fn stop_vcpus(&mut self) {
        self.control.quit();
        for t in self.threads.drain(..) {
            // A vCPU that panicked has nothing more to report.
            let _ = t.join();
        }
    }

    /// Stops the vCPUs, lets every request in flight complete (counting lost what does not
    /// within `timeout`), checks the dirtier's working set, and reports. An error if a vCPU
    /// failed or memory does not hold what the dirtier wrote.
    pub fn finish(mut self, timeout: Duration) -> Result<MachineReport, MachineError> {
        self.stop_vcpus();
        let errors = self.vcpu_errors();
        if !errors.is_empty() {
            return Err(MachineError::Vcpu(errors.join("; ")));
        }
        let guest = self.guest()?;
        let blk = match &guest.blk {
            Some(g) => Some(lock(g).settle(timeout).map_err(MachineError::Vcpu)?),
            None => None,
        };
        let net = match &guest.net {
            Some(g) => Some(lock(g).settle(timeout).map_err(MachineError::Vcpu)?),
            None => None,
        };
        let dirtier = lock(&guest.dirtier);
        dirtier.verify().map_err(MachineError::Vcpu)?;
        Ok(MachineReport {
            blk,
            net,
            dirtier: dirtier.state(),
            stall_us: guest.stall_us(),
            announce_acks: guest.announce_acks(),
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // vCPUs first: they drive the functions the workers serve.
        self.stop_vcpus();
        for w in self.workers.drain(..) {
            w.stop();
        }
    }
}

/// The guest of one member function continued from its part of the vCPU state; the state must
/// have a part exactly when the machine has the function.
pub(crate) fn restore_guest<S, G>(
    function: &Option<Arc<VirtioPciFunction<GuestRam>>>,
    state: Option<S>,
    mismatch: &'static str,
    restore: impl FnOnce(&Arc<VirtioPciFunction<GuestRam>>, S) -> Result<G, String>,
) -> Result<Option<G>, MachineError> {
    match (function, state) {
        (Some(f), Some(s)) => restore(f, s).map(Some).map_err(MachineError::Vcpu),
        (None, None) => Ok(None),
        _ => Err(MachineError::State(mismatch)),
    }
}

/// Writes pseudo-random bytes (xorshift64*, seeded) over `[from, to)` of guest RAM, 1 MiB at
/// a time: every page differs and none is zero.
fn fill_random(ram: &GuestRam, from: u64, to: u64, seed: u64) -> Result<(), MachineError> {
    const CHUNK: usize = 1 << 20;
    let mut state = seed | 1;
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let len = CHUNK.min((to - at) as usize);
        for word in buf[..len].chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        ram.write_slice(&buf[..len], GuestAddress(at))
            .map_err(|e| MachineError::Vcpu(format!("filling guest RAM at {at:#x}: {e}")))?;
        at += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::PAGE_SIZE;

    /// Every filled page is non-zero and differs from the others (nothing a zero-page marker
    /// or a repeated page could stand for); RAM outside the range stays untouched.
    #[test]
    fn fill_random_leaves_no_zero_or_repeated_page() {
        let memory = VmMemory::new(64 * PAGE_SIZE).unwrap();
        let ram = memory.ram();
        fill_random(ram, 8 * PAGE_SIZE, 64 * PAGE_SIZE, 7).unwrap();
        let mut seen = std::collections::HashSet::new();
        for page in 0..64 {
            let mut bytes = vec![0u8; PAGE_SIZE as usize];
            ram.read_slice(&mut bytes, GuestAddress(page * PAGE_SIZE))
                .unwrap();
            let zero = bytes.iter().all(|&b| b == 0);
            assert_eq!(zero, page < 8, "page {page}");
            if page >= 8 {
                assert!(seen.insert(bytes), "page {page} repeats another");
            }
        }
    }
}
