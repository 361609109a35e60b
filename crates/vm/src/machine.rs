//! The machine: guest RAM, an SR-IOV owner function (the host's PF, its admin queue in host
//! memory) whose members are the guest's blk and net functions, one device worker thread per
//! member, and the guest's vCPU threads (blk workload, net workload, memory dirtier), which
//! pause at a safe point and resume.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_lm_device::{CoreOptions, VirtioDevice, Worker};
use virtio_lm_devices::blk::config::features as bf;
use virtio_lm_devices::blk::driver::{BlkDriver, BlkDriverConfig};
use virtio_lm_devices::blk::workload::BlkReport;
use virtio_lm_devices::net::config::{ctrl, features as nf};
use virtio_lm_devices::net::pci_driver::{NetPciConfig, NetPciDriver};
use virtio_lm_devices::net::workload::NetReport;
use virtio_lm_devices::{Blk, BlkOptions, HostEntropy, Net, NetOptions, NetStats, Rng};
use virtio_lm_pci::admin::{AdminClient, AdminClientConfig, OwnerFunction, OwnerOptions};
use virtio_lm_pci::{KickMode, PciDriver, PciError, VirtioPciFunction};
use virtio_lm_spec::{Feature, Profile};
use vmm_sys_util::eventfd::EventFd;

use crate::guest::blk::{BlkGuest, BLOCK_LEN};
use crate::guest::dirtier::{Dirtier, DirtierState};
use crate::guest::net::NetGuest;
use crate::guest::{self, lock};
use crate::memory::{GuestRam, MemoryError, VmMemory};
use crate::options::{GuestLayout, MachineOptions, OptionsError, RingFormat, MIB};
use crate::pause::{PauseControl, PauseError};

/// The numbering profile of the machine's devices and drivers.
pub const PROFILE: Profile = Profile::Seeds;
/// Host memory of the owner function (its admin queue and command buffers).
const OWNER_MEMORY: u64 = MIB;
/// Entries per queue of the guest's blk and net queues.
const QUEUE_SIZE: u16 = 64;
/// Longest a pause waits for every vCPU to reach a safe point.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A vCPU stopped on an error.
    #[error("vCPU failed: {0}")]
    Vcpu(String),
}

/// A guest function: the member's PCI function and the vCPU driving it.
struct GuestFunction<G> {
    function: Arc<VirtioPciFunction<GuestRam>>,
    vcpu: Arc<Mutex<G>>,
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
}

/// A running simulated VM. See the module documentation.
pub struct Machine {
    options: MachineOptions,
    layout: GuestLayout,
    memory: VmMemory,
    owner_memory: VmMemory,
    owner: OwnerFunction<GuestRam>,
    blk: Option<GuestFunction<BlkGuest>>,
    net: Option<GuestFunction<NetGuest>>,
    net_stats: Option<Arc<NetStats>>,
    dirtier: Arc<Mutex<Dirtier>>,
    control: Arc<PauseControl>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
    workers: Vec<Worker>,
}

/// A member's device before the owner's factory builds its function, with the eventfd its
/// worker watches besides the kicks.
type PendingMember = (Box<dyn VirtioDevice<GuestRam>>, Arc<EventFd>, u16);

fn transport_features(ring: RingFormat) -> Result<u64, MachineError> {
    let mut wanted = vec![
        Feature::Version1,
        Feature::EventIdx,
        Feature::DeviceStop,
        Feature::QueueState,
        Feature::Suspend,
    ];
    if ring == RingFormat::Packed {
        wanted.push(Feature::RingPacked);
    }
    PROFILE
        .feature_set(&wanted)
        .map_err(|e| MachineError::Driver(e.to_string()))
}

impl Machine {
    /// Builds the machine and starts it: devices, owner and members, workers, guest drivers
    /// (initialised as a booting guest would), and the vCPU threads.
    pub fn start(options: MachineOptions) -> Result<Self, MachineError> {
        let layout = options.layout()?;
        let memory = VmMemory::new(options.memory)?;
        let owner_memory = VmMemory::new(OWNER_MEMORY)?;
        let ram = memory.ram().clone();

        let mut pending: Vec<PendingMember> = Vec::new();
        let mut net_stats = None;
        if let Some(path) = &options.blk {
            let blk = Blk::open(BlkOptions {
                num_queues: options.queues,
                queue_size: QUEUE_SIZE,
                ..BlkOptions::new(path)
            })
            .map_err(|e| MachineError::Device(e.to_string()))?;
            let wake = blk.completion_fd();
            pending.push((Box::new(blk), wake, options.queues + 1));
        }
        if let Some(endpoints) = options.net {
            let net = Net::new(NetOptions {
                queue_pairs: options.queues,
                queue_size: QUEUE_SIZE,
                ..NetOptions::new(options.mac, endpoints.local, endpoints.remote)
            })
            .map_err(|e| MachineError::Device(e.to_string()))?;
            net_stats = Some(net.stats());
            let wake = net.wake_fd();
            pending.push((Box::new(net), wake, 2 * options.queues + 2));
        }
        let wakes: Vec<Arc<EventFd>> = pending.iter().map(|p| p.1.clone()).collect();
        let owner = owner(&owner_memory, &ram, &options, pending)?;

        let mut workers = Vec::new();
        let mut members = Vec::new();
        for (vf, wake) in (1u16..).zip(wakes) {
            let function = owner
                .member(vf)
                .ok_or(MachineError::Device(format!("member {vf} missing")))?;
            let KickMode::Worker(kicks) = function.kick_mode().clone() else {
                return Err(MachineError::Pci(PciError::NoKickEventFds));
            };
            workers.push(Worker::spawn_with_wakers(
                function.core().clone(),
                kicks,
                vec![wake],
            )?);
            members.push(function);
        }
        let mut members = members.into_iter();
        let features = transport_features(options.ring)?;
        let blk = match options.blk {
            Some(_) => {
                let function = members.next().ok_or(PciError::NotInitialised)?;
                let driver = blk_driver(&function, &ram, features, &options, &layout)?;
                let vcpu = BlkGuest::new(driver, options.seed);
                Some(GuestFunction {
                    function,
                    vcpu: Arc::new(Mutex::new(vcpu)),
                })
            }
            None => None,
        };
        let net = match options.net {
            Some(_) => {
                let function = members.next().ok_or(PciError::NotInitialised)?;
                let driver = net_driver(&function, &ram, features, &options, &layout)?;
                Some(GuestFunction {
                    function,
                    vcpu: Arc::new(Mutex::new(NetGuest::new(driver))),
                })
            }
            None => None,
        };
        let dirtier = Dirtier::new(
            ram,
            layout.working_set_at,
            layout.working_set_len,
            options.dirty_rate_mib,
            DirtierState::default(),
        );
        let mut machine = Self {
            options,
            layout,
            memory,
            owner_memory,
            owner,
            blk,
            net,
            net_stats,
            dirtier: Arc::new(Mutex::new(dirtier)),
            control: Arc::new(PauseControl::default()),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
            workers,
        };
        machine.spawn_vcpus()?;
        Ok(machine)
    }

    fn spawn_vcpus(&mut self) -> Result<(), MachineError> {
        let (control, errors) = (&self.control, &self.errors);
        if let Some(blk) = &self.blk {
            let vcpu = blk.vcpu.clone();
            let t = guest::spawn("blk", vcpu, control.clone(), errors.clone())?;
            self.threads.push(t);
        }
        if let Some(net) = &self.net {
            let vcpu = net.vcpu.clone();
            let t = guest::spawn("net", vcpu, control.clone(), errors.clone())?;
            self.threads.push(t);
        }
        let dirtier = self.dirtier.clone();
        let t = guest::spawn("dirtier", dirtier, control.clone(), errors.clone())?;
        self.threads.push(t);
        Ok(())
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

    /// The owner's driver (the hypervisor's side of the admin queue), initialised, every
    /// migration command in use. Its rings live in host memory, not in the guest's RAM.
    pub fn admin_client(&self) -> Result<AdminClient<GuestRam>, MachineError> {
        let mut client = AdminClient::init(
            self.owner.function().clone(),
            self.owner_memory.ram().clone(),
            PROFILE,
            AdminClientConfig::default(),
        )
        .map_err(|e| MachineError::Driver(e.to_string()))?;
        client
            .use_migration_commands()
            .map_err(|e| MachineError::Driver(e.to_string()))?;
        Ok(client)
    }

    /// The member number (VF) of the blk function, if any.
    pub fn blk_member(&self) -> Option<u16> {
        self.blk.as_ref().map(|_| 1)
    }

    /// The member number (VF) of the net function, if any.
    pub fn net_member(&self) -> Option<u16> {
        self.net
            .as_ref()
            .map(|_| if self.blk.is_some() { 2 } else { 1 })
    }

    /// The net device's counters (frames on the wire), if any.
    pub fn net_stats(&self) -> Option<&Arc<NetStats>> {
        self.net_stats.as_ref()
    }

    /// The member functions, blk first.
    pub fn functions(&self) -> Vec<Arc<VirtioPciFunction<GuestRam>>> {
        let blk = self.blk.iter().map(|g| g.function.clone());
        blk.chain(self.net.iter().map(|g| g.function.clone()))
            .collect()
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

    /// Whether the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        self.control.is_paused()
    }

    /// The workloads' counters as they stand (consistent while paused).
    pub fn report(&self) -> MachineReport {
        MachineReport {
            blk: self.blk.as_ref().map(|g| lock(&g.vcpu).report()),
            net: self.net.as_ref().map(|g| lock(&g.vcpu).report()),
            dirtier: lock(&self.dirtier).state(),
        }
    }

    fn stop_vcpus(&mut self) {
        self.control.quit();
        for t in self.threads.drain(..) {
            // A vCPU that panicked already recorded nothing more to report.
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
        let blk = match &self.blk {
            Some(g) => Some(lock(&g.vcpu).settle(timeout).map_err(MachineError::Vcpu)?),
            None => None,
        };
        let net = match &self.net {
            Some(g) => Some(lock(&g.vcpu).settle(timeout).map_err(MachineError::Vcpu)?),
            None => None,
        };
        let dirtier = lock(&self.dirtier);
        dirtier.verify().map_err(MachineError::Vcpu)?;
        Ok(MachineReport {
            blk,
            net,
            dirtier: dirtier.state(),
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

/// The owner: an rng device of its own (any type serves; the admin queue is what matters) on
/// host memory, members built from `pending` (VF *n* is `pending[n - 1]`) on guest RAM.
fn owner(
    owner_memory: &VmMemory,
    ram: &Arc<GuestRam>,
    options: &MachineOptions,
    pending: Vec<PendingMember>,
) -> Result<OwnerFunction<GuestRam>, MachineError> {
    let count = u16::try_from(pending.len()).unwrap_or(u16::MAX);
    let mut pending: Vec<Option<PendingMember>> = pending.into_iter().map(Some).collect();
    let ram = ram.clone();
    let core = CoreOptions {
        quiesce_mode: options.quiesce,
        ..CoreOptions::default()
    };
    let factory = Box::new(move |vf: u16| {
        let (device, _, vectors) = usize::from(vf)
            .checked_sub(1)
            .and_then(|i| pending.get_mut(i))
            .and_then(Option::take)
            .ok_or_else(|| std::io::Error::other(format!("member {vf} was built already")))?;
        VirtioPciFunction::with_device(device, ram.clone(), core.clone(), vectors, true)
    });
    let entropy = HostEntropy::open()?;
    let device = Box::new(Rng::new(Box::new(entropy), 8));
    let owner = OwnerFunction::new(
        device,
        owner_memory.ram().clone(),
        OwnerOptions::default(),
        factory,
    )?;
    owner.set_num_vfs(count)?;
    owner.set_vf_enable(true)?;
    Ok(owner)
}

fn blk_driver(
    function: &Arc<VirtioPciFunction<GuestRam>>,
    ram: &Arc<GuestRam>,
    transport: u64,
    options: &MachineOptions,
    layout: &GuestLayout,
) -> Result<BlkDriver<GuestRam>, MachineError> {
    let config = BlkDriverConfig {
        features: transport | bf::FLUSH | bf::MQ | bf::SEG_MAX | bf::BLK_SIZE,
        num_queues: options.queues,
        queue_size: QUEUE_SIZE,
        rings_at: layout.blk_at,
        max_data: BLOCK_LEN,
    };
    if config.end() > layout.net_rings_at {
        return Err(MachineError::Driver(
            "the blk driver overlaps the net rings".into(),
        ));
    }
    let irqs = (1..=options.queues)
        .map(|v| function.interrupts().vector_eventfd(v).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or(MachineError::Driver("blk MSI-X vectors".into()))?;
    let pci = PciDriver::new(function.clone(), ram.clone(), PROFILE)?;
    BlkDriver::new(pci, config, irqs).map_err(|e| MachineError::Driver(e.to_string()))
}

fn net_driver(
    function: &Arc<VirtioPciFunction<GuestRam>>,
    ram: &Arc<GuestRam>,
    transport: u64,
    options: &MachineOptions,
    layout: &GuestLayout,
) -> Result<NetPciDriver<GuestRam>, MachineError> {
    let queues = 2 * options.queues + 1;
    let config = NetPciConfig {
        features: transport | nf::MAC | nf::MQ | nf::CTRL_VQ | nf::MRG_RXBUF,
        pairs: options.queues,
        queue_size: QUEUE_SIZE,
        rx_buf_len: 2048,
        rings_at: layout.net_rings_at,
        buffers_at: layout.net_buffers_at,
    };
    let irqs = (1..=queues)
        .map(|v| function.interrupts().vector_eventfd(v).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or(MachineError::Driver("net MSI-X vectors".into()))?;
    let pci = PciDriver::new(function.clone(), ram.clone(), PROFILE)?;
    let mut driver =
        NetPciDriver::new(pci, config, irqs).map_err(|e| MachineError::Driver(e.to_string()))?;
    if driver.net().buffers_end() > layout.working_set_at {
        return Err(MachineError::Driver(
            "the net buffers overlap the working set".into(),
        ));
    }
    if options.queues > 1 {
        let ack = driver
            .command(
                ctrl::CLASS_MQ,
                ctrl::MQ_VQ_PAIRS_SET,
                &options.queues.to_le_bytes(),
                Duration::from_secs(5),
            )
            .map_err(|e| MachineError::Driver(e.to_string()))?;
        if ack != ctrl::OK {
            return Err(MachineError::Driver(format!("VQ_PAIRS_SET answered {ack}")));
        }
    }
    Ok(driver)
}
